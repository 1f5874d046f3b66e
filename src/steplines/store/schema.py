"""The on-disk schema of a line store (``lines.zarr``), spelled out once.

A line store is a Zarr v3 group. Every array is preallocated at creation with its fill value, so
writers never resize anything. Dimension letters:

* ``T``: number of lines (one per SGD step),
* ``K``: maximum number of positions ``s`` per line,
* ``N``: measured training samples, ``M``: validation samples, ``B``: direction-batch samples.

Chunking kinds:

* ``"line"``: one chunk per line, ``(1, <full trailing dims>)`` (per-sample data),
* ``"segment"``: ``lines_per_chunk`` lines per chunk (``[T]`` and ``[T, K]`` arrays), so writers of
  disjoint, ``lines_per_chunk``-aligned segments never touch the same chunk,
* ``"whole"``: a single chunk (``val_indices``).

This module is pure data: it imports neither zarr nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SCHEMA_VERSION = 4
"""Version of the layout below. Bump it on any change that an old reader would misread.

History: 1 — the per-sample line store; 2 — adds the ``[T]`` estimator arrays
(:data:`ESTIMATOR_ARRAYS`); 3 — renames ``update_norm`` to ``direction_norm``. Stores of
versions 1 and 2 are still read and resumed (``READABLE_VERSIONS``), in their own layout: their
missing arrays read as their fill value (NaN, "not measured") and writers leave them out; a
renamed array is read and written under the name it has in that store
(:meth:`ArraySpec.name_in`); 4 — adds ``record_checksum`` (a CRC32 of each line's summary
values and index rows, taken at write time) and the group attribute ``val_indices_crc32``.
"""

READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4)
"""Store versions this code opens. Every array lists the version that introduced it
(:attr:`ArraySpec.since`; arrays newer than a store are absent from it) and the names it had
in older versions (:attr:`ArraySpec.renamed`)."""

STORE_FORMAT = "steplines.lines"
"""Value of the group attribute ``format`` that marks a Zarr group as a line store."""

Chunking = Literal["line", "segment", "whole"]


@dataclass(frozen=True)
class ArraySpec:
    """One array of the line store.

    Attributes:
        name: Array name inside the group of a store of the current version (public, never
            renamed within a schema version).
        dtype: NumPy dtype string.
        dims: Dimension letters, e.g. ``("T", "N", "K")``.
        fill: Fill value of unwritten elements.
        chunking: How the array is chunked (see the module docstring).
        meaning: Unit and meaning, for documentation.
        since: The schema version that introduced the array (absent from older stores).
        renamed: Earlier names, ``((version, old_name), ...)`` ascending: in stores of a
            schema version below ``version`` the array is called ``old_name``.
    """

    name: str
    dtype: str
    dims: tuple[str, ...]
    fill: float | int | bool
    chunking: Chunking
    meaning: str
    since: int = 1
    renamed: tuple[tuple[int, str], ...] = ()

    def name_in(self, version: int) -> str:
        """The array's name inside a store of schema ``version`` (its own name since the
        last rename; the old name in older stores)."""
        for until, old in self.renamed:
            if version < until:
                return old
        return self.name

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Return the array shape for the given dimension sizes (keys ``T, K, N, M, B``)."""
        return tuple(sizes[d] for d in self.dims)

    def chunks(self, sizes: dict[str, int], lines_per_chunk: int) -> tuple[int, ...]:
        """Return the chunk shape for the given sizes and segment length.

        Zero-length dimensions get chunk length 1 (Zarr requires positive chunk lengths).
        """
        full = [max(1, sizes[d]) for d in self.dims]
        if self.chunking == "line":
            full[0] = 1
        elif self.chunking == "segment":
            full[0] = max(1, min(lines_per_chunk, sizes["T"]))
        return tuple(full)

    @property
    def np_dtype(self) -> np.dtype:
        """The dtype as a :class:`numpy.dtype`."""
        return np.dtype(self.dtype)


