"""Stores of older schema versions still open, read, resume and analyse under today's names.

The fixture ``fixtures/schema2_run`` is a whole run directory written by steplines before the
line store's schema 3 (commit 26156e0, ``SCHEMA_VERSION = 2``), where ``direction_norm`` was
still called ``update_norm`` — in ``lines.zarr``, in the trajectory's records and in
``live.jsonl``. It was made with::

    steplines run --config tiny.toml --out schema2_run --no-report
    rm -r schema2_run/{tensorboard,locks} schema2_run/trajectory/checkpoint_*.pt

where ``tiny.toml`` is the fixture's own ``config.toml`` (digits, 64 train / 32 validation
images, batch 32, 3 steps, paper grid ±0.5 step 0.1 with at most 2 passes, noisy directions at
step 0, estimator inputs on every line and per-sample gradients on lines 0 and 2). The raw zarr
arrays, read with zarr alone under their old names, are the oracle.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from steplines.store import SCHEMA_VERSION, LineStore
from steplines.store.schema import ARRAYS, READABLE_VERSIONS, SUMMARY

FIXTURE = Path(__file__).parent / "fixtures" / "schema2_run"

OLD_NAMES = {"direction_norm": "update_norm"}
"""Arrays renamed in schema 3: current name -> name in a schema-2 store (the oracle's map)."""

SCALAR_FIELDS = (
    "s_update",
    "direction_norm",
    "grad_norm",
    "directional_derivative",
    "lr",
    "batch_loss",
    "est_slope_update",
    "est_curvature",
    "est_sample_grad_sq",
    "est_batch_grad_sq",
)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A private copy of the schema-2 run directory (tests may write into it)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def _raw(run: Path, name: str) -> np.ndarray:
    """Array ``name`` (current name) of the schema-2 store, read with zarr alone."""
    group = zarr.open_group(run / "lines.zarr", mode="r")
    return np.asarray(group[OLD_NAMES.get(name, name)][...])


def test_fixture_is_a_schema_2_store_with_the_old_names() -> None:
    group = zarr.open_group(FIXTURE / "lines.zarr", mode="r")
    assert group.attrs["schema_version"] == 2 and 2 in READABLE_VERSIONS
    names = set(group.array_keys())
    assert "update_norm" in names and "direction_norm" not in names
    assert {"est_curvature", "directional_derivative"} <= names
    assert np.asarray(group["done"][...]).all()


def test_schema_2_store_reads_every_array_under_the_new_names(run: Path) -> None:
    store = LineStore.open(run / "lines.zarr")
    assert store.schema_version == 2 and store.has_estimator_inputs
    assert store.has_array("direction_norm") and not store.has_array("update_norm")
    for spec in ARRAYS:
        if spec.since > 2:  # newer than the store: absent, reads as fill
            assert not store.has_array(spec.name)
            continue
        got, want = store.read_array(spec.name), _raw(run, spec.name)
        assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), spec.name
    summary = store.read_summary()
    assert set(summary) == set(SUMMARY) and "direction_norm" in summary
    assert np.isfinite(summary["direction_norm"]).all()
    for t in range(store.n_lines):
        assert store.verify_line(t)
        line = store.read_line(t)
        k = int(_raw(run, "n_positions")[t])
        for name in ("train_losses", "val_losses", "direction_losses"):
            assert np.array_equal(getattr(line, name), _raw(run, name)[t, :, :k]), name
        assert np.array_equal(line.positions, _raw(run, "positions")[t, :k])
        assert np.array_equal(line.train_indices, _raw(run, "train_indices")[t])
        for name in SCALAR_FIELDS:
            want = _raw(run, name)[t]
            assert getattr(line, name) == want or (np.isnan(want) and np.isnan(getattr(line, name)))
        assert line.n_passes == _raw(run, "n_passes")[t]


