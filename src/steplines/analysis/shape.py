"""Shape analyses: min-shifted mean lines, distance matrices, polynomial fits (docs/method.md §6.2).

All functions take summary arrays (rows = lines, NaN-padded columns = positions) and use the mean
training loss over the N measured rows (the paper's 3968-row definition, docs/method.md §6.1), in
both modes.

Distance matrix ``D[i, j] = mean_k |c_i(s_k) − c_j(s_k)|`` of min-shifted curves ``c``:

* ``corrected`` (default): every line is linearly interpolated onto one common uniform grid
  ``s_k`` on ``[−w, w]`` (spacing = the line-0 grid spacing near 0, so as many points as
  measured), from its measured positions **without** the inserted ``s_update`` column, so
  all lines are compared at the same positions from the same regular grid. ``c = l − min l``
  with the minimum taken over the window (the common-grid values), so each ``c`` is ≥ 0 with
  minimum 0 inside the window whatever the line does outside it. Grid points a line does not
  cover are NaN and left out of that pair's mean.
* ``faithful``: the original's index alignment (docs/method.md §6.2, §9.18): ``c = l − min l`` over
  the *whole* measured line; ``K = n_window(line 0) − 2`` with ``n_window`` counting positions
  with ``−w ≤ s ≤ w``; each line contributes the first ``K`` of its positions with
  ``−w < s < w`` (inserted ``s_update`` included, so columns right of it shift by one).

This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "consecutive_distances",
    "distance_matrix",
    "pairwise_mae",
    "polynomial_fits",
    "shape_curves",
    "shift_by_min",
    "window_range",
]


def shift_by_min(means: np.ndarray) -> np.ndarray:
    """Min-shifted lines ``c(s) = l(s) − min_s l(s)`` (minimum over each row's finite values).

    Args:
        means: float ``[T, K]`` mean losses, NaN-padded.

    Returns:
        float64 ``[T, K]``.
    """
    means = np.asarray(means, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = np.nanmin(np.where(np.isfinite(means), means, np.inf), axis=1, keepdims=True)
    return means - np.where(np.isfinite(lo), lo, np.nan)


def _line0_spacing(positions: np.ndarray, window: float) -> float:
    p = positions[0]
    p = p[np.isfinite(p) & (np.abs(p) <= window)]
    d = np.diff(np.unique(p))
    d = d[d > 1e-12]
    if d.size == 0:
        raise ValueError("line 0 has fewer than two positions inside the window")
    return float(np.median(d))


def shape_curves(
    positions: np.ndarray,
    means: np.ndarray,
    window: float,
    faithful: bool = False,
    *,
    update_index: np.ndarray | None = None,
    n_grid: int | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Min-shifted curves on the columns a distance matrix compares (see module docstring).

    Args:
        positions: float ``[T, K]`` positions, NaN-padded, sorted per row.
        means: float ``[T, K]`` mean losses.
        window: Half-width ``w`` (paper scale: 0.2 for β = 0, 0.5 for β > 0; run scale: 2·s_typ).
        faithful: The original code's rule (docs/method.md §10), not the corrected one.
        update_index: int ``[T]`` column of the inserted ``s_update`` (corrected mode drops it;
            −1 or None: nothing to drop).
        n_grid: Corrected mode: number of common grid points (default: ``round(2w/h) + 1``,
            ``h`` the median line-0 spacing inside the window).

    Returns:
        ``(grid, C)``: corrected: the common grid ``[G]`` and ``C [T, G]``; faithful: None and
        ``C [T, K0]`` (index-aligned columns, NaN where a line has fewer than ``K0`` points).
    """
    positions = np.asarray(positions, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    n_lines = positions.shape[0]
    if faithful:
        c = shift_by_min(means)
        p0 = positions[0]
        k0 = int(np.sum(np.isfinite(p0) & (p0 >= -window) & (p0 <= window))) - 2
        k0 = max(k0, 0)
        out = np.full((n_lines, k0), np.nan)
        for i in range(n_lines):
            p = positions[i]
            sel = np.flatnonzero(np.isfinite(p) & (p > -window) & (p < window))[:k0]
            out[i, : sel.size] = c[i, sel]
        return None, out
    if n_grid is None:
        n_grid = round(2 * window / _line0_spacing(positions, window)) + 1
    grid = np.linspace(-window, window, int(n_grid))
    out = np.full((n_lines, grid.size), np.nan)
    for i in range(n_lines):
        ok = np.isfinite(positions[i]) & np.isfinite(means[i])
        if update_index is not None and update_index[i] >= 0:
            ui = int(update_index[i])
            if positions[i, ui] != 0.0:
                ok[ui] = False
        p, v = positions[i, ok], means[i, ok]
        if p.size < 2:
            continue
        inside = (grid >= p[0]) & (grid <= p[-1])
        row = np.where(inside, np.interp(grid, p, v), np.nan)
        if np.isfinite(row).any():
            out[i] = row - np.nanmin(row)
    return grid, out


def pairwise_mae(
    curves: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None
) -> np.ndarray:
    """``D[i, j] = mean_k |C[rows[i], k] − C[cols[j], k]|`` over the jointly finite ``k``.

    Computed one row at a time (memory ``O(len(cols)·G)``). Symmetric with a zero diagonal
    when ``rows == cols``.

    Args:
        curves: float ``[T, G]`` from :func:`shape_curves`.
        rows: Row indices (default all).
        cols: Column indices (default ``rows``).
    """
    rows = np.arange(curves.shape[0]) if rows is None else np.asarray(rows)
    cols = rows if cols is None else np.asarray(cols)
    right = curves[cols]
    out = np.full((rows.size, cols.size), np.nan)
    with np.errstate(invalid="ignore"):
        for a, i in enumerate(rows):
            diff = np.abs(curves[i][None, :] - right)
            n = np.sum(np.isfinite(diff), axis=1)
            s = np.nansum(diff, axis=1)
            out[a] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return out


def consecutive_distances(curves: np.ndarray) -> np.ndarray:
    """``D[t, t+1]`` for consecutive rows of ``curves`` (float ``[T−1]``), docs/method.md §6.2."""
    diff = np.abs(curves[1:] - curves[:-1])
    n = np.sum(np.isfinite(diff), axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(diff, axis=1) / np.maximum(n, 1), np.nan)


def distance_matrix(
    positions: np.ndarray,
    means: np.ndarray,
    window: float,
    faithful: bool = False,
    *,
    update_index: np.ndarray | None = None,
    n_grid: int | None = None,
) -> np.ndarray:
    """Distance matrix of min-shifted lines (docs/method.md §6.2; Figs 3, 8, 11, 12).

    ``D[i, j] = (1/K)·Σ_k |c_i(s_k) − c_j(s_k)|`` with the columns and shift of
    :func:`shape_curves` (corrected: common interpolated grid, window minimum; faithful:
    index-aligned, whole-line minimum). ``T × T``: pass a subset of rows for long runs.

    Args:
        positions: float ``[T, K]``.
        means: float ``[T, K]`` mean training losses.
        window: Half-width ``w``.
        faithful: The original code's rule (docs/method.md §10), not the corrected one.
        update_index: int ``[T]`` ``s_update`` columns (corrected mode drops them).
        n_grid: Corrected mode: common grid size.

    Returns:
        float64 ``[T, T]``.
    """
    _, curves = shape_curves(
        positions, means, window, faithful=faithful, update_index=update_index, n_grid=n_grid
    )
    return pairwise_mae(curves)


def polynomial_fits(
    positions: np.ndarray,
    means: np.ndarray,
    window: float,
    degrees: Sequence[int] = (1, 2, 3, 4),
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares polynomial fits of each line on ``[−w, w]`` (docs/method.md §6.2).

    For each line and degree ``k``: ``p = polyfit(s_i, l(s_i), k)`` over the measured positions
    with ``−w ≤ s_i ≤ w`` (inclusive; actual positions, the inserted ``s_update`` included, the
    un-shifted mean loss), and ``MAE = (1/n)·Σ_i |p(s_i) − l(s_i)|``. Same in both modes.

    Args:
        positions: float ``[T, K]``.
        means: float ``[T, K]`` mean training losses.
        window: Half-width ``w``.
        degrees: Polynomial degrees (each ≤ 4).

    Returns:
        ``(mae, coefs)``: float ``[T, D]`` MAE and float ``[T, D, 5]`` coefficients in
        ascending order ``c0 + c1·s + … + c4·s⁴`` (NaN beyond the degree; NaN rows where a line
        has fewer than ``k + 1`` points in the window). For degree 2: ``c0`` offset, ``c1``
        slope, ``c2`` curvature/2.
    """
    positions = np.asarray(positions, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    degrees = [int(d) for d in degrees]
    if any(d < 0 or d > 4 for d in degrees):
        raise ValueError(f"degrees must lie in [0, 4], got {degrees}")
    n_lines = positions.shape[0]
    mae = np.full((n_lines, len(degrees)), np.nan)
    coefs = np.full((n_lines, len(degrees), 5), np.nan)
    for i in range(n_lines):
        p, v = positions[i], means[i]
        ok = np.isfinite(p) & np.isfinite(v) & (p >= -window) & (p <= window)
        x, y = p[ok], v[ok]
        for j, deg in enumerate(degrees):
            if x.size < deg + 1:
                continue
            c = np.polynomial.polynomial.polyfit(x, y, deg)
            mae[i, j] = float(np.mean(np.abs(np.polynomial.polynomial.polyval(x, c) - y)))
            coefs[i, j, : deg + 1] = c
    return mae, coefs


def window_range(positions: np.ndarray, means: np.ndarray, window: float) -> np.ndarray:
    """``max − min`` of each line over its measured positions with ``−w ≤ s ≤ w``.

    The scale of a fit error on the window: a fit MAE divided by it is dimensionless.

    Returns:
        float64 ``[T]`` (NaN where a line has no finite value in the window).
    """
    positions = np.asarray(positions, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    ok = np.isfinite(positions) & np.isfinite(means) & (np.abs(positions) <= window)
    hi = np.max(np.where(ok, means, -np.inf), axis=1)
    lo = np.min(np.where(ok, means, np.inf), axis=1)
    return np.where(ok.any(axis=1), hi - lo, np.nan)
