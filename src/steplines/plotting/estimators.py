"""The figure of the cheap estimators against the measured line (``analysis/estimators.csv``).

numpy/pandas/matplotlib only, no torch; built on :class:`matplotlib.figure.Figure` directly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["ESTIMATOR_PANELS", "plot_estimators"]

ESTIMATOR_PANELS: tuple[tuple[str, str, float], ...] = (
    ("alpha_error", "Cockpit α − α_true", 0.0),
    ("labpal_step_ratio", "LABPAL-style step / s_opt", 1.0),
    ("labpal_a_rel_error", "LABPAL-style a: relative error", 0.0),
    ("armijo_step_ratio", "Armijo (SLS) step on l_B / s_opt", 1.0),
    ("curvature_rel_error", "dᵀH_B d vs 2a (full batch): rel. error", 0.0),
    ("b_simple", "B_simple (McCandlish et al.)", float("nan")),
)
"""``(column, title, ideal value)`` of each panel; the ideal is drawn dashed (B_simple: the
direction batch size instead)."""


def _band(lines: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, ...]:
    """Centred rolling 25/50/75 % quantiles over ``window`` analysed lines (NaNs skipped)."""
    s = pd.Series(y, index=lines)
    roll = s.rolling(window, center=True, min_periods=1)
    return roll.quantile(0.25).to_numpy(), roll.median().to_numpy(), roll.quantile(0.75).to_numpy()


def _limits(y: np.ndarray, ideal: float) -> tuple[float, float] | None:
    """y-range of the 1–99 % quantiles (and the ideal value), padded; None if no data."""
    y = y[np.isfinite(y)]
    if y.size == 0:
        return None
    lo, hi = np.percentile(y, [1, 99])
    if np.isfinite(ideal):
        lo, hi = min(lo, ideal), max(hi, ideal)
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return float(lo - pad), float(hi + pad)


def _not_measured(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_estimators(table: pd.DataFrame, batch_size: int | None = None) -> Figure:
    """Errors of the cheap estimators over training (top) and their distributions (bottom).

    Top row: every line's error (grey dots), the centred rolling median (line) and 25–75 %
    band over ``max(5, T/20)`` lines; dashed: the error-free value. Bottom row: histograms
    (values outside the 1–99 % quantiles are left out of the axis range, not of the counts).
    Panels whose column has no finite value say "not measured".

    Args:
        table: ``estimators.csv`` (one row per line).
        batch_size: the direction batch size, drawn dashed in the B_simple panel.
    """
    cols = len(ESTIMATOR_PANELS)
    fig = Figure(figsize=(3.6 * cols, 6.2), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    t = table.sort_values("line") if len(table) else table
    lines = t["line"].to_numpy(np.int64) if len(t) else np.empty(0, np.int64)
    window = max(5, len(lines) // 20)
    for j, (name, title, ideal) in enumerate(ESTIMATOR_PANELS):
        top, bottom = axes[0, j], axes[1, j]
        y = t[name].to_numpy(np.float64) if name in t else np.full(len(lines), np.nan)
        ok = np.isfinite(y)
        if not ok.any():
            _not_measured(top, title)
            _not_measured(bottom, title)
            continue
        ref = float(batch_size) if name == "b_simple" and batch_size else ideal
        top.plot(lines[ok], y[ok], ".", color="0.55", ms=3, label="per line")
        if ok.sum() >= 3:
            q25, med, q75 = _band(lines[ok], y[ok], window)
            top.fill_between(lines[ok], q25, q75, color="C0", alpha=0.25, lw=0, label="25–75 %")
            top.plot(lines[ok], med, color="C0", lw=1.5, label="rolling median")
        if np.isfinite(ref):
            top.axhline(ref, color="k", ls="--", lw=0.8)
        lim = _limits(y, ref)
        if lim is not None:
            top.set_ylim(*lim)
        top.set_title(title, fontsize=10)
        top.set_xlabel("line t")
        vals = y[ok]
        if lim is not None:
            vals = vals[(vals >= lim[0]) & (vals <= lim[1])]
        bottom.hist(vals, bins=min(40, max(5, vals.size // 3)), color="C0", alpha=0.8)
        if np.isfinite(ref):
            bottom.axvline(ref, color="k", ls="--", lw=0.8)
        med_all = float(np.median(y[ok]))
        bottom.axvline(med_all, color="C3", lw=1.2)
        bottom.set_title(f"median {med_all:.3g} (n = {int(ok.sum())})", fontsize=9)
        bottom.set_xlabel(title, fontsize=8)
        if j == 0:
            top.legend(fontsize=7, loc="best")
            bottom.set_ylabel("lines")
    return fig
