"""Tests of the line store (``steplines.store``)."""

from __future__ import annotations

import json
import multiprocessing
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from steplines.errors import RunDirError
from steplines.store import (
    ARRAYS,
    SCHEMA_VERSION,
    LineCorruptError,
    LineNotDoneError,
    LineRecord,
    LineStore,
)
from steplines.store.schema import SUMMARY

N, M, B, K = 7, 5, 3, 6
REPO = Path(__file__).resolve().parents[2]


def make_record(t: int, k: int, n: int = N, m: int = M, b: int = B) -> LineRecord:
    """A deterministic record for line ``t`` with ``k`` positions (0 and s_update included)."""
    rng = np.random.default_rng(1000 + t)
    s_update = 0.25 + 0.01 * t
    extra = np.linspace(-1.0, 2.0, max(k - 2, 0)) + 0.001
    pos = np.sort(np.concatenate([[0.0, s_update], extra]))[:k]
    return LineRecord(
        positions=pos,
        train_losses=rng.normal(1, 0.1, (n, k)).astype(np.float32),
        val_losses=rng.normal(1, 0.1, (m, k)).astype(np.float32),
        direction_losses=rng.normal(1, 0.1, (b, k)).astype(np.float32),
        train_indices=rng.integers(0, 10_000, n),
        direction_indices=rng.integers(0, 10_000, b),
        s_update=s_update,
        direction_norm=2.5 + t,
        grad_norm=1.5 + t,
        directional_derivative=-1.0 - t,
        lr=0.1,
        batch_loss=1.0 + t,
        n_passes=3 * k,
    )


def new_store(path: Path, n_lines: int = 5, lines_per_chunk: int = 2, **sizes: int) -> LineStore:
    n, m, b, k = (sizes.get(x, d) for x, d in (("n", N), ("m", M), ("b", B), ("k", K)))
    return LineStore.create(
        path / "lines.zarr",
        n_lines=n_lines,
        n_train=n,
        n_val=m,
        n_direction=b,
        n_positions=k,
        val_indices=np.arange(100, 100 + m),
        lines_per_chunk=lines_per_chunk,
        attrs={"problem": "toy", "seed": 3},
    )


def assert_same(got: LineRecord, want: LineRecord) -> None:
    for field in (
        "positions",
        "train_losses",
        "val_losses",
        "direction_losses",
        "train_indices",
        "direction_indices",
    ):
        g, w = getattr(got, field), getattr(want, field)
        assert g.dtype == w.dtype or field.endswith("indices"), field
        np.testing.assert_array_equal(g, w, err_msg=field)
    for field in (
        "s_update",
        "direction_norm",
        "grad_norm",
        "directional_derivative",
        "lr",
        "batch_loss",
        "n_passes",
    ):
        assert getattr(got, field) == getattr(want, field), field


def chunk_file(store_path: Path, name: str, t: int) -> Path:
    """The chunk file of line ``t`` of a per-line chunked array (default ``c/`` key encoding)."""
    ndim = len(zarr.open_array(store_path / name, mode="r").shape)
    return store_path / name / "c" / str(t) / Path(*["0"] * (ndim - 1))


