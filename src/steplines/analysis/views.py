"""What the report draws of the lines themselves, computed once by the analysis.

The figures of whole lines (Fig. 1's training curves, Fig. 2's representative lines, Fig. 5's
parabolic approximations) need more than the tables of per-line numbers: the loss at ``s = 0``
of every line and the per-sample rows of a few lines. :func:`write_views` computes them while
the store is open and writes ``training.csv`` and ``views.npz`` beside the tables, so the report
is drawn from the analysis directory alone (a run directory without its 5 GB store still gets
every figure).

This module never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from steplines.store import LineRecord, LineStore

__all__ = [
    "BROWSER_LINES",
    "BROWSER_POINTS",
    "BrowserTap",
    "LineView",
    "line_view",
    "line_views",
    "representative_lines",
    "views_arrays",
    "views_from_arrays",
]

_FIELDS = ("positions", "full", "batch", "band_min", "band_max")


@dataclass(frozen=True)
class LineView:
    """One measured line, reduced to what the line figures draw.

    Attributes:
        t: Step index.
        positions: ``[k]`` positions ``s``.
        full: ``[k]`` full-batch line ``l(s)``.
        batch: ``[k]`` direction-batch line ``l_B(s)``.
        band_min, band_max: ``[k]`` min and max over the mini-batch losses (training rows in
            consecutive groups of ``group_size``), or None.
        s_update: SGD's step (``‖u_t‖``).
        group_size: Rows per mini-batch of the band.
        n_groups: Mini-batches in the band.
    """

    t: int
    positions: np.ndarray
    full: np.ndarray
    batch: np.ndarray
    band_min: np.ndarray | None
    band_max: np.ndarray | None
    s_update: float
    group_size: int
    n_groups: int

    @property
    def s_opt(self) -> float:
        """First argmin of ``l``."""
        return float(self.positions[int(np.nanargmin(self.full))])

    @property
    def s_batch(self) -> float:
        """First argmin of ``l_B``."""
        return float(self.positions[int(np.nanargmin(self.batch))])


def line_view(
    record: LineRecord, t: int, *, faithful: bool = False, group_size: int | None = None
) -> LineView:
    """Reduce a stored line to a :class:`LineView` (docs/method.md §6.3 item 2, §6.7).

    Args:
        record: ``LineStore.read_line(t)``.
        t: Its step index.
        faithful: l = mean of the N + B rows, as the original; else of the N training rows.
        group_size: Rows per mini-batch of the min–max band (default: the direction batch
            size B). The N training rows are grouped consecutively; a remainder is dropped.
    """
    train = np.asarray(record.train_losses, np.float64)
    direction = np.asarray(record.direction_losses, np.float64)
    n, b = train.shape[0], direction.shape[0]
    full = train.mean(axis=0)
    if faithful and b:
        full = (n * full + b * direction.mean(axis=0)) / (n + b)
    batch = direction.mean(axis=0) if b else np.full_like(full, np.nan)
    g = int(group_size or b or n)
    groups = n // g if g else 0
    band_min = band_max = None
    if groups >= 1:
        means = train[: groups * g].reshape(groups, g, -1).mean(axis=1)
        band_min, band_max = means.min(axis=0), means.max(axis=0)
    return LineView(
        t=int(t),
        positions=np.asarray(record.positions, np.float64),
        full=full,
        batch=batch,
        band_min=band_min,
        band_max=band_max,
        s_update=float(record.s_update),
        group_size=g,
        n_groups=groups,
    )


def representative_lines(lines: np.ndarray, n_total: int) -> list[int]:
    """Three analysed lines spread over training (paper: 10, 4000, 8000 of 10 000)."""
    lines = np.asarray(lines)
    if lines.size == 0:
        return []
    targets = [min(10, n_total // 8), round(0.4 * n_total), round(0.8 * n_total)]
    picked: list[int] = []
    for t in targets:
        best = int(lines[int(np.argmin(np.abs(lines - t)))])
        if best not in picked:
            picked.append(best)
    return picked


def line_views(
    store: LineStore, lines: np.ndarray, *, faithful: bool = False
) -> tuple[pd.DataFrame, list[LineView]]:
    """The training curve and the representative lines, for the figures of whole lines.

    * the training curve (``training.csv``): per analysed line ``line, train_l0, val_l0,
      batch_loss`` — the mean training and validation loss at ``s = 0`` (NaN where 0 is not
      measured) and the direction batch's loss at θ_t;
    * the :class:`LineView` of each :func:`representative_lines` line (``views.npz``).
    """
    lines = np.asarray(lines, dtype=np.int64)
    sm = store.read_summary()
    z = np.asarray(sm["zero_index"])[lines]
    ok = z >= 0
    zc = np.where(ok, z, 0)
    pick = lambda name: np.where(ok, np.asarray(sm[name])[lines, zc], np.nan)  # noqa: E731
    training = pd.DataFrame(
        {
            "line": lines,
            "train_l0": pick("train_mean"),
            "val_l0": pick("val_mean"),
            "batch_loss": np.asarray(sm["batch_loss"])[lines],
        }
    )
    reps = representative_lines(lines, int(np.asarray(sm["positions"]).shape[0]))
    return training, [line_view(store.read_line(t), t, faithful=faithful) for t in reps]


def views_arrays(views: Iterable[LineView]) -> dict[str, np.ndarray]:
    """The arrays of ``views.npz``: keys ``t<t>_<field>``, and ``lines`` lists the views."""
    views = list(views)
    arrays: dict[str, np.ndarray] = {"lines": np.asarray([v.t for v in views], dtype=np.int64)}
    for v in views:
        for name in _FIELDS:
            val = getattr(v, name)
            arrays[f"t{v.t}_{name}"] = np.asarray(val) if val is not None else np.empty(0)
        arrays[f"t{v.t}_meta"] = np.array([v.s_update, v.group_size, v.n_groups], np.float64)
    return arrays


def views_from_arrays(z: Mapping[str, Any]) -> list[LineView]:
    """The :class:`LineView` records of :func:`views_arrays`' arrays."""
    out = []
    for t in z["lines"]:
        f = {name: np.asarray(z[f"t{t}_{name}"]) for name in _FIELDS}
        s_update, group, groups = z[f"t{t}_meta"]
        out.append(
            LineView(
                t=int(t),
                positions=f["positions"],
                full=f["full"],
                batch=f["batch"],
                band_min=f["band_min"] if f["band_min"].size else None,
                band_max=f["band_max"] if f["band_max"].size else None,
                s_update=float(s_update),
                group_size=int(group),
                n_groups=int(groups),
            )
        )
    return out


