"""The report's figures: a registry of (name, title, caption, drawing function).

Each entry of :data:`FIGURES` draws one figure of the paper from a run's analysis tables
(``RUN/analysis/`` or ``RUN/analysis-<tag>/``: the tables, ``training.csv``, ``views.npz``,
``bootstrap.npz``, ``directions.npz``) and the trajectory's eval-mode records — never from the
line store — and writes a caption that puts this run's numbers next to the paper's. Adding a
figure is adding an entry. :func:`figures_of` makes the entries a run has the data for into
:class:`PageFigure` objects, ready for :mod:`steplines.report.page` to draw.

This module never imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from steplines.plotting import (
    plot_approximations,
    plot_batch_size,
    plot_distance_matrices,
    plot_fits,
    plot_lines,
    plot_strategies,
    plot_training,
)
from steplines.plotting.estimators import plot_estimators
from steplines.plotting.noisy import plot_noisy_matrices
from steplines.report.numbers import fmt, overshoot, pct, read_json
from steplines.store.run import RunLayout

if TYPE_CHECKING:
    from steplines.config import RunConfig
    from steplines.report.data import RunData

__all__ = ["FIGURES", "FigureSpec", "PageFigure", "estimator_figure", "eval_metrics", "figures_of"]


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    Attributes:
        name: File stem (``RUN/figures/<name>.png``) and HTML id.
        title: Heading on the page.
        caption: This run's numbers beside the paper's, from the loaded run.
        draw: The figure of a run (smoothed as its analysis mode says).
        available: Whether the run has what the figure needs.
    """

    name: str
    title: str
    caption: Callable[[RunData], str]
    draw: Callable[[RunData], Figure]
    available: Callable[[RunData], bool] = lambda run: True


# ------------------------------------------------------------------------------ helpers


def _strategy_share(run: RunData, name: str) -> str:
    return pct(run.summary.get("strategies", {}).get(name, {}).get("share_of_optimum"))


def _comparison_rate(run: RunData) -> float:
    """Fig. 5's "SGD λ": the paper's λ, or in run scale the run's own λ*."""
    s = run.summary
    return float((s.get("lambdas") or [(s.get("rates") or {}).get("lambda_star_in") or 0.05])[0])


def eval_metrics(run_dir: Path) -> pd.DataFrame | None:
    """Eval-mode metrics at the checkpoints (``trajectory/eval_*.json``), or None."""
    rows = [read_json(p) for p in RunLayout(run_dir).eval_paths()]
    rows = [r for r in rows if "val_accuracy" in r]
    return pd.DataFrame(rows).sort_values("step") if rows else None


# ------------------------------------------------------------------------------ Fig. 1


def _line_bn(config: RunConfig | None) -> str:
    """How the lines normalise BatchNorm (``measure.batchnorm``, default ``batch``)."""
    if config is not None and config.measure.batchnorm == "running":
        return "BatchNorm with θ_t's running statistics"
    return "BatchNorm with each evaluation batch's own statistics"


def _acc_text(run_dir: Path) -> str:
    ev = eval_metrics(run_dir)
    if ev is None:
        return ""
    last = ev.iloc[-1]
    return (
        f"; ours at step {int(last.step)}: training accuracy {last.train_accuracy:.3f}, "
        f"validation accuracy {last.val_accuracy:.3f}"
    )


def _eval_vs_lines(run_dir: Path, d: pd.DataFrame) -> str:
    """Eval-mode training loss at the last checkpoint with a line beside that line's l(0)."""
    ev = eval_metrics(run_dir)
    if ev is None or "train_loss" not in ev or d.empty:
        return ""
    ev = ev[ev.step <= d.line.max()]
    if ev.empty:
        return ""
    last = ev.iloc[-1]
    row = d[d.line <= last.step].iloc[-1] if (d.line <= last.step).any() else d.iloc[0]
    return (
        f"; at step {int(last.step)} the eval-mode training loss is {fmt(last.train_loss)} "
        f"and l(0) of line {int(row.line)} is {fmt(row.l0)}"
    )


