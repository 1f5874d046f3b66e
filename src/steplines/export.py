"""Labelled views and exports of a run's lines: xarray, netCDF, Parquet, CSV.

:func:`open_lines` gives the measured lines of a run as an :class:`xarray.Dataset` with
coordinates; :func:`export_lines` writes the same data to a file (``steplines export``).

``what="samples"`` (every per-sample loss) has the dimensions

* ``step`` (coordinate: the step t of each line, only done lines),
* ``row``: the rows of a line, training (full batch) rows first, then validation, then
  direction-batch rows; coordinates ``split`` (``row``: ``"train"``, ``"val"`` or
  ``"direction"``) and ``sample`` (``step, row``: the row's index into the problem's
  training set for ``train``/``direction``, into its validation set for ``val``),
* ``position`` (coordinate: the column k of a line); coordinate ``s`` (``step, position``):
  the position's value s, NaN beyond the line's ``n_positions``,

and the variables ``loss`` (``step, row, position``, float32, exactly the stored values), the
mean lines ``train_mean``, ``val_mean``, ``direction_mean`` (``step, position``) and the
per-line scalars of the store (``s_update``, ``direction_norm``, ``grad_norm``, ``lr``, ...;
``step``). ``what="summary"`` has the same without ``loss`` and the ``row`` dimension. Each
variable's attributes give ``units`` and ``description``.

CSV and Parquet hold the same in long form: ``samples`` one row per (step, row, position)
with columns ``step, split, row, sample, position, s, loss``; ``summary`` one row per
(step, position) with ``step, position, s``, the mean lines and the line's scalars. Parquet
stores the units and descriptions as field metadata (and the dataset attributes as schema
metadata); CSV in a sidecar ``<file>.json``. Both are written one line at a time, so memory
stays at one line; netCDF (``scipy`` engine, netCDF-3 64-bit offset: int64 values are stored
as int32) is built in memory. This module never imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from steplines.atomic import temporary_path
from steplines.errors import ConfigError, RunDirError, SteplinesError
from steplines.schedule import parse_steps
from steplines.store import LineStore
from steplines.store.run import RunLayout
from steplines.store.schema import ARRAYS_BY_NAME, SCALARS

__all__ = ["FORMATS", "WHAT", "export_lines", "open_lines", "parse_line_range"]

FORMATS = ("netcdf", "parquet", "csv")
WHAT = ("samples", "summary")
SPLITS = ("train", "val", "direction")
SUFFIX = {"netcdf": ".nc", "parquet": ".parquet", "csv": ".csv"}
PARQUET_HINT = "parquet export needs pyarrow: pip install 'steplines[export]'"

NETCDF_MAX_BYTES = 4 * 2**30 - 2**20
"""Largest ``loss`` array a netCDF export writes: netCDF-3 (64-bit offset) limits a variable
to 4 GiB, and the array is built in memory; larger exports are refused with the way out."""

LINE_SCALARS = tuple(n for n in SCALARS if n not in ("checksum", "done", "n_passes"))

ATTRS: dict[str, dict[str, str]] = {
    "step": {"units": "1", "description": "training step t of the line (0-based)"},
    "position": {"units": "1", "description": "column k of the line's positions"},
    "row": {"units": "1", "description": "row of the line: train rows, then val, then direction"},
    "s": {
        "units": "parameter-space units",
        "description": "distance along the unit update direction d_t = u_t/|u_t| "
        "(Euclidean norm over the trainable parameters); NaN beyond the line's n_positions",
    },
    "split": {
        "units": "1",
        "description": "train: full-batch rows; val: validation rows; direction: the "
        "mini-batch whose update defines the line",
    },
    "sample": {
        "units": "1",
        "description": "index of the row's sample in the problem's training set (train, "
        "direction) or validation set (val); the data set's own ids are the store's run "
        "attributes train_source_indices / val_source_indices",
    },
    "loss": {"units": "nats", "description": "per-sample loss at theta_t + s*d_t"},
    "train_mean": {"units": "nats", "description": "mean loss of the train rows (float64)"},
    "val_mean": {"units": "nats", "description": "mean loss of the val rows (float64)"},
    "direction_mean": {"units": "nats", "description": "mean loss of the direction rows"},
    "s_update": {
        "units": "parameter-space units",
        "description": "position of theta_{t+1} on the line, |u_t|",
    },
    "direction_norm": {
        "units": "parameter-space units per lr",
        "description": "n_t = |u_t| / lr_t, the norm in d_t = -m_t / n_t (|m_t| for SGD)",
    },
    "grad_norm": {"units": "nats per parameter-space unit", "description": "|g_t|"},
    "directional_derivative": {
        "units": "nats per parameter-space unit",
        "description": "exact g_t . d_t, slope of the direction-batch loss at s = 0",
    },
    "lr": {"units": "1", "description": "learning rate of step t"},
    "batch_loss": {"units": "nats", "description": "direction-batch loss at theta_t"},
    "n_positions": {"units": "1", "description": "valid positions of the line"},
    "update_index": {"units": "1", "description": "column of s_update (-1: absent)"},
    "zero_index": {"units": "1", "description": "column of s = 0 (-1: absent)"},
}


def _attrs(name: str, loss_units: str) -> dict[str, str]:
    if name in ATTRS:
        a = dict(ATTRS[name])
    else:  # est_* and anything newer: the schema's own text
        a = {"units": "see description", "description": ARRAYS_BY_NAME[name].meaning}
    if a["units"].startswith("nats"):
        a["units"] = a["units"].replace("nats", loss_units, 1)
    return {k: v.encode("ascii", "replace").decode() for k, v in a.items()}


def _open_store(run: str | Path) -> LineStore:
    path = Path(run)
    store_path = path if LineStore.looks_like_store(path) else RunLayout(path).lines_path
    if not store_path.exists():
        raise RunDirError(
            f"{path} is not a run directory (no {store_path.name}); give a run's directory"
        )
    return LineStore.open(store_path)


def _loss_units(store: LineStore) -> str:
    """Cross-entropy in nats for the built-in problems; a user's loss has its own unit."""
    custom = store.attrs.get("dataset", "custom") == "custom" or "dataset" not in store.attrs
    return "loss units (your loss function)" if custom else "nats"