def test_schema_2_run_exports_under_the_new_names(run: Path) -> None:
    from steplines.export import open_lines

    ds = open_lines(run, what="summary")
    assert "update_norm" not in ds and ds.attrs["store_schema_version"] == 2
    np.testing.assert_array_equal(ds["direction_norm"].values, _raw(run, "direction_norm"))


def test_resuming_a_schema_2_store_keeps_its_layout(run: Path) -> None:
    """A line measured again into an old store is written under the store's own names."""
    path = run / "lines.zarr"
    store = LineStore.open(path, mode="r+")
    old = store.read_line(1)
    store.write_line(1, dataclasses.replace(old, direction_norm=7.5, est_curvature=2.0))
    assert not (path / "direction_norm").exists()
    assert _raw(run, "direction_norm")[1] == 7.5 and _raw(run, "est_curvature")[1] == 2.0
    again = LineStore.open(path)
    assert again.schema_version == 2 and again.read_line(1).direction_norm == 7.5
    assert again.verify_line(1)


def test_schema_2_run_analyses_with_the_new_column_names(run: Path) -> None:
    import pandas as pd

    from steplines.analysis import analyze_run

    tables = analyze_run(run)
    deriv = pd.read_csv(tables.path("derivatives")).set_index("line")
    assert "update_norm" not in deriv and "delta_exact" not in deriv
    lines = deriv.index.to_numpy()
    np.testing.assert_array_equal(deriv.direction_norm, _raw(run, "direction_norm")[lines])
    np.testing.assert_array_equal(
        deriv.directional_derivative, _raw(run, "directional_derivative")[lines]
    )
    summary = json.loads(tables.path("summary").read_text())
    assert "s_opt_over_direction_norm" in summary["ratios"]
    assert summary["estimators"]["store_has_inputs"]
    assert summary["noisy_directions"]["positions"] == 1  # directions.zarr: name unchanged
    # an analysis written before the renames is redone by the report, not misread
    from steplines.analysis.tables import AnalysisTables

    adir = tables.directory
    assert AnalysisTables.is_current(adir, run, "corrected")
    text = tables.path("derivatives").read_text()
    tables.path("derivatives").write_text(text.replace("direction_norm", "update_norm", 1))
    assert not AnalysisTables.is_current(adir, run, "corrected")


def test_old_trajectory_records_and_live_records_read_under_the_new_name(run: Path) -> None:
    from steplines.live import read_live
    from steplines.trajectory.storage import TrajectoryDir

    with np.load(run / "trajectory" / "steps_0000000.npz") as z:
        assert "update_norm" in z.files
        old = np.asarray(z["update_norm"])
    records = TrajectoryDir(run / "trajectory").load_records(0)
    assert [r.direction_norm for r in records] == old.tolist()
    np.testing.assert_array_equal(old, _raw(run, "direction_norm"))
    assert '"update_norm"' in (run / "live.jsonl").read_text()
    live = read_live(run)
    assert [r["t"] for r in live] == [0, 1, 2]
    assert all("update_norm" not in r for r in live)
    assert [r["direction_norm"] for r in live] == pytest.approx(_raw(run, "direction_norm"))


def test_a_new_store_has_the_current_version_and_names(tmp_path: Path) -> None:
    from analysis_fixtures import make_run

    run = make_run(tmp_path / "new", n_lines=2)
    store = LineStore.open(run / "lines.zarr")
    assert store.schema_version == SCHEMA_VERSION == 4
    group = zarr.open_group(run / "lines.zarr", mode="r")
    names = set(group.array_keys())
    assert "direction_norm" in names and "update_norm" not in names
    assert names == {spec.name for spec in ARRAYS}
    assert np.isfinite(np.asarray(group["direction_norm"][...])).all()


def test_a_schema_2_run_verifies_clean_without_record_checksums(run: Path) -> None:
    from steplines.store.integrity import bad_lines

    store = LineStore.open(run / "lines.zarr")
    assert not store.has_array("record_checksum") and store.val_indices_crc32 is None
    assert bad_lines(store, deep=True) == {}