def _training_caption(run: RunData) -> str:
    d = run.derivatives.sort_values("line")
    lines = d.line.to_numpy()
    return (
        "Both kinds of numbers are drawn, labelled. Solid: full-batch training loss "
        "l(0), validation loss at s = 0 and the direction batch's loss at every "
        f"measured line, evaluated as the lines are ({_line_bn(run.config)}). "
        "Squares: losses and (right) accuracy in eval mode at "
        "every checkpoint (model.eval(): running BatchNorm statistics, no dropout; "
        "the store holds no accuracy), when the trajectory recorded them. Paper "
        "(ResNet-20, λ = 0.1): training and validation accuracy rise steadily over the "
        f"10,000 steps{_acc_text(run.path)}. Ours: l(0) from "
        f"{fmt(d.l0.iloc[0])} (line {lines[0]}) to {fmt(d.l0.iloc[-1])} "
        f"(line {lines[-1]}){_eval_vs_lines(run.path, d)}."
    )


def _draw_training(run: RunData) -> Figure:
    tr = run.training.sort_values("line")
    ok = np.isfinite(tr.train_l0.to_numpy(float))
    tr = tr[ok]
    return plot_training(
        tr.line.to_numpy(),
        tr.train_l0.to_numpy(float),
        tr.val_l0.to_numpy(float),
        tr.batch_loss.to_numpy(float),
        evals=eval_metrics(run.path),
    )


# ------------------------------------------------------------------------------ Figs. 2, 5


def _lines_caption(run: RunData) -> str:
    reps = ", ".join(str(v.t) for v in run.views)
    return (
        f"Full-batch loss l (red), direction-batch loss l_B (green) and the min–max "
        f"band of the mini-batch losses (training rows in consecutive groups of the "
        f"batch size) at lines {reps}; dashed: SGD's step, "
        "diamond: s_opt. Paper (ResNet-20, lines 10/4000/8000): l_B is always steeper "
        "at 0 and lower than l; the lines look like simple parabolas; the band is ≈ 0.4 "
        "wide at line 10."
    )


def _approx_caption(run: RunData) -> str:
    return (
        f"Line {run.views[0].t}: l, l_B and the parabolas implied by SGD (as trained, vertex at "
        f"its step), SGD λ = {fmt(_comparison_rate(run))} and PAL µ = "
        f"{fmt(run.summary.get('mu', 0.1))}, all through l_B(0); dashed: their minima; red "
        "diamond: s_opt; green cross: the minimum of l_B. Paper: SGD's parabola approximates "
        "l_B, not l, and overshoots s_opt."
    )


def _draw_approx(run: RunData) -> Figure:
    view = run.views[0]
    row = run.derivatives.set_index("line").loc[view.t]
    return plot_approximations(
        view,
        direction_norm=float(row.direction_norm),
        delta_batch=float(row.delta_batch),
        lam=_comparison_rate(run),
        mu=float(run.summary.get("mu", 0.1)),
    )


# ------------------------------------------------------------------------------ Figs. 3, 4, 8


def _distances_caption(run: RunData) -> str:
    s = run.summary
    dist = s.get("distances", {})
    return (
        f"MAE between min-shifted full-batch lines on ±{fmt(s.get('window'))}: all lines, "
        "the first 50, the later lines, and consecutive lines (log y). Paper (ResNet-20): "
        "high for the first ~10 lines, afterwards < 0.3 and concentrated around 0.01; "
        "consecutive lines similar. Ours: first lines median "
        f"{fmt(dist.get('first_median'))}, later lines median {fmt(dist.get('later_median'))} "
        f"(max {fmt(dist.get('later_max'))}), consecutive median "
        f"{fmt(dist.get('consecutive_median_later'))} (later lines)."
    )


