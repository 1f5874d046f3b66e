"""Train, then measure every line by segments: the one place engine and store meet.

One job per module, imported in this order (each only from the ones before it):

* :mod:`~steplines.measure.batches` — the fixed evaluation batches of a line
  (:class:`LineBatches`: full batch, validation set, direction batch);
* :mod:`~steplines.measure.stores` — creating the line store and the noisy-direction store;
* :mod:`~steplines.measure.recording` — :func:`record_trajectory`: train T steps,
  checkpoints every C steps plus every step's record;
* :mod:`~steplines.measure.measurer` — :class:`LineMeasurer`: an anchor and its batches to a
  store record, the one path shared with :class:`steplines.probe.LineProbe`;
* :mod:`~steplines.measure.background` — the line writer thread and the batch prefetcher;
* :mod:`~steplines.measure.noisy` — lines along noisy directions (docs/method.md §5);
* :mod:`~steplines.measure.segments` — :func:`measure_lines`: restore checkpoint c, replay
  segment [c, c+C) exactly, measure its missing lines, and check the replayed state against
  checkpoint c+C bit for bit (:func:`check_replay`);
* :mod:`~steplines.measure.run` — :func:`run_all`: both, resumable.

The names below are this package's public API.
"""

from __future__ import annotations

from .background import BackgroundWriter, Prefetcher
from .batches import LineBatches, check_full_batch, full_batch_rows
from .measurer import LineMeasurer, line_record
from .noisy import NoisyDirections
from .recording import record_trajectory, run_dtype
from .run import run_all
from .segments import backfill_live, check_replay, measure_lines, shard_segments
from .stores import open_or_create_direction_store, open_or_create_store

__all__ = [
    "BackgroundWriter",
    "LineBatches",
    "LineMeasurer",
    "NoisyDirections",
    "Prefetcher",
    "backfill_live",
    "check_full_batch",
    "check_replay",
    "full_batch_rows",
    "line_record",
    "measure_lines",
    "open_or_create_direction_store",
    "open_or_create_store",
    "record_trajectory",
    "run_all",
    "run_dtype",
    "shard_segments",
]
