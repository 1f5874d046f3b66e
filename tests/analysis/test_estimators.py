"""Cheap estimators against the measured line: closed forms on exact parabolas, old stores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steplines.analysis import analyze_run
from steplines.analysis.estimators import (
    LabpalTap,
    armijo_step,
    cockpit_alpha,
    cockpit_fit,
    labpal_parabola,
    noise_scale,
    sls_steps,
)
from steplines.analysis.lines import SummaryLines
from steplines.engine.positions import first_pass
from steplines.store import LineStore, differing_arrays

from analysis_fixtures import (
    coefficients,
    make_record,
    make_run,
    make_version_1,
    with_exact_inputs,
)

A, B, C = 3.0, -0.6, 1.2  # l(s) = A s² + B s + C, minimiser 0.1
S_MIN = -B / (2 * A)


def parabola(s: np.ndarray | float, a: float = A, b: float = B, c: float = C):
    return a * np.asarray(s) ** 2 + b * np.asarray(s) + c


# ---------------------------------------------------------------------- Cockpit α


@pytest.mark.parametrize("s", [0.05, 0.1, 0.2, 0.3])
def test_cockpit_fit_recovers_the_parabola_and_alpha(s: float) -> None:
    a, b, c = cockpit_fit(s, parabola(0.0), parabola(s), B, B + 2 * A * s)
    assert (a, b, c) == pytest.approx((A, B, C), abs=1e-12)
    # α = s/s* − 1: −1 no step, 0 the minimum, 1 the other side at the same height
    assert cockpit_alpha(s, a, b) == pytest.approx(s / S_MIN - 1, abs=1e-12)


def test_cockpit_alpha_conventions() -> None:
    # Cockpit's own deterministic example: f = [1, 0.5], f' = [-1, 0] at t = 1 → α = 0
    a, b, c = cockpit_fit(1.0, 1.0, 0.5, -1.0, 0.0)
    assert (c, b, a) == pytest.approx((1.0, -1.0, 0.5), abs=1e-12)
    assert cockpit_alpha(1.0, a, b) == pytest.approx(0.0, abs=1e-12)
    assert cockpit_alpha(2 * S_MIN, A, B) == pytest.approx(1.0)
    assert cockpit_alpha(0.3, -1.0, B) == -1.0  # concave: still going downhill
    assert np.isnan(cockpit_fit(0.0, 1.0, 1.0, -1.0, -1.0)[0])
    assert np.isnan(cockpit_fit(0.2, 1.0, np.nan, -1.0, -1.0)[0])


# ---------------------------------------------------------------------- LABPAL


def test_labpal_parabola_equals_closed_form() -> None:
    pos = first_pass("paper", 0.5, 0.006, 0.3)
    z = int(np.flatnonzero(pos == 0.0)[0])
    u = int(np.flatnonzero(pos == 0.3)[0])
    mu = float(pos[z + 17])  # a measured position: l(µ) is read exactly
    a, b, step = labpal_parabola(pos, parabola(pos), z, u, mu)
    assert (a, b, step) == pytest.approx((A, B, S_MIN), abs=1e-9)


def test_labpal_tap_averages_the_first_batches() -> None:
    rec = make_record(0, n=48, m=4, b=16)
    coef = coefficients(0, 48, 4, 16).train
    tap = LabpalTap(batch_size=16, n_batches=2, mu=0.102)
    a, b, step, used = tap.line(rec)
    assert used == 2
    ea, eb = coef[:32, 0].mean(), coef[:32, 1].mean()  # the first two batches only
    # float32 storage of the losses and linear interpolation at µ: ~1e-4
    assert (a, b) == pytest.approx((ea, eb), rel=2e-3)
    assert step == pytest.approx(-eb / (2 * ea), rel=2e-3)
    assert a != pytest.approx(coef[:, 0].mean(), rel=1e-3)  # not the full batch's
    assert tap.line(rec)[:3] == (a, b, step)
    assert LabpalTap(16, 10, 0.1).line(rec)[3] == 3  # at most all batches


# ---------------------------------------------------------------------- Armijo / SLS


def test_armijo_step_equals_first_closed_form_backtrack() -> None:
    pos = np.arange(-1000, 1001) * 0.001
    c, beta, s0 = 0.1, 0.9, 0.5
    step, k = armijo_step(pos, parabola(pos), B, s0, c=c, beta=beta)
    # on a A s² + B s + C, Armijo holds iff s ≤ (1 − c)(−B)/A
    k_exact = int(np.ceil(np.log((1 - c) * -B / A / s0) / np.log(beta)))
    assert k == k_exact == 10
    assert step == pytest.approx(s0 * beta**k_exact, rel=1e-12)
    # an accepted first trial is not backtracked
    assert armijo_step(pos, parabola(pos), B, 0.1, c=c, beta=beta) == (pytest.approx(0.1), 0)
    # not a descent direction: no step
    assert np.isnan(armijo_step(pos, parabola(pos), 0.2, s0)[0])


def test_armijo_rejects_steps_beyond_the_measured_line() -> None:
    pos = np.linspace(-1.0, 1.0, 201)
    step, k = armijo_step(pos, -pos, -1.0, 2.0, c=0.1, beta=0.9)  # every s > 0 is accepted
    assert k == 7 and step == pytest.approx(2.0 * 0.9**7)  # the first trial ≤ 1


def _lines(rows: list[np.ndarray], grad_norm: float, delta: float) -> SummaryLines:
    n = len(rows)
    pos = np.stack([np.arange(-1000, 1001) * 0.001] * n)
    vals = np.stack(rows)
    f = np.full(n, 1.0)
    return SummaryLines(
        lines=np.arange(n),
        positions=pos,
        shape_full=vals,
        metric_full=vals,
        batch=vals,
        s_update=f * 0.2,
        direction_norm=f * grad_norm,
        grad_norm=f * grad_norm,
        directional_derivative=f * delta,
        lr=f * 0.1,
        zero_index=np.full(n, 1000),
        update_index=np.full(n, -1),
        n_lines_total=n,
    )


def test_sls_reset_carries_the_accepted_step_to_the_next_line() -> None:
    pos = np.arange(-1000, 1001) * 0.001
    sl = _lines([parabola(pos)] * 3, grad_norm=0.6, delta=B)
    steps, backs, eta0 = sls_steps(sl, n_train=64, batch_size=16)
    growth = 2.0 ** (16 / 64)
    assert eta0[0] == 1.0
    first, k = armijo_step(pos, parabola(pos), B, 1.0 * 0.6)
    assert (steps[0], backs[0]) == (first, k)
    assert eta0[1] == pytest.approx(first / 0.6 * growth, rel=1e-12)
    assert eta0[2] == pytest.approx(steps[1] / 0.6 * growth, rel=1e-12)


# ---------------------------------------------------------------------- noise scale


def test_noise_scale_equals_explicit_per_sample_gradients() -> None:
    rng = np.random.default_rng(0)
    b, p = 32, 7
    g = rng.normal(0.4, 1.3, size=(b, p))
    s = float(np.mean(np.sum(g**2, axis=1)))
    g2 = float(np.sum(g.mean(0) ** 2))
    out = noise_scale(np.array([s]), np.array([g2]), b)
    trace = float(np.trace(np.cov(g.T, ddof=1)))
    assert out["trace_cov"][0] == pytest.approx(trace, rel=1e-12)
    assert out["grad_sq"][0] == pytest.approx(g2 - trace / b, rel=1e-12)
    assert out["b_simple"][0] == pytest.approx(trace / (g2 - trace / b), rel=1e-12)
    assert out["b_simple_naive"][0] == pytest.approx(trace / g2, rel=1e-12)
    # unbiased: with many samples B_simple → tr Σ/|G|² of the generating distribution
    big = rng.normal(0.4, 1.3, size=(20000, p))
    est = noise_scale(
        np.array([np.mean(np.sum(big**2, 1))]), np.array([np.sum(big.mean(0) ** 2)]), 20000
    )
    assert est["b_simple"][0] == pytest.approx(p * 1.3**2 / (p * 0.4**2), rel=0.1)


# ---------------------------------------------------------------------- analyze_run


def test_analyze_run_estimators_exact_on_parabolic_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=5, skip=(2,))
    with_exact_inputs(run)
    tables = analyze_run(run)
    est = pd.read_csv(tables.path("estimators"))
    assert list(est.line) == [0, 1, 3, 4]
    for t, row in est.set_index("line").iterrows():
        co = coefficients(int(t), 48, 4, 16)
        a_b, b_b = co.direction[:, :2].mean(0)
        # Cockpit's fit of the direction batch is its parabola (float32 losses: ~1e-5)
        assert (row.cockpit_a, row.cockpit_b) == pytest.approx((a_b, b_b), rel=1e-4)
        assert row.alpha_cockpit == pytest.approx(row.s_update / (-b_b / (2 * a_b)) - 1, rel=1e-4)
        assert row.alpha_true == pytest.approx(row.s_update / row.s_opt - 1, rel=1e-12)
        # LABPAL with all three batches = the full batch; its parabola = the fit's
        a_f, b_f = co.train[:, :2].mean(0)
        assert (row.labpal_a, row.labpal_b) == pytest.approx((a_f, b_f), rel=1e-3)
        assert (row.fit_a, row.fit_b) == pytest.approx((a_f, b_f), rel=1e-4)
        assert abs(row.labpal_a_rel_error) < 1e-3
        # dᵀHd = 2a of the direction batch's own parabola; ≠ the full batch's
        assert abs(row.curvature_rel_error_batch) < 1e-4
        assert row.curvature_rel_error == pytest.approx(a_b / a_f - 1, rel=1e-3)
        assert np.isfinite(row.armijo_step) and row.armijo_step_ratio > 0
        # S = 5, G² = 1, B = 16: tr Σ = 16/15·4
        assert row.trace_cov == pytest.approx(64 / 15)
    summary = json.loads(tables.path("summary").read_text())["estimators"]
    assert summary["measured"] and summary["store_has_inputs"]
    assert summary["errors"]["curvature_rel_error"]["n"] == 4
    assert summary["b_simple"]["median"] == pytest.approx((64 / 15) / (1 - 64 / 15 / 16))


def test_version_1_store_opens_verifies_and_analyses(tmp_path: Path) -> None:
    new = make_run(tmp_path / "new", n_lines=4)
    old = make_run(tmp_path / "old", n_lines=4)
    make_version_1(old / "lines.zarr")
    store = LineStore.open(old / "lines.zarr")
    assert store.schema_version == 1 and not store.has_estimator_inputs
    assert all(store.verify_line(t) for t in range(4))
    assert np.isnan(store.read_summary()["est_curvature"]).all()
    assert np.isnan(store.read_line(0).est_curvature)
    assert differing_arrays(old / "lines.zarr", new / "lines.zarr") == []
    # resuming an old run: the line is written without the estimator fields
    rw = LineStore.open(old / "lines.zarr", mode="r+")
    rw.write_line(1, dataclasses.replace(make_record(1, 48, 4, 16), est_curvature=2.0))
    assert np.isnan(rw.read_line(1).est_curvature) and rw.verify_line(1)
    assert not (old / "lines.zarr" / "est_curvature").exists()

    tables = analyze_run(old)
    est = pd.read_csv(tables.path("estimators"))
    assert len(est) == 4
    for col in ("alpha_cockpit", "curvature_hvp", "curvature_rel_error", "b_simple"):
        assert est[col].isna().all(), col
    # LABPAL and Armijo need only the stored line
    assert est.labpal_step.notna().all() and est.armijo_step.notna().all()
    summary = json.loads(tables.path("summary").read_text())["estimators"]
    assert not summary["measured"] and not summary["store_has_inputs"]
    assert summary["errors"]["alpha_error"]["n"] == 0
