"""Measure segments as Ray tasks: one task per segment, workers write straight into the store.

Ray is an optional extra (``pip install 'steplines[ray]'``) and is imported only here. Each task
opens the run directory, takes its segment's lock, replays the segment and writes its lines, so
a task is exactly ``steplines measure RUN`` restricted to one segment. A worker that dies (node
loss, OOM kill, SIGKILL) is retried by Ray (``max_retries``); its lock dies with it and the
retry skips the lines already done. On CUDA clusters every task asks for ``num_gpus=1``; asking
for GPUs the cluster does not have fails at once instead of waiting forever.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..config import RunConfig, validate_config
from ..errors import ConfigError, RunDirError, SteplinesError
from ..rundir import RunDir
from ..store.run import RunLayout

MAX_RETRIES = 3


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--backend ray needs the optional extra: pip install 'steplines[ray]'"
        ) from None
    return ray


@functools.lru_cache(maxsize=2)
def _problem(problem_json: str) -> Any:
    """One loaded data set per worker process and problem (tasks reuse it)."""
    import json

    from ..config import ProblemConfig
    from ..problems.problem import make_problem

    return make_problem(ProblemConfig.model_validate(json.loads(problem_json)))


def measure_segment_task(
    run_path: str, config: dict[str, Any], segment: tuple[int, int], redo: list[int], device: str
) -> int:
    """Ray task body: measure one segment of a run (importable, no Ray needed to call it)."""
    import json

    from ..measure import measure_lines
    from ..rundir import resolve_device

    # the driver's configuration (with its overrides), named after the file it came from
    cfg: RunConfig = validate_config(config, str(RunLayout(Path(run_path)).config_path))
    run = RunDir(run_path, cfg)
    problem = _problem(json.dumps(cfg.problem.model_dump(mode="json"), sort_keys=True))
    # one process per task: Ray reserved its CPUs for this process's threads
    return measure_lines(
        run, problem, resolve_device(device), [tuple(segment)], redo=redo, workers_ok=False
    )


def measure_with_ray(
    run: RunDir,
    segments: list[tuple[int, int]],
    address: str | None = None,
    redo: list[int] | None = None,
    progress: bool = True,
    num_cpus: int | None = None,
) -> int:
    """Measure ``segments`` of ``run`` on a Ray cluster; return the number of lines measured.

    Args:
        run: the run directory; it must be on a file system every Ray node sees.
        segments: ``(start, end)`` segments to measure (finished lines are skipped).
        address: the cluster to join (``ray start --head`` prints it); None starts a local one.
        redo: lines to measure again.
        progress: show a progress bar over segments.
        num_cpus: CPUs of a local cluster (default: all).

    Raises:
        ConfigError: Ray is not installed.
        RunDirError: the run wants CUDA and the cluster has no GPU; a task's own user error.
    """
    ray = _import_ray()
    from tqdm import tqdm

    from ..store import LineStore

    if not run.lines_path.exists():
        raise RunDirError(f"{run.path} has no recorded trajectory; run `steplines train` first")
    done = LineStore.open(run.lines_path).done()
    redo = sorted(redo or [])
    work = [
        (c, e, [t for t in redo if c <= t < e])
        for c, e in segments
        if not done[c:e].all() or any(c <= t < e for t in redo)
    ]
    if not work:
        return 0
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    gpus = ray.cluster_resources().get("GPU", 0)
    device = run.config.measure.device
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
    if use_gpu and gpus < 1:
        raise RunDirError(
            f"measure.device is {device!r} but the Ray cluster has no GPU; add GPU nodes or "
            "measure with --device cpu"
        )
    # CPU numerics depend on the thread count, so each task computes with the run's count
    # (bitwise replays) and reserves as many CPUs (capped by the largest node).
    cpus = 1 if use_gpu else min(run.cpu_threads(), int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_retries=MAX_RETRIES)(
        measure_segment_task
    )
    config = run.config.model_dump(mode="json")
    dev = "cuda" if use_gpu else "cpu"
    refs = [task.remote(str(run.path), config, (c, e), r, dev) for c, e, r in work]
    measured = 0
    with tqdm(total=len(refs), desc="segments", unit="seg", disable=not progress) as bar:
        pending = refs
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                measured += ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:
                if isinstance(err.cause, SteplinesError):
                    raise err.cause from None  # a user error: one line, as in-process
                raise
            bar.update()
    return measured
