"""Labelled export: open_lines and `steplines export` round trips, exact against the store."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from steplines.errors import ConfigError
from steplines.export import export_lines, open_lines
from steplines.store import LineStore

from support import TINY, steplines

SPLITS = {"train": "train_losses", "val": "val_losses", "direction": "direction_losses"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny measured run of 6 lines (lines 0 and 5 left unmeasured for --lines tests)."""
    from steplines.config import load_config
    from steplines.measure import run_all
    from steplines.rundir import RunDir

    base = tmp_path_factory.mktemp("export")
    (base / "c.toml").write_text(TINY.format(steps=6))
    rd = RunDir.prepare(base / "run", load_config(path=base / "c.toml"))
    run_all(rd)
    LineStore.open(rd.lines_path, mode="r+").invalidate([5])  # a line not done
    return rd.path


def _rows(store: LineStore, t: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (sample ids, float32 losses [rows, k]) of stored line t."""
    rec = store.read_line(t)
    ids = {"train": rec.train_indices, "val": store.val_indices, "direction": rec.direction_indices}
    return {s: (ids[s], getattr(rec, name)) for s, name in SPLITS.items()}


def _check_dataset(ds: xr.Dataset, store: LineStore, steps: list[int]) -> None:
    assert ds["step"].values.tolist() == steps
    assert ds["loss"].dtype == np.float32
    summary = store.read_summary()
    for i, t in enumerate(steps):
        k = int(summary["n_positions"][t])
        np.testing.assert_array_equal(ds["s"].values[i, :k], summary["positions"][t, :k])
        assert np.isnan(ds["s"].values[i, k:]).all()
        for split, (ids, losses) in _rows(store, t).items():
            rows = ds["split"].values == split
            np.testing.assert_array_equal(ds["sample"].values[i, rows], ids)
            got = ds["loss"].values[i][rows][:, :k]
            assert got.dtype == np.float32 and np.array_equal(got, losses)  # exact
        assert ds["s_update"].values[i] == summary["s_update"][t]
        np.testing.assert_array_equal(ds["train_mean"].values[i, :k], summary["train_mean"][t, :k])


def test_open_lines_has_coordinates_units_and_the_stored_values(run: Path) -> None:
    store = LineStore.open(run / "lines.zarr")
    ds = open_lines(run)
    assert set(ds.dims) == {"step", "row", "position"}
    assert {"step", "position", "s", "split", "sample"} <= set(ds.coords)
    assert ds["loss"].dims == ("step", "row", "position")
    assert ds["sample"].dims == ("step", "row") and ds["s"].dims == ("step", "position")
    assert "parameter-space" in ds["s"].attrs["units"] and ds["loss"].attrs["units"] == "nats"
    _check_dataset(ds, store, [0, 1, 2, 3, 4])  # line 5 is not done: left out
    sub = open_lines(run, lines="1-2", what="summary")
    assert sub["step"].values.tolist() == [1, 2] and "loss" not in sub


def test_netcdf_round_trip_is_exact(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    out = tmp_path / "lines.nc"
    res = steplines("export", str(run), "--to", "netcdf", "--out", str(out), "--lines", "1-5")
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(out, engine="scipy") as back:
        _check_dataset(back.load(), LineStore.open(run / "lines.zarr"), [1, 2, 3, 4])
        assert back["loss"].attrs["description"].startswith("per-sample loss")


def _check_long(frame: pd.DataFrame, store: LineStore, steps: list[int]) -> None:
    assert sorted(frame["step"].unique().tolist()) == steps
    summary = store.read_summary()
    for t in steps:
        k = int(summary["n_positions"][t])
        line = frame[frame["step"] == t]
        for split, (ids, losses) in _rows(store, t).items():
            part = line[line["split"] == split].sort_values(["row", "position"])
            n = ids.size
            got = part["loss"].to_numpy(np.float32).reshape(n, k)
            assert np.array_equal(got, losses)
            np.testing.assert_array_equal(part["sample"].to_numpy()[::k], ids)
            np.testing.assert_array_equal(part["s"].to_numpy()[:k], summary["positions"][t, :k])


def test_parquet_round_trip_is_exact_with_units(run: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = export_lines(run, "parquet", tmp_path / "l.parquet", lines="2,4")
    frame = pd.read_parquet(out)
    assert frame["loss"].dtype == np.float32
    _check_long(frame, LineStore.open(run / "lines.zarr"), [2, 4])
    schema = pq.read_schema(out)
    assert schema.field("loss").metadata[b"units"] == b"nats"
    assert b"distance along the unit update direction" in schema.field("s").metadata[b"description"]
    summary = pd.read_parquet(export_lines(run, "parquet", tmp_path / "s.parquet", what="summary"))
    assert {"step", "position", "s", "train_mean", "s_update"} <= set(summary.columns)


def test_csv_round_trip_is_exact_with_a_sidecar(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.csv"
    res = steplines("export", str(run), "--to", "csv", "--out", str(out), "--lines", "0-1")
    assert res.returncode == 0, res.stderr
    frame = pd.read_csv(out, dtype={"loss": np.float32})
    _check_long(frame, LineStore.open(run / "lines.zarr"), [0, 1])
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["columns"]["sample"]["description"].startswith("index of the row's sample")


def test_bad_export_input_is_one_line(run: Path, tmp_path: Path, monkeypatch) -> None:
    for args, msg in (
        (("--to", "csv", "--lines", "7"), "outside 0..5"),
        (("--to", "csv", "--lines", "5"), "no measured line among the selected"),
        (("--to", "csv", "--lines", "a-b"), "give steps like 0-99"),
        (("--to", "xls"), "Invalid value for '--to'"),
    ):
        res = steplines("export", str(run), *args)
        assert res.returncode == 2 and msg in res.stderr and "Traceback" not in res.stderr
    res = steplines("export", str(tmp_path / "nothing"), "--to", "csv")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "not a run" in res.stderr
    monkeypatch.setattr("steplines.export.NETCDF_MAX_BYTES", 1000)
    with pytest.raises(ConfigError, match="use --to parquet or csv"):
        export_lines(run, "netcdf", tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # pyarrow not installed
    with pytest.raises(ConfigError, match=r"pip install 'steplines\[export\]'"):
        export_lines(run, "parquet", tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_open_zarr_gives_the_labelled_dimensions_and_coordinates(run: Path) -> None:
    ds = xr.open_zarr(run / "lines.zarr", consolidated=False)
    loss = ds["train_losses"]
    assert loss.dims == ("step", "train_row", "position")
    assert {"positions", "train_indices"} <= set(loss.coords)
    assert ds["val_losses"].dims == ("step", "val_row", "position")
    assert "val_indices" in ds["val_losses"].coords
    assert ds["positions"].attrs["units"].startswith("parameter-space units")
    lines = open_lines(run, lines="3")
    train = (lines["split"] == "train").values
    k = int(ds["n_positions"].values[3])
    np.testing.assert_array_equal(
        loss.isel(step=3).values[:, :k], lines["loss"].values[0][train][:, :k]
    )
    np.testing.assert_array_equal(
        ds["train_indices"].isel(step=3).values, lines["sample"].values[0][train]
    )


def test_a_store_with_the_old_dimension_letters_reads_the_same(run: Path, tmp_path: Path) -> None:
    """Stores made before the labelled metadata (dimension letters, no attributes) still read."""
    old = tmp_path / "old"
    shutil.copytree(run, old)
    for meta in (old / "lines.zarr").glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        names = {"step": "T", "position": "K", "train_row": "N", "val_row": "M"}
        names["direction_row"] = "B"
        doc["dimension_names"] = [names[d] for d in doc["dimension_names"]]
        doc["attributes"] = {}
        meta.write_text(json.dumps(doc))
    store = LineStore.open(old / "lines.zarr")
    _check_dataset(open_lines(old), store, [0, 1, 2, 3, 4])
    assert xr.open_zarr(old / "lines.zarr", consolidated=False)["train_losses"].dims == (
        "T",
        "N",
        "K",
    )
    new = LineStore.open(run / "lines.zarr")
    for t in range(5):
        assert store.read_line(t).positions.tolist() == new.read_line(t).positions.tolist()