# --------------------------------------------------------------------------- round trip


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    written = {0: make_record(0, K), 2: make_record(2, 3), 3: make_record(3, 1)}
    for t, rec in written.items():
        store.write_line(t, rec)

    for s in (store, LineStore.open(tmp_path / "lines.zarr")):
        assert (s.n_lines, s.n_train, s.n_val, s.n_direction, s.n_positions) == (5, N, M, B, K)
        assert s.attrs == {"problem": "toy", "seed": 3}
        assert s.schema_version == SCHEMA_VERSION
        np.testing.assert_array_equal(s.val_indices, np.arange(100, 100 + M))
        assert s.missing() == [1, 4]
        np.testing.assert_array_equal(s.done(), [True, False, True, True, False])
        for t, rec in written.items():
            assert_same(s.read_line(t), rec)
            assert s.verify_line(t)
        assert not s.verify_line(1)
        with pytest.raises(LineNotDoneError):
            s.read_line(1)

        summary = s.read_summary()
        assert set(summary) == set(SUMMARY)
        for t, rec in written.items():
            k = rec.positions.size
            np.testing.assert_array_equal(summary["positions"][t, :k], rec.positions)
            assert np.isnan(summary["positions"][t, k:]).all()
            for name, mean in (
                ("train_losses", "train_mean"),
                ("val_losses", "val_mean"),
                ("direction_losses", "direction_mean"),
            ):
                want = getattr(rec, name).astype(np.float64).mean(axis=0)
                assert summary[mean].dtype == np.float64
                np.testing.assert_array_equal(summary[mean][t, :k], want)
                assert np.isnan(summary[mean][t, k:]).all()
            assert summary["n_positions"][t] == k
            assert summary["zero_index"][t] == int(np.flatnonzero(rec.positions == 0.0)[0])
            ui = np.flatnonzero(rec.positions == rec.s_update)
            assert summary["update_index"][t] == (ui[0] if ui.size else -1)
            assert summary["s_update"][t] == rec.s_update
        assert summary["update_index"][3] == -1  # k=1: only s=0 kept
        for t in (1, 4):
            assert np.isnan(summary["positions"][t]).all()
            assert summary["n_positions"][t] == 0 and summary["checksum"][t] == -1

    # NaN padding beyond k on disk, raw zarr view.
    raw = zarr.open_array(tmp_path / "lines.zarr" / "train_losses", mode="r")
    assert np.isnan(raw[2, :, 3:]).all() and not np.isnan(raw[2, :, :3]).any()
    assert np.isnan(raw[1]).all()


def test_means_with_zero_rows(tmp_path: Path) -> None:
    store = new_store(tmp_path, m=0)
    rec = make_record(0, 4, m=0)
    store.write_line(0, rec)
    got = store.read_line(0)
    assert got.val_losses.shape == (0, 4)
    assert np.isnan(store.read_summary()["val_mean"][0]).all()


