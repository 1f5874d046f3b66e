"""Simulated direction batches of other sizes (docs/method.md §6.3 item 3, §6.6; Figs 7, 19, 20).

For a batch size ``bs`` and the measured direction batch of ``B`` rows:

* ``bs < B``: per-sample slope at 0 of every direction row by the 3-point non-uniform central
  difference on the zero column and its two stencil neighbours (:func:`strategies.fd_weights`;
  (−0.002, 0, 0.006) on the paper grid); keep the ``bs`` rows with the most negative slope
  (stable sort; "remove the samples with the highest directional derivatives").
* ``bs = B``: the direction batch itself.
* ``bs > B``: the ``B`` direction rows plus ``bs − B`` training rows drawn without replacement
  (at most all N). Corrected: a generator per line, ``np.random.default_rng([42, t])``, so the
  draw of line ``t`` does not depend on which other lines are analysed or in what order.
  Faithful: one ``np.random.RandomState(42)`` per batch size, drawn in line order (the
  original seeded numpy's global RNG with 42 once per script run; its exact stream also
  depended on the order of cached configurations, which is not reproduced).

``l_bs(s)`` = mean of the simulated rows. Per bs: ``δ_bs`` = 5-point finite-difference slope of
``l_bs`` at 0 (faithful: ``−‖g‖`` at bs = B when β = 0, §9.21; corrected: finite differences
for every bs, one estimator for all); SGD (original) step = ``s_update`` at bs = B and
``lr·|δ_bs|`` otherwise; PAL µ on ``l_bs`` with ``b = δ_bs``; ``exact_batch`` = argmin ``l_bs``.
Improvements are ``l(0) − l(step)`` on the full-batch line ``l``:

* corrected: the N training rows (:mod:`lines`), the same line for every bs;
* faithful: the original's line *for this bs*. The original stacks the N training rows and
  then the B direction rows, keeps the first ``R_bs = ⌊(N+B)/bs⌋·bs`` of them, groups them
  into consecutive batches of bs rows and averages the batch means
  (:func:`faithful_full_line`). Every bs of the paper divides 3968 + 128 = 4096, so there
  nothing is cut; on the demo (N + B = 1024 + 128 = 1152) bs 256–1024 keep the first 1024
  rows, i.e. the training rows only, while bs ≤ 128 keep all 1152; in general the cut drops
  direction rows first, then training rows from the end. The ``optimal`` row of each line
  is the line of the *first* batch size in ``batch_sizes`` (the original plots the optimum
  curve and the full-batch δ of its first configuration, bs 32), with ``batch_size`` =
  its ``R``.

Residual difference in faithful mode: the strategy table (``strategies.csv``, the bs = B
configuration) uses all N + B rows, while the original would also cut them to a multiple of
B there; the two agree whenever N is a multiple of B (every ``epoch`` full batch, all paper
runs), and differ only for a ``fixed`` full batch with N not a multiple of B.

The simulation needs per-sample rows: it streams one line at a time through
``LineStore.read_line`` and never holds more than one line in memory.

This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from steplines.analysis.settings import BATCH_SIZES
from steplines.analysis.strategies import (
    evaluate_line,
    fd_derivative_curvature,
    fd_weights,
    first_argmin,
    pal_step,
    stencil_columns,
)
from steplines.store import LineRecord

__all__ = [
    "BATCH_SIZES",
    "batch_size_rows",
    "faithful_full_line",
    "kept_rows",
    "per_sample_slopes",
    "simulate_batch",
]


def per_sample_slopes(positions: np.ndarray, losses: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per-row 3-point slope at 0: ``losses[:, cols[1:4]] @ fd_weights(positions[cols[1:4]])``.

    Args:
        positions: float ``[k]``.
        losses: ``[R, k]`` per-sample losses.
        cols: int ``[5]`` stencil columns from :func:`strategies.stencil_columns`.

    Returns:
        float64 ``[R]``.
    """
    c3 = cols[1:4]
    w = fd_weights(positions[c3])
    return losses[:, c3].astype(np.float64) @ w


def kept_rows(rows: int, bs: int) -> int:
    """Rows the original keeps of ``rows`` for batch size ``bs``: ``⌊rows/bs⌋·bs`` (all for
    ``bs ≤ 1``)."""
    return rows if bs <= 1 else rows // bs * bs


