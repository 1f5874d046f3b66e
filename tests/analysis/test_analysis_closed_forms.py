"""Closed-form checks of the analysis functions on exact parabolas (docs/method.md §6.2, §6.3)."""

from __future__ import annotations

import numpy as np
import pytest

from steplines.analysis import (
    distance_matrix,
    evaluate_line,
    fbpal_sgd_steps,
    fd_derivative_curvature,
    fd_weights,
    first_argmin,
    momentum_proxy,
    moving_average,
    pal_step,
    polynomial_fits,
    stencil_columns,
)
from steplines.engine.positions import first_pass

H = 0.006  # paper grid spacing
A, B, C = 3.0, -0.6, 1.2  # l(s) = A s² + B s + C, minimiser 0.1
S_MIN = -B / (2 * A)


def parabola(s: np.ndarray, a: float = A, b: float = B, c: float = C) -> np.ndarray:
    return a * s**2 + b * s + c


def paper_line(s_update: float = 0.3) -> np.ndarray:
    return first_pass("paper", 0.5, H, s_update)


def padded(rows: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(rows), max(r.size for r in rows)), np.nan)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out


def test_fd_weights_on_paper_grid_equal_spec() -> None:
    pos = paper_line()
    z = int(np.flatnonzero(pos == 0.0)[0])
    np.testing.assert_allclose(pos[z - 2 : z + 3], [-0.008, -0.002, 0.0, 0.006, 0.012], atol=1e-15)
    w = fd_weights(pos[z - 1 : z + 2])
    np.testing.assert_allclose(w, [-375.0, 1000.0 / 3.0, 125.0 / 3.0], rtol=1e-9)
    # np.gradient's stencil at the centre of the 5 points is exactly these weights.
    v = np.random.default_rng(0).normal(size=5)
    d, _ = fd_derivative_curvature(pos[z - 2 : z + 3], v)
    assert d == pytest.approx(float(w @ v[1:4]), rel=1e-12)


def test_fd_exact_on_parabola() -> None:
    pos = paper_line()
    z = int(np.flatnonzero(pos == 0.0)[0])
    cols = stencil_columns(pos, z, -1)
    d, c = fd_derivative_curvature(pos[cols], parabola(pos[cols]))
    assert d == pytest.approx(B, abs=1e-9)
    assert c == pytest.approx(2 * A, abs=1e-7)


def test_stencil_skips_update_column_only_in_corrected_mode() -> None:
    pos = paper_line(s_update=0.003)  # inserted between 0 and 0.006
    z = int(np.flatnonzero(pos == 0.0)[0])
    u = int(np.flatnonzero(pos == 0.003)[0])
    np.testing.assert_allclose(pos[stencil_columns(pos, z, u, faithful=True)][3], 0.003)
    corrected = pos[stencil_columns(pos, z, u)]
    np.testing.assert_allclose(corrected, [-0.008, -0.002, 0.0, 0.006, 0.012], atol=1e-15)
    # both stay exact on a parabola
    for mode in ("faithful", "corrected"):
        cols = stencil_columns(pos, z, u, faithful=mode == "faithful")
        d, c = fd_derivative_curvature(pos[cols], parabola(pos[cols]))
        assert d == pytest.approx(B, abs=1e-9) and c == pytest.approx(2 * A, abs=1e-6)


def test_polynomial_fits_degree_two_exact() -> None:
    pos = padded([paper_line(0.3), paper_line(0.123)])
    means = parabola(pos)
    mae, coefs = polynomial_fits(pos, means, 0.2, (1, 2, 3, 4))
    assert np.all(mae[:, 1] < 1e-10)
    assert np.all(mae[:, 0] > 1e-3)  # a straight line cannot fit a parabola
    np.testing.assert_allclose(coefs[:, 1, :3], [[C, B, A]] * 2, rtol=1e-9)
    assert np.all(np.isnan(coefs[:, 1, 3:]))


