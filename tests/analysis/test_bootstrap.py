"""Row bootstrap of a line: exact with unit counts, calibrated on a known population line."""

from __future__ import annotations

import numpy as np
import pytest

from steplines.analysis.bootstrap import (
    SampleWeights,
    line_replicates,
    percentile_interval,
    step_weights,
)
from steplines.analysis.lines import load_summary
from steplines.analysis.shape import polynomial_fits
from steplines.analysis.strategies import evaluate_line, first_argmin
from steplines.store import LineRecord, LineStore

from analysis_fixtures import make_run


@pytest.mark.parametrize("mode", ["corrected", "faithful"])
def test_step_weights_equal_evaluate_line(mode: str) -> None:
    rng = np.random.default_rng(0)
    p = np.sort(np.concatenate([rng.uniform(-1, 1, 30), [0.0]]))
    v = rng.normal(size=p.size)
    s = np.array([-2.0, -0.5, 0.0, 0.013, p[7], 0.77, 3.0, np.nan])
    got = v @ step_weights(p, s, mode)
    want = evaluate_line(p, v, s, mode)[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("mode", ["corrected", "faithful"])
def test_unit_counts_reproduce_the_analysis(tmp_path, mode: str) -> None:
    """All counts 1: every replicate is the line's own value as the analysis computes it."""
    run = make_run(tmp_path / "run", n_lines=3)
    store = LineStore.open(run / "lines.zarr")
    sl = load_summary(store, mode)
    for i, t in enumerate(sl.lines):
        rec = store.read_line(int(t))
        n, b = rec.train_losses.shape[0], rec.direction_losses.shape[0]
        steps = {"sgd": rec.s_update, "half": 0.5 * rec.s_update, "optimal": 0.0}
        r = line_replicates(
            rec,
            {**steps, "exact_batch": 0.0},
            mode=mode,
            window=0.2,
            counts_train=np.ones((1, n)),
            counts_direction=np.ones((1, b)),
        )
        pos, full = sl.positions[i], sl.metric_full[i]
        s_opt, l_min = first_argmin(pos, full)
        l0 = evaluate_line(pos, full, 0.0, mode)[0]
        assert r.s_opt[0] == s_opt
        assert r.l_min[0] == pytest.approx(l_min, rel=1e-6)
        assert r.impr["sgd"][0] == pytest.approx(
            l0 - evaluate_line(pos, full, rec.s_update, mode)[0], abs=1e-6
        )
        s_b, _ = first_argmin(pos, sl.batch[i])
        want_b = l0 - evaluate_line(pos, full, s_b, mode)[0]
        assert r.impr["exact_batch"][0] == pytest.approx(want_b, abs=1e-6)
        mae, _ = polynomial_fits(pos[None], sl.shape_full[i][None], 0.2, (2,))
        assert r.mae2[0] == pytest.approx(mae[0, 0], rel=1e-5)


def _population_record(rng: np.random.Generator, n: int, grid: np.ndarray) -> LineRecord:
    """n per-sample parabolas a_i s² + b_i s with a_i ~ U(0.5, 1.5), b_i ~ N(−1, 2²)."""
    a = rng.uniform(0.5, 1.5, size=n)
    b = rng.normal(-1.0, 2.0, size=n)
    losses = a[:, None] * grid**2 + b[:, None] * grid
    return LineRecord(
        positions=grid,
        train_losses=losses,
        val_losses=np.zeros((0, grid.size)),
        direction_losses=np.zeros((0, grid.size)),
        train_indices=np.arange(n),
        direction_indices=np.zeros(0, np.int64),
        s_update=0.1,
        direction_norm=1.0,
        grad_norm=1.0,
        directional_derivative=-1.0,
        lr=0.1,
        batch_loss=0.0,
        n_passes=0,
    )


def test_intervals_cover_the_population_line_at_their_level() -> None:
    """Nominal 95 % intervals cover the population's s_opt and l(0) − l(0.3) in 90–98 %.

    150 samples of 200 rows, 200 Poisson-bootstrap resamples each.

    Population line: E[a] s² + E[b] s = s² − s, minimum at s = 0.5 (a grid point); the
    improvement at the fixed step 0.3 is 0.3 − 0.09 = 0.21.
    """
    grid = np.round(np.arange(-0.2, 1.2001, 0.005), 6)
    rng = np.random.default_rng(3)
    reps, hits_s, hits_i = 150, 0, 0
    for k in range(reps):
        rec = _population_record(rng, 200, grid)
        r = line_replicates(
            rec,
            {"step": 0.3},
            mode="corrected",
            window=0.2,
            counts_train=SampleWeights(200, seed=k).weights(np.arange(200)),
            counts_direction=np.zeros((200, 0)),
        )
        lo, hi = percentile_interval(r.s_opt)
        hits_s += lo <= 0.5 <= hi
        lo, hi = percentile_interval(r.impr["step"])
        hits_i += lo <= 0.21 <= hi
    assert 0.90 <= hits_s / reps <= 0.98, hits_s
    assert 0.90 <= hits_i / reps <= 0.98, hits_i


def test_sample_weights_follow_the_sample_not_the_line() -> None:
    """A sample has one weight per replicate whichever line (and row) asks; Poisson(1) counts."""
    w = SampleWeights(300)
    ids = np.array([5, 4100, 7, 123456])
    a = w.weights(ids)
    b = SampleWeights(300).weights(ids[::-1])[:, ::-1]  # a fresh object, another order
    np.testing.assert_array_equal(a, b)
    assert a.shape == (300, 4) and (a >= 0).all() and a.dtype == np.float64
    many = w.weights(np.arange(4096))
    assert abs(many.mean() - 1) < 0.01 and abs(many.var() - 1) < 0.02
