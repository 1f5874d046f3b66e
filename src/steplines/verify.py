"""Check a run directory: every finished line, and that the trajectory replays exactly.

For each line marked done: its chunks decode and match the checksum recorded at write time,
positions are finite and sorted up to ``n_positions`` and NaN after, the s = 0 and s_update
columns exist and their losses are finite. Lines of the recorded trajectory that are not done
are reported as missing. Optionally the trajectory is replayed (training only) and compared with
every checkpoint bit for bit. The report names the command that re-measures what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .rundir import RunDir
from .store import LineStore

if TYPE_CHECKING:
    from .problems.problem import Problem


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_run`."""

    checked: int = 0
    corrupt: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    replay_error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing is corrupt, missing or unreproducible."""
        return not self.corrupt and not self.missing and self.replay_error is None


def format_lines(lines: list[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5,9"``."""
    parts, i = [], 0
    while i < len(lines):
        j = i
        while j + 1 < len(lines) and lines[j + 1] == lines[j] + 1:
            j += 1
        parts.append(str(lines[i]) if i == j else f"{lines[i]}-{lines[j]}")
        i = j + 1
    return ",".join(parts)


def _check_line(store: LineStore, t: int, summary: dict[str, np.ndarray]) -> str | None:
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
    line = store.read_line(t, verify=False)
    for name in ("train_losses", "val_losses", "direction_losses"):
        if not np.isfinite(getattr(line, name)[:, z]).all():
            return f"{name} not finite at s = 0"
    return None


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
    summary = store.read_summary()
    done = store.done()
    for t in np.flatnonzero(done):
        report.checked += 1
        try:
            why = _check_line(store, int(t), summary)
        except Exception as err:
            why = f"unreadable ({type(err).__name__})"
        if why:
            report.corrupt[int(t)] = why
    report.missing = [t for t in range(recorded) if not done[t]]
    if replay and cfg.probe is None:  # a LineProbe run has no trajectory to replay
        report.replay_error = _replay_trajectory(run, recorded, problem)
    return report


def _replay_trajectory(run: RunDir, recorded: int, problem: Problem | None) -> str | None:
    """Replay every complete segment (training only); the first mismatch, or None."""
    from .errors import SteplinesError
    from .measure import _check_replay, _dtype
    from .rundir import resolve_device
    from .trajectory.loop import Trainer

    cfg, traj = run.config, run.trajectory
    device = resolve_device(cfg.measure.device)
    run.use_cpu_threads(device)
    problem = problem if problem is not None else run.load_problem()
    trainer = Trainer(problem, cfg.train, device, _dtype(cfg))
    try:
        for c, end in traj.segments(cfg.train.steps, cfg.train.checkpoint_every):
            if end > recorded or not traj.checkpoint_path(end).exists():
                break
            trainer.load_state_dict(traj.load_checkpoint(c, device))
            for t, rec in zip(range(c, end), traj.load_records(c)):
                trainer.step(t, rec.rows, rec.aug_seed, rec.dropout_seed)
            _check_replay(trainer, traj.load_checkpoint(end, device), end)
    except SteplinesError as err:
        return str(err)
    return None
