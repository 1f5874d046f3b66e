"""Cheap estimators against the measured line: what a practitioner could have estimated.

For every line, each estimate is computed from information a training run has cheaply (the
direction batch, a few mini-batches, one Hessian-vector product, per-sample gradients) and set
against the measured full-batch truth. Parabolas are written ``p(s) = a·s² + b·s + c`` along the
line (``s`` = distance along the unit direction ``d_t``).

* **Cockpit α** (Schneider, Dangel & Hennig 2021): an ordinary least-squares parabola through
  four observations of the direction batch along the step, ``l_B(0)``, ``l_B(s_u)`` (measured),
  the exact slope ``g_t·d_t`` at 0 and ``∇l_B(θ_t + s_u d_t)·d_t`` at ``s_u`` (estimator input
  ``est_slope_update``); Cockpit's own fit weights them by their variances, here all weights
  are 1 and the same batch is used at both ends. Then Cockpit's rule: ``α = −1`` if ``a < 0``,
  else ``α = 2·s_u/ᾱ − 1`` with ``ᾱ = −b/a`` (``= s_u/s* − 1``, ``s* = −b/(2a)``): −1 = no
  step, 0 = the minimum, 1 = the other side at the same height. Truth: ``α_true = s_u/s_opt − 1``
  with the analysis's ``s_opt`` (first argmin of the measured full-batch line; NaN if
  ``s_opt ≤ 0``).
* **LABPAL-style parabola** (Mutschler & Zell 2021/2022, LABPAL): the full-batch loss
  approximated by the mean of the first ``n_batches`` mini-batches of the line's full batch
  (rows of ``train_losses`` in consecutive groups of ``B``, the BatchNorm batches, a fresh
  random draw per line), and PAL's parabola of it: ``b`` = the 5-point finite-difference slope
  at 0 (:func:`~steplines.analysis.strategies.fd_derivative_curvature`; LABPAL takes the exact
  gradient of those batches, which is not stored; both are exact for parabolas),
  ``a = (l̂(µ) − l̂(0) − b·µ)/µ²`` with ``l̂(µ)`` read as the analysis reads lines, step =
  :func:`~steplines.analysis.strategies.pal_step`. Truth: the degree-2 least-squares fit of the
  full-batch line on the analysis window (``fits.csv``) for ``a``, ``b``, and ``s_opt`` for the
  step.
* **Armijo backtracking as SLS** (Vaswani et al. 2019, "Painless Stochastic Gradient"): on the
  measured direction-batch line (read by :func:`~steplines.analysis.strategies.evaluate_line`),
  trial steps ``s_k = s_0·β^k`` until ``l_B(s_k) ≤ l_B(0) + c·s_k·δ`` with ``δ = g_t·d_t`` (the
  exact slope; for SGD ``d_t = −g_t/‖g_t‖`` this is SLS's ``f(θ − η g) ≤ f(θ) − c·η‖g‖²``
  with ``s = η‖g‖``); trial steps beyond the measured positions count as rejected. SLS defaults:
  ``c = 0.1``, ``β = 0.9``, first ``η = 1`` and, from line to analysed line, SLS's reset
  ``η_0 = η_prev·γ^{B/N}`` with ``γ = 2`` (its ``reset_option=1``); ``s_0 = η_0·‖g_t‖`` (the
  distance SLS's trial moves). At most 100 backtracks; ``δ ≥ 0`` gives NaN. Truth: ``s_opt``.
* **Directional curvature** ``dᵀH_B d`` by a Hessian-vector product at θ_t (estimator input
  ``est_curvature``) against ``2a`` of the full-batch degree-2 fit (and, for reference, of the
  direction batch's own degree-2 fit).
* **Simple gradient noise scale** (McCandlish et al. 2018): from per-sample gradients of the
  direction batch on every ``noise_scale_every``-th line, ``S = (1/B)Σ|g_i|²``,
  ``G² = |(1/B)Σ g_i|²``: ``tr Σ = B/(B−1)·(S − G²)``, ``|G|² = G² − tr Σ/B`` (both unbiased),
  ``B_simple = tr Σ / |G|²`` (NaN when the estimate of ``|G|²`` is not positive);
  ``b_simple_naive = tr Σ/G²`` is the biased plug-in value.

Errors: ``alpha_error = α − α_true``; steps as ratios ``step/s_opt`` (NaN unless ``s_opt > 0``);
coefficients and curvature as relative errors ``(est − truth)/|truth|``.

This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from steplines.analysis.lines import SummaryLines
from steplines.analysis.strategies import (
    evaluate_line,
    fd_derivative_curvature,
    pal_step,
    stencil_columns,
)
from steplines.store import LineRecord

__all__ = [
    "ARMIJO",
    "LABPAL_BATCHES",
    "LabpalTap",
    "armijo_step",
    "cockpit_alpha",
    "cockpit_fit",
    "estimator_columns",
    "estimator_summary",
    "labpal_parabola",
    "noise_scale",
    "sls_steps",
]

ARMIJO: dict[str, float] = {"c": 0.1, "beta": 0.9, "eta0": 1.0, "gamma": 2.0, "max_backtracks": 100}
"""SLS's defaults (Vaswani et al. 2019, ``sls`` package): Armijo constant, backtracking factor,
first step size, reset growth factor; and the backtracking limit."""

LABPAL_BATCHES = 10
"""Mini-batches averaged by the LABPAL-style estimate (fewer when the full batch has fewer)."""


# ---------------------------------------------------------------------- Cockpit α


def cockpit_fit(
    s: float, f0: float, f1: float, df0: float, df1: float
) -> tuple[float, float, float]:
    """Least-squares parabola ``(a, b, c)`` through ``p(0)=f0, p(s)=f1, p'(0)=df0, p'(s)=df1``.

    Cockpit's observation matrix with unit weights (its fit with equal variances). Exact when
    the four observations come from one parabola. NaNs when an input is not finite or
    ``s = 0``.
    """
    vals = np.array([f0, f1, df0, df1], dtype=np.float64)
    if not (np.isfinite(vals).all() and np.isfinite(s)) or s == 0:
        return float("nan"), float("nan"), float("nan")
    phi = np.array([[1.0, 0.0, 0.0], [1.0, s, s * s], [0.0, 1.0, 0.0], [0.0, 1.0, 2.0 * s]])
    c, b, a = np.linalg.lstsq(phi, vals, rcond=None)[0]
    return float(a), float(b), float(c)


def cockpit_alpha(s: float, a: float, b: float) -> float:
    """Cockpit's α of a step ``s`` on the parabola ``a s² + b s + c`` (−1 if ``a < 0``)."""
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(s)):
        return float("nan")
    if a < 0:
        return -1.0
    if b == 0:
        return float("nan")
    return float(2.0 * s / (-b / a) - 1.0)


