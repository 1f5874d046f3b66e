"""The line store: per-sample losses along every SGD update-step line, in a Zarr v3 group.

Layout and array meanings are in :mod:`steplines.store.schema` and ``docs/store.md``. The rules
that make the store safe to fill from several processes and to kill at any moment:

* Every array is preallocated at creation (NaN / sentinel fill), so nothing is ever resized and
  the metadata (``zarr.json`` files) is written only once, by :meth:`LineStore.create`.
* Per-sample arrays have one chunk per line, written as one full chunk; ``[T]`` and ``[T, K]``
  arrays have ``lines_per_chunk`` lines per chunk. Processes that write disjoint,
  ``lines_per_chunk``-aligned segments therefore never write the same chunk file.
* Zarr's ``LocalStore`` writes every chunk to a temporary file and renames it into place, so a
  killed writer leaves either the old or the new chunk, never half of one.
* ``done[t]`` is written last: a line counts only when it is done. A CRC32 of the per-sample data
  (``checksum``) lets :meth:`LineStore.verify_line` detect corrupt or lost chunks.

This module never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from steplines.atomic import write_atomic
from steplines.errors import RunDirError
from steplines.store.integrity import (
    DIGESTED,
    format_lines,
    record_digest,
    row_mean,
    val_indices_digest,
)
from steplines.store.schema import (
    ARRAYS,
    ARRAYS_BY_NAME,
    ESTIMATOR_ARRAYS,
    MEANS,
    PER_SAMPLE_LOSSES,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    STORE_FORMAT,
    SUMMARY,
    ArraySpec,
    array_attributes,
    dimension_names,
)

__all__ = [
    "LineCorruptError",
    "LineNotDoneError",
    "LineRecord",
    "LineStore",
    "StoreDamagedError",
    "first_match",
    "format_lines",
]


class LineNotDoneError(RunDirError):
    """A line was read that has not been (completely) written."""


class LineCorruptError(RunDirError):
    """A line's stored data cannot be decoded or does not match its checksum."""


class StoreDamagedError(RunDirError):
    """A chunk of a ``[T]`` or ``[T, K]`` array (``done``, the means, the scalars) cannot be
    decoded; the message names the array, its lines and the ``--redo`` that repairs them."""


@dataclass(frozen=True)
class LineRecord:
    """Everything measured along one line ``theta_t + s * d_t``.

    Attributes:
        positions: float64 ``[k]``, ``k <= K``, the positions ``s``, sorted ascending, finite.
        train_losses: float32 ``[N, k]`` per-sample losses of the measured training samples.
        val_losses: float32 ``[M, k]`` per-sample losses of the validation samples.
        direction_losses: float32 ``[B, k]`` per-sample losses of the direction batch.
        train_indices: int64 ``[N]`` training-set ids of the ``train_losses`` rows.
        direction_indices: int64 ``[B]`` training-set ids of the ``direction_losses`` rows.
        s_update: Position of ``theta_{t+1}`` on the line (``||u_t||``); should be one of
            ``positions``.
        direction_norm: ``n_t = ||u_t|| / lr_t``, the norm of ``m_t`` in ``d_t = -m_t / n_t``
            (the paper's ``n_t``; stored as ``update_norm`` in stores of schema version < 3).
        grad_norm: ``||g_t||`` of the direction batch.
        directional_derivative: Exact ``g_t . d_t``.
        lr: Learning rate of step ``t``.
        batch_loss: Loss of the direction batch at ``theta_t``.
        n_passes: Forward passes spent measuring this line.
        est_slope_update, est_curvature, est_sample_grad_sq, est_batch_grad_sq: Estimator
            inputs (:data:`steplines.store.schema.ESTIMATOR_ARRAYS`); NaN = not computed. Stores of
            schema version 1 have no such arrays: they are not written there and read as NaN.
    """

    positions: np.ndarray
    train_losses: np.ndarray
    val_losses: np.ndarray
    direction_losses: np.ndarray
    train_indices: np.ndarray
    direction_indices: np.ndarray
    s_update: float
    direction_norm: float
    grad_norm: float
    directional_derivative: float
    lr: float
    batch_loss: float
    n_passes: int
    est_slope_update: float = math.nan
    est_curvature: float = math.nan
    est_sample_grad_sq: float = math.nan
    est_batch_grad_sq: float = math.nan


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def _checksum(train: np.ndarray, val: np.ndarray, direction: np.ndarray) -> int:
    """CRC32 over the C-contiguous float32 bytes of the three arrays, in order."""
    crc = 0
    for arr in (train, val, direction):
        crc = zlib.crc32(np.ascontiguousarray(arr, dtype=np.float32).tobytes(), crc)
    return crc


