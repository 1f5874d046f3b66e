"""The examples/ scripts run (smoke settings) and a user's problem gets one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steplines.analysis.run import analyze_run
from steplines.store import LineStore

from support import cli, steplines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SMALL = """
[train]
lr = 0.5
steps = 6
checkpoint_every = 3
cpu_threads = 1

[measure]
grid = "symmetric"
interval = 0.5
resolution = 0.1
max_passes = 2
"""


def _python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def test_quadratic_example_matches_the_closed_form(tmp_path: Path) -> None:
    out = _python(str(EXAMPLES / "quadratic.py"), "--out", str(tmp_path / "q"), "--steps", "6")
    assert out.returncode == 0, out.stderr
    worst = float(re.search(r"closed-form s\*: ([0-9.e+-]+)", out.stdout).group(1))
    assert worst < 1e-6
    assert LineStore.open(tmp_path / "q" / "lines.zarr").done().all()


@pytest.mark.slow  # the example script end to end; LineProbe with AdamW is tested in tests/probe
def test_own_loop_adamw_example_writes_an_analysable_run(tmp_path: Path) -> None:
    run = tmp_path / "adamw"
    out = _python(
        str(EXAMPLES / "own_loop_adamw.py"),
        "--out",
        str(run),
        "--steps",
        "12",
        "--lines",
        "4",
        "--resolution",
        "0.25",
    )
    assert out.returncode == 0, out.stderr
    done = LineStore.open(run / "lines.zarr").done()
    assert np.flatnonzero(done).tolist() == [0, 1, 4, 11]  # log-spaced over 12 steps
    analyze_run(run)
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["lines_used"] == 4
    assert summary["lines_missing"] == 0  # the 8 steps the schedule skips are not missing
    assert "AdamW" in (run / "config.toml").read_text()


@pytest.mark.parametrize(
    "spec", ["examples/custom_module.py:make_problem", "examples.custom_module:make_problem"]
)
def test_custom_module_runs_from_the_cli(tmp_path: Path, spec: str) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    run = tmp_path / "run"
    # a file spec in a `steplines` process; a module spec in this process (support.cli: the
    # same command without another interpreter start-up)
    run_cli = steplines if spec.endswith(".py:make_problem") else cli
    cwd = os.getcwd()
    os.chdir(ROOT)  # the spec is relative to where the user stands
    try:
        out = run_cli("run", "--problem", spec, "--config", str(cfg), "--out", str(run))
    finally:
        os.chdir(cwd)
    assert out.returncode == 0, out.stderr
    assert LineStore.open(run / "lines.zarr").done().all()
    assert 'dataset = "custom"' in (run / "config.toml").read_text()
    source = json.loads((run / "provenance.json").read_text())["problem_source"]
    assert source["spec"].endswith(spec) and len(source["sha256"]) == 64  # stored resolved


BAD = {
    "signature": (
        "from steplines import Problem\ndef make_problem(n):\n    return None\n",
        "must take no arguments",
    ),
    "reduction": (
        "import torch, torch.nn.functional as F\nfrom torch import nn\n"
        "from steplines import Problem\n"
        "def make_problem():\n"
        "    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))\n"
        "    return Problem.from_tensors((x, y), None, lambda: nn.Linear(4, 2),\n"
        "                                lambda o, t: F.cross_entropy(o, t), 8)\n",
        "one loss per sample, a float tensor of shape [2] (use reduction='none'",
    ),
    "wrong_return": (
        "def make_problem():\n    return (1, 2)\n",
        "returned tuple; it must return a steplines.Problem",
    ),
    "raises_on_import": (
        "raise RuntimeError('boom')\n",
        "RuntimeError: boom (raises_on_import.py:1)",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_user_problem_gets_one_line(tmp_path: Path, name: str) -> None:
    code, expected = BAD[name]
    (tmp_path / f"{name}.py").write_text(code)
    run = tmp_path / "run"
    # in this process (support.cli): the same command and error handling, no start-up
    out = cli("run", "--problem", f"{tmp_path / name}.py:make_problem", "--out", str(run))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr
    assert expected in lines[0]
    assert not run.exists()  # nothing is created for a problem that cannot run


def test_a_missing_module_names_the_fix(tmp_path: Path) -> None:
    out = steplines("run", "--problem", "no_such_module:make", "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "cannot import 'no_such_module'" in out.stderr and "PYTHONPATH" in out.stderr
