"""The store's integrity checks are exact by construction and cover every array the analysis
reads (issue 21): a sound store is never called corrupt, a damaged one always is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from steplines.errors import RunDirError
from steplines.store import LineRecord, LineStore
from steplines.store.integrity import bad_lines, refuse_bad_lines, row_mean


def _layouts(x: np.ndarray) -> list[np.ndarray]:
    """The same values in C order, Fortran order, a strided view and a transposed copy."""
    wide = np.repeat(x, 2, axis=1)
    return [x, np.asfortranarray(x), wide[:, ::2], np.ascontiguousarray(x.T).T]


def test_row_mean_is_the_same_bits_for_every_layout() -> None:
    rng = np.random.default_rng(21)
    for _ in range(300):
        n, k = int(rng.integers(0, 2000)), int(rng.integers(1, 50))
        scale = 10.0 ** rng.uniform(-6, 6)
        x = (rng.standard_normal((n, k)) * scale).astype(np.float32)
        if n and rng.random() < 0.2:
            x[rng.integers(0, n), rng.integers(0, k)] = rng.choice([np.inf, np.nan, 1e38])
        want = row_mean(x)
        for y in _layouts(x):
            assert np.array_equal(row_mean(y), want, equal_nan=True)


def _record(rng: np.random.Generator, n: int, m: int, b: int, k: int) -> LineRecord:
    pos = np.sort(np.concatenate([[0.0], rng.uniform(-1, 1, k - 1)]))
    losses = [
        np.asfortranarray((rng.standard_normal((r, k)) * rng.uniform(0.1, 1e4)).astype("f4"))
        for r in (n, m, b)
    ]
    return LineRecord(
        positions=pos,
        train_losses=losses[0],
        val_losses=losses[1],
        direction_losses=losses[2],
        train_indices=rng.permutation(n + 5)[:n],
        direction_indices=rng.permutation(b + 5)[:b],
        s_update=float(pos[-1]),
        direction_norm=1.0,
        grad_norm=2.0,
        directional_derivative=-1.0,
        lr=0.1,
        batch_loss=1.0,
        n_passes=1,
        est_curvature=0.5,
        est_slope_update=0.25,
    )


def _store(path: Path, rng: np.random.Generator, n_lines: int = 6) -> LineStore:
    n, m, b, kmax = (int(v) for v in rng.integers(1, 300, 4))
    kmax = max(2, kmax % 40)
    store = LineStore.create(
        path,
        n_lines=n_lines,
        n_train=n,
        n_val=m,
        n_direction=b,
        n_positions=kmax,
        val_indices=np.arange(m),
        lines_per_chunk=int(rng.integers(1, 4)),
        attrs={},
    )
    for t in range(n_lines):
        store.write_line(t, _record(rng, n, m, b, int(rng.integers(2, kmax + 1))))
    return store


@pytest.mark.parametrize("seed", range(8))
def test_a_written_store_of_any_shape_verifies_clean(tmp_path: Path, seed: int) -> None:
    store = _store(tmp_path / "lines.zarr", np.random.default_rng(seed))
    assert bad_lines(store, deep=True, estimators=True) == {}
    refuse_bad_lines(store)  # does not raise


def _edit(store: LineStore, name: str, t: int, fn) -> None:
    w = LineStore.open(store.path, mode="r+")
    arr = w._arrays[name]
    arr[t] = fn(np.asarray(arr[t]))


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("train_indices", lambda r: r[::-1]),  # swapped sample ids
        ("direction_indices", lambda r: np.roll(r, 1)),
        ("est_curvature", lambda v: v * -30.0),
        ("est_slope_update", lambda v: v + 1.0),
        ("n_passes", lambda v: v + 1),
        ("grad_norm", lambda v: v * 2),
        ("directional_derivative", lambda v: v / 3),
        ("train_mean", lambda r: np.nextafter(r, np.inf)),
        ("positions", lambda r: r * 1.5),
    ],
)
def test_an_edited_array_is_caught_and_refused(tmp_path: Path, name: str, fn) -> None:
    rng = np.random.default_rng(0)
    store = _store(tmp_path / "lines.zarr", rng)
    if store.n_direction < 2 and name == "direction_indices":
        pytest.skip("one direction row")
    _edit(store, name, 3, fn)
    store = LineStore.open(store.path)
    assert list(bad_lines(store)) == [3]
    with pytest.raises(RunDirError, match=r"line 3 cannot be trusted.*--redo 3"):
        refuse_bad_lines(store)


def test_edited_val_indices_make_every_line_bad(tmp_path: Path) -> None:
    store = _store(tmp_path / "lines.zarr", np.random.default_rng(1))
    w = LineStore.open(store.path, mode="r+")
    w._arrays["val_indices"][0] = 7
    assert list(bad_lines(LineStore.open(store.path))) == list(range(6))


def test_a_flipped_index_chunk_is_named(tmp_path: Path) -> None:
    store = _store(tmp_path / "lines.zarr", np.random.default_rng(2))
    arr = store._arrays["train_indices"]
    chunk = store.path / "train_indices" / arr.metadata.encode_chunk_key((2, 0))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert list(bad_lines(store)) == [2]  # it still decodes: the record checksum catches it
    assert bad_lines(store)[2].startswith(("train_indices", "record_checksum"))


def _as_schema_3(path: Path) -> None:
    """What a writer before schema 4 left: no record checksums, schema_version 3."""
    shutil.rmtree(path / "record_checksum")
    group = zarr.open_group(path, mode="r+")
    group.attrs["schema_version"] = 3
    group.attrs.pop("val_indices_crc32", None)


def test_an_older_writers_round_off_is_no_damage(tmp_path: Path) -> None:
    """Before schema 4 the mean's summation order followed the array's layout: a store whose
    train_mean is one ULP off the recomputation verifies clean; a real edit still fails."""
    store = _store(tmp_path / "lines.zarr", np.random.default_rng(3))
    _as_schema_3(store.path)
    _edit(store, "train_mean", 2, lambda r: np.nextafter(r, np.inf))
    assert bad_lines(LineStore.open(store.path), deep=True) == {}
    _edit(store, "train_mean", 4, lambda r: r * 1.001)
    bad = bad_lines(LineStore.open(store.path), deep=True)
    assert list(bad) == [4] and "train_mean" in bad[4]
