"""Record a run's trajectory: train T steps, checkpoints every C steps, every step's record.

The trajectory is recorded once, before any line is measured (docs/design.md, "Trajectory
first, then measurement by segments"): checkpoint c holds the model (incl. BatchNorm buffers),
optimizer and scheduler state before step c, and the records of steps c … c+C−1 say exactly
what each step did (rows, seeds, batch loss, s_update = ‖θ_{t+1} − θ_t‖, …), so that
:mod:`steplines.measure.segments` can replay any segment alone.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..config import RunConfig
from ..errors import DivergenceError
from ..locks import train_lock
from ..problems.problem import Problem
from ..rundir import RunDir
from ..trajectory.loop import StepRecord, Trainer
from .batches import check_full_batch
from .stores import open_or_create_direction_store, open_or_create_store


def run_dtype(cfg: RunConfig) -> torch.dtype:
    """The dtype a run trains, replays and measures in (``measure.dtype``)."""
    return torch.float64 if cfg.measure.dtype == "float64" else torch.float32


def record_trajectory(
    run: RunDir, problem: Problem, device: torch.device, progress: bool = False
) -> int:
    """Train (or continue training) the run's trajectory; return the number of recorded steps.

    Raises:
        DivergenceError: a batch loss was not finite; the records before it are kept.
        ConfigError: ``full_batch = "sample:n"`` does not fit the problem (before training).
    """
    check_full_batch(problem, run.config)  # before any training: a user's problem's sizes
    with train_lock(run.path):
        run.use_cpu_threads(device)
        try:
            return _record(run, problem, device, progress)
        finally:
            if run.trajectory.checkpoint_path(0).exists():
                open_or_create_store(run, problem)
                if run.config.measure.noisy_every:
                    open_or_create_direction_store(run)


def _record(run: RunDir, problem: Problem, device: torch.device, progress: bool) -> int:
    cfg, traj = run.config, run.trajectory
    steps, every = cfg.train.steps, cfg.train.checkpoint_every
    if (d := traj.divergence()) is not None:
        raise DivergenceError(d["message"])
    start = traj.completed_steps(steps, every)
    if start == steps:
        return steps
    trainer = Trainer(problem, cfg.train, device, run_dtype(cfg))
    if start == 0:
        traj.save_eval(0, trainer.evaluate())
        traj.save_checkpoint(0, trainer.state_dict())
    else:
        trainer.load_state_dict(traj.load_checkpoint(start, device))
    bar = tqdm(
        total=steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )
    for c, end in traj.segments(steps, every):
        if end <= start:
            continue
        records: list[StepRecord] = []
        for t in range(c, end):
            try:
                record, _ = trainer.step(t, *trainer.step_inputs(t))
            except DivergenceError as err:
                if records:
                    traj.save_records(c, records)
                traj.save_divergence(t, str(err))
                bar.close()
                raise
            records.append(record)
            bar.update()
        traj.save_records(c, records)
        traj.save_eval(end, trainer.evaluate())  # eval mode: changes no state, uses no RNG
        traj.save_checkpoint(end, trainer.state_dict())
    bar.close()
    return steps
