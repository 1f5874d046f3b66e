"""Analyses of a measured run (docs/method.md §6): shape, strategies, batch size, run tables.

Pure numpy/pandas on the line store's arrays; this package never imports torch, so a run
directory copied to a machine without a GPU stack can be analysed. Entry point:
:func:`analyze_run`. Formulas and table columns: ``docs/analysis.md``.
"""

from __future__ import annotations

from steplines.analysis.batch_size import BATCH_SIZES, batch_size_rows, simulate_batch
from steplines.analysis.lines import SummaryLines, from_arrays, load_summary
from steplines.analysis.run import analyze_run, ratio_stats
from steplines.analysis.settings import MODES, AnalysisRequest, AnalysisSettings
from steplines.analysis.shape import (
    consecutive_distances,
    distance_matrix,
    pairwise_mae,
    polynomial_fits,
    shape_curves,
    shift_by_min,
)
from steplines.analysis.strategies import (
    accumulate,
    evaluate_line,
    fbpal_sgd_steps,
    fd_derivative_curvature,
    fd_weights,
    first_argmin,
    line_quantities,
    momentum_proxy,
    moving_average,
    pal_step,
    stencil_columns,
    strategy_metrics,
    strategy_steps,
)
from steplines.analysis.tables import AnalysisTables

__all__ = [
    "BATCH_SIZES",
    "MODES",
    "AnalysisRequest",
    "AnalysisSettings",
    "AnalysisTables",
    "SummaryLines",
    "accumulate",
    "analyze_run",
    "batch_size_rows",
    "consecutive_distances",
    "distance_matrix",
    "evaluate_line",
    "fbpal_sgd_steps",
    "fd_derivative_curvature",
    "fd_weights",
    "first_argmin",
    "from_arrays",
    "line_quantities",
    "load_summary",
    "momentum_proxy",
    "moving_average",
    "pairwise_mae",
    "pal_step",
    "polynomial_fits",
    "ratio_stats",
    "shape_curves",
    "shift_by_min",
    "simulate_batch",
    "stencil_columns",
    "strategy_metrics",
    "strategy_steps",
]