_NAN = float("nan")

ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "positions",
        "float64",
        ("T", "K"),
        _NAN,
        "segment",
        "Positions s of line t (dimensionless multiples of d_t), sorted ascending; "
        "NaN beyond the line's n_positions.",
    ),
    ArraySpec(
        "train_losses",
        "float32",
        ("T", "N", "K"),
        _NAN,
        "line",
        "Per-sample loss of the measured training samples at theta_t + s*d_t.",
    ),
    ArraySpec(
        "val_losses",
        "float32",
        ("T", "M", "K"),
        _NAN,
        "line",
        "Per-sample loss of the validation samples at theta_t + s*d_t.",
    ),
    ArraySpec(
        "direction_losses",
        "float32",
        ("T", "B", "K"),
        _NAN,
        "line",
        "Per-sample loss of the B samples of the direction batch at theta_t + s*d_t.",
    ),
    ArraySpec(
        "train_indices",
        "int64",
        ("T", "N"),
        -1,
        "line",
        "Sample id (index into the problem's training set) of each train_losses row.",
    ),
    ArraySpec(
        "direction_indices",
        "int64",
        ("T", "B"),
        -1,
        "line",
        "Sample id (index into the training set) of each direction_losses row.",
    ),
    ArraySpec(
        "val_indices",
        "int64",
        ("M",),
        -1,
        "whole",
        "Fixed validation sample ids (index into the validation set), written at creation.",
    ),
    ArraySpec(
        "train_mean",
        "float64",
        ("T", "K"),
        _NAN,
        "segment",
        "Mean over the N train rows, computed by the store in float64 at write time.",
    ),
    ArraySpec(
        "val_mean",
        "float64",
        ("T", "K"),
        _NAN,
        "segment",
        "Mean over the M validation rows, computed by the store in float64 at write time.",
    ),
    ArraySpec(
        "direction_mean",
        "float64",
        ("T", "K"),
        _NAN,
        "segment",
        "Mean over the B direction-batch rows, computed by the store in float64 at write time.",
    ),
    ArraySpec(
        "s_update",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Position of theta_{t+1} on the line, = ||u_t|| (with d_t of unit norm).",
    ),
    ArraySpec(
        "direction_norm",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "n_t = ||u_t|| / lr_t, the update's norm per unit learning rate, which normalises the "
        "line's direction d_t = -m_t / n_t: ||m_t|| for SGD with momentum, ||g_t|| without "
        "(the paper's n_t).",
        renamed=((3, "update_norm"),),
    ),
    ArraySpec(
        "grad_norm",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "||g_t||, norm of the gradient of the direction batch at theta_t.",
    ),
    ArraySpec(
        "directional_derivative",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Exact g_t . d_t, slope of the direction-batch loss along the line at s = 0.",
    ),
    ArraySpec("lr", "float64", ("T",), _NAN, "segment", "Learning rate lr_t of step t."),
    ArraySpec(
        "batch_loss",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Mean loss of the direction batch at theta_t as seen by the optimizer step.",
    ),
    ArraySpec(
        "n_positions",
        "int32",
        ("T",),
        0,
        "segment",
        "Number k <= K of valid columns of line t in all [.., K] arrays.",
    ),
    ArraySpec(
        "n_passes",
        "int32",
        ("T",),
        0,
        "segment",
        "Number of forward passes spent measuring line t.",
    ),
    ArraySpec(
        "update_index",
        "int32",
        ("T",),
        -1,
        "segment",
        "Column of positions equal to s_update (first match), -1 if absent.",
    ),
    ArraySpec(
        "zero_index",
        "int32",
        ("T",),
        -1,
        "segment",
        "Column of positions equal to 0.0 (first match), -1 if absent.",
    ),
    ArraySpec(
        "est_slope_update",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Estimator input: slope of the direction-batch loss along the line at theta_{t+1}, "
        "grad l_B(theta_t + s_update*d_t) . d_t (Cockpit's alpha); NaN: not computed.",
        since=2,
    ),
    ArraySpec(
        "est_curvature",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Estimator input: d_t^T H_B d_t, directional curvature of the direction-batch loss at "
        "theta_t by a Hessian-vector product; NaN: not computed.",
        since=2,
    ),
    ArraySpec(
        "est_sample_grad_sq",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Estimator input: (1/B) sum_i |g_i|^2 over per-sample gradients g_i of the direction "
        "batch at theta_t (gradients of each loss of the one batch forward); NaN on lines "
        "without per-sample gradients (measure.noise_scale_every).",
        since=2,
    ),
    ArraySpec(
        "est_batch_grad_sq",
        "float64",
        ("T",),
        _NAN,
        "segment",
        "Estimator input: |(1/B) sum_i g_i|^2, squared norm of the batch gradient formed from "
        "the same per-sample gradients; NaN on lines without them.",
        since=2,
    ),
    ArraySpec(
        "checksum",
        "int64",
        ("T",),
        -1,
        "segment",
        "zlib.crc32 over the C-contiguous float32 bytes of train_losses, val_losses, "
        "direction_losses of line t (first n_positions columns), in that order.",
    ),
    ArraySpec(
        "record_checksum",
        "int64",
        ("T",),
        -1,
        "segment",
        "zlib.crc32 over line t's stored row of every [T] and [T, K] array and of "
        "train_indices and direction_indices (steplines.store.integrity.record_digest), taken "
        "at write time; -1: not written.",
        since=4,
    ),
    ArraySpec(
        "done",
        "bool",
        ("T",),
        False,
        "segment",
        "True once every other array of line t is written (written last).",
    ),
)
"""Every array of a line store, in write order (``done`` last)."""

