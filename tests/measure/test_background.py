"""The background line writer and the batch prefetcher: order, overlap, errors, no loss."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from steplines.measure.background import BackgroundWriter, Prefetcher


def test_writer_writes_in_order_and_returns_before_the_write() -> None:
    written: list[int] = []
    release = threading.Event()

    def write(t: int, _rec: object) -> None:
        release.wait(5)
        written.append(t)

    w = BackgroundWriter(write, depth=2)
    t0 = time.perf_counter()
    for t in range(2):  # the queue takes them while the first write is still blocked
        w.put(t, None)
    assert time.perf_counter() - t0 < 1.0
    assert written == []
    release.set()
    w.put(2, None)
    w.close()
    assert written == [0, 1, 2] and w.written == 3


def test_write_error_reaches_the_measuring_thread() -> None:
    def write(t: int, _rec: object) -> None:
        if t == 1:
            raise OSError("disk full")

    w = BackgroundWriter(write, depth=1)
    w.put(0, None)
    w.put(1, None)
    with pytest.raises(OSError, match="disk full"):
        for t in range(2, 100):  # a later put (or close) raises it
            w.put(t, None)
        w.close()


def test_crash_in_the_loop_still_writes_the_finished_lines() -> None:
    written: list[int] = []
    with pytest.raises(KeyError), BackgroundWriter(lambda t, _r: written.append(t)) as w:
        w.put(0, None)
        w.put(1, None)
        raise KeyError("the measuring loop failed")
    assert written == [0, 1]


def test_prefetcher_returns_fn_of_each_item_and_propagates_errors() -> None:
    started_3 = threading.Event()

    def fn(i: int) -> int:
        if i == 3:
            started_3.set()
            raise ValueError("bad batch")
        return i * i

    with Prefetcher(fn, [(k, k) for k in range(5)]) as p:
        assert [p.get(k) for k in (0, 1, 2)] == [0, 1, 4]
        assert started_3.wait(5)  # the next item is computed ahead, unasked
        with pytest.raises(ValueError, match="bad batch"):
            p.get(3)
        assert p.get(4) == 16


def test_failed_store_write_stops_the_run_and_leaves_the_line_unmarked(
    tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error in the background thread surfaces in ``measure_lines``; lines are
    marked done only once written, so a rerun measures exactly the missing ones."""
    from steplines.config import load_config
    from steplines.measure import measure_lines, record_trajectory
    from steplines.problems.problem import make_problem
    from steplines.rundir import RunDir
    from steplines.store import LineStore

    cfg = load_config(path=tiny_config)
    run = RunDir.prepare(tmp_path / "run", cfg)
    problem = make_problem(cfg.problem)
    import torch

    record_trajectory(run, problem, torch.device("cpu"))
    real = LineStore.write_line

    def failing(self: LineStore, t: int, rec: object) -> None:
        if t == 5:
            raise OSError("no space left on device")
        real(self, t, rec)

    monkeypatch.setattr(LineStore, "write_line", failing)
    with pytest.raises(OSError, match="no space"):
        measure_lines(run, problem, torch.device("cpu"))
    done = LineStore.open(run.lines_path).done()
    assert not done[5] and done[:5].all()
    monkeypatch.setattr(LineStore, "write_line", real)
    assert measure_lines(run, problem, torch.device("cpu")) == int((~done).sum())
    assert np.asarray(LineStore.open(run.lines_path).done()).all()


@pytest.mark.parametrize("background", [True, False])
def test_prefetcher_threads_only_when_asked(background: bool) -> None:
    """On CPU the measurement prepares batches inline (no second OpenMP team)."""
    threads: list[str] = []

    def fn(x: int) -> int:
        threads.append(threading.current_thread().name)
        return x * x

    with Prefetcher(fn, [(k, k) for k in range(4)], background) as pre:
        assert [pre.get(k) for k in range(4)] == [0, 1, 4, 9]
    main = threading.current_thread().name
    assert all((name != main) == background for name in threads)
