"""Train, then measure every line by segments: the one place engine and store meet.

``record_trajectory`` trains T steps and writes checkpoints every C steps plus the records of
every step. ``measure_lines`` then takes each segment [c, c+C) that still has unmeasured lines,
restores checkpoint c, replays its steps exactly from the records, measures each missing line
with the engine and writes it to the store; at the segment end the replayed state must equal
checkpoint c+C bit for bit, else :class:`~steplines.errors.ReplayMismatchError`. Each segment is
an independent unit of work: resumable after a crash, shardable, retryable.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import nn
from tqdm import tqdm

from .config import MeasureConfig, RunConfig, check_sample_size, sample_size
from .engine.background import BackgroundWriter, Prefetcher
from .engine.estimators import EstimatorInputs, LineEstimator
from .engine.evaluators import (
    EvalBatch,
    LinePolicy,
    LossFn,
    make_fast_evaluator,
    reference_losses,
    trainable_parameters,
)
from .engine.line import Evaluate, GridSpec, LineSamples, measure_line
from .engine.positions import max_positions
from .engine.precision import CHECKS_FILE, check_precision, compare_lines
from .errors import ConfigError, DivergenceError, ReplayMismatchError, RunDirError
from .live import LineProgress, LiveLog, line_summary, record_summary
from .locks import segment_locks, train_lock
from .problems.problem import Problem, make_problem, to_device
from .rundir import RunDir, resolve_device
from .schedule import parse_steps
from .seeding import derive_seed
from .store import LineRecord, LineStore, StoreDamagedError
from .store.lines import format_lines
from .store.noisy import NoisyDirectionStore
from .trajectory.loop import LineAnchor, StepRecord, Trainer, gradients
from .trajectory.storage import TrajectoryDir

log = logging.getLogger("steplines")


def _dtype(cfg: RunConfig) -> torch.dtype:
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
    trainer = Trainer(problem, cfg.train, device, _dtype(cfg))
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


def full_batch_rows(problem: Problem, cfg: RunConfig) -> int:
    """N: rows of the full batch per line.

    ``⌊N/B⌋·B`` for ``epoch``, all training images for ``fixed``, n for ``sample:n``.

    Raises:
        ConfigError: ``sample:n`` does not fit the problem (n not a multiple of its batch
            size, or more than its training images); see :func:`check_full_batch`.
    """
    n, b = len(problem.train), problem.batch_size
    sample = check_full_batch(problem, cfg)
    if sample is not None:
        return sample
    return (n // b) * b if cfg.measure.full_batch == "epoch" else n


def check_full_batch(problem: Problem, cfg: RunConfig) -> int | None:
    """n of ``full_batch = "sample:n"`` checked against the problem's data (None otherwise).

    The configuration checks n against the batch size and training size it names; a user's
    problem (``problem.factory``, LineProbe) brings its own, so they are checked here again.

    Raises:
        ConfigError: n is not a multiple of the batch size or exceeds the training images.
    """
    n = sample_size(cfg.measure.full_batch)
    if n is not None:
        try:
            check_sample_size(n, problem.batch_size, len(problem.train))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return n


@dataclass
class LineBatches:
    """Builds the fixed evaluation batches of a line (full batch, validation, direction)."""

    problem: Problem
    cfg: RunConfig
    device: torch.device
    dtype: torch.dtype

    def __post_init__(self) -> None:
        check_full_batch(self.problem, self.cfg)
        b, n_val = self.problem.batch_size, len(self.problem.val)
        self._val_rows = [np.arange(s, min(s + b, n_val)) for s in range(0, n_val, b)]
        self._val_data = [self.to_device(self.problem.val_batch(r)) for r in self._val_rows]
        self._fixed_train: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def to_device(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(xy[0], self.device, self.dtype), xy[1].to(self.device)

    @property
    def n_train(self) -> int:
        """N: rows of the full batch (``drop_last`` for ``epoch``, n for ``sample:n``)."""
        return full_batch_rows(self.problem, self.cfg)

    def train_rows(self, t: int) -> list[np.ndarray]:
        """Training rows of line t, one array per BatchNorm batch.

        ``fixed``: all rows in order. ``epoch``: a permutation seeded by (run seed, t),
        ``drop_last``. ``sample:n``: the first n rows of that same permutation — the first
        n/B batches of the epoch ``epoch`` would draw for line t (augmented alike), so n
        distinct training rows, a different subset on every line, identical on every rerun,
        resume or shard.
        """
        n, b = len(self.problem.train), self.problem.batch_size
        if self.cfg.measure.full_batch == "fixed":
            return [np.arange(s, min(s + b, n)) for s in range(0, n, b)]
        g = torch.Generator().manual_seed(derive_seed(self.cfg.train.seed, "full_batch", t))
        perm = torch.randperm(n, generator=g).numpy()[: self.n_train]
        return [perm[s : s + b] for s in range(0, self.n_train, b)]

    def batches(
        self, t: int, record: StepRecord
    ) -> tuple[list[EvalBatch], list[EvalBatch], EvalBatch, np.ndarray]:
        """``(train, val, direction, train_rows)`` evaluation batches of line t."""
        train, val, rows = self.full_and_val(t)
        x, y = self.to_device(self.problem.train_batch(record.rows, record.aug_seed))
        return train, val, EvalBatch(x, y, record.dropout_seed), rows

    def full_and_val(self, t: int) -> tuple[list[EvalBatch], list[EvalBatch], np.ndarray]:
        """``(train, val, train_rows)``: the full-batch and validation batches of line t."""
        seed = self.cfg.train.seed
        rows = self.train_rows(t)
        if self.cfg.measure.full_batch == "fixed":
            if self._fixed_train is None:
                self._fixed_train = [
                    self.to_device(self.problem.train_batch(r, None)) for r in rows
                ]
            data = self._fixed_train
        else:
            data = [
                self.to_device(
                    self.problem.train_batch(r, derive_seed(seed, "full_batch_aug", t, i))
                )
                for i, r in enumerate(rows)
            ]
        train = [
            EvalBatch(x, y, derive_seed(seed, "dropout_eval", t, 0, i))
            for i, (x, y) in enumerate(data)
        ]
        val = [
            EvalBatch(x, y, derive_seed(seed, "dropout_eval", t, 1, i))
            for i, (x, y) in enumerate(self._val_data)
        ]
        return train, val, np.concatenate(rows)


def _line_record(
    samples: LineSamples,
    anchor: LineAnchor,
    train_rows: np.ndarray,
    estimates: EstimatorInputs | None = None,
) -> LineRecord:
    r = anchor.record
    e = estimates or EstimatorInputs()
    return LineRecord(
        positions=samples.positions.astype(np.float64),
        train_losses=samples.train.astype(np.float32),
        val_losses=samples.val.astype(np.float32),
        direction_losses=samples.direction.astype(np.float32),
        train_indices=train_rows.astype(np.int64),
        direction_indices=r.rows.astype(np.int64),
        s_update=r.s_update,
        direction_norm=r.direction_norm,
        grad_norm=r.grad_norm,
        directional_derivative=r.directional_derivative,
        lr=r.lr,
        batch_loss=r.batch_loss,
        n_passes=samples.n_passes,
        est_slope_update=e.slope_update,
        est_curvature=e.curvature,
        est_sample_grad_sq=e.sample_grad_sq,
        est_batch_grad_sq=e.batch_grad_sq,
    )


def open_or_create_store(run: RunDir, problem: Problem) -> LineStore:
    """Open the run's line store, creating it (preallocated) on first use.

    Called by training (under the trajectory lock), so concurrent measuring shards only ever
    open it.
    """
    m = run.config.measure
    if run.lines_path.exists():
        return LineStore.open(run.lines_path, mode="r+")
    # Create under a temporary name and rename: a crash mid-creation leaves no half store.
    for stale in run.path.glob(".lines.zarr.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run.path / f".lines.zarr.{os.getpid()}.tmp"
    LineStore.create(
        tmp,
        n_lines=run.config.train.steps,
        n_train=full_batch_rows(problem, run.config),
        n_val=len(problem.val),
        n_direction=problem.batch_size,
        n_positions=max_positions(m.grid, m.interval, m.resolution, m.max_passes),
        val_indices=np.arange(len(problem.val), dtype=np.int64),
        lines_per_chunk=run.config.train.checkpoint_every,
        attrs={
            "train_source_indices": problem.train.indices.tolist(),
            "val_source_indices": problem.val.indices.tolist(),
            "dataset": problem.name,
            # a sampled full batch says so (n_train is n; the training set has
            # len(train_source_indices) images); epoch/fixed stores keep their attributes
            **({"full_batch": m.full_batch} if sample_size(m.full_batch) is not None else {}),
        },
    )
    os.rename(tmp, run.lines_path)
    return LineStore.open(run.lines_path, mode="r+")


def open_or_create_direction_store(run: RunDir) -> NoisyDirectionStore:
    """The run's noisy-direction store (created by training, under the trajectory lock)."""
    m = run.config.measure
    return NoisyDirectionStore.open_or_create(
        run.path / "directions.zarr",
        n_positions=-(-run.config.train.steps // m.noisy_every),
        n_directions=m.noisy_directions,
        n_grid=max_positions(m.grid, m.interval, m.resolution, m.max_passes),
    )


def make_evaluator(
    m: MeasureConfig,
    model: nn.Module,
    loss_fn: LossFn,
    device: torch.device,
    batch_size: int,
    *,
    workers_ok: bool = False,
) -> Evaluate:
    """The engine ``m.engine`` selects, bound to (a private copy of) ``model``; ``workers_ok``:
    ``m.workers = "auto"`` may start worker processes (see ``make_fast_evaluator``)."""
    policy = LinePolicy(m.batchnorm, m.dropout)
    if m.engine == "reference":
        return functools.partial(reference_losses, model, policy=policy, loss_fn=loss_fn)
    return make_fast_evaluator(m, model, policy, loss_fn, device, batch_size, workers_ok=workers_ok)


class LineMeasurer:
    """Measures one line from its anchor and batches and packs it as a store record.

    The one path from an anchor to a :class:`~steplines.store.LineRecord`, shared by the segment
    loop of :func:`measure_lines` and by :class:`steplines.probe.LineProbe`, so that both write
    identical lines.

    With ``m.estimators`` it also computes the line's estimator inputs
    (:class:`~steplines.engine.estimators.LineEstimator`, on its own model copy, after the
    engine's measurement, which it does not change): per-sample gradients on every
    ``m.noise_scale_every``-th line (``t ≡ 0``).

    With ``m.precision`` other than fp32 and a ``record_path``, the first line it measures
    and every ``m.precision_check_every``-th after it are evaluated a second time, at the same
    positions on the same batches, by an fp32 fast engine (eager: one call every 50 lines
    would not repay a compilation); :func:`~steplines.engine.precision.compare_lines` of the
    two is appended to ``record_path`` as one JSON line (``{"t", "precision", ...}``).

    Args:
        m: the measurement configuration (grid, engine, policies, precision).
        model: the network; the engine works on a private copy and never changes it.
        loss_fn: per-sample loss.
        device: where to measure.
        batch_size: B, the BatchNorm evaluation batch size.
        record_path: where the precision checks go (``RUN/precision_checks.jsonl``); None =
            no checks.
        workers_ok: ``m.workers = "auto"`` may start worker processes (the CLI's loop; a
            user's training loop, where LineProbe runs, keeps its own thread settings).

    Raises:
        ConfigError: ``m.precision`` cannot run on ``device`` (tf32 on CPU).
    """

    def __init__(
        self,
        m: MeasureConfig,
        model: nn.Module,
        loss_fn: LossFn,
        device: torch.device,
        batch_size: int,
        record_path: Path | None = None,
        *,
        workers_ok: bool = False,
    ) -> None:
        check_precision(m.precision, device)
        self.spec = GridSpec(m.grid, m.interval, m.resolution, m.max_passes)
        self.evaluate = make_evaluator(m, model, loss_fn, device, batch_size, workers_ok=workers_ok)
        self.precision, self.check_every = m.precision, m.precision_check_every
        self.record_path = record_path if m.precision != "fp32" else None
        self.fp32: Evaluate | None = None
        if self.record_path is not None:
            fp32 = m.model_copy(update={"precision": "fp32", "compile": "off", "workers": 1})
            self.fp32 = make_evaluator(fp32, model, loss_fn, device, batch_size)
        self.measured = 0
        self.estimator = (
            LineEstimator(model, loss_fn, LinePolicy(m.batchnorm, m.dropout))
            if m.estimators
            else None
        )
        self.noise_scale_every = m.noise_scale_every

    def __call__(
        self,
        anchor: LineAnchor,
        train: list[EvalBatch],
        val: list[EvalBatch],
        direction: EvalBatch,
        train_rows: np.ndarray,
    ) -> LineRecord:
        """Measure line ``anchor.t`` on the given batches; return its store record."""
        samples = measure_line(
            self.evaluate,
            anchor.theta,
            anchor.direction,
            anchor.buffers,
            anchor.record.s_update,
            train,
            val,
            direction,
            self.spec,
        )
        if self.fp32 is not None and self.measured % self.check_every == 0:
            self._check_precision(anchor, samples, [*train, *val, direction])
        self.measured += 1
        estimates = None
        if self.estimator is not None:
            every = self.noise_scale_every
            estimates = self.estimator(
                anchor.theta,
                anchor.direction,
                anchor.buffers,
                anchor.record.s_update,
                direction,
                per_sample=every > 0 and anchor.t % every == 0,
            )
        return _line_record(samples, anchor, train_rows, estimates)

    def close(self) -> None:
        """Stop the engine's worker processes, if any (idempotent)."""
        close = getattr(self.evaluate, "close", None)
        if close is not None:
            close()

    def _check_precision(
        self, anchor: LineAnchor, samples: LineSamples, batches: list[EvalBatch]
    ) -> None:
        """Measure the line again in fp32 and append the difference to ``record_path``."""
        assert self.fp32 is not None and self.record_path is not None
        ref = self.fp32(anchor.theta, anchor.direction, anchor.buffers, samples.positions, batches)
        losses = np.concatenate([samples.train, samples.val, samples.direction])
        diff = compare_lines(
            samples.positions, losses, ref.detach().cpu().numpy(), samples.train.shape[0]
        )
        line = json.dumps({"t": anchor.t, "precision": self.precision, **diff}) + "\n"
        # append mode, one write per record: lines of concurrent shards do not interleave
        with open(self.record_path, "a", encoding="utf-8") as f:
            f.write(line)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 ≤ i < n``; a bad value raises :class:`ConfigError`."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r} must be i/n with 0 <= i < n, e.g. 0/4")
    return i, n


