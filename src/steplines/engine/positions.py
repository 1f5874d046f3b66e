"""Positions along a line: the paper's grid, the symmetric grid and enlargement rings.

docs/method.md §3.3. With interval I and resolution h, pass r of the paper grid is

    left_r  = {−I(r+1) + k·h : k = 0, 1, … while < −I·r}
    right_r = {I·r + k·h     : k = 0, 1, … while < I(r+1)}

(numpy ``arange`` semantics). For I = 0.5, h = 0.006 each side has 84 points, the left half is
offset (0's left neighbour is −0.002) and pass 0 plus 0 and s_update has 169 points. The
``symmetric`` grid uses k·h for integer k, |k·h| ≤ I(r+1) (pass r: I·r < |k·h|), so it is
uniform across ring joins and contains 0 exactly.
"""

from __future__ import annotations

import math

import numpy as np

GRIDS = ("paper", "symmetric")


def ring(grid: str, interval: float, resolution: float, r: int) -> np.ndarray:
    """Return the grid points of pass ``r`` (sorted, float64), without 0/s_update extras.

    Args:
        grid: ``"paper"`` or ``"symmetric"``.
        interval: I, the half-width of pass 0 and the width of each ring.
        resolution: h, the spacing.
        r: the pass, 0 = the central interval.
    """
    if grid == "paper":
        left = np.arange(-interval * (r + 1), -interval * r, resolution)
        right = np.arange(interval * r, interval * (r + 1), resolution)
        return np.concatenate([left, right])
    if grid == "symmetric":
        n = math.floor(interval / resolution + 1e-9)
        if r == 0:
            k = np.arange(-n, n + 1)
        else:
            k = np.arange(n * r + 1, n * (r + 1) + 1)
            k = np.concatenate([-k[::-1], k])
        return k * resolution
    raise ValueError(f"unknown grid {grid!r}")


def first_pass(grid: str, interval: float, resolution: float, s_update: float) -> np.ndarray:
    """Pass-0 positions: the central grid plus 0 and ``s_update``, sorted, without duplicates."""
    pts = np.concatenate([ring(grid, interval, resolution, 0), [0.0, s_update]])
    return np.unique(pts)


def max_positions(grid: str, interval: float, resolution: float, max_passes: int) -> int:
    """K: the most positions a line can have (pass 0 with two extras, plus every ring)."""
    k = ring(grid, interval, resolution, 0).size + 2
    return k + sum(ring(grid, interval, resolution, r).size for r in range(1, max_passes))
