"""Lines a LineProbe schedule skips are not missing: summary.json and the report banner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from steplines.analysis import analyze_run
from steplines.analysis.lines import lines_missing, scheduled_lines
from steplines.analysis.settings import AnalysisRequest
from steplines.config import RunConfig, validate_config
from steplines.reporting import load_run

from analysis_fixtures import make_run


def _probe(schedule: str) -> RunConfig:
    return validate_config({"probe": {"model": "Net", "schedule": schedule}}, torch_checks=False)


def test_scheduled_lines_read_the_recorded_schedule() -> None:
    # expected masks written out by hand
    assert np.flatnonzero(scheduled_lines(_probe("every:3"), 10)).tolist() == [0, 3, 6, 9]
    assert np.flatnonzero(scheduled_lines(_probe("steps:1,5"), 10)).tolist() == [1, 5]
    # log:4 over 10 steps: round(geomspace(1, 10, 4)) - 1 = round(1, 2.154, 4.642, 10) - 1
    assert np.flatnonzero(scheduled_lines(_probe("log:4"), 10)).tolist() == [0, 1, 4, 9]
    assert scheduled_lines(_probe("all"), 4).all()
    assert scheduled_lines(None, 4).all()  # no config.toml
    assert scheduled_lines(
        validate_config({"train": {"lr": 0.1}}, torch_checks=False), 4
    ).all()  # steplines run
    assert scheduled_lines(_probe("weekly"), 4).all()  # unreadable: nothing is hidden
    done = np.array([True, False, False, True, False, False, True, False, False, False])
    assert lines_missing(done, _probe("every:3")) == 1  # line 9
    assert lines_missing(done, None) == 7
    assert lines_missing(done, _probe("steps:0,3,6")) == 0


def _with_schedule(run: Path, schedule: str) -> Path:
    cfg = run / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[probe]\nmodel = "Net"\nschedule = "{schedule}"\n')
    return run


def test_probe_schedule_is_not_missing(tmp_path: Path) -> None:
    run = _with_schedule(make_run(tmp_path / "probe", n_lines=8, skip=(1, 3, 5, 7)), "every:2")
    summary = json.loads(
        analyze_run(run, AnalysisRequest(batch_sizes=(16,))).path("summary").read_text()
    )
    assert summary["lines_used"] == 4 and summary["lines_missing"] == 0
    data = load_run(run, reanalyze=False)
    assert not any("not measured" in b["text"] for b in data.banners)


def test_probe_schedule_line_not_done_is_missing(tmp_path: Path) -> None:
    run = _with_schedule(make_run(tmp_path / "probe", n_lines=8, skip=(1, 3, 4, 5, 7)), "every:2")
    summary = json.loads(
        analyze_run(run, AnalysisRequest(batch_sizes=(16,))).path("summary").read_text()
    )
    assert summary["lines_missing"] == 1  # line 4
    (text,) = [
        b["text"] for b in load_run(run, reanalyze=False).banners if "not measured" in b["text"]
    ]
    assert text.startswith("1 of 4 lines are not measured") and "LineProbe" in text
    shutil.rmtree(run / "lines.zarr")  # read from the tables alone: the same count
    assert text in [b["text"] for b in load_run(run, reanalyze=False).banners]


def test_partial_steplines_run_still_has_missing_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=8, skip=(2, 5, 6))  # no [probe]: every step
    summary = json.loads(
        analyze_run(run, AnalysisRequest(batch_sizes=(16,))).path("summary").read_text()
    )
    assert summary["lines_missing"] == 3
    (text,) = [
        b["text"] for b in load_run(run, reanalyze=False).banners if "not measured" in b["text"]
    ]
    assert text.startswith("3 of 8 lines are not measured") and "steplines measure" in text
