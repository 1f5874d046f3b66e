"""End to end: train → measure by segments → store; resume; replay exactness."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from steplines.config import load_config
from steplines.measure import run_all
from steplines.rundir import RunDir
from steplines.store import LineStore

from support import CLI, assert_same_store, cli, steplines, wait_for_lines


def test_run_measures_every_line_consistently(tiny_run: tuple[Path, Path]) -> None:
    """The session's tiny run (10 steps, trained and measured in-process)."""
    run = tiny_run[1]
    store = LineStore.open(run / "lines.zarr")
    assert store.done().all() and store.n_lines == 10
    assert (store.n_train, store.n_val, store.n_direction) == (256, 64, 64)
    summary = store.read_summary()
    for t in range(10):
        line = store.read_line(t)
        k = line.positions.size
        # the direction batch at s = 0 reproduces the training loss of step t exactly
        z = summary["zero_index"][t]
        assert abs(line.direction_losses[:, z].astype(np.float64).mean() - line.batch_loss) < 1e-6
        # the update lies on the line at s_update; the full batch is a permutation of the set
        assert line.positions[summary["update_index"][t]] == line.s_update
        assert sorted(line.train_indices) == list(range(256))
        # plain SGD: direction_norm = ‖g‖, the exact slope of l_B at 0 is −‖g‖ (docs/method.md §6.3)
        assert np.isclose(line.direction_norm, line.grad_norm, rtol=1e-5)
        assert np.isclose(line.directional_derivative, -line.grad_norm, rtol=1e-5)
        assert np.isclose(line.s_update, line.lr * line.direction_norm, rtol=1e-6)
        assert k >= 12 and np.isfinite(line.train_losses).all()
        # finite-difference slope of the measured direction-batch line agrees with g·d
        p, lb = line.positions, line.direction_losses.astype(np.float64).mean(0)
        i = int(np.searchsorted(p, 0.1))
        slope = (lb[i] - lb[z]) / (p[i] - p[z])
        assert abs(slope - line.directional_derivative) < 0.3 * abs(line.directional_derivative)
    # different lines draw different full batches (fresh augmented epoch per line)
    assert not np.array_equal(store.read_line(0).train_indices, store.read_line(1).train_indices)
    for name in ("config.toml", "provenance.json"):
        assert (run / name).exists()


def test_fixed_full_batch_and_running_batchnorm(tiny_config: Path, tmp_path: Path) -> None:
    """`full_batch = fixed`: every line sees the same un-augmented rows in order."""
    cfg = load_config(
        path=tiny_config,
        overrides={"measure.full_batch": "fixed", "measure.batchnorm": "running", "train.steps": 3},
    )
    run = RunDir.prepare(tmp_path / "run", cfg)
    run_all(run)
    store = LineStore.open(run.lines_path)
    lines = [store.read_line(t) for t in range(3)]
    for line in lines:
        np.testing.assert_array_equal(line.train_indices, np.arange(256))
    # eval-mode BatchNorm: the direction batch at s = 0 no longer equals the train-mode loss
    z = store.read_summary()["zero_index"][0]
    assert abs(lines[0].direction_losses[:, z].mean() - lines[0].batch_loss) > 1e-4


def _run_cli(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "run", "--config", str(config), "--out", str(out), "--quiet", "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_resume_after_sigkill_gives_identical_store(
    tiny_run: tuple[Path, Path], tiny_config: Path, tmp_path: Path
) -> None:
    """SIGKILL `steplines run` while it measures (after ≥ 2 lines: mid-segment), rerun: the
    same store as an uninterrupted run."""
    out = tmp_path / "killed"
    proc = _run_cli(tiny_config, out)
    done = wait_for_lines(out, 2, [proc])
    time.sleep(random.Random(20261128).uniform(0.0, 0.3))  # mid-line, mid-write or between
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed and done < 10, "the run finished before it could be killed; lengthen it"
    res = cli("run", "--config", str(tiny_config), "--out", str(out), "--quiet", check=True)
    assert "10/10 lines done" in res.stdout
    assert_same_store(tiny_run[1], out)