def parse_line_range(text: str | None, n_lines: int) -> np.ndarray | None:
    """``"0-99"`` or ``"3,17-20"`` → sorted int array of steps; None → None (every line).

    Raises:
        ConfigError: the text is not a list of steps and ranges, or names steps outside
            ``0 .. n_lines-1``.
    """
    if text is None:
        return None
    steps = parse_steps(text, n_lines, "--lines", "steps", "0-99 or 3,17-20")
    return np.array(steps, dtype=np.int64)


def _selected(store: LineStore, lines: str | np.ndarray | list[int] | None) -> np.ndarray:
    done = store.done()
    if isinstance(lines, str) or lines is None:
        wanted = parse_line_range(lines, store.n_lines)
    else:
        wanted = np.asarray(lines, dtype=np.int64)
    steps = np.flatnonzero(done) if wanted is None else wanted[done[wanted]]
    if steps.size == 0:
        which = "" if wanted is None else " among the selected steps"
        raise ConfigError(f"{store.path} has no measured line{which}; nothing to export")
    return steps


def _global_attrs(store: LineStore, what: str) -> dict[str, Any]:
    run = store.attrs
    attrs: dict[str, Any] = {
        "title": f"steplines lines ({what})",
        "source": str(store.path.resolve()),
        "store_schema_version": store.schema_version,
        "dataset": str(run.get("dataset", "custom")),
        "full_batch": str(run.get("full_batch", _config_full_batch(store))),
        "n_train_rows": store.n_train,
        "n_val_rows": store.n_val,
        "n_direction_rows": store.n_direction,
    }
    return attrs


def _config_full_batch(store: LineStore) -> str:
    """``measure.full_batch`` from the run's ``config.toml`` (next to the store), if readable."""
    try:
        cfg = RunLayout(store.path.parent).config_or_none()
    except SteplinesError:  # unreadable or invalid
        return "unknown"
    return cfg.measure.full_batch if cfg is not None else "unknown"


def _split_labels(store: LineStore) -> np.ndarray:
    return np.array(
        ["train"] * store.n_train + ["val"] * store.n_val + ["direction"] * store.n_direction
    )