def faithful_full_line(rows_t: np.ndarray, bs: int) -> tuple[np.ndarray, int]:
    """The original's full-batch line for batch size ``bs`` (faithful mode).

    The rows ``X`` are the N training rows followed by the B direction rows. The original
    (``batch_losses_at_each_line_location``) keeps the first ``R = ⌊(N+B)/bs⌋·bs`` rows, splits
    them into ``R/bs`` consecutive batches of ``bs`` rows, takes each batch's ``nanmean`` and
    then the plain mean over the batches: ``l(s) = (1/(R/bs)) Σ_j nanmean(X[j·bs:(j+1)·bs, s])``
    — with no NaN the mean of the first R rows. So the rows cut are the *last* ones: direction
    rows first, then training rows. Computed in the original's order of operations (per
    position a row-wise ``nanmean`` over contiguous batches, then the mean over the
    ``[R/bs, K]`` batch means), so the result is the original's to the last bit.

    Args:
        rows_t: float64 ``[K, N + B]``, C-contiguous: ``X.T`` (positions × rows, training rows
            first).
        bs: Batch size (``bs ≤ 1``: every row, the plain mean).

    Returns:
        ``(line float64 [K], R)``; NaN when ``bs > N + B`` (no whole batch).
    """
    k, total = rows_t.shape
    kept = kept_rows(total, bs)
    if bs <= 1:
        return rows_t.mean(axis=1), kept
    if kept == 0:
        return np.full(k, np.nan), 0
    batches = rows_t[:, :kept].reshape(k, kept // bs, bs)  # contiguous batches of bs rows
    per_batch = batches.sum(axis=2)  # [K, R/bs]: nanmean's own sum when there is no NaN
    if np.isfinite(per_batch).all():
        per_batch /= bs
    else:
        per_batch = np.nanmean(batches, axis=2)
    return np.ascontiguousarray(per_batch.T).mean(axis=0), kept


def simulate_batch(
    direction: np.ndarray,
    train: np.ndarray,
    bs: int,
    slopes: np.ndarray,
    draw: np.ndarray | None = None,
) -> np.ndarray:
    """Mean line ``l_bs`` of a simulated direction batch of size ``bs`` (module docstring).

    Args:
        direction: ``[B, k]`` direction-batch per-sample losses.
        train: ``[N, k]`` training per-sample losses.
        bs: Batch size.
        slopes: float ``[B]`` per-sample slopes at 0 of the direction rows.
        draw: int training row indices to add when ``bs > B`` (length ``min(bs − B, N)``).

    Returns:
        float64 ``[k]``.
    """
    b = direction.shape[0]
    if bs < b:
        keep = np.argsort(slopes, kind="stable")[:bs]
        return direction[keep].astype(np.float64).mean(axis=0)
    if bs == b or draw is None or draw.size == 0:
        return direction.astype(np.float64).mean(axis=0)
    rows = np.concatenate([direction, train[draw]], axis=0)
    return rows.astype(np.float64).mean(axis=0)


def batch_size_rows(
    records: Iterable[tuple[int, LineRecord]],
    *,
    faithful: bool = False,
    momentum: float,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    mu: float = 0.1,
) -> dict[str, list]:
    """Batch-size table rows for a stream of ``(t, record)`` (docs/method.md §6.3 item 3, §6.6).

    For every line and bs: rows ``sgd``, ``pal``, ``exact_batch`` with ``step``,
    ``improvement`` (``l(0) − l(step)`` on the full-batch line: corrected, the N training
    rows; faithful, the N + B rows cut to a multiple of bs, :func:`faithful_full_line`) and
    ``delta`` (= δ_bs), and one row ``optimal`` per line with ``batch_size`` = the full-batch
    row count (faithful: ``⌊(N+B)/bs₀⌋·bs₀`` for the first batch size bs₀) and ``delta`` =
    δ_full (5-point finite difference of the full-batch line).

    Args:
        records: Iterable of ``(t, LineRecord)`` in ascending ``t`` (read lazily).
        faithful: The original code's rule (docs/method.md §10), not the corrected one.
        momentum: β of the run (faithful: δ at bs = B is ``−‖g‖`` only when β = 0).
        batch_sizes: Batch sizes to simulate.
        mu: PAL's µ.

    Returns:
        Column dict: ``line, batch_size, strategy, step, improvement, delta, clipped``.
    """
    cols_out: dict[str, list] = {
        k: [] for k in ("line", "batch_size", "strategy", "step", "improvement", "delta", "clipped")
    }
    rngs = {bs: np.random.RandomState(42) for bs in batch_sizes} if faithful else {}
    for t, rec in records:
        for row in _line_rows(int(t), rec, faithful, momentum, batch_sizes, mu, rngs):
            for key, val in zip(cols_out, row):
                cols_out[key].append(val)
    return cols_out


def _full_lines(
    rec: LineRecord, batch_sizes: Sequence[int], faithful: bool
) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """The line's full-batch line, the original's per-bs full lines (faithful: N + B rows cut
    to a multiple of bs, else none) and the full line's row count."""
    train, direction = rec.train_losses, rec.direction_losses
    n, b = train.shape[0], direction.shape[0]
    if not (faithful and b > 0):
        return train.astype(np.float64).mean(axis=0), {}, n
    rows_t = np.ascontiguousarray(np.concatenate([train, direction]).T, np.float64)
    fulls = {bs: faithful_full_line(rows_t, bs)[0] for bs in batch_sizes}
    first = batch_sizes[0] if len(batch_sizes) else n + b
    full = fulls[first] if fulls else rows_t.mean(axis=1)
    return full, fulls, kept_rows(n + b, first)


def _line_rows(
    t: int,
    rec: LineRecord,
    faithful: bool,
    momentum: float,
    batch_sizes: Sequence[int],
    mu: float,
    rngs: dict[int, np.random.RandomState],
) -> Iterator[tuple]:
    """The rows of one line: ``optimal``, then ``sgd``, ``pal``, ``exact_batch`` per bs."""
    pos, train, direction = rec.positions, rec.train_losses, rec.direction_losses
    n, b = train.shape[0], direction.shape[0]
    full, fulls, n_full = _full_lines(rec, batch_sizes, faithful)
    zero = np.flatnonzero(pos == 0.0)
    upd = np.flatnonzero(pos == rec.s_update)
    cols = stencil_columns(
        pos,
        int(zero[0]) if zero.size else -1,
        int(upd[0]) if upd.size else -1,
        faithful=faithful,
    )
    l0 = float(evaluate_line(pos, full, 0.0, faithful=faithful)[0])
    s_opt, l_min = first_argmin(pos, full)
    d_full = fd_derivative_curvature(pos[cols], full[cols])[0] if cols is not None else np.nan
    yield t, n_full, "optimal", s_opt, l0 - l_min, float(d_full), False
    if b == 0:
        return
    slopes = per_sample_slopes(pos, direction, cols) if cols is not None else np.zeros(b)
    for bs in batch_sizes:
        draw = None
        if bs > b and n > 0:
            rng = rngs[bs] if faithful else np.random.default_rng([42, t])
            draw = rng.choice(n, size=min(bs - b, n), replace=False)
        l_bs = simulate_batch(direction, train, bs, slopes, draw)
        delta = np.nan if cols is None else float(fd_derivative_curvature(pos[cols], l_bs[cols])[0])
        if faithful and bs == b and momentum == 0:
            delta = -float(rec.grad_norm)
        sgd = float(rec.s_update) if bs == b else float(rec.lr) * abs(delta)
        lb = evaluate_line(pos, l_bs, np.array([0.0, mu]), faithful=faithful)[0]
        pal = float(pal_step(lb[0], lb[1], delta, mu))
        exact, _ = first_argmin(pos, l_bs)
        full_bs = fulls.get(bs, full)
        l0_bs = l0
        if full_bs is not full:
            l0_bs = float(evaluate_line(pos, full_bs, 0.0, faithful=faithful)[0])
        for name, step in (("sgd", sgd), ("pal", pal), ("exact_batch", exact)):
            val, clip = evaluate_line(pos, full_bs, step, faithful=faithful)
            yield t, bs, name, step, l0_bs - float(val), delta, bool(clip)
