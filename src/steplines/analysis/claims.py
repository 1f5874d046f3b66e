"""The paper's claims, each with this run's metric, an interval and a verdict.

Mutschler & Zell (2021) explain SGD by a handful of claims about the lines. For one run,
:func:`evaluate_claims` measures each claim by one dimensionless metric from the per-line
analysis arrays, gives it a 95 % basic bootstrap interval (reverse percentile,
:func:`steplines.analysis.bootstrap.basic_interval`) by a moving-block bootstrap over the lines
(blocks of ``⌈√T⌉`` consecutive lines, because neighbouring lines are alike; 1,000 resamples,
fixed seed), and compares it with the claim's threshold (with row-bootstrap replicates of the
per-line values, each resampled line also draws one replicate, so the interval also covers the
sampling error of each line's full batch):

* **holds** — the whole interval lies on the claim's side of the threshold;
* **does not hold** — the whole interval lies on the other side;
* **inconclusive** — the interval straddles the threshold, the run has fewer lines than the
  claim needs (:data:`MIN_LINES`), or the metric was not measured; the reason says which.

The thresholds and their reasons are in ``docs/analysis.md`` ("Claims").

This module never imports torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from steplines.analysis.bootstrap import basic_interval

__all__ = [
    "CLAIMS",
    "MIN_LINES",
    "Claim",
    "ClaimInputs",
    "block_bootstrap",
    "evaluate_claims",
    "verdict",
]

MIN_LINES = 20
"""Fewer analysed lines than this make every claim over lines "inconclusive"."""

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, judged on one run (a row of ``claims.json``).

    Attributes:
        key: Stable identifier (``parabola``, ``little_change``, …).
        claim: The paper's statement, in words, with its figure.
        metric: What is measured, in words.
        value: The metric on this run (None: not measured).
        low, high: 95 % block-bootstrap interval of ``value``.
        threshold: The claim holds when the metric is on this side, e.g. ``≤ 0.05``.
        paper: The paper's value for this claim.
        verdict: ``holds``, ``does not hold`` or ``inconclusive``.
        reason: Why the verdict (always filled).
        n: Number of lines (or items) the metric is computed from.
    """

    key: str
    claim: str
    metric: str
    value: float | None
    low: float | None
    high: float | None
    threshold: str
    paper: str
    verdict: str
    reason: str
    n: int

    def to_json(self) -> dict[str, object]:
        """Plain dict for ``claims.json``."""
        return asdict(self)


@dataclass(frozen=True)
class ClaimInputs:
    """Per-line arrays the claims are measured from (rows = analysed lines, in order).

    Attributes:
        later_from: Index of the first "later" line (the first lines are excluded where a claim
            speaks of later lines).
        fit_mae2: MAE of the degree-2 fit on ``±w``.
        fit_range: ``max − min`` of the full-batch line on ``±w`` (the scale of the fit error).
        consecutive: ``D[t−1, t]`` for lines 1…T−1 (NaN for line 0), min-shifted MAE.
        height: Mean height of each min-shifted curve on the window (the scale of ``D``).
        s_opt, s_update: Full-batch minimum and the step as trained.
        impr: Strategy name → improvement ``l(0) − l(step)`` per line.
        rate: λ*_t = ``s_opt/‖m_t‖`` per line.
        delta_ratio: Batch size → ``(δ_bs/δ_B)/(B/bs)`` per line, for ``B/4 ≤ bs ≤ 2B``.
        noisy_ratio: Per noisy-direction line, median distance to the other directions of its
            position over its height (empty when not measured).
        batch_size: B, the run's batch size.
        replicates: Row-bootstrap replicates ``[T, R]`` of per-line values
            (:mod:`steplines.analysis.bootstrap`): ``fit_mae2``, ``fit_range``, ``s_opt``,
            ``rate`` and ``impr:<strategy>``. Where given, each bootstrap resample of the lines
            also draws one replicate per line, so the interval covers the sampling error of
            each line's full batch as well as the variation between lines.
    """

    later_from: int
    fit_mae2: np.ndarray
    fit_range: np.ndarray
    consecutive: np.ndarray
    height: np.ndarray
    s_opt: np.ndarray
    s_update: np.ndarray
    impr: dict[str, np.ndarray]
    rate: np.ndarray
    delta_ratio: dict[int, np.ndarray]
    noisy_ratio: np.ndarray
    batch_size: int
    replicates: dict[str, np.ndarray] = field(default_factory=dict)