def _draw_distances(run: RunData) -> Figure:
    dist = run.summary.get("distances", {})
    return plot_distance_matrices(
        run.distances, int(dist.get("later_from_line_index") or 0), dist.get("matrix_stride")
    )


def _noisy_caption(run: RunData) -> str:
    noisy = run.summary["noisy_directions"]
    later = run.summary.get("distances", {}).get("later_median")
    return (
        f"At {noisy['positions']} steps, {noisy['directions']} lines from the same "
        "parameters along the gradients of different mini-batches: MAE between their "
        "min-shifted full-batch lines, and its median over training. Paper (ResNet-20, "
        "31 directions at 100 positions): the distances are low, so the line shape "
        "hardly depends on the mini-batch. Ours: median "
        f"{fmt(noisy.get('median'))} (later SGD lines: {fmt(later)})."
    )


def _draw_noisy(run: RunData) -> Figure:
    return plot_noisy_matrices(run.tables.directions or {})


def _fits_caption(run: RunData) -> str:
    fits = run.summary.get("fits", {})
    return (
        f"MAE of least-squares polynomials of degree 1–4 fitted to l on "
        f"±{fmt(fits.get('window'))} (log y), and the degree-2 coefficients each shifted "
        "by its own minimum. Paper: the degree-2 error is always low and degree 1 clearly "
        "worse; the slope stays roughly constant, the curvature rises over the first steps "
        f"and then decreases. Ours: mean MAE degree 1 {fmt(fits.get('mean_mae_degree_1'))}, "
        f"degree 2 {fmt(fits.get('mean_mae_degree_2'))}."
    )


# ------------------------------------------------------------------------------ Figs. 6, 7


def _strategies_caption(run: RunData) -> str:
    s = run.summary
    strat = s.get("strategies", {})
    lam_name = next((n for n in strat if n.startswith("sgd_lambda") and "accum" not in n), None)
    share = lambda name: _strategy_share(run, name)  # noqa: E731
    text = (
        "Update steps, distances to the full-batch minimum (symlog), improvements "
        "(symlog; smoothed over 25 lines), accumulated |distance| and improvement (shaded: "
        "the row-bootstrap interval), and "
        f"the ratio s_opt/{'(−D_t)' if run.momentum > 0 else '‖g_t‖'}. Paper (ResNet-20, "
        "β = 0): FBPAL ≈ optimal, SGD λ = 0.05 about as good, λ = 0.1 steps ≈ 2× beyond "
        "s_opt, the exact line search on the direction batch performs poorly, "
        "s_opt/‖g‖ ≈ 0.05. Ours (share of the optimum's accumulated improvement): "
        f"FBPAL {share('fbpal')}, "
        + (f"SGD λ = {lam_name[len('sgd_lambda_') :]} {share(lam_name)}, " if lam_name else "")
        + f"constant λ* out-of-sample {share('lambda_star_out')} (in-sample "
        f"{share('lambda_star_in')}), "
        f"PAL {share('pal')}, direction batch {share('exact_batch')}, SGD as trained "
        f"{share('sgd')}; λ* = {fmt(s.get('lambda_star', {}).get('median'))}; SGD's step is "
        f"{fmt(overshoot(run.derivatives))}× s_opt (median)."
    )
    if run.momentum > 0:
        text += (
            " For β > 0 (Fig. 9) the ratio divides by the accumulated directional "
            "derivative D_t (docs/analysis.md); dashed grey: s_opt/‖m_t‖."
        )
    return text


def _draw_strategies(run: RunData) -> Figure:
    return plot_strategies(
        run.strategies,
        run.derivatives,
        momentum=run.momentum,
        valid=run.mode == "faithful",
        mu=float(run.summary.get("mu", 0.1)),
        bands=run.tables.accumulated_bands(),
    )


