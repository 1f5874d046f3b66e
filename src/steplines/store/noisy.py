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
    checksum        [P]        int64    CRC32 of the position's stored values (stores made
                                        since verify covers them; older ones lack it)
    done            [P]        bool     written last, per position

A store with an array missing or whose metadata cannot be read is repaired by ``measure``
(:meth:`NoisyDirectionStore.open_or_create` recreates the array; its positions then read as
missing and ``measure --redo`` fills them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from steplines.errors import RunDirError

FIELDS_3D = ("positions", "train_mean", "val_mean", "direction_mean")
FIELDS_2D = ("grad_norm", "s_update")
FLAGS = ("steps", "done")
ARRAYS = (*FIELDS_3D, *FIELDS_2D, *FLAGS)
"""The arrays every noisy-direction store has (``checksum`` only those made since)."""


def position_digest(step: int, values: dict[str, np.ndarray]) -> int:
    """CRC32 of one position's stored values: its step, then the float64 bytes of each array of
    ``FIELDS_3D`` and ``FIELDS_2D`` (its ``[D, K]``/``[D]`` slice), in that order."""
    crc = zlib.crc32(np.int64(step).tobytes())
    for name in (*FIELDS_3D, *FIELDS_2D):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(np.ascontiguousarray(values[name], dtype=np.float64).tobytes(), crc)
    return crc


def _create_arrays(g: zarr.Group, p: int, d: int, k: int, names: tuple[str, ...]) -> None:
    """Create the arrays ``names`` of a store of P positions, D directions, K points."""
    comp = [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
    for name in names:
        if name in FIELDS_3D:
            g.create_array(
                name, shape=(p, d, k), chunks=(1, d, k), dtype="float64",
                fill_value=np.nan, compressors=comp,
            )  # fmt: skip
        elif name in FIELDS_2D:
            g.create_array(name, shape=(p, d), chunks=(1, d), dtype="float64", fill_value=np.nan)
        elif name == "done":
            g.create_array(name, shape=(p,), chunks=(1,), dtype="bool", fill_value=False)
        else:  # steps, checksum: one chunk per position, writers never share a chunk file
            g.create_array(name, shape=(p,), chunks=(1,), dtype="int64", fill_value=-1)


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
            return cls._repaired(path, n_positions, n_directions, n_grid)
        # Build under a temporary name, then rename: a crash never leaves a half group.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        g = zarr.open_group(str(tmp), mode="w-")
        _create_arrays(g, n_positions, n_directions, n_grid, (*ARRAYS, "checksum"))
        os.rename(tmp, path)
        return cls(zarr.open_group(str(path), mode="r+"))

    @classmethod
    def _repaired(cls, path: Path, p: int, d: int, k: int) -> NoisyDirectionStore:
        """Open ``path`` for writing, first recreating its group metadata or any array that
        is missing or whose metadata cannot be read (their positions then read as missing)."""
        try:
            json.loads((path / "zarr.json").read_text())
        except (OSError, ValueError):
            (path / "zarr.json").unlink(missing_ok=True)
            zarr.open_group(str(path), mode="a")
        g = zarr.open_group(str(path), mode="r+")
        broken = []
        for name in ARRAYS:
            try:
                g[name]
            except Exception:  # missing directory or undecodable zarr.json
                shutil.rmtree(path / name, ignore_errors=True)
                broken.append(name)
        if broken:
            _create_arrays(g, p, d, k, tuple(broken))
            if "done" not in broken:  # done positions lost data: measure them again
                g["done"][:] = False
        return cls(zarr.open_group(str(path), mode="r+"))

    @classmethod
    def open(cls, path: Path) -> NoisyDirectionStore:
        """Open read-only.

        Raises:
            RunDirError: the store's group metadata or one of its arrays is missing or cannot
                be read (one line naming it; ``steplines measure RUN`` repairs it).
        """
        path = Path(path)
        try:
            store = cls(zarr.open_group(str(path), mode="r"))
            for name in ARRAYS:
                store.group[name]
        except Exception as exc:
            run = path.parent
            raise RunDirError(
                f"{path} is damaged ({_what(path, exc)}); repair with: steplines measure {run}, "
                f"then steplines measure {run} --redo with the lines steplines verify {run} "
                "names"
            ) from None
        return store

    @classmethod
    def check_path(
        cls, path: Path, every: int, lines_done: np.ndarray | None = None
    ) -> dict[int, str]:
        """:meth:`check` of the store at ``path``; a store that cannot be opened makes every
        position of a done line bad (position 0 when ``lines_done`` is not given)."""
        try:
            store = cls.open(path)
        except RunDirError as err:
            why = str(err).split(";")[0].replace(f"{path} is damaged", f"{path.name} is damaged")
            n = 1 if lines_done is None else -(-lines_done.size // every)
            return {p: why for p in range(n) if lines_done is None or lines_done[p * every]} or {
                0: why
            }
        return store.check(every, lines_done)

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
        for name in FIELDS_2D:
            slabs[name] = np.array([[line[name] for line in lines]], np.float64)
            self.group[name][p : p + 1] = slabs[name]
        if "checksum" in self.group:
            values = {name: slab[0] for name, slab in slabs.items()}
            self.group["checksum"][p] = position_digest(step, values)
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
            values = {name: np.asarray(g[name][p]) for name in (*FIELDS_3D, *FIELDS_2D)}
            crc = int(g["checksum"][p]) if "checksum" in g else None
        except Exception:
            return "a chunk cannot be decoded"
        if step != p * every:
            return f"step {step} recorded for position {p} (expected {p * every})"
        pos = values["positions"]
        means = [values[name] for name in FIELDS_3D[1:]]
        scalars = [values[name] for name in FIELDS_2D]
        for j in range(pos.shape[0]):
            k = int(np.isfinite(pos[j]).sum())
            if k == 0 or not np.isfinite(pos[j, :k]).all() or not np.isnan(pos[j, k:]).all():
                return f"positions of direction {j} missing"
            if any(np.isnan(m[j, :k]).all() for m in means):
                return f"mean lines of direction {j} missing"
        if any(np.isnan(x).any() for x in scalars):
            return "grad_norm or s_update missing"
        if crc is not None and crc != position_digest(step, values):
            return "its values differ from the checksum taken when it was written"
        return None

    def check(self, every: int, lines_done: np.ndarray | None = None) -> dict[int, str]:
        """``{position: why}`` for every position whose data cannot be trusted: undecodable
        chunks of ``done``/``steps`` (their positions), done positions that fail
        :meth:`_position_ok`, positions written but no longer flagged done (a lost ``done``
        chunk) and, given the line store's ``lines_done``, positions of done lines that were
        never measured."""
        out: dict[int, str] = {}
        done = self._read_tolerant("done", out)
        steps = self._read_tolerant("steps", out)
        for p in np.flatnonzero(done):
            if int(p) not in out and (why := self._position_ok(int(p), every)):
                out[int(p)] = why
        for p in np.flatnonzero(~done & (steps >= 0)):
            out.setdefault(int(p), "written but its done flag is lost")
        if lines_done is not None:
            for p in range(done.size):
                t = p * every
                if not done[p] and t < lines_done.size and lines_done[t]:
                    out.setdefault(p, "not measured though its line is")
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

    def read(self, every: int | None = None) -> dict[str, np.ndarray]:
        """Every array of the done positions.

        ``every``: the run's ``noisy_every``; given, the store is first checked
        (:meth:`check`) and a damaged position refused.

        Raises:
            RunDirError: a done position cannot be trusted (one line naming it and the
                ``--redo`` that repairs it).
        """
        if every is not None and (bad := self.check(every)):
            root = Path(str(self.group.store.root)) / self.group.path
            lines = ",".join(str(p * every) for p in bad)
            p, why = next(iter(bad.items()))
            raise RunDirError(
                f"{root}: the noisy-direction lines of step {p * every} cannot be trusted "
                f"({why}); repair with: steplines measure {root.parent} --redo {lines}"
            )
        done = self.done()
        return {name: self.group[name][...][done] for name in (*FIELDS_3D, *FIELDS_2D, "steps")}


def _what(path: Path, exc: BaseException) -> str:
    """Which part of a noisy-direction store failed to open, for a one-line message."""
    if isinstance(exc, KeyError):
        return f"array {exc.args[0]!r} is missing"
    return f"{type(exc).__name__} reading its metadata"
