"""Two processes writing disjoint positions of one directions store lose no flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from steplines.store.noisy import NoisyDirectionStore

P, D, K = 24, 2, 3

WRITER = """
import sys, numpy as np
from steplines.store.noisy import NoisyDirectionStore
store = NoisyDirectionStore.open_or_create(
    sys.argv[1], n_positions={P}, n_directions={D}, n_grid={K}
)
line = {{"positions": np.arange(3.0), "train_mean": np.ones(3), "val_mean": np.ones(3),
         "direction_mean": np.ones(3), "grad_norm": 1.0, "s_update": 0.5}}
for p in range(int(sys.argv[2]), {P}, 2):
    store.write_position(p, 10 * p, [line] * {D})
"""


def _old_layout(path: Path) -> None:
    """A store as made before one chunk per position: ``done``/``steps`` in one chunk."""
    NoisyDirectionStore.open_or_create(path, n_positions=P, n_directions=D, n_grid=K)
    g = zarr.open_group(str(path), mode="r+")
    for name, dtype, fill in (("steps", "int64", -1), ("done", "bool", False)):
        del g[name]
        g.create_array(name, shape=(P,), chunks=(P,), dtype=dtype, fill_value=fill)


@pytest.mark.parametrize("layout", ["new", "old"])
def test_two_writers_of_disjoint_positions_lose_no_flags(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "directions.zarr"
    if layout == "old":
        _old_layout(path)
    else:
        NoisyDirectionStore.open_or_create(path, n_positions=P, n_directions=D, n_grid=K)
    code = WRITER.format(P=P, D=D, K=K)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(i)]) for i in (0, 1)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    store = NoisyDirectionStore.open(path)
    assert store.done().all()
    assert np.array_equal(store.read()["steps"], 10 * np.arange(P))
    assert store.check(10) == {}


def test_check_names_damaged_positions_and_reset_forgets_them(tmp_path: Path) -> None:
    path = tmp_path / "directions.zarr"
    store = NoisyDirectionStore.open_or_create(path, n_positions=P, n_directions=D, n_grid=K)
    line = {
        "positions": np.arange(3.0),
        "train_mean": np.ones(3),
        "val_mean": np.ones(3),
        "direction_mean": np.ones(3),
        "grad_norm": 1.0,
        "s_update": 0.5,
    }
    for p in range(3):
        store.write_position(p, 10 * p, [line] * D)
    assert store.check(10) == {}
    chunk = path / "done" / "c" / "1"
    chunk.write_bytes(b"\x00garbage")  # an undecodable flag
    (path / "train_mean" / "c" / "2" / "0" / "0").unlink()  # a lost mean line
    bad = NoisyDirectionStore.open(path).check(10)
    assert bad == {1: "chunk of done cannot be decoded", 2: "mean lines of direction 0 missing"}
    rw = NoisyDirectionStore(zarr.open_group(str(path), mode="r+"))
    rw.reset([1, 2])
    assert rw.done().tolist()[:3] == [True, False, False]
