"""A run directory someone sent you runs no code unless you say so (and the file is the one)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from steplines.config import RunConfig
from steplines.errors import ConfigError
from steplines.rundir import RunDir

from support import cli, steplines

CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import torch
from torch import nn
from steplines import Problem

def make_problem():
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    return Problem.from_tensors((x, y), None, lambda: nn.Linear(4, 2),
                                lambda o, t: nn.functional.cross_entropy(o, t, reduction="none"), 8)
"""


def _received_run(tmp_path: Path, sha: str | None = None) -> tuple[Path, Path, Path]:
    """A run directory naming user code (as if received), with a recorded SHA-256."""
    marker = tmp_path / "imported.txt"
    code = tmp_path / "user_problem.py"
    code.write_text(CODE.format(marker=str(marker)))
    run = tmp_path / "run dir"
    run.mkdir()
    cfg = RunConfig.model_validate({"problem": {"factory": f"{code}:make_problem"}})
    (run / "config.toml").write_text(cfg.to_toml())
    digest = sha or hashlib.sha256(code.read_bytes()).hexdigest()
    source = {"spec": f"{code}:make_problem", "file": str(code), "sha256": digest}
    (run / "provenance.json").write_text(json.dumps({"problem_source": source}))
    return run, code, marker


def test_nothing_is_imported_unless_asked(tmp_path: Path) -> None:
    run, _, marker = _received_run(tmp_path)
    rd = RunDir.open(run)
    with pytest.raises(ConfigError, match=r"runs no code unless you say so.*--trust-problem"):
        rd.load_problem()
    assert not marker.exists()
    problem = rd.load_problem(trust=True)  # the user says so, and the file is the recorded one
    assert marker.exists() and problem.source["sha256"] == rd.recorded_problem_source()["sha256"]


def test_a_file_with_another_sha_is_never_imported(tmp_path: Path) -> None:
    run, code, marker = _received_run(tmp_path, sha="0" * 64)
    rd = RunDir.open(run)
    for kw in ({"trust": True}, {"spec": f"{code}:make_problem"}):
        with pytest.raises(ConfigError, match=r"SHA-256 .*nothing was imported"):
            rd.load_problem(**kw)
    assert not marker.exists()


def test_the_same_file_at_another_path_is_accepted(tmp_path: Path) -> None:
    run, code, marker = _received_run(tmp_path)
    moved = tmp_path / "elsewhere.py"
    moved.write_bytes(code.read_bytes())
    code.unlink()
    rd = RunDir.open(run)
    with pytest.raises(ConfigError, match="not found"):
        rd.load_problem(trust=True)
    rd.load_problem(spec=f"{moved}:make_problem")
    assert marker.exists()


def test_a_relative_problem_path_is_stored_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steplines.cli.main import _resolve

    monkeypatch.chdir(tmp_path)
    cfg = _resolve(None, None, "sub/p.py:make", None, False, None, None, None)
    assert cfg.problem.factory == f"{tmp_path / 'sub' / 'p.py'}:make"


@pytest.mark.parametrize("cmd", ["measure", "verify"])
def test_cli_refuses_to_run_received_code(tmp_path: Path, cmd: str) -> None:
    run, _, marker = _received_run(tmp_path)
    res = steplines(cmd, str(run))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--trust-problem" in lines[0] and "'" in lines[0]  # quoted path
    assert f"steplines {cmd} '" in lines[0]
    assert ("--no-replay" in lines[0]) == (cmd == "verify")
    assert not marker.exists()
    if cmd == "verify":  # checking the lines alone runs no code and needs no trust
        res = steplines(cmd, str(run), "--no-replay")
        assert "Traceback" not in res.stderr and not marker.exists()


def test_resuming_with_a_changed_problem_file_is_refused(tmp_path: Path) -> None:
    run, code, _ = _received_run(tmp_path)
    rd = RunDir.open(run)
    rd.check_problem_source({"file": str(code), "sha256": rd.recorded_problem_source()["sha256"]})
    with pytest.raises(ConfigError, match="original problem file"):
        rd.check_problem_source({"file": str(code), "sha256": "1" * 64})


TINY_USER = """
import torch
from torch import nn
from steplines import Problem

def make_problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
    return Problem.from_tensors((x, y), (x[:4], y[:4]), lambda: nn.Linear(4, 2),
                                lambda o, t: nn.functional.cross_entropy(o, t, reduction="none"), 8)
"""


def test_trusted_user_run_measures_and_verifies_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "up.py").write_text(TINY_USER)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[train]\nsteps = 4\ncheckpoint_every = 2\ncpu_threads = 1\n"
        "[measure]\ninterval = 0.5\nresolution = 0.25\nmax_passes = 1\nestimators = false\n"
    )
    monkeypatch.chdir(tmp_path)
    # in-process (the refusals above are the subprocess tests of what gets imported)
    cli("train", "--problem", "up.py:make_problem", "--config", "c.toml", "--out", "r", check=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the relative path was stored resolved
    res = cli("measure", "../r", "--trust-problem", "--quiet", check=True)
    assert "4/4 lines done" in res.stdout
    res = cli("verify", "../r", "--problem", str(tmp_path / "up.py") + ":make_problem")
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr


def test_a_dotted_factory_imports_no_parent_package_before_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "evilpkg"
    pkg.mkdir()
    marker = tmp_path / "init_ran.txt"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (pkg / "mod.py").write_text("def make(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig.model_validate({"problem": {"factory": "evilpkg.mod:make"}})
    (run / "config.toml").write_text(cfg.to_toml())
    source = {"spec": "evilpkg.mod:make", "file": str(pkg / "mod.py"), "sha256": "0" * 64}
    (run / "provenance.json").write_text(json.dumps({"problem_source": source}))
    with pytest.raises(ConfigError, match=r"mod\.py has SHA-256 .*nothing was imported"):
        RunDir.open(run).load_problem(trust=True)
    assert not marker.exists()


def test_the_printed_train_repair_checks_the_sha_before_importing(tmp_path: Path) -> None:
    run, _, marker = _received_run(tmp_path, sha="0" * 64)
    res = cli("train", "--config", str(run / "config.toml"), "--out", str(run))
    assert res.returncode == 2 and "nothing was imported" in res.stderr, res.stderr
    assert not marker.exists()
