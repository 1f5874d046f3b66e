"""Measure every missing line of a run by segments, replaying the trajectory.

``measure_lines`` takes each segment [c, c+C) that still has unmeasured lines, restores
checkpoint c, replays its steps exactly from the records, measures each missing line with a
:class:`~steplines.measure.measurer.LineMeasurer` and writes it to the store (in a background
thread); at the segment end the replayed state must equal checkpoint c+C bit for bit
(:func:`check_replay`), else :class:`~steplines.errors.ReplayMismatchError`. Each segment is
an independent unit of work: resumable after a crash, shardable (:func:`shard_segments`),
retryable.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Iterable

import numpy as np
import torch

from ..errors import ReplayMismatchError, RunDirError, SteplinesError
from ..live import LineProgress, LiveLog, line_summary, record_summary
from ..locks import segment_locks, train_lock
from ..problems.problem import Problem
from ..rundir import RunDir
from ..store import LineRecord, LineStore, StoreDamagedError
from ..store.lines import format_lines
from ..trajectory.loop import Trainer
from ..trajectory.storage import TrajectoryDir
from .background import BackgroundWriter, Prefetcher
from .batches import LineBatches
from .measurer import LineMeasurer
from .noisy import NoisyDirections
from .recording import run_dtype
from .stores import open_or_create_direction_store, open_or_create_store

log = logging.getLogger("steplines")


def shard_segments(
    segments: list[tuple[int, int]], shard: tuple[int, int] | None
) -> list[tuple[int, int]]:
    """Every n-th segment, starting with the i-th (``shard = (i, n)``); all when None."""
    return segments if shard is None else segments[shard[0] :: shard[1]]


def _check_redo(
    run: RunDir,
    store: LineStore,
    done: np.ndarray,
    redo: list[int],
    all_segments: list[tuple[int, int]],
) -> None:
    """Refuse a ``--redo`` with nothing measured yet, and load every checkpoint and record it
    needs before a line is touched: a damaged one leaves the good lines alone."""
    if not done.any() and not store.damaged_chunks():
        # --redo re-measures finished lines; measuring a whole run is not what was asked
        raise RunDirError(
            f"{run.path} has no measured line yet, so there is nothing to --redo; measure "
            f"it with: steplines measure {shlex.quote(str(run.path))}"
        )
    for c, _ in {s for s in all_segments if any(s[0] <= t < s[1] for t in redo)}:
        run.trajectory.load_checkpoint(c, torch.device("cpu"))
        run.trajectory.load_records(c)


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
    _make_missing_stores(run, problem)
    all_segments = traj.segments(steps, every)
    segments = _with_redo(segments if segments is not None else all_segments, all_segments, redo)
    store = LineStore.open(run.lines_path, mode="r+")
    store.repair_val_indices()  # written once at creation: rewritten if damaged
    # a damaged [T]/[T, K] chunk of the lines this process writes is repaired only by
    # measuring them again (--redo); other shards' chunks are theirs to check
    store.check_chunks(allowed=redo, lines=(t for c, e in segments for t in range(c, e)))
    if not redo:
        _reset_directions(run, None)  # only checks
    done = store.done(tolerant=True)
    if redo:
        _check_redo(run, store, done, redo, all_segments)
        done[redo] = False
    noisy_missing = _noisy_missing(run, recorded)
    todo = [
        s
        for s in segments
        if s[0] < recorded
        and (not done[s[0] : min(s[1], recorded)].all() or noisy_missing & set(range(*s)))
    ]
    with segment_locks(run.path, [c for c, _ in todo]):
        if redo:
            # only what is lost already (undecodable chunks, damaged noisy positions) is
            # reset; the other lines of ``redo`` stay as they are until their segment's
            # replay check has passed (``hold``): a failed check leaves them untouched
            store.reset_damaged_chunks(redo)
            _reset_directions(run, redo)
        done = store.done()  # another writer may have finished lines before we locked
        if redo:
            done[redo] = False
        return _measure_segments(
            run,
            problem,
            device,
            store,
            todo,
            done,
            recorded,
            progress,
            workers_ok,
            hold=set(redo or ()),
        )


def _make_missing_stores(run: RunDir, problem: Problem) -> None:
    """Create the line store (and the noisy-direction store) when training was killed before
    it made them (they are made when it stops)."""
    noisy = run.config.measure.noisy_every
    if not run.lines_path.exists() or (noisy and not run.layout.directions_path.exists()):
        with train_lock(run.path):
            open_or_create_store(run, problem)
            if noisy:
                open_or_create_direction_store(run)


def _with_redo(
    segments: Iterable[tuple[int, int]],
    all_segments: list[tuple[int, int]],
    redo: list[int] | None,
) -> list[tuple[int, int]]:
    """``segments`` plus every segment holding a line of ``redo`` (sorted when there is one)."""
    segments = list(segments)
    if not redo:
        return segments
    return sorted({*segments, *(s for s in all_segments if any(s[0] <= t < s[1] for t in redo))})


def _noisy_missing(run: RunDir, recorded: int) -> set[int]:
    """Recorded steps whose noisy-direction lines are due but not done (a lost ``done``
    chunk included): their segments are measured even when all their lines are done."""
    every = run.config.measure.noisy_every
    path = run.layout.directions_path
    if not every or not path.exists():
        return set()
    done = open_or_create_direction_store(run)._read_tolerant("done", {})
    return {p * every for p in np.flatnonzero(~done) if p * every < recorded}


def _reset_directions(run: RunDir, redo: list[int] | None) -> None:
    """Forget the noisy-direction positions of ``redo`` that are damaged (to measure again).

    Raises:
        StoreDamagedError: an undecodable ``done``/``steps`` chunk outside ``redo``.
    """
    every = run.config.measure.noisy_every
    path = run.layout.directions_path
    if not every or not path.exists():
        return
    store = open_or_create_direction_store(run)  # recreates a missing or unreadable array
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
    hold: set[int] = frozenset(),  # type: ignore[assignment]
) -> int:
    cfg, traj = run.config, run.trajectory
    dtype = run_dtype(cfg)
    batches = LineBatches(problem, cfg, device, dtype)
    trainer = Trainer(problem, cfg.train, device, dtype)
    measurer = LineMeasurer(
        cfg.measure,
        trainer.model,
        problem.loss_fn,
        device,
        problem.batch_size,
        record_path=run.layout.precision_checks_path,
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
    # this one is measured (measure/background.py): the loop does not wait on disk or data.
    try:
        with BackgroundWriter(write) as writer:
            for c, end in todo:
                e = min(end, recorded)
                measured += _measure_segment(
                    trainer, traj, c, e, done, noisy, batches, measurer, writer, bar, hold
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
    hold: set[int] = frozenset(),  # type: ignore[assignment]
) -> int:
    """Replay segment [c, end) and measure its lines that are not ``done``.

    Lines in ``hold`` (re-measured on request, their old data still in the store) are kept
    in memory and written only after the end checkpoint has been reproduced: a failed check
    leaves their old data in place.
    """
    device = trainer.device
    held: list[tuple[int, LineRecord, dict]] = []
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
                what = (
                    f"replaying step {t} gave batch loss {replay.batch_loss!r}, recorded "
                    f"{rec.batch_loss!r}"
                )
                if t != c:  # only the first step can blame a checkpoint (the start one)
                    raise ReplayMismatchError(_diagnose(trainer, None, t, None, what))
                raise ReplayMismatchError(_diagnose(trainer, traj, c, c, what))
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
            if t in hold:
                held.append((t, record, summary))
            else:
                writer.put(t, record, summary)
            measured += 1
            bar.update(now - last, summary)  # the ETA counts replay and data too
            last = now
    if traj.checkpoint_path(end).exists():
        check_replay(trainer, traj.load_checkpoint(end, device), end, traj, c)
    for item in held:
        writer.put(*item)
    log.info("segment [%d, %d) measured", c, end)
    return measured


def check_replay(
    trainer: Trainer,
    expected: dict,
    step: int,
    traj: TrajectoryDir | None = None,
    start: int | None = None,
) -> None:
    """The replayed state must equal checkpoint ``step`` bit for bit.

    ``traj`` and ``start`` (where the replay began) let a mismatch be diagnosed: a damaged
    checkpoint (the replay reproduces the recorded batch losses, the file does not) is named
    with its repair instead of being called not reproducible.
    """
    got = trainer.model.state_dict()
    for name, ref in expected["model"].items():
        if not torch.equal(got[name], ref):
            what = f"replayed parameters at step {step} differ from the checkpoint ({name})"
            raise ReplayMismatchError(_diagnose(trainer, traj, step, start, what))


def _same_batch_losses(trainer: Trainer, traj: TrajectoryDir, c: int, end: int) -> bool:
    """Replay [c, end) from checkpoint c: whether every recorded batch loss is reproduced."""
    trainer.load_state_dict(traj.load_checkpoint(c, trainer.device))
    for t, rec in zip(range(c, end), traj.load_records(c)):
        replay, _ = trainer.step(t, rec.rows, rec.aug_seed, rec.dropout_seed)
        if replay.batch_loss != rec.batch_loss:
            return False
    return True


def _checkpoint_damaged(trainer: Trainer, traj: TrajectoryDir, step: int) -> bool | None:
    """With the replayed state at ``step`` in ``trainer``: whether checkpoint ``step`` is
    damaged (the replayed state reproduces the recorded batch loss of ``step``, the
    checkpoint's state does not); None when there is no record of ``step`` to tell."""
    if not traj.records_path(step).exists():
        return None
    rec = traj.load_records(step)[0]
    replay, _ = trainer.step(step, rec.rows, rec.aug_seed, rec.dropout_seed)
    if replay.batch_loss != rec.batch_loss:
        return False
    trainer.load_state_dict(traj.load_checkpoint(step, trainer.device))
    loaded, _ = trainer.step(step, rec.rows, rec.aug_seed, rec.dropout_seed)
    return loaded.batch_loss != rec.batch_loss


def _diagnose(
    trainer: Trainer, traj: TrajectoryDir | None, step: int, start: int | None, what: str
) -> str:
    """The one-line message of a replay mismatch at checkpoint ``step``: a damaged checkpoint
    with its repair, or a trajectory that this machine does not reproduce."""
    damaged: bool | None = None
    if traj is not None and start is not None:
        try:
            if start == step == 0:  # the initial state is made from the seed: make it again
                fresh = Trainer(trainer.problem, trainer.cfg, trainer.device, trainer.dtype)
                damaged = _checkpoint_damaged(fresh, traj, 0)
            elif start == step:  # the segment's first step: was its start checkpoint damaged?
                every = trainer.cfg.checkpoint_every
                if step >= every and _same_batch_losses(trainer, traj, step - every, step):
                    damaged = _checkpoint_damaged(trainer, traj, step)
            else:  # the replay from ``start`` reproduced every batch loss up to ``step``
                damaged = _checkpoint_damaged(trainer, traj, step)
                if damaged is None and step - start >= 2:
                    damaged = True
        except (SteplinesError, RuntimeError, ValueError):
            damaged = None
    if damaged:
        path = traj.checkpoint_path(step)  # type: ignore[union-attr]
        run = shlex.quote(str(path.parent.parent))
        origin = "made from the seed" if step == 0 else f"replayed from step {start}"
        return (
            f"{path} is damaged ({what}, but the state {origin} reproduces "
            f"the recorded batch losses and the checkpoint does not); delete it and record it "
            f"again with: "
            f"steplines train --config {run}/config.toml --out {run} (training again gives "
            "identical data; the lines measured before are kept)"
        )
    return (
        f"{what}; the trajectory is not reproducible here — measure on the machine that trained it"
    )
