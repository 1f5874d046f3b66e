"""Faults that used to end in a traceback, a misleading message or a leftover file.

Each test damages a copy of the session's tiny run (10 lines, measured once for the suite),
or simulates the fault where it cannot be made for real in a test (a full disk).
"""

from __future__ import annotations

import errno
import os
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from steplines.cli.main import main
from steplines.rundir import RunDir
from steplines.store import LineStore
from steplines.verify import verify_run

from support import assert_same_store, copy_run


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def _one_line(code: int, out: str, want: int = 2) -> str:
    lines = out.strip().splitlines()
    assert code == want and len(lines) == 1 and "Traceback" not in out, (code, out)
    return lines[0]


@pytest.fixture
def run(tiny_run: tuple[Path, Path], tmp_path: Path) -> Path:
    return copy_run(tiny_run[1], tmp_path / "run")


@pytest.mark.parametrize("array", ["train_mean", "done"])
def test_a_cut_off_array_zarr_json_is_one_line_and_measure_rewrites_it(
    run: Path, tiny_run: tuple[Path, Path], array: str
) -> None:
    meta = run / "lines.zarr" / array / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:40])
    for args in (
        ["info", str(run)],
        ["verify", str(run), "--no-replay"],
        ["analyze", str(run), "--resamples", "0"],
    ):
        line = _one_line(*_cli(*args))
        assert f"{array}/zarr.json is damaged" in line and "steplines measure" in line, line
    code, out = _cli("measure", str(run), "--quiet")  # rewrites the metadata, keeps the data
    assert code == 0, out
    assert verify_run(RunDir.open(run), replay=False).ok
    assert_same_store(tiny_run[1], run)


def test_verify_names_cut_off_side_files(run: Path) -> None:
    (run / "provenance.json").write_text('{"steplines": ')
    ev = sorted((run / "trajectory").glob("eval_*.json"))[0]
    ev.write_bytes(ev.read_bytes()[:10])
    live = run / "live.jsonl"
    live.write_bytes(live.read_bytes()[:-20])
    code, out = _cli("verify", str(run), "--no-replay")
    assert code == 0 and "OK (replay skipped)" in out, out  # no measured data in them
    for name in ("provenance.json", ev.name, "live.jsonl"):
        assert f"damaged file: {run / name if name != ev.name else ev} is damaged" in out, out


def test_an_undecodable_line_chunk_stops_analyze_in_one_line(run: Path) -> None:
    store = LineStore.open(run / "lines.zarr")
    arr = store._arrays["train_mean"]
    chunk = run / "lines.zarr" / "train_mean" / arr.metadata.encode_chunk_key((1, 0))
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    line = _one_line(*_cli("analyze", str(run), "--resamples", "0"))
    assert "train_mean" in line and "--redo 4-7" in line, line


def test_a_full_disk_during_report_is_one_line(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import steplines.reporting

    def full(*args: object, **kwargs: object) -> None:  # what matplotlib's PDF writer raised
        raise zlib.error("Error -2 while flushing: inconsistent stream state")

    monkeypatch.setattr(steplines.reporting, "build_report", full)
    line = _one_line(*_cli("report", str(run)))
    assert "disk may be full" in line and "line" not in line.replace("one line", ""), line


@pytest.mark.parametrize("command", ["export", "analyze"])
def test_disk_full_messages_of_export_and_analyze_do_not_speak_of_lines(
    run: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    import steplines.analysis
    import steplines.export

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "x.tmp"))

    monkeypatch.setattr(steplines.export, "export_lines", full)
    monkeypatch.setattr(steplines.analysis, "analyze_run", full)
    args = [command, str(run)] + (["--to", "csv"] if command == "export" else [])
    line = _one_line(*_cli(*args))
    assert "No space left" in line and "lines" not in line and "unchanged" in line, line


def test_temporary_names_are_per_process_and_a_killed_ones_are_removed(tmp_path: Path) -> None:
    from steplines.atomic import remove_own_temporaries, temporary_path

    target = tmp_path / "report.pdf"
    dead = tmp_path / ".report.pdf.999999999.tmp"  # no such process: a killed report's
    alive = tmp_path / f".report.pdf.{os.getppid()}.tmp"  # another live process's
    dead.write_bytes(b"x" * 1000)
    alive.write_bytes(b"y")
    tmp = temporary_path(target)
    assert tmp.name == f".report.pdf.{os.getpid()}.tmp" and tmp.parent == tmp_path
    assert not dead.exists() and alive.exists()
    tmp.write_bytes(b"half")
    remove_own_temporaries()  # what the CLI does on Ctrl-C or an error
    assert not tmp.exists() and alive.exists()


def test_the_report_and_its_pdf_are_written_under_names_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.figure
    from matplotlib.backends.backend_pdf import PdfPages

    from steplines.report.page import publish

    page = tmp_path / "report.html"
    theirs = [tmp_path / f".report.{e}.{os.getppid()}.tmp" for e in ("pdf", "html")]
    for other in theirs:  # a second report writing now
        other.write_bytes(b"theirs")
    seen = []
    save = PdfPages.savefig

    def savefig(self: PdfPages, *args: object, **kwargs: object) -> None:
        save(self, *args, **kwargs)
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    monkeypatch.setattr(PdfPages, "savefig", savefig)
    publish(page, "<html></html>", [matplotlib.figure.Figure()])
    assert f".report.pdf.{os.getpid()}.tmp" in seen[0]  # this process's own name
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    assert page.read_text() == "<html></html>"
    assert all(other.read_bytes() == b"theirs" for other in theirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(o.name for o in theirs), "report.html", "report.pdf"]
    )


def test_ctrl_c_in_analyze_leaves_no_work_directory(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steplines.analysis.tables

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(steplines.analysis.tables, "_publish", interrupted)
    code, out = _cli("analyze", str(run), "--resamples", "0")
    assert code == 130 and "line" not in out, out
    assert not list(run.glob(".*tmp*")), list(run.glob(".*"))


def test_a_killed_exports_leftover_is_removed_by_the_next(run: Path) -> None:
    out = run / "export" / "lines-summary.csv"
    out.parent.mkdir()
    leftover = out.with_name(f".{out.name}.999999999.tmp")
    leftover.write_bytes(b"x" * 10_000)
    code, text = _cli("export", str(run), "--to", "csv", "--what", "summary")
    assert code == 0 and out.exists(), text
    assert not leftover.exists()