def test_argmin_and_exact_line_search_within_grid_spacing() -> None:
    pos = paper_line()
    s, v = first_argmin(pos, parabola(pos))
    assert abs(s - S_MIN) <= H / 2 + 1e-12
    assert v == pytest.approx(parabola(np.array(s)))


def test_pal_corrected_exact_when_mu_is_measured() -> None:
    # symmetric grid, spacing 0.005: µ = 0.1 is a measured position, l(µ) is exact
    pos = first_pass("symmetric", 0.5, 0.005, 0.3)
    line = parabola(pos)
    l0, lmu = evaluate_line(pos, line, np.array([0.0, 0.1]))[0]
    assert pal_step(l0, lmu, B, 0.1) == pytest.approx(S_MIN, abs=1e-9)


def test_pal_corrected_on_paper_grid_interpolation_bound() -> None:
    # µ = 0.1 lies between 0.096 and 0.102: the interpolated l(µ) overestimates by
    # A·(0.1−0.096)·(0.102−0.1) = 2.4e-5, which shrinks a by 2.4e-3 → step off by ≤ 1e-3·S.
    pos = paper_line()
    line = parabola(pos)
    l0, lmu = evaluate_line(pos, line, np.array([0.0, 0.1]))[0]
    eps = A * (0.1 - 0.096) * (0.102 - 0.1)
    assert lmu - parabola(np.array(0.1)) == pytest.approx(eps, rel=1e-6)
    a_hat = A + eps / 0.01
    assert pal_step(l0, lmu, B, 0.1) == pytest.approx(-B / (2 * a_hat), rel=1e-9)


def test_pal_faithful_reads_nearest_grid_point_with_mu_in_formula() -> None:
    pos = paper_line()
    line = parabola(pos)
    l0, lmu = evaluate_line(pos, line, np.array([0.0, 0.1]), faithful=True)[0]
    assert lmu == pytest.approx(parabola(np.array(0.102)), abs=1e-15)  # grid point 0.102
    a_f = (parabola(np.array(0.102)) - C - B * 0.1) / 0.01
    assert pal_step(l0, lmu, B, 0.1) == pytest.approx(-B / (2 * a_f), rel=1e-12)


def test_pal_rules() -> None:
    assert pal_step(1.0, 1.0 - 0.2 * 0.1, -0.2, 0.1) == pytest.approx(0.1)  # a = 0 → µ
    assert pal_step(1.0, 0.9, 0.3, 0.1) == 0.0  # uphill slope → 0
    assert np.isnan(pal_step(np.nan, 1.0, -1.0, 0.1))


def test_improvement_linear_interpolation_error_bound() -> None:
    pos = paper_line()
    line = parabola(pos)
    steps = np.array([0.0, 0.0571, S_MIN, 0.3, 0.4443, -0.1234])
    val, clipped = evaluate_line(pos, line, steps)
    improvement = line[pos == 0.0][0] - val
    analytic = -(A * steps**2 + B * steps)
    # Linear interpolation of a parabola over a cell of width h errs by at most A·h²/4.
    assert np.all(np.abs(improvement - analytic) <= A * H**2 / 4 + 1e-12)
    assert not clipped.any()
    # On a measured position (s_update = 0.3 is one) it is exact.
    assert improvement[3] == pytest.approx(analytic[3], abs=1e-12)


def test_evaluate_clips_and_flags_beyond_range() -> None:
    pos = paper_line()
    line = parabola(pos)
    for mode in ("corrected", "faithful"):
        val, clipped = evaluate_line(
            pos, line, np.array([1.7, -3.0, 0.2]), faithful=mode == "faithful"
        )
        assert list(clipped) == [True, True, False]
        assert val[0] == line[-1] and val[1] == line[0]


def test_faithful_improvement_uses_nearest_point() -> None:
    pos = paper_line()
    line = parabola(pos)
    val, _ = evaluate_line(pos, line, np.array([0.1001]), faithful=True)
    assert val[0] == pytest.approx(parabola(np.array(0.102)), abs=1e-15)


