"""The per-line summary arrays the analyses work on (docs/method.md §6.1).

:class:`SummaryLines` holds the ``[T]`` and ``[T, K]`` summary arrays of the *done* lines of a
store (never per-sample data), with the two full-batch lines of docs/method.md §6.1 / §9.17:

* ``shape_full``: mean over the N measured training rows (used by the shape analyses in both
  modes; the paper's 3968 rows);
* ``metric_full``: the line the strategy metrics use. Corrected: the same N training rows.
  Faithful: the N training rows and the B direction rows together,
  ``(N·train_mean + B·direction_mean)/(N + B)`` (the paper's 4096 rows).

Which lines a run set out to measure (:func:`scheduled_lines`, :func:`lines_missing`):
``steplines run`` measures every step; a :class:`~steplines.probe.LineProbe` run only the steps
of its schedule, recorded as ``[probe] schedule`` in ``config.toml``. A line the schedule skips
is not missing.

This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from steplines.errors import ConfigError
from steplines.schedule import schedule_mask
from steplines.store import LineStore
from steplines.store.integrity import refuse_bad_lines

if TYPE_CHECKING:
    from steplines.config import RunConfig

__all__ = ["SummaryLines", "from_arrays", "lines_missing", "load_summary", "scheduled_lines"]


@dataclass(frozen=True)
class SummaryLines:
    """Summary arrays of the analysed lines (rows = lines, ascending step index).

    Attributes:
        lines: int ``[T]`` step indices ``t``.
        positions: float ``[T, K]`` sorted positions, NaN-padded.
        shape_full: float ``[T, K]`` mean training loss (N rows).
        metric_full: float ``[T, K]`` full-batch line of the strategy metrics (see module doc).
        batch: float ``[T, K]`` direction-batch mean ``l_B``.
        s_update, direction_norm, grad_norm, directional_derivative, lr: float ``[T]``
            scalars of the store.
        zero_index, update_index: int ``[T]`` columns of 0 and of ``s_update`` (−1: absent).
        n_lines_total: T of the store (done or not).
    """

    lines: np.ndarray
    positions: np.ndarray
    shape_full: np.ndarray
    metric_full: np.ndarray
    batch: np.ndarray
    s_update: np.ndarray
    direction_norm: np.ndarray
    grad_norm: np.ndarray
    directional_derivative: np.ndarray
    lr: np.ndarray
    zero_index: np.ndarray
    update_index: np.ndarray
    n_lines_total: int

    def __len__(self) -> int:
        """Number of analysed lines."""
        return int(self.lines.size)


def from_arrays(
    summary: dict[str, np.ndarray],
    n_train: int,
    n_direction: int,
    lines: np.ndarray | None = None,
    *,
    faithful: bool = False,
) -> SummaryLines:
    """Build :class:`SummaryLines` from ``read_summary()``-style arrays.

    Args:
        summary: Dict with at least ``positions, train_mean, direction_mean, s_update,
            direction_norm, grad_norm, directional_derivative, lr, zero_index, update_index``.
        faithful: ``metric_full`` averages the N + B rows, as the original (docs/method.md
            §10); else the N training rows.
        n_train: N (rows of ``train_mean``).
        n_direction: B (rows of ``direction_mean``).
        lines: Which rows to keep (default: rows with ``summary["done"]``, else all).
    """
    n_total = int(np.asarray(summary["positions"]).shape[0])
    if lines is None:
        done = summary.get("done")
        lines = np.flatnonzero(done) if done is not None else np.arange(n_total)
    lines = np.asarray(lines, dtype=np.int64)

    def take(name: str, dtype: type = np.float64) -> np.ndarray:
        return np.asarray(summary[name])[lines].astype(dtype)

    train = take("train_mean")
    direction = take("direction_mean")
    if faithful and n_direction > 0:
        metric = (n_train * train + n_direction * direction) / (n_train + n_direction)
    else:
        metric = train
    return SummaryLines(
        lines=lines,
        positions=take("positions"),
        shape_full=train,
        metric_full=metric,
        batch=direction,
        s_update=take("s_update"),
        direction_norm=take("direction_norm"),
        grad_norm=take("grad_norm"),
        directional_derivative=take("directional_derivative"),
        lr=take("lr"),
        zero_index=take("zero_index", np.int64),
        update_index=take("update_index", np.int64),
        n_lines_total=n_total,
    )


def load_summary(store: LineStore, *, faithful: bool = False) -> SummaryLines:
    """Read the summary arrays of the done lines of ``store`` (no per-sample data).

    Raises:
        RunDirError: a done line that ``steplines verify`` would reject (one line naming it,
            the array and the ``--redo`` that repairs it).
    """
    refuse_bad_lines(store)
    summary = store.read_summary()
    return from_arrays(summary, store.n_train, store.n_direction, faithful=faithful)


def scheduled_lines(config: RunConfig | None, n_lines: int) -> np.ndarray:
    """bool ``[n_lines]``: the lines the run set out to measure.

    A run with a ``[probe]`` table (written by ``LineProbe``) measures the steps of
    ``probe.schedule`` (:func:`steplines.schedule.schedule_mask` of the recorded text:
    ``all``, ``every:K``, ``log:N`` or ``steps:a,b,…``) over ``n_lines`` steps; every other run
    (``steplines run``, or no ``config.toml``: ``config is None``) measures all of them. A
    schedule text that cannot be read counts every line as scheduled, so nothing is hidden.

    Args:
        config: the run's configuration (``RunLayout.config_or_none``).
        n_lines: T, the store's number of line slots (one per training step).
    """
    text = config.probe.schedule if config is not None and config.probe is not None else "all"
    try:
        return schedule_mask(str(text), int(n_lines))[0]
    except ConfigError:
        return np.ones(int(n_lines), dtype=bool)


def lines_missing(done: np.ndarray, config: RunConfig | None) -> int:
    """Number of lines that are scheduled but not done: ``Σ scheduled ∧ ¬done``.

    Args:
        done: bool ``[T]`` done flags of the store (``LineStore.done()``).
        config: the run's configuration, None without one (see :func:`scheduled_lines`).

    Returns:
        0 for a complete run, whether it measured every step or a schedule's steps.
    """
    done = np.asarray(done, dtype=bool)
    return int(np.count_nonzero(scheduled_lines(config, done.size) & ~done))
