"""Helpers for the tests: the tiny digits configuration, the CLI in a subprocess or in this
process, and store comparison.

Test modules import these from here (``from support import ...``), never from ``conftest``:
pytest imports every ``conftest.py`` under the module name ``conftest``, so a second one in a
subfolder would shadow the first for ``from conftest import``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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

CLI = [sys.executable, "-m", "steplines.cli"]


def steplines(
    *args: str, check: bool = False, timeout: float = 300, report: bool = False
) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (as a user would); ``run`` skips the report unless asked."""
    if args and args[0] == "run" and not report:
        args = (*args, "--no-report")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"steplines {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def cli(*args: str, check: bool = False, report: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in this process (click's test runner): the same commands, options, output
    and exit codes as :func:`steplines`, without a new interpreter importing torch (seconds
    per call). For commands whose subject is not the process itself (signals, locks, imports);
    the torch thread count a run sets is restored afterwards."""
    import torch
    from click.testing import CliRunner

    from steplines.cli.main import main

    if args and args[0] == "run" and not report:
        args = (*args, "--no-report")
    threads = torch.get_num_threads()
    try:
        res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    out = subprocess.CompletedProcess(["steplines", *args], res.exit_code, res.stdout, res.stderr)
    if check and out.returncode != 0:
        raise AssertionError(f"steplines {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a shared (session) run directory, to change or measure further."""
    shutil.copytree(src, dst)
    return dst


def assert_same_store(a: Path, b: Path) -> None:
    """The line stores of run directories ``a`` and ``b`` are identical, array by array."""
    from steplines.store import differing_arrays

    assert differing_arrays(a / "lines.zarr", b / "lines.zarr") == []
