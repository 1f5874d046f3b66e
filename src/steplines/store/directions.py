"""Lines along noisy gradient directions at fixed positions (SPEC §5, the paper's Fig. 8).

At every ``every``-th step t, D lines are measured from the same θ_t along the directions
``−g_j/‖g_j‖`` of D other mini-batches j, with the full batch and validation set of line t.
Only the per-line mean lines are stored (the figure needs nothing else): Zarr v3 group
``RUN/directions.zarr``, preallocated, one chunk per position, ``done`` written last::

    steps           [P]        int64    step t of position p (−1 until written)
    positions       [P, D, K]  float64  positions s, NaN beyond the line's own count
    train_mean      [P, D, K]  float64  full-batch mean line l(s)
    val_mean        [P, D, K]  float64  validation mean line
    direction_mean  [P, D, K]  float64  mean line of mini-batch j (the one defining direction j)
    grad_norm       [P, D]     float64  ‖g_j‖
    s_update        [P, D]     float64  λ_t·‖g_j‖, where SGD on batch j would land
    done            [P]        bool     written last, per position
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

FIELDS_3D = ("positions", "train_mean", "val_mean", "direction_mean")


class DirectionStore:
    """The noisy-direction lines of one run (numpy + zarr only)."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group

    @classmethod
    def open_or_create(
        cls, path: Path, *, n_positions: int, n_directions: int, n_grid: int
    ) -> DirectionStore:
        """Open ``path`` or create it preallocated for P positions, D directions, K points."""
        path = Path(path)
        if path.exists():
            return cls(zarr.open_group(str(path), mode="r+"))
        # Build under a temporary name, then rename: a crash never leaves a half group.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        g = zarr.open_group(str(tmp), mode="w-")
        p, d, k = n_positions, n_directions, n_grid
        comp = [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
        for name in FIELDS_3D:
            g.create_array(
                name,
                shape=(p, d, k),
                chunks=(1, d, k),
                dtype="float64",
                fill_value=np.nan,
                compressors=comp,
            )
        for name in ("grad_norm", "s_update"):
            g.create_array(name, shape=(p, d), chunks=(1, d), dtype="float64", fill_value=np.nan)
        g.create_array("steps", shape=(p,), chunks=(p,), dtype="int64", fill_value=-1)
        g.create_array("done", shape=(p,), chunks=(p,), dtype="bool", fill_value=False)
        os.rename(tmp, path)
        return cls(zarr.open_group(str(path), mode="r+"))

    @classmethod
    def open(cls, path: Path) -> DirectionStore:
        """Open read-only."""
        return cls(zarr.open_group(str(path), mode="r"))

    def done(self) -> np.ndarray:
        """Bool ``[P]``: positions whose D lines are all written."""
        return np.asarray(self.group["done"][:], dtype=bool)

    def write_position(self, p: int, step: int, lines: list[dict[str, np.ndarray | float]]) -> None:
        """Write the D lines of position ``p`` (each a dict of the fields), then ``done[p]``."""
        k_max = self.group["positions"].shape[2]
        slabs = {name: np.full((1, len(lines), k_max), np.nan) for name in FIELDS_3D}
        for j, line in enumerate(lines):
            k = len(line["positions"])
            for name in FIELDS_3D:
                slabs[name][0, j, :k] = line[name]
        for name in FIELDS_3D:
            self.group[name][p : p + 1] = slabs[name]
        for name in ("grad_norm", "s_update"):
            self.group[name][p : p + 1] = np.array([[line[name] for line in lines]], np.float64)
        self.group["steps"][p] = step
        self.group["done"][p] = True

    def read(self) -> dict[str, np.ndarray]:
        """Every array of the done positions."""
        done = self.done()
        return {
            name: self.group[name][...][done]
            for name in (*FIELDS_3D, "grad_norm", "s_update", "steps")
        }
