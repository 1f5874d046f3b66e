"""Analyse a run directory: write the tables of ``docs/analysis.md`` to ``RUN/analysis/``.

:func:`analyze_run` reads the summary arrays of the done lines (bounded memory: ``[T]`` and
``[T, K]`` arrays only), computes the shape analyses (docs/method.md §6.2), the strategy
metrics (§6.3–§6.5, §6.9), the claims and their intervals, and streams the per-sample data one
line at a time for the batch-size simulation (§6.6), the row bootstrap and the line views.

This module never imports torch.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steplines.analysis.batch_size import batch_size_rows
from steplines.analysis.bootstrap import (
    SEED,
    ReplicateTap,
    StepRules,
    basic_interval,
    percentile_interval,
)
from steplines.analysis.claims import ClaimData, evaluate_claims
from steplines.analysis.estimators import (
    LABPAL_BATCHES,
    LabpalTap,
    estimator_columns,
    estimator_summary,
)
from steplines.analysis.lines import SummaryLines, lines_missing, load_summary
from steplines.analysis.noisy import noisy_distances
from steplines.analysis.settings import (
    AnalysisRequest,
    AnalysisSettings,
    resolve_settings,
)
from steplines.analysis.shape import (
    consecutive_distances,
    pairwise_mae,
    polynomial_fits,
    shape_curves,
    window_range,
)
from steplines.analysis.strategies import (
    coefficient_of_variation,
    line_quantities,
    moving_average,
    rate_ratios,
    running_median,
    strategy_metrics,
    strategy_steps,
)
from steplines.analysis.tables import AnalysisTables
from steplines.analysis.views import BrowserTap, line_views
from steplines.errors import RunDirError
from steplines.store import LineStore
from steplines.store.run import RunLayout
from steplines.store.schema import ESTIMATOR_ARRAYS

if TYPE_CHECKING:
    from steplines.config import RunConfig

__all__ = [
    "FIT_DEGREES",
    "analyze_run",
    "ratio_stats",
]

FIT_DEGREES: tuple[int, ...] = (1, 2, 3, 4)
"""Polynomial degrees fitted per line (docs/method.md §6.2)."""

FIRST_LINES = 50
"""Size of the "first lines" distance-matrix view (docs/method.md §6.2: first 50 lines)."""

STEP_STAR = "step_star_in"
"""One constant step length, the median ``s_opt`` (the claim ``norm_explains`` compares)."""


def _num(x: Any) -> Any:
    """JSON-safe float (NaN/inf → None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def ratio_stats(lines: np.ndarray, ratio: np.ndarray) -> dict[str, Any]:
    """Median, IQR, trend and coefficient of variation of a per-line ratio
    (docs/method.md §6.5, §7).

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


def analyze_run(run_dir: Path, request: AnalysisRequest | None = None) -> AnalysisTables:
    """Analyse ``run_dir`` and write its tables (``RUN/analysis/`` or ``RUN/analysis-<tag>/``).

    Args:
        run_dir: A run directory with ``lines.zarr`` (and ``config.toml``; without it the run
            is taken as SGD and β is inferred from ``direction_norm == grad_norm``).
        request: Mode, scale, overrides and the claims' family
            (:class:`~steplines.analysis.settings.AnalysisRequest`; default: the run's
            default analysis).

    Returns:
        The tables as written (:class:`~steplines.analysis.tables.AnalysisTables`; its
        ``directory`` is where they are).

    Raises:
        RunDirError: No ``lines.zarr``, another schema version, or no done line.
    """
    request = request or AnalysisRequest()
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    if not layout.lines_path.is_dir():
        raise RunDirError(f"{run_dir} has no {layout.lines_path.name}; measure the run first")
    store = LineStore.open(layout.lines_path)
    sl = load_summary(store, faithful=request.faithful)
    if len(sl) == 0:
        raise RunDirError(f"{layout.lines_path} has no measured lines yet; measure the run first")
    config = layout.config_or_none()
    q = line_quantities(sl, faithful=request.faithful)
    settings = resolve_settings(
        config,
        request,
        s_opt=q["s_opt"],
        positions=sl.positions,
        direction_norm=sl.direction_norm,
        grad_norm=sl.grad_norm,
    )
    tables = _tables(run_dir, config, store, sl, q, settings, request)
    return tables.write(layout.analysis_dir(settings.tag))


def _tables(
    run_dir: Path,
    config: RunConfig | None,
    store: LineStore,
    sl: SummaryLines,
    q: dict[str, np.ndarray],
    settings: AnalysisSettings,
    request: AnalysisRequest,
) -> AnalysisTables:
    """Every stage of the analysis, in order; the tables they make (nothing is written)."""
    shape = _shape(sl, settings, request.max_matrix_lines)
    strat = _strategies(sl, q, settings)
    streamed = _stream(store, sl, q, strat, settings, request.batch_sizes)
    if streamed.replicates:
        _add_intervals(strat, streamed.replicates, sl.direction_norm, settings.level)
    estimators, est_summary = _estimators(store, sl, q, shape, streamed.labpal_rows, settings)
    noisy = noisy_distances(run_dir, settings.window, faithful=settings.faithful)
    data = _claim_data(
        run_dir.name,
        sl,
        q,
        shape,
        strat,
        streamed,
        noisy,
        settings,
        {"batch_size": int(store.n_direction), "epochs": _epochs(sl.lines, config)},
    )
    resamples = request.line_resamples if settings.resamples else 0
    claims = evaluate_claims(
        [data], resamples=resamples, level=settings.level, family=request.family
    )
    training, views = line_views(store, sl.lines, faithful=settings.faithful)
    bs_summary = _batch_size_summary(
        streamed.batch_size, store.n_direction, request.smoothing, faithful=settings.faithful
    )
    summary = {
        **_head(store, sl, config, settings),
        "distances": shape.summary,
        "fits": shape.fit_summary,
        **strat.summary,
        "batch_size": bs_summary | {"batch_sizes": streamed.batch_sizes},
        "bootstrap": _bootstrap_note(store, settings, request.line_resamples),
        "estimators": est_summary,
        **_noisy_summary(noisy),
        "claims": {c.key: c.verdict for c in claims},
        "claims_family": request.family,
        "settings": settings.to_json(),
    }
    bootstrap = None
    if streamed.replicates:
        points = {f"point:impr:{k}": m["improvement"] for k, m in strat.metrics.items()}
        bootstrap = {"lines": sl.lines, **streamed.replicates, **points}
    return AnalysisTables(
        settings=settings,
        summary=summary,
        strategies=strat.table,
        fits=shape.fits,
        derivatives=strat.derivatives,
        batch_size=streamed.batch_size,
        estimators=estimators,
        distances=shape.arrays,
        claims=[c.to_json() for c in claims],
        claim_data=data,
        training=training,
        views=views,
        browser=streamed.browser,
        bootstrap=bootstrap,
        directions=noisy,
    )


def _head(
    store: LineStore, sl: SummaryLines, config: RunConfig | None, settings: AnalysisSettings
) -> dict[str, Any]:
    """The first entries of ``summary.json``: what was analysed, with which settings."""
    faithful = settings.faithful
    return {
        "mode": settings.mode,
        "scale": settings.scale,
        "lines_used": len(sl),
        "lines_missing": lines_missing(store.done(), config),
        "lines_total": int(sl.n_lines_total),
        "optimizer": settings.optimizer.name,
        "momentum": settings.momentum,
        "momentum_source": settings.optimizer.source,
        "window": settings.window,
        "lambdas": list(settings.lambdas),
        "mu": settings.mu,
        "full_batch_rows_metrics": int(store.n_train + (store.n_direction if faithful else 0)),
        "full_batch_rows_shape": int(store.n_train),
    }


@dataclass(frozen=True)
class _Streamed:
    """What one pass over the lines' per-sample rows gives (§6.6 and the row bootstrap)."""

    batch_size: pd.DataFrame
    batch_sizes: list[int]
    replicates: dict[str, np.ndarray]
    labpal_rows: Any
    browser: dict[str, Any]
    step_star: dict[str, np.ndarray]


def _stream(
    store: LineStore,
    sl: SummaryLines,
    q: dict[str, np.ndarray],
    strat: _Strategies,
    settings: AnalysisSettings,
    batch_sizes: Sequence[int],
) -> _Streamed:
    """Read every line's rows once: the batch-size simulation, LABPAL's mini-batches, the
    row-bootstrap replicates and the line browser's views (bounded memory: one line at a time).
    """
    faithful = settings.faithful
    sizes = [int(b) for b in batch_sizes if int(b) <= store.n_train + store.n_direction]
    records = ((int(t), store.read_line(int(t))) for t in sl.lines)
    labpal = LabpalTap(store.n_direction, LABPAL_BATCHES, settings.mu, faithful=faithful)
    step_star = _step_star(sl, q, settings)
    rows = ReplicateTap(
        {k: m["step"] for k, m in strat.metrics.items()} | {STEP_STAR: step_star["step"]},
        sl.lines,
        faithful=faithful,
        window=settings.window,
        resamples=settings.resamples,
        rules=_step_rules(settings),
        batch_slope=strat.derivatives["delta_batch"].to_numpy(np.float64),
    )
    browser = BrowserTap(sl.lines, faithful=faithful)
    columns = batch_size_rows(
        labpal.tap(rows.tap(browser.tap(records))),
        faithful=faithful,
        # the original's δ_B = −‖g‖ substitution is for SGD only: NaN never compares equal to 0
        momentum=settings.momentum if settings.optimizer.is_sgd else math.nan,
        batch_sizes=sizes,
        mu=settings.mu,
    )
    return _Streamed(
        batch_size=pd.DataFrame(columns),
        batch_sizes=sizes,
        replicates=rows.arrays(),
        labpal_rows=labpal.rows,
        browser=browser.result(),
        step_star=step_star,
    )


def _bootstrap_note(
    store: LineStore, settings: AnalysisSettings, line_resamples: int
) -> dict[str, Any]:
    """``summary.json``'s record of how the intervals were drawn."""
    return {
        "row_resamples": settings.resamples,
        "line_resamples": int(line_resamples),
        "level": settings.level,
        "seed": SEED,
        "full_batch_rows": int(store.n_train),
        "rule": "Poisson(1) weight per training sample id, the same in every line of a "
        "replicate (ids in blocks of 4096, default_rng([seed, block])); summaries combine "
        "replicate r of every line; claims add a block bootstrap over lines",
    }


def _estimators(
    store: LineStore,
    sl: SummaryLines,
    q: dict[str, np.ndarray],
    shape: _Shape,
    labpal_rows: Any,
    settings: AnalysisSettings,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The cheap estimators against the measured line (``estimators.csv``) and their summary."""
    _, batch_coefs = polynomial_fits(sl.positions, sl.batch, settings.window, (2,))
    columns = estimator_columns(
        sl,
        {name: store.read_array(name)[sl.lines] for name in ESTIMATOR_ARRAYS},
        q["s_opt"],
        shape.coefs[:, FIT_DEGREES.index(2), :3],
        batch_coefs[:, 0, :3],
        labpal_rows,
        faithful=settings.faithful,
        n_train=store.n_train,
        batch_size=store.n_direction,
    )
    summary = estimator_summary(columns, store.n_direction)
    summary["store_has_inputs"] = store.has_estimator_inputs
    return pd.DataFrame(columns), summary


def _noisy_summary(noisy: dict[str, Any] | None) -> dict[str, Any]:
    """``{"noisy_directions": ...}`` of ``summary.json`` ({} when none were measured)."""
    if noisy is None:
        return {}
    med = noisy["median"][np.isfinite(noisy["median"])]
    return {
        "noisy_directions": {
            "positions": int(noisy["steps"].size),
            "directions": int(noisy["matrices"].shape[1]),
            "median": float(np.median(med)) if med.size else None,
            "median_per_position": [float(m) if np.isfinite(m) else None for m in noisy["median"]],
            "steps": [int(t) for t in noisy["steps"]],
        }
    }


@dataclass
class _Shape:
    arrays: dict[str, Any]
    summary: dict[str, Any]
    fits: pd.DataFrame
    fit_summary: dict[str, Any]
    mae: np.ndarray
    coefs: np.ndarray
    fit_range: np.ndarray
    consecutive: np.ndarray
    height: np.ndarray
    later_from: int
    far: np.ndarray
    far_any: np.ndarray


def _far_distances(curves: np.ndarray, later_from: int) -> tuple[np.ndarray, np.ndarray]:
    """The distance of lines far apart in training (the contrast of Fig. 3).

    Returns:
        ``(far, far_any)``: ``far[t] = D(t, t + h)`` for the later lines ``t`` with ``t + h``
        inside the run (else NaN), ``h`` half the later lines; ``far_any[t]`` the same for
        every line, ``D(t, t − h)`` where ``t + h`` is past the end.
    """
    n = curves.shape[0]
    h = max(1, (n - later_from) // 2)
    partner = np.where(np.arange(n) + h < n, np.arange(n) + h, np.arange(n) - h)
    far_any = np.full(n, np.nan)
    ok = np.flatnonzero(partner >= 0)
    if ok.size:
        diff = np.abs(curves[ok] - curves[partner[ok]])
        k = np.sum(np.isfinite(diff), axis=1)
        with np.errstate(invalid="ignore"):
            far_any[ok] = np.where(k > 0, np.nansum(diff, axis=1) / np.maximum(k, 1), np.nan)
    index = np.arange(n)
    far = np.where((index >= later_from) & (index + h < n), far_any, np.nan)
    return far, far_any


def _shape(sl: SummaryLines, settings: AnalysisSettings, max_matrix_lines: int) -> _Shape:
    """Distance matrices and polynomial fits of the full-batch lines (docs/method.md §6.2)."""
    n, faithful, window = len(sl), settings.faithful, settings.window
    grid, curves = shape_curves(
        sl.positions, sl.shape_full, window, faithful=faithful, update_index=sl.update_index
    )
    stride = max(1, math.ceil(n / max_matrix_lines))
    rows = np.arange(0, n, stride)
    matrix = pairwise_mae(curves, rows)
    first_rows = np.arange(min(FIRST_LINES, n))
    first_matrix = pairwise_mae(curves, first_rows)
    consecutive = consecutive_distances(curves)
    later_from = FIRST_LINES if n >= 500 else math.ceil(0.1 * n)
    far, far_any = _far_distances(curves, later_from)
    later = pairwise_mae(curves, rows[rows >= later_from])
    arrays = {
        "matrix": matrix,
        "lines": sl.lines[rows],
        "first_matrix": first_matrix,
        "first_lines": sl.lines[first_rows],
        "consecutive": consecutive,
        "consecutive_lines": sl.lines[1:],
        "grid": grid if grid is not None else np.empty(0),
        "window": np.float64(window),
        "mode": np.str_(settings.mode),
    }
    summary = {
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
    sub = slice(None, None, 10) if faithful else slice(None)
    fit_summary = {
        "window": window,
        "lines": "every 10th line" if faithful else "all lines",
        **{
            f"mean_mae_degree_{d}": _num(np.nanmean(mae[sub, j]))
            if np.isfinite(mae[sub, j]).any()
            else None
            for j, d in enumerate(FIT_DEGREES)
        },
    }
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN heights
        height = np.nanmean(curves, axis=1)
    return _Shape(
        arrays=arrays,
        summary=summary,
        fits=fits,
        fit_summary=fit_summary,
        mae=mae,
        coefs=coefs,
        fit_range=window_range(sl.positions, sl.shape_full, window),
        consecutive=consecutive,
        height=height,
        later_from=int(later_from),
        far=far,
        far_any=far_any,
    )


@dataclass
class _Strategies:
    table: pd.DataFrame
    derivatives: pd.DataFrame
    metrics: dict[str, dict[str, np.ndarray]]
    summary: dict[str, Any]


def _strategies(
    sl: SummaryLines, q: dict[str, np.ndarray], settings: AnalysisSettings
) -> _Strategies:
    """Steps, distances and improvements of every strategy, and the λ* ratios
    (docs/method.md §6.3–§6.9)."""
    momentum = settings.momentum
    steps, delta_batch, delta_accum = strategy_steps(sl, q, settings)
    metrics = strategy_metrics(sl, q, steps, faithful=settings.faithful)
    table = pd.concat(
        [pd.DataFrame({"line": sl.lines, "strategy": name, **m}) for name, m in metrics.items()],
        ignore_index=True,
    )[["line", "strategy", "step", "distance", "improvement", "clipped"]]
    deriv = pd.DataFrame(
        {
            "line": sl.lines,
            "s_opt": q["s_opt"],
            "l0": q["l0"],
            "l_min": q["l_min"],
            "grad_norm": sl.grad_norm,
            "direction_norm": sl.direction_norm,
            "s_update": sl.s_update,
            "directional_derivative": sl.directional_derivative,
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
    summary: dict[str, Any] = {"strategies": _strategy_summary(metrics)}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {
            "s_opt_over_grad_norm": q["s_opt"] / sl.grad_norm,
            "s_opt_over_direction_norm": q["s_opt"] / sl.direction_norm,
        }
        if momentum > 0:
            ratios["s_opt_over_minus_accumulated_delta"] = q["s_opt"] / (-delta_accum)
    ratio_summary = {k: ratio_stats(sl.lines, v) for k, v in ratios.items()}
    summary["lambda_star"] = ratio_summary["s_opt_over_grad_norm"]
    summary["ratios"] = ratio_summary
    rate = rate_ratios(q["s_opt"], sl.direction_norm)
    lr = sl.lr[np.isfinite(sl.lr)]
    summary["rates"] = {
        "lambda_star_in": _num(np.nanmedian(rate)) if np.isfinite(rate).any() else None,
        "lambda_star_out_last": _num(running_median(rate)[-1]) if rate.size > 1 else None,
        "trained": _num(np.median(lr)) if lr.size else None,
        "rule": "λ*_t = s_opt/‖m_t‖ (‖m_t‖ = ‖u_t‖/λ_t); in-sample: median over all lines; "
        "out-of-sample: median over the lines before t",
    }
    if momentum > 0:
        cvs = {
            k: ratio_summary[k]["cv"]
            for k in ("s_opt_over_direction_norm", "s_opt_over_minus_accumulated_delta")
        }
        finite = {k: v for k, v in cvs.items() if v is not None}
        summary["momentum_ratio_flatter"] = min(finite, key=finite.get) if finite else None
        with np.errstate(divide="ignore", invalid="ignore"):
            reading = {}
            for lam in settings.lambdas:
                for suffix in ("", "_accum"):
                    name = f"sgd_lambda_{lam:g}{suffix}"
                    rel = steps[name] / sl.s_update
                    ok = np.isfinite(rel)
                    reading[name] = _num(np.median(rel[ok])) if ok.any() else None
        summary["momentum_sgd_lambda_over_sgd_step"] = reading
    return _Strategies(table=table, derivatives=deriv, metrics=metrics, summary=summary)


def _strategy_summary(metrics: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Per strategy: accumulated improvement, share of the optimum's, Σ|distance|, median step,
    clipped lines and lines with a step (``summary.json``'s ``strategies``)."""
    opt_impr = metrics["optimal"]["improvement"]
    out = {}
    for name, m in metrics.items():
        ok = np.isfinite(m["improvement"])
        # the share is taken over the lines where the strategy has a step (every line for
        # all but lambda_star_out, which has none on the first line)
        opt_total = float(np.nansum(opt_impr[ok]))
        out[name] = {
            "accumulated_improvement": _num(np.nansum(m["improvement"])),
            "share_of_optimum": _num(np.nansum(m["improvement"]) / opt_total)
            if opt_total != 0
            else None,
            "accumulated_abs_distance": _num(np.nansum(np.abs(m["distance"]))),
            "median_step": _num(np.nanmedian(m["step"])) if np.isfinite(m["step"]).any() else None,
            "clipped_lines": int(np.sum(m["clipped"])),
            "lines": int(ok.sum()),
        }
    return out


def _step_star(
    sl: SummaryLines, q: dict[str, np.ndarray], settings: AnalysisSettings
) -> dict[str, np.ndarray]:
    """One constant step length on every line, the median ``s_opt`` (in-sample): what the
    update's norm must beat if it explains ``s_opt`` (claim ``norm_explains``)."""
    ok = np.isfinite(q["s_opt"])
    s_star = float(np.median(q["s_opt"][ok])) if ok.any() else math.nan
    steps = {STEP_STAR: np.full(len(sl), s_star)}
    return strategy_metrics(sl, q, steps, faithful=settings.faithful)[STEP_STAR]


def _epochs(lines: np.ndarray, config: RunConfig | None) -> float | None:
    """Training length in epochs at the last analysed line (None without a config)."""
    if config is None or not len(lines):
        return None
    size = config.problem.train_size
    if not size:
        return None
    return float((int(lines[-1]) + 1) * config.problem.batch_size / size)


def _noisy_columns(
    noisy: dict[str, Any] | None, lines: np.ndarray, far_any: np.ndarray
) -> dict[str, np.ndarray]:
    """Per noisy step: its step, the median D between its directions, and the far distance
    of its own line (NaN where that line is not analysed)."""
    if noisy is None:
        return {}
    steps = np.asarray(noisy["steps"], dtype=np.int64)
    row = {int(t): i for i, t in enumerate(lines)}
    far = np.array([far_any[row[int(t)]] if int(t) in row else np.nan for t in steps])
    return {"step": steps.astype(np.float64), "median": noisy["median"], "far": far}


def _claim_data(
    name: str,
    sl: SummaryLines,
    q: dict[str, np.ndarray],
    shape: _Shape,
    strat: _Strategies,
    streamed: _Streamed,
    noisy: dict[str, Any] | None,
    settings: AnalysisSettings,
    meta: dict[str, Any],
) -> ClaimData:
    """The per-line columns every claim reads (:class:`ClaimData`), from the analysis' arrays."""
    n = len(sl)
    reps, step_star = streamed.replicates, streamed.step_star
    delta_ratio = _delta_ratios(streamed.batch_size, sl.lines, int(meta["batch_size"]))
    deg2 = FIT_DEGREES.index(2)
    mae2, rng = shape.mae[:, deg2], shape.fit_range
    consecutive = np.full(n, np.nan)
    if n > 1:
        adjacent = np.diff(sl.lines) == 1
        consecutive[1:] = np.where(adjacent, shape.consecutive, np.nan)
    impr = {k: m["improvement"] for k, m in strat.metrics.items()}
    impr[STEP_STAR] = step_star["improvement"]
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "step": sl.lines.astype(np.float64),
            "position": np.arange(n) / max(1, n - 1),
            "later": (np.arange(n) >= shape.later_from).astype(np.float64),
            "rel_fit2": mae2 / rng,
            "mae1": shape.mae[:, FIT_DEGREES.index(1)],
            "mae2": mae2,
            "curvature": shape.coefs[:, deg2, 2],
            "consecutive": consecutive,
            "far": shape.far,
            "s_opt": q["s_opt"],
            "s_update": sl.s_update,
            "direction_norm": sl.direction_norm,
            "slope_batch": strat.derivatives["delta_batch"].to_numpy(np.float64),
            "slope_full": q["delta_fd_full"],
            **{f"impr:{k}": v for k, v in impr.items()},
            **{f"delta_ratio:{bs}": v for bs, v in delta_ratio.items()},
        }
    replicates: dict[str, np.ndarray] = {}
    if reps:
        replicates = {k: v for k, v in reps.items() if k.startswith("impr:")}
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates["rel_fit2"] = reps["mae2"] / reps["range"]
        replicates["s_opt"] = reps["s_opt"]
        if "floor" in reps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a line without replicates
                columns["floor"] = np.nanmean(reps["floor"].astype(np.float64), axis=1)
    rates = strat.summary["rates"]
    return ClaimData(
        name=name,
        columns=columns,
        replicates=replicates,
        noisy=_noisy_columns(noisy, sl.lines, shape.far_any),
        meta={
            "plain_sgd": bool(settings.optimizer.plain_sgd),
            "later_median": shape.summary["later_median"],
            "lambda_star": rates["lambda_star_in"],
            "lr": rates["trained"],
            **meta,
        },
    )


def _step_rules(settings: AnalysisSettings) -> StepRules:
    """The rules by which :func:`strategy_steps` reads steps off a line, for the replicates."""
    momentum, faithful = settings.momentum, settings.faithful
    return StepRules(
        mu=settings.mu,
        lambdas=tuple(settings.lambdas),
        # batch_delta: faithful reads δ_B off l_B unless the run is plain SGD
        slope_from_line=faithful and not settings.optimizer.plain_sgd,
        beta=(0.9 if faithful else momentum) if momentum > 0 else 0.0,
    )


def _add_intervals(
    strat: _Strategies, reps: dict[str, np.ndarray], direction_norm: np.ndarray, level: float
) -> None:
    """Per-line and summary intervals from the row-bootstrap replicates ``[T, R]``.

    Per line (``derivatives.csv``): ``s_opt_low/high`` and ``optimum_improvement_low/high``.
    Summaries (``summary.json``): for every strategy ``accumulated_improvement_low/high`` and
    ``share_of_optimum_low/high`` (replicate r of all lines summed), and λ*_in's interval.
    A line's own values get the percentile interval
    (:func:`steplines.analysis.bootstrap.percentile_interval`), sums over lines the basic one
    (:func:`steplines.analysis.bootstrap.basic_interval`): measured coverage, see
    :mod:`steplines.analysis.bootstrap`.
    """
    d = strat.derivatives
    d["s_opt_low"], d["s_opt_high"] = percentile_interval(reps["s_opt"], level)
    opt = reps["impr:optimal"].astype(np.float64)
    d["optimum_improvement_low"], d["optimum_improvement_high"] = percentile_interval(opt, level)
    for name, st in strat.summary["strategies"].items():
        key = f"impr:{name}"
        if key not in reps:
            continue
        impr = reps[key].astype(np.float64)
        ok = np.isfinite(impr)
        total = np.where(ok, impr, 0.0).sum(axis=0)
        opt_total = np.where(ok, opt, 0.0).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(opt_total != 0, total / opt_total, np.nan)
        lo, hi = basic_interval(_nan(st["accumulated_improvement"]), total, level, axis=0)
        st["accumulated_improvement_low"], st["accumulated_improvement_high"] = _num(lo), _num(hi)
        lo, hi = basic_interval(_nan(st["share_of_optimum"]), share, level, axis=0)
        st["share_of_optimum_low"], st["share_of_optimum_high"] = _num(lo), _num(hi)
    rate = rate_ratios(reps["s_opt"].astype(np.float64), direction_norm[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lam = np.nanmedian(rate, axis=0)
    rates = strat.summary["rates"]
    lo, hi = basic_interval(_nan(rates["lambda_star_in"]), lam, level, axis=0)
    rates["lambda_star_in_low"] = _num(lo)
    rates["lambda_star_in_high"] = _num(hi)


def _nan(x: float | None) -> float:
    """A summary value back as a float (None → NaN)."""
    return math.nan if x is None else float(x)


def _delta_ratios(table: pd.DataFrame, lines: np.ndarray, b: int) -> dict[int, np.ndarray]:
    """Per line, ``(δ_bs/δ_B)/(B/bs)`` for the simulated ``B/4 ≤ bs ≤ 2B``, ``bs ≠ B``."""
    if table.empty or b == 0:
        return {}
    sgd = table[table.strategy == "sgd"].pivot_table(
        index="line", columns="batch_size", values="delta", aggfunc="first"
    )
    sgd = sgd.reindex(lines)
    if b not in sgd.columns:
        return {}
    ref = sgd[b].to_numpy(np.float64)
    out = {}
    for bs in sgd.columns:
        if int(bs) != b and b / 4 <= int(bs) <= 2 * b:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[int(bs)] = sgd[bs].to_numpy(np.float64) / ref / (b / int(bs))
    return out


def _batch_size_summary(
    table: pd.DataFrame, b: int, smoothing: int, *, faithful: bool
) -> dict[str, Any]:
    """δ ratios vs ``B/bs`` and accumulated improvements per batch size (docs/method.md §6.6, §7).

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
            if faithful:
                ma = functools.partial(moving_average, window=smoothing, faithful=True)
                ratio = ma(s) / ma(r_)
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