def test_distance_matrix_properties() -> None:
    rng = np.random.default_rng(3)
    pad = padded([paper_line(s) for s in (0.05, 0.13, 0.3, 0.17)])
    means = np.stack(
        [parabola(pad[i], a=rng.uniform(1, 4), b=rng.uniform(-1, -0.2)) for i in range(4)]
    )
    ui = np.array(
        [
            int(np.flatnonzero(np.isclose(pad[i], s))[0])
            for i, s in enumerate((0.05, 0.13, 0.3, 0.17))
        ]
    )
    for mode in ("corrected", "faithful"):
        d = distance_matrix(pad, means, 0.2, faithful=mode == "faithful", update_index=ui)
        np.testing.assert_allclose(d, d.T, atol=0)
        np.testing.assert_allclose(np.diag(d), 0.0, atol=0)
        assert np.all(d[~np.eye(4, dtype=bool)] > 0)


def test_distance_zero_for_identical_shifted_lines() -> None:
    # Same parabola + different constant offsets, s_update inside the window at different places
    su = (0.05, 0.13, 0.3)
    pos = padded([paper_line(s) for s in su])
    means = parabola(pos) + np.array([[0.0], [0.7], [-0.3]])
    ui = np.array([int(np.flatnonzero(pos[i] == s)[0]) for i, s in enumerate(su)])
    d = distance_matrix(pos, means, 0.2, update_index=ui)
    np.testing.assert_allclose(d, 0.0, atol=1e-12)
    # faithful: index alignment shifts the columns right of an inserted s_update
    # (docs/method.md §9.18)
    d_f = distance_matrix(pos, means, 0.2, faithful=True)
    assert d_f[0, 2] > 1e-4 and d_f[1, 2] > 1e-4
    # lines with s_update outside the window align and are identical
    far = np.stack([first_pass("paper", 0.5, H, 0.3)] * 2)
    d_far = distance_matrix(far, parabola(far) + np.array([[0.0], [0.5]]), 0.2, faithful=True)
    np.testing.assert_allclose(d_far, 0.0, atol=1e-12)


def test_moving_average_modes() -> None:
    x = np.arange(100, dtype=float)
    f = moving_average(x, 25, faithful=True)
    assert f.size == 76 and f[0] == pytest.approx(12.0)
    c = moving_average(x, 25)
    assert c.size == 100
    np.testing.assert_allclose(c[12:88], x[12:88])  # centred: a line stays a line
    assert c[0] == pytest.approx(6.0)  # shrinking window at the ends


def test_fbpal_sgd_schedule() -> None:
    lines = np.arange(260)
    fbpal = lines * 1.0 + 1000.0
    out = fbpal_sgd_steps(lines, fbpal, faithful=True)
    assert out[0] == 1000.0 and out[1] == 1001.0 and out[50] == 1001.0
    assert out[100] == 1100.0 and out[150] == 1100.0
    assert out[200] == pytest.approx(1150.0) and out[259] == pytest.approx(1150.0)
    # corrected keys to the step index: with line 100 missing, the next analysed line refreshes
    sub = np.delete(lines, 100)
    out_c = fbpal_sgd_steps(sub, np.delete(fbpal, 100))
    assert sub[100] == 101 and out_c[100] == 1101.0 and out_c[99] == 1001.0


def test_momentum_proxy() -> None:
    delta = np.array([-1.0, -2.0, -3.0])
    np.testing.assert_allclose(momentum_proxy(np.arange(3), delta, 0.9), [-1.0, -2.9, -5.61])
    gap = momentum_proxy(np.array([0, 2]), delta[:2], 0.5)
    np.testing.assert_allclose(gap, [-1.0, -2.25])
    np.testing.assert_allclose(
        momentum_proxy(np.array([0, 2]), delta[:2], 0.5, faithful=True), [-1.0, -2.5]
    )
