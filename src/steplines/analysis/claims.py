"""The paper's claims, each tested as the paper states it, on one run or pooled over runs.

Mutschler & Zell (2021) explain SGD by a handful of claims about the lines. Each entry of
:data:`CLAIMS` quotes the paper's sentence, names the figure, and tests it by one statistic of
per-unit columns (:class:`ClaimData`: a run's per-line values, and per noisy-direction step):

* the statistic's value on the run (or on all runs together) and its interval from the
  hierarchical bootstrap of :mod:`steplines.analysis.resample` (runs, then non-overlapping blocks
  of lines or single noisy steps, then each line's row replicates), on a scale that keeps the
  interval inside the range the statistic can take;
* a verdict against the claim's threshold: **holds** when the whole interval lies on the
  threshold's side, **does not hold** when it lies on the other side, **inconclusive** when it
  straddles it or there are fewer independent units than :data:`MIN_UNITS` asks,
  **not applicable** when the paper does not make the claim for this run (the batch-size claim
  on a run that is not plain SGD, consecutive lines on a schedule without them);
* pooled over several runs, a verdict is never "holds" where a run's own verdict is "does not
  hold", or the reverse: the runs then disagree, and the pooled verdict says so;
* with several claims judged at once, ``family="bonferroni"`` widens every interval to the
  level ``1 − (1 − level)/m`` and ``family="holm"`` judges the bootstrap p-values by Holm's
  step-down rule (Holm 1979), so that all ``m`` verdicts together hold at ``level``.

``docs/analysis.md`` ("Claims") gives each claim's quote, statistic and the reason for its
threshold. This module never imports torch.
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steplines.analysis.resample import Column, Range, Resampled, resample

__all__ = [
    "CLAIMS",
    "FAMILIES",
    "LEVEL",
    "MIN_UNITS",
    "RESAMPLES",
    "VERDICTS",
    "Claim",
    "ClaimData",
    "Spec",
    "evaluate_claims",
    "family_note",
]

RESAMPLES = 1000
"""Bootstrap resamples behind each claim's interval."""

LEVEL = 0.95
"""Level of each claim's interval (before a family correction)."""

MIN_UNITS: dict[str, int] = {"lines": 20, "noisy steps": 5, "runs": 3}
"""Fewest independent units for a verdict: lines (or line pairs) of a claim over lines, noisy
steps (a step with all its directions) of the noisy-direction claim, runs of a pooled verdict."""

FAMILIES = ("none", "bonferroni", "holm")
"""How the verdicts of all claims are read together (module docstring)."""

VERDICTS = ("holds", "does not hold", "inconclusive", "not applicable")
"""The verdicts a claim can get (module docstring)."""


