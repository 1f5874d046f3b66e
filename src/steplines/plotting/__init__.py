"""Figures of the paper (docs/method.md §6.5–§6.8), drawn with matplotlib from the analysis tables.

Every ``plot_*`` function takes tables or arrays and returns a :class:`matplotlib.figure.Figure`
built without ``pyplot`` (no global state, no GUI backend; rendering uses Agg). Save with
:func:`save_figure` (PNG for the HTML report, PDF for papers). This package never imports torch.

| function | paper figures |
|---|---|
| :func:`plot_training` | 1 (loss only: the line store holds no accuracy) |
| :func:`plot_lines` | 2 |
| :func:`plot_distance_matrices` | 3, 8, 11, 12 |
| :func:`plot_fits` | 4, 13, 14 |
| :func:`plot_approximations` | 5 |
| :func:`plot_strategies` | 6, 9, 15–18 |
| :func:`plot_batch_size` | 7, 19, 20 |
| :func:`plot_compare` | 10 |
"""

from __future__ import annotations

from steplines.analysis.views import LineView, line_view
from steplines.plotting.figures import (
    STRATEGY_COLORS,
    STRATEGY_ORDER,
    plot_approximations,
    plot_batch_size,
    plot_compare,
    plot_distance_matrices,
    plot_fits,
    plot_lines,
    plot_rows,
    plot_strategies,
    plot_training,
    save_figure,
    strategy_label,
)

__all__ = [
    "STRATEGY_COLORS",
    "STRATEGY_ORDER",
    "LineView",
    "line_view",
    "plot_approximations",
    "plot_batch_size",
    "plot_compare",
    "plot_distance_matrices",
    "plot_fits",
    "plot_lines",
    "plot_rows",
    "plot_strategies",
    "plot_training",
    "save_figure",
    "strategy_label",
]
