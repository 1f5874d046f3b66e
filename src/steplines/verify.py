"""Check a run directory: every array that the analysis or a resume reads, and the trajectory.

Every chunk of the ``[T]`` and ``[T, K]`` arrays of the line store must decode (``done``, the
mean lines, the scalars). For each line marked done: its per-sample chunks decode and match the
checksum recorded at write time, positions are finite and sorted up to ``n_positions`` and NaN
after, the s = 0 and s_update columns exist and their losses are finite, its mean lines are the
means of its per-sample losses and its scalars those of the trajectory's step records. The
noisy-direction store is checked position by position. Lines of the recorded trajectory that are
not done are reported as missing. Optionally the trajectory is replayed (training only) and
compared with every checkpoint bit for bit. The report names the command that re-measures what
is wrong (``steplines measure RUN --redo …`` repairs every damaged array).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from .analysis.tables import MANIFEST, damaged
from .errors import SteplinesError
from .rundir import RunDir
from .store import LineStore
from .store.integrity import bad_lines, format_lines
from .store.schema import SCALARS
from .trajectory.loop import StepRecord

if TYPE_CHECKING:
    from .problems.problem import Problem

__all__ = ["VerifyReport", "format_lines", "verify_run"]


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_run`.

    Attributes:
        checked: finished lines checked.
        corrupt: line → what is wrong with it (re-measure with ``--redo``).
        missing: recorded lines not measured yet (``steplines measure``).
        damaged: array → line ranges of its chunks that cannot be decoded (their lines are
            in ``corrupt`` too).
        replay_error: the first trajectory mismatch or damaged trajectory file.
        unchecked: checks that could not run and were not skipped on request (each one line
            naming the check and why); the run is then not OK.
        skipped: checks skipped on request (``--no-replay``), for the report.
        files: damaged side files that hold no measured data (``provenance.json``,
            ``trajectory/eval_*.json``, ``live.jsonl``, the analysis tables against their
            checksums), each one line with its repair; they do not make the run not OK.
    """

    checked: int = 0
    corrupt: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    damaged: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    replay_error: str | None = None
    unchecked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is corrupt, missing, unreproducible or left unchecked."""
        return (
            not self.corrupt
            and not self.missing
            and self.replay_error is None
            and not self.unchecked
        )


# The store's scalars that the trajectory records too: they must be the replayed step's.
_RECORDED = tuple(name for name in SCALARS if name in {f.name for f in fields(StepRecord)})


def _same(a: float, b: float) -> bool:
    return bool(a == b or (np.isnan(a) and np.isnan(b)))


def _records(run: RunDir, recorded: int) -> tuple[dict[int, StepRecord], str | None]:
    """Step records of every recorded step; the first damaged records file, if any."""
    cfg, traj = run.config, run.trajectory
    out: dict[int, StepRecord] = {}
    if cfg.probe is not None:
        return out, None
    for c, _ in traj.segments(cfg.train.steps, cfg.train.checkpoint_every):
        if c >= recorded or not traj.records_path(c).exists():
            break
        try:
            out.update(zip(range(c, recorded), traj.load_records(c)))
        except SteplinesError as err:
            return out, str(err)
    return out, None


def verify_run(run: RunDir, replay: bool = True, problem: Problem | None = None) -> VerifyReport:
    """Verify every finished line of ``run`` (and, with ``replay``, its trajectory).

    Every check that cannot run (no trajectory records for done lines, no checkpoint to
    replay a segment against, no noisy-direction store that the configuration asks for) is
    listed in :attr:`VerifyReport.unchecked`, which makes the report not OK; a replay skipped
    on request is listed in :attr:`VerifyReport.skipped` instead.

    ``problem``: the run's problem for the replay; None = :meth:`RunDir.load_problem`, which
    refuses to import a user's problem the run directory names (pass one you loaded with
    ``--problem``/``--trust-problem``).
    """
    report = VerifyReport(files=_check_files(run))
    cfg, traj = run.config, run.trajectory
    recorded = traj.recorded_steps(cfg.train.steps, cfg.train.checkpoint_every)
    if not run.lines_path.exists():
        report.missing = list(range(recorded))
        if recorded == 0:
            report.unchecked.append(_no_lines_note(run))
        return report
    store = LineStore.open(run.lines_path)
    report.damaged = store.damaged_chunks()
    summary = store.read_summary(tolerant=True)
    done = summary["done"].astype(bool)
    report.checked = int(done.sum())
    report.corrupt = bad_lines(store, deep=True, estimators=cfg.measure.estimators)
    for t, why in _undecodable_lines(report.damaged).items():
        report.corrupt.setdefault(t, why)
    records, records_error = _records(run, recorded)
    if cfg.probe is None:
        report.corrupt.update(_differing_scalars(summary, done, records, report.corrupt))
        note = _unrecorded_note(run, done, records)
        if note and records_error is None:
            (report.unchecked if replay else report.skipped).append(note)
    report.corrupt = dict(sorted(report.corrupt.items()))
    report.missing = [t for t in range(recorded) if not done[t] and t not in report.corrupt]
    for t, why in _check_directions(run, done).items():
        report.corrupt.setdefault(t, why)
    report.replay_error = records_error
    if cfg.probe is None:
        _check_replay(report, run, recorded, replay, problem)
    return report


def _check_replay(
    report: VerifyReport, run: RunDir, recorded: int, replay: bool, problem: Problem | None
) -> None:
    """Replay the trajectory of ``run`` (training only) into ``report``: its first mismatch as
    :attr:`VerifyReport.replay_error`, the segments without an end checkpoint as unchecked; a
    replay skipped on request as skipped, none at all after a damaged records file (already
    the replay error)."""
    if not replay:
        report.skipped.append("replay of the trajectory (--no-replay)")
    elif report.replay_error is None:
        report.replay_error, unreplayed = _replay_trajectory(run, recorded, problem)
        if unreplayed:
            report.unchecked.append(_unreplayed_note(run, unreplayed))


def _no_lines_note(run: RunDir) -> str:
    """Why nothing of ``run`` can be checked (no line store, no trajectory), with the fix."""
    return (
        f"lines: {run.lines_path.name} and the trajectory are missing: nothing to "
        f"check; run: steplines train --config {run.path}/config.toml --out {run.path}"
    )


def _undecodable_lines(damaged: dict[str, list[tuple[int, int]]]) -> dict[int, str]:
    """Every line of a chunk that cannot be decoded: ``{t: "array: why"}`` (the first array
    of ``damaged`` that names it)."""
    out: dict[int, str] = {}
    for name, ranges in damaged.items():
        for a, b in ranges:
            for t in range(a, b):
                out.setdefault(t, f"{name}: chunk cannot be decoded")
    return out


def _differing_scalars(
    summary: Mapping[str, np.ndarray],
    done: np.ndarray,
    records: Mapping[int, StepRecord],
    corrupt: Mapping[int, str],
) -> dict[int, str]:
    """Done lines, not already ``corrupt``, whose stored scalars differ from their step
    record: ``{t: why}`` (the first such scalar). Replay is bitwise, so they must be equal;
    a line without a record is not checked here."""
    out: dict[int, str] = {}
    for t in map(int, np.flatnonzero(done)):
        if t in corrupt or t not in records:
            continue
        for name in _RECORDED:
            if not _same(float(summary[name][t]), float(getattr(records[t], name))):
                out[t] = f"{name}: differs from the trajectory record"
                break
    return out


def _unrecorded_note(
    run: RunDir, done: np.ndarray, records: Mapping[int, StepRecord]
) -> str | None:
    """The done lines whose step records the trajectory lacks, as a check that cannot run
    (None: every done line has its record)."""
    unrecorded = [int(t) for t in np.flatnonzero(done) if int(t) not in records]
    if not unrecorded:
        return None
    return (
        f"trajectory: lines {format_lines(unrecorded)} are measured but {run.trajectory.path} "
        "does not cover them (checkpoints or step records deleted?), so their scalars "
        "cannot be checked against the records and they cannot be replayed, resumed "
        "or re-measured"
    )


def _unreplayed_note(run: RunDir, unreplayed: list[int]) -> str:
    """The segments that could not be replayed (no end checkpoint), as a check that could not
    run."""
    return (
        f"replay: segments starting at steps {format_lines(unreplayed)} have no "
        f"checkpoint at their end in {run.trajectory.path}, so they were not replayed"
    )


def _check_files(run: RunDir) -> list[str]:
    """The damaged side files of ``run`` (no measured data in them), each with its repair."""
    import json
    import shlex

    out = []
    arg = shlex.quote(str(run.path))
    prov = run.provenance_path
    if prov.exists() and run.read_provenance() is None:
        out.append(
            f"{prov} is damaged (not JSON: cut off?); the next `steplines measure {arg}` "
            "writes it again (versions and device of that invocation)"
        )
    for path in run.layout.eval_paths():
        try:
            ok = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
        except (OSError, ValueError):
            ok = False
        if not ok:
            out.append(
                f"{path} is damaged (not JSON: cut off?); it holds eval-mode metrics for the "
                f"report only: delete it (the report then leaves that checkpoint out)"
            )
    for tables in sorted(run.path.glob("analysis*")):
        for name in damaged(tables) if tables.is_dir() else []:
            out.append(
                f"{tables / name} differs from its checksum in {tables / MANIFEST} (changed or "
                f"damaged); it is derived from the lines: `steplines analyze {arg}` writes the "
                "tables again"
            )
    live = run.path / "live.jsonl"
    if live.exists():
        try:
            raw = live.read_bytes().splitlines()
        except OSError:
            raw = []
        bad = 0
        for line in raw:
            try:
                ok = isinstance(json.loads(line), dict)
            except ValueError:
                ok = False
            bad += not ok
        if bad:
            out.append(
                f"{live} is damaged ({bad} of {len(raw)} records cannot be read: cut off?); it "
                "is the measurement's progress log only: delete it, or keep it (readers skip "
                "those records)"
            )
    return out


def _check_directions(run: RunDir, done: np.ndarray) -> dict[int, str]:
    """Lines whose noisy-direction position is damaged or missing: ``{t: why}``."""
    path = run.layout.directions_path
    every = run.config.measure.noisy_every
    if not every:
        return {}
    from .store.noisy import NoisyDirectionStore

    if not path.exists():
        return {
            int(t): f"noisy directions: {path.name} is missing"
            for t in np.flatnonzero(done)
            if int(t) % every == 0
        }
    return {
        p * every: f"noisy directions: {why}"
        for p, why in NoisyDirectionStore.check_path(path, every, done).items()
    }


def _replay_trajectory(
    run: RunDir, recorded: int, problem: Problem | None
) -> tuple[str | None, list[int]]:
    """Replay every complete segment (training only): the first mismatch or None, and the
    starts of the recorded segments that could not be replayed (no end checkpoint)."""
    from .measure import check_replay, run_dtype
    from .rundir import resolve_device
    from .trajectory.loop import Trainer

    cfg, traj = run.config, run.trajectory
    device = resolve_device(cfg.measure.device)
    run.use_cpu_threads(device)
    problem = problem if problem is not None else run.load_problem()
    trainer = Trainer(problem, cfg.train, device, run_dtype(cfg))
    unreplayed: list[int] = []
    try:
        for c, end in traj.segments(cfg.train.steps, cfg.train.checkpoint_every):
            if c >= recorded:
                break
            if not traj.checkpoint_path(c).exists() or not traj.checkpoint_path(end).exists():
                # the last segment of a diverged run has no end checkpoint: nothing to check
                if traj.divergence() is None or end <= recorded:
                    unreplayed.append(c)
                continue
            trainer.load_state_dict(traj.load_checkpoint(c, device))
            for t, rec in zip(range(c, end), traj.load_records(c)):
                trainer.step(t, rec.rows, rec.aug_seed, rec.dropout_seed)
            check_replay(trainer, traj.load_checkpoint(end, device), end, traj, c)
    except SteplinesError as err:
        return str(err), unreplayed
    return None, unreplayed
