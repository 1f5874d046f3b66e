"""Shapes of lines along noisy directions at fixed positions (SPEC §5, the paper's Fig. 8).

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

from steplines.analysis.shape import distance_matrix
from steplines.store.directions import DirectionStore


def direction_distances(
    run_dir: Path, window: float = 0.2, mode: str = "corrected"
) -> dict[str, Any] | None:
    """Distance matrices of the noisy-direction lines of a run (None when none were measured).

    Returns:
        ``steps [P]``, ``matrices [P, D, D]``, ``median [P]`` (median off-diagonal MAE per
        position), ``s_opt [P, D]`` (position of each line's full-batch minimum), ``window``.
    """
    path = Path(run_dir) / "directions.zarr"
    if not path.exists():
        return None
    d = DirectionStore.open(path).read()
    if d["steps"].size == 0:
        return None
    mats, medians, s_opt = [], [], []
    for pos, means, s_upd in zip(d["positions"], d["train_mean"], d["s_update"]):
        upd = np.array([int(np.argmax(p == s)) for p, s in zip(pos, s_upd)])
        m = distance_matrix(pos, means, window, mode, update_index=upd)
        mats.append(m)
        off = m[~np.eye(m.shape[0], dtype=bool)]
        medians.append(float(np.nanmedian(off)) if off.size else np.nan)
        filled = np.where(np.isfinite(means), means, np.inf)
        s_opt.append(pos[np.arange(pos.shape[0]), np.argmin(filled, axis=1)])
    return {
        "steps": d["steps"],
        "matrices": np.stack(mats),
        "median": np.array(medians),
        "s_opt": np.stack(s_opt),
        "window": window,
    }


def write_direction_distances(run_dir: Path, window: float, mode: str) -> dict[str, Any] | None:
    """Compute :func:`direction_distances` and save ``analysis/directions.npz``."""
    res = direction_distances(run_dir, window, mode)
    if res is not None:
        out = Path(run_dir) / "analysis"
        out.mkdir(exist_ok=True)
        np.savez(out / "directions.npz", mode=mode, **res)
    return res
