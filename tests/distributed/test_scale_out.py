"""Shards, Ray, locks, verify/redo: every way of measuring gives the same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import assert_same_store, steplines


def test_two_shards_equal_in_process(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, ref = tiny_run
    run = tmp_path / "run"
    steplines("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "steplines.cli",
                "measure",
                str(run),
                "--shard",
                f"{i}/2",
                "--quiet",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert_same_store(ref, run)


def test_overlapping_writers_are_refused(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A writer holding segment 0 (this test process) blocks overlapping writers only."""
    from steplines.locks import segment_locks

    cfg, ref = tiny_run
    run = tmp_path / "run"
    steplines("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    with segment_locks(run, [0, 8]):  # what `measure --shard 0/2` holds: segments 0 and 2
        for args in (["measure", str(run)], ["measure", str(run), "--shard", "0/3"]):
            res = steplines(*args, "--quiet")
            assert res.returncode == 2 and "being written by another process" in res.stderr
            assert f"pid {os.getpid()}" in res.stderr and "Traceback" not in res.stderr
        disjoint = steplines("measure", str(run), "--shard", "1/2", "--quiet")  # segment 1
        assert disjoint.returncode == 0, disjoint.stderr
        assert "4/10 lines done" in disjoint.stdout
        train = steplines("run", "--config", str(cfg), "--out", str(run), "--quiet")
        assert train.returncode == 2 and "being written by another process" in train.stderr
    steplines("measure", str(run), "--quiet", check=True)  # released: the rest is measured
    assert_same_store(ref, run)


def test_verify_detects_corruption_and_redo_repairs(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    _, ref = tiny_run
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    ok = steplines("verify", str(run))
    assert ok.returncode == 0 and "checked 10 finished lines" in ok.stdout and "OK" in ok.stdout
    chunk = next((run / "lines.zarr" / "train_losses" / "c").glob("3/**/*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])  # truncate line 3
    bad = steplines("verify", str(run))
    assert bad.returncode == 1 and "corrupt line 3" in bad.stdout
    assert f"steplines measure {run} --redo 3" in bad.stdout
    steplines("measure", str(run), "--redo", "3", "--quiet", check=True)
    assert steplines("verify", str(run), "--no-replay").returncode == 0
    assert_same_store(ref, run)


def test_default_path_never_imports_ray() -> None:
    code = (
        "import sys, steplines.cli.main, steplines.measure, steplines.verify; "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ray_local_cluster_equals_in_process(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cfg, ref = tiny_run
    run = tmp_path / "run"
    steplines("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
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


def test_ray_without_gpus_fails_at_once(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cfg, _ = tiny_run
    run = tmp_path / "run"
    steplines("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    res = steplines(
        "measure", str(run), "--engine", "ray", "--device", "cuda", "--quiet", timeout=120
    )
    assert res.returncode == 2
    assert "no GPU" in res.stderr.splitlines()[-1] or "CUDA is not available" in res.stderr


def test_sigkill_shards_then_resume(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Kill both shards at random moments several times; the rerun completes identically."""
    import random

    cfg, ref = tiny_run
    run = tmp_path / "run"
    steplines("train", "--config", str(cfg), "--out", str(run), "--quiet", check=True)
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "steplines.cli",
                    "measure",
                    str(run),
                    "--shard",
                    f"{i}/2",
                    "--quiet",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(2)
        ]
        subprocess.run(["sleep", f"{rng.uniform(1.5, 3.5):.2f}"], check=True)
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
            p.wait()
    steplines("measure", str(run), "--quiet", check=True)
    assert kills >= 2
    assert_same_store(ref, run)
