"""End to end: a tiny bf16 run records its error against fp32, and the report shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from steplines.config import load_config
from steplines.measure import run_all
from steplines.report.numbers import fmt as _f
from steplines.reporting import build_report
from steplines.rundir import RunDir

from support import TINY


def test_bf16_run_records_precision_checks_and_reports_them(tmp_path: Path) -> None:
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text(TINY.format(steps=5))  # segments [0, 4) and [4, 5)
    overrides = {
        "measure.precision": "bf16",
        "measure.precision_check_every": 2,
        "measure.device": "cpu",
    }
    run = RunDir.prepare(tmp_path / "run", load_config(path=cfg_file, overrides=overrides))
    assert run_all(run) == (5, 5)

    text = (run.path / "precision_checks.jsonl").read_text()
    checks = [json.loads(line) for line in text.splitlines()]
    assert [c["t"] for c in checks] == [0, 2, 4]  # the measurer's first line, every 2nd after
    for c in checks:
        assert c["precision"] == "bf16"
        assert 0 < c["per_sample_max"] < 1 and 0 < c["full_batch_max"] <= c["per_sample_max"]
        assert c["s_min_diff"] >= 0 and c["rows"] == 256 + 64 + 64
    engine = json.loads((run.path / "provenance.json").read_text())["precision"]["engine"]
    assert engine["precision"] == "bf16" and engine["autocast"] == "bfloat16"

    html = build_report([run.path], formats=("png",)).read_text()
    sec = html[html.index('id="precision"') : html.index("<h2>Figures</h2>")]
    assert "measured in bf16" in sec and "one in every 2 lines" in sec
    cells = re.findall(r'<td class="num">([^<]+)</td>', sec)
    assert cells[0] == "3" and all(v != "—" for v in cells)
    assert cells[1] == _f(max(c["per_sample_max"] for c in checks))
    assert "<td>precision</td><td>bf16</td>" in html  # the measurement table
