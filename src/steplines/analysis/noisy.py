"""Shapes of lines along noisy directions at fixed positions (Fig. 8; docs/method.md §5).

For every position p (a step t) the store holds D lines from the same θ_t along the gradients of
D different mini-batches. Their full-batch lines are compared exactly like consecutive SGD lines
(:func:`steplines.analysis.shape.distance_matrix`, min-shifted MAE on a window around 0), giving
one D×D matrix per position. The paper's claim: these distances are low, i.e. the line shape does
not depend much on which mini-batch defined the direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from steplines.analysis.shape import pairwise_mae, shape_curves
from steplines.errors import RunDirError
from steplines.store.noisy import NoisyDirectionStore
from steplines.store.run import RunLayout


def noisy_distances(
    run_dir: Path, window: float = 0.2, faithful: bool = False
) -> dict[str, Any] | None:
    """Distance matrices of the noisy-direction lines of a run (None when none were measured).

    Returns:
        ``steps [P]``, ``matrices [P, D, D]``, ``median [P]`` (median off-diagonal MAE per
        position), ``height [P, D]`` (mean of each min-shifted curve on the compared columns,
        the scale of its distances), ``s_opt [P, D]`` (position of each line's full-batch
        minimum), ``window``.
    """
    layout = RunLayout(run_dir)
    path = layout.directions_path
    config = layout.config_or_none()
    every = config.measure.noisy_every if config is not None else 0
    if not path.exists():
        if every:  # configured, but the store is gone: not "not configured"
            raise RunDirError(
                f"{path} is missing though the run measures noisy directions; repair with: "
                f"steplines measure {run_dir}"
            )
        return None
    d = NoisyDirectionStore.open(path).read(every or None)
    if d["steps"].size == 0:
        return None
    mats, medians, heights, s_opt = [], [], [], []
    for pos, means, s_upd in zip(d["positions"], d["train_mean"], d["s_update"]):
        upd = np.array([int(np.argmax(p == s)) for p, s in zip(pos, s_upd)])
        _, curves = shape_curves(pos, means, window, faithful=faithful, update_index=upd)
        m = pairwise_mae(curves)
        mats.append(m)
        off = m[~np.eye(m.shape[0], dtype=bool)]
        medians.append(float(np.nanmedian(off)) if np.isfinite(off).any() else np.nan)
        with np.errstate(invalid="ignore"):
            heights.append(np.nanmean(np.where(np.isfinite(curves), curves, np.nan), axis=1))
        filled = np.where(np.isfinite(means), means, np.inf)
        s_opt.append(pos[np.arange(pos.shape[0]), np.argmin(filled, axis=1)])
    return {
        "steps": d["steps"],
        "matrices": np.stack(mats),
        "median": np.array(medians),
        "height": np.stack(heights),
        "s_opt": np.stack(s_opt),
        "window": window,
    }