# ---------------------------------------------------------------------- LABPAL


def labpal_parabola(
    positions: np.ndarray,
    values: np.ndarray,
    zero_index: int,
    update_index: int,
    mu: float,
    *,
    faithful: bool = False,
) -> tuple[float, float, float]:
    """PAL's parabola of an estimated line: ``(a, b, step)`` (module docstring, LABPAL item).

    Args:
        positions: float ``[k]`` positions of the line.
        values: float ``[k]`` the line (the mean of a few mini-batches).
        zero_index, update_index: columns of 0 and of ``s_update`` (stencil choice).
        mu: the measuring step µ.
        faithful: read the line at the nearest position, as the original; else interpolate.
    """
    cols = stencil_columns(positions, zero_index, update_index, faithful=faithful)
    if cols is None:
        return float("nan"), float("nan"), float("nan")
    b = float(fd_derivative_curvature(positions[cols], values[cols])[0])
    l0, l_mu = evaluate_line(positions, values, np.array([0.0, mu]), faithful=faithful)[0]
    a = (l_mu - l0 - b * mu) / mu**2
    return float(a), b, float(pal_step(l0, l_mu, b, mu))


class LabpalTap:
    """Computes the LABPAL-style parabola of each line while the records stream past.

    Wrap the ``(t, record)`` stream of the batch-size analysis with :meth:`tap` so the
    per-sample data is read once for both.

    Args:
        batch_size: B, rows per mini-batch.
        n_batches: mini-batches averaged (:data:`LABPAL_BATCHES`).
        mu: the measuring step µ.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.
    """

    def __init__(
        self, batch_size: int, n_batches: int, mu: float, *, faithful: bool = False
    ) -> None:
        self.batch_size, self.n_batches, self.mu = batch_size, n_batches, mu
        self.faithful = faithful
        self.rows: dict[int, tuple[float, float, float, int]] = {}

    def line(self, rec: LineRecord) -> tuple[float, float, float, int]:
        """``(a, b, step, batches used)`` of one line."""
        n = rec.train_losses.shape[0]
        used = min(self.n_batches, n // self.batch_size) if self.batch_size else 0
        if used == 0:
            return float("nan"), float("nan"), float("nan"), 0
        rows = rec.train_losses[: used * self.batch_size].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            est = rows.mean(axis=0)
        pos = rec.positions
        zero = np.flatnonzero(pos == 0.0)
        upd = np.flatnonzero(pos == rec.s_update)
        a, b, step = labpal_parabola(
            pos,
            est,
            int(zero[0]) if zero.size else -1,
            int(upd[0]) if upd.size else -1,
            self.mu,
            faithful=self.faithful,
        )
        return a, b, step, used

    def tap(self, records: Iterable[tuple[int, LineRecord]]) -> Iterator[tuple[int, LineRecord]]:
        """Yield the records unchanged, computing each line's parabola on the way."""
        for t, rec in records:
            self.rows[int(t)] = self.line(rec)
            yield t, rec


# ---------------------------------------------------------------------- Armijo (SLS)


def armijo_step(
    positions: np.ndarray,
    values: np.ndarray,
    delta: float,
    s0: float,
    *,
    faithful: bool = False,
    c: float = ARMIJO["c"],
    beta: float = ARMIJO["beta"],
    max_backtracks: int = int(ARMIJO["max_backtracks"]),
) -> tuple[float, int]:
    """First accepted Armijo backtracking step on a measured line: ``(step, backtracks)``.

    Trial ``s_k = s0·β^k``, ``k = 0, 1, …``; accepted when ``s_k`` lies in the measured range
    and ``l(s_k) ≤ l(0) + c·s_k·δ``. NaN (and ``max_backtracks``) when no trial is accepted,
    ``δ ≥ 0`` or an input is not finite.
    """
    if not (np.isfinite(delta) and np.isfinite(s0) and s0 > 0) or delta >= 0:
        return float("nan"), 0
    ok = np.isfinite(positions) & np.isfinite(values)
    if not ok.any():
        return float("nan"), 0
    lo, hi = float(positions[ok].min()), float(positions[ok].max())
    l0 = float(evaluate_line(positions, values, 0.0, faithful=faithful)[0])
    trials = s0 * beta ** np.arange(max_backtracks + 1)
    inside = (trials >= lo) & (trials <= hi)
    vals = evaluate_line(positions, values, trials, faithful=faithful)[0]
    accept = inside & (vals <= l0 + c * trials * delta)
    if not accept.any():
        return float("nan"), max_backtracks
    k = int(np.argmax(accept))
    return float(trials[k]), k


def sls_steps(
    sl: SummaryLines,
    n_train: int,
    batch_size: int,
    params: dict | None = None,
    *,
    faithful: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SLS's steps along the analysed lines (one reset per analysed line; module docstring).

    Returns:
        ``(steps, backtracks, eta0)``: float, int and float ``[T]``.
    """
    p = {**ARMIJO, **(params or {})}
    n = len(sl)
    steps, backs, etas = np.full(n, np.nan), np.zeros(n, np.int64), np.full(n, np.nan)
    growth = p["gamma"] ** (batch_size / n_train) if n_train else 1.0
    eta = float(p["eta0"])
    for i in range(n):
        if i > 0:
            eta *= growth
        gnorm = float(sl.grad_norm[i])
        etas[i] = eta
        steps[i], backs[i] = armijo_step(
            sl.positions[i],
            sl.batch[i],
            float(sl.directional_derivative[i]),
            eta * gnorm,
            faithful=faithful,
            c=p["c"],
            beta=p["beta"],
            max_backtracks=int(p["max_backtracks"]),
        )
        if np.isfinite(steps[i]) and gnorm > 0:
            eta = steps[i] / gnorm
    return steps, backs, etas


# ---------------------------------------------------------------------- noise scale


def noise_scale(
    sample_grad_sq: np.ndarray, batch_grad_sq: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """``tr Σ``, ``|G|²``, ``B_simple`` and the plug-in ``tr Σ/G²`` (module docstring)."""
    s = np.asarray(sample_grad_sq, np.float64)
    g2 = np.asarray(batch_grad_sq, np.float64)
    b = float(batch_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        trace = b / (b - 1.0) * (s - g2) if b > 1 else np.full(s.shape, np.nan)
        grad_sq = g2 - trace / b
        b_simple = np.where(grad_sq > 0, trace / grad_sq, np.nan)
        naive = trace / g2
    return {"trace_cov": trace, "grad_sq": grad_sq, "b_simple": b_simple, "b_simple_naive": naive}


# ---------------------------------------------------------------------- per-line table


def _rel(est: np.ndarray, truth: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(truth != 0, (est - truth) / np.abs(truth), np.nan)


def _ratio(step: np.ndarray, s_opt: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s_opt > 0, step / s_opt, np.nan)


def _column(col: int, sl: SummaryLines) -> np.ndarray:
    return np.array(
        [sl.batch[i, j] if j >= 0 else np.nan for i, j in enumerate(col)], dtype=np.float64
    )


def estimator_columns(
    sl: SummaryLines,
    inputs: dict[str, np.ndarray],
    s_opt: np.ndarray,
    fit_full: np.ndarray,
    fit_batch: np.ndarray,
    labpal: dict[int, tuple[float, float, float, int]],
    *,
    faithful: bool = False,
    n_train: int,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Columns of ``estimators.csv`` (one row per analysed line; ``docs/analysis.md``).

    Args:
        sl: the analysed lines.
        inputs: the store's ``est_*`` ``[T]`` estimator-input arrays, rows of ``sl`` (NaN: not
            measured).
        s_opt: float ``[T]`` the analysis's ``s_opt``.
        fit_full, fit_batch: float ``[T, 3]`` degree-2 fit coefficients ``(c0, c1, c2)`` of the
            full-batch and the direction-batch line on the analysis window.
        labpal: line → :meth:`LabpalTap.line` output.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.
        n_train: N, training rows per line (SLS's reset uses ``B/N``).
        batch_size: B.
    """
    n = len(sl)
    s_u = sl.s_update
    f0 = _column(sl.zero_index, sl)
    f1 = _column(sl.update_index, sl)
    slope1 = inputs["est_slope_update"]
    ca, cb, alpha = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        ca[i], cb[i], _ = cockpit_fit(s_u[i], f0[i], f1[i], sl.directional_derivative[i], slope1[i])
        alpha[i] = cockpit_alpha(s_u[i], ca[i], cb[i])
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha_true = np.where(s_opt > 0, s_u / s_opt - 1.0, np.nan)
    lab = np.array([labpal.get(int(t), (np.nan,) * 3 + (0,)) for t in sl.lines], np.float64)
    lab = lab.reshape(n, 4)
    armijo, backs, eta0 = sls_steps(sl, n_train, batch_size, faithful=faithful)
    curv = inputs["est_curvature"]
    ns = noise_scale(inputs["est_sample_grad_sq"], inputs["est_batch_grad_sq"], batch_size)
    fit_a, fit_b = fit_full[:, 2], fit_full[:, 1]
    return {
        "line": sl.lines,
        "s_update": s_u,
        "s_opt": s_opt,
        "alpha_cockpit": alpha,
        "alpha_true": alpha_true,
        "alpha_error": alpha - alpha_true,
        "cockpit_a": ca,
        "cockpit_b": cb,
        "labpal_a": lab[:, 0],
        "labpal_b": lab[:, 1],
        "labpal_step": lab[:, 2],
        "labpal_batches": lab[:, 3].astype(np.int64),
        "fit_a": fit_a,
        "fit_b": fit_b,
        "labpal_a_rel_error": _rel(lab[:, 0], fit_a),
        "labpal_b_rel_error": _rel(lab[:, 1], fit_b),
        "labpal_step_ratio": _ratio(lab[:, 2], s_opt),
        "armijo_step": armijo,
        "armijo_backtracks": backs,
        "armijo_eta0": eta0,
        "armijo_step_ratio": _ratio(armijo, s_opt),
        "curvature_hvp": curv,
        "curvature_fit_full": 2.0 * fit_a,
        "curvature_fit_batch": 2.0 * fit_batch[:, 2],
        "curvature_rel_error": _rel(curv, 2.0 * fit_a),
        "curvature_rel_error_batch": _rel(curv, 2.0 * fit_batch[:, 2]),
        **ns,
    }


def _quantiles(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "median": None, "q10": None, "q25": None, "q75": None, "q90": None}
    q10, q25, med, q75, q90 = np.percentile(x, [10, 25, 50, 75, 90])
    return {
        "n": int(x.size),
        "median": float(med),
        "q10": float(q10),
        "q25": float(q25),
        "q75": float(q75),
        "q90": float(q90),
    }


ERROR_COLUMNS: dict[str, str] = {
    "alpha_error": "Cockpit α − α of the measured full-batch line",
    "labpal_a_rel_error": "LABPAL-style a vs full-batch fit a (relative)",
    "labpal_step_ratio": "LABPAL-style step / s_opt",
    "armijo_step_ratio": "Armijo (SLS) step on l_B / s_opt",
    "curvature_rel_error": "dᵀH_B d vs 2a of the full-batch fit (relative)",
}
"""The error columns summarised in ``summary.json`` and drawn by the report."""


def estimator_summary(table: dict[str, np.ndarray], batch_size: int) -> dict[str, Any]:
    """The ``estimators`` block of ``summary.json``: quantiles of every error, B_simple.

    ``measured`` says whether the store had the estimator inputs (schema version ≥ 2 and
    ``measure.estimators``); Cockpit α, dᵀHd and B_simple need them, LABPAL and Armijo do not.
    """
    est_measured = bool(np.isfinite(table["curvature_hvp"]).any())
    out: dict[str, Any] = {
        "measured": est_measured,
        "noise_scale_measured": bool(np.isfinite(table["b_simple_naive"]).any()),
        "armijo": dict(ARMIJO),
        "labpal_batches": int(np.max(table["labpal_batches"])) if len(table["line"]) else 0,
        "errors": {name: _quantiles(table[name]) for name in ERROR_COLUMNS},
        "alpha_cockpit": _quantiles(table["alpha_cockpit"]),
        "alpha_true": _quantiles(table["alpha_true"]),
        "b_simple": _quantiles(table["b_simple"]),
        "b_simple_naive": _quantiles(table["b_simple_naive"]),
        "batch_size": int(batch_size),
    }
    return out
