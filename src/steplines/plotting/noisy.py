"""Fig. 8: distances between lines along noisy directions at fixed positions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure


def plot_noisy_matrices(res: Mapping[str, np.ndarray], max_panels: int = 3) -> Figure:
    """D×D distance matrices at up to ``max_panels`` positions, and their medians over training.

    Args:
        res: output of :func:`steplines.analysis.noisy.noisy_distances`.
        max_panels: matrices shown (the first position, and others spread over training).
    """
    steps, mats, med = np.asarray(res["steps"]), np.asarray(res["matrices"]), res["median"]
    picks = np.unique(np.linspace(0, len(steps) - 1, min(max_panels, len(steps))).astype(int))
    fig = Figure(figsize=(4.0 * (len(picks) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(picks) + 1, squeeze=False)[0]
    vmax = float(np.nanmax(mats[picks])) if np.isfinite(mats[picks]).any() else 1.0
    for ax, p in zip(axes, picks):
        im = ax.matshow(mats[p], vmin=0, vmax=vmax, cmap="viridis")
        ax.set_title(f"step {int(steps[p])}: {mats.shape[1]} directions")
        ax.set_xlabel("direction j")
        ax.set_ylabel("direction i")
        ax.xaxis.set_ticks_position("bottom")
    fig.colorbar(im, ax=axes[: len(picks)].tolist(), label="MAE", shrink=0.8)
    ax = axes[-1]
    ax.plot(steps, med, "o-", color="tab:blue", ms=3)
    if np.all(np.asarray(med)[np.isfinite(med)] > 0) and np.isfinite(med).any():
        ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("median MAE between directions")
    ax.set_title(f"window ±{float(res['window']):g}")
    return fig
