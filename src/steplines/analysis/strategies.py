"""Per-line step-size strategies and their metrics (docs/method.md §6.3–§6.5, §6.9).

Every function here works on plain numpy arrays (rows = lines, columns = positions, NaN-padded
beyond each line's measured positions, as :meth:`steplines.store.LineStore.read_summary` returns
them). Positive positions ``s`` point along the update, so SGD's step is ``s_update``.

Two modes (``docs/analysis.md``, docs/method.md §10):

* ``corrected`` (default): the line is evaluated by **linear interpolation** between measured
  positions; PAL reads ``l(µ)`` at exactly ``µ``; δ of the direction batch is the exact
  directional derivative ``g_t·d_t`` stored by the measurement (every optimizer); the
  finite-difference stencil never uses the inserted ``s_update`` column; the FBPAL&SGD refresh
  schedule is keyed to the step index ``t``; the momentum proxy ``D_t`` uses the run's β.
* ``faithful``: the original code's behaviour: nearest-grid evaluation (docs/method.md §9.24), PAL
  reads ``l`` at the grid point nearest µ but uses µ in the formula (§9.20), δ of the direction
  batch is ``−‖g_t‖`` for β = 0 and a finite difference otherwise (§9.21), the stencil takes the
  five measured positions around 0 whatever they are, FBPAL&SGD is keyed to the file index (§9.23,
  §9.27), ``D_t`` uses the hard-coded 0.9 (§9.22).

This module never imports torch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from steplines.analysis.lines import SummaryLines
from steplines.analysis.settings import AnalysisSettings

__all__ = [
    "FbpalSgd",
    "MomentumProxy",
    "RunningMedian",
    "accumulate",
    "batch_delta",
    "coefficient_of_variation",
    "constant_rate_steps",
    "evaluate_line",
    "fbpal_sgd_steps",
    "fd_derivative_curvature",
    "fd_weights",
    "first_argmin",
    "line_quantities",
    "momentum_proxy",
    "moving_average",
    "pal_step",
    "rate_ratios",
    "running_median",
    "sgd_lambda_steps",
    "stencil_columns",
    "strategy_metrics",
    "strategy_steps",
]

# ---------------------------------------------------------------------- finite differences


def fd_weights(x: Sequence[float]) -> np.ndarray:
    """Weights of numpy's second-order non-uniform central difference at the middle point.

    For ``x = (x₋, x₀, x₊)`` with ``h₋ = x₀ − x₋`` and ``h₊ = x₊ − x₀`` (``np.gradient``,
    interior points)::

        f'(x₀) ≈ −h₊/(h₋(h₋+h₊))·f(x₋) + (h₊−h₋)/(h₋h₊)·f(x₀) + h₋/(h₊(h₋+h₊))·f(x₊)

    On the paper grid (−0.002, 0, 0.006) these are (−375, 333.33…, 41.66…) (docs/method.md §6.3
    item 5). The stencil is exact for parabolas.

    Args:
        x: Three increasing positions.

    Returns:
        float64 ``[3]`` weights.
    """
    xm, x0, xp = (float(v) for v in x)
    hm, hp = x0 - xm, xp - x0
    return np.array([-hp / (hm * (hm + hp)), (hp - hm) / (hm * hp), hm / (hp * (hm + hp))])


def stencil_columns(
    positions: np.ndarray, zero_index: int, update_index: int, *, faithful: bool = False
) -> np.ndarray | None:
    """Columns of the five measured positions around ``s = 0`` (docs/method.md §6.3 item 5).

    Faithful: the two neighbours on each side of the zero column, whatever they are (the
    inserted ``s_update`` point included when it falls there). Corrected: the same, but the
    ``s_update`` column is skipped (unless it is the zero column), so the stencil always uses
    the regular grid and a point very close to 0 cannot blow up the estimate.

    Args:
        positions: float ``[K]`` positions of one line (NaN-padded, sorted).
        zero_index: Column of ``s = 0`` (−1: not measured).
        update_index: Column of ``s_update`` (−1: absent).
        faithful: The original code's rule (docs/method.md §10), not the corrected one.

    Returns:
        int ``[5]`` column indices (centre = zero column), or None when 0 is not measured or
        there are fewer than two usable positions on one side.
    """
    if zero_index < 0:
        return None
    cols = np.flatnonzero(np.isfinite(positions))
    if not faithful and update_index >= 0 and update_index != zero_index:
        cols = cols[cols != update_index]
    where = np.searchsorted(cols, zero_index)
    if where >= cols.size or cols[where] != zero_index or where < 2 or where + 2 >= cols.size:
        return None
    return cols[where - 2 : where + 3]


def fd_derivative_curvature(x5: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite-difference slope and curvature at the centre of a 5-point stencil
    (docs/method.md §6.3.5).

    ``g = np.gradient(values, x5)`` (second-order non-uniform central differences, first-order
    one-sided at the two ends); slope = ``g[2]`` (uses only ``x5[1:4]``, weights of
    :func:`fd_weights`); curvature = ``np.gradient(g, x5)[2]`` (uses ``g[1:4]``, all interior,
    so it is exact for parabolas: 2a for ``a s² + b s + c``).

    Args:
        x5: float ``[5]`` increasing positions, centre = 0.
        values: ``[..., 5]`` loss values at ``x5`` (any leading shape, e.g. per-sample rows).

    Returns:
        ``(slope, curvature)``, each of the leading shape of ``values``.
    """
    x5 = np.asarray(x5, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    g = np.gradient(values, x5, axis=-1)
    c = np.gradient(g, x5, axis=-1)
    return g[..., 2], c[..., 2]


# ---------------------------------------------------------------------- evaluating a line


def first_argmin(positions: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Position and value of the first minimum of a measured line over all its positions.

    ``s_opt`` of docs/method.md §6.3 item 4 (numpy's ``argmin``: the first of equal minima).

    Returns:
        ``(s_min, l_min)``; NaNs when the line has no finite value.
    """
    ok = np.isfinite(positions) & np.isfinite(values)
    if not ok.any():
        return float("nan"), float("nan")
    p, v = positions[ok], values[ok]
    i = int(np.argmin(v))
    return float(p[i]), float(v[i])


def evaluate_line(
    positions: np.ndarray, values: np.ndarray, s: np.ndarray | float, *, faithful: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate one measured line at steps ``s`` (docs/method.md §6.3 "Metrics", §9.24).

    Corrected: piecewise-linear interpolation between measured positions. Faithful: the value
    at the nearest measured position (first of two equidistant ones). In both modes a step
    outside ``[min s, max s]`` is clipped to the border (no extrapolation) and flagged.

    Args:
        positions: float ``[K]`` positions (NaN-padded, sorted).
        values: float ``[K]`` loss values at ``positions``.
        s: Step(s) to evaluate; NaN steps give NaN.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.

    Returns:
        ``(l(s), clipped)``: float64 and bool arrays of the shape of ``s``.
    """
    s = np.asarray(s, dtype=np.float64)
    ok = np.isfinite(positions) & np.isfinite(values)
    p, v = positions[ok], values[ok]
    if p.size == 0:
        return np.full(s.shape, np.nan), np.zeros(s.shape, bool)
    finite = np.isfinite(s)
    clipped = finite & ((s < p[0]) | (s > p[-1]))
    sc = np.clip(np.where(finite, s, 0.0), p[0], p[-1])
    if not faithful:
        out = np.interp(sc, p, v)
    else:
        idx = np.argmin(np.abs(p[None, :] - np.atleast_1d(sc)[:, None]), axis=1)
        out = v[idx].reshape(sc.shape)
    return np.where(finite, out, np.nan), clipped


def pal_step(l0: np.ndarray, l_mu: np.ndarray, b: np.ndarray, mu: float) -> np.ndarray:
    """PAL's step from a parabola through l(0), slope b and l(µ) (docs/method.md §6.3).

    ``a = (l(µ) − l(0) − b·µ)/µ²``; step = ``−b/(2a)`` if ``a > 0`` and ``b < 0``; ``µ`` if
    ``a ≤ 0`` and ``b < 0``; 0 otherwise (no adaptation factor, no cap; docs/method.md §4, §9.20).
    For an exact parabola ``a s² + b s + c`` this is the minimiser ``−b/(2a)``.

    Args:
        l0: Loss at 0.
        l_mu: Loss at µ (corrected) or at the grid point nearest µ (faithful).
        b: Slope at 0.
        mu: The µ used in the formula.

    Returns:
        float64 steps, broadcast shape of the inputs; NaN where an input is NaN.
    """
    l0, l_mu, b = (np.asarray(x, dtype=np.float64) for x in (l0, l_mu, b))
    a = (l_mu - l0 - b * mu) / mu**2
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -b / (2.0 * a)
    step = np.where(b < 0, np.where(a > 0, vertex, mu), 0.0)
    return np.where(np.isfinite(l0) & np.isfinite(l_mu) & np.isfinite(b), step, np.nan)


FBPAL_SGD_REFRESH = 100
"""FBPAL&SGD refreshes its step at every line ``n ≡ 0 (mod FBPAL_SGD_REFRESH)`` (and at 0, 1)."""
FBPAL_SGD_HISTORY = 15
"""… using the mean of the last ``FBPAL_SGD_HISTORY`` refreshed FBPAL steps (from n ≥ 100)."""

# The rules that combine several lines (FBPAL&SGD, the momentum proxy D_t, the out-of-sample
# λ*) exist once, as a state taking one line at a time: the point estimate runs them over its
# [T] arrays (one column), the bootstrap (steplines.analysis.bootstrap) streams its lines
# through them with one column per replicate. Each column follows the scalar rule exactly.


class FbpalSgd:
    """FBPAL&SGD's rule, one line at a time, for ``width`` independent columns.

    :meth:`step` takes the lines in the order of the analysed lines; see
    :func:`fbpal_sgd_steps` for the rule. Column ``j`` of the result depends only on column
    ``j`` of the FBPAL steps given.
    """

    def __init__(self, width: int = 1, *, faithful: bool = False) -> None:
        self.faithful = faithful
        self.value = np.full(width, np.nan)
        self.block = -1
        self.history: list[list[float]] = [[] for _ in range(width)]
        self.has_history = np.zeros(width, bool)

    def step(self, t: int, index: int, fbpal: np.ndarray | float) -> np.ndarray:
        """The step of line ``t`` (``index`` in the analysed lines) from its FBPAL steps.

        Args:
            t: The line's step index (the key in corrected mode).
            index: Its position among the analysed lines (the key in faithful mode).
            fbpal: float ``[width]`` (a number for width 1): the line's FBPAL steps.

        Returns:
            float64 ``[width]``: the FBPAL&SGD step of each column (a copy).
        """
        n = int(index) if self.faithful else int(t)
        r = np.asarray(fbpal, dtype=np.float64).reshape(self.value.shape)
        block, previous = n // FBPAL_SGD_REFRESH, self.block
        self.block = block
        corrected = not self.faithful
        # corrected also refreshes at a new block whose refresh line is missing, and while a
        # column has no step
        if n in (0, 1) or n % FBPAL_SGD_REFRESH == 0 or (corrected and block != previous):
            refresh = np.ones(r.shape, bool)
        else:
            refresh = ~np.isfinite(self.value) if corrected else np.zeros(r.shape, bool)
            if not refresh.any():
                return self.value.copy()
        if n < FBPAL_SGD_REFRESH:
            self.value = np.where(refresh, r, self.value)
            return self.value.copy()
        for j in np.flatnonzero(refresh & np.isfinite(r)):
            history = self.history[j]
            history.append(float(r[j]))
            self.value[j] = float(np.mean(history[-FBPAL_SGD_HISTORY:]))
            self.has_history[j] = True
        # a refresh that appends nothing keeps the mean it holds; no history yet: r itself
        self.value = np.where(refresh & ~self.has_history, r, self.value)
        return self.value.copy()


def fbpal_sgd_steps(lines: np.ndarray, fbpal: np.ndarray, *, faithful: bool = False) -> np.ndarray:
    """FBPAL&SGD ("apal"): a constant step length refreshed from FBPAL (docs/method.md §6.3, §9.23).

    Keyed by the line number ``n`` (faithful: the position in the list of analysed lines;
    corrected: the step index ``t``). A refresh happens at ``n = 0``, ``n = 1`` and at every
    ``n ≡ 0 (mod 100)``; corrected mode also refreshes at the first analysed line of every
    block of 100 steps when its refresh line is missing. At a refresh the current FBPAL step
    ``r`` is taken; for ``n ≥ 100`` it is appended to a history and the mean of the last
    ≤ 15 history entries is used. Between refreshes the last value is reused. The result is a
    step length, not a learning rate (as in the original). One line at a time: :class:`FbpalSgd`.

    Args:
        lines: int ``[T]`` step indices of the analysed lines, ascending.
        fbpal: float ``[T]`` FBPAL steps of these lines.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.

    Returns:
        float64 ``[T]`` steps.
    """
    rule = FbpalSgd(faithful=faithful)
    out = np.full(len(lines), np.nan)
    for i, t in enumerate(lines):
        out[i] = rule.step(int(t), i, fbpal[i])[0]
    return out


class MomentumProxy:
    """The momentum proxy's recursion, one line at a time (see :func:`momentum_proxy`).

    Works on numbers or on arrays of any shape (one recursion per element).
    """

    def __init__(self, beta: float, *, faithful: bool = False) -> None:
        self.beta, self.faithful = beta, faithful
        self.acc: np.ndarray = np.full((), np.nan)
        self.prev: int | None = None

    def step(self, t: int, delta: np.ndarray | float) -> np.ndarray:
        """``D_t`` after line ``t`` with directional derivative(s) ``delta`` (a fresh array)."""
        d = np.array(delta, dtype=np.float64)
        if self.prev is None:
            self.acc = d
        else:
            gap = 1 if self.faithful else int(t) - self.prev
            self.acc = np.asarray(self.beta**gap * self.acc + d)
        self.prev = int(t)
        return self.acc.copy()


def momentum_proxy(
    lines: np.ndarray, delta: np.ndarray, beta: float, *, faithful: bool = False
) -> np.ndarray:
    """Accumulated directional derivative D_t = β·D_{t−1} + δ_t, D_{−1} = 0 (docs/method.md §6.9).

    A scalar proxy for ``−‖m_t‖`` built from slopes of different lines. Faithful: recursion
    over the analysed lines in order (gaps ignored). Corrected: a gap of ``Δt`` steps decays
    the previous value by ``β^Δt`` (the missing terms are unknown and left out). One line at
    a time: :class:`MomentumProxy`.

    Args:
        lines: int ``[T]`` step indices, ascending.
        delta: float ``[T]`` directional derivatives δ_t.
        beta: Momentum β (faithful callers pass the original's hard-coded 0.9).
        faithful: The original code's rule (docs/method.md §10), not the corrected one.

    Returns:
        float64 ``[T]``.
    """
    rule = MomentumProxy(beta, faithful=faithful)
    out = np.empty(len(delta))
    for i, (t, d) in enumerate(zip(lines, delta)):
        out[i] = rule.step(int(t), d)
    return out


def sgd_lambda_steps(
    lambdas: Sequence[float], delta: np.ndarray | None, accum: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """SGD λ's steps ``−λ·δ_B`` (``sgd_lambda_<λ>``) and ``−λ·D_t`` (``sgd_lambda_<λ>_accum``).

    Args:
        lambdas: The rates λ.
        delta: δ_B (None: no ``sgd_lambda_<λ>``).
        accum: The momentum proxy ``D_t`` (None: no ``…_accum``).

    Returns:
        Name → steps, for each λ in turn its plain step then its ``_accum`` one.
    """
    out: dict[str, np.ndarray] = {}
    for lam in lambdas:
        if delta is not None:
            out[f"sgd_lambda_{lam:g}"] = -lam * delta
        if accum is not None:
            out[f"sgd_lambda_{lam:g}_accum"] = -lam * accum
    return out


# ---------------------------------------------------------------------- series helpers


def moving_average(x: np.ndarray, window: int = 25, *, faithful: bool = False) -> np.ndarray:
    """Box-kernel moving average (docs/method.md §6.4, §9.25).

    Faithful: ``np.convolve(x, ones(w)/w, "valid")`` (length ``T − w + 1``; entry ``k`` is the
    mean of ``x[k:k+w]``, so plotting it at ``k`` shifts the curve by ``(w−1)/2`` lines).
    Corrected: centred and length-preserving: entry ``k`` is the mean of the finite values of
    ``x[k−h : k+h+1]``, ``h = w // 2`` (the window shrinks at the ends; NaNs are skipped).

    Args:
        x: float ``[T]`` series.
        window: Kernel length ``w``.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.

    Returns:
        The smoothed series.
    """
    x = np.asarray(x, dtype=np.float64)
    if faithful:
        if x.size < window:
            return np.empty(0)
        return np.convolve(x, np.ones(window) / window, mode="valid")
    h = window // 2
    ok = np.isfinite(x)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(x.size)
    lo, hi = np.clip(idx - h, 0, x.size), np.clip(idx + h + 1, 0, x.size)
    cnt = ccnt[hi] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (csum[hi] - csum[lo]) / cnt, np.nan)


def accumulate(x: np.ndarray, absolute: bool = False) -> np.ndarray:
    """Cumulative sum (docs/method.md §6.4): improvements as they are, distances as |·|; NaN = 0."""
    x = np.asarray(x, dtype=np.float64)
    if absolute:
        x = np.abs(x)
    return np.cumsum(np.where(np.isfinite(x), x, 0.0))


def coefficient_of_variation(x: np.ndarray) -> float:
    """``std(x)/|mean(x)|`` over the finite values (NaN if fewer than 2)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2 or np.mean(x) == 0:
        return float("nan")
    return float(np.std(x) / abs(np.mean(x)))


# ---------------------------------------------------------------------- per-line tables


def line_quantities(sl: SummaryLines, *, faithful: bool = False) -> dict[str, np.ndarray]:
    """Per-line quantities of docs/method.md §6.3 items 4–5 (bs = B, the measured direction batch).

    ``s_opt``/``l_min``: first minimum of the metric full-batch line ``l`` over all measured
    positions; ``l0 = l(0)``; ``s_batch_min``: first minimum of ``l_B``; ``delta_fd_*`` and
    ``curvature_fd_*``: 5-point finite differences (:func:`fd_derivative_curvature`) of ``l``
    (``full``) and ``l_B`` (``batch``) at 0.

    Args:
        sl: The analysed lines.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.

    Returns:
        Dict of float64 ``[T]`` arrays.
    """
    n = len(sl)
    out = {
        k: np.full(n, np.nan)
        for k in (
            "s_opt",
            "l_min",
            "l0",
            "s_batch_min",
            "delta_fd_full",
            "curvature_fd_full",
            "delta_fd_batch",
            "curvature_fd_batch",
        )
    }
    for i in range(n):
        pos = sl.positions[i]
        out["s_opt"][i], out["l_min"][i] = first_argmin(pos, sl.metric_full[i])
        out["s_batch_min"][i], _ = first_argmin(pos, sl.batch[i])
        out["l0"][i] = evaluate_line(pos, sl.metric_full[i], 0.0, faithful=faithful)[0]
        cols = stencil_columns(
            pos, int(sl.zero_index[i]), int(sl.update_index[i]), faithful=faithful
        )
        if cols is not None:
            x5 = pos[cols]
            d, c = fd_derivative_curvature(x5, sl.metric_full[i, cols])
            out["delta_fd_full"][i], out["curvature_fd_full"][i] = d, c
            d, c = fd_derivative_curvature(x5, sl.batch[i, cols])
            out["delta_fd_batch"][i], out["curvature_fd_batch"][i] = d, c
    return out


def batch_delta(
    sl: SummaryLines, q: dict[str, np.ndarray], plain_sgd: bool, *, faithful: bool = False
) -> np.ndarray:
    """δ_B, the direction-batch slope at 0 of SGD λ and PAL (docs/method.md §6.3.5, §9.21).

    Corrected: the exact ``g_t·d_t`` stored for every line (any optimizer). Faithful: ``−‖g_t‖``
    for plain SGD (the original's exact substitution), the finite difference otherwise.
    """
    if not faithful:
        return sl.directional_derivative.copy()
    return -sl.grad_norm if plain_sgd else q["delta_fd_batch"].copy()


class RunningMedian:
    """Median of the finite values added so far, for ``width`` independent columns.

    One line at a time: :meth:`median` before :meth:`add` gives the out-of-sample estimate
    (:func:`running_median`; the bootstrap's ``lambda_star_out``, one column per replicate).
    """

    def __init__(self, width: int = 1) -> None:
        self.seen: list[list[float]] = [[] for _ in range(width)]

    def median(self) -> np.ndarray:
        """float64 ``[width]``: each column's median (NaN while it has no finite value)."""
        out = np.full(len(self.seen), np.nan)
        for j, seen in enumerate(self.seen):
            if seen:
                k = len(seen)
                out[j] = seen[k // 2] if k % 2 else 0.5 * (seen[k // 2 - 1] + seen[k // 2])
        return out

    def add(self, x: np.ndarray | float) -> None:
        """Add one value per column (a number for width 1); non-finite values are left out."""
        values = np.asarray(x, dtype=np.float64).reshape(len(self.seen)).tolist()
        for seen, v in zip(self.seen, values):
            if math.isfinite(v):
                bisect.insort(seen, v)


def running_median(x: np.ndarray) -> np.ndarray:
    """``out[i]`` = median of the finite values of ``x[:i]`` (NaN while there are none).

    The out-of-sample estimate of a per-line quantity: line ``i`` sees only lines before it
    (:class:`RunningMedian`).
    """
    rule = RunningMedian()
    out = np.full(len(x), np.nan)
    for i, v in enumerate(np.asarray(x, dtype=np.float64)):
        out[i] = rule.median()[0]
        rule.add(v)
    return out


def rate_ratios(s_opt: np.ndarray, direction_norm: np.ndarray) -> np.ndarray:
    """λ*_t = ``s_opt/‖m_t‖``: the learning rate that would have landed on ``s_opt``.

    ``‖m_t‖ = ‖u_t‖/λ_t`` is the update as applied per unit learning rate (``direction_norm``):
    ``‖g_t‖`` for plain SGD (the paper's ``s_opt/‖g‖``), the momentum buffer's norm with
    momentum, the preconditioned step for Adam. NaN where ``‖m_t‖`` is not positive.
    """
    s_opt = np.asarray(s_opt, dtype=np.float64)
    norm = np.asarray(direction_norm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, s_opt / norm, np.nan)


def constant_rate_steps(
    s_opt: np.ndarray, direction_norm: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    """The optimizer's own update at one constant learning rate λ*, without and with hindsight.

    ``step_t = λ*·‖m_t‖``, the step the run's optimizer would have taken at the constant rate
    λ* (for plain SGD ``λ*·‖g_t‖``):

    * ``lambda_star_in``: λ* = median over all analysed lines of λ*_t (:func:`rate_ratios`),
      in-sample: it has seen every line it is judged on;
    * ``lambda_star_out``: λ* of line t = median of λ*_s over the lines s < t only
      (:func:`running_median`), so no line's own minimum is used; NaN on the first line.

    Returns:
        ``(steps, λ*_in)``: dict name → float ``[T]``, and the in-sample λ*.
    """
    ratio = rate_ratios(s_opt, direction_norm)
    ok = np.isfinite(ratio)
    lam_in = float(np.median(ratio[ok])) if ok.any() else float("nan")
    norm = np.asarray(direction_norm, dtype=np.float64)
    return {
        "lambda_star_in": lam_in * norm,
        "lambda_star_out": running_median(ratio) * norm,
    }, lam_in


def strategy_steps(
    sl: SummaryLines, q: dict[str, np.ndarray], settings: AnalysisSettings
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Steps of every strategy on every line (docs/method.md §6.3, plus the constant-rate pair).

    * ``optimal``: ``s_opt``; ``exact_batch``: ``argmin l_B``; ``sgd``: ``s_update`` (the step
      as trained, any optimizer);
    * ``lambda_star_in`` / ``lambda_star_out``: :func:`constant_rate_steps`;
    * ``sgd_lambda_<λ>``: ``−λ·δ_B`` for each λ of ``settings.lambdas``; with SGD momentum also
      ``sgd_lambda_<λ>_accum``: ``−λ·D_t`` (the second reading of docs/method.md §6.9);
    * ``pal``: :func:`pal_step` on ``l_B`` with ``b = δ_B``; ``fbpal``: on ``l`` with
      ``b = δ_full`` (finite difference; there is no exact full-batch slope);
      corrected reads ``l(µ)`` by interpolation, faithful at the grid point nearest µ;
    * ``fbpal_sgd``: :func:`fbpal_sgd_steps` of the FBPAL steps.

    Returns:
        ``(steps, delta_batch, delta_accum)``: dict name → float ``[T]``; δ_B; ``D_t`` (NaN
        unless SGD with momentum). ``D_t`` uses β (corrected) or the hard-coded 0.9 (faithful).
    """
    n = len(sl)
    faithful, momentum, mu = settings.faithful, settings.momentum, settings.mu
    delta = batch_delta(sl, q, settings.optimizer.plain_sgd, faithful=faithful)
    steps: dict[str, np.ndarray] = {
        "optimal": q["s_opt"].copy(),
        "exact_batch": q["s_batch_min"].copy(),
        "sgd": sl.s_update.copy(),
    }
    accum = np.full(n, np.nan)
    if momentum > 0:
        beta = 0.9 if faithful else momentum
        accum = momentum_proxy(sl.lines, delta, beta, faithful=faithful)
    steps.update(sgd_lambda_steps(settings.lambdas, delta, accum if momentum > 0 else None))
    pal = np.full(n, np.nan)
    fbpal = np.full(n, np.nan)
    for i in range(n):
        pos = sl.positions[i]
        lb = evaluate_line(pos, sl.batch[i], np.array([0.0, mu]), faithful=faithful)[0]
        lf = evaluate_line(pos, sl.metric_full[i], np.array([0.0, mu]), faithful=faithful)[0]
        pal[i] = pal_step(lb[0], lb[1], delta[i], mu)
        fbpal[i] = pal_step(lf[0], lf[1], q["delta_fd_full"][i], mu)
    steps["pal"] = pal
    steps["fbpal"] = fbpal
    steps["fbpal_sgd"] = fbpal_sgd_steps(sl.lines, fbpal, faithful=faithful)
    steps.update(constant_rate_steps(q["s_opt"], sl.direction_norm)[0])
    return steps, delta, accum


def strategy_metrics(
    sl: SummaryLines,
    q: dict[str, np.ndarray],
    steps: dict[str, np.ndarray],
    *,
    faithful: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Distance, improvement and clip flag of every strategy (docs/method.md §6.3 "Metrics").

    ``distance = s_opt − step`` (positive: too short); ``improvement = l(0) − l(step)`` on the
    metric full-batch line, evaluated by :func:`evaluate_line` (corrected: interpolation,
    faithful: nearest position); ``clipped``: the step lay outside the measured range and was
    evaluated at the border.

    Returns:
        Dict strategy → dict with ``step, distance, improvement, clipped`` ``[T]`` arrays.
    """
    names = list(steps)
    mat = np.stack([steps[k] for k in names], axis=1)  # [T, S]
    impr = np.full(mat.shape, np.nan)
    clip = np.zeros(mat.shape, bool)
    for i in range(len(sl)):
        val, clip[i] = evaluate_line(sl.positions[i], sl.metric_full[i], mat[i], faithful=faithful)
        impr[i] = q["l0"][i] - val
    return {
        k: {
            "step": mat[:, j],
            "distance": q["s_opt"] - mat[:, j],
            "improvement": impr[:, j],
            "clipped": clip[:, j],
        }
        for j, k in enumerate(names)
    }