BROWSER_LINES = 200
"""At most this many lines are embedded in the report's line browser (evenly spread)."""

BROWSER_POINTS = 80
"""At most this many positions per embedded line (0, s_update and s_opt always kept)."""


def _sig(x: np.ndarray, digits: int = 5) -> list[float | None]:
    return [float(f"{v:.{digits}g}") if np.isfinite(v) else None for v in np.asarray(x, float)]


def _keep(positions: np.ndarray, must: list[float], n: int) -> np.ndarray:
    """Indices of at most ``n`` positions, evenly spread, always with those nearest ``must``."""
    k = positions.size
    if k <= n:
        return np.arange(k)
    idx = set(np.round(np.linspace(0, k - 1, n - len(must))).astype(int).tolist())
    for m in must:
        if np.isfinite(m):
            idx.add(int(np.argmin(np.abs(positions - m))))
    return np.array(sorted(idx))


class BrowserTap:
    """Collects a downsampled view of every line (or of ``BROWSER_LINES`` spread over the run).

    For the report's line browser: the reader picks any line and sees l, l_B, the min–max band
    of the mini-batch losses, SGD's step and s_opt (:func:`line_view` of each kept line, at
    most ``BROWSER_POINTS`` positions, 5 significant digits). :meth:`result` is
    ``browser.json``.
    """

    def __init__(self, lines: np.ndarray, *, faithful: bool = False) -> None:
        lines = np.asarray(lines)
        stride = max(1, int(np.ceil(lines.size / BROWSER_LINES)))
        keep = lines[::stride]
        if lines.size and keep[-1] != lines[-1]:
            keep = np.append(keep, lines[-1])
        self.keep = {int(t) for t in keep}
        self.faithful = faithful
        self.rows: list[dict[str, object]] = []

    def tap(self, records: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        """Yield the records unchanged, keeping the view of each selected line."""
        for t, rec in records:
            if int(t) in self.keep:
                v = line_view(rec, int(t), faithful=self.faithful)
                ok = np.isfinite(v.positions) & np.isfinite(v.full)
                p = v.positions[ok]
                i = _keep(p, [0.0, v.s_update, v.s_opt], BROWSER_POINTS)
                band = v.band_min is not None
                self.rows.append(
                    {
                        "t": int(t),
                        "s": _sig(p[i]),
                        "l": _sig(v.full[ok][i]),
                        "lb": _sig(v.batch[ok][i]),
                        "lo": _sig(v.band_min[ok][i]) if band else [],
                        "hi": _sig(v.band_max[ok][i]) if band else [],
                        "s_update": float(f"{v.s_update:.5g}"),
                        "s_opt": float(f"{v.s_opt:.5g}"),
                    }
                )
            yield t, rec

    def result(self) -> dict[str, Any]:
        """``{"lines": [...]}``, the content of ``browser.json``."""
        return {"lines": self.rows}
