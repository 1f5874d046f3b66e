"""verify covers every array the analysis and a resume read; --redo repairs them.

One tiny run (8 lines, 2 segments of 4) is measured once; each test damages a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from steplines.cli.main import main
from steplines.measure import measure_lines
from steplines.rundir import RunDir
from steplines.store import LineStore
from steplines.verify import verify_run

from support import TINY, assert_same_store, steplines

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repair")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY.format(steps=8))
    steplines("run", "--config", str(cfg), "--out", str(root / "run"), "--quiet", check=True)
    return root / "run"


def _copy(measured: Path, tmp_path: Path) -> RunDir:
    shutil.copytree(measured, tmp_path / "run")
    return RunDir.open(tmp_path / "run")


def _chunk(rd: RunDir, name: str, first_line: int) -> Path:
    arr = LineStore.open(rd.lines_path)._arrays[name]
    coords = (first_line // arr.chunks[0],) + (0,) * (arr.ndim - 1)
    return rd.lines_path / name / arr.metadata.encode_chunk_key(coords)


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def _redo(rd: RunDir, lines: list[int]) -> int:
    return measure_lines(rd, rd.load_problem(), CPU, redo=lines)


def test_a_deleted_mean_chunk_is_found_and_repaired(measured: Path, tmp_path: Path) -> None:
    rd = _copy(measured, tmp_path)
    assert verify_run(rd, replay=False).ok
    _chunk(rd, "train_mean", 4).unlink()  # analysis would read NaN lines as data
    _chunk(rd, "lr", 0).unlink()
    report = verify_run(rd, replay=False)
    assert sorted(report.corrupt) == list(range(8))
    assert "train_mean does not match" in report.corrupt[5]
    assert "lr differs from the trajectory record" in report.corrupt[1]
    _redo(rd, list(range(8)))
    assert verify_run(rd, replay=False).ok
    assert_same_store(measured, rd.path)


def test_a_flipped_done_chunk_gives_one_line_and_redo_repairs_it(
    measured: Path, tmp_path: Path
) -> None:
    rd = _copy(measured, tmp_path)
    path = _chunk(rd, "done", 4)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # the blosc header: undecodable
    path.write_bytes(bytes(data))
    for args in (["info", str(rd.path)], ["measure", str(rd.path), "--quiet"]):
        code, out = _cli(*args)
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in out, out
        assert "done (lines 4-7)" in lines[0] and "--redo 4-7" in lines[0]
    code, out = _cli("verify", str(rd.path), "--no-replay")
    assert code == 1 and "damaged array done: chunk of lines 4-7" in out
    assert "--redo 4-7" in out
    assert _redo(rd, [4, 5, 6, 7]) == 4
    assert verify_run(rd, replay=False).ok
    assert_same_store(measured, rd.path)


def test_redo_with_a_truncated_checkpoint_keeps_the_good_lines(
    measured: Path, tmp_path: Path
) -> None:
    rd = _copy(measured, tmp_path)
    ck = rd.trajectory.checkpoint_path(4)
    ck.write_bytes(ck.read_bytes()[:200])
    code, out = _cli("measure", str(rd.path), "--redo", "5", "--quiet")
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "checkpoint_0000004.pt is damaged" in out and "steplines train --config" in out
    assert LineStore.open(rd.lines_path).done().all()  # line 5 was not thrown away
    rec = rd.trajectory.records_path(0)
    rec.write_bytes(rec.read_bytes()[:100])
    report = verify_run(rd, replay=False)
    assert "steps_0000000.npz is damaged" in report.replay_error


def test_measure_after_a_killed_training_makes_the_store(measured: Path, tmp_path: Path) -> None:
    rd = _copy(measured, tmp_path)
    shutil.rmtree(rd.lines_path)  # killed before training made the store (it does so at the end)
    assert measure_lines(rd, rd.load_problem(), CPU) == 8
    assert_same_store(measured, rd.path)
