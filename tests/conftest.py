"""Shared fixtures: the tiny digits configuration, and one tiny run trained and measured once
per session that many tests read (or copy to change), instead of each training its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import TINY


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A digits run of 10 steps in segments of 4, coarse grid: seconds on one core."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(steps=10))
    return p


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(config file, run dir)``: the tiny config's trajectory recorded (what ``steplines
    train`` writes), no line measured. Shared: copy it (``support.copy_run``) to change it."""
    import torch

    from steplines.config import load_config
    from steplines.measure import record_trajectory
    from steplines.problems.problem import make_problem
    from steplines.rundir import RunDir, resolve_device

    root = tmp_path_factory.mktemp("tiny-trained")
    cfg_file = root / "tiny.toml"
    cfg_file.write_text(TINY.format(steps=10))
    cfg = load_config(path=cfg_file)
    threads = torch.get_num_threads()
    try:
        device = resolve_device(cfg.measure.device, cfg.measure.precision)
        run = RunDir.prepare(root / "run", cfg)
        run.write_provenance(device)
        record_trajectory(run, make_problem(cfg.problem), device)
    finally:
        torch.set_num_threads(threads)
    return cfg_file, run.path


@pytest.fixture(scope="session")
def tiny_run(
    tiny_trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """``(config file, run dir)``: the tiny config trained and every line measured in this
    process (the oracle the CLI's ways of measuring are compared with). Shared: read it, or
    copy it (``support.copy_run``) to change it."""
    import torch

    from steplines.measure import run_all
    from steplines.rundir import RunDir

    from support import copy_run

    cfg_file, trained = tiny_trained
    path = copy_run(trained, tmp_path_factory.mktemp("tiny-run") / "run")
    threads = torch.get_num_threads()
    try:
        run_all(RunDir.open(path))  # the trajectory is recorded: this measures every line
    finally:
        torch.set_num_threads(threads)
    return cfg_file, path
