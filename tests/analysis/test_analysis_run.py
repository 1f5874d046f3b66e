"""Batch-size simulation, analyze_run end to end, bad inputs, and the no-torch rule."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from steplines.analysis import analyze_run, batch_size_rows, simulate_batch
from steplines.analysis.batch_size import per_sample_slopes
from steplines.analysis.settings import AnalysisRequest
from steplines.analysis.strategies import stencil_columns
from steplines.analysis.tables import FILES, MANIFEST
from steplines.errors import ConfigError, RunDirError
from steplines.store import SCHEMA_VERSION, LineStore

from analysis_fixtures import coefficients, make_record, make_run

REPO = Path(__file__).resolve().parents[2]


def _cols(rec):
    pos = rec.positions
    z = int(np.flatnonzero(pos == 0.0)[0])
    u = int(np.flatnonzero(pos == rec.s_update)[0])
    return stencil_columns(pos, z, u)


def test_batch_simulation_small_equal_and_large() -> None:
    n, b = 1920, 128
    rec = make_record(0, n, 2, b)
    cols = _cols(rec)
    slopes = per_sample_slopes(rec.positions, rec.direction_losses, cols)
    # per-sample FD slopes of exact parabolas ≈ b_i (float32 storage: ~1e-4 abs)
    np.testing.assert_allclose(slopes, coefficients(0, n, 2, b).direction[:, 1], atol=2e-3)
    direction64 = rec.direction_losses.astype(np.float64)
    # bs = B: the direction batch itself
    np.testing.assert_array_equal(
        simulate_batch(rec.direction_losses, rec.train_losses, b, slopes),
        direction64.mean(axis=0),
    )
    # bs < B: the bs steepest samples
    keep = np.argsort(slopes, kind="stable")[:32]
    np.testing.assert_array_equal(
        simulate_batch(rec.direction_losses, rec.train_losses, 32, slopes),
        direction64[keep].mean(axis=0),
    )
    assert np.all(slopes[keep].max() <= np.delete(slopes, keep))
    # bs → N + B: converges to the full (N + B)-row line
    full = np.concatenate([rec.train_losses, rec.direction_losses]).astype(np.float64).mean(0)
    errors = []
    for bs in (256, 512, 1024, 2048):
        draw = np.random.default_rng([42, 0]).choice(n, size=bs - b, replace=False)
        line = simulate_batch(rec.direction_losses, rec.train_losses, bs, slopes, draw)
        errors.append(float(np.mean(np.abs(line - full))))
    assert all(e1 > e2 for e1, e2 in itertools.pairwise(errors)), errors
    all_rows = simulate_batch(rec.direction_losses, rec.train_losses, n + b, slopes, np.arange(n))
    np.testing.assert_allclose(all_rows, full, atol=1e-12)


def test_batch_size_rows_reference_batch() -> None:
    n, b = 200, 32
    records = [(t, make_record(t, n, 2, b)) for t in range(2)]
    for mode in ("corrected", "faithful"):
        tab = pd.DataFrame(
            batch_size_rows(
                iter(records), faithful=mode == "faithful", momentum=0.0, batch_sizes=(16, 32, 64)
            )
        )
        ref = tab[(tab.batch_size == b) & (tab.strategy == "sgd")]
        # SGD (original) at bs = B is the stored s_update
        np.testing.assert_allclose(ref.step, [r.s_update for _, r in records])
        # δ_B: exact −‖g‖ (faithful, β = 0) or FD of the exact parabola (corrected)
        np.testing.assert_allclose(
            ref.delta, [r.directional_derivative for _, r in records], atol=1e-4
        )
        assert set(tab.strategy) == {"optimal", "sgd", "pal", "exact_batch"}
        # faithful: the first batch size's full batch, N + B rows cut to a multiple of 16
        rows = (n + b) // 16 * 16 if mode == "faithful" else n
        assert (tab[tab.strategy == "optimal"].batch_size == rows).all()


EXPECTED = {
    "strategies": ["line", "strategy", "step", "distance", "improvement", "clipped"],
    "fits": ["line", "degree", "mae", "c0", "c1", "c2", "c3", "c4"],
    "derivatives": [
        "line",
        "s_opt",
        "l0",
        "l_min",
        "grad_norm",
        "direction_norm",
        "s_update",
        "directional_derivative",
        "delta_fd_batch",
        "delta_fd_full",
        "curvature_fd_full",
        "lr",
    ],
    "batch_size": ["line", "batch_size", "strategy", "step", "improvement", "delta", "clipped"],
}


@pytest.mark.parametrize("mode", ["corrected", "faithful"])
def test_analyze_run_writes_every_file(tmp_path: Path, mode: str) -> None:
    run = make_run(tmp_path / "run", n_lines=7, skip=(3,))
    tables = analyze_run(run, AnalysisRequest(mode, scale="paper", batch_sizes=(8, 16, 32, 64)))
    written = {f.name for f in tables.directory.iterdir()}
    assert written == {FILES[n] for n in FILES if n != "directions"} | {MANIFEST}
    assert set(FILES) == {
        "strategies",
        "fits",
        "derivatives",
        "batch_size",
        "estimators",
        "distances",
        "claims",
        "claim_data",
        "settings",
        "bootstrap",
        "training",
        "views",
        "browser",
        "summary",
        "directions",
    }
    for name, cols in EXPECTED.items():
        df = pd.read_csv(tables.path(name))
        assert list(df.columns[: len(cols)]) == cols, name
        assert set(df.line) == {0, 1, 2, 4, 5, 6}
    strat = pd.read_csv(tables.path("strategies"))
    assert list(strat.columns) == EXPECTED["strategies"]
    assert {"optimal", "sgd", "sgd_lambda_0.05", "pal", "fbpal", "fbpal_sgd", "exact_batch"} <= set(
        strat.strategy
    )
    summary = json.loads(tables.path("summary").read_text())
    assert summary["mode"] == mode
    assert summary["lines_used"] == 6 and summary["lines_missing"] == 1
    assert summary["fits"]["mean_mae_degree_2"] < 1e-6 < summary["fits"]["mean_mae_degree_1"]
    assert summary["strategies"]["optimal"]["share_of_optimum"] == pytest.approx(1.0)
    assert summary["lambda_star"]["median"] > 0
    assert set(summary["batch_size"]["delta_ratio"]) == {"8", "16", "32", "64", "full"}
    d = np.load(tables.path("distances"))
    assert d["matrix"].shape == (6, 6) and str(d["mode"]) == mode
    np.testing.assert_allclose(d["matrix"], d["matrix"].T)

    deriv = pd.read_csv(tables.path("derivatives"))
    # exact parabolas: FD slope of l_B = exact g·d (float32 storage), curvature > 0
    np.testing.assert_allclose(deriv.delta_fd_batch, deriv.directional_derivative, atol=1e-3)
    assert (deriv.curvature_fd_full > 0).all()
    if mode == "corrected":
        # PAL (on l_B) and FBPAL (on l) land on the analytic minimisers −b/(2a) up to the
        # interpolation of l(0.1) between 0.096 and 0.102 (relative ≤ 1e-3, see
        # test_pal_corrected_on_paper_grid_interpolation_bound) and the float32 storage.
        for name, rows in (("pal", "direction"), ("fbpal", "train")):
            step = strat[strat.strategy == name].set_index("line").step
            for t, got in step.items():
                coef = getattr(coefficients(int(t), 48, 4, 16), rows).mean(axis=0)
                assert got == pytest.approx(-coef[1] / (2 * coef[0]), rel=2e-3), (name, t)
        opt = strat[strat.strategy == "optimal"].set_index("line").step
        for t, got in opt.items():
            coef = coefficients(int(t), 48, 4, 16).train.mean(axis=0)
            assert abs(got + coef[1] / (2 * coef[0])) <= 0.003 + 1e-9  # half the spacing


def test_analyze_run_momentum(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=4, momentum=0.9)
    tables = analyze_run(run, AnalysisRequest(scale="paper", batch_sizes=(16,)))
    summary = json.loads(tables.path("summary").read_text())
    assert summary["window"] == 0.5 and summary["momentum"] == 0.9
    assert "s_opt_over_minus_accumulated_delta" in summary["ratios"]
    assert summary["momentum_ratio_flatter"] in {
        "s_opt_over_direction_norm",
        "s_opt_over_minus_accumulated_delta",
    }
    assert "sgd_lambda_0.05_accum" in set(pd.read_csv(tables.path("strategies")).strategy)


def test_analyze_run_without_config_infers_beta(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=2, write_config=False)
    summary = json.loads(
        analyze_run(run, AnalysisRequest(batch_sizes=(16,))).path("summary").read_text()
    )
    assert summary["momentum"] == 0.0 and summary["momentum_source"] == "inferred"


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


def test_no_done_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=3, skip=(0, 1, 2))
    with pytest.raises(RunDirError) as exc:
        analyze_run(run)
    assert "no measured lines" in _one_line(exc.value)


def test_schema_mismatch(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=2)
    zarr.open_group(run / "lines.zarr", mode="r+").attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RunDirError) as exc:
        analyze_run(run)
    assert "schema_version" in _one_line(exc.value)


def test_missing_store_and_bad_mode(tmp_path: Path) -> None:
    with pytest.raises(RunDirError) as exc:
        analyze_run(tmp_path / "nothing")
    _one_line(exc.value)
    with pytest.raises(ConfigError):
        analyze_run(tmp_path / "nothing", AnalysisRequest(mode="sloppy"))


def test_store_fixture_is_exact(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=1)
    rec = LineStore.open(run / "lines.zarr").read_line(0)
    assert rec.positions.size in (169, 168)


def test_analysis_never_imports_torch() -> None:
    code = (
        "import sys, steplines.analysis, steplines.analysis.run;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
