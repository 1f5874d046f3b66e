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

Steps: a replicate derives every step the analysis reads off the line's losses again, by the
analysis' own rules (:class:`StepRules`, :func:`line_steps`): ``optimal`` and ``exact_batch``
(the minima of ``l_r`` and ``l_{B,r}``), FBPAL (``l_r(0)``, ``l_r(µ)`` and the finite-difference
slope of ``l_r``), PAL (``l_{B,r}``; a stored slope moves by the replicate's change of the
finite difference of ``l_B``), and in faithful mode without plain SGD SGD λ from the
finite-difference slope of ``l_{B,r}``; :class:`ReplicateTap` streams those that combine lines
(``lambda_star_out``: the running median of the replicate's λ*_s of the lines before; FBPAL&SGD
from the replicate's FBPAL steps; the momentum proxy ``D_t``). Were the optimum re-minimised
and FBPAL not, each replicate would favour the optimum by the depth a noisy minimum gains, and
over T lines that bias (∝ T) outgrows the spread of a share. Kept at their measured steps: the
steps that do not depend on the losses (SGD as trained, SGD λ from the exact ``g·d`` or
``−‖g‖``) and ``lambda_star_in``, whose λ* is a median over all lines, known only after the
last one; on a 1,000-line run (Fashion-MNIST, 4,736 rows) its replicates' λ* moved the share
by a standard deviation of 0.0004 against 0.0027 from the lines' own noise, so it is left out.

Intervals, chosen by measured coverage:

* **sums over lines** (accumulated improvements, shares of the optimum, λ*, the bands of Fig. 6,
  the claims): :func:`basic_interval`, ``[2θ̂ − q_{1−a}, 2θ̂ − q_a]`` (Davison & Hinkley 1997,
  §5.2), which removes the bias that the replicates reproduce rather than adding it. Over T
  lines the deep-minimum bias grows ∝ T and the percentile interval of a share then lies
  beside its own estimate (a 1,000-line Fashion-MNIST run: FBPAL 99.3 % [97.8, 98.8]); the
  basic one covers a known population share of 1 where the percentile one misses it
  (``tests/analysis/test_bootstrap.py``).
* **a line's own values** (s_opt, the optimum's improvement): :func:`percentile_interval`,
  ``[q_a, q_{1−a}]``. For one line the replicates overstate the bias of a grid minimum, and
  the basic interval over-corrects: sub-sampling the Fashion-MNIST run's complete full batch
  (``bench/sampling.py``), the basic interval covered the complete batch's improvement in
  71–93 % of lines (n = 128 … 2,048), the percentile interval in 94–98 %.

Everything is streamed one line at a time; a line costs two ``[R, N] @ [N, K]`` products.
A line whose rows carry no data-set id is resampled by row position instead.

This module never imports torch.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from steplines.analysis.strategies import (
    FbpalSgd,
    MomentumProxy,
    RunningMedian,
    fd_derivative_curvature,
    pal_step,
    rate_ratios,
    sgd_lambda_steps,
    stencil_columns,
)
from steplines.store import LineRecord
from steplines.store.lines import first_match

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "LineReplicates",
    "ReplicateCurves",
    "ReplicateTap",
    "SampleWeights",
    "StepRules",
    "accumulated_bands",
    "basic_interval",
    "line_replicates",
    "line_steps",
    "percentile_interval",
    "replicate_curves",
    "step_weights",
]

DEFAULT_RESAMPLES = 200
"""Row resamples per line (``--resamples``)."""

DEFAULT_LEVEL = 0.95
"""Level of the bootstrap intervals (``--level``)."""

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


