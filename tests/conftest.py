"""Shared fixtures: a tiny digits run configuration and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = """
[problem]
dataset = "digits"
model = "digits-resnet"
train_size = 256
val_size = 64
batch_size = 64

[train]
lr = 1.0
steps = {steps}
checkpoint_every = 4
cpu_threads = 1

[measure]
grid = "paper"
interval = 0.5
resolution = 0.1
max_passes = 2
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A digits run of 10 steps in segments of 4, coarse grid: seconds on one core."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(steps=10))
    return p


def steplines(
    *args: str, check: bool = False, timeout: float = 300, report: bool = False
) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (as a user would); ``run`` skips the report unless asked."""
    if args and args[0] == "run" and not report:
        args = (*args, "--no-report")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "steplines.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"steplines {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """The line stores of run directories ``a`` and ``b`` are identical, array by array."""
    from steplines.store import differing_arrays

    assert differing_arrays(a / "lines.zarr", b / "lines.zarr") == []
