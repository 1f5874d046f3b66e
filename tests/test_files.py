"""Small files are written atomically and validated on read; provenance does not grow."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from steplines.atomic import append_line, read_json_lines, write_atomic
from steplines.config import RunConfig
from steplines.rundir import RunDir

CPU = torch.device("cpu")
SOURCE = {"spec": "/x/p.py:make", "file": "/x/p.py", "sha256": "ab" * 32}


def _run(tmp_path: Path) -> RunDir:
    return RunDir.prepare(tmp_path / "run", RunConfig())


def test_provenance_is_written_once_and_invocations_are_logged_compactly(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    rd.write_provenance(CPU, SOURCE)
    first = rd.provenance_path.read_bytes()
    for _ in range(3):
        rd.write_provenance(CPU)  # a later `measure`: no problem source given
    assert rd.provenance_path.read_bytes() == first  # not rewritten, not growing
    log = read_json_lines(rd.provenance_log_path)
    assert len(log) == 4 and all(rec["device"] == "cpu" for rec in log)
    assert rd.provenance_log_path.stat().st_size < 4 * 300  # compact lines
    assert rd.recorded_problem_source()["sha256"] == SOURCE["sha256"]


def test_a_cut_off_provenance_is_rebuilt_and_keeps_the_problem_hash(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    rd.write_provenance(CPU, SOURCE)
    text = rd.provenance_path.read_text()
    rd.provenance_path.write_text(text[: len(text) // 2])  # disk full mid-write (old code)
    assert rd.read_provenance() is None
    assert rd.recorded_problem_source()["sha256"] == SOURCE["sha256"]  # from the log
    rd.write_provenance(CPU)
    rebuilt = json.loads(rd.provenance_path.read_text())
    assert rebuilt["problem_source"]["sha256"] == SOURCE["sha256"]
    assert rebuilt["schema_version"] >= 1


def test_a_torn_log_line_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    append_line(log, {"a": 1})
    with open(log, "a") as f:
        f.write('{"a": 2, "b"')  # killed mid-append
    assert read_json_lines(log) == [{"a": 1}]


def test_an_old_provenance_with_sessions_stays_readable(tmp_path: Path) -> None:
    rd = _run(tmp_path)
    old = {"schema_version": 2, "problem_source": SOURCE, "sessions": [{"device": {}}] * 3}
    rd.provenance_path.write_text(json.dumps(old))
    assert rd.recorded_problem_source() == SOURCE
    rd.write_provenance(CPU)
    assert json.loads(rd.provenance_path.read_text()) == old
    assert len(read_json_lines(rd.provenance_log_path)) == 1


def test_a_failed_atomic_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config.toml"
    write_atomic(target, "old = 1\n")

    def full(f: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, full)
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(OSError):
        write_atomic(target, "new = 2\n")
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_text() == "old = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary left


def test_config_and_trajectory_files_go_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steplines.config import write_config
    from steplines.trajectory.storage import TrajectoryDir

    target = tmp_path / "config.toml"
    write_config(RunConfig(), target)
    before = target.read_text()
    traj = TrajectoryDir(tmp_path / "trajectory")
    traj.save_eval(0, {"loss": 1.0})

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        write_config(RunConfig.model_validate({"train": {"steps": 7}}), target)
    for save in (lambda: traj.save_eval(0, {"loss": 2.0}), lambda: traj.save_divergence(3, "x")):
        with pytest.raises(OSError):
            save()
    assert target.read_text() == before
    assert json.loads((traj.path / "eval_0000000.json").read_text())["loss"] == 1.0
    assert not (traj.path / "diverged.json").exists()


def test_damaged_small_files_are_named(tmp_path: Path) -> None:
    from steplines.errors import RunDirError

    rd = RunDir.prepare(tmp_path / "run", RunConfig())
    rd.trajectory.path.mkdir()
    (rd.trajectory.path / "diverged.json").write_text('{"step": 3, "mess')
    with pytest.raises(RunDirError, match=r"diverged\.json is damaged; delete it"):
        rd.trajectory.divergence()
    (rd.trajectory.path / "meta.json").write_text('{"cpu_thr')
    with pytest.raises(RunDirError, match=r"meta\.json is damaged"):
        rd.cpu_threads()
    fixed = RunDir(rd.path, RunConfig.model_validate({"train": {"cpu_threads": 2}}))
    assert fixed.cpu_threads() == 2  # rebuilt from the configuration that fixes it
    assert json.loads((rd.trajectory.path / "meta.json").read_text()) == {"cpu_threads": 2}