def step_weights(positions: np.ndarray, steps: np.ndarray, *, faithful: bool = False) -> np.ndarray:
    """``W [k, S]`` with ``values @ W = l(steps)`` for any line ``values [.., k]`` at ``positions``.

    The same rule as :func:`steplines.analysis.strategies.evaluate_line`: corrected — linear
    interpolation between measured positions; faithful — the nearest measured position (first
    of two equidistant); a step outside ``[min s, max s]`` is evaluated at the border; NaN steps
    give NaN.

    Args:
        positions: float ``[k]`` finite, sorted positions.
        steps: float ``[S]``.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.
    """
    p = np.asarray(positions, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    k = p.size
    w = np.zeros((k, s.size))
    finite = np.isfinite(s)
    sc = np.clip(np.where(finite, s, 0.0), p[0], p[-1])
    cols = np.arange(s.size)
    if not faithful and k > 1:
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


@dataclass(frozen=True)
class StepRules:
    """How the analysis derives the steps that depend on a line's losses, so that each
    replicate can derive them again (:func:`steplines.analysis.strategies.strategy_steps`).

    Attributes:
        mu: PAL's and FBPAL's µ.
        lambdas: The SGD λ list (strategies ``sgd_lambda_<λ>`` and ``…_accum``).
        slope_from_line: δ_B is the finite difference of ``l_B`` at 0 (faithful mode, not
            plain SGD); otherwise it is a stored per-line number (the exact ``g·d``, or
            ``−‖g‖``), the same in every replicate.
        beta: β of the momentum proxy ``D_t`` (0: no ``…_accum`` strategies).
    """

    mu: float
    lambdas: tuple[float, ...] = ()
    slope_from_line: bool = False
    beta: float = 0.0


@dataclass
class ReplicateCurves:
    """One line re-averaged with every replicate's weights (rows = replicates).

    Attributes:
        positions: float ``[k]`` finite positions.
        metric: ``[R, k]`` metric full-batch line ``l_r``.
        shape: ``[R, k]`` training-rows line (the shape line).
        batch: ``[R, k]`` direction-batch line ``l_{B,r}`` (NaN without direction rows).
        has_batch: The line has direction rows.
        stencil: The five columns of the finite-difference stencil at 0 (None: not measured).
        batch_fd: Finite-difference slope at 0 of the measured (unweighted) ``l_B``.
    """

    positions: np.ndarray
    metric: np.ndarray
    shape: np.ndarray
    batch: np.ndarray
    has_batch: bool
    stencil: np.ndarray | None
    batch_fd: float = np.nan

    def at(self, values: np.ndarray, steps: np.ndarray, *, faithful: bool = False) -> np.ndarray:
        """``values [R, k]`` of each replicate at its own step ``steps [R]``."""
        w = step_weights(self.positions, steps, faithful=faithful)  # [k, R]
        return np.einsum("rk,kr->r", values, w)


def replicate_curves(
    record: LineRecord,
    *,
    faithful: bool = False,
    counts_train: np.ndarray,
    counts_direction: np.ndarray,
) -> ReplicateCurves:
    """Re-average one line with the weights ``counts_* [R, rows]`` (see the module docstring)."""
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
        metric = (sum_t + sum_d) / (n_t + n_d) if (faithful and b) else shape
    zero = first_match(p, 0.0)
    s_update = float(record.s_update)
    update = first_match(p, s_update) if np.isfinite(s_update) else -1
    stencil = stencil_columns(p, zero, update, faithful=faithful)
    batch_fd = np.nan
    if b and stencil is not None:
        batch_fd = float(fd_derivative_curvature(p[stencil], direction[:, stencil].mean(axis=0))[0])
    return ReplicateCurves(
        positions=p,
        metric=metric,
        shape=shape,
        batch=batch,
        has_batch=bool(b),
        stencil=stencil,
        batch_fd=batch_fd,
    )


def line_steps(
    curves: ReplicateCurves, rules: StepRules, batch_slope: float, *, faithful: bool = False
) -> dict[str, np.ndarray]:
    """Each replicate's own steps of the strategies computed from this line's losses.

    The analysis' rules (:func:`steplines.analysis.strategies.strategy_steps`) applied to
    ``l_r`` and ``l_{B,r}``: ``fbpal`` = :func:`pal_step` on ``l_r`` with the finite-difference
    slope of ``l_r`` at 0; ``pal`` on ``l_{B,r}`` with ``δ_B``; ``delta_batch`` = δ_B: the
    finite difference of ``l_{B,r}`` when ``rules.slope_from_line`` (and then
    ``sgd_lambda_<λ>`` = ``−λ·δ_B`` too), else the stored ``batch_slope`` plus the change the
    replicate makes to the finite difference of ``l_B`` (the per-row exact slopes are not
    stored; without the shift PAL would pair a resampled ``l_B(µ) − l_B(0)`` with the
    original batch's slope, a curvature the data never had).

    Returns:
        Name → ``[R]`` steps (and ``delta_batch``).
    """
    r = curves.metric.shape[0]
    nan = np.full(r, np.nan)
    p, mu = curves.positions, rules.mu
    at = step_weights(p, np.array([0.0, mu]), faithful=faithful)  # [k, 2]
    lf = curves.metric @ at
    slope_full, slope_batch = nan, nan
    if curves.stencil is not None:
        x5 = p[curves.stencil]
        slope_full = fd_derivative_curvature(x5, curves.metric[:, curves.stencil])[0]
        if curves.has_batch:
            slope_batch = fd_derivative_curvature(x5, curves.batch[:, curves.stencil])[0]
    if rules.slope_from_line:
        delta = slope_batch
    else:  # the stored slope, moved by as much as the replicate moves l_B's finite difference
        shift = slope_batch - curves.batch_fd
        delta = float(batch_slope) + np.where(np.isfinite(shift), shift, 0.0)
    out = {"fbpal": pal_step(lf[:, 0], lf[:, 1], slope_full, mu), "delta_batch": delta}
    if curves.has_batch:
        lb = curves.batch @ at
        out["pal"] = pal_step(lb[:, 0], lb[:, 1], delta, mu)
    else:
        out["pal"] = nan
    if rules.slope_from_line:
        out |= sgd_lambda_steps(rules.lambdas, delta)
    return out


@dataclass
class LineReplicates:
    """Bootstrap replicates of one line's quantities (each ``[R]``).

    Attributes:
        s_opt, l0, l_min: Minimum position, ``l(0)`` and minimum of the metric full-batch line.
        mae2, range_: Degree-2 fit MAE and ``max − min`` of the shape line on ``±w``.
        impr: Strategy → improvement ``l(0) − l(step)`` on the metric line.
        steps: Strategy → the replicates' own steps, for the strategies whose step was
            derived again on each replicate (``optimal``, ``exact_batch``, and with
            :class:`StepRules` those of :func:`line_steps`).
    """

    s_opt: np.ndarray
    l0: np.ndarray
    l_min: np.ndarray
    mae2: np.ndarray
    range_: np.ndarray
    impr: dict[str, np.ndarray] = field(default_factory=dict)
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    floor: np.ndarray | None = None


def line_replicates(
    record: LineRecord,
    steps: dict[str, float | np.ndarray],
    *,
    faithful: bool = False,
    window: float,
    counts_train: np.ndarray,
    counts_direction: np.ndarray,
    rules: StepRules | None = None,
    batch_slope: float = np.nan,
    cross: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
) -> LineReplicates:
    """Every bootstrapped quantity of one line, for given resample counts.

    With all counts equal to 1 the replicates are exactly the analysis' own values of the line
    (the oracle the tests compare with).

    Args:
        record: The line (positions and per-sample losses).
        steps: Strategy → its measured step on this line (a number), or each replicate's own
            step (``[R]``). ``optimal`` and ``exact_batch`` are re-minimised per replicate (any
            value given for them is ignored); with ``rules``, so are the steps of
            :func:`line_steps` that are named here.
        faithful: the metric line averages the training and direction rows together, as
            the original; else the N training rows.
        window: Half-width ``w`` of the degree-2 fit.
        counts_train: ``[R, N]`` weights of the training rows (:class:`SampleWeights`).
        counts_direction: ``[R, B]`` weights of the direction rows.
        rules: How the analysis derives the line-dependent steps (None: only ``optimal`` and
            ``exact_batch`` are derived again).
        batch_slope: δ_B of this line when it is not read off ``l_B`` (see :class:`StepRules`).
        cross: Called with this line's replicate steps (:func:`line_steps`); returns more
            ``[R]`` steps (the strategies that combine several lines, :class:`ReplicateTap`).
    """
    curves = replicate_curves(
        record, faithful=faithful, counts_train=counts_train, counts_direction=counts_direction
    )
    p, metric = curves.positions, curves.metric
    s_opt, l_min = _first_argmin(p, metric)
    own: dict[str, np.ndarray] = {"optimal": s_opt}
    if curves.has_batch and "exact_batch" in steps:
        own["exact_batch"], _ = _first_argmin(p, curves.batch)
    if rules is not None:
        local = line_steps(curves, rules, batch_slope, faithful=faithful)
        if cross is not None:
            local |= cross(local)
        own |= {k: v for k, v in local.items() if k in steps}
    names = [k for k in steps if k not in own and k not in ("optimal", "exact_batch")]
    fixed = [k for k in names if np.ndim(steps[k]) == 0]
    given = [k for k in names if np.ndim(steps[k]) != 0]
    cols = np.array([steps[k] for k in fixed] + [0.0], dtype=np.float64)
    at = metric @ step_weights(p, cols, faithful=faithful)  # [R, S + 1]; the last column is l(0)
    l0 = at[:, -1]
    impr = {name: l0 - at[:, j] for j, name in enumerate(fixed)}
    impr["optimal"] = l0 - l_min
    for name in given:
        own[name] = np.asarray(steps[name], dtype=np.float64)
    for name, s in own.items():
        if name != "optimal":
            impr[name] = l0 - curves.at(metric, s, faithful=faithful)
    inside = np.abs(p) <= window
    mae2, range_ = _fit2(p[inside], curves.shape[:, inside])
    return LineReplicates(
        s_opt=s_opt,
        l0=l0,
        l_min=l_min,
        mae2=mae2,
        range_=range_,
        impr={k: impr[k] for k in steps if k in impr} | {"optimal": impr["optimal"]},
        steps=own,
        floor=noise_floor(curves.shape[:, inside]),
    )


def noise_floor(shape: np.ndarray) -> np.ndarray:
    """``D`` between replicates ``r`` and ``r + 1`` of one line's min-shifted shape on ``±w``.

    Two Poisson-bootstrap replicates of a line's n rows differ as two independent full batches
    of n rows would (each mean's variance σ²/n about the measured one), so their distance, in
    the units of the distance matrices (mean absolute difference of min-shifted curves), is the
    distance that measurement noise alone puts between two lines (docs/analysis.md, "Claims").

    Args:
        shape: ``[R, k]`` replicate lines at the positions inside the window.

    Returns:
        ``[R]`` distances (NaN with fewer than two replicates or no position).
    """
    r = shape.shape[0]
    if r < 2 or shape.shape[1] == 0:
        return np.full(r, np.nan)
    shifted = shape - shape.min(axis=1, keepdims=True)
    return np.mean(np.abs(shifted - np.roll(shifted, -1, axis=0)), axis=1)


def percentile_interval(
    replicates: np.ndarray, level: float = DEFAULT_LEVEL, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """``(q_a, q_{1−a})``, ``a = (1 − level)/2``: quantiles of ``replicates`` along ``axis``
    (NaNs skipped). Not an interval for the estimate by itself: see :func:`basic_interval`."""
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice gives NaN
        lo, hi = np.nanquantile(replicates, [a, 1.0 - a], axis=axis)
    return lo, hi


def basic_interval(
    estimate: np.ndarray | float,
    replicates: np.ndarray,
    level: float = DEFAULT_LEVEL,
    axis: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Basic (reverse-percentile) bootstrap interval of ``estimate``: the sums' intervals.

    With ``θ̂`` the estimate on the measured data and ``q_a``, ``q_{1−a}`` the ``a`` and
    ``1 − a`` quantiles of its replicates ``θ*`` (``a = (1 − level)/2``)::

        [2θ̂ − q_{1−a},  2θ̂ − q_a]

    (Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §5.2, eq. 5.6). It
    takes the replicates' errors ``θ* − θ̂`` as a stand-in for the estimate's error ``θ̂ − θ``
    and subtracts them, so a bias of the estimate that the replicates reproduce (a minimum
    of a noisy line lies deeper than the population line's, and a replicate's deeper still)
    moves the interval the other way, and the interval need not contain ``θ̂``. The
    percentile interval ``[q_a, q_{1−a}]`` adds that bias instead of removing it.

    Args:
        estimate: ``θ̂``, broadcastable to ``replicates`` without ``axis``.
        replicates: ``θ*`` (NaNs skipped).
        level: Interval level.
        axis: The replicates' axis.

    Returns:
        ``(low, high)``; NaN where the estimate is NaN or no replicate is finite.
    """
    q_lo, q_hi = percentile_interval(replicates, level, axis)
    est = np.asarray(estimate, dtype=np.float64)
    return 2.0 * est - q_hi, 2.0 * est - q_lo


def accumulated_bands(
    replicates: dict[str, np.ndarray], level: float = DEFAULT_LEVEL
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Interval of each strategy's accumulated improvement after every line.

    Replicate r of the running sum is ``Σ_{s ≤ t} impr_{s, r}`` (NaN counted as 0, as
    :func:`steplines.analysis.strategies.accumulate` does); the band is its
    :func:`basic_interval` around the measured running sum at each line.

    Args:
        replicates: ``bootstrap.npz`` arrays: ``impr:<strategy>`` ``[T, R]`` and the measured
            ``point:impr:<strategy>`` ``[T]`` (a strategy without it, as in tables written
            before the basic interval, gets no band).
        level: Interval level.

    Returns:
        Strategy → ``(low [T], high [T])``.
    """
    out = {}
    for key, reps in replicates.items():
        point = replicates.get(f"point:{key}")
        if key.startswith("impr:") and point is not None:
            acc = np.cumsum(np.where(np.isfinite(reps), reps, 0.0), axis=0, dtype=np.float64)
            est = np.cumsum(np.where(np.isfinite(point), point, 0.0), dtype=np.float64)
            out[key[len("impr:") :]] = basic_interval(est, acc, level, axis=1)
    return out


def _ids(ids: np.ndarray, rows: int, offset: int) -> np.ndarray:
    """The rows' data-set ids, or their positions (from ``offset``) when ids are not stored."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape == (rows,) and (ids >= 0).all():
        return ids
    return np.arange(offset, offset + rows)


class _CrossLines:
    """Per-replicate state of the steps that combine several lines, in the analysis' order.

    The analysis' own rules, one column per replicate: ``lambda_star_out`` (the running median
    of λ*_s = s_opt/‖m_s‖ over the lines before t, :class:`~steplines.analysis.strategies.
    RunningMedian`), ``fbpal_sgd`` (:class:`~steplines.analysis.strategies.FbpalSgd` of the
    replicate's FBPAL steps) and, when δ_B is read off the line, ``sgd_lambda_<λ>_accum``
    (``−λ·D_t``, :class:`~steplines.analysis.strategies.MomentumProxy`). Lines must come in
    the order of the analysed lines.
    """

    def __init__(self, rules: StepRules, resamples: int, *, faithful: bool = False) -> None:
        self.rules = rules
        self.rates = RunningMedian(resamples)
        self.fbpal_sgd = FbpalSgd(resamples, faithful=faithful)
        self.proxy = MomentumProxy(rules.beta, faithful=faithful)

    def lambda_out(self) -> np.ndarray:
        """The out-of-sample λ* of the next line, per replicate (NaN before any line)."""
        return self.rates.median()

    def add_rate(self, s_opt: np.ndarray, direction_norm: float) -> None:
        """Record a line's replicate λ*_t (after its own step was taken)."""
        self.rates.add(rate_ratios(s_opt, np.float64(direction_norm)))

    def steps(self, t: int, index: int, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cross-line steps of line ``t`` (``index`` in the analysed lines)."""
        out = {"fbpal_sgd": self.fbpal_sgd.step(t, index, local["fbpal"])}
        if self.rules.slope_from_line and self.rules.beta > 0:
            accum = self.proxy.step(t, local["delta_batch"])
            out |= sgd_lambda_steps(self.rules.lambdas, None, accum)
        return out


class ReplicateTap:
    """Computes :func:`line_replicates` for each line of a ``(t, record)`` stream it passes on.

    With ``rules`` every step the analysis derives from the lines' losses is derived again on
    each replicate (:func:`line_steps`, and :class:`_CrossLines` for ``lambda_star_out``,
    ``fbpal_sgd`` and ``sgd_lambda_<λ>_accum``); ``lambda_star_in`` (a median over all lines,
    known only after the last one) and the steps that do not depend on the losses keep their
    measured values. After the stream is consumed, :meth:`arrays` holds ``[T, R]`` float32
    replicate matrices in the order of the lines.
    """

    def __init__(
        self,
        steps: dict[str, np.ndarray],
        lines: np.ndarray,
        *,
        faithful: bool = False,
        window: float,
        resamples: int = DEFAULT_RESAMPLES,
        rules: StepRules | None = None,
        batch_slope: np.ndarray | None = None,
        weights: SampleWeights | None = None,
    ) -> None:
        self.steps = steps
        self.row = {int(t): i for i, t in enumerate(lines)}
        self.faithful, self.window, self.resamples = faithful, window, resamples
        self.rules = rules
        self.batch_slope = (
            np.full(len(lines), np.nan) if batch_slope is None else np.asarray(batch_slope)
        )
        self.weights = weights if weights is not None else SampleWeights(resamples)
        self.cross = None
        if rules is not None:
            self.cross = _CrossLines(rules, self.weights.resamples, faithful=faithful)
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
        steps: dict[str, float | np.ndarray] = {k: float(v[i]) for k, v in self.steps.items()}
        cross = None
        if self.cross is not None:
            if "lambda_star_out" in steps:
                steps["lambda_star_out"] = self.cross.lambda_out() * float(rec.direction_norm)
            cross = functools.partial(self.cross.steps, t, i)
        r = line_replicates(
            rec,
            steps,
            faithful=self.faithful,
            window=self.window,
            counts_train=ct,
            counts_direction=cd,
            rules=self.rules,
            batch_slope=float(self.batch_slope[i]),
            cross=cross,
        )
        if self.cross is not None:
            self.cross.add_rate(r.s_opt, rec.direction_norm)
        cols = {"s_opt": r.s_opt, "l0": r.l0, "l_min": r.l_min, "mae2": r.mae2, "range": r.range_}
        if r.floor is not None:
            cols["floor"] = r.floor
        cols |= {f"impr:{k}": v for k, v in r.impr.items()}
        for k, v in cols.items():
            self._out.setdefault(k, []).append(v.astype(np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        """Name → ``[T, R]`` float32 replicates (empty when ``resamples`` is 0)."""
        return {k: np.stack(v) for k, v in self._out.items()}