Column = np.ndarray | tuple[np.ndarray, np.ndarray]
"""A per-line column: values ``[T]``, or ``(values [T], replicates [T, R])``."""


def block_bootstrap(
    columns: tuple[Column, ...],
    stat: Callable[..., float],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    block: int | None = None,
) -> tuple[float, float]:
    """Basic bootstrap interval of ``stat(*columns)`` under a circular moving-block bootstrap.

    Rows (lines) are resampled in blocks of ``block`` consecutive rows (default ``⌈√T⌉``),
    wrapping around, so that the dependence between neighbouring lines is kept. A column given
    as ``(values, replicates)`` contributes, for each drawn line, one of its ``R`` replicates
    drawn at random (a two-level bootstrap: lines, then rows within a line).

    Args:
        columns: Arrays with the same first dimension T (the lines), or ``(values,
            replicates [T, R])`` pairs.
        stat: Function of the columns along their last axis (the lines): a float for ``[T]``
            columns, an array for ``[S, T]`` stacks of resamples (NaN allowed).
        resamples: Number of bootstrap resamples.
        level: Interval level (0.95: the 2.5 % and 97.5 % percentiles).
        seed: Seed of the generator (results are reproducible).
        block: Block length (default ``⌈√T⌉``; 1 = the ordinary bootstrap).

    Returns:
        ``(low, high)`` = ``[2θ̂ − q_{1−a}, 2θ̂ − q_a]``, with ``θ̂`` the statistic of the
        columns' own values and ``q`` the quantiles of the resampled statistics
        (:func:`steplines.analysis.bootstrap.basic_interval`: Davison & Hinkley 1997, §5.2);
        NaNs when T = 0, ``θ̂`` is not finite, or no resample gives a finite statistic.
    """
    t = len(_values(columns[0]))
    if t == 0 or resamples < 1:
        return math.nan, math.nan
    length = block or max(1, math.ceil(math.sqrt(t)))
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(t / length)
    starts = rng.integers(0, t, size=(resamples, n_blocks))
    idx = (starts[:, :, None] + np.arange(length)[None, None, :]).reshape(resamples, -1)[:, :t] % t
    width = max((c[1].shape[1] for c in columns if isinstance(c, tuple)), default=1)
    pick = rng.integers(0, width, size=(resamples, t))

    def draw(c: Column, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if isinstance(c, tuple):
            return c[1][i, j % c[1].shape[1]].astype(np.float64)
        return np.asarray(c, dtype=np.float64)[i]

    chunk = max(1, 2_000_000 // t)  # resamples per vectorised call: ~16 MB per column
    vals = np.concatenate(
        [
            np.asarray(
                stat(*(draw(c, idx[k : k + chunk], pick[k : k + chunk]) for c in columns)),
                dtype=np.float64,
            ).reshape(-1)
            for k in range(0, resamples, chunk)
        ]
    )
    vals = vals[np.isfinite(vals)]
    estimate = float(stat(*(np.asarray(_values(c), dtype=np.float64) for c in columns)))
    if vals.size == 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    lo, hi = basic_interval(estimate, vals, level)
    return float(lo), float(hi)


def _values(c: Column) -> np.ndarray:
    return c[0] if isinstance(c, tuple) else c


def _sliced(c: Column, part: slice) -> Column:
    return (c[0][part], c[1][part]) if isinstance(c, tuple) else c[part]


def verdict(
    value: float, low: float, high: float, threshold: float, holds_above: bool
) -> tuple[str, str]:
    """``(verdict, reason)`` from a value, its interval and a threshold (see module docstring)."""
    side = "≥" if holds_above else "≤"
    if not all(math.isfinite(x) for x in (value, low, high)):
        return "inconclusive", "the metric could not be computed on this run"
    span = f"[{_g(low)}, {_g(high)}]"
    if (low >= threshold) if holds_above else (high <= threshold):
        return "holds", f"the interval {span} lies {side} {_g(threshold)}"
    if (high < threshold) if holds_above else (low > threshold):
        return "does not hold", f"the interval {span} misses {side} {_g(threshold)}"
    return "inconclusive", f"the interval {span} straddles {_g(threshold)}"


def _g(x: float) -> str:
    return f"{x:.3g}"


# Statistics over the lines: along the last axis, so that one call evaluates a stack of
# bootstrap resamples ``[S, T]`` as well as the run itself ``[T]``.


def _finite_median(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row gives NaN
        return np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=-1)


def _ratio_median(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finite_median(num / den)


def _share(impr: np.ndarray, opt: np.ndarray) -> np.ndarray:
    ok = np.isfinite(impr) & np.isfinite(opt)
    total = np.sum(np.where(ok, opt, 0.0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.sum(np.where(ok, impr, 0.0), axis=-1) / total, np.nan)


def _spread(rate: np.ndarray) -> np.ndarray:
    r = np.where(np.isfinite(rate), rate, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanpercentile(r, [25, 50, 75], axis=-1)
    enough = np.sum(np.isfinite(r), axis=-1) >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(enough & (med != 0), (q75 - q25) / np.abs(med), np.nan)


def _worst_ratio(*cols: np.ndarray) -> np.ndarray:
    devs = np.stack([np.abs(_finite_median(c) - 1.0) for c in cols])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(devs, axis=0)


@dataclass(frozen=True)
class _Spec:
    key: str
    claim: str
    metric: str
    threshold: float
    holds_above: bool
    paper: str


CLAIMS: tuple[_Spec, ...] = (
    _Spec(
        "parabola",
        "The full-batch loss along the update direction is locally almost a parabola (Fig. 4).",
        "median over lines of the degree-2 fit's MAE on ±w divided by the line's range on ±w",
        0.05,
        False,
        'fit error "always low"; ResNet-18 degree-2 MAE ≤ 0.005 vs degree-1 ≤ 0.07',
    ),
    _Spec(
        "little_change",
        "After the first lines, consecutive lines change little (Fig. 3).",
        "median over later lines of D(t−1, t) divided by the mean height of line t's "
        "min-shifted curve on ±w",
        0.1,
        False,
        "later lines ≈ 0.01 apart (MAE), the first ~10 lines differ most",
    ),
    _Spec(
        "constant_rate",
        "SGD with a good constant learning rate is almost an exact full-batch line search "
        "(Fig. 6).",
        "share of the optimum's accumulated improvement over the later lines reached by the "
        "update at the constant λ* estimated out-of-sample (from earlier lines only)",
        0.9,
        True,
        'SGD λ = 0.05 ≈ 95 % of the optimum (ResNet-18), "almost as well" as FBPAL',
    ),
    _Spec(
        "trained_overshoots",
        "The trained learning rate steps far beyond the line's minimum (Fig. 6).",
        "median over lines of s_update / s_opt (lines with s_opt > 0)",
        1.25,
        True,
        '≈ 2: λ = 0.1 "always does a step far beyond the locally optimal step"',
    ),
    _Spec(
        "batch_search_poor",
        "An exact line search on the direction-defining mini-batch performs poorly (Fig. 6).",
        "share of the optimum's accumulated improvement reached by the minimum of l_B",
        0.75,
        False,
        "≈ 54 % of the optimum (ResNet-18); negative with momentum",
    ),
    _Spec(
        "proportional",
        "The step to the minimum is proportional to the gradient norm: λ*_t = s_opt/‖m_t‖ "
        "is about constant (Fig. 6, lower right).",
        "relative spread (IQR / median) of λ*_t over later lines",
        0.5,
        False,
        "s_opt/‖g‖ ≈ 0.05, about constant, noisier late in training",
    ),
    _Spec(
        "batch_size",
        "A k× larger batch divides |δ| by k — a larger batch acts like a smaller learning "
        "rate (Fig. 7).",
        "largest |median_t (δ_bs/δ_B)/(B/bs) − 1| over the simulated batch sizes B/4 … 2B",
        0.25,
        False,
        "δ ratio = 128/bs for bs 32…256 over the whole training",
    ),
    _Spec(
        "noisy_directions",
        "Lines along other mini-batches' directions from the same point look alike (Fig. 8).",
        "median over noisy-direction lines of the median distance to the other directions "
        "divided by the line's mean height on ±w",
        0.1,
        False,
        "distances between the noisy lines are low",
    ),
)
"""The claims, their metrics and thresholds (``docs/analysis.md`` gives the reasons)."""


def evaluate_claims(
    x: ClaimInputs, *, resamples: int = RESAMPLES, level: float = LEVEL
) -> list[Claim]:
    """Every claim of :data:`CLAIMS` judged on one run (see the module docstring).

    Args:
        x: The per-line arrays.
        resamples: Bootstrap resamples per claim (0: no intervals, every verdict
            inconclusive).
        level: Level of the intervals.

    Returns:
        One :class:`Claim` per entry of :data:`CLAIMS`, in that order.
    """
    later = slice(x.later_from, None)
    nan = np.full(len(x.s_opt), np.nan)

    def col(name: str, values: np.ndarray) -> Column:
        reps = x.replicates.get(name)
        return (values, reps) if reps is not None and reps.shape[0] == len(values) else values

    opt = col("impr:optimal", x.impr.get("optimal", nan))
    out_key = "lambda_star_out"
    positive = x.s_opt > 0
    s_opt = col("s_opt", np.where(positive, x.s_opt, np.nan))
    if isinstance(s_opt, tuple):  # the same lines in every replicate: those with s_opt > 0
        s_opt = (s_opt[0], np.where(positive[:, None], s_opt[1], np.nan))
    data: dict[str, tuple[tuple[Column, ...], Callable[..., float], str]] = {
        "parabola": (
            (col("fit_mae2", x.fit_mae2), col("fit_range", x.fit_range)),
            _ratio_median,
            "",
        ),
        "little_change": (
            (x.consecutive[later], x.height[later]),
            _ratio_median,
            "",
        ),
        "constant_rate": (
            (
                _sliced(col(f"impr:{out_key}", x.impr.get(out_key, nan)), later),
                _sliced(opt, later),
            ),
            _share,
            "" if out_key in x.impr else "the out-of-sample λ* strategy was not computed",
        ),
        "trained_overshoots": (
            (np.where(positive, x.s_update, np.nan), s_opt),
            _ratio_median,
            "",
        ),
        "batch_search_poor": (
            (col("impr:exact_batch", x.impr.get("exact_batch", nan)), opt),
            _share,
            "",
        ),
        "proportional": ((_sliced(col("rate", x.rate), later),), _spread, ""),
        "batch_size": (
            tuple(x.delta_ratio[k] for k in sorted(x.delta_ratio)),
            _worst_ratio,
            "" if x.delta_ratio else "the batch-size simulation needs B and a size in B/4 … 2B",
        ),
        "noisy_directions": (
            (x.noisy_ratio,),
            _finite_median,
            ""
            if x.noisy_ratio.size
            else "no noisy-direction lines were measured "
            "(set measure.noisy_every and measure.noisy_directions)",
        ),
    }
    claims = []
    for spec in CLAIMS:
        cols, stat, missing = data[spec.key]
        n = len(_values(cols[0])) if cols else 0
        need = 4 if spec.key == "noisy_directions" else MIN_LINES
        value = float(stat(*(_values(c) for c in cols))) if cols and n else math.nan
        low = high = math.nan
        if missing:
            verdict_, reason = "inconclusive", missing
        elif resamples < 1:
            verdict_, reason = "inconclusive", "no interval: the bootstrap was switched off"
        elif n < need:
            verdict_ = "inconclusive"
            reason = f"only {n} {'lines' if need == MIN_LINES else 'items'} (needs ≥ {need})"
        else:
            block = 1 if spec.key == "noisy_directions" else None
            low, high = block_bootstrap(cols, stat, resamples=resamples, level=level, block=block)
            verdict_, reason = verdict(value, low, high, spec.threshold, spec.holds_above)
        claims.append(
            Claim(
                key=spec.key,
                claim=spec.claim,
                metric=spec.metric,
                value=_opt(value),
                low=_opt(low),
                high=_opt(high),
                threshold=f"{'≥' if spec.holds_above else '≤'} {spec.threshold:g}",
                paper=spec.paper,
                verdict=verdict_,
                reason=reason,
                n=n,
            )
        )
    return claims


def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