def parse_lines(text: str, n_lines: int) -> list[int]:
    """``--redo "3,17-20"`` → ``[3, 17, 18, 19, 20]`` (:func:`steplines.schedule.parse_steps`)."""
    return parse_steps(text, n_lines, "--redo", "lines", "3,17-20")


def shard_segments(
    segments: list[tuple[int, int]], shard: tuple[int, int] | None
) -> list[tuple[int, int]]:
    """Every n-th segment, starting with the i-th (``shard = (i, n)``); all when None."""
    return segments if shard is None else segments[shard[0] :: shard[1]]


def measure_lines(
    run: RunDir,
    problem: Problem,
    device: torch.device,
    segments: Iterable[tuple[int, int]] | None = None,
    progress: bool = False,
    redo: list[int] | None = None,
    workers_ok: bool = True,
) -> int:
    """Measure every missing line of the given segments; return how many were measured.

    Args:
        run: the run directory (its trajectory must be recorded).
        problem: its problem (data loaded).
        device: where to measure.
        segments: ``(start, end)`` segments to work on (default: all); skip finished lines.
        progress: show a progress bar.
        redo: lines to measure again even though they are done (e.g. reported by ``verify``).
        workers_ok: ``measure.workers = "auto"`` may start worker processes (False inside a
            Ray task, which holds its CPUs in one process).

    Raises:
        RunDirError: another process holds one of these segments, or nothing is recorded.
        ReplayMismatchError: a replayed segment did not reproduce its end checkpoint.
    """
    cfg, traj = run.config, run.trajectory
    steps, every = cfg.train.steps, cfg.train.checkpoint_every
    recorded = traj.recorded_steps(steps, every)
    run.use_cpu_threads(device)
    if cfg.probe is not None:
        raise RunDirError(
            f"{run.path} was written by LineProbe in a training loop and has no trajectory to "
            "measure from; rerun that loop to fill its missing lines"
        )
    if recorded == 0:
        raise RunDirError(f"{run.path} has no recorded trajectory; run `steplines train` first")
    if not run.lines_path.exists() or (
        cfg.measure.noisy_every and not (run.path / "directions.zarr").exists()
    ):
        # training was killed before it made the stores (they are made when it stops)
        with train_lock(run.path):
            open_or_create_store(run, problem)
            if cfg.measure.noisy_every:
                open_or_create_direction_store(run)
    all_segments = traj.segments(steps, every)
    segments = list(segments) if segments is not None else all_segments
    if redo:
        segments = sorted(
            {*segments, *(s for s in all_segments if any(s[0] <= t < s[1] for t in redo))}
        )
    store = LineStore.open(run.lines_path, mode="r+")
    # a damaged [T]/[T, K] chunk of the lines this process writes is repaired only by
    # measuring them again (--redo); other shards' chunks are theirs to check
    store.check_chunks(allowed=redo, lines=(t for c, e in segments for t in range(c, e)))
    if not redo:
        _reset_directions(run, None)  # only checks
    done = store.done(tolerant=True)
    if redo:
        done[redo] = False
        # validate before invalidating: a damaged checkpoint or record leaves good lines alone
        for c, _ in {s for s in all_segments if any(s[0] <= t < s[1] for t in redo)}:
            traj.load_checkpoint(c, torch.device("cpu"))
            traj.load_records(c)
    todo = [s for s in segments if s[0] < recorded and not done[s[0] : min(s[1], recorded)].all()]
    with segment_locks(run.path, [c for c, _ in todo]):
        if redo:
            store.reset_damaged_chunks(redo)
            store.invalidate(redo)
            _reset_directions(run, redo)
        done = store.done()  # another writer may have finished lines before we locked
        return _measure_segments(
            run, problem, device, store, todo, done, recorded, progress, workers_ok
        )


