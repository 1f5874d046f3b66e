"""Measure one line: positions with interval enlargement, per-sample losses of three sets.

For line t the engine evaluates the training set (the full batch), the validation set and the
direction batch at the pass-0 positions; while the minimum of the mean training, validation or
direction-batch line lies on the first or last measured position, it adds the next ring of positions
(docs/method.md §3.6, the *intended* rule: whole-line means, all three sets, fixing §9.8), up to
``max_passes`` passes. Every ring uses the same batches, so rows stay the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from .common import EvalBatch
from .positions import first_pass, ring

# (theta, direction, buffers, positions, batches) -> per-sample losses [rows, K]
Evaluate = Callable[
    [Sequence[Tensor], Sequence[Tensor], Sequence[Tensor], np.ndarray, Sequence[EvalBatch]], Tensor
]


@dataclass(frozen=True)
class GridSpec:
    """Grid kind (``paper``/``symmetric``), interval I, resolution h, maximum passes."""

    grid: str = "paper"
    interval: float = 0.5
    resolution: float = 0.006
    max_passes: int = 5


@dataclass(frozen=True)
class LineSamples:
    """Per-sample losses of one line, columns sorted by position.

    Attributes:
        positions: ``[K]`` float64, ascending.
        train: ``[N, K]``; val: ``[M, K]``; direction: ``[B, K]`` (numpy, the run's dtype).
        n_passes: how many passes (1 + rings) were measured.
    """

    positions: np.ndarray
    train: np.ndarray
    val: np.ndarray
    direction: np.ndarray
    n_passes: int


def _border_minimum(positions: np.ndarray, losses: np.ndarray) -> bool:
    """Whether the mean line's minimum lies on the first or last position."""
    with np.errstate(over="ignore", invalid="ignore"):  # far positions may overflow
        mean = losses.astype(np.float64).mean(axis=0)
    if not np.isfinite(mean).any():
        return False
    i = int(np.nanargmin(np.where(np.isfinite(mean), mean, np.nan)))
    return i in (0, len(positions) - 1)


def measure_line(
    evaluate: Evaluate,
    theta: Sequence[Tensor],
    direction: Sequence[Tensor],
    buffers: Sequence[Tensor],
    s_update: float,
    train: Sequence[EvalBatch],
    val: Sequence[EvalBatch],
    direction_batch: EvalBatch,
    spec: GridSpec,
) -> LineSamples:
    """Measure the line θ_t + s·d_t for the training, validation and direction batches.

    Args:
        evaluate: an engine (:func:`~steplines.engine.reference.reference_losses` bound to its
            model and policy, or a :class:`~steplines.engine.fast.FastEvaluator`).
        theta, direction, buffers: θ_t, the unit direction d_t and θ_t's buffers.
        s_update: ‖u_t‖, the position of θ_{t+1}; always one of the positions.
        train, val: the fixed evaluation batches of the full batch and the validation set.
        direction_batch: the mini-batch that defined the update.
        spec: the grid.

    Returns:
        The per-sample losses, columns sorted by position.
    """
    batches = [*train, *val, direction_batch]
    n_train = sum(b.y.shape[0] for b in train)
    n_val = sum(b.y.shape[0] for b in val)
    pos = first_pass(spec.grid, spec.interval, spec.resolution, s_update)
    losses = evaluate(theta, direction, buffers, pos, batches).detach().cpu().numpy()
    n_passes = 1
    for r in range(1, spec.max_passes):
        order = np.argsort(pos, kind="stable")
        p, l_ = pos[order], losses[:, order]
        parts = (l_[:n_train], l_[n_train : n_train + n_val], l_[n_train + n_val :])
        if not any(_border_minimum(p, part) for part in parts if part.shape[0]):
            break
        new = ring(spec.grid, spec.interval, spec.resolution, r)
        new_losses = evaluate(theta, direction, buffers, new, batches).detach().cpu().numpy()
        pos = np.concatenate([pos, new])
        losses = np.concatenate([losses, new_losses], axis=1)
        n_passes += 1
    order = np.argsort(pos, kind="stable")
    pos, losses = pos[order], losses[:, order]
    return LineSamples(
        positions=pos,
        train=losses[:n_train],
        val=losses[n_train : n_train + n_val],
        direction=losses[n_train + n_val :],
        n_passes=n_passes,
    )
