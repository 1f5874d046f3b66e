"""One function per paper figure (docs/method.md §6.5–§6.8); numpy/pandas/matplotlib only, no torch.

Figures are built with :class:`matplotlib.figure.Figure` directly (not ``pyplot``), so nothing is
kept in a global figure registry and no GUI backend is touched; ``savefig`` renders with Agg.
Series over many lines are drawn every ``ceil(T/2000)``-th line to keep files small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import image as mpimg
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, ScalarFormatter

from steplines.analysis.strategies import accumulate, moving_average
from steplines.analysis.views import LineView

__all__ = [
    "STRATEGY_COLORS",
    "STRATEGY_ORDER",
    "LineView",
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

STRATEGY_COLORS: dict[str, str] = {
    "optimal": "red",
    "exact_batch": "green",
    "fbpal": "purple",
    "sgd": "black",
    "sgd_lambda": "orange",
    "pal": "blue",
    "fbpal_sgd": "hotpink",
    "lambda_star_in": "tab:cyan",
    "lambda_star_out": "saddlebrown",
}
"""Colours of the paper's figures (``sgd_lambda`` covers every ``sgd_lambda_<λ>`` strategy;
the ``_accum`` reading is dashed), one distinct colour per strategy."""

STRATEGY_ORDER: tuple[str, ...] = (
    "optimal",
    "fbpal",
    "lambda_star_out",
    "lambda_star_in",
    "sgd_lambda",
    "pal",
    "exact_batch",
    "sgd",
    "fbpal_sgd",
)
"""The order strategies are listed and drawn in (``sgd_lambda`` covers ``sgd_lambda_<λ>``)."""

_MAX_POINTS = 2000


# ------------------------------------------------------------------------------ helpers


def _sig3(text: str) -> str:
    """A number of a strategy's name in the tables' format (3 significant digits)."""
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def _figure(rows: int, cols: int, width: float = 4.6, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    fig.subplots(rows, cols, squeeze=False)
    return fig


def _axes(fig: Figure) -> list[Axes]:
    return list(fig.axes)


def _stride(n: int) -> int:
    return max(1, math.ceil(n / _MAX_POINTS))


def _base(name: str) -> str:
    if name.startswith("sgd_lambda"):
        return "sgd_lambda"
    return name


def strategy_label(
    name: str, lr: float | None = None, mu: float = 0.1, lambda_star: float | None = None
) -> str:
    """The legend text of a strategy name from ``strategies.csv`` (the paper's where it has one).

    Args:
        name: The strategy's name in ``strategies.csv``.
        lr: The run's (median) learning rate, for SGD as trained.
        mu: PAL's µ.
        lambda_star: The in-sample λ*, for ``lambda_star_in``.
    """
    if name == "optimal":
        return "full-batch loss (optimal)"
    if name == "exact_batch":
        return "loss of direction defining batch"
    if name == "sgd":
        return "SGD as trained" + (f" λ = {lr:.3g}" if lr is not None else "")
    if name == "lambda_star_in":
        lam = f" = {lambda_star:.3g}" if lambda_star is not None else ""
        return f"constant λ*{lam} (in-sample)"
    if name == "lambda_star_out":
        return "constant λ* (out-of-sample)"
    if name.startswith("sgd_lambda_"):
        rest = name[len("sgd_lambda_") :]
        accum = rest.endswith("_accum")
        lam = _sig3(rest[: -len("_accum")] if accum else rest)
        return f"SGD λ = {lam} (−λ·D_t)" if accum else f"SGD λ = {lam}"
    if name == "pal":
        return f"PAL µ = {mu:.3g}"
    if name == "fbpal":
        return f"FBPAL µ = {mu:.3g}"
    if name == "fbpal_sgd":
        return f"FBPAL&SGD µ = {mu:.3g}"
    return name


def _strategy_style(name: str) -> dict[str, Any]:
    style: dict[str, Any] = {"color": STRATEGY_COLORS.get(_base(name), "grey"), "lw": 1.2}
    if name.endswith("_accum"):
        style["ls"] = "--"
    return style


def _sort_strategies(names: Sequence[str]) -> list[str]:
    def key(n: str) -> tuple[int, str]:
        b = _base(n)
        return (STRATEGY_ORDER.index(b) if b in STRATEGY_ORDER else len(STRATEGY_ORDER), n)

    return sorted(names, key=key)


def _smooth(
    x: np.ndarray, lines: np.ndarray, window: int, valid: bool = False
) -> tuple[np.ndarray, ...]:
    """Moving average (docs/method.md §6.4) and the x positions it is drawn at.

    Centred (``valid=False``): entry ``k`` is the mean of the finite values of the
    ``window`` lines centred on ``k`` (``window // 2`` either side), the window clipped at the
    ends; drawn at every line. The window never depends on the series' length, so a value
    depends only on the series' own values near its line: two runs with the same values there
    get the same smoothed value, however many lines each has (Fig. 10).

    ``valid=True`` (the original analysis, ``--mode faithful``): the "valid" average of length
    ``T − w + 1``, ``w = min(window, T)``, drawn at the first ``T − w + 1`` line numbers
    (shifted by ``(w−1)/2`` lines, as the original).
    """
    if valid:
        y = moving_average(x, max(1, min(window, np.size(x))), faithful=True)
    else:
        y = moving_average(x, max(1, window))
    return lines[: y.size], y


def save_figure(
    fig: Figure, out_dir: Path, name: str, formats: Sequence[str] = ("png", "pdf"), dpi: int = 110
) -> dict[str, Path]:
    """Write ``fig`` as ``out_dir/name.<fmt>`` for every format.

    The first format solves the figure's layout, the others reuse it; afterwards the figure
    has its layout engine back, so a title added later (``fig.suptitle``, as the report's
    PDF book does) gets its own space above the panels on the next save instead of being
    drawn over the first panel's title.

    Args:
        fig: The figure.
        out_dir: Target directory (created).
        name: File stem.
        formats: File formats (``png``, ``pdf``, ``svg``).
        dpi: Resolution of raster formats.

    Returns:
        Format → written path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    engine = fig.get_layout_engine()
    try:
        for i, fmt in enumerate(formats):
            path = out_dir / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=dpi, metadata=_metadata(fmt))
            paths[fmt] = path
            if i == 0 and len(formats) > 1 and engine is not None:
                # the layout is solved by the first save; reuse it for the other formats
                fig.set_layout_engine("none")
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    return paths


def _metadata(fmt: str) -> dict[str, Any] | None:
    # reproducible files: no creation date in PDFs, no software stamp varying with versions
    if fmt == "pdf":
        return {"CreationDate": None}
    if fmt == "svg":
        return {"Date": None}
    return None


# ------------------------------------------------------------------------------ Fig 1


def _eval_column(evals: pd.DataFrame | None, name: str) -> np.ndarray | None:
    """Column ``name`` of the eval-mode metrics as floats; None when absent or all NaN."""
    if evals is None or name not in evals:
        return None
    v = pd.to_numeric(evals[name], errors="coerce").to_numpy(dtype=float)
    return v if np.isfinite(v).any() else None


def _accuracy_panel(ax: Axes, evals: pd.DataFrame) -> None:
    """Eval-mode training and validation accuracy at the checkpoints (squares, dashed)."""
    steps = evals.step.to_numpy()
    for name, color, label in (
        ("train_accuracy", "red", "training"),
        ("val_accuracy", "tab:blue", "validation"),
    ):
        if (v := _eval_column(evals, name)) is not None:
            ax.plot(steps, v, "s--", color=color, ms=3, lw=0.8, mfc="none", label=label)
    ax.set_xlabel("training step t")
    ax.set_ylabel("accuracy (eval mode)")
    ax.set_title("accuracy, eval mode\n(running BatchNorm statistics)", fontsize=9)
    ax.legend(fontsize=8)


def _line_losses(
    ax: Axes,
    lines: np.ndarray,
    train_l0: np.ndarray,
    val_l0: np.ndarray | None,
    batch_loss: np.ndarray | None,
    smoothing: int,
) -> None:
    """The losses the lines measure (solid): the direction batch's (faint, with its moving
    average), ``l(0)`` and the validation loss at ``s = 0``."""
    if batch_loss is not None and np.isfinite(batch_loss).any():
        ax.plot(lines, batch_loss, color="0.7", lw=0.6, label="mini-batch loss (direction batch)")
        x, y = _smooth(np.asarray(batch_loss, float), lines, smoothing)
        ax.plot(x, y, color="0.35", lw=1.0, label=f"mini-batch loss, MA {smoothing}")
    ax.plot(lines, train_l0, color="red", lw=1.4, label="full-batch training loss l(0)")
    if val_l0 is not None and np.isfinite(val_l0).any():
        ax.plot(lines, val_l0, color="tab:blue", lw=1.4, label="validation loss at s = 0")


def _eval_losses(ax: Axes, evals: pd.DataFrame | None) -> list[np.ndarray]:
    """Eval-mode training and validation losses at the checkpoints (squares, dashed).

    Returns:
        The drawn series (none without eval-mode losses).
    """
    drawn: list[np.ndarray] = []
    for name, color, label in (
        ("train_loss", "red", "training loss, eval mode"),
        ("val_loss", "tab:blue", "validation loss, eval mode"),
    ):
        if evals is not None and (v := _eval_column(evals, name)) is not None:
            steps = evals.step.to_numpy()
            ax.plot(steps, v, "s--", color=color, ms=3, lw=0.8, mfc="none", label=label)
            drawn.append(v)
    return drawn


def plot_training(
    lines: np.ndarray,
    train_l0: np.ndarray,
    val_l0: np.ndarray | None = None,
    batch_loss: np.ndarray | None = None,
    smoothing: int = 25,
    evals: pd.DataFrame | None = None,
) -> Figure:
    """Fig. 1: losses at θ_t over training as the lines measure them, and eval-mode metrics.

    Two kinds of numbers, drawn apart and labelled:

    * **the lines** (solid): ``l(0)``, the validation loss at ``s = 0`` and the direction
      batch's loss, all measured the way every line is (BatchNorm normalises each evaluation
      batch with its own statistics under the run's ``batchnorm = "batch"`` policy);
    * **eval mode** (squares, dashed; ``trajectory/eval_*.json``): ``model.eval()`` losses and
      accuracies of the training and validation sets at the checkpoints — BatchNorm uses its
      *running* statistics, dropout is off. For a network with BatchNorm these can differ a
      lot from the lines, so they are never mixed into one curve. The store holds no
      accuracy, so the accuracy panel is eval mode only.

    Args:
        lines: int ``[T]`` step indices.
        train_l0: ``[T]`` full-batch training loss ``l(0)`` (mean over the measured rows).
        val_l0: ``[T]`` validation loss at ``s = 0`` (optional).
        batch_loss: ``[T]`` loss of the direction batch at θ_t (optional; drawn faint with its
            centred moving average).
        smoothing: Moving-average length for the batch loss.
        evals: eval-mode metrics at the checkpoints (columns ``step`` and any of
            ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy``).

    Returns:
        Losses (log y when all are positive) and, with accuracies in ``evals``, a second panel
        with the eval-mode training and validation accuracy.
    """
    evals = evals if evals is not None and len(evals) > 0 else None
    has_acc = evals is not None and any(
        _eval_column(evals, n) is not None for n in ("train_accuracy", "val_accuracy")
    )
    fig = _figure(1, 2 if has_acc else 1, width=6.4, height=3.6)
    ax = _axes(fig)[0]
    if has_acc and evals is not None:
        _accuracy_panel(_axes(fig)[1], evals)
    lines = np.asarray(lines)
    _line_losses(ax, lines, train_l0, val_l0, batch_loss, smoothing)
    eval_losses = _eval_losses(ax, evals)
    _log_if_positive(ax, [train_l0, val_l0, batch_loss, *eval_losses])
    ax.set_xlabel("line (training step t)")
    ax.set_ylabel("loss")
    ax.set_title(
        "losses: lines (solid) and eval mode at the checkpoints (squares)"
        if eval_losses
        else "losses measured on the lines",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return fig


def _minor_label(x: float, _pos: int) -> str:
    """Label the minor log ticks 2·10^k and 5·10^k only."""
    if x <= 0:
        return ""
    m = x / 10 ** math.floor(math.log10(x))
    return f"{x:g}" if any(abs(m - k) < 1e-6 for k in (2, 5)) else ""


def _plain_label(x: float, _pos: int) -> str:
    """A tick value as a plain number (``0.65``, ``1.2``): 4 significant digits."""
    return f"{x:.4g}"


def _log_if_positive(ax: Axes, series: Sequence[np.ndarray | None]) -> None:
    """Log y-axis when every finite value is positive, with labelled ticks at any span.

    Spanning a decade or more: the decades (``ScalarFormatter``: ``0.1``, ``1``) and the minor
    ticks at 2·10^k and 5·10^k are labelled; a decade tick always lies inside. Less than a
    decade (``max < 10·min``): those ticks may all lie outside the axis (data in 0.6–0.9 has
    none), so the major ticks are placed by ``MaxNLocator`` (1, 2, 2.5, 5 steps; about 5
    ticks, evenly spaced in value) and labelled as plain numbers, minor ticks unlabelled.
    """
    vals = [np.asarray(s, float) for s in series if s is not None]
    vals = [v[np.isfinite(v)] for v in vals]
    if vals and all(v.size == 0 or v.min() > 0 for v in vals):
        ax.set_yscale("log")
        # plain numbers (0.5, 2) instead of 5×10⁻¹ on the few decades a loss spans
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        allv = np.concatenate(vals)
        if allv.size and allv.max() < 10 * allv.min():
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
            ax.yaxis.set_major_formatter(FuncFormatter(_plain_label))
            ax.yaxis.set_minor_formatter(NullFormatter())


# ------------------------------------------------------------------------------ Figs 2, 5


def _window(view: LineView, left: float, extra: Sequence[float] = ()) -> tuple[float, float]:
    pts = [view.s_opt, view.s_update, view.s_batch, *extra]
    pts = [p for p in pts if np.isfinite(p)]
    hi = max(0.5, 1.3 * max(pts, default=0.5))
    hi = min(hi, float(view.positions[-1]))
    lo = max(-left * hi if left < 1 else -hi, float(view.positions[0]))
    return lo, hi


def plot_lines(views: Sequence[LineView]) -> Figure:
    """Fig. 2: representative lines — ``l``, ``l_B`` and the min–max band of mini-batch losses.

    Args:
        views: One :class:`LineView` per panel (the paper: lines 10, 4000, 8000 of 10 000).

    Returns:
        ``1 × len(views)`` panels; window symmetric around 0 and wide enough to show
        ``s_opt``, ``s_update`` and the argmin of ``l_B`` (at least ±0.5, the paper's).
    """
    fig = _figure(1, max(1, len(views)), width=4.4, height=3.6)
    for ax, v in zip(_axes(fig), views):
        lo, hi = _window(v, left=1.0)
        m = (v.positions >= lo) & (v.positions <= hi)
        s = v.positions[m]
        lows = [np.nanmin(v.batch[m]), np.nanmin(v.full[m])]
        if v.band_min is not None and v.band_max is not None:
            ax.fill_between(
                s,
                v.band_min[m],
                v.band_max[m],
                color="0.8",
                label=f"min–max of {v.n_groups} mini-batch losses (bs {v.group_size})",
            )
            lows.append(np.nanmin(v.band_min[m]))
        ax.plot(s, v.batch[m], color="green", lw=1.3, label="direction-batch loss l_B")
        ax.plot(s, v.full[m], color="red", lw=1.6, label="full-batch loss l")
        ax.axvline(0.0, color="0.5", lw=0.6, ls=":")
        ax.axvline(v.s_update, color="black", lw=0.8, ls="--", label="SGD step")
        ax.plot([v.s_opt], [np.nanmin(v.full)], "D", color="red", ms=5)
        low = float(np.nanmin(lows))
        top = float(np.nanmax([np.nanmax(v.full[m]), np.nanmax(v.batch[m])]))
        if v.band_max is not None:
            top = max(top, float(np.nanmax(v.band_max[m])))
        bottom = 0.8 * low if low > 0 else low - 0.1 * abs(low)
        ax.set_ylim(bottom, min(5.0, top + 0.05 * (top - bottom)) if top > bottom else None)
        ax.set_xlim(lo, hi)
        ax.set_title(f"line {v.t}")
        ax.set_xlabel("position s along the update direction")
        ax.set_ylabel("loss")
    if views:
        _axes(fig)[0].legend(fontsize=7, loc="upper right")
    return fig


def _parabola(s: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * s**2 + b * s + c


def plot_approximations(
    view: LineView,
    *,
    direction_norm: float,
    delta_batch: float,
    lam: float = 0.05,
    mu: float = 0.1,
) -> Figure:
    """Fig. 5: ``l``, ``l_B`` and the parabolas implied by SGD, SGD λ and PAL on one line.

    Parabolas (docs/method.md §6.7), all through ``c = l_B(0)``: SGD original ``b = −‖m_t‖``,
    ``a = ‖m_t‖/(2·s_sgd)`` (vertex at SGD's step); SGD λ ``b = δ_B``, ``a = −b/(2·s_λ)``
    with ``s_λ = −λ·δ_B``; PAL ``b = δ_B``, ``a = (l_B(µ) − l_B(0) − b·µ)/µ²`` (``l_B(µ)``
    interpolated).

    Args:
        view: The line.
        direction_norm: ``‖m_t‖`` (the paper's n_t).
        delta_batch: δ_B, the direction-batch slope at 0 the strategies used.
        lam: SGD λ.
        mu: PAL µ.
    """
    fig = _figure(1, 1, width=6.4, height=4.0)
    ax = _axes(fig)[0]
    s_lam = -lam * delta_batch
    c = float(np.interp(0.0, view.positions, view.batch))
    l_mu = float(np.interp(mu, view.positions, view.batch))
    a_pal = (l_mu - c - delta_batch * mu) / mu**2
    if delta_batch < 0 and a_pal > 0:
        s_pal = -delta_batch / (2 * a_pal)
    else:
        s_pal = mu if delta_batch < 0 else 0.0
    lo, hi = _window(view, left=0.2, extra=(s_lam, s_pal))
    m = (view.positions >= lo) & (view.positions <= hi)
    s = view.positions[m]
    xs = np.linspace(lo, hi, 300)
    ax.plot(s, view.full[m], color="red", lw=1.8, label="full-batch loss l")
    ax.plot(s, view.batch[m], color="green", lw=1.4, label="direction-batch loss l_B")
    parabolas = []
    if view.s_update > 0:
        parabolas.append(
            (
                "SGD (original)",
                "black",
                direction_norm / (2 * view.s_update),
                -direction_norm,
                view.s_update,
            )
        )
    if s_lam > 0:
        parabolas.append(
            (f"SGD λ = {lam:.3g}", "orange", -delta_batch / (2 * s_lam), delta_batch, s_lam)
        )
    parabolas.append((f"PAL µ = {mu:g}", "blue", a_pal, delta_batch, s_pal))
    for label, color, a, b, vertex in parabolas:
        ax.plot(xs, _parabola(xs, a, b, c), color=color, lw=1.1, label=f"parabola of {label}")
        ax.axvline(vertex, color=color, lw=0.8, ls="--")
    ax.plot([view.s_opt], [np.nanmin(view.full)], "D", color="red", ms=6, label="s_opt")
    ax.plot([view.s_batch], [np.nanmin(view.batch)], "x", color="green", ms=8, mew=2, label="s_B")
    vals = np.concatenate([view.full[m], view.batch[m]])
    span = float(np.nanmax(vals) - np.nanmin(vals)) or 1.0
    ax.set_ylim(float(np.nanmin(vals)) - 0.3 * span, float(np.nanmax(vals)) + 0.3 * span)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("position s along the update direction")
    ax.set_ylabel("loss")
    ax.set_title(f"parabolic approximations, line {view.t}")
    ax.legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------------ Figs 3, 4


def _matshow(fig: Figure, ax: Axes, mat: np.ndarray, labels: np.ndarray, title: str) -> None:
    if mat.size == 0:
        ax.text(0.5, 0.5, "not enough lines", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return
    vmax = float(np.nanmax(mat)) if np.isfinite(mat).any() else 1.0
    im = ax.imshow(mat, vmin=0.0, vmax=vmax or 1.0, cmap="viridis", interpolation="nearest")
    n = mat.shape[0]
    ticks = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))
    ax.set_xticks(ticks, [str(int(labels[i])) for i in ticks])
    ax.set_yticks(ticks, [str(int(labels[i])) for i in ticks])
    ax.set_xlabel("line")
    ax.set_ylabel("line")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="MAE", shrink=0.85)


def plot_distance_matrices(
    distances: Mapping[str, np.ndarray], later_from: int = 50, matrix_stride: int | None = None
) -> Figure:
    """Figs. 3, 8, 11, 12: MAE between min-shifted lines (docs/method.md §6.2).

    Args:
        distances: The arrays of ``analysis/distances.npz`` (``matrix``, ``lines``,
            ``first_matrix``, ``first_lines``, ``consecutive``, ``consecutive_lines``,
            ``window``, ``mode``).
        later_from: Index (among the analysed lines) where the "later lines" view starts
            (``summary.json: distances.later_from_line_index``).
        matrix_stride: Analysed lines per row of ``matrix`` (``summary.json:
            distances.matrix_stride``; inferred from the array sizes if None).

    Returns:
        Four panels: all lines, the first lines, the later lines, and consecutive lines
        (log y).
    """
    fig = _figure(1, 4, width=4.2, height=3.6)
    ax_all, ax_first, ax_later, ax_cons = _axes(fig)[:4]
    mat = np.asarray(distances["matrix"])
    lines = np.asarray(distances["lines"])
    first = np.asarray(distances["first_matrix"])
    first_lines = np.asarray(distances["first_lines"])
    window = float(np.asarray(distances.get("window", np.nan)))
    _matshow(fig, ax_all, mat, lines, f"all lines (window ±{window:g})")
    _matshow(fig, ax_first, first, first_lines, f"first {first.shape[0]} lines")
    # rows of `matrix` are every stride-th analysed line
    stride = matrix_stride if matrix_stride else _row_stride(distances)
    keep = np.flatnonzero(np.arange(lines.size) * stride >= later_from)
    later = mat[np.ix_(keep, keep)] if keep.size else np.empty((0, 0))
    later_label = int(lines[keep[0]]) if keep.size else later_from
    _matshow(fig, ax_later, later, lines[keep], f"from line {later_label} on")
    cons = np.asarray(distances["consecutive"], float)
    cons_lines = np.asarray(distances["consecutive_lines"])
    ok = np.isfinite(cons) & (cons > 0)
    step = _stride(cons.size)
    ax_cons.plot(cons_lines[ok][::step], cons[ok][::step], color="tab:blue", lw=1.0)
    if ok.any():
        ax_cons.set_yscale("log")
    ax_cons.set_xlabel("line t")
    ax_cons.set_ylabel("MAE(t−1, t)")
    ax_cons.set_title("consecutive lines")
    return fig


def _row_stride(distances: Mapping[str, np.ndarray]) -> int:
    """Analysed lines per row of ``matrix`` (rows are every stride-th analysed line)."""
    if "matrix_stride" in distances:
        return int(np.asarray(distances["matrix_stride"]))
    lines = np.asarray(distances["lines"])
    cons_lines = np.asarray(distances.get("consecutive_lines", np.empty(0)))
    n = cons_lines.size + 1
    return max(1, math.ceil(n / lines.size)) if lines.size else 1


def plot_fits(fits: pd.DataFrame) -> Figure:
    """Figs. 4, 13, 14: polynomial fit errors and degree-2 coefficients (docs/method.md §6.2).

    Args:
        fits: ``analysis/fits.csv`` (``line, degree, mae, c0 … c4``).

    Returns:
        Two panels: MAE of the degree 1–4 fits over lines (log y), and the degree-2
        coefficients each shifted by its own minimum over lines (offset c, slope b,
        curvature/2 a), as the paper plots them.
    """
    fig = _figure(1, 2, width=5.2, height=3.6)
    ax_mae, ax_coef = _axes(fig)[:2]
    colors = {1: "tab:orange", 2: "tab:blue", 3: "tab:green", 4: "tab:purple"}
    for deg, g in fits.groupby("degree"):
        g = g.sort_values("line")
        step = _stride(len(g))
        ax_mae.plot(
            g.line.to_numpy()[::step],
            g.mae.to_numpy()[::step],
            color=colors.get(int(deg), "grey"),
            lw=1.0,
            label=f"degree {int(deg)}",
        )
    if (fits.mae > 0).any():
        ax_mae.set_yscale("log")
    ax_mae.set_xlabel("line t")
    ax_mae.set_ylabel("MAE of the fit")
    ax_mae.set_title("polynomial fit error")
    ax_mae.legend(fontsize=8)
    g2 = fits[fits.degree == 2].sort_values("line")
    step = _stride(len(g2))
    for col, label, color in (
        ("c0", "offset c − min c", "tab:green"),
        ("c1", "slope b − min b", "tab:blue"),
        ("c2", "a − min a (curvature/2)", "tab:red"),
    ):
        v = g2[col].to_numpy(float)
        ax_coef.plot(
            g2.line.to_numpy()[::step], (v - np.nanmin(v))[::step], color=color, lw=1.0, label=label
        )
    ax_coef.set_xlabel("line t")
    ax_coef.set_ylabel("coefficient − its minimum")
    ax_coef.set_title("degree-2 coefficients")
    ax_coef.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------ Figs 6, 9


def _median_lr(derivatives: pd.DataFrame) -> float | None:
    """The run's median learning rate (``derivatives.csv: lr``), None when unknown."""
    lr_vals = derivatives["lr"].to_numpy(float) if "lr" in derivatives else np.array([np.nan])
    return float(np.nanmedian(lr_vals)) if np.isfinite(lr_vals).any() else None


def _strategy_curves(
    axes: Sequence[Axes],
    g: pd.DataFrame,
    label: str,
    style: dict[str, Any],
    *,
    smoothing: int,
    valid: bool,
    band: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """One strategy's curves in panels 1–5: smoothed step, distance and improvement, the
    accumulated ``|distance|`` and improvement (with ``band`` shaded around the latter)."""
    lines = g.line.to_numpy()
    step = _stride(lines.size)
    for ax, col in zip(axes[:3], ("step", "distance", "improvement")):
        x, y = _smooth(g[col].to_numpy(float), lines, smoothing, valid)
        ax.plot(x[::step], y[::step], label=label, **style)
    acc_d = accumulate(g.distance.to_numpy(float), absolute=True)
    acc_i = accumulate(g.improvement.to_numpy(float))
    axes[3].plot(lines[::step], acc_d[::step], label=label, **style)
    axes[4].plot(lines[::step], acc_i[::step], label=label, **style)
    if band is not None:
        lo, hi = band
        if len(lo) == lines.size:
            axes[4].fill_between(
                lines[::step], lo[::step], hi[::step], color=style["color"], alpha=0.15, lw=0
            )


def _ratio_panel(
    ax: Axes,
    derivatives: pd.DataFrame,
    *,
    momentum: float,
    lr: float | None,
    smoothing: int,
    valid: bool,
) -> None:
    """Panel 6: the smoothed ratio ``s_opt/‖g_t‖`` with SGD's λ dotted; for β > 0
    ``s_opt/(−D_t)`` with ``s_opt/‖m_t‖`` dashed grey (docs/method.md §6.9)."""
    d = derivatives.sort_values("line")
    dl = d.line.to_numpy()
    step = _stride(dl.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        if momentum > 0 and "delta_accum" in d and np.isfinite(d.delta_accum).any():
            ratio = d.s_opt.to_numpy(float) / -d.delta_accum.to_numpy(float)
            rlabel = "s_opt / (−D_t)"
            alt = d.s_opt.to_numpy(float) / d.direction_norm.to_numpy(float)
            x, y = _smooth(alt, dl, smoothing, valid)
            ax.plot(x[::step], y[::step], color="0.5", lw=1.0, ls="--", label="s_opt / ‖m_t‖")
        else:
            ratio = d.s_opt.to_numpy(float) / d.grad_norm.to_numpy(float)
            rlabel = "s_opt / ‖g_t‖"
    x, y = _smooth(ratio, dl, smoothing, valid)
    ax.plot(x[::step], y[::step], color="red", lw=1.2, label=rlabel)
    if lr is not None and momentum == 0:
        ax.axhline(lr, color="black", lw=0.8, ls=":", label=f"SGD λ = {lr:.3g}")


def _label_strategy_panels(fig: Figure, axes: Sequence[Axes], momentum: float) -> None:
    """Titles, axis labels and scales of the six panels; the strategies' legend below them."""
    titles = (
        "update step (smoothed)",
        "distance to the full-batch minimum (smoothed)",
        "loss improvement (smoothed)",
        "accumulated |distance|",
        "accumulated improvement",
        "ratio s_opt / norm of dir. vec." if momentum > 0 else "ratio s_opt / ‖g_t‖ (smoothed)",
    )
    ylabels = ("step s", "s_opt − step", "l(0) − l(step)", "Σ |s_opt − step|", "Σ improvement", "")
    for ax, title, yl in zip(axes, titles, ylabels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("line t")
        ax.set_ylabel(yl)
    axes[1].set_yscale("symlog", linthresh=1e-4)
    axes[2].set_yscale("symlog", linthresh=1e-4)
    axes[5].legend(fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)


def plot_strategies(
    strategies: pd.DataFrame,
    derivatives: pd.DataFrame,
    *,
    momentum: float = 0.0,
    valid: bool = False,
    smoothing: int = 25,
    mu: float = 0.1,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Figure:
    """Figs. 6, 9, 15–18: the six strategy panels of docs/method.md §6.5.

    Args:
        strategies: ``analysis/strategies.csv``.
        derivatives: ``analysis/derivatives.csv``.
        momentum: β of the run (β > 0: panel 6 divides by ``−D_t``, docs/method.md §6.9).
        valid: Smooth as the original analysis did (``--mode faithful``): the "valid" moving
            average drawn at its index, shifted by ``(w−1)/2`` lines; default: centred.
        smoothing: Moving-average length.
        mu: PAL µ (for the legend).
        bands: Strategy → ``(low, high)`` per line of its accumulated improvement
            (:func:`steplines.analysis.bootstrap.accumulated_bands`), drawn as a shaded band.

    Returns:
        2 × 3 panels: update steps, distances ``s_opt − step`` (symlog, threshold 1e-4),
        improvements (symlog) — all smoothed —, accumulated ``|distance|``, accumulated
        improvement, and the smoothed ratio ``s_opt/‖g_t‖`` (``s_opt/(−D_t)`` for β > 0).
    """
    fig = _figure(2, 3, width=4.6, height=3.4)
    axes = _axes(fig)
    lr = _median_lr(derivatives)
    for name in _sort_strategies(list(dict.fromkeys(strategies.strategy))):
        _strategy_curves(
            axes,
            strategies[strategies.strategy == name].sort_values("line"),
            strategy_label(name, lr, mu),
            _strategy_style(name),
            smoothing=smoothing,
            valid=valid,
            band=bands.get(name) if bands else None,
        )
    _ratio_panel(axes[5], derivatives, momentum=momentum, lr=lr, smoothing=smoothing, valid=valid)
    _label_strategy_panels(fig, axes, momentum)
    return fig


# ------------------------------------------------------------------------------ Fig 7


def _size_colors(sizes: Sequence[int], n_full: int) -> Callable[[int], Any]:
    """Batch size → colour: inferno over ``log₂(bs)``, from the smallest size to the full batch.

    (docs/method.md §6.6 uses ``log₂(bs)/log₂(4000)``, which leaves the small sizes in a
    narrow colour band.)
    """
    cmap = colormaps["inferno"]
    lo = math.log2(min(sizes, default=1))
    span = max(math.log2(max(n_full, 2)) - lo, 1e-9)
    return lambda bs: cmap(0.05 + 0.8 * (math.log2(bs) - lo) / span)


def _accumulated_panel(
    ax: Axes,
    batch_size: pd.DataFrame,
    strategy: str,
    title: str,
    sizes: Sequence[int],
    color: Callable[[int], Any],
    opt: pd.DataFrame,
    n_full: int,
) -> None:
    """Accumulated improvement of ``strategy`` per batch size, and the optimum's in red."""
    for bs in sizes:
        g = batch_size[(batch_size.strategy == strategy) & (batch_size.batch_size == bs)]
        g = g.sort_values("line")
        step = _stride(len(g))
        acc = accumulate(g.improvement.to_numpy(float))
        ax.plot(g.line.to_numpy()[::step], acc[::step], color=color(bs), lw=1.1, label=f"bs {bs}")
    if len(opt):
        acc = accumulate(opt.improvement.to_numpy(float))
        step = _stride(len(opt))
        ax.plot(
            opt.line.to_numpy()[::step],
            acc[::step],
            color="red",
            lw=1.4,
            label=f"full-batch loss (bs {n_full})",
        )
    ax.set_title(f"accumulated improvement: {title}", fontsize=10)
    ax.set_xlabel("line t")
    ax.set_ylabel("Σ improvement")
    ax.legend(fontsize=7, ncol=2)


def _delta_series(
    batch_size: pd.DataFrame,
    sizes: Sequence[int],
    color: Callable[[int], Any],
    opt: pd.DataFrame,
    n_full: int,
) -> list[tuple[str, Any, pd.Series, float]]:
    """``(label, colour, δ per line, batch size)`` of SGD's direction for every batch size,
    then the full batch's."""
    series: list[tuple[str, Any, pd.Series, float]] = []
    for bs in sizes:
        g = batch_size[(batch_size.strategy == "sgd") & (batch_size.batch_size == bs)]
        series.append((f"bs {bs}", color(bs), g.set_index("line").delta.sort_index(), bs))
    if len(opt):
        series.append((f"full batch ({n_full})", "red", opt.set_index("line").delta, n_full))
    return series


def _delta_panels(
    ax_abs: Axes,
    ax_ratio: Axes,
    series: Sequence[tuple[str, Any, pd.Series, float]],
    ref: pd.Series,
    *,
    reference_batch_size: int,
    smoothing: int,
    valid: bool,
) -> None:
    """``|MA(δ_bs)|`` per batch size, and ``MA(δ_bs)/MA(δ_ref)`` with the expected ratio
    ``ref/bs`` dashed and annotated (every series on the reference's lines)."""
    _, ref_ma = _smooth(ref.to_numpy(float), ref.index.to_numpy(), smoothing, valid)
    for label, col, s, bs in series:
        s = s.reindex(ref.index) if ref.size else s
        x, ma = _smooth(s.to_numpy(float), s.index.to_numpy(), smoothing, valid)
        step = _stride(x.size)
        ax_abs.plot(x[::step], np.abs(ma)[::step], color=col, lw=1.1, label=label)
        if ref.size and ref_ma.size == ma.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = ma / ref_ma
            ok = np.isfinite(r) & (r > 0)
            ax_ratio.plot(x[ok][::step], r[ok][::step], color=col, lw=1.1, label=label)
            er = reference_batch_size / bs
            ax_ratio.axhline(er, color=col, lw=0.8, ls="--")
            if x.size:
                ax_ratio.annotate(
                    f"e.r. {er:.3g}", (x[-1], er), fontsize=6, color=col, va="bottom", ha="right"
                )


def _label_delta_panels(ax_abs: Axes, ax_ratio: Axes, reference_batch_size: int) -> None:
    """Titles, axis labels, scales (log, log₂) and the legend of the two δ panels."""
    ax_abs.set_title("|directional derivative| per batch size (smoothed)", fontsize=10)
    ax_abs.set_xlabel("line t")
    ax_abs.set_ylabel("|δ|")
    ax_abs.set_yscale("log")
    ax_abs.legend(fontsize=7, ncol=2)
    ax_ratio.set_yscale("log", base=2)
    ax_ratio.set_title(
        f"ratio δ_bs / δ_{reference_batch_size} (dashed: expected {reference_batch_size}/bs)",
        fontsize=10,
    )
    ax_ratio.set_xlabel("line t")
    ax_ratio.set_ylabel("ratio (log₂)")


def plot_batch_size(
    batch_size: pd.DataFrame,
    *,
    reference_batch_size: int,
    valid: bool = False,
    smoothing: int = 25,
    lr: float | None = None,
    mu: float = 0.1,
) -> Figure:
    """Figs. 7, 19, 20: the batch-size analysis of docs/method.md §6.6.

    Args:
        batch_size: ``analysis/batch_size.csv``.
        reference_batch_size: B, the run's batch size (δ ratios are relative to it).
        valid: Smooth as the original analysis did (``--mode faithful``): the "valid" moving
            average drawn at its index; default: centred.
        smoothing: Moving-average length.
        lr: SGD's λ (legend).
        mu: PAL µ (legend).

    Returns:
        2 × 2 panels: accumulated improvement per batch size for SGD (original) and PAL with
        the optimum ("full-batch loss"), ``|MA(δ_bs)|`` per batch size with ``|MA(δ_full)|``,
        and ``MA(δ_bs)/MA(δ_B)`` on a log₂ axis with the expected ratio ``B/bs`` dashed.
        Colours: inferno over ``log₂(bs)`` from the smallest size to the full batch.
    """
    fig = _figure(2, 2, width=5.4, height=3.6)
    ax_sgd, ax_pal, ax_abs, ax_ratio = _axes(fig)[:4]
    opt = batch_size[batch_size.strategy == "optimal"].sort_values("line")
    n_full = int(opt.batch_size.iloc[0]) if len(opt) else int(batch_size.batch_size.max())
    sizes = sorted(int(b) for b in batch_size[batch_size.strategy != "optimal"].batch_size.unique())
    color = _size_colors(sizes, n_full)
    for ax, strat, title in (
        (ax_sgd, "sgd", "SGD (original)" + (f" λ = {lr:.3g}" if lr else "")),
        (ax_pal, "pal", f"PAL µ = {mu:g}"),
    ):
        _accumulated_panel(ax, batch_size, strat, title, sizes, color, opt, n_full)
    ref = (
        batch_size[(batch_size.strategy == "sgd") & (batch_size.batch_size == reference_batch_size)]
        .set_index("line")
        .delta.sort_index()
    )
    _delta_panels(
        ax_abs,
        ax_ratio,
        _delta_series(batch_size, sizes, color, opt, n_full),
        ref,
        reference_batch_size=reference_batch_size,
        smoothing=smoothing,
        valid=valid,
    )
    _label_delta_panels(ax_abs, ax_ratio, reference_batch_size)
    return fig


# ------------------------------------------------------------------------------ Fig 10


def plot_compare(runs: Mapping[str, tuple[np.ndarray, np.ndarray]], smoothing: int = 25) -> Figure:
    """Fig. 10 analogue: full-batch loss ``l(0)`` over lines for several runs.

    Each run: its raw values faint and their centred moving average over ``smoothing`` lines
    (clipped at the run's ends) solid. The window is the same for every run whatever its
    length, so runs with the same values are drawn as the same curve.

    Args:
        runs: Label → (``lines [T]``, ``l(0) [T]``).
        smoothing: Moving-average length of the drawn curve (raw values drawn faint).
    """
    fig = _figure(1, 1, width=7.0, height=4.0)
    ax = _axes(fig)[0]
    cmap = colormaps["tab10"]
    for i, (label, (lines, l0)) in enumerate(runs.items()):
        lines = np.asarray(lines)
        l0 = np.asarray(l0, float)
        ax.plot(lines, l0, color=cmap(i % 10), lw=0.5, alpha=0.35)
        x, y = _smooth(l0, lines, smoothing)
        ax.plot(x, y, color=cmap(i % 10), lw=1.5, label=label)
    _log_if_positive(ax, [np.asarray(v[1], float) for v in runs.values()])
    ax.set_xlabel("line (training step t)")
    ax.set_ylabel("full-batch training loss l(0)")
    ax.set_title("runs compared")
    if runs:
        ax.legend(fontsize=8)
    return fig


def plot_rows(images: Sequence[Path], labels: Sequence[str], width: float = 13.0) -> Figure:
    """One figure with one row per run, as the paper sets β = 0 above β = 0.9.

    Args:
        images: The same figure of each run (PNG files of equal kind).
        labels: Each row's title (the run).
        width: Figure width in inches; each row keeps its image's aspect ratio.

    Returns:
        The rows stacked top to bottom, each titled with its label.
    """
    pics = [mpimg.imread(str(p)) for p in images]
    heights = [width * p.shape[0] / p.shape[1] for p in pics]
    fig = Figure(figsize=(width, sum(heights) + 0.35 * len(pics)), layout="constrained")
    axes = fig.subplots(len(pics), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, pic, label in zip(axes, pics, labels):
        ax.imshow(pic)
        ax.set_axis_off()
        ax.set_title(label, fontsize=11, loc="left", fontweight="bold")
    return fig
