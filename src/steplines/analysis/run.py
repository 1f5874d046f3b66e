"""Analyse a run directory: write the tables of ``docs/analysis.md`` to ``RUN/analysis/``.

:func:`analyze_run` reads the summary arrays of the done lines (bounded memory: ``[T]`` and
``[T, K]`` arrays only), computes the shape analyses (SPEC §6.2), the strategy metrics (§6.3–§6.5,
§6.9) and streams the per-sample data one line at a time for the batch-size simulation (§6.6).

This module never imports torch.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steplines.analysis.batch_size import BATCH_SIZES, batch_size_rows
from steplines.analysis.directions import write_direction_distances
from steplines.analysis.estimators import (
    LABPAL_BATCHES,
    LabpalTap,
    estimator_columns,
    estimator_summary,
)
from steplines.analysis.lines import SummaryLines, lines_missing, load_summary
from steplines.analysis.shape import (
    consecutive_distances,
    pairwise_mae,
    polynomial_fits,
    shape_curves,
)
from steplines.analysis.strategies import (
    check_mode,
    coefficient_of_variation,
    line_quantities,
    moving_average,
    strategy_metrics,
    strategy_steps,
)
from steplines.errors import RunDirError
from steplines.store import LineStore
from steplines.store.schema import ESTIMATES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["FIT_DEGREES", "analyze_run", "ratio_stats", "read_run_config"]

FIT_DEGREES: tuple[int, ...] = (1, 2, 3, 4)
"""Polynomial degrees fitted per line (SPEC §6.2)."""

FIRST_LINES = 50
"""Size of the "first lines" distance-matrix view (SPEC §6.2: first 50 lines)."""


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """Read ``RUN/config.toml`` with ``tomllib`` (no pydantic/torch); {} if it is absent.

    Raises:
        RunDirError: The file exists but is not valid TOML.
    """
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is not valid TOML ({exc}); restore the run's config") from exc


def _momentum(config: dict[str, Any], sl: SummaryLines) -> tuple[float, str]:
    """β from the config, else inferred: 0 when ``‖m_t‖ = ‖g_t‖`` on every line, else 0.9."""
    train = config.get("train", {})
    if "momentum" in train or "optimizer" in train:
        return float(train.get("momentum", 0.0)), "config"
    same = np.allclose(sl.update_norm, sl.grad_norm, rtol=1e-6, equal_nan=True)
    return (0.0 if same else 0.9), "inferred"


def _default_lambdas(config: dict[str, Any], momentum: float) -> tuple[float, ...]:
    """SPEC §6.3: λ = 0.05, except 0.07 for MobileNetV2 with momentum."""
    model = str(config.get("problem", {}).get("model", "")).lower()
    return (0.07,) if ("mobilenet" in model and momentum > 0) else (0.05,)


def _num(x: Any) -> Any:
    """JSON-safe float (NaN/inf → None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def ratio_stats(lines: np.ndarray, ratio: np.ndarray) -> dict[str, Any]:
    """Median, IQR, trend and coefficient of variation of a per-line ratio (SPEC §6.5, §7).

    ``slope_per_line``: slope of a least-squares line ``ratio ≈ a + slope·t``;
    ``first_half_median``/``second_half_median``: medians of the lines before/after the
    middle of the analysed lines; ``cv``: ``std/|mean|``.
    """
    ok = np.isfinite(ratio)
    r, t = ratio[ok], lines[ok]
    if r.size == 0:
        return {"median": None, "q25": None, "q75": None, "iqr": None, "n": 0}
    q25, med, q75 = np.percentile(r, [25, 50, 75])
    half = r.size // 2
    slope = np.polyfit(t.astype(np.float64), r, 1)[0] if r.size >= 2 else np.nan
    return {
        "median": _num(med),
        "q25": _num(q25),
        "q75": _num(q75),
        "iqr": _num(q75 - q25),
        "slope_per_line": _num(slope),
        "first_half_median": _num(np.median(r[:half])) if half else None,
        "second_half_median": _num(np.median(r[half:])),
        "cv": _num(coefficient_of_variation(r)),
        "n": int(r.size),
    }


def _upper_median(mat: np.ndarray) -> float:
    if mat.shape[0] < 2:
        return float("nan")
    vals = mat[np.triu_indices(mat.shape[0], k=1)]
    vals = vals[np.isfinite(vals)]
    return float(np.median(vals)) if vals.size else float("nan")


def analyze_run(
    run_dir: Path,
    mode: str = "corrected",
    *,
    lambdas: Sequence[float] | None = None,
    mu: float = 0.1,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    smoothing: int = 25,
    max_matrix_lines: int = 1000,
) -> dict[str, Path]:
    """Analyse ``run_dir`` and write its tables to ``run_dir/analysis/``.

    Args:
        run_dir: A run directory with ``lines.zarr`` (and ``config.toml``; without it β is
            inferred from ``update_norm == grad_norm``).
        mode: ``corrected`` (default) or ``faithful`` (the original's quirks; SPEC §9–§10).
        lambdas: SGD λ list (default SPEC §6.3: 0.05; 0.07 for MobileNetV2 with momentum).
        mu: PAL/FBPAL µ.
        batch_sizes: Simulated direction-batch sizes (sizes above N + B are skipped).
        smoothing: Moving-average length (faithful δ ratios use MA-``smoothing`` "valid").
        max_matrix_lines: The stored distance matrix covers every ``ceil(T/max)``-th line.

    Returns:
        Name → path of every file written: ``strategies``, ``fits``, ``derivatives``,
        ``batch_size``, ``estimators``, ``distances``, ``summary``.

    Raises:
        RunDirError: No ``lines.zarr``, another schema version, or no done line.
        ConfigError: Unknown ``mode``.
    """
    check_mode(mode)
    run_dir = Path(run_dir)
    store_path = run_dir / "lines.zarr"
    if not store_path.is_dir():
        raise RunDirError(f"{run_dir} has no lines.zarr; measure the run first")
    store = LineStore.open(store_path)
    sl = load_summary(store, mode)
    if len(sl) == 0:
        raise RunDirError(f"{store_path} has no measured lines yet; measure the run first")
    config = read_run_config(run_dir)
    momentum, momentum_source = _momentum(config, sl)
    lambdas = tuple(lambdas) if lambdas is not None else _default_lambdas(config, momentum)
    window = 0.2 if momentum == 0 else 0.5
    out_dir = run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    n = len(sl)
    summary: dict[str, Any] = {
        "mode": mode,
        "lines_used": n,
        "lines_missing": lines_missing(store.done(), config),
        "lines_total": int(sl.n_lines_total),
        "momentum": momentum,
        "momentum_source": momentum_source,
        "window": window,
        "lambdas": list(lambdas),
        "mu": mu,
        "full_batch_rows_metrics": int(
            store.n_train + (store.n_direction if mode == "faithful" else 0)
        ),
        "full_batch_rows_shape": int(store.n_train),
    }

    # ---------------------------------------------------------------- shape (SPEC §6.2)
    grid, curves = shape_curves(
        sl.positions, sl.shape_full, window, mode, update_index=sl.update_index
    )
    stride = max(1, math.ceil(n / max_matrix_lines))
    rows = np.arange(0, n, stride)
    matrix = pairwise_mae(curves, rows)
    first_rows = np.arange(min(FIRST_LINES, n))
    first_matrix = pairwise_mae(curves, first_rows)
    consecutive = consecutive_distances(curves)
    later_from = FIRST_LINES if n >= 500 else math.ceil(0.1 * n)
    later_rows = rows[rows >= later_from]
    later = pairwise_mae(curves, later_rows)
    paths["distances"] = out_dir / "distances.npz"
    np.savez_compressed(
        paths["distances"],
        matrix=matrix,
        lines=sl.lines[rows],
        first_matrix=first_matrix,
        first_lines=sl.lines[first_rows],
        consecutive=consecutive,
        consecutive_lines=sl.lines[1:],
        grid=grid if grid is not None else np.empty(0),
        window=np.float64(window),
        mode=np.str_(mode),
    )
    summary["distances"] = {
        "later_from_line_index": int(later_from),
        "later_rule": "50 when at least 500 lines are analysed, else ceil(10% of lines)",
        "matrix_stride": int(stride),
        "later_median": _num(_upper_median(later)),
        "later_max": _num(np.nanmax(later)) if later.size and np.isfinite(later).any() else None,
        "first_median": _num(_upper_median(first_matrix)),
        "consecutive_median_later": _num(np.nanmedian(consecutive[later_from:]))
        if np.isfinite(consecutive[later_from:]).any()
        else None,
        "consecutive_median": _num(np.nanmedian(consecutive))
        if np.isfinite(consecutive).any()
        else None,
    }

    mae, coefs = polynomial_fits(sl.positions, sl.shape_full, window, FIT_DEGREES)
    fits = pd.DataFrame(
        {
            "line": np.repeat(sl.lines, len(FIT_DEGREES)),
            "degree": np.tile(FIT_DEGREES, n),
            "mae": mae.reshape(-1),
            **{f"c{k}": coefs[:, :, k].reshape(-1) for k in range(5)},
        }
    )
    paths["fits"] = out_dir / "fits.csv"
    fits.to_csv(paths["fits"], index=False)
    sub = slice(None, None, 10) if mode == "faithful" else slice(None)
    summary["fits"] = {
        "window": window,
        "lines": "every 10th line" if mode == "faithful" else "all lines",
        **{
            f"mean_mae_degree_{d}": _num(np.nanmean(mae[sub, j]))
            if np.isfinite(mae[sub, j]).any()
            else None
            for j, d in enumerate(FIT_DEGREES)
        },
    }

    # ---------------------------------------------------------------- strategies (§6.3)
    q = line_quantities(sl, mode)
    steps, delta_batch, delta_accum = strategy_steps(sl, q, mode, momentum, lambdas, mu)
    metrics = strategy_metrics(sl, q, steps, mode)
    strat = pd.concat(
        [pd.DataFrame({"line": sl.lines, "strategy": name, **m}) for name, m in metrics.items()],
        ignore_index=True,
    )[["line", "strategy", "step", "distance", "improvement", "clipped"]]
    paths["strategies"] = out_dir / "strategies.csv"
    strat.to_csv(paths["strategies"], index=False)

    deriv = pd.DataFrame(
        {
            "line": sl.lines,
            "s_opt": q["s_opt"],
            "l0": q["l0"],
            "l_min": q["l_min"],
            "grad_norm": sl.grad_norm,
            "update_norm": sl.update_norm,
            "s_update": sl.s_update,
            "delta_exact": sl.delta_exact,
            "delta_fd_batch": q["delta_fd_batch"],
            "delta_fd_full": q["delta_fd_full"],
            "curvature_fd_full": q["curvature_fd_full"],
            "lr": sl.lr,
            "s_batch_min": q["s_batch_min"],
            "curvature_fd_batch": q["curvature_fd_batch"],
            "delta_batch": delta_batch,
            "delta_accum": delta_accum,
        }
    )
    paths["derivatives"] = out_dir / "derivatives.csv"
    deriv.to_csv(paths["derivatives"], index=False)

    opt_total = float(np.nansum(metrics["optimal"]["improvement"]))
    summary["strategies"] = {
        name: {
            "accumulated_improvement": _num(np.nansum(m["improvement"])),
            "share_of_optimum": _num(np.nansum(m["improvement"]) / opt_total)
            if opt_total != 0
            else None,
            "accumulated_abs_distance": _num(np.nansum(np.abs(m["distance"]))),
            "median_step": _num(np.nanmedian(m["step"])) if np.isfinite(m["step"]).any() else None,
            "clipped_lines": int(np.sum(m["clipped"])),
        }
        for name, m in metrics.items()
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {
            "s_opt_over_grad_norm": q["s_opt"] / sl.grad_norm,
            "s_opt_over_update_norm": q["s_opt"] / sl.update_norm,
        }
        if momentum > 0:
            ratios["s_opt_over_minus_accumulated_delta"] = q["s_opt"] / (-delta_accum)
    ratio_summary = {k: ratio_stats(sl.lines, v) for k, v in ratios.items()}
    summary["lambda_star"] = ratio_summary["s_opt_over_grad_norm"]
    summary["ratios"] = ratio_summary
    if momentum > 0:
        cvs = {
            k: ratio_summary[k]["cv"]
            for k in ("s_opt_over_update_norm", "s_opt_over_minus_accumulated_delta")
        }
        finite = {k: v for k, v in cvs.items() if v is not None}
        summary["momentum_ratio_flatter"] = min(finite, key=finite.get) if finite else None
        with np.errstate(divide="ignore", invalid="ignore"):
            reading = {}
            for lam in lambdas:
                for suffix in ("", "_accum"):
                    name = f"sgd_lambda_{lam:g}{suffix}"
                    rel = steps[name] / sl.s_update
                    ok = np.isfinite(rel)
                    reading[name] = _num(np.median(rel[ok])) if ok.any() else None
        summary["momentum_sgd_lambda_over_sgd_step"] = reading

    # ---------------------------------------------------------------- batch size (§6.6)
    n_full = store.n_train + store.n_direction
    sizes = [int(b) for b in batch_sizes if int(b) <= n_full]
    records = ((int(t), store.read_line(int(t))) for t in sl.lines)
    labpal = LabpalTap(store.n_direction, LABPAL_BATCHES, mu, mode)
    bs_cols = batch_size_rows(
        labpal.tap(records), mode=mode, momentum=momentum, batch_sizes=sizes, mu=mu
    )
    bs_table = pd.DataFrame(bs_cols)
    paths["batch_size"] = out_dir / "batch_size.csv"
    bs_table.to_csv(paths["batch_size"], index=False)
    summary["batch_size"] = _batch_size_summary(bs_table, store.n_direction, mode, smoothing)
    summary["batch_size"]["batch_sizes"] = sizes

    # ---------------------------------------------------------------- estimators
    _, batch_coefs = polynomial_fits(sl.positions, sl.batch, window, (2,))
    est_cols = estimator_columns(
        sl,
        {name: store.read_array(name)[sl.lines] for name in ESTIMATES},
        q["s_opt"],
        coefs[:, FIT_DEGREES.index(2), :3],
        batch_coefs[:, 0, :3],
        labpal.rows,
        mode=mode,
        n_train=store.n_train,
        batch_size=store.n_direction,
    )
    paths["estimators"] = out_dir / "estimators.csv"
    pd.DataFrame(est_cols).to_csv(paths["estimators"], index=False)
    summary["estimators"] = estimator_summary(est_cols, store.n_direction)
    summary["estimators"]["store_has_inputs"] = store.has_estimates

    noisy = write_direction_distances(run_dir, window, mode)
    if noisy is not None:
        med = noisy["median"][np.isfinite(noisy["median"])]
        summary["noisy_directions"] = {
            "positions": int(noisy["steps"].size),
            "directions": int(noisy["matrices"].shape[1]),
            "median": float(np.median(med)) if med.size else None,
            "median_per_position": [float(m) if np.isfinite(m) else None for m in noisy["median"]],
            "steps": [int(t) for t in noisy["steps"]],
        }
        paths["directions"] = run_dir / "analysis" / "directions.npz"

    paths["summary"] = out_dir / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return paths


def _batch_size_summary(table: pd.DataFrame, b: int, mode: str, smoothing: int) -> dict[str, Any]:
    """δ ratios vs ``B/bs`` and accumulated improvements per batch size (SPEC §6.6, §7).

    Corrected: median over lines of ``δ_bs/δ_B``. Faithful: median over the ratio of the
    MA-``smoothing`` ("valid") series, ``MA(δ_bs)/MA(δ_B)``, as the original plots.
    """
    out: dict[str, Any] = {"reference_batch_size": int(b), "delta_ratio": {}, "improvement": {}}
    if table.empty or b == 0:
        return out
    opt = table[table.strategy == "optimal"].set_index("line")
    opt_total = float(np.nansum(opt.improvement))
    ref = table[(table.strategy == "sgd") & (table.batch_size == b)].set_index("line").delta
    series = {
        int(bs): g.set_index("line").delta
        for bs, g in table[table.strategy == "sgd"].groupby("batch_size")
    }
    n_full = int(opt.batch_size.iloc[0]) if len(opt) else 0
    series_full = ("full", n_full, opt.delta)
    items = [(bs, bs, s) for bs, s in series.items()] + [series_full]
    for key, bs, s in items:
        s = s.reindex(ref.index).to_numpy(dtype=np.float64)
        r_ = ref.to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if mode == "faithful":
                ratio = moving_average(s, smoothing, mode) / moving_average(r_, smoothing, mode)
            else:
                ratio = s / r_
        ok = np.isfinite(ratio)
        out["delta_ratio"][str(key)] = {
            "batch_size": int(bs),
            "median_ratio": _num(np.median(ratio[ok])) if ok.any() else None,
            "expected_ratio": _num(b / bs) if bs else None,
        }
    for (bs, name), g in table[table.strategy != "optimal"].groupby(["batch_size", "strategy"]):
        total = float(np.nansum(g.improvement))
        out["improvement"].setdefault(str(int(bs)), {})[name] = {
            "accumulated_improvement": _num(total),
            "share_of_optimum": _num(total / opt_total) if opt_total != 0 else None,
        }
    out["optimal_accumulated_improvement"] = _num(opt_total)
    return out
