"""Create a run's stores: the line store ``lines.zarr`` and the noisy-direction store.

Both are created by training (under the trajectory lock, :mod:`steplines.measure.recording`),
preallocated for every line, so that concurrent measuring shards only ever open them.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from ..config import sample_size
from ..engine.positions import max_positions
from ..problems.problem import Problem
from ..rundir import RunDir
from ..store import LineStore
from ..store.noisy import NoisyDirectionStore
from .batches import full_batch_rows


def open_or_create_store(run: RunDir, problem: Problem) -> LineStore:
    """Open the run's line store, creating it (preallocated) on first use.

    Called by training (under the trajectory lock), so concurrent measuring shards only ever
    open it.
    """
    m = run.config.measure
    if run.lines_path.exists():
        return LineStore.open(run.lines_path, mode="r+")
    # Create under a temporary name and rename: a crash mid-creation leaves no half store.
    name = run.lines_path.name
    for stale in run.path.glob(f".{name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run.path / f".{name}.{os.getpid()}.tmp"
    LineStore.create(
        tmp,
        n_lines=run.config.train.steps,
        n_train=full_batch_rows(problem, run.config),
        n_val=len(problem.val),
        n_direction=problem.batch_size,
        n_positions=max_positions(m.grid, m.interval, m.resolution, m.max_passes),
        val_indices=np.arange(len(problem.val), dtype=np.int64),
        lines_per_chunk=run.config.train.checkpoint_every,
        attrs={
            "train_source_indices": problem.train.indices.tolist(),
            "val_source_indices": problem.val.indices.tolist(),
            "dataset": problem.name,
            # a sampled full batch says so (n_train is n; the training set has
            # len(train_source_indices) images); epoch/fixed stores keep their attributes
            **({"full_batch": m.full_batch} if sample_size(m.full_batch) is not None else {}),
        },
    )
    os.rename(tmp, run.lines_path)
    return LineStore.open(run.lines_path, mode="r+")


def open_or_create_direction_store(run: RunDir) -> NoisyDirectionStore:
    """The run's noisy-direction store (created by training, under the trajectory lock)."""
    m = run.config.measure
    return NoisyDirectionStore.open_or_create(
        run.layout.directions_path,
        n_positions=-(-run.config.train.steps // m.noisy_every),
        n_directions=m.noisy_directions,
        n_grid=max_positions(m.grid, m.interval, m.resolution, m.max_passes),
    )
