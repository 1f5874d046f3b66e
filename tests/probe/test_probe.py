"""LineProbe in a user's own loop: same lines as ``steplines run``, training untouched."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from steplines import LineProbe, Problem
from steplines.analysis.run import analyze_run
from steplines.config import load_config
from steplines.errors import ConfigError, RunDirError
from steplines.measure import run_all
from steplines.probe import schedule_mask
from steplines.problems.problem import make_problem
from steplines.reporting import build_report
from steplines.rundir import RunDir
from steplines.seeding import derive_seed
from steplines.store import LineStore

from support import TINY, assert_same_store


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise comparisons on CPU need one fixed thread count (as the runs record it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _plain_sgd_loop(cfg, problem, probe_dir: Path | None, steps: int) -> None:
    """A user's plain SGD loop with the run's data order, seeds and init; probe optional."""
    seed, b, n = cfg.train.seed, problem.batch_size, len(problem.train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = problem.model_factory()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum)
    probe = (
        LineProbe(probe_dir, model, problem=problem, config=cfg, steps=steps, optimizer=opt)
        if probe_dir
        else None
    )
    per_epoch = n // b
    for t in range(steps):
        e, i = divmod(t, per_epoch)
        g = torch.Generator().manual_seed(derive_seed(seed, "order", e))
        rows = torch.randperm(n, generator=g).numpy()[i * b : (i + 1) * b]
        x, y = problem.train_batch(rows, derive_seed(seed, "augment", t))
        dropout_seed = derive_seed(seed, "dropout", t)
        with probe.step(t, x, y, rows=rows, dropout_seed=dropout_seed) as line:
            opt.zero_grad(set_to_none=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(dropout_seed)
                loss = problem.loss_fn(model(x), y).mean()
            loss.backward()
            opt.step()
            line.loss = loss
    probe.close()


def test_probe_in_plain_sgd_loop_reproduces_steplines_run(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """The probe's store equals the session's tiny run (the same config, 10 steps)."""
    cfg = load_config(path=tiny_run[0])
    problem = make_problem(cfg.problem)
    _plain_sgd_loop(cfg, problem, tmp_path / "probe", steps=cfg.train.steps)
    assert LineStore.open(tmp_path / "probe" / "lines.zarr").done().all()
    assert_same_store(tiny_run[1], tmp_path / "probe")


def test_probe_with_worker_processes_reproduces_steplines_run(tmp_path: Path) -> None:
    """``workers = 2`` in a user's (guarded) script: the same store as one process."""
    from steplines.engine.workers import WorkerPool

    cfg = load_config(path=_write(tmp_path / "c.toml", TINY.format(steps=3)))
    run_all(RunDir.prepare(tmp_path / "run", cfg))
    two = cfg.model_copy(update={"measure": cfg.measure.model_copy(update={"workers": 2})})
    started = []
    start = WorkerPool._start
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WorkerPool, "_start", lambda *a: started.append(start(*a)) or started[-1])
        _plain_sgd_loop(two, make_problem(cfg.problem), tmp_path / "probe", steps=3)
    assert started == [True]  # the probe's engine ran in two worker processes
    assert_same_store(tmp_path / "run", tmp_path / "probe")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class SmallNet(nn.Module):
    """BatchNorm and dropout: both must be handled by the line and left alone in training."""

    def __init__(self, d_in: int = 8, classes: int = 3, p: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(d_in, 16),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(16, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _data(n: int = 96, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def _adamw_loop(model, steps: int, probe_dir: Path | None, schedule="all", **kw) -> LineProbe:
    """A user's AdamW loop: two parameter groups, a cosine schedule, dropout from global RNG."""
    x_all, y_all = _data()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=0.05
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    probe = None
    if probe_dir is not None:
        probe = LineProbe(
            probe_dir,
            model,
            _ce,
            train=(x_all[:64], y_all[:64]),
            val=(x_all[64:], y_all[64:]),
            batch_size=16,
            steps=steps,
            optimizer=opt,
            schedule=schedule,
            measure={"resolution": 0.05, "interval": 0.25, "max_passes": 2},
            **kw,
        )
    torch.manual_seed(7)
    for t in range(steps):
        rows = torch.randperm(64)[:16]
        x, y = x_all[rows], y_all[rows]
        ctx = probe.step(t, x, y) if probe else _Null()
        with ctx:
            opt.zero_grad()
            loss = _ce(model(x), y).mean()
            loss.backward()
            opt.step()
        sched.step()
    return probe


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def test_probe_leaves_training_untouched_bitwise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallNet()
    twin = copy.deepcopy(model)
    rng_before = torch.get_rng_state()
    _adamw_loop(model, 6, tmp_path / "probe")
    torch.set_rng_state(rng_before)
    _adamw_loop(twin, 6, None)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert model.training and twin.training
    assert LineStore.open(tmp_path / "probe" / "lines.zarr").done().all()


def test_adam_line_passes_through_the_new_parameters(tmp_path: Path) -> None:
    """Loss at s = ||u_t|| on the line equals the loss at θ_{t+1} (BN batch statistics)."""
    torch.manual_seed(0)
    model = SmallNet(p=0.0)
    x_all, y_all = _data()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    probe = LineProbe(
        tmp_path / "run",
        model,
        _ce,
        train=(x_all[:64], y_all[:64]),
        val=(x_all[64:], y_all[64:]),
        batch_size=16,
        steps=4,
        optimizer=opt,
        measure={"resolution": 0.05, "interval": 0.25, "max_passes": 1},
    )
    for t in range(4):
        x, y = x_all[16 * t : 16 * t + 16], y_all[16 * t : 16 * t + 16]
        with probe.step(t, x, y) as line:
            opt.zero_grad()
            _ce(model(x), y).mean().backward()
            opt.step()
        rec = line.record
        k = int(np.flatnonzero(rec.positions == rec.s_update)[0])
        scratch = copy.deepcopy(model).train()  # θ_{t+1}, train-mode BN on each batch
        with torch.no_grad():
            direct = _ce(scratch(x), y).numpy()
            full = torch.cat(
                [_ce(scratch(x_all[s : s + 16]), y_all[s : s + 16]) for s in range(0, 64, 16)]
            )
        assert rec.s_update > 0
        np.testing.assert_allclose(rec.direction_losses[:, k], direct, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rec.train_losses[:, k], full.numpy(), rtol=1e-5, atol=1e-6)
        assert rec.lr == pytest.approx(0.02)
        # Adam's update is not along -g: the measured slope differs from -||g||
        assert rec.directional_derivative > -rec.grad_norm * (1 - 1e-3)


def test_schedules() -> None:
    assert np.flatnonzero(schedule_mask("every:3", 10)[0]).tolist() == [0, 3, 6, 9]
    assert np.flatnonzero(schedule_mask(4, 10)[0]).tolist() == [0, 4, 8]
    log = np.flatnonzero(schedule_mask("log:5", 1000)[0])
    assert log[0] == 0 and log[-1] == 999 and len(log) == 5 and np.all(np.diff(log) > 0)
    assert schedule_mask([5, 1], 10)[1] == "steps:1,5"
    assert np.flatnonzero(schedule_mask(lambda t: t % 5 == 2, 10)[0]).tolist() == [2, 7]
    for bad in ("every:0", "weekly", "log:x"):
        with pytest.raises(ConfigError, match="schedule"):
            schedule_mask(bad, 10)
    with pytest.raises(ConfigError, match=r"0\.\.9"):
        schedule_mask([10], 10)


def test_scheduled_probe_resumes_and_analyses(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = SmallNet()
    probe = _adamw_loop(model, 8, tmp_path / "run", schedule="every:2")
    done = LineStore.open(tmp_path / "run" / "lines.zarr").done()
    assert np.flatnonzero(done).tolist() == [0, 2, 4, 6]
    assert probe.due(1) is False and probe.due(2) is False  # unscheduled / already measured
    summary = json.loads(analyze_run(tmp_path / "run").path("summary").read_text())
    assert summary["lines_missing"] == 0  # lines 1, 3, 5, 7 are not scheduled, not missing
    html = build_report([tmp_path / "run"], formats=("png",)).read_text()
    assert "your own loop (LineProbe)" in html and "AdamW" in html and "every:2" in html
    assert "lines are not measured" not in html
    # the same directory with other settings is refused, not overwritten
    with pytest.raises(RunDirError, match="different configuration"):
        _adamw_loop(SmallNet(), 8, tmp_path / "run", schedule="every:4")


def test_probe_rejects_a_loss_without_per_sample_reduction(tmp_path: Path) -> None:
    x, y = _data()
    with pytest.raises(ConfigError, match=r"one loss per sample.*reduction='none'"):
        LineProbe(
            tmp_path / "run",
            SmallNet(),
            lambda out, t: nn.functional.cross_entropy(out, t),
            train=(x, y),
            batch_size=16,
            steps=3,
        )
    assert not (tmp_path / "run").exists()


def test_problem_from_tensors_runs_without_a_validation_set(tmp_path: Path) -> None:
    x, y = _data()
    problem = Problem.from_tensors((x, y), None, SmallNet, _ce, batch_size=16)
    model = SmallNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = LineProbe(
        tmp_path / "run",
        model,
        problem=problem,
        steps=2,
        optimizer=opt,
        measure={"resolution": 0.1, "interval": 0.2, "max_passes": 1},
    )
    for t in range(2):
        with probe.step(t, x[:16], y[:16]):
            opt.zero_grad()
            _ce(model(x[:16]), y[:16]).mean().backward()
            opt.step()
    store = LineStore.open(tmp_path / "run" / "lines.zarr")
    assert store.done().all() and store.n_val == 0