@pytest.mark.slow
def test_resume_after_sigkill_at_random_moments(
    tiny_run: tuple[Path, Path], tiny_config: Path, tmp_path: Path
) -> None:
    """SIGKILL `steplines run` at random moments (start-up, training or measuring; slow),
    rerun: same store as an uninterrupted run."""
    out = tmp_path / "killed"
    rng = random.Random(20261128)
    kills = 0
    for _ in range(4):
        proc = _run_cli(tiny_config, out)
        time.sleep(rng.uniform(1.5, 5.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    res = steplines("run", "--config", str(tiny_config), "--out", str(out), "--quiet", check=True)
    assert "10/10 lines done" in res.stdout
    assert kills >= 2, "the run finished before it could be killed; lengthen it"
    assert_same_store(tiny_run[1], out)


def test_same_config_and_seed_give_identical_stores(
    tiny_run: tuple[Path, Path], tiny_config: Path, tmp_path: Path
) -> None:
    """A second run of the config (one run_all) equals the session's tiny run."""
    run_all(RunDir.prepare(tmp_path / "a", load_config(path=tiny_config)))
    assert_same_store(tiny_run[1], tmp_path / "a")


def test_worker_processes_give_the_same_store(
    tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two single-threaded worker processes sharing each line's positions write the store that
    one single-threaded process writes, bit for bit (also the noisy directions' lines)."""
    from steplines.engine.workers import WorkerPool

    ran: list[bool] = []
    close = WorkerPool.close
    monkeypatch.setattr(WorkerPool, "close", lambda self: (ran.append(self.started), close(self)))
    text = tiny_config.read_text().replace("steps = 10", "steps = 4")
    text += "noisy_every = 4\nnoisy_directions = 2\n"
    for name, workers in (("one", 1), ("two", 2)):
        cfg_path = tmp_path / f"{name}.toml"
        cfg_path.write_text(text + f"workers = {workers}\n")
        run_all(RunDir.prepare(tmp_path / name, load_config(path=cfg_path)))
    assert ran and ran[0]  # the workers did run (no silent in-process fallback)
    assert_same_store(tmp_path / "one", tmp_path / "two")
    from steplines.store.noisy import NoisyDirectionStore

    one, two = (
        NoisyDirectionStore.open(tmp_path / n / "directions.zarr").read() for n in ("one", "two")
    )
    assert one.keys() == two.keys()
    assert all(np.array_equal(one[k], two[k], equal_nan=True) for k in one)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def _describe_pid(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return str(pid)


@pytest.mark.parametrize(
    "delay",
    [
        pytest.param(0.0, id="while-starting"),
        # slow: the same window on this tiny run (the workers are still importing torch)
        pytest.param(0.5, id="while-measuring", marks=pytest.mark.slow),
    ],
)
def test_ctrl_c_with_workers_is_one_line_and_leaves_no_process(
    tiny_config: Path, tmp_path: Path, delay: float
) -> None:
    """Ctrl-C (SIGINT to the terminal's process group: the CLI and its workers) as soon as the
    first worker exists (the parent may still be starting the second) or while they measure:
    one line, exit 130, no worker traceback, no worker left behind, and the rerun finishes."""
    cfg = tmp_path / "workers.toml"
    text = tiny_config.read_text().replace("steps = 10", "steps = 4")
    # 100 positions per line: lines long enough that the interrupt lands mid-run (and big
    # enough for the worker pool), few lines: the rerun measures them all again
    text = text.replace("resolution = 0.1", "resolution = 0.01")
    cfg.write_text(text + "workers = 2\n")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "steplines.cli", "run", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(
        [*args, "--quiet", "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job
        # SIGINT at its default, as in a terminal: a background job (CI may run `cmd &`)
        # inherits it ignored, and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        pgrep = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        workers = [int(p) for p in pgrep.stdout.split()]
    assert workers, "the run started no worker process"
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before it could be interrupted; lengthen it"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; every line finished before this is kept" in err and "Traceback" not in err
    alive = workers
    for _ in range(50):  # a zombie (exited, not yet reaped by this sandbox's init) is gone
        alive = [p for p in workers if _running(p)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"processes left behind: {[_describe_pid(p) for p in alive]}"
    res = cli("run", "--config", str(cfg), "--out", str(out), "--quiet", check=True)
    assert "4/4 lines done" in res.stdout


def test_noisy_directions_and_eval_metrics(tiny_config: Path, tmp_path: Path) -> None:
    """Fig. 8 lines from θ_t along other batches' gradients; eval metrics at checkpoints."""
    import json

    from steplines.store.noisy import NoisyDirectionStore

    cfg = load_config(
        path=tiny_config, overrides={"measure.noisy_every": 4, "measure.noisy_directions": 3}
    )
    run = RunDir.prepare(tmp_path / "run", cfg)
    run_all(run)
    d = NoisyDirectionStore.open(run.path / "directions.zarr").read()
    assert d["steps"].tolist() == [0, 4, 8]
    assert d["train_mean"].shape[:2] == (3, 3)
    main = LineStore.open(run.lines_path).read_summary()
    for p, t in enumerate(d["steps"]):
        for j in range(3):
            pos = d["positions"][p, j]
            k = int(np.isfinite(pos).sum())
            z = int(np.flatnonzero(pos[:k] == 0.0)[0])
            # same θ_t and the same full batch as line t: equal full-batch loss at s = 0
            assert np.isclose(
                d["train_mean"][p, j, z], main["train_mean"][t, main["zero_index"][t]]
            )
            # along −g_j the batch-j line falls with slope −‖g_j‖ at 0
            lb = d["direction_mean"][p, j, :k]
            slope = (lb[z + 1] - lb[z]) / (pos[z + 1] - pos[z])
            assert slope < 0 and abs(slope + d["grad_norm"][p, j]) < 0.3 * d["grad_norm"][p, j]
        # different batches give different directions and lines
        assert not np.allclose(d["direction_mean"][p, 0], d["direction_mean"][p, 1], equal_nan=True)
    evals = sorted((run.path / "trajectory").glob("eval_*.json"))
    steps = [json.loads(f.read_text())["step"] for f in evals]
    assert steps == [0, 4, 8, 10]
    assert 0 <= json.loads(evals[-1].read_text())["val_accuracy"] <= 1