# ---------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class ClaimData:
    """What the claims read from one run (rows = the analysed lines, in order).

    Attributes:
        name: The run's label (its directory name).
        columns: Name → float ``[T]`` per line: ``step`` (the training step of the line),
            ``position`` (``i/(T−1)``: where in the run the line lies), ``later`` (1 from the
            first "later" line on), ``rel_fit2`` (degree-2 MAE / range on ``±w``), ``mae1``,
            ``mae2``, ``curvature`` (the degree-2 fit's ``a``), ``consecutive`` (``D(t−1, t)``
            of lines one step apart, else NaN), ``far`` (``D(t, t+h)``, ``h`` half the later
            lines), ``floor`` (the distance two independent full batches of the same line
            give), ``s_opt``, ``s_update``, ``direction_norm``, ``slope_batch`` (``l_B'(0)``),
            ``slope_full`` (``l'(0)``, finite difference), ``impr:<strategy>``,
            ``delta_ratio:<bs>``.
        replicates: Name → float ``[T, R]`` row-bootstrap replicates of some columns. The
            shares of the optimum draw them (a replicate re-minimises the line, and the basic
            interval removes the depth that gains); statistics over lines of a line's own
            value (shares of lines, slopes, medians) do not: the blocks of lines already carry
            each line's measurement noise, and replicates would add it a second time.
        noisy: Per noisy-direction step: ``step``, ``median`` (median MAE between its
            directions' lines) and ``far`` (``D`` between the step's own line and the line
            half the run away: the scale of a real change).
        meta: ``plain_sgd`` (bool), ``batch_size``, ``later_median`` (median MAE of all later
            pairs), ``lambda_star`` (λ*_in), ``lr`` (trained λ), ``epochs`` and others shown.
    """

    name: str
    columns: dict[str, np.ndarray]
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    noisy: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["step"])

    def col(self, name: str) -> Column:
        """A column with its replicates where the run has them (NaN column when absent)."""
        values = self.columns.get(name)
        if values is None:
            return np.full(len(self), np.nan)
        reps = self.replicates.get(name)
        ok = reps is not None and reps.ndim == 2 and reps.shape[0] == len(values)
        return (values, reps) if ok else values

    def save(self, path: Path) -> None:
        """Write to ``path`` (``.npz``; the analysis' ``claim_data.npz``)."""
        arrays = {f"col:{k}": v for k, v in self.columns.items()}
        arrays |= {f"rep:{k}": v.astype(np.float32) for k, v in self.replicates.items()}
        arrays |= {f"noisy:{k}": v for k, v in self.noisy.items()}
        meta = json.dumps({"name": self.name, **self.meta}, allow_nan=True)
        np.savez_compressed(path, meta=np.str_(meta), **arrays)

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> ClaimData:
        """Read what :meth:`save` wrote (``name`` replaces the stored label)."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            parts: dict[str, dict[str, np.ndarray]] = {"col": {}, "rep": {}, "noisy": {}}
            for key in z.files:
                if ":" in key:
                    kind, col = key.split(":", 1)
                    parts[kind][col] = z[key]
        label = meta.pop("name")
        return cls(name or label, parts["col"], parts["rep"], parts["noisy"], meta)


# ---------------------------------------------------------------------------- statistics
# Along the last axis, NaN = a missing unit, so that one call evaluates the data ``[T]`` and a
# stack of resamples ``[S, T]`` alike.


def _quiet(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def wrapped(*cols: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn(*(np.asarray(c, dtype=np.float64) for c in cols))

    wrapped.__doc__ = fn.__doc__
    return wrapped


def _fin(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, np.nan)


def share_at_most(c: float) -> Callable[..., np.ndarray]:
    """The statistic "share of the units with ``x ≤ c``"."""

    @_quiet
    def stat(x: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x)
        return np.sum(ok & (x <= c), axis=-1) / np.sum(ok, axis=-1)

    stat.__doc__ = f"Share of the units with x ≤ {c:g}."
    return stat


def ratio_share_at_least(c: float) -> Callable[..., np.ndarray]:
    """The statistic "share of the units with ``num/den ≥ c``"."""

    @_quiet
    def stat(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        r = num / den
        ok = np.isfinite(r)
        return np.sum(ok & (r >= c), axis=-1) / np.sum(ok, axis=-1)

    stat.__doc__ = f"Share of the units with num/den ≥ {c:g}."
    return stat


@_quiet
def median(x: np.ndarray) -> np.ndarray:
    """Median over units."""
    return np.nanmedian(_fin(x), axis=-1)


@_quiet
def median_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Median over units of ``num/den``."""
    return np.nanmedian(_fin(num / den), axis=-1)


@_quiet
def geometric_mean_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``exp(mean log(num/den))`` over units with a positive ratio: a typical ratio that,
    unlike a median of a few units, the bootstrap resamples smoothly."""
    r = num / den
    ok = np.isfinite(r) & (r > 0)
    logs = np.where(ok, np.log(np.where(ok, r, 1.0)), 0.0)
    return np.exp(np.sum(logs, axis=-1) / np.sum(ok, axis=-1))


@_quiet
def ratio_of_medians(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``median(num) / median(den)`` over units."""
    return np.nanmedian(_fin(num), axis=-1) / np.nanmedian(_fin(den), axis=-1)


@_quiet
def positive_share(x: np.ndarray) -> np.ndarray:
    """Share of the units with ``x > 0``."""
    ok = np.isfinite(x)
    return np.sum(ok & (x > 0), axis=-1) / np.sum(ok, axis=-1)


