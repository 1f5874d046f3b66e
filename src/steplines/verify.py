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

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from .errors import SteplinesError
from .rundir import RunDir
from .store import LineStore
from .store.lines import _row_mean as row_mean
from .store.lines import format_lines
from .store.schema import MEANS, SCALARS
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
    """

    checked: int = 0
    corrupt: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    damaged: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    replay_error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing is corrupt, missing or unreproducible."""
        return not self.corrupt and not self.missing and self.replay_error is None


# The store's scalars that the trajectory records too: they must be the replayed step's.
_RECORDED = tuple(name for name in SCALARS if name in {f.name for f in fields(StepRecord)})


def _same(a: float, b: float) -> bool:
    return bool(a == b or (np.isnan(a) and np.isnan(b)))


def _check_line(
    store: LineStore,
    t: int,
    summary: dict[str, np.ndarray],
    record: StepRecord | None = None,
    estimators: bool = False,
) -> str | None:
    if not store.verify_line(t):
        return "checksum mismatch or undecodable chunk"
    k = int(summary["n_positions"][t])
    pos = summary["positions"][t]
    if not (0 < k <= store.n_positions):
        return f"n_positions {k} out of range"
    if not np.isfinite(pos[:k]).all() or np.any(np.diff(pos[:k]) < 0):
        return "positions not finite and sorted"
    if not np.isnan(pos[k:]).all():
        return "positions beyond n_positions are not NaN"
    z, u = int(summary["zero_index"][t]), int(summary["update_index"][t])
    if not (0 <= z < k and 0 <= u < k) or pos[z] != 0.0:
        return "s = 0 or s_update column missing"
    if int(summary["n_passes"][t]) < 1:
        return "n_passes missing"
    line = store.read_line(t, verify=False)
    for name in ("train_losses", "val_losses", "direction_losses"):
        if not np.isfinite(getattr(line, name)[:, z]).all():
            return f"{name} not finite at s = 0"
    # the mean lines the analysis reads must be the means of the checksummed losses
    for name, mean_name in MEANS.items():
        got, want = summary[mean_name][t], row_mean(getattr(line, name))
        if not (np.array_equal(got[:k], want, equal_nan=True) and np.isnan(got[k:]).all()):
            return f"{mean_name} does not match the per-sample losses"
    if pos[u] != summary["s_update"][t]:
        return "s_update does not match its position"
    if record is not None:  # the scalars must be the trajectory's (replay is bitwise)
        for name in _RECORDED:
            if not _same(float(summary[name][t]), float(getattr(record, name))):
                return f"{name} differs from the trajectory record"
    if estimators and store.has_estimator_inputs and pos[u] != 0.0:
        for name in ("est_slope_update", "est_curvature"):
            if np.isnan(summary[name][t]):
                return f"{name} missing"
    return None


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

    ``problem``: the run's problem for the replay; None = :meth:`RunDir.load_problem`, which
    refuses to import a user's problem the run directory names (pass one you loaded with
    ``--problem``/``--trust-problem``).
    """
    report = VerifyReport()
    cfg, traj = run.config, run.trajectory
    recorded = traj.recorded_steps(cfg.train.steps, cfg.train.checkpoint_every)
    if not run.lines_path.exists():
        report.missing = list(range(recorded))
        return report
    store = LineStore.open(run.lines_path)
    report.damaged = store.damaged_chunks()
    for name, ranges in report.damaged.items():
        for a, b in ranges:
            for t in range(a, b):
                report.corrupt.setdefault(t, f"chunk of {name} cannot be decoded")
    summary = store.read_summary(tolerant=True)
    done = summary["done"].astype(bool)
    records, records_error = _records(run, recorded)
    for t in np.flatnonzero(done):
        t = int(t)
        if t in report.corrupt:
            continue
        report.checked += 1
        try:
            why = _check_line(store, t, summary, records.get(t), cfg.measure.estimators)
        except Exception as err:
            why = f"unreadable ({type(err).__name__})"
        if why:
            report.corrupt[t] = why
    report.missing = [t for t in range(recorded) if not done[t] and t not in report.corrupt]
    for t, why in _check_directions(run).items():
        report.corrupt.setdefault(t, why)
    report.replay_error = records_error
    if replay and cfg.probe is None and records_error is None:
        report.replay_error = _replay_trajectory(run, recorded, problem)
    return report


def _check_directions(run: RunDir) -> dict[int, str]:
    """Lines whose noisy-direction position is damaged: ``{t: why}``."""
    path = run.layout.directions_path
    every = run.config.measure.noisy_every
    if not every or not path.exists():
        return {}
    from .store.noisy import NoisyDirectionStore

    return {
        p * every: f"noisy directions: {why}"
        for p, why in NoisyDirectionStore.open(path).check(every).items()
    }


def _replay_trajectory(run: RunDir, recorded: int, problem: Problem | None) -> str | None:
    """Replay every complete segment (training only); the first mismatch, or None."""
    from .errors import SteplinesError
    from .measure import check_replay, run_dtype
    from .rundir import resolve_device
    from .trajectory.loop import Trainer

    cfg, traj = run.config, run.trajectory
    device = resolve_device(cfg.measure.device)
    run.use_cpu_threads(device)
    problem = problem if problem is not None else run.load_problem()
    trainer = Trainer(problem, cfg.train, device, run_dtype(cfg))
    try:
        for c, end in traj.segments(cfg.train.steps, cfg.train.checkpoint_every):
            if end > recorded or not traj.checkpoint_path(end).exists():
                break
            trainer.load_state_dict(traj.load_checkpoint(c, device))
            for t, rec in zip(range(c, end), traj.load_records(c)):
                trainer.step(t, rec.rows, rec.aug_seed, rec.dropout_seed)
            check_replay(trainer, traj.load_checkpoint(end, device), end)
    except SteplinesError as err:
        return str(err)
    return None
