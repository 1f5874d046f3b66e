"""How sure each line's numbers are: a bootstrap over the rows of its full batch.

A line's full-batch loss ``l(s) = (1/N) Σ_i ℓ_i(s)`` is a mean over N measured rows (the
paper's 8 % subset, or a sampled full batch), so every quantity read off it — ``s_opt``,
``l(0) − l(s_opt)``, each strategy's improvement, the degree-2 fit error — has a sampling error.
The store keeps the per-sample rows and the data-set id of each row, so the error is measured,
not guessed, by resampling the training samples: replicate ``r`` gives every sample of the data
set a weight ``c_{r,id} ~ Poisson(1)`` (the Poisson bootstrap, the streaming form of resampling
with replacement), and each line is re-averaged with the weights of its rows' ids,

    l_r(s) = Σ_i c_{r,id(i)} ℓ_i(s) / Σ_i c_{r,id(i)},

(the direction batch's rows alike for ``l_B``; faithful mode's metric line averages both groups
together), and every quantity is recomputed on each ``l_r``. A sample has the same weight in
every line of a replicate: the lines of a run evaluate largely the same samples (a fixed full
batch, or the same training subset in another order), so their errors are correlated, and
summaries over lines (accumulated improvements, shares, λ*) that combine replicate ``r`` of
every line carry that correlation. Weights come from blocks of 4,096 ids, block ``b`` drawn by
``default_rng([seed, b])``, so they do not depend on which lines are analysed or in what order.
The claims (:mod:`steplines.analysis.claims`) add the variation between lines on top.

Held fixed: the steps of strategies that are not a minimum of the resampled line (SGD, λ*,
SGD λ, PAL, FBPAL, FBPAL&SGD keep their measured steps; their improvement interval is the
uncertainty of ``l`` at that step). ``optimal`` and ``exact_batch`` are re-minimised per
replicate.

Everything is streamed one line at a time; a line costs two ``[R, N] @ [N, K]`` products.
A line whose rows carry no data-set id is resampled by row position instead.

This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steplines.store import LineRecord

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "LineReplicates",
    "ReplicateTap",
    "SampleWeights",
    "accumulated_bands",
    "line_replicates",
    "percentile_interval",
    "step_weights",
]

DEFAULT_RESAMPLES = 200
"""Row resamples per line (``--resamples``)."""

DEFAULT_LEVEL = 0.95
"""Level of the percentile intervals (``--level``)."""

SEED = 20210913
"""First word of every line's generator ``default_rng([SEED, t])``."""


class SampleWeights:
    """Poisson(1) bootstrap weights of the data set's samples, by id (see the module docstring).

    ``weights(ids)`` is ``[R, len(ids)]``: column j is the weight of sample ``ids[j]`` in each
    replicate, the same whichever line asks. Ids are grouped in blocks of :attr:`BLOCK`; block
    ``b`` is drawn once by ``default_rng([seed, b])`` and kept in one table (R bytes per id up
    to the largest id seen: 12 MB for 60,000 samples at R = 200).
    """

    BLOCK = 4096

    def __init__(self, resamples: int, seed: int = SEED) -> None:
        self.resamples, self.seed = int(resamples), int(seed)
        self._table = np.zeros((0, self.resamples), dtype=np.uint8)  # [id, R]: rows gather fast

    def _cover(self, max_id: int) -> None:
        have = self._table.shape[0] // self.BLOCK
        need = max_id // self.BLOCK + 1
        if need > have:
            blocks = [self._table]
            for b in range(have, need):
                rng = np.random.default_rng([self.seed, b])
                draws = rng.poisson(1.0, size=(self.resamples, self.BLOCK))
                blocks.append(np.minimum(draws, 255).astype(np.uint8).T)
            self._table = np.ascontiguousarray(np.concatenate(blocks, axis=0))

    def weights(self, ids: np.ndarray) -> np.ndarray:
        """``[R, len(ids)]`` float64 weights of the samples ``ids`` (non-negative integers)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros((self.resamples, 0))
        self._cover(int(ids.max()))
        return self._table[ids].T.astype(np.float64)


def step_weights(positions: np.ndarray, steps: np.ndarray, mode: str) -> np.ndarray:
    """``W [k, S]`` with ``values @ W = l(steps)`` for any line ``values [.., k]`` at ``positions``.

    The same rule as :func:`steplines.analysis.strategies.evaluate_line`: corrected — linear
    interpolation between measured positions; faithful — the nearest measured position (first
    of two equidistant); a step outside ``[min s, max s]`` is evaluated at the border; NaN steps
    give NaN.

    Args:
        positions: float ``[k]`` finite, sorted positions.
        steps: float ``[S]``.
        mode: ``corrected`` or ``faithful``.
    """
    p = np.asarray(positions, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    k = p.size
    w = np.zeros((k, s.size))
    finite = np.isfinite(s)
    sc = np.clip(np.where(finite, s, 0.0), p[0], p[-1])
    cols = np.arange(s.size)
    if mode == "corrected" and k > 1:
        i = np.clip(np.searchsorted(p, sc, side="right") - 1, 0, k - 2)
        gap = p[i + 1] - p[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(gap > 0, (sc - p[i]) / gap, 0.0)
        w[i, cols] = 1.0 - frac
        w[i + 1, cols] += frac
    else:
        idx = np.argmin(np.abs(p[:, None] - sc[None, :]), axis=0)
        w[idx, cols] = 1.0
    w[:, ~finite] = np.nan
    return w


def _first_argmin(positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise first minimum of ``values [R, k]`` at ``positions [k]``: ``(s_min, l_min)``."""
    i = np.argmin(values, axis=1)
    return positions[i], values[np.arange(values.shape[0]), i]