@_quiet
def below_share(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of the units with ``a < b``."""
    ok = np.isfinite(a) & np.isfinite(b)
    return np.sum(ok & (a < b), axis=-1) / np.sum(ok, axis=-1)


@_quiet
def share(impr: np.ndarray, opt: np.ndarray) -> np.ndarray:
    """``Σ impr / Σ opt`` over the units where both are finite: the share of the optimum's
    accumulated improvement ``Σ_t l(0) − l(s_opt)`` that a strategy reaches (Fig. 6)."""
    ok = np.isfinite(impr) & np.isfinite(opt)
    total = np.sum(np.where(ok, opt, 0.0), axis=-1)
    return np.where(total > 0, np.sum(np.where(ok, impr, 0.0), axis=-1) / total, np.nan)


@_quiet
def share_gain(a: np.ndarray, b: np.ndarray, opt: np.ndarray) -> np.ndarray:
    """``share(a) − share(b)`` over the units where all three are finite."""
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(opt)
    total = np.sum(np.where(ok, opt, 0.0), axis=-1)
    gain = np.sum(np.where(ok, a - b, 0.0), axis=-1)
    return np.where(total > 0, gain / total, np.nan)


@_quiet
def loglog_slope(y: np.ndarray, x: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``log y`` on ``log x`` within runs (each run's own means taken
    out, so seeds may differ in the constant), over the units with both positive:
    ``y = c_run·x^slope``, so 1 is proportional."""
    ok = np.isfinite(y) & np.isfinite(x) & (y > 0) & (x > 0) & np.isfinite(run)
    ly = np.where(ok, np.log(np.where(ok, y, 1.0)), 0.0)
    lx = np.where(ok, np.log(np.where(ok, x, 1.0)), 0.0)
    dx, dy = np.zeros_like(lx), np.zeros_like(ly)
    for r in np.unique(run[ok]):
        g = ok & (run == r)
        n = np.sum(g, axis=-1, keepdims=True)
        mx = np.sum(np.where(g, lx, 0.0), axis=-1, keepdims=True) / np.maximum(n, 1)
        my = np.sum(np.where(g, ly, 0.0), axis=-1, keepdims=True) / np.maximum(n, 1)
        dx = np.where(g, lx - mx, dx)
        dy = np.where(g, ly - my, dy)
    return np.sum(dx * dy, axis=-1) / np.sum(dx * dx, axis=-1)


def _run_id(d: ClaimData) -> np.ndarray:
    """A number naming the run, per line (the groups of :func:`loglog_slope`)."""
    return np.full(len(d), float(zlib.crc32(d.name.encode())))


@_quiet
def late_over_early(x: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``median(x over the last third of a run) / median(x over its first third)``."""
    late = np.where(position >= 2.0 / 3.0, x, np.nan)
    early = np.where(position < 1.0 / 3.0, x, np.nan)
    return np.nanmedian(_fin(late), axis=-1) / np.nanmedian(_fin(early), axis=-1)


@_quiet
def worst_ratio(*cols: np.ndarray) -> np.ndarray:
    """Largest ``|median − 1|`` over the columns."""
    return np.nanmax(np.stack([np.abs(np.nanmedian(_fin(c), axis=-1) - 1.0) for c in cols]), 0)


# ---------------------------------------------------------------------------- the claims

Columns = tuple[Column, ...] | str
"""A claim's columns on one run, or why the claim is not applicable there."""


@dataclass(frozen=True)
class Spec:
    """One claim of the paper and how it is tested.

    Attributes:
        key: Stable identifier.
        claim: The claim in a few words.
        quote: The paper's sentence.
        figure: Where in the paper.
        metric: What the statistic is, in words.
        columns: The run's columns for the statistic, or why the claim does not apply.
        stat: The statistic over units (last axis).
        range: The values the statistic can take.
        above: The claim holds when the statistic exceeds this (None: no lower side).
        below: The claim holds when the statistic is under this (None: no upper side).
        paper: The paper's own number (or words) for the claim.
        quantity: The paper's quantity on this run: ``(name, fn(run) → value)``.
        unit: ``lines`` or ``noisy steps``.
        interval: ``basic`` (shares of the optimum, whose replicates re-minimise each line,
            and ratios of distances) or ``percentile`` (shares of lines, the batch-size
            claim's largest deviation, the log-log slope): near a bound of its range, or where
            a few lines carry a slope, the basic interval's reflection covers worse
            (``bench/claims_coverage.py``).
        floor: A claim about distances between lines: its ``quantity`` carries the run's
            noise floor beside the paper's MAE.
        interval: ``basic`` (the bias-correcting interval, for sums, shares and ratios) or
            ``percentile`` (for quantiles and maxima, where the basic interval's reflection
            covers worse: ``bench/claims_coverage.py``).
    """

    key: str
    claim: str
    quote: str
    figure: str
    metric: str
    columns: Callable[[ClaimData], Columns]
    stat: Callable[..., np.ndarray]
    range: Range
    above: float | None
    below: float | None
    paper: str
    quantity: tuple[str, Callable[[ClaimData], float | None]] | None = None
    unit: str = "lines"
    interval: str = "basic"
    floor: bool = False

    @property
    def threshold(self) -> str:
        """The holding side in words (``≤ 0.05``, ``in [0.5, 1.5]``)."""
        if self.above is not None and self.below is not None:
            return f"in [{self.above:g}, {self.below:g}]"
        return f"≥ {self.above:g}" if self.above is not None else f"≤ {self.below:g}"


def _later(d: ClaimData, name: str) -> Column:
    c = d.col(name)
    keep = d.columns["later"] > 0
    if isinstance(c, tuple):
        return np.where(keep, c[0], np.nan), np.where(keep[:, None], c[1], np.nan)
    return np.where(keep, c, np.nan)


def _positive_s_opt(d: ClaimData) -> Column:
    c = d.col("s_opt")
    keep = d.columns["s_opt"] > 0  # the same lines in every replicate
    if isinstance(c, tuple):
        return np.where(keep, c[0], np.nan), np.where(keep[:, None], c[1], np.nan)
    return np.where(keep, c, np.nan)


_NONE = np.full(1, np.nan)


def _rel_fit2(d: ClaimData) -> Columns:
    return (d.col("rel_fit2"),)


def _overshoot(d: ClaimData) -> tuple[np.ndarray, np.ndarray]:
    s_opt = d.columns["s_opt"]
    return d.columns["s_update"], np.where(s_opt > 0, s_opt, np.nan)


def _consecutive(d: ClaimData) -> Columns:
    cons = _later(d, "consecutive")
    if np.sum(np.isfinite(cons)) == 0:
        return (
            "no two analysed lines are one step apart (a line schedule with gaps): the paper's "
            "consecutive lines are not in this run"
        )
    return cons, _later(d, "far")


def _noisy(d: ClaimData) -> Columns:
    med = d.noisy.get("median")
    if med is None or med.size == 0:
        return "no noisy-direction lines were measured (set measure.noisy_every)"
    return med, d.noisy["far"]


def _plain_sgd_delta(d: ClaimData) -> Columns:
    if not d.meta.get("plain_sgd", True):
        return (
            "the paper does not claim it beyond plain SGD (§6: 'this analysis was not "
            "performed for SGD with momentum')"
        )
    keys = sorted((k for k in d.columns if k.startswith("delta_ratio:")), key=_bs)
    if not keys:
        return "the batch-size simulation needs a batch size in B/4 … 2B"
    return tuple(d.columns[k] for k in keys)


def _bs(key: str) -> int:
    return int(key.split(":", 1)[1])


def _impr(*names: str) -> Callable[[ClaimData], Columns]:
    def cols(d: ClaimData) -> Columns:
        missing = [n for n in names if f"impr:{n}" not in d.columns]
        if missing:
            return f"the strategy {missing[0]} was not computed on this run"
        return tuple(d.col(f"impr:{n}") for n in names)

    return cols


def _meta(key: str) -> Callable[[ClaimData], float | None]:
    return lambda d: _num(d.meta.get(key))


def _stat_of(name: str, fn: Callable[..., np.ndarray], *cols: str) -> tuple[str, Callable]:
    return name, lambda d: _num(fn(*(d.columns.get(c, np.full(len(d), np.nan)) for c in cols)))


@_quiet
def _max(x: np.ndarray) -> np.ndarray:
    return np.nanmax(_fin(x), axis=-1)


CLAIMS: tuple[Spec, ...] = (
    Spec(
        "parabola",
        "The full-batch loss along a line is locally almost a parabola.",
        "Figure 4 shows in detail that this is valid since the fitting error of a parabola is "
        "always low.",
        "§4, Fig. 4",
        "share of lines whose degree-2 fit's MAE on ±w is at most 5 % of the line's range on "
        '±w ("always": at least nine lines in ten, i.e. the 90 % quantile of the relative '
        "error is ≤ 5 %)",
        _rel_fit2,
        share_at_most(0.05),
        Range(0.0, 1.0),
        0.9,
        None,
        "ResNet-18: degree-2 MAE ≤ 0.005 on every line, degree-1 ≤ 0.07 (Fig. 11)",
        _stat_of("largest degree-2 MAE over lines", _max, "mae2"),
        interval="percentile",
    ),
    Spec(
        "positive_curvature",
        "The parabolas open upwards.",
        "The previous section showed that the full-batch loss along lines in update step "
        "direction behaves parabolically and exhibits positive curvature.",
        "§5, Fig. 4",
        "share of lines whose degree-2 fit on ±w has a > 0",
        lambda d: (d.col("curvature"),),
        positive_share,
        Range(0.0, 1.0),
        0.9,
        None,
        "l(s) ≈ as² + bs + c with a > 0",
        _stat_of("median curvature a", median, "curvature"),
        interval="percentile",
    ),
    Spec(
        "parabola_not_line",
        "A parabola fits far better than a straight line.",
        "Full-batch losses along lines can be well fitted by polynomials of degree 2.",
        "Fig. 4 (degree 1 against 2)",
        "median over lines of the degree-2 MAE divided by the degree-1 MAE on ±w",
        lambda d: (d.col("mae2"), d.col("mae1")),
        median_ratio,
        Range(0.0, None),
        None,
        0.25,
        "ResNet-18: ≤ 0.005 against ≤ 0.07, a ratio ≈ 0.07",
        _stat_of("largest degree-1 MAE over lines", _max, "mae1"),
    ),
    Spec(
        "little_change",
        "Consecutive lines change little, lines far apart in training more.",
        "In particular, the full-batch loss along consecutive lines behaves similarly.",
        "§4, Fig. 3",
        "median over later lines of D(t−1, t) for lines one step apart, divided by the median "
        "D(t, t+h) of later lines half the run apart",
        _consecutive,
        ratio_of_medians,
        Range(0.0, None),
        None,
        0.5,
        "later pairs ≈ 0.01 apart (MAE, ResNet-20; 0.005 ResNet-18), the first ~10 lines most",
        ("median MAE of all later pairs", _meta("later_median")),
        floor=True,
    ),
    Spec(
        "noisy_directions",
        "Lines along other mini-batches' directions from one point look alike.",
        "At fixed positions in parameter space the full-batch loss along lines in several noisy "
        "gradient directions reveals low distances.",
        "§4, Fig. 8",
        "geometric mean over noisy steps of (the median D between the step's directions / "
        "the D between the step's line and the line half the run away)",
        _noisy,
        geometric_mean_ratio,
        Range(0.0, None),
        None,
        0.5,
        "low distances (Fig. 8, 100 positions)",
        (
            "median MAE between noisy directions",
            lambda d: _num(median(d.noisy.get("median", _NONE))),
        ),
        unit="noisy steps",
        floor=True,
    ),
    Spec(
        "batch_steeper",
        "The direction-defining batch's loss falls faster at s = 0 than the full batch's.",
        "Further on is the slope of the direction defining mini-batch around s = 0 is "
        "consistently steeper than the full-batch loss.",
        "§3, Fig. 2",
        "share of lines with l_B'(0) < l'(0)",
        lambda d: (d.col("slope_batch"), d.col("slope_full")),
        below_share,
        Range(0.0, 1.0),
        0.9,
        None,
        '"always steeper around 0" (Fig. 2)',
        (
            "median l_B'(0) − l'(0)",
            lambda d: _num(median(d.columns["slope_batch"] - d.columns["slope_full"])),
        ),
        interval="percentile",
    ),
    Spec(
        "fbpal_near_optimal",
        "A parabola through the full batch's l(0), l(µ), l'(0) steps almost optimally.",
        "To strengthen our previous observation, a parabolic approximation on the full-batch "
        "loss (FBPAL) yields almost optimal performance.",
        "§5, Fig. 6",
        "share of the optimum's accumulated improvement reached by FBPAL, all lines",
        _impr("fbpal", "optimal"),
        share,
        Range(None, 1.0),
        0.9,
        None,
        '"almost optimal"',
    ),
    Spec(
        "constant_rate",
        "SGD at one good constant rate is almost an exact line search (in-sample).",
        "Surprisingly, SGD with λ = 0.05 estimates the minima of the full-batch loss almost "
        "as well.",
        "§5, Fig. 6",
        "share of the optimum's accumulated improvement over all lines reached by the update "
        "at the constant λ* = median_t s_opt/‖m_t‖ of the same lines (in-sample, the paper's "
        "comparison)",
        _impr("lambda_star_in", "optimal"),
        share,
        Range(None, 1.0),
        0.9,
        None,
        'λ = 0.05 "almost as well" as FBPAL (ResNet-20)',
        ("λ* (in-sample)", _meta("lambda_star")),
    ),
    Spec(
        "constant_rate_out",
        "The constant rate also works without hindsight (out-of-sample).",
        "We empirically show that there exists a leaning rate for which SGD always performs "
        "almost exact line searches on the full-batch loss.",
        "§1, §5",
        "share of the optimum's accumulated improvement over all lines after the first, "
        "reached at λ*_t = the median of s_opt/‖m‖ over the lines before t (out-of-sample)",
        _impr("lambda_star_out", "optimal"),
        share,
        Range(None, 1.0),
        0.9,
        None,
        "not reported (the paper's λ = 0.05 was read off the run)",
    ),
    Spec(
        "trained_overshoots",
        "The grid-searched learning rate steps far beyond the line's minimum.",
        "The globally best performing learning rate of 0.1 always does a step far beyond the "
        "locally optimal step.",
        "§5, Fig. 6",
        'share of lines (s_opt > 0) with s_update ≥ 1.25·s_opt ("always": at least nine '
        "lines in ten, i.e. the 10 % quantile of s_update/s_opt is ≥ 1.25)",
        lambda d: (d.col("s_update"), _positive_s_opt(d)),
        ratio_share_at_least(1.25),
        Range(0.0, 1.0),
        0.9,
        None,
        "0.1 / 0.05 ≈ 2 (the same number as λ/λ*)",
        ("median s_update / s_opt", lambda d: _num(median_ratio(*_overshoot(d)))),
        interval="percentile",
    ),
    Spec(
        "batch_search_poor",
        "An exact line search on the direction-defining batch performs poorly.",
        "Finally, Figure 6 suggests that exact line searches on the mini-batch loss perform "
        "poorly.",
        "§5, Fig. 6",
        "share of the optimum's accumulated improvement reached by the minimum of l_B",
        _impr("exact_batch", "optimal"),
        share,
        Range(None, 1.0),
        None,
        0.75,
        '"perform poorly" (Fig. 6)',
    ),
    Spec(
        "proportional",
        "The step to the minimum is proportional to the update's norm.",
        "This is because the step to the minimum of the full-batch loss s_opt is almost "
        "proportional to the directional derivative (−||g||) of the direction defining "
        "mini-batch loss.",
        "§5, Fig. 6 (lower right)",
        "least-squares slope of log s_opt on log ‖m_t‖ over lines (s_opt > 0), within each "
        "run: 1 is proportional, 0 no relation",
        lambda d: (_positive_s_opt(d), d.col("direction_norm"), _run_id(d)),
        loglog_slope,
        Range(None, None),
        0.5,
        1.5,
        "s_opt/‖g‖ ≈ 0.05, about constant, noisier late in training",
        _stat_of("median λ*_t = s_opt/‖m_t‖", median_ratio, "s_opt", "direction_norm"),
        interval="percentile",
    ),
    Spec(
        "norm_explains",
        "Scaling the step with ‖m_t‖ beats one constant step length.",
        "This almost proportional behavior explains why a constant learning rate can lead to "
        "a good performance, since it is sufficient to control the update step size with the "
        "norm of the noisy mini-batch gradient.",
        "§5",
        "share of the optimum reached at the constant rate λ*·‖m_t‖ minus the share reached "
        "at the constant step length median_t s_opt (both in-sample, the same lines)",
        _impr("lambda_star_in", "step_star_in", "optimal"),
        share_gain,
        Range(None, None),
        0.0,
        None,
        "not reported as a number",
    ),
    Spec(
        "batch_size",
        "A k× larger batch divides |δ| by k: a larger batch acts like a smaller rate "
        "(simulated from the stored rows).",
        "For batch size 32 to 256 the assumption that if the batch size is increased by a "
        "factor, then the update step size decreases by the same factor, is valid during the "
        "whole training.",
        "§6, Fig. 7",
        "largest |median_t (δ_bs/δ_B)/(B/bs) − 1| over batch sizes B/4 … 2B simulated from "
        "the stored rows with the trajectory held fixed (as the paper's §6), not trained",
        _plain_sgd_delta,
        worst_ratio,
        Range(0.0, None),
        None,
        0.25,
        "δ ratio = 128/bs for bs 32 … 256 over the whole training (plain SGD only)",
        interval="percentile",
    ),
    Spec(
        "curvature_falls",
        "The parabolas' curvature decreases during training.",
        "In addition, we can see that the curvature of the fitted parabolas (i.e., the second "
        "directional derivative) decreases during training.",
        "§4, Fig. 4",
        "median curvature a of the last third of a run's lines over that of its first third",
        lambda d: (d.col("curvature"), d.col("position")),
        late_over_early,
        Range(None, None),
        None,
        0.8,
        "decreasing (Fig. 4), after a rapid rise over the very first steps",
        _stat_of("median curvature a", median, "curvature"),
    ),
)
"""The claims, as the paper states them (``docs/analysis.md`` gives each threshold's reason)."""


# ---------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Claim:
    """One claim judged on one run or pooled over runs (a record of ``claims.json``).

    Attributes:
        key, claim, quote, figure, metric, threshold, paper, unit: From its :class:`Spec`.
        value: The statistic on the data (None: not computed).
        low, high: Its interval at ``level`` (inside ``range``).
        level: The interval's level (after a family correction).
        range: ``[lo, hi]`` of the values the statistic can take (None: open).
        verdict: One of ``holds``, ``does not hold``, ``inconclusive``, ``not applicable``.
        reason: Why the verdict (always filled).
        n: Independent units behind the value (lines, line pairs or noisy steps).
        runs: Runs pooled.
        p_holds, p_fails: Bootstrap p-values of "holds" and "does not hold".
        quantity: The paper's quantity on this run: ``{name, value}`` (value per run when
            pooled).
        per_run: Each run's own ``{run, verdict, value, low, high, n, reason}``.
    """

    key: str
    claim: str
    quote: str
    figure: str
    metric: str
    threshold: str
    paper: str
    unit: str
    value: float | None
    low: float | None
    high: float | None
    level: float
    range: list[float | None]
    verdict: str
    reason: str
    n: int
    runs: int
    p_holds: float | None = None
    p_fails: float | None = None
    quantity: dict[str, Any] | None = None
    per_run: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """Plain dict for ``claims.json``."""
        return asdict(self)


@dataclass
class _Judged:
    value: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p_holds: float = 1.0
    p_fails: float = 1.0
    n: int = 0
    verdict: str = "inconclusive"
    reason: str = ""
    testable: bool = False
    res: Resampled | None = None


def _judge(spec: Spec, runs: Sequence[ClaimData], resamples: int, seed: int) -> _Judged:
    """Value, replicates and p-values of one claim on ``runs`` (no verdict yet)."""
    cols = [spec.columns(d) for d in runs]
    why_not = next((c for c in cols if isinstance(c, str)), None)
    if why_not is not None:
        return _Judged(verdict="not applicable", reason=why_not)
    values = [np.asarray(c[0][0] if isinstance(c[0], tuple) else c[0]) for c in cols]
    n = int(sum(np.sum(np.isfinite(v)) for v in values))
    res = resample(
        cols,  # type: ignore[arg-type]
        spec.stat,
        value_range=spec.range,
        resamples=resamples,
        seed=seed,
        blocks=spec.unit == "lines",
    )
    out = _Judged(value=res.estimate, n=n, res=res)
    need = MIN_UNITS[spec.unit]
    if resamples < 1:
        out.reason = "no interval: the bootstrap was switched off"
    elif n < need:
        unit = spec.unit if n != 1 else spec.unit.rstrip("s").replace("lines", "line")
        out.reason = f"only {n} {unit} (needs ≥ {need})"
    elif len(runs) > 1 and len(runs) < MIN_UNITS["runs"]:
        out.reason = f"only {len(runs)} runs pooled (needs ≥ {MIN_UNITS['runs']})"
    elif not math.isfinite(res.estimate) or res.replicates.size == 0:
        out.reason = "the statistic could not be computed on this run"
    else:
        out.testable = True
        out.p_holds, out.p_fails = _p_values(spec, res)
    return out


def _p_values(spec: Spec, res: Resampled) -> tuple[float, float]:
    """``(p_holds, p_fails)``: bootstrap p-values of the statistic on each side."""
    holds, fails = [], []
    if spec.above is not None:
        holds.append(res.p_above(spec.above, spec.interval))
        fails.append(res.p_below(spec.above, spec.interval))
    if spec.below is not None:
        holds.append(res.p_below(spec.below, spec.interval))
        fails.append(res.p_above(spec.below, spec.interval))
    return max(holds), min(fails)


def _decide(spec: Spec, j: _Judged, level: float) -> None:
    """Interval at ``level`` and the verdict it gives (module docstring)."""
    if j.res is not None:
        j.low, j.high = j.res.interval(level, spec.interval)
    if not j.testable:
        j.reason = j.reason or "the statistic could not be computed"
        return
    lo, hi = j.low, j.high
    span = f"[{_g(lo)}, {_g(hi)}]"
    above = spec.above if spec.above is not None else -math.inf
    below = spec.below if spec.below is not None else math.inf
    if lo >= above and hi <= below:
        j.verdict, j.reason = "holds", f"the interval {span} lies {spec.threshold}"
    elif hi < above or lo > below:
        j.verdict, j.reason = "does not hold", f"the interval {span} misses {spec.threshold}"
    else:
        j.verdict, j.reason = "inconclusive", f"the interval {span} straddles {spec.threshold}"


def _holm(judged: list[tuple[Spec, _Judged]], alpha: float) -> None:
    """Holm's step-down verdicts on the two-sided p-values ``2·min(p_holds, p_fails)``."""
    tested = sorted(
        (x for x in judged if x[1].testable), key=lambda x: min(x[1].p_holds, x[1].p_fails)
    )
    m, stopped = len(tested), False
    for i, (spec, j) in enumerate(tested):
        p = min(1.0, 2.0 * min(j.p_holds, j.p_fails))
        bound = alpha / (m - i)
        if not stopped and p <= bound:
            j.verdict = "holds" if j.p_holds < j.p_fails else "does not hold"
            j.reason = f"Holm: p = {_g(p)} ≤ {_g(bound)} ({spec.threshold})"
        else:
            stopped = True
            j.verdict = "inconclusive"
            j.reason = f"Holm: p = {_g(p)} > {_g(bound)} ({spec.threshold})"


def _judge_all(
    runs: Sequence[ClaimData], resamples: int, level: float, family: str, seed: int
) -> tuple[list[tuple[Spec, _Judged]], float]:
    judged = [(s, _judge(s, runs, resamples, seed + k)) for k, s in enumerate(CLAIMS)]
    m = max(1, sum(j.testable for _, j in judged))
    alpha = 1.0 - level
    used = 1.0 - alpha / m if family == "bonferroni" else level
    for spec, j in judged:
        _decide(spec, j, used)
    if family == "holm":
        _holm(judged, alpha)
    return judged, used


def evaluate_claims(
    runs: Sequence[ClaimData],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    family: str = "none",
    seed: int = 0,
) -> list[Claim]:
    """Every claim of :data:`CLAIMS` judged on one run, or pooled over several.

    Args:
        runs: One run's data, or several runs of one setup (seeds) to pool.
        resamples: Bootstrap resamples per claim (0: no intervals, nothing judged).
        level: Level of each interval before the family correction.
        family: ``none``, ``bonferroni`` or ``holm`` (module docstring).
        seed: Seed of the resampling (results are reproducible).

    Returns:
        One :class:`Claim` per entry of :data:`CLAIMS`, in that order; ``per_run`` holds each
        run's own verdict (judged alone, with the same family rule).

    Raises:
        ValueError: No run, or an unknown ``family``.
    """
    if not runs:
        raise ValueError("no run to judge")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    pooled, used = _judge_all(runs, resamples, level, family, seed)
    singles = [_judge_all([d], resamples, level, family, seed)[0] for d in runs]
    out = []
    for k, (spec, j) in enumerate(pooled):
        own = [(d, s[k][1]) for d, s in zip(runs, singles)]
        if len(runs) > 1:
            _reconcile(j, [x for _, x in own], [d.name for d in runs])
        per_run = [
            {
                "run": d.name,
                "verdict": x.verdict,
                "value": _opt(x.value),
                "low": _opt(x.low),
                "high": _opt(x.high),
                "n": x.n,
                "reason": x.reason,
            }
            for d, x in own
        ]
        out.append(
            Claim(
                key=spec.key,
                claim=spec.claim,
                quote=spec.quote,
                figure=spec.figure,
                metric=spec.metric,
                threshold=spec.threshold,
                paper=spec.paper,
                unit=spec.unit,
                value=_opt(j.value),
                low=_opt(j.low),
                high=_opt(j.high),
                level=used,
                range=spec.range.to_json(),
                verdict=j.verdict,
                reason=j.reason,
                n=j.n,
                runs=len(runs),
                p_holds=_opt(j.p_holds) if j.testable else None,
                p_fails=_opt(j.p_fails) if j.testable else None,
                quantity=_quantity(spec, runs),
                per_run=per_run,
            )
        )
    return out


def _reconcile(j: _Judged, own: list[_Judged], names: list[str]) -> None:
    """A pooled verdict never contradicts a run's own: the runs then disagree."""
    if j.verdict not in ("holds", "does not hold"):
        return
    other = "does not hold" if j.verdict == "holds" else "holds"
    against = [n for n, x in zip(names, own) if x.verdict == other]
    if against:
        j.verdict = "inconclusive"
        j.reason = f"the runs disagree: {', '.join(against)} alone: {other} ({j.reason})"


def _quantity(spec: Spec, runs: Sequence[ClaimData]) -> dict[str, Any] | None:
    if spec.quantity is None:
        return None
    name, fn = spec.quantity
    values, floors = [], []
    for d in runs:
        try:
            values.append(fn(d))
        except (KeyError, ValueError):
            values.append(None)
        floors.append(_num(median(d.columns.get("floor", _NONE))))
    one = len(runs) == 1
    out = {"name": name, "paper": spec.paper, "value": values[0] if one else values}
    if spec.floor:  # the MAE measurement noise alone puts between two lines
        out["noise_floor"] = floors[0] if one else floors
    return out


def family_note(claims: Sequence[Claim | dict[str, Any]], family: str, level: float) -> str:
    """How many claims were judged at which level, in one sentence (the report says it)."""
    rows = [c.to_json() if isinstance(c, Claim) else c for c in claims]
    judged = [c for c in rows if c["verdict"] in ("holds", "does not hold", "inconclusive")]
    m = sum(c.get("p_holds") is not None for c in judged)
    each = rows[0]["level"] if rows else level
    if m == 0:
        asked = {"bonferroni": " (Bonferroni asked for)", "holm": " (Holm asked for)"}
        return (
            "0 claims judged: each lacks units or does not apply to this run"
            f"{asked.get(family, '')}."
        )
    if family == "bonferroni":
        how = (
            f"each interval at {each:.4g} (Bonferroni), so that all {m} hold together at {level:g}"
        )
    elif family == "holm":
        how = f"verdicts by Holm's step-down rule, all {m} together at {level:g}"
    else:
        how = (
            f"each at {level:g} on its own: among {m} true claims about "
            f"{m * (1 - level) / 2:.1f} would be called 'does not hold' by chance; "
            "--family holm or bonferroni judges them together"
        )
    return f"{m} claims judged; {how}."


def _g(x: float) -> str:
    return f"{x:.3g}"


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