def test_write_validation(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    rec = make_record(0, 4)
    bad = {
        "positions": rec.positions[::-1].copy(),
        "train_losses": rec.train_losses.astype(np.float64),
        "val_losses": rec.val_losses[:, :3],
        "direction_indices": rec.direction_indices[:2],
    }
    for field, value in bad.items():
        kwargs = {**rec.__dict__, field: value}
        with pytest.raises(ValueError, match=field):
            store.write_line(0, LineRecord(**kwargs))
    with pytest.raises(ValueError, match="positions"):
        store.write_line(0, make_record(0, K + 1))
    nan_pos = rec.positions.copy()
    nan_pos[1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        store.write_line(0, LineRecord(**{**rec.__dict__, "positions": nan_pos}))
    with pytest.raises(IndexError):
        store.write_line(5, rec)
    assert store.missing() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="read-only"):
        LineStore.open(tmp_path / "lines.zarr").write_line(0, rec)
    with pytest.raises(RunDirError, match="already exists"):
        new_store(tmp_path)


# --------------------------------------------------------------------------- done last


class _FailingDone:
    """Wraps the ``done`` array so that setting True raises (a crash right before done)."""

    def __init__(self, arr: zarr.Array) -> None:
        self.arr = arr

    def __getitem__(self, key: object) -> object:
        return self.arr[key]

    def __setitem__(self, key: object, value: object) -> None:
        if bool(value):
            raise KeyboardInterrupt("simulated crash before done")
        self.arr[key] = value


def test_done_written_last(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.write_line(1, make_record(1, K))
    store._arrays["done"] = _FailingDone(store._arrays["done"])
    for t in (0, 1):  # a fresh line, and a rewrite of a done line
        with pytest.raises(KeyboardInterrupt):
            store.write_line(t, make_record(t + 10, 4))
    reopened = LineStore.open(tmp_path / "lines.zarr")
    assert reopened.missing() == [0, 1, 2, 3, 4]
    # All data of line 0 was written before the simulated crash.
    assert reopened.read_summary()["n_positions"][0] == 4
    with pytest.raises(LineNotDoneError):
        reopened.read_line(0)


# --------------------------------------------------------------------------- open errors


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert "\n" not in msg and msg
    return msg


def test_schema_version_mismatch(tmp_path: Path) -> None:
    new_store(tmp_path)
    group = zarr.open_group(tmp_path / "lines.zarr", mode="r+")
    group.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RunDirError) as exc:
        LineStore.open(tmp_path / "lines.zarr")
    msg = _one_line(exc.value)
    assert str(tmp_path / "lines.zarr") in msg and "schema_version" in msg


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "plain_zarr", "garbage_json"])
def test_not_a_store(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.zarr"
    if kind == "empty_dir":
        path.mkdir()
    elif kind == "plain_zarr":
        zarr.open_group(path, mode="w").attrs["foo"] = 1
    elif kind == "garbage_json":
        path.mkdir()
        (path / "zarr.json").write_text("{not json")
    with pytest.raises(RunDirError) as exc:
        LineStore.open(path)
    msg = _one_line(exc.value)
    assert str(path) in msg and "not a steplines line store" in msg


# --------------------------------------------------------------------------- checksums


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "garbage"])
def test_verify_detects_damaged_chunk(tmp_path: Path, damage: str) -> None:
    store = new_store(tmp_path, n=200, k=K)
    for t in range(3):
        store.write_line(t, make_record(t, K, n=200))
    path = chunk_file(store.path, "train_losses", 1)
    assert path.is_file()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        buf = bytearray(data)
        buf[len(buf) // 2] ^= 0xFF
        path.write_bytes(bytes(buf))
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"\x00garbage" * 10)
    reopened = LineStore.open(store.path)
    assert reopened.verify_line(0) and reopened.verify_line(2)
    assert not reopened.verify_line(1)
    with pytest.raises(LineCorruptError) as exc:
        reopened.read_line(1)
    _one_line(exc.value)
    # Re-measuring the line repairs it.
    LineStore.open(store.path, mode="r+").write_line(1, make_record(1, K, n=200))
    assert LineStore.open(store.path).verify_line(1)


# --------------------------------------------------------------------------- concurrency


def _write_block(path: str, lines: list[int]) -> None:
    store = LineStore.open(Path(path), mode="r+")
    for t in lines:
        store.write_line(t, make_record(t, 2 + t % (K - 1)))


