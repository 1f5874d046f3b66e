"""A full disk, a read-only run directory and killed Ray workers lose no finished line."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steplines.store import LineStore

from support import assert_same_store, cli, command_line, copy_run, descendants, steplines


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return res.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "500k"):
        pytest.skip("needs root and tmpfs mounts to simulate a full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_keeps_finished_lines(
    tiny_run: tuple[Path, Path],
    small_fs: Path,
) -> None:
    cfg, ref = tiny_run
    run = small_fs / "run"
    res = steplines("run", "--config", str(cfg), "--out", str(run), "--quiet")
    assert res.returncode == 2, (res.stdout, res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and "No space left on device" in last
    assert "Traceback" not in res.stderr
    store = LineStore.open(run / "lines.zarr")
    done = [int(t) for t in store.done().nonzero()[0]]
    assert 0 < len(done) < 10, "the disk should fill part-way through"
    for t in done:
        assert store.verify_line(t)
        store.read_line(t)
    # more space: the same command finishes, with the store of an uninterrupted run
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    cli("run", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    assert_same_store(ref, run)


def test_read_only_run_directory(tiny_trained: tuple[Path, Path], small_fs: Path) -> None:
    run = copy_run(tiny_trained[1], small_fs / "run")  # what `steplines train` wrote
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    res = steplines("measure", str(run), "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "Read-only file system" in res.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_killed_ray_workers_are_retried(
    tiny_run: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """Two workers killed at random moments (slow; the default set kills one in
    test_scale_out.py::test_ray_equals_in_process_and_retries_a_killed_worker)."""
    pytest.importorskip("ray")
    cfg, ref = tiny_run
    run = tmp_path / "run"
    steplines("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    driver = subprocess.Popen(
        [sys.executable, "-m", "steplines.cli", "measure", str(run), "--engine", "ray", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rng, kills, deadline = random.Random(11), 0, time.time() + 240
    while driver.poll() is None and kills < 2 and time.time() < deadline:
        time.sleep(rng.uniform(0.5, 2.0))
        pids = [  # this driver's workers only, never another user's
            p for p in descendants(driver.pid) if "ray::measure_segment_task" in command_line(p)
        ]
        if pids:
            os.kill(rng.choice(pids), signal.SIGKILL)
            kills += 1
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    assert kills >= 1, "no Ray worker was running a segment when we looked"
    assert "10/10 lines done" in out
    assert_same_store(ref, run)