def _row_mean(losses: np.ndarray) -> np.ndarray:
    """The store's mean line: :func:`steplines.store.integrity.row_mean`."""
    return row_mean(losses)


def first_match(positions: np.ndarray, value: float) -> int:
    """Index of the first position equal to ``value`` (−1 if none): the store's
    ``zero_index`` and ``update_index``."""
    hits = np.flatnonzero(positions == value)
    return int(hits[0]) if hits.size else -1


def _checked_inputs(
    path: Path, sizes: dict[str, int], val_indices: np.ndarray, lines_per_chunk: int, attrs: dict
) -> tuple[np.ndarray, dict]:
    """:meth:`LineStore.create`'s arguments checked: ``val_indices`` as an array and ``attrs``
    as JSON would read them back.

    Raises:
        RunDirError: ``path`` already exists.
        ValueError: A size, ``val_indices`` or ``attrs`` is invalid.
    """
    n_lines, n_train, n_val, n_direction, n_positions = (sizes[k] for k in "TNMBK")
    if path.exists():
        raise RunDirError(
            f"{path} already exists; open it with LineStore.open(path, mode='r+') to resume, "
            "or delete it to start over"
        )
    if n_lines < 1 or n_positions < 1 or lines_per_chunk < 1:
        raise ValueError(
            f"n_lines, n_positions and lines_per_chunk must be >= 1, got "
            f"{n_lines}, {n_positions}, {lines_per_chunk}"
        )
    if min(n_train, n_val, n_direction) < 0:
        raise ValueError(
            f"n_train, n_val, n_direction must be >= 0, got {n_train}, {n_val}, {n_direction}"
        )
    val_indices = np.asarray(val_indices)
    if val_indices.shape != (n_val,) or val_indices.dtype.kind not in "iu":
        raise ValueError(
            f"val_indices must be an integer array of shape ({n_val},), "
            f"got {val_indices.dtype} {val_indices.shape}"
        )
    try:
        run_attrs = json.loads(json.dumps(attrs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attrs must be JSON-serialisable: {exc}") from exc
    return val_indices, run_attrs


class LineStore:
    """A ``lines.zarr`` group of per-sample line measurements.

    Create one with :meth:`create`, open an existing one with :meth:`open`.
    """

    def __init__(self, path: Path, group: zarr.Group, mode: Literal["r", "r+"]) -> None:
        """Wrap an opened group; use :meth:`create` or :meth:`open` instead."""
        self._path = Path(path)
        self._group = group
        self._mode = mode
        self._attrs = dict(group.attrs.asdict())
        sizes = self._attrs["sizes"]
        self._sizes = {
            "T": int(sizes["n_lines"]),
            "N": int(sizes["n_train"]),
            "M": int(sizes["n_val"]),
            "B": int(sizes["n_direction"]),
            "K": int(sizes["n_positions"]),
        }
        self._lines_per_chunk = int(sizes["lines_per_chunk"])
        version = int(self._attrs.get("schema_version", SCHEMA_VERSION))
        # Every array by its current name, whatever it is called in this store's version: the
        # one place where an older layout is mapped (absent arrays read as fill).
        self._arrays: dict[str, Any] = {}
        self._disk_names: dict[str, str] = {}
        for spec in ARRAYS:
            if spec.since > version:
                continue  # introduced after this store was made: absent, reads as fill
            disk_name = spec.name_in(version)
            try:
                arr = group.get(disk_name)
            except Exception as exc:  # its zarr.json is cut off or not JSON
                arr = self._rebuild_metadata(spec, disk_name, version, exc)
            if not isinstance(arr, zarr.Array):
                raise RunDirError(
                    f"{self._path} is an incomplete line store (array {disk_name!r} is missing); "
                    "delete it and measure again"
                )
            self._arrays[spec.name] = arr
            self._disk_names[spec.name] = disk_name

    def _rebuild_metadata(
        self, spec: ArraySpec, disk_name: str, version: int, exc: Exception
    ) -> Any:
        """The array whose ``zarr.json`` cannot be read: rewritten from the store's layout
        (opened ``r+`` by ``measure``; its chunks are untouched, and verify then checks them
        line by line), else :class:`StoreDamagedError` naming the file and that repair."""
        import shlex
        import tempfile

        meta = self._path / disk_name / "zarr.json"
        run = shlex.quote(str(self._path.parent))
        if version != SCHEMA_VERSION:  # older layouts are read, never rewritten
            raise StoreDamagedError(
                f"{meta} is damaged ({type(exc).__name__}: cut off?) in a schema "
                f"{version} store; restore it from a copy of the run, or measure again into a "
                "new run directory"
            ) from None
        if self._mode != "r+":
            raise StoreDamagedError(
                f"{meta} is damaged ({type(exc).__name__}: cut off?); rewrite it from the "
                f"store's layout with: steplines measure {run} (its data is kept), then check "
                f"the data with: steplines verify {run}"
            ) from None
        with tempfile.TemporaryDirectory(dir=self._path.parent, prefix=".rebuild-") as tmp:
            group = zarr.open_group(Path(tmp) / "g.zarr", mode="w-", zarr_format=3)
            group.create_array(
                spec.name,
                shape=spec.shape(self._sizes),
                chunks=spec.chunks(self._sizes, self._lines_per_chunk),
                dtype=spec.np_dtype,
                fill_value=spec.fill,
                compressors=_compressor(),
                dimension_names=dimension_names(spec),
                attributes=array_attributes(spec),
            )
            write_atomic(meta, (Path(tmp) / "g.zarr" / spec.name / "zarr.json").read_bytes())
        self._group = zarr.open_group(self._path, mode="r+", zarr_format=3)
        return self._group.get(disk_name)

    # ------------------------------------------------------------------ creation / opening

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        n_lines: int,
        n_train: int,
        n_val: int,
        n_direction: int,
        n_positions: int,
        val_indices: np.ndarray,
        lines_per_chunk: int,
        attrs: dict,
    ) -> LineStore:
        """Create a new, empty line store with every array preallocated.

        Args:
            path: Directory of the new Zarr group (conventionally ``<run>/lines.zarr``).
            n_lines: Number of lines ``T``.
            n_train: Measured training samples per line ``N``.
            n_val: Validation samples ``M``.
            n_direction: Direction-batch size ``B``.
            n_positions: Maximum positions per line ``K``.
            val_indices: int ``[M]`` validation sample ids, stored once.
            lines_per_chunk: Lines per chunk of the ``[T]`` and ``[T, K]`` arrays; pass the
                segment length so that writers of different segments never share a chunk.
            attrs: JSON-able run description, stored under the group attribute ``"run"``.

        Returns:
            The store, opened for writing (``mode="r+"``).

        Raises:
            RunDirError: ``path`` already exists.
            ValueError: A size, ``val_indices`` or ``attrs`` is invalid.
        """
        path = Path(path)
        sizes = {"T": n_lines, "N": n_train, "M": n_val, "B": n_direction, "K": n_positions}
        val_indices, run_attrs = _checked_inputs(path, sizes, val_indices, lines_per_chunk, attrs)
        group = zarr.open_group(path, mode="w-", zarr_format=3)
        for spec in ARRAYS:
            group.create_array(
                spec.name,
                shape=spec.shape(sizes),
                chunks=spec.chunks(sizes, lines_per_chunk),
                dtype=spec.np_dtype,
                fill_value=spec.fill,
                compressors=_compressor(),
                dimension_names=dimension_names(spec),
                attributes=array_attributes(spec),
            )
        if n_val:
            group["val_indices"][:] = val_indices.astype(np.int64)
        # Group attributes last: a store without them is not recognised by ``open``.
        group.attrs.update(
            {
                "format": STORE_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "sizes": {
                    "n_lines": n_lines,
                    "n_train": n_train,
                    "n_val": n_val,
                    "n_direction": n_direction,
                    "n_positions": n_positions,
                    "lines_per_chunk": lines_per_chunk,
                },
                "run": run_attrs,
                "val_indices_crc32": val_indices_digest(val_indices),
            }
        )
        return cls(path, zarr.open_group(path, mode="r+", zarr_format=3), "r+")

    @staticmethod
    def looks_like_store(path: Path) -> bool:
        """Whether ``path`` is a Zarr group (a ``lines.zarr`` given in place of its run
        directory); :meth:`open` checks that it is a line store."""
        return (Path(path) / "zarr.json").is_file()

    @classmethod
    def open(cls, path: Path, *, mode: Literal["r", "r+"] = "r") -> LineStore:
        """Open an existing line store.

        Args:
            path: The ``lines.zarr`` directory.
            mode: ``"r"`` to read, ``"r+"`` to also write lines.

        Raises:
            RunDirError: ``path`` is not a line store, or was written with another
                ``schema_version``.
            ValueError: ``mode`` is not ``"r"`` or ``"r+"``.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        path = Path(path)
        not_store = (
            f"{path} is not a steplines line store (expected a lines.zarr directory made by "
            "steplines); pass the lines.zarr inside a run directory"
        )
        if not cls.looks_like_store(path):
            raise RunDirError(not_store)
        try:
            group = zarr.open_group(path, mode=mode, zarr_format=3)
            attrs = group.attrs.asdict()
        except Exception as exc:
            raise RunDirError(f"{not_store} ({type(exc).__name__})") from exc
        if attrs.get("format") != STORE_FORMAT or "sizes" not in attrs:
            raise RunDirError(not_store)
        version = attrs.get("schema_version")
        if version not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise RunDirError(
                f"{path} has line-store schema_version {version}, this steplines reads "
                f"{readable}; analyse it with the steplines version that wrote it, "
                "or measure again into a new run directory"
            )
        return cls(path, group, mode)

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """The ``lines.zarr`` directory."""
        return self._path

    @property
    def n_lines(self) -> int:
        """Number of lines ``T``."""
        return self._sizes["T"]

    @property
    def n_train(self) -> int:
        """Measured training samples per line ``N``."""
        return self._sizes["N"]

    @property
    def n_val(self) -> int:
        """Validation samples ``M``."""
        return self._sizes["M"]

    @property
    def n_direction(self) -> int:
        """Direction-batch size ``B``."""
        return self._sizes["B"]

    @property
    def n_positions(self) -> int:
        """Maximum positions per line ``K``."""
        return self._sizes["K"]

    @property
    def lines_per_chunk(self) -> int:
        """Lines per chunk of the ``[T]`` and ``[T, K]`` arrays."""
        return self._lines_per_chunk

    @property
    def attrs(self) -> dict:
        """The caller-supplied run description given to :meth:`create`."""
        return dict(self._attrs.get("run", {}))

    @property
    def schema_version(self) -> int:
        """Schema version the store was written with."""
        return int(self._attrs["schema_version"])

    def has_array(self, name: str) -> bool:
        """Whether the store holds array ``name`` (stores of older versions lack newer ones)."""
        return name in self._arrays

    @property
    def has_estimator_inputs(self) -> bool:
        """Whether the store has the estimator-input arrays (schema version ≥ 2)."""
        return all(name in self._arrays for name in ESTIMATOR_ARRAYS)

    @property
    def val_indices_crc32(self) -> int | None:
        """CRC32 of ``val_indices`` taken at creation (None: a store older than schema 4)."""
        crc = self._attrs.get("val_indices_crc32")
        return None if crc is None else int(crc)

    def read_row(self, name: str, t: int) -> np.ndarray:
        """Row ``t`` of array ``name`` as stored (its fill value for an array the store lacks).

        Raises:
            Exception: the chunk cannot be decoded (zarr's codec error).
        """
        t = self._check_t(t)
        if name not in self._arrays:
            spec = ARRAYS_BY_NAME[name]
            return np.full(spec.shape(self._sizes)[1:], spec.fill, dtype=spec.np_dtype)
        return np.asarray(self._arrays[name][t])

    @property
    def val_indices(self) -> np.ndarray:
        """int64 ``[M]`` validation sample ids."""
        return np.asarray(self._arrays["val_indices"][:])

    def repair_val_indices(self) -> bool:
        """Rewrite ``val_indices`` when they cannot be decoded or differ from the checksum
        taken at creation, and ``0..M-1`` (what steplines stores) has that checksum; return
        whether they were rewritten. Called by ``measure``: the repair ``verify`` prints."""
        want = self.val_indices_crc32
        if self._mode != "r+" or want is None or not self.n_val:
            return False
        try:
            if val_indices_digest(self.val_indices) == want:
                return False
        except Exception:  # an undecodable chunk
            pass
        canonical = np.arange(self.n_val, dtype=np.int64)
        if val_indices_digest(canonical) != want:
            return False
        self._arrays["val_indices"][:] = canonical
        return True

    # ------------------------------------------------------------------ writing

    def _check_t(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self.n_lines:
            raise IndexError(f"line {t} out of range [0, {self.n_lines})")
        return t

    def _validate(self, record: LineRecord) -> tuple[np.ndarray, int]:
        """Check a record against the store sizes; return float64 positions and k."""
        pos = np.asarray(record.positions)
        if pos.ndim != 1 or pos.dtype.kind != "f":
            raise ValueError(f"positions must be a 1-D float array, got {pos.dtype} {pos.shape}")
        k = pos.shape[0]
        if not 1 <= k <= self.n_positions:
            raise ValueError(f"positions has {k} entries, must be in [1, {self.n_positions}]")
        pos = pos.astype(np.float64)
        if not np.all(np.isfinite(pos)):
            raise ValueError("positions must be finite")
        if np.any(np.diff(pos) < 0):
            raise ValueError("positions must be sorted ascending")
        for name, rows in (
            ("train_losses", self.n_train),
            ("val_losses", self.n_val),
            ("direction_losses", self.n_direction),
        ):
            arr = getattr(record, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                raise ValueError(f"{name} must be a float32 numpy array, got {type(arr)}")
            if arr.shape != (rows, k):
                raise ValueError(f"{name} must have shape ({rows}, {k}), got {arr.shape}")
        index_sizes = (("train_indices", self.n_train), ("direction_indices", self.n_direction))
        for name, rows in index_sizes:
            arr = np.asarray(getattr(record, name))
            if arr.shape != (rows,) or arr.dtype.kind not in "iu":
                raise ValueError(
                    f"{name} must be an integer array of shape ({rows},), "
                    f"got {arr.dtype} {arr.shape}"
                )
        if int(record.n_passes) < 0:
            raise ValueError(f"n_passes must be >= 0, got {record.n_passes}")
        return pos, k

    def write_line(self, t: int, record: LineRecord) -> None:
        """Write line ``t``; ``done[t]`` is set only after everything else is written.

        Rewriting a done line first clears ``done[t]``, so an interrupted rewrite leaves the line
        missing rather than mixed.

        Args:
            t: Line index in ``[0, T)``.
            record: The measurements; see :class:`LineRecord`.

        Raises:
            ValueError: The record does not match the store's sizes or dtypes, or the store was
                opened read-only.
            IndexError: ``t`` is out of range.
        """
        if self._mode != "r+":
            raise ValueError(f"{self._path} was opened read-only; open it with mode='r+'")
        t = self._check_t(t)
        pos, k = self._validate(record)
        a = self._arrays
        K = self.n_positions

        if bool(a["done"][t]):
            a["done"][t] = False

        # Per-sample losses: one full-chunk write each, NaN beyond k.
        for name in PER_SAMPLE_LOSSES:
            losses = getattr(record, name)
            slab = np.full((1, losses.shape[0], K), np.nan, dtype=np.float32)
            slab[0, :, :k] = losses
            a[name][t : t + 1] = slab
        a["train_indices"][t : t + 1] = np.asarray(record.train_indices, np.int64)[None]
        a["direction_indices"][t : t + 1] = np.asarray(record.direction_indices, np.int64)[None]

        stored: dict[str, Any] = {
            "train_indices": np.asarray(record.train_indices, np.int64),
            "direction_indices": np.asarray(record.direction_indices, np.int64),
        }
        row = np.full(K, np.nan)
        row[:k] = pos
        a["positions"][t] = stored["positions"] = row
        for name, mean_name in MEANS.items():
            row = np.full(K, np.nan)
            row[:k] = _row_mean(getattr(record, name))
            a[mean_name][t] = stored[mean_name] = row

        s_update = float(record.s_update)
        scalars: dict[str, float | int] = {
            "s_update": s_update,
            "direction_norm": float(record.direction_norm),
            "grad_norm": float(record.grad_norm),
            "directional_derivative": float(record.directional_derivative),
            "lr": float(record.lr),
            "batch_loss": float(record.batch_loss),
            "n_positions": k,
            "n_passes": int(record.n_passes),
            "update_index": first_match(pos, s_update) if math.isfinite(s_update) else -1,
            "zero_index": first_match(pos, 0.0),
            "checksum": _checksum(record.train_losses, record.val_losses, record.direction_losses),
        }
        for name in ESTIMATOR_ARRAYS:
            if name in a:  # a version-1 store has no estimator arrays: left out
                scalars[name] = float(getattr(record, name))
        for name, value in scalars.items():
            a[name][t] = value
        if "record_checksum" in a:  # schema >= 4: a CRC of everything above, as stored
            stored.update(scalars)
            present = {name: stored[name] for name in DIGESTED if name in a}
            a["record_checksum"][t] = record_digest(present)
        a["done"][t] = True

    def invalidate(self, lines: list[int]) -> None:
        """Mark ``lines`` as not done (their data stays until rewritten); for ``--redo``."""
        if self._mode != "r+":
            raise ValueError(f"{self._path} was opened read-only; open it with mode='r+'")
        for t in lines:
            self._arrays["done"][self._check_t(t)] = False

    # ------------------------------------------------------------------ reading

    def done(self, *, tolerant: bool = False) -> np.ndarray:
        """Return bool ``[T]``: which lines are completely written.

        Raises:
            StoreDamagedError: a chunk of ``done`` cannot be decoded (unless ``tolerant``: its
                lines then read as not done).
        """
        return np.asarray(self.read_array("done", tolerant=tolerant), dtype=bool)

    def missing(self) -> list[int]:
        """Return the lines that are not done, ascending."""
        return [int(t) for t in np.flatnonzero(~self.done())]

    def _read_losses(self, t: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read the per-sample losses of line ``t`` trimmed to ``k`` columns.

        Raises:
            LineCorruptError: A chunk cannot be decoded.
        """
        out = []
        for name in PER_SAMPLE_LOSSES:
            try:
                data = np.asarray(self._arrays[name][t], dtype=np.float32)
            except Exception as exc:  # any codec / shape error of a damaged chunk file
                raise LineCorruptError(
                    f"line {t} of {self._path}: chunk of {name} cannot be read "
                    f"({type(exc).__name__}); measure the line again"
                ) from exc
            out.append(np.ascontiguousarray(data[:, :k]))
        return out[0], out[1], out[2]

    def read_line(self, t: int, *, verify: bool = True) -> LineRecord:
        """Read line ``t``, trimmed to its ``n_positions`` columns.

        Args:
            t: Line index.
            verify: Check the per-sample data against the stored checksum (cheap: CRC32).

        Raises:
            LineNotDoneError: Line ``t`` is not done.
            LineCorruptError: Its data cannot be decoded or fails the checksum.
            IndexError: ``t`` is out of range.
        """
        t = self._check_t(t)
        a = self._arrays
        if not bool(a["done"][t]):
            raise LineNotDoneError(
                f"line {t} of {self._path} has not been measured; measure it first"
            )
        k = int(a["n_positions"][t])
        train, val, direction = self._read_losses(t, k)
        if verify and _checksum(train, val, direction) != int(a["checksum"][t]):
            raise LineCorruptError(
                f"line {t} of {self._path} fails its checksum; measure the line again"
            )
        return LineRecord(
            positions=np.asarray(a["positions"][t], np.float64)[:k],
            train_losses=train,
            val_losses=val,
            direction_losses=direction,
            train_indices=np.asarray(a["train_indices"][t], np.int64),
            direction_indices=np.asarray(a["direction_indices"][t], np.int64),
            s_update=float(a["s_update"][t]),
            direction_norm=float(a["direction_norm"][t]),
            grad_norm=float(a["grad_norm"][t]),
            directional_derivative=float(a["directional_derivative"][t]),
            lr=float(a["lr"][t]),
            batch_loss=float(a["batch_loss"][t]),
            n_passes=int(a["n_passes"][t]),
            **{name: float(a[name][t]) for name in ESTIMATOR_ARRAYS if name in a},
        )

    def read_summary(self, *, tolerant: bool = False) -> dict[str, np.ndarray]:
        """Return every ``[T]`` and ``[T, K]`` array (no per-sample data).

        Lines that are not done hold fill values (NaN, -1, 0); mask with ``summary["done"]``.
        Arrays the store does not have (a version-1 store's estimator arrays) are returned
        filled with their fill value.

        Raises:
            StoreDamagedError: a chunk cannot be decoded (unless ``tolerant``: fill values).
        """
        return {name: self.read_array(name, tolerant=tolerant) for name in SUMMARY}

    def read_array(self, name: str, *, tolerant: bool = False) -> np.ndarray:
        """One whole array, read into memory; one the store lacks (older version) as its fill.

        Args:
            name: the array.
            tolerant: read chunks that cannot be decoded as the fill value (e.g. ``done`` as
                False), instead of raising.

        Raises:
            StoreDamagedError: a chunk cannot be decoded (not ``tolerant``); the message names
                the array, the lines of the chunk and the ``steplines measure --redo`` that
                repairs them.
        """
        spec = ARRAYS_BY_NAME[name]
        if name not in self._arrays:
            return np.full(spec.shape(self._sizes), spec.fill, dtype=spec.np_dtype)
        try:
            return np.asarray(self._arrays[name][:])
        except Exception:  # a damaged chunk file (codec error): find which one
            pass
        out = np.full(spec.shape(self._sizes), spec.fill, dtype=spec.np_dtype)
        bad = []
        for start, end in self._line_chunks(name):
            try:
                out[start:end] = self._arrays[name][start:end]
            except Exception:
                bad.append((start, end))
        if bad and not tolerant:
            raise self._damaged_error({name: bad})
        return out

    def _line_chunks(self, name: str) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` line ranges of the chunks of a ``[T]``/``[T, K]`` array."""
        step = int(self._arrays[name].chunks[0])
        return [(s, min(s + step, self.n_lines)) for s in range(0, self.n_lines, step)]

    def damaged_chunks(
        self, lines: Iterable[int] | None = None
    ) -> dict[str, list[tuple[int, int]]]:
        """``{array: [(start, end), ...]}``: chunks of the ``[T]`` and ``[T, K]`` arrays that
        cannot be decoded (the per-sample chunks are checked by :meth:`verify_line`).

        ``lines``: check only the chunks holding these lines (default: every chunk).
        """
        wanted = None if lines is None else set(lines)
        out: dict[str, list[tuple[int, int]]] = {}
        for name in SUMMARY:
            if name not in self._arrays:
                continue
            if wanted is None:
                try:
                    self._arrays[name][:]
                    continue
                except Exception:
                    pass
            bad = []
            for start, end in self._line_chunks(name):
                if wanted is not None and wanted.isdisjoint(range(start, end)):
                    continue
                try:
                    self._arrays[name][start:end]
                except Exception:
                    bad.append((start, end))
            if bad:
                out[name] = bad
        return out

    def _damaged_error(self, damaged: dict[str, list[tuple[int, int]]]) -> StoreDamagedError:
        import shlex

        lines = sorted({t for ranges in damaged.values() for a, b in ranges for t in range(a, b)})
        what = "; ".join(
            f"{name} (lines {format_lines([t for a, b in r for t in range(a, b)])})"
            for name, r in damaged.items()
        )
        run = shlex.quote(str(self._path.parent))
        return StoreDamagedError(
            f"{self._path}: damaged chunk of {what} cannot be decoded; repair with: "
            f"steplines measure {run} --redo {format_lines(lines)}"
        )

    def check_chunks(
        self, allowed: list[int] | None = None, lines: Iterable[int] | None = None
    ) -> None:
        """Raise :class:`StoreDamagedError` for a damaged chunk of the ``[T]``/``[T, K]``
        arrays (of the chunks holding ``lines``; default all) with lines outside ``allowed``
        (those about to be measured again)."""
        damaged = self.damaged_chunks(lines)
        ok = set(allowed or ())
        bad = {
            name: [(a, b) for a, b in r if not set(range(a, b)) <= ok]
            for name, r in damaged.items()
        }
        bad = {name: r for name, r in bad.items() if r}
        if bad:
            raise self._damaged_error(bad)

    def reset_damaged_chunks(self, lines: list[int]) -> list[int]:
        """Delete the damaged chunk files of the ``[T]``/``[T, K]`` arrays that hold any of
        ``lines`` (they then read as fill: not done); return every line they held.

        Used by ``measure --redo`` before measuring those lines again.
        """
        if self._mode != "r+":
            raise ValueError(f"{self._path} was opened read-only; open it with mode='r+'")
        wanted, reset = set(lines), set()
        for name, ranges in self.damaged_chunks().items():
            arr = self._arrays[name]
            for start, end in ranges:
                if not wanted & set(range(start, end)):
                    continue
                coords = (start // int(arr.chunks[0]),) + (0,) * (arr.ndim - 1)
                key = arr.metadata.encode_chunk_key(coords)
                with contextlib.suppress(FileNotFoundError):
                    (self._path / self._disk_names[name] / key).unlink()
                reset.update(range(start, end))
        return sorted(reset)

    def verify_line(self, t: int) -> bool:
        """Recompute the checksum of line ``t``'s stored per-sample data.

        Returns:
            True if the line is done, decodes and matches its checksum; False otherwise
            (including lines that are not done and chunks that cannot be decoded).
        """
        t = self._check_t(t)
        a = self._arrays
        try:
            if not bool(a["done"][t]):
                return False
            k = int(a["n_positions"][t])
            expected = int(a["checksum"][t])
            train, val, direction = self._read_losses(t, k)
        except Exception:  # corrupt scalar chunk or LineCorruptError
            return False
        return _checksum(train, val, direction) == expected

    def nbytes_on_disk(self) -> int:
        """Total size in bytes of all files under the store directory."""
        total = 0
        for root, _dirs, files in os.walk(self._path):
            for name in files:
                # A concurrent writer's temporary file may vanish meanwhile.
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(root, name)).st_size
        return total

    def __repr__(self) -> str:
        """Short description with sizes and progress."""
        n_done = int(self.done().sum())
        return (
            f"LineStore({str(self._path)!r}, T={self.n_lines}, N={self.n_train}, "
            f"M={self.n_val}, B={self.n_direction}, K={self.n_positions}, done={n_done})"
        )


def differing_arrays(a: Path, b: Path) -> list[str]:
    """Names of the arrays (of :data:`ARRAYS`) whose contents differ between two line stores.

    NaN equals NaN; an array one store lacks (an older schema version) compares as its fill
    value, except ``record_checksum``, which is compared only between schema-4 stores. Used to
    check that resumed, sharded or distributed measurements wrote exactly the
    store of an uninterrupted run.
    """
    sa, sb = LineStore.open(Path(a)), LineStore.open(Path(b))
    older = min(sa.schema_version, sb.schema_version) < 4
    out = []
    for spec in ARRAYS:
        if older and spec.name == "record_checksum":
            continue  # a store from before schema 4 has no checksums to compare
        va, vb = sa.read_array(spec.name), sb.read_array(spec.name)
        if va.shape != vb.shape or not np.array_equal(va, vb, equal_nan=True):
            out.append(spec.name)
    return out
