"""Simulated direction batches of other sizes (SPEC §6.3 item 3, §6.6; Figs 7, 19, 20).

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
Improvements are ``l(0) − l(step)`` on the metric full-batch line (:mod:`lines`).

The simulation needs per-sample rows: it streams one line at a time through
``LineStore.read_line`` and never holds more than one line in memory.

This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from steplines.analysis.strategies import (
    evaluate_line,
    fd_derivative_curvature,
    fd_weights,
    first_argmin,
    pal_step,
    stencil_columns,
)
from steplines.store import LineRecord

__all__ = ["BATCH_SIZES", "batch_size_rows", "per_sample_slopes", "simulate_batch"]

BATCH_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
"""The batch sizes of the original analysis (SPEC §6.3)."""


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
    mode: str,
    momentum: float,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    mu: float = 0.1,
) -> dict[str, list]:
    """Batch-size table rows for a stream of ``(t, record)`` (SPEC §6.3 item 3, §6.6).

    For every line and bs: rows ``sgd``, ``pal``, ``exact_batch`` with ``step``,
    ``improvement`` (on the metric full-batch line) and ``delta`` (= δ_bs), and one row
    ``optimal`` per line with ``batch_size`` = the full-batch row count and ``delta`` =
    δ_full (5-point finite difference of the full-batch line).

    Args:
        records: Iterable of ``(t, LineRecord)`` in ascending ``t`` (read lazily).
        mode: ``corrected`` or ``faithful``.
        momentum: β of the run (faithful: δ at bs = B is ``−‖g‖`` only when β = 0).
        batch_sizes: Batch sizes to simulate.
        mu: PAL's µ.

    Returns:
        Column dict: ``line, batch_size, strategy, step, improvement, delta, clipped``.
    """
    cols_out: dict[str, list] = {
        k: [] for k in ("line", "batch_size", "strategy", "step", "improvement", "delta", "clipped")
    }
    faithful_rngs = {bs: np.random.RandomState(42) for bs in batch_sizes}

    def add(t: int, bs: int, name: str, step: float, impr: float, delta: float, clip: bool):
        for key, val in zip(cols_out, (t, bs, name, step, impr, delta, clip)):
            cols_out[key].append(val)

    for t, rec in records:
        pos = rec.positions
        train, direction = rec.train_losses, rec.direction_losses
        n, b = train.shape[0], direction.shape[0]
        if mode == "faithful" and b > 0:
            full = np.concatenate([train, direction]).astype(np.float64).mean(axis=0)
            n_full = n + b
        else:
            full = train.astype(np.float64).mean(axis=0)
            n_full = n
        zero = np.flatnonzero(pos == 0.0)
        upd = np.flatnonzero(pos == rec.s_update)
        cols = stencil_columns(
            pos, int(zero[0]) if zero.size else -1, int(upd[0]) if upd.size else -1, mode
        )
        l0 = float(evaluate_line(pos, full, 0.0, mode)[0])
        s_opt, l_min = first_argmin(pos, full)
        d_full = fd_derivative_curvature(pos[cols], full[cols])[0] if cols is not None else np.nan
        add(t, n_full, "optimal", s_opt, l0 - l_min, float(d_full), False)
        if b == 0:
            continue
        slopes = per_sample_slopes(pos, direction, cols) if cols is not None else np.zeros(b)
        for bs in batch_sizes:
            draw = None
            if bs > b and n > 0:
                size = min(bs - b, n)
                if mode == "faithful":
                    draw = faithful_rngs[bs].choice(n, size=size, replace=False)
                else:
                    draw = np.random.default_rng([42, int(t)]).choice(n, size=size, replace=False)
            l_bs = simulate_batch(direction, train, bs, slopes, draw)
            if cols is None:
                delta = np.nan
            else:
                delta = float(fd_derivative_curvature(pos[cols], l_bs[cols])[0])
            if mode == "faithful" and bs == b and momentum == 0:
                delta = -float(rec.grad_norm)
            lam = float(rec.lr)
            sgd = float(rec.s_update) if bs == b else lam * abs(delta)
            lb = evaluate_line(pos, l_bs, np.array([0.0, mu]), mode)[0]
            pal = float(pal_step(lb[0], lb[1], delta, mu))
            exact, _ = first_argmin(pos, l_bs)
            for name, step in (("sgd", sgd), ("pal", pal), ("exact_batch", exact)):
                val, clip = evaluate_line(pos, full, step, mode)
                add(t, bs, name, step, l0 - float(val), delta, bool(clip))
    return cols_out
