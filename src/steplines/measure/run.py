"""A whole run: record the trajectory, then measure every line (both resumable)."""

from __future__ import annotations

from ..errors import DivergenceError
from ..problems.problem import Problem, make_problem
from ..rundir import RunDir, resolve_device
from .recording import record_trajectory
from .segments import measure_lines


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
