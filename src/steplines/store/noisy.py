"""Lines along noisy gradient directions at fixed positions (docs/method.md §5, the paper's Fig. 8).

At every ``every``-th step t, D lines are measured from the same θ_t along the directions
``−g_j/‖g_j‖`` of D other mini-batches j, with the full batch and validation set of line t.
Only the per-line mean lines are stored (the figure needs nothing else): Zarr v3 group
``RUN/directions.zarr``, preallocated, one chunk per position (``steps`` and ``done`` too, so
that concurrent writers of disjoint positions never share a chunk; stores made before kept
them in one chunk and are written under a lock file), ``done`` written last::

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

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

FIELDS_3D = ("positions", "train_mean", "val_mean", "direction_mean")


class NoisyDirectionStore:
    """The noisy-direction lines of one run (numpy + zarr only)."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group

    @classmethod
    def open_or_create(
        cls, path: Path, *, n_positions: int, n_directions: int, n_grid: int
    ) -> NoisyDirectionStore:
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
        # one chunk per position: writers of disjoint positions never share a chunk file
        g.create_array("steps", shape=(p,), chunks=(1,), dtype="int64", fill_value=-1)
        g.create_array("done", shape=(p,), chunks=(1,), dtype="bool", fill_value=False)
        os.rename(tmp, path)
        return cls(zarr.open_group(str(path), mode="r+"))

    @classmethod
    def open(cls, path: Path) -> NoisyDirectionStore:
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
        with self._flags_lock():
            self.group["steps"][p] = step
            self.group["done"][p] = True

    @contextlib.contextmanager
    def _flags_lock(self) -> Iterator[None]:
        """Serialise writers of ``done``/``steps`` in stores made before they had one chunk
        per position (a read-modify-write of a shared chunk would lose another's flags)."""
        if int(self.group["done"].chunks[0]) == 1:
            yield
            return
        root = Path(str(self.group.store.root)) / self.group.path
        fd = os.open(root / ".flags.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)  # waits: the critical section is two small writes
            yield
        finally:
            os.close(fd)

    def _position_ok(self, p: int, every: int) -> str | None:
        """What is wrong with done position ``p`` (None: fine)."""
        g = self.group
        try:
            step = int(g["steps"][p])
            pos = np.asarray(g["positions"][p])
            means = [np.asarray(g[name][p]) for name in FIELDS_3D[1:]]
            scalars = [np.asarray(g[name][p]) for name in ("grad_norm", "s_update")]
        except Exception:
            return "a chunk cannot be decoded"
        if step != p * every:
            return f"step {step} recorded for position {p} (expected {p * every})"
        for j in range(pos.shape[0]):
            k = int(np.isfinite(pos[j]).sum())
            if k == 0 or not np.isfinite(pos[j, :k]).all() or not np.isnan(pos[j, k:]).all():
                return f"positions of direction {j} missing"
            if any(np.isnan(m[j, :k]).all() for m in means):
                return f"mean lines of direction {j} missing"
        if any(np.isnan(x).any() for x in scalars):
            return "grad_norm or s_update missing"
        return None

    def check(self, every: int) -> dict[int, str]:
        """``{position: why}`` for every position whose data cannot be trusted: undecodable
        chunks of ``done``/``steps`` (their positions) and done positions that fail
        :meth:`_position_ok`."""
        out: dict[int, str] = {}
        done = self._read_tolerant("done", out)
        self._read_tolerant("steps", out)
        for p in np.flatnonzero(done):
            if int(p) not in out and (why := self._position_ok(int(p), every)):
                out[int(p)] = why
        return dict(sorted(out.items()))

    def _read_tolerant(self, name: str, bad: dict[int, str]) -> np.ndarray:
        """Array ``name`` with undecodable chunks read as fill; their positions go to ``bad``."""
        arr = self.group[name]
        try:
            return np.asarray(arr[:])
        except Exception:
            pass
        out = np.full(arr.shape, arr.fill_value, dtype=arr.dtype)
        step = int(arr.chunks[0])
        for start in range(0, arr.shape[0], step):
            end = min(start + step, arr.shape[0])
            try:
                out[start:end] = arr[start:end]
            except Exception:
                for p in range(start, end):
                    bad.setdefault(p, f"chunk of {name} cannot be decoded")
        return out

    def reset(self, positions: list[int]) -> None:
        """Forget ``positions`` so that they are measured again (``measure --redo``): their
        ``done`` flags are cleared; a ``done``/``steps`` chunk that cannot be decoded is
        deleted (its positions read as not done)."""
        for name in ("done", "steps"):
            arr = self.group[name]
            step = int(arr.chunks[0])
            for c in sorted({p // step for p in positions}):
                try:
                    arr[c * step : min((c + 1) * step, arr.shape[0])]
                except Exception:
                    key = arr.metadata.encode_chunk_key((c,))
                    path = Path(str(self.group.store.root)) / self.group.path / name / key
                    path.unlink(missing_ok=True)
        for p in positions:
            self.group["done"][p] = False

    def read(self) -> dict[str, np.ndarray]:
        """Every array of the done positions."""
        done = self.done()
        return {
            name: self.group[name][...][done]
            for name in (*FIELDS_3D, "grad_norm", "s_update", "steps")
        }
