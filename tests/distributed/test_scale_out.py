"""Shards, Ray, locks, verify/redo: every way of measuring gives the same store.

The oracle is the session's ``tiny_run`` (the tiny config trained and measured in-process);
each test measures a private copy of its trajectory (``tiny_trained``) another way.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import (
    CLI,
    assert_same_store,
    cli,
    command_line,
    copy_run,
    descendants,
    steplines,
    wait_for_lines,
)


def _shards(run: Path, n: int = 2, **kw) -> list[subprocess.Popen]:
    """``steplines measure RUN --shard i/n`` for every i, started at once."""
    return [
        subprocess.Popen([*CLI, "measure", str(run), "--shard", f"{i}/{n}", "--quiet"], **kw)
        for i in range(n)
    ]


def test_two_shards_equal_in_process(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """`steplines train`, then two shard processes at once: the in-process run's store."""
    cfg, ref = tiny_run
    run = tmp_path / "run"
    cli("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    procs = _shards(run, stderr=subprocess.PIPE, text=True)
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert_same_store(ref, run)


_HOLD = (
    "import sys; from pathlib import Path; from steplines.locks import segment_locks\n"
    "with segment_locks(Path(sys.argv[1]), [0, 8]):\n"
    "    print('held', flush=True); sys.stdin.read()\n"
)


def test_overlapping_writers_are_refused(
    tiny_run: tuple[Path, Path], tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """A writer holding segments 0 and 2 (a small process that imports only the locks)
    blocks overlapping writers only; the writers run in this process (support.cli)."""
    cfg, ref = tiny_run
    run = copy_run(tiny_trained[1], tmp_path / "run")
    # what `measure --shard 0/2` holds: segments 0 and 2
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for args in (
            ["measure", str(run)],
            ["measure", str(run), "--shard", "0/3"],
            ["run", "--config", str(cfg), "--out", str(run)],
        ):
            res = cli(*args, "--quiet")
            assert res.returncode == 2 and "being written by another process" in res.stderr, args
            assert f"pid {holder.pid}" in res.stderr and "Traceback" not in res.stderr, args
        disjoint = cli("measure", str(run), "--shard", "1/2", "--quiet")  # segment 1
        assert disjoint.returncode == 0, disjoint.stderr
        assert "4/10 lines done" in disjoint.stdout
    finally:
        holder.communicate("")  # stdin closed: the holder releases its locks and exits
    cli("measure", str(run), "--quiet", check=True)  # released: the rest is measured
    assert_same_store(ref, run)


def test_verify_detects_corruption_and_redo_repairs(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    _, ref = tiny_run
    run = copy_run(ref, tmp_path / "run")
    ok = cli("verify", str(run))
    assert ok.returncode == 0 and "checked 10 finished lines" in ok.stdout and "OK" in ok.stdout
    chunk = next((run / "lines.zarr" / "train_losses" / "c").glob("3/**/*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])  # truncate line 3
    bad = cli("verify", str(run))
    assert bad.returncode == 1 and "corrupt line 3" in bad.stdout
    assert f"steplines measure {run} --redo 3" in bad.stdout
    cli("measure", str(run), "--redo", "3", "--quiet", check=True)
    assert cli("verify", str(run), "--no-replay").returncode == 0
    assert_same_store(ref, run)


def test_default_path_never_imports_ray() -> None:
    code = (
        "import sys, steplines.cli.main, steplines.measure, steplines.verify; "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _ray_workers(driver: subprocess.Popen) -> list[int]:
    """This driver's Ray workers running a segment (another user's are left alone)."""
    return [p for p in descendants(driver.pid) if "ray::measure_segment_task" in command_line(p)]


def test_ray_equals_in_process_and_retries_a_killed_worker(
    tiny_run: tuple[Path, Path], tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """`measure --engine ray` on a local cluster: a worker SIGKILLed while it measures a
    segment is retried, and the store is the in-process run's (one cluster start-up)."""
    pytest.importorskip("ray")
    _, ref = tiny_run
    run = copy_run(tiny_trained[1], tmp_path / "run")
    driver = subprocess.Popen(
        [*CLI, "measure", str(run), "--engine", "ray", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rng, killed, deadline = random.Random(11), [], time.monotonic() + 240
    while driver.poll() is None and not killed and time.monotonic() < deadline:
        time.sleep(0.1)
        if pids := _ray_workers(driver):
            time.sleep(rng.uniform(0.0, 0.5))
            pid = rng.choice(pids)
            if pid in _ray_workers(driver):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    assert killed, "no Ray worker was running a segment when we looked"
    assert "10/10 lines done" in out
    assert_same_store(ref, run)


@pytest.mark.slow
def test_ray_local_cluster_equals_in_process(
    tiny_run: tuple[Path, Path], tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """measure_with_ray's API with explicit segments and CPUs (slow: the default set has the
    CLI's Ray test above, which also kills a worker)."""
    pytest.importorskip("ray")
    _, ref = tiny_run
    run = copy_run(tiny_trained[1], tmp_path / "run")
    code = (
        "from pathlib import Path; from steplines.rundir import RunDir; "
        "from steplines.distributed.ray_backend import measure_with_ray; "
        f"rd = RunDir.open(Path({str(run)!r})); "
        "n = measure_with_ray(rd, rd.trajectory.segments(10, 4), progress=False, num_cpus=2); "
        "print('measured', n)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "measured 10" in out.stdout
    assert_same_store(ref, run)


@pytest.mark.slow  # starts a Ray cluster for an error path; Ray itself is tested by the retry test
def test_ray_without_gpus_fails_at_once(tiny_trained: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run = copy_run(tiny_trained[1], tmp_path / "run")
    res = steplines(
        "measure", str(run), "--engine", "ray", "--device", "cuda", "--quiet", timeout=120
    )
    assert res.returncode == 2
    assert "no GPU" in res.stderr.splitlines()[-1] or "CUDA is not available" in res.stderr


def test_sigkill_shards_then_resume(
    tiny_run: tuple[Path, Path], tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGKILL both shards once lines are being written; the rerun completes identically."""
    _, ref = tiny_run
    run = copy_run(tiny_trained[1], tmp_path / "run")
    rng = random.Random(7)
    procs = _shards(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = wait_for_lines(run, 2, procs)
    time.sleep(rng.uniform(0.0, 0.3))  # mid-line, mid-write or between lines
    kills = 0
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills == 2, f"a shard finished before it could be killed ({done} lines done)"
    assert 0 < done < 10
    res = cli("measure", str(run), "--quiet", check=True)
    assert "10/10 lines done" in res.stdout
    assert_same_store(ref, run)


@pytest.mark.slow
def test_sigkill_shards_at_random_moments_then_resume(
    tiny_run: tuple[Path, Path], tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """Kill both shards at random moments several times (slow: start-ups included); the rerun
    completes identically."""
    _, ref = tiny_run
    run = copy_run(tiny_trained[1], tmp_path / "run")
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        procs = _shards(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 3.5))
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
            p.wait()
    steplines("measure", str(run), "--quiet", check=True)
    assert kills >= 2
    assert_same_store(ref, run)