def _reset_directions(run: RunDir, redo: list[int] | None) -> None:
    """Forget the noisy-direction positions of ``redo`` that are damaged (to measure again).

    Raises:
        StoreDamagedError: an undecodable ``done``/``steps`` chunk outside ``redo``.
    """
    every = run.config.measure.noisy_every
    path = run.path / "directions.zarr"
    if not every or not path.exists():
        return
    store = NoisyDirectionStore(zarr.open_group(str(path), mode="r+" if redo else "r"))
    bad = store.check(every)
    wanted = set(redo or ())
    undecodable = [p * every for p, why in bad.items() if "decoded" in why]
    if outside := [t for t in undecodable if t not in wanted]:
        raise StoreDamagedError(
            f"{path}: a chunk of the noisy-direction lines of steps {format_lines(outside)} "
            f"cannot be decoded; repair with: steplines measure {shlex.quote(str(run.path))} "
            f"--redo {format_lines(outside)}"
        )
    positions = [t // every for t in sorted(wanted) if t % every == 0 and t // every in bad]
    if positions:
        store.reset(positions)


def _measure_segments(
    run: RunDir,
    problem: Problem,
    device: torch.device,
    store: LineStore,
    todo: list[tuple[int, int]],
    done: np.ndarray,
    recorded: int,
    progress: bool,
    workers_ok: bool,
) -> int:
    cfg, traj = run.config, run.trajectory
    dtype = _dtype(cfg)
    batches = LineBatches(problem, cfg, device, dtype)
    trainer = Trainer(problem, cfg.train, device, dtype)
    measurer = LineMeasurer(
        cfg.measure,
        trainer.model,
        problem.loss_fn,
        device,
        problem.batch_size,
        record_path=run.path / CHECKS_FILE,
        workers_ok=workers_ok,
    )
    noisy = NoisyDirections(run, problem, trainer) if cfg.measure.noisy_every else None
    total = sum(int((~done[c : min(e, recorded)]).sum()) for c, e in todo)
    live = LiveLog(run.path)
    backfill_live(live, store, todo, done)
    bar = LineProgress(total, "measure", progress)
    measured = 0

    def write(t: int, record: LineRecord, summary: dict) -> None:
        store.write_line(t, record)
        live.append(summary)  # after the store: a line in live.jsonl is a done line

    # Lines are written in a background thread and the next line's batches are built while
    # this one is measured (engine/background.py): the loop does not wait on disk or data.
    try:
        with BackgroundWriter(write) as writer:
            for c, end in todo:
                e = min(end, recorded)
                measured += _measure_segment(
                    trainer, traj, c, e, done, noisy, batches, measurer, writer, bar
                )
    finally:
        measurer.close()
        bar.close()
        live.close()
    return measured


def backfill_live(
    live: LiveLog, store: LineStore, segments: list[tuple[int, int]], done: np.ndarray
) -> int:
    """Append the live records of done lines of ``segments`` that ``live.jsonl`` lacks.

    A process killed between a line's store write and its live record (or a run measured
    before live records existed) gets them from the store's summary arrays (``seconds`` is
    null); return how many were added.
    """
    wanted = [t for c, e in segments for t in range(c, min(e, done.size)) if done[t]]
    if not wanted:
        return 0
    missing = sorted(set(wanted) - live.known())
    if not missing:
        return 0
    summary = store.read_summary()
    for t in missing:
        k = int(summary["n_positions"][t])
        scalars = {name: summary[name][t] for name in summary}
        live.append(
            line_summary(t, summary["positions"][t, :k], summary["train_mean"][t, :k], scalars)
        )
    return len(missing)


def _measure_segment(
    trainer: Trainer,
    traj: TrajectoryDir,
    c: int,
    end: int,
    done: np.ndarray,
    noisy: NoisyDirections | None,
    batches: LineBatches,
    measurer: LineMeasurer,
    writer: BackgroundWriter,
    bar: LineProgress,
) -> int:
    device = trainer.device
    measured = 0
    last = time.perf_counter()
    trainer.load_state_dict(traj.load_checkpoint(c, device))
    records = traj.load_records(c)
    wanted = [
        (t, (t, rec))
        for t, rec in zip(range(c, end), records)
        if not done[t] or (noisy is not None and noisy.due(t))
    ]
    # CPU: prepare in this thread (a second thread's OpenMP team slowed the engine 1.8×)
    background = device.type == "cuda"
    with Prefetcher(lambda item: batches.batches(*item), wanted, background) as prefetch:
        for t, rec in zip(range(c, end), records):
            noisy_due = noisy is not None and noisy.due(t)
            want = not done[t] or noisy_due
            replay, anchor = trainer.step(
                t, rec.rows, rec.aug_seed, rec.dropout_seed, keep_anchor=want
            )
            if replay.batch_loss != rec.batch_loss:
                raise ReplayMismatchError(
                    f"replaying step {t} gave batch loss {replay.batch_loss!r}, recorded "
                    f"{rec.batch_loss!r}; the run directory was made with other code or "
                    "hardware — measure it where it was trained"
                )
            if anchor is None:
                continue
            train, val, direction, rows = prefetch.get(t)
            if noisy_due:
                noisy.measure(t, anchor, train, val, measurer.evaluate, measurer.spec, batches)
            if done[t]:
                continue
            start = time.perf_counter()
            record = measurer(anchor, train, val, direction, rows)
            now = time.perf_counter()
            summary = record_summary(t, record, now - start)
            writer.put(t, record, summary)
            measured += 1
            bar.update(now - last, summary)  # the ETA counts replay and data too
            last = now
    if traj.checkpoint_path(end).exists():
        _check_replay(trainer, traj.load_checkpoint(end, device), end)
    log.info("segment [%d, %d) measured", c, end)
    return measured


class NoisyDirections:
    """Lines along noisy directions at every ``noisy_every``-th step (docs/method.md §5).

    From θ_t, for D mini-batches j of a fresh seeded epoch: g_j = ∇ mean loss of batch j at θ_t
    (train mode, its own BatchNorm statistics), direction −g_j/‖g_j‖, position of an SGD step
    s = λ_t·‖g_j‖; each line is measured on line t's full batch and validation set and on
    batch j. The original's bugs are fixed (§9.15): no skipped step-0 update, the noisy batches
    do not come from the full-batch loader, the inserted point is λ‖g_j‖, and with momentum the
    direction is the pure noisy gradient (not β·m_t + g_j).
    """

    def __init__(self, run: RunDir, problem: Problem, trainer: Trainer) -> None:
        import copy

        m = run.config.measure
        self.every, self.count = m.noisy_every, m.noisy_directions
        self.seed = run.config.train.seed
        self.problem = problem
        self.trainer = trainer
        self.scratch = copy.deepcopy(trainer.model)
        self.params = [p for _, p in trainable_parameters(self.scratch)]
        self.store = open_or_create_direction_store(run)
        self._done = self.store.done()

    def due(self, t: int) -> bool:
        """Whether step t is a position whose lines are still missing."""
        return t % self.every == 0 and not self._done[t // self.every]

    def _gradient(
        self, anchor: LineAnchor, x: torch.Tensor, y: torch.Tensor, seed: int
    ) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, a in zip(self.params, anchor.theta):
                p.copy_(a)
            for b, a in zip(self.scratch.buffers(), anchor.buffers):
                b.copy_(a)
        self.scratch.train()
        self.scratch.zero_grad(set_to_none=True)
        dev = self.trainer.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            self.problem.loss_fn(self.scratch(x), y).mean().backward()
        return gradients(self.params)

    def measure(
        self,
        t: int,
        anchor: LineAnchor,
        train: list[EvalBatch],
        val: list[EvalBatch],
        evaluate: Evaluate,
        spec: GridSpec,
        batches: LineBatches,
    ) -> None:
        """Measure and store the D noisy lines of position ``t // every``."""
        b, n = self.problem.batch_size, len(self.problem.train)
        per_epoch = n // b
        lines = []
        for j in range(self.count):
            e, i = divmod(j, per_epoch)  # batch i of a fresh seeded epoch e (drop_last)
            g = torch.Generator().manual_seed(derive_seed(self.seed, "noisy", t, e))
            rows = torch.randperm(n, generator=g).numpy()[i * b : (i + 1) * b]
            x, y = batches.to_device(
                self.problem.train_batch(rows, derive_seed(self.seed, "noisy_aug", t, j))
            )
            seed = derive_seed(self.seed, "noisy_dropout", t, j)
            grads = self._gradient(anchor, x, y, seed)
            norm = float(torch.sqrt(sum((gr.double() ** 2).sum() for gr in grads)))
            direction = [-gr / (norm if norm > 0 else 1.0) for gr in grads]
            s_upd = anchor.record.lr * norm
            samples = measure_line(
                evaluate,
                anchor.theta,
                direction,
                anchor.buffers,
                s_upd,
                train,
                val,
                EvalBatch(x, y, seed),
                spec,
            )
            with np.errstate(over="ignore", invalid="ignore"):
                lines.append(
                    {
                        "positions": samples.positions,
                        "train_mean": samples.train.astype(np.float64).mean(0),
                        "val_mean": samples.val.astype(np.float64).mean(0),
                        "direction_mean": samples.direction.astype(np.float64).mean(0),
                        "grad_norm": norm,
                        "s_update": s_upd,
                    }
                )
        self.store.write_position(t // self.every, t, lines)
        self._done[t // self.every] = True


def _check_replay(trainer: Trainer, expected: dict, step: int) -> None:
    got = trainer.model.state_dict()
    for name, ref in expected["model"].items():
        if not torch.equal(got[name], ref):
            raise ReplayMismatchError(
                f"replayed parameters at step {step} differ from the checkpoint ({name}); the "
                "trajectory is not reproducible here — measure on the machine that trained it"
            )


def run_all(run: RunDir, progress: bool = False, problem: Problem | None = None) -> tuple[int, int]:
    """Train and measure a run (resuming both); return (recorded steps, lines measured now).

    Args:
        run: the run directory.
        progress: show progress bars.
        problem: the run's problem if already built (else built from ``run.config``).

    Raises:
        DivergenceError: after measuring every line before the divergence.
    """
    device = resolve_device(run.config.measure.device, run.config.measure.precision)
    problem = problem if problem is not None else make_problem(run.config.problem)
    run.write_provenance(device, problem.source)
    try:
        record_trajectory(run, problem, device, progress)
    except DivergenceError:
        measure_lines(run, problem, device, progress=progress)
        raise
    measured = measure_lines(run, problem, device, progress=progress)
    return run.config.train.steps, measured