ARRAYS_BY_NAME: dict[str, ArraySpec] = {spec.name: spec for spec in ARRAYS}

PER_SAMPLE_LOSSES: tuple[str, ...] = ("train_losses", "val_losses", "direction_losses")
"""Per-sample loss arrays, in checksum order."""

MEANS: dict[str, str] = {
    "train_losses": "train_mean",
    "val_losses": "val_mean",
    "direction_losses": "direction_mean",
}
"""Per-sample array -> its per-line mean array."""

ESTIMATOR_ARRAYS: tuple[str, ...] = (
    "est_slope_update",
    "est_curvature",
    "est_sample_grad_sq",
    "est_batch_grad_sq",
)
"""The ``[T]`` estimator-input arrays (schema version 2; :mod:`steplines.engine.estimators`)."""

SCALARS: tuple[str, ...] = (
    "s_update",
    "direction_norm",
    "grad_norm",
    "directional_derivative",
    "lr",
    "batch_loss",
    "n_positions",
    "n_passes",
    "update_index",
    "zero_index",
    *ESTIMATOR_ARRAYS,
    "checksum",
    "done",
)
"""The ``[T]`` arrays."""

SUMMARY: tuple[str, ...] = tuple(spec.name for spec in ARRAYS if spec.dims in (("T",), ("T", "K")))
"""Arrays returned by ``LineStore.read_summary`` (every ``[T]`` and ``[T, K]`` array)."""

DIMENSION_NAMES: dict[str, str] = {
    "T": "step",
    "K": "position",
    "N": "train_row",
    "M": "val_row",
    "B": "direction_row",
}
"""The ``dimension_names`` written into each array's metadata (stores created since the
labelled export; older stores carry the letters themselves). Metadata only: no reader of the
store depends on them, so the schema version is unchanged. ``xarray.open_zarr`` picks them up."""

COORDINATES: dict[str, str] = {
    "train_losses": "positions train_indices",
    "val_losses": "positions val_indices",
    "direction_losses": "positions direction_indices",
    "train_mean": "positions",
    "val_mean": "positions",
    "direction_mean": "positions",
}
"""CF ``coordinates`` attribute of the line arrays: ``xarray.open_zarr`` attaches the positions
s and the rows' sample ids to them as coordinates."""

LOSS_ARRAYS = ("train_losses", "val_losses", "direction_losses", *MEANS.values(), "batch_loss")

UNITS: dict[str, str] = {
    "positions": "parameter-space units (distance along the unit update direction d_t)",
    "s_update": "parameter-space units",
    **{name: "loss units (nats for cross-entropy)" for name in LOSS_ARRAYS},
}
"""``units`` attribute of the arrays that have a physical unit (others are counts or ids)."""


def dimension_names(spec: ArraySpec) -> tuple[str, ...]:
    """The ``dimension_names`` of ``spec``'s array in a new store (see DIMENSION_NAMES)."""
    return tuple(DIMENSION_NAMES[d] for d in spec.dims)


def array_attributes(spec: ArraySpec) -> dict[str, str]:
    """Attributes of ``spec``'s array in a new store: ``description`` (its meaning),
    ``units`` where it has one, and the CF ``coordinates`` of the line arrays."""
    attrs = {"description": spec.meaning}
    if spec.name in UNITS:
        attrs["units"] = UNITS[spec.name]
    if spec.name in COORDINATES:
        attrs["coordinates"] = COORDINATES[spec.name]
    return attrs