def open_lines(
    run: str | Path,
    lines: str | np.ndarray | list[int] | None = None,
    what: Literal["samples", "summary"] = "samples",
) -> Any:
    """The done lines of a run as a labelled :class:`xarray.Dataset` (see the module doc).

    Reads the selected lines into memory one at a time (each checked against its CRC32);
    select a few with ``lines`` for a large run.

    Args:
        run: the run directory (or its ``lines.zarr``).
        lines: steps to include (``"0-99"``, ``"3,17-20"`` or a list); default every done
            line. Steps that are not done are left out.
        what: ``"samples"`` (per-sample losses) or ``"summary"`` (mean lines and scalars).

    Raises:
        RunDirError: not a run directory, or a line fails its checksum.
        ConfigError: a bad ``lines`` or ``what``, or no done line is selected.
    """
    import xarray as xr

    if what not in WHAT:
        raise ConfigError(f"what={what!r}: choose one of {', '.join(WHAT)}")
    store = _open_store(run)
    steps = _selected(store, lines)
    summary = store.read_summary()
    k_max = max(1, int(summary["n_positions"][steps].max()))
    units = _loss_units(store)
    coords: dict[str, Any] = {
        "step": ("step", steps, _attrs("step", units)),
        "position": ("position", np.arange(k_max), _attrs("position", units)),
        "s": (("step", "position"), summary["positions"][steps, :k_max], _attrs("s", units)),
    }
    data: dict[str, Any] = {}
    for name in ("train_mean", "val_mean", "direction_mean"):
        data[name] = (("step", "position"), summary[name][steps, :k_max], _attrs(name, units))
    for name in LINE_SCALARS:
        data[name] = ("step", summary[name][steps], _attrs(name, units))
    if what == "samples":
        n_rows = store.n_train + store.n_val + store.n_direction
        loss = np.full((steps.size, n_rows, k_max), np.nan, dtype=np.float32)
        sample = np.empty((steps.size, n_rows), dtype=np.int64)
        for i, (_, rec) in enumerate(_records(store, steps)):
            k = rec.positions.size
            loss[i, :, :k] = np.concatenate(
                [rec.train_losses, rec.val_losses, rec.direction_losses]
            )
            sample[i] = np.concatenate(
                [rec.train_indices, store.val_indices, rec.direction_indices]
            )
        coords["row"] = ("row", np.arange(n_rows), _attrs("row", units))
        coords["split"] = ("row", _split_labels(store), _attrs("split", units))
        coords["sample"] = (("step", "row"), sample, _attrs("sample", units))
        data["loss"] = (("step", "row", "position"), loss, _attrs("loss", units))
    return xr.Dataset(data, coords=coords, attrs=_global_attrs(store, what))


def _records(store: LineStore, steps: np.ndarray) -> Iterator[tuple[int, Any]]:
    for t in steps:
        yield int(t), store.read_line(int(t))


def _long_frames(store: LineStore, steps: np.ndarray, what: str) -> Iterator[Any]:
    """One long-form pandas DataFrame per line (see the module doc for the columns)."""
    import pandas as pd

    summary = store.read_summary()
    splits = _split_labels(store)
    n_rows = splits.size
    if what == "summary":
        for t in steps:
            k = int(summary["n_positions"][t])
            cols: dict[str, Any] = {
                "step": np.full(k, t, dtype=np.int64),
                "position": np.arange(k, dtype=np.int64),
                "s": summary["positions"][t, :k],
            }
            for name in ("train_mean", "val_mean", "direction_mean"):
                cols[name] = summary[name][t, :k]
            for name in LINE_SCALARS:
                cols[name] = np.repeat(summary[name][t], k)
            yield pd.DataFrame(cols)
        return
    for t, rec in _records(store, steps):
        k = rec.positions.size
        loss = np.concatenate([rec.train_losses, rec.val_losses, rec.direction_losses])
        sample = np.concatenate([rec.train_indices, store.val_indices, rec.direction_indices])
        yield pd.DataFrame(
            {
                "step": np.full(n_rows * k, t, dtype=np.int64),
                "split": pd.Categorical(np.repeat(splits, k), categories=list(SPLITS)),
                "row": np.repeat(np.arange(n_rows, dtype=np.int64), k),
                "sample": np.repeat(sample, k),
                "position": np.tile(np.arange(k, dtype=np.int64), n_rows),
                "s": np.tile(rec.positions, n_rows),
                "loss": loss.reshape(-1),
            }
        )