def test_two_processes_disjoint_segments(tmp_path: Path) -> None:
    lpc, n_lines = 4, 16
    store = new_store(tmp_path, n_lines=n_lines, lines_per_chunk=lpc)
    blocks = [
        [t for t in range(n_lines) if (t // lpc) % 2 == 0],
        [t for t in range(n_lines) if (t // lpc) % 2 == 1],
    ]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_block, args=(str(store.path), b)) for b in blocks]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    reopened = LineStore.open(store.path)
    assert reopened.missing() == []
    for t in range(n_lines):
        assert_same(reopened.read_line(t), make_record(t, 2 + t % (K - 1)))


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from steplines.store import LineRecord, LineStore

    store = LineStore.open(Path(sys.argv[1]), mode="r+")
    n, m, b, k = store.n_train, store.n_val, store.n_direction, store.n_positions
    rng = np.random.default_rng(0)
    print("ready", flush=True)
    for t in range(store.n_lines):
        pos = np.linspace(-1.0, 2.0, k)
        pos[k // 3] = 0.0
        pos.sort()
        store.write_line(t, LineRecord(
            positions=pos,
            train_losses=rng.normal(1, 0.1, (n, k)).astype(np.float32),
            val_losses=rng.normal(1, 0.1, (m, k)).astype(np.float32),
            direction_losses=rng.normal(1, 0.1, (b, k)).astype(np.float32),
            train_indices=np.arange(n), direction_indices=np.arange(b),
            s_update=0.0, direction_norm=1.0, grad_norm=1.0, directional_derivative=-1.0,
            lr=0.1, batch_loss=1.0, n_passes=k))
    print("finished", flush=True)
    """
)


def test_sigkill_leaves_only_good_lines(tmp_path: Path) -> None:
    """Five writers, each SIGKILLed after a seeded random delay; done lines must be intact."""
    rng = random.Random(1234)
    script = tmp_path / "writer.py"
    script.write_text(_KILL_SCRIPT)
    stores, procs = [], []
    for rep in range(5):  # run the repetitions side by side to keep the test fast
        store = new_store(
            tmp_path / f"run{rep}", n_lines=400, lines_per_chunk=8, n=500, m=200, b=32, k=40
        )
        stores.append(store)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(store.path)], stdout=subprocess.PIPE, text=True
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    delays = [rng.uniform(0.02, 0.3) for _ in procs]
    for i in sorted(range(len(procs)), key=delays.__getitem__):
        time.sleep(max(0.0, start + delays[i] - time.monotonic()))
        procs[i].send_signal(signal.SIGKILL)
    n_done_seen = []
    for store, proc in zip(stores, procs, strict=True):
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        reopened = LineStore.open(store.path)
        done = reopened.done()
        n_done_seen.append(int(done.sum()))
        summary = reopened.read_summary()
        for t in np.flatnonzero(done):
            assert reopened.verify_line(int(t)), t
            rec = reopened.read_line(int(t))
            assert rec.train_losses.shape == (500, 40)
            assert np.isfinite(rec.train_losses).all()
            assert summary["zero_index"][t] >= 0
        # Lines are written in order, so the done lines form a prefix.
        assert done[: done.sum()].all()
    assert max(n_done_seen) < 400, f"a writer finished before being killed: {n_done_seen}"
    print("lines done when killed:", n_done_seen)
    assert max(n_done_seen) > 0, f"no writer got a line done before being killed: {n_done_seen}"


# --------------------------------------------------------------------------- misc


def test_store_does_not_import_torch() -> None:
    code = "import steplines.store, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_nbytes_and_attrs_are_json(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    before = store.nbytes_on_disk()
    store.write_line(0, make_record(0, K))
    assert store.nbytes_on_disk() > before > 0
    meta = json.loads((store.path / "zarr.json").read_text())
    assert meta["attributes"]["schema_version"] == SCHEMA_VERSION
    assert meta["attributes"]["run"] == {"problem": "toy", "seed": 3}
    with pytest.raises(ValueError, match="JSON"):
        LineStore.create(
            tmp_path / "other.zarr",
            n_lines=2,
            n_train=1,
            n_val=0,
            n_direction=1,
            n_positions=2,
            val_indices=np.arange(0),
            lines_per_chunk=1,
            attrs={"bad": object()},
        )


def test_docs_list_every_array() -> None:
    doc = (REPO / "docs" / "store.md").read_text().split("## `directions.zarr`")[0]
    names = set(re.findall(r"^\| `(\w+)`", doc, flags=re.MULTILINE))
    assert names == {spec.name for spec in ARRAYS}


def test_differing_arrays_names_what_differs(tmp_path: Path) -> None:
    from steplines.store import differing_arrays

    stores = [new_store(tmp_path / name) for name in ("a", "b")]
    for s in stores:
        s.write_line(1, make_record(1, K))
    a, b = (tmp_path / name / "lines.zarr" for name in ("a", "b"))
    assert differing_arrays(a, b) == []
    stores[1].write_line(2, make_record(2, 3))
    diff = differing_arrays(a, b)
    assert "train_losses" in diff and "done" in diff and "val_indices" not in diff
