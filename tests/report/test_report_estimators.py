"""The report's estimator section: with estimator inputs, and for a version-1 store."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from steplines.analysis import analyze_run
from steplines.analysis.tables import MANIFEST, AnalysisTables
from steplines.plotting.estimators import plot_estimators
from steplines.report.figures import estimator_figure
from steplines.report.numbers import fmt as _f
from steplines.report.sections import estimator_section, noise_scale_note
from steplines.reporting import build_report, load_run

from analysis_fixtures import make_run, make_version_1, with_exact_inputs


def _section(html: str) -> str:
    start = html.index('id="estimators"')
    return html[start : html.index("<h2>Figures</h2>", start)]


def test_report_section_with_estimator_inputs(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=6)
    with_exact_inputs(run)
    page = build_report([run], formats=("png",))
    sec = _section(page.read_text())
    assert "Cheap estimators against the measured line" in page.read_text()
    assert ">not measured<" not in sec  # no table cell
    rows = re.findall(r"<tr><td>([^<]+)</td>", sec)
    assert rows[0] == "Cockpit α" and "gradient noise scale B_simple" in rows
    assert 'src="figures/estimators.png"' in sec
    assert (run / "figures" / "estimators.png").stat().st_size > 10_000
    assert 'id="noise-scale"' in page.read_text()  # B_simple beside the batch-size table


def test_report_of_a_version_1_store_says_not_measured(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=6)
    make_version_1(run / "lines.zarr")
    page = build_report([run], formats=("png",))
    html = page.read_text()
    sec = _section(html)
    assert "Not measured: this line store has no estimator inputs" in sec
    assert sec.count(">not measured<") == 3  # the cells of Cockpit α, dᵀHd, B_simple
    # the LABPAL-style and Armijo rows still have numbers
    labpal = re.search(r"LABPAL-style parabola</td><td>.*?</td>\s*<td class=\"num\">([^<]+)", sec)
    assert labpal and labpal.group(1)[0].isdigit()
    assert "not drawn" not in html  # every figure, the estimator one included, was drawn
    assert 'id="noise-scale"' not in html


def test_report_of_an_analysis_made_before_the_estimators(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=6)
    analyze_run(run)
    # with the line store: a table set without estimators.csv is analysed again
    (run / "analysis" / "estimators.csv").unlink()
    assert not AnalysisTables.is_current(run / "analysis", run, "corrected")
    assert load_run(run).estimators is not None
    # without it: the old tables are reported and the section says they predate it
    shutil.rmtree(run / "lines.zarr")
    (run / "analysis" / "estimators.csv").unlink()
    (run / "analysis" / MANIFEST).unlink()  # older tables have no checksums either
    summary_path = run / "analysis" / "summary.json"
    summary = json.loads(summary_path.read_text())
    del summary["estimators"]
    summary_path.write_text(json.dumps(summary))
    old = load_run(run)
    assert old.estimators is None and estimator_figure(old) is None
    assert "Not analysed" in estimator_section(old)["note"]


def test_plot_estimators_marks_unmeasured_panels() -> None:
    table = pd.DataFrame(
        {
            "line": np.arange(8),
            "alpha_error": np.nan,
            "labpal_step_ratio": np.linspace(0.8, 1.2, 8),
            "labpal_a_rel_error": np.linspace(-0.1, 0.1, 8),
            "armijo_step_ratio": np.linspace(1.0, 2.0, 8),
            "curvature_rel_error": np.nan,
            "b_simple": np.nan,
        }
    )
    fig = plot_estimators(table, batch_size=16)
    assert isinstance(fig, Figure)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("not measured") == 6  # three columns, two rows each


def test_noise_scale_note_beside_the_batch_size_table(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=4)
    with_exact_inputs(run)  # S = 5, G² = 1, B = 16 on every line
    analyze_run(run)
    note = noise_scale_note(load_run(run, reanalyze=False))
    assert note.startswith("Gradient noise scale B_simple") and "on 4 lines" in note
    assert _f((64 / 15) / (1 - 64 / 15 / 16)) in note and "batch size 16" in note
    plain = make_run(tmp_path / "plain", n_lines=4)
    analyze_run(plain)
    assert noise_scale_note(load_run(plain, reanalyze=False)) == ""