def _column_attrs(columns: list[str], units: str) -> dict[str, dict[str, str]]:
    return {c: _attrs(c, units) for c in columns}


def default_path(run: str | Path, to: str, what: str) -> Path:
    """``RUN/export/lines-<what>.<ext>``."""
    return RunLayout(Path(run)).export_path / f"lines-{what}{SUFFIX[to]}"


def export_lines(
    run: str | Path,
    to: Literal["netcdf", "parquet", "csv"],
    out: str | Path | None = None,
    lines: str | np.ndarray | list[int] | None = None,
    what: Literal["samples", "summary"] = "samples",
) -> Path:
    """Write the run's done lines (or ``lines``) to ``out`` in format ``to``; return the path.

    The file is written under a temporary name and renamed into place, so an interrupted
    export leaves no half file (an existing file of that name is replaced).

    Raises:
        ConfigError: an unknown format or ``what``, bad ``lines``, no done line selected, or
            pyarrow missing for parquet (the message names ``pip install 'steplines[export]'``).
        RunDirError: not a run directory, or a line fails its checksum.
    """
    if to not in FORMATS:
        raise ConfigError(f"--to {to!r}: choose one of {', '.join(FORMATS)}")
    if what not in WHAT:
        raise ConfigError(f"--what {what!r}: choose one of {', '.join(WHAT)}")
    if to == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(PARQUET_HINT) from None
    store = _open_store(run)
    steps = _selected(store, lines)
    if to == "netcdf" and what == "samples":
        k_max = int(store.read_array("n_positions")[steps].max())
        rows = store.n_train + store.n_val + store.n_direction
        size = steps.size * rows * k_max * 4
        if size > NETCDF_MAX_BYTES:
            raise ConfigError(
                f"netCDF export of {steps.size} lines would hold {size / 2**30:.1f} GiB of "
                "losses (netCDF-3 allows 4 GiB per variable, built in memory); export fewer "
                "lines with --lines, or use --to parquet or csv, which stream one line at a time"
            )
    out = Path(out) if out is not None else default_path(run, to, what)
    if out.is_dir():  # checked before anything is written: no stray file beside it
        name = default_path(run, to, what).name
        raise RunDirError(f"--out {out} is a directory; pass a file name, e.g. --out {out / name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out)  # per process; a killed export's leftover is removed here
    try:
        if to == "netcdf":
            open_lines(run, steps, what).to_netcdf(tmp, engine="scipy", format="NETCDF3_64BIT")
        elif to == "parquet":
            _write_parquet(store, steps, what, tmp)
        else:
            _write_csv(store, steps, what, tmp, out)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _write_parquet(store: LineStore, steps: np.ndarray, what: str, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    units = _loss_units(store)
    writer = None
    try:
        for frame in _long_frames(store, steps, what):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                attrs = _column_attrs(list(frame.columns), units)
                fields = [
                    f.with_metadata({k.encode(): v.encode() for k, v in attrs[f.name].items()})
                    for f in table.schema
                ]
                meta = {
                    **(table.schema.metadata or {}),
                    b"steplines": json.dumps(_global_attrs(store, what)).encode(),
                }
                schema = pa.schema(fields, metadata=meta)
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(schema))
    finally:
        if writer is not None:
            writer.close()


def _write_csv(store: LineStore, steps: np.ndarray, what: str, path: Path, final: Path) -> None:
    units = _loss_units(store)
    columns: list[str] = []
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i, frame in enumerate(_long_frames(store, steps, what)):
            columns = list(frame.columns)
            # repr-exact floats: float32 losses read back (as float32) to the same value
            frame.to_csv(f, header=i == 0, index=False, float_format=None)
    sidecar = {"attrs": _global_attrs(store, what), "columns": _column_attrs(columns, units)}
    Path(f"{final}.json").write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
