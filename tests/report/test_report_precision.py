"""The report's "Measurement precision" section: absent for fp32, worst errors, never fails."""

from __future__ import annotations

import json
from pathlib import Path

from steplines.config import validate_config
from steplines.report.data import RunData
from steplines.report.sections import precision_section
from steplines.reporting import build_report
from steplines.store.run import PRECISION_CHECKS

from analysis_fixtures import make_run


def _run_data(path: Path, measure: dict) -> RunData:
    config = validate_config({"measure": measure}, torch_checks=False)
    return RunData(path, config, {}, tables=None)  # the section reads no table


def _check(t: int, per_sample: float, full: float, s_diff: float) -> dict:
    return {
        "t": t,
        "precision": "bf16",
        "per_sample_max": per_sample,
        "per_sample_mean": per_sample / 10,
        "full_batch_max": full,
        "s_min_diff": s_diff,
    }


def test_fp32_run_without_checks_has_no_section(tmp_path: Path) -> None:
    assert precision_section(_run_data(tmp_path, {})) is None
    assert precision_section(_run_data(tmp_path, {"precision": "fp32"})) is None


def test_worst_of_each_error_over_the_checks(tmp_path: Path) -> None:
    checks = [
        _check(0, 0.04, 0.003, 0.0),
        _check(50, 0.09, 0.001, 0.012),
        _check(100, 0.01, 0.002, 0.0),
    ]
    checks[2]["full_batch_max"] = None  # nothing finite to compare on that line
    (tmp_path / PRECISION_CHECKS).write_text("".join(json.dumps(c) + "\n" for c in checks))
    sec = precision_section(_run_data(tmp_path, {"precision": "bf16", "precision_check_every": 50}))
    assert sec is not None and sec["note"] == ""
    assert "measured in bf16" in sec["intro"] and "one in every 50 lines" in sec["intro"]
    assert sec["rows"] == [
        {
            "precision": "bf16",
            "checks": "3",
            "per_sample": "0.09",
            "full_batch": "0.003",
            "s_min": "0.012",
        }
    ]


def test_missing_or_garbled_checks_are_said_and_the_report_is_built(tmp_path: Path) -> None:
    sec = precision_section(_run_data(tmp_path, {"precision": "bf16"}))
    assert sec is not None and sec["rows"] == [] and "No precision check" in sec["note"]

    run = make_run(tmp_path / "run", n_lines=6)
    cfg = run / "config.toml"
    cfg.write_text(cfg.read_text() + 'precision = "bf16"\n')
    good = json.dumps(_check(0, 0.05, 0.004, 0.1))
    bad_values = json.dumps({"t": 5, "precision": "bf16", "per_sample_max": "NaN", "s_min": [1]})
    (run / PRECISION_CHECKS).write_text(f"{good}\n{bad_values}\nnot json\n[1, 2]\n")
    html = build_report([run], formats=("png",)).read_text()
    sec_html = html[html.index('id="precision"') : html.index("<h2>Figures</h2>")]
    assert "2 line(s) of precision_checks.jsonl could not be read" in sec_html
    assert '<td class="num">2</td>' in sec_html  # the good record and the one with bad values
    assert '<td class="num">0.05</td>' in sec_html and '<td class="num">0.004</td>' in sec_html
    assert "<td>precision</td><td>bf16</td>" in html