def _fit2(x: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MAE of a least-squares parabola through each row of ``values [R, m]`` at ``x [m]``.

    Also returns each row's range ``max − min``. Rows are NaN when ``m < 3``.
    """
    if x.size < 3:
        nan = np.full(values.shape[0], np.nan)
        return nan, nan
    design = np.vander(x, 3, increasing=True)
    coef = np.linalg.pinv(design) @ values.T
    mae = np.mean(np.abs(design @ coef - values.T), axis=0)
    return mae, values.max(axis=1) - values.min(axis=1)


@dataclass
class LineReplicates:
    """Bootstrap replicates of one line's quantities (each ``[R]``).

    Attributes:
        s_opt, l0, l_min: Minimum position, ``l(0)`` and minimum of the metric full-batch line.
        mae2, range_: Degree-2 fit MAE and ``max − min`` of the shape line on ``±w``.
        impr: Strategy → improvement ``l(0) − l(step)`` on the metric line.
    """

    s_opt: np.ndarray
    l0: np.ndarray
    l_min: np.ndarray
    mae2: np.ndarray
    range_: np.ndarray
    impr: dict[str, np.ndarray] = field(default_factory=dict)


def line_replicates(
    record: LineRecord,
    steps: dict[str, float],
    *,
    mode: str,
    window: float,
    counts_train: np.ndarray,
    counts_direction: np.ndarray,
) -> LineReplicates:
    """Every bootstrapped quantity of one line, for given resample counts.

    With all counts equal to 1 the replicates are exactly the analysis' own values of the line
    (the oracle the tests compare with).

    Args:
        record: The line (positions and per-sample losses).
        steps: Strategy → its measured step on this line (``optimal`` and ``exact_batch`` are
            re-minimised per replicate; any value given for them is ignored).
        mode: ``corrected`` (metric line: the N training rows) or ``faithful`` (training and
            direction rows together).
        window: Half-width ``w`` of the degree-2 fit.
        counts_train: ``[R, N]`` weights of the training rows (:class:`SampleWeights`).
        counts_direction: ``[R, B]`` weights of the direction rows.
    """
    pos = np.asarray(record.positions, dtype=np.float64)
    ok = np.isfinite(pos)
    p = pos[ok]
    train = np.asarray(record.train_losses, dtype=np.float64)[:, ok]
    direction = np.asarray(record.direction_losses, dtype=np.float64)[:, ok]
    b = direction.shape[0]
    sum_t, n_t = counts_train @ train, counts_train.sum(axis=1, keepdims=True)
    sum_d, n_d = counts_direction @ direction, counts_direction.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = sum_t / n_t
        batch = sum_d / n_d if b else np.full_like(shape, np.nan)
        metric = (sum_t + sum_d) / (n_t + n_d) if (mode == "faithful" and b) else shape
    s_opt, l_min = _first_argmin(p, metric)
    names = [k for k in steps if k not in ("optimal", "exact_batch")]
    fixed = np.array([steps[k] for k in names] + [0.0], dtype=np.float64)
    at = metric @ step_weights(p, fixed, mode)  # [R, S + 1]; the last column is l(0)
    l0 = at[:, -1]
    impr = {name: l0 - at[:, j] for j, name in enumerate(names)}
    impr["optimal"] = l0 - l_min
    if b and "exact_batch" in steps:
        s_b, _ = _first_argmin(p, batch)
        w = step_weights(p, s_b, mode)  # [k, R]: replicate r at its own step
        impr["exact_batch"] = l0 - np.einsum("rk,kr->r", metric, w)
    inside = np.abs(p) <= window
    mae2, range_ = _fit2(p[inside], shape[:, inside])
    return LineReplicates(s_opt=s_opt, l0=l0, l_min=l_min, mae2=mae2, range_=range_, impr=impr)


def percentile_interval(
    replicates: np.ndarray, level: float = DEFAULT_LEVEL, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` percentile interval of ``replicates`` along ``axis`` (NaNs skipped)."""
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(replicates, [a, 1.0 - a], axis=axis)
    return lo, hi


def accumulated_bands(
    replicates: dict[str, np.ndarray], level: float = DEFAULT_LEVEL
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Interval of each strategy's accumulated improvement after every line.

    Replicate r of the running sum is ``Σ_{s ≤ t} impr_{s, r}`` (NaN counted as 0, as
    :func:`steplines.analysis.strategies.accumulate` does); the band is its percentile interval
    at each line.

    Args:
        replicates: ``bootstrap.npz`` arrays (``impr:<strategy>`` ``[T, R]``).
        level: Interval level.

    Returns:
        Strategy → ``(low [T], high [T])``.
    """
    out = {}
    for key, reps in replicates.items():
        if key.startswith("impr:"):
            acc = np.cumsum(np.where(np.isfinite(reps), reps, 0.0), axis=0, dtype=np.float64)
            out[key[len("impr:") :]] = percentile_interval(acc, level, axis=1)
    return out


def _ids(ids: np.ndarray, rows: int, offset: int) -> np.ndarray:
    """The rows' data-set ids, or their positions (from ``offset``) when ids are not stored."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape == (rows,) and (ids >= 0).all():
        return ids
    return np.arange(offset, offset + rows)


class ReplicateTap:
    """Computes :func:`line_replicates` for each line of a ``(t, record)`` stream it passes on.

    After the stream is consumed, :meth:`arrays` holds ``[T, R]`` float32 replicate matrices
    in the order of the lines.
    """

    def __init__(
        self,
        steps: dict[str, np.ndarray],
        lines: np.ndarray,
        *,
        mode: str,
        window: float,
        resamples: int = DEFAULT_RESAMPLES,
    ) -> None:
        self.steps = steps
        self.row = {int(t): i for i, t in enumerate(lines)}
        self.mode, self.window, self.resamples = mode, window, resamples
        self.weights = SampleWeights(resamples)
        self._out: dict[str, list[np.ndarray]] = {}

    def tap(self, records):
        """Yield the records unchanged, computing each line's replicates on the way."""
        for t, rec in records:
            if self.resamples > 0:
                self._add(int(t), rec)
            yield t, rec

    def _add(self, t: int, rec: LineRecord) -> None:
        i = self.row[t]
        n = rec.train_losses.shape[0]
        ct = self.weights.weights(_ids(rec.train_indices, n, 0))
        cd = self.weights.weights(_ids(rec.direction_indices, rec.direction_losses.shape[0], n))
        steps = {k: float(v[i]) for k, v in self.steps.items()}
        r = line_replicates(
            rec, steps, mode=self.mode, window=self.window, counts_train=ct, counts_direction=cd
        )
        cols = {"s_opt": r.s_opt, "l0": r.l0, "l_min": r.l_min, "mae2": r.mae2, "range": r.range_}
        cols |= {f"impr:{k}": v for k, v in r.impr.items()}
        for k, v in cols.items():
            self._out.setdefault(k, []).append(v.astype(np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        """Name → ``[T, R]`` float32 replicates (empty when ``resamples`` is 0)."""
        return {k: np.stack(v) for k, v in self._out.items()}