def _batch_size_caption(run: RunData) -> str:
    bs = run.summary.get("batch_size", {})
    ratio_txt = ", ".join(
        f"bs {k}: {fmt(v.get('median_ratio'))} (exp. {fmt(v.get('expected_ratio'))})"
        for k, v in bs.get("delta_ratio", {}).items()
        if k != "full"
    )
    b = bs["reference_batch_size"]
    return (
        "Accumulated improvement of SGD (as trained) and PAL with simulated direction "
        "batches of each size, against the optimum; |δ| per batch size; the ratio "
        f"δ_bs/δ_{b} against the expected {b}/bs (dashed). Paper (ResNet-20): SGD suffers "
        "more than PAL at small bs, bs 512 is almost optimal, the ratio equals 128/bs for bs "
        f"32…256 throughout and is lower early for bs ≥ 512. Ours (median ratio): {ratio_txt}."
    )


def _draw_batch_size(run: RunData) -> Figure:
    return plot_batch_size(
        run.batch_size,
        reference_batch_size=int(run.summary["batch_size"]["reference_batch_size"]),
        valid=run.mode == "faithful",
        lr=run.lr,
        mu=float(run.summary.get("mu", 0.1)),
    )


# ------------------------------------------------------------------------------ registry

FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "training",
        "Fig. 1 — training curves",
        _training_caption,
        _draw_training,
        lambda run: run.training is not None and not run.derivatives.empty,
    ),
    FigureSpec(
        "lines",
        "Fig. 2 — representative lines",
        _lines_caption,
        lambda run: plot_lines(run.views),
        lambda run: bool(run.views),
    ),
    FigureSpec(
        "distances", "Figs. 3/11/12 — distances between lines", _distances_caption, _draw_distances
    ),
    FigureSpec(
        "directions",
        "Fig. 8 — lines along noisy directions",
        _noisy_caption,
        _draw_noisy,
        lambda run: bool(run.summary.get("noisy_directions")) and run.tables.directions is not None,
    ),
    FigureSpec(
        "fits",
        "Figs. 4/13/14 — polynomial fits",
        _fits_caption,
        lambda run: plot_fits(run.fits),
    ),
    FigureSpec(
        "approximations",
        "Fig. 5 — parabolic approximations",
        _approx_caption,
        _draw_approx,
        lambda run: bool(run.views) and run.views[0].t in set(run.derivatives.line),
    ),
    FigureSpec(
        "strategies",
        "Figs. 6/9/15–18 — line-search strategies",
        _strategies_caption,
        _draw_strategies,
    ),
    FigureSpec(
        "batch_size",
        "Figs. 7/19/20 — batch size",
        _batch_size_caption,
        _draw_batch_size,
        lambda run: (
            not run.batch_size.empty
            and bool(run.summary.get("batch_size", {}).get("reference_batch_size"))
        ),
    ),
)
"""The report's figures, in page order."""


@dataclass(frozen=True)
class PageFigure:
    """A figure of a page, ready to draw: file stem, heading, caption and drawing function."""

    name: str
    title: str
    caption: str
    draw: Callable[[], Figure]


def figures_of(run: RunData) -> list[PageFigure]:
    """The figures of :data:`FIGURES` this run has the data for, in page order."""
    return [
        PageFigure(spec.name, spec.title, spec.caption(run), functools.partial(spec.draw, run))
        for spec in FIGURES
        if spec.available(run)
    ]


def estimator_figure(run: RunData) -> PageFigure | None:
    """The figure of the estimators section (None when the tables have no estimators)."""
    if run.estimators is None or run.estimators.empty:
        return None
    b = (run.summary.get("estimators") or {}).get("batch_size")
    return PageFigure(
        "estimators",
        "Cheap estimators against the measured line",
        "Top: each estimator's error at every line (grey), its rolling median and 25–75 % "
        "band; dashed: no error (B_simple: the run's batch size). Bottom: distribution over "
        "all lines (red: median). Panels without data say 'not measured'.",
        lambda: plot_estimators(run.estimators, batch_size=b),
    )
