"""verify covers every array the analysis and a resume read; --redo repairs them.

The session's tiny run (10 lines, segments [0, 4), [4, 8), [8, 10), measured once for the
whole suite) is copied by each test that damages it; repairs re-measure as few lines as
show the point. The noisy-direction tests share one smaller run of their own (6 lines, noisy
positions at steps 0 and 4). Variants that re-measure a whole run are marked slow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from steplines.cli.main import main
from steplines.errors import RunDirError
from steplines.measure import measure_lines
from steplines.rundir import RunDir
from steplines.store import LineStore
from steplines.store.lines import ARRAYS
from steplines.store.noisy import NoisyDirectionStore
from steplines.verify import verify_run

from support import TINY, assert_same_store, cli

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def measured(tiny_run: tuple[Path, Path]) -> Path:
    """The session's tiny run: 10 lines, no noisy directions (read it, or ``_copy`` it)."""
    return tiny_run[1]


@pytest.fixture(scope="module")
def noisy_measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 lines with noisy directions at steps 0 and 4: directions.zarr is covered too."""
    root = tmp_path_factory.mktemp("repair-noisy")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY.format(steps=6) + "noisy_every = 4\nnoisy_directions = 2\n")
    cli("run", "--config", str(cfg), "--out", str(root / "run"), "--quiet", check=True)
    return root / "run"


def _same_lines(a: Path, b: Path, lines: list[int]) -> None:
    """Lines ``lines`` of the stores of runs ``a`` and ``b`` are identical, array by array."""
    sa, sb = LineStore.open(a / "lines.zarr"), LineStore.open(b / "lines.zarr")
    for spec in ARRAYS:
        va, vb = sa.read_array(spec.name), sb.read_array(spec.name)
        if va.shape and va.shape[0] == sa.n_lines:
            assert np.array_equal(va[lines], vb[lines], equal_nan=True), spec.name


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
    _chunk(rd, "train_mean", 8).unlink()  # analysis would read NaN lines as data
    _chunk(rd, "lr", 8).unlink()
    report = verify_run(rd, replay=False)
    assert sorted(report.corrupt) == [8, 9]
    assert "train_mean does not match" in report.corrupt[9] or "lr" in report.corrupt[9]
    _redo(rd, [8, 9])
    assert verify_run(rd, replay=False).ok
    assert_same_store(measured, rd.path)


def test_a_flipped_done_chunk_gives_one_line_and_redo_repairs_it(
    measured: Path, tmp_path: Path
) -> None:
    rd = _copy(measured, tmp_path)
    path = _chunk(rd, "done", 8)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # the blosc header: undecodable
    path.write_bytes(bytes(data))
    for args in (["info", str(rd.path)], ["measure", str(rd.path), "--quiet"]):
        code, out = _cli(*args)
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in out, out
        assert "done (lines 8-9)" in lines[0] and "--redo 8-9" in lines[0]
    code, out = _cli("verify", str(rd.path), "--no-replay")
    assert code == 1 and "damaged array done: chunk of lines 8-9" in out
    assert "--redo 8-9" in out
    assert _redo(rd, [8, 9]) == 2
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


def _model(data: bytes) -> dict[str, torch.Tensor]:
    import io

    return torch.load(io.BytesIO(data), weights_only=True)["model"]


def _nudge(path: Path) -> None:
    """Change one weight of a checkpoint: damaged, yet it loads."""
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 1e-3
    torch.save(state, path)


def test_a_loadable_damaged_checkpoint_is_named_and_redo_keeps_the_good_lines(
    measured: Path, tmp_path: Path
) -> None:
    rd = _copy(measured, tmp_path)
    # line 5's segment: its end checkpoint, then its start one; line 1's: the initial state
    for step, line in ((8, "5"), (4, "5"), (0, "1")):
        ck = rd.trajectory.checkpoint_path(step)
        good = ck.read_bytes()
        _nudge(ck)
        code, out = _cli("measure", str(rd.path), "--redo", line, "--quiet")
        assert code == 2 and len(out.strip().splitlines()) == 1, out
        assert f"checkpoint_{step:07d}.pt is damaged" in out, out
        assert "steplines train --config" in out and "not reproducible" not in out, out
        assert_same_store(measured, rd.path)  # line 5 was measured, but held back
        if step == 8:
            report = verify_run(rd)
            assert "checkpoint_0000008.pt is damaged" in (report.replay_error or "")
            ck.unlink()  # the repair it prints: delete it and train again
            cli("train", "--config", str(rd.path / "config.toml"), "--out", str(rd.path))
            fresh = torch.load(ck, weights_only=True)["model"]
            assert all(torch.equal(v, fresh[k]) for k, v in _model(good).items())
            assert verify_run(rd).ok
        ck.write_bytes(good)
    assert _redo(rd, [5]) == 1
    assert_same_store(measured, rd.path)


def test_redo_on_an_unmeasured_run_is_refused(
    tiny_trained: tuple[Path, Path], tmp_path: Path
) -> None:
    rd = _copy(tiny_trained[1], tmp_path)
    code, out = _cli("measure", str(rd.path), "--redo", "2", "--quiet")
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "no measured line" in out and "--redo" in out, out
    assert not LineStore.open(rd.lines_path).done().any()


def test_measure_after_a_killed_training_makes_the_store(measured: Path, tmp_path: Path) -> None:
    rd = _copy(measured, tmp_path)
    shutil.rmtree(rd.lines_path)  # killed before training made the store (it does so at the end)
    assert measure_lines(rd, rd.load_problem(), CPU, segments=[(8, 10)]) == 2
    _same_lines(measured, rd.path, [8, 9])


@pytest.mark.slow
def test_measure_after_a_killed_training_makes_the_whole_store(
    measured: Path, tmp_path: Path
) -> None:
    rd = _copy(measured, tmp_path)
    shutil.rmtree(rd.lines_path)
    assert measure_lines(rd, rd.load_problem(), CPU) == 10
    assert_same_store(measured, rd.path)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _noisy(rd: RunDir) -> NoisyDirectionStore:
    return NoisyDirectionStore.open(rd.layout.directions_path)


def test_a_fresh_run_verifies_ok_with_its_replay(measured: Path) -> None:
    code, out = _cli("verify", str(measured))
    assert code == 0 and out.strip().splitlines()[-1] == "OK", out
    assert "not checked" not in out and "corrupt" not in out


def test_a_run_without_its_trajectory_is_not_ok(measured: Path, tmp_path: Path) -> None:
    rd = _copy(measured, tmp_path)
    shutil.rmtree(rd.trajectory.path)
    code, out = _cli("verify", str(rd.path))
    assert code == 1 and "not checked: trajectory: lines 0-9" in out and "OK" not in out, out
    code, out = _cli("verify", str(rd.path), "--no-replay")  # skipped on request: said so
    assert code == 0 and "skipped on request" in out and "OK (replay skipped)" in out, out
    code, out = _cli("info", str(rd.path))
    assert code == 0 and "warning:" in out and "cannot be replayed" in out, out


def test_missing_end_checkpoints_are_not_replayed_silently(measured: Path, tmp_path: Path) -> None:
    rd = _copy(measured, tmp_path)
    rd.trajectory.checkpoint_path(8).unlink()
    report = verify_run(rd, replay=True)
    assert not report.ok and any("not checked" in u or "4" in u for u in report.unchecked)


def test_edited_summary_values_are_caught_and_refused_by_the_analysis(
    measured: Path, tmp_path: Path
) -> None:
    from steplines.analysis.run import analyze_run

    rd = _copy(measured, tmp_path)
    w = LineStore.open(rd.lines_path, mode="r+")
    w._arrays["train_indices"][8] = np.asarray(w._arrays["train_indices"][8])[::-1]
    w._arrays["est_curvature"][9] = -16.16
    report = verify_run(rd, replay=False)
    assert sorted(report.corrupt) == [8, 9], report.corrupt
    with pytest.raises(RunDirError, match=r"line 8 cannot be trusted.*--redo 8-9"):
        analyze_run(rd.path)
    assert _redo(rd, [8, 9]) == 2
    assert verify_run(rd, replay=False).ok
    assert_same_store(measured, rd.path)


def test_an_edited_analysis_table_is_named_and_analyze_rewrites_it(
    measured: Path, tmp_path: Path
) -> None:
    from steplines.analysis.run import analyze_run

    rd = _copy(measured, tmp_path)
    analyze_run(rd.path)
    assert verify_run(rd, replay=False).files == []
    fits = rd.path / "analysis" / "fits.csv"
    fits.write_text(fits.read_text().replace("0.", "1.", 1))
    report = verify_run(rd, replay=False)
    assert report.ok  # derived data: the measured lines are fine
    assert len(report.files) == 1 and "fits.csv differs from its checksum" in report.files[0]
    assert "steplines analyze" in report.files[0]
    analyze_run(rd.path)
    assert verify_run(rd, replay=False).files == []


def test_noisy_direction_damage_is_caught_and_each_printed_repair_works(
    noisy_measured: Path, tmp_path: Path
) -> None:
    rd = _copy(noisy_measured, tmp_path)
    g = zarr.open_group(str(rd.layout.directions_path), mode="r+")
    g["train_mean"][1, 0, 3] = 5.0  # an edited value: the position checksum
    report = verify_run(rd, replay=False)
    assert list(report.corrupt) == [4] and "checksum" in report.corrupt[4]
    with pytest.raises(RunDirError, match="--redo 4"):
        _noisy(rd).read(4)
    assert _redo(rd, [4]) == 1
    assert verify_run(rd, replay=False).ok
    # a deleted array: verify names it, and the --redo it prints repairs it
    shutil.rmtree(rd.layout.directions_path / "grad_norm")
    code, out = _cli("verify", str(rd.path), "--no-replay")
    assert code == 1 and "grad_norm" in out and "--redo 0,4" in out, out
    code, out = _cli("measure", str(rd.path), "--redo", "0,4", "--quiet")
    assert code == 0, out
    assert verify_run(rd, replay=False).ok
    assert LineStore.open(rd.lines_path).done().all()
    want = NoisyDirectionStore.open(noisy_measured / "directions.zarr").read(4)
    got = _noisy(rd).read(4)
    assert all(np.array_equal(got[k], want[k], equal_nan=True) for k in want)


def test_a_deleted_done_chunk_of_directions_is_refilled_by_measure(
    noisy_measured: Path, tmp_path: Path
) -> None:
    rd = _copy(noisy_measured, tmp_path)
    (rd.layout.directions_path / "done" / "c" / "1").unlink()
    report = verify_run(rd, replay=False)
    assert list(report.corrupt) == [4] and "done flag" in report.corrupt[4]
    code, out = _cli("measure", str(rd.path), "--quiet")
    assert code == 0, out
    assert _noisy(rd).done().all() and verify_run(rd, replay=False).ok


def test_a_deleted_directions_store_is_not_ok_and_measure_rebuilds_it(
    noisy_measured: Path, tmp_path: Path
) -> None:
    from steplines.analysis.noisy import noisy_distances

    rd = _copy(noisy_measured, tmp_path)
    shutil.rmtree(rd.layout.directions_path)
    report = verify_run(rd, replay=False)
    assert sorted(report.corrupt) == [0, 4] and "missing" in report.corrupt[0]
    with pytest.raises(RunDirError, match=r"directions\.zarr is missing"):
        noisy_distances(rd.path)
    code, out = _cli("measure", str(rd.path), "--quiet")
    assert code == 0 and verify_run(rd, replay=False).ok, out


def test_damaged_val_indices_are_rewritten_by_measure(measured: Path, tmp_path: Path) -> None:
    rd = _copy(measured, tmp_path)
    (rd.lines_path / "val_indices" / "c" / "0").unlink()  # written once, at creation
    report = verify_run(rd, replay=False)
    assert "val_indices" in report.corrupt[0], report.corrupt
    code, out = _cli("verify", str(rd.path), "--no-replay")
    assert code == 1 and f"rewrite val_indices with: steplines measure {rd.path}" in out, out
    assert _redo(rd, []) == 0  # measure: nothing to measure, but the indices are rewritten
    assert verify_run(rd, replay=False).ok
    assert_same_store(measured, rd.path)
