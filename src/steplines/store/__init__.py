"""Storage of line measurements (``lines.zarr``); never imports torch."""

from steplines.store.lines import (
    LineCorruptError,
    LineNotDoneError,
    LineRecord,
    LineStore,
    StoreDamagedError,
    differing_arrays,
)
from steplines.store.schema import ARRAYS, SCHEMA_VERSION, ArraySpec

__all__ = [
    "ARRAYS",
    "SCHEMA_VERSION",
    "ArraySpec",
    "LineCorruptError",
    "LineNotDoneError",
    "LineRecord",
    "LineStore",
    "StoreDamagedError",
    "differing_arrays",
]
