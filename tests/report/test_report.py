"""Figures, the HTML report, the CLI commands and bad inputs, on tiny synthetic runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from steplines.analysis import analyze_run
from steplines.analysis.claims import CLAIMS
from steplines.analysis.settings import AnalysisRequest
from steplines.cli.report_cmds import analyze, report
from steplines.errors import RunDirError
from steplines.plotting import (
    line_view,
    plot_approximations,
    plot_batch_size,
    plot_compare,
    plot_distance_matrices,
    plot_fits,
    plot_lines,
    plot_strategies,
    plot_training,
    save_figure,
)
from steplines.report import core_results
from steplines.report.numbers import fmt as _f
from steplines.report.numbers import pct as _pct
from steplines.reporting import build_report, load_run
from steplines.store import LineStore

from analysis_fixtures import make_run
from support import overlaps

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny(path: Path, **kw) -> Path:
    kw.setdefault("n_lines", 12)
    return make_run(path, n=64, m=8, b=16, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-line synthetic run with its full report (PNG + PDF) built once."""
    run = _tiny(tmp_path_factory.mktemp("report") / "run")
    build_report([run])
    return run


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _core_table(html: str) -> str:
    m = re.search(r'<table id="core-results">(.*?)</table>', html, re.S)
    assert m, "no core-results table"
    return m.group(1)


# ------------------------------------------------------------------------------ figures


def test_every_figure_function_returns_a_figure_and_writes_png_and_pdf(
    built: Path, tmp_path: Path
) -> None:
    a = built / "analysis"
    summary = json.loads((a / "summary.json").read_text())
    deriv = pd.read_csv(a / "derivatives.csv")
    with np.load(a / "distances.npz") as npz:
        distances = {k: npz[k] for k in npz.files}
    store = LineStore.open(built / "lines.zarr")
    views = [line_view(store.read_line(t), t) for t in (0, 6, 11)]
    assert views[0].band_min is not None and views[0].n_groups == 4  # 64 rows / bs 16
    row = deriv.set_index("line").loc[0]
    sm = store.read_summary()
    t = np.arange(12)
    l0 = sm["train_mean"][t, sm["zero_index"]]
    figures = {
        "training": plot_training(t, l0, sm["val_mean"][t, sm["zero_index"]], sm["batch_loss"]),
        "lines": plot_lines(views),
        "distances": plot_distance_matrices(
            distances, summary["distances"]["later_from_line_index"], 1
        ),
        "fits": plot_fits(pd.read_csv(a / "fits.csv")),
        "approximations": plot_approximations(
            views[0], direction_norm=row.direction_norm, delta_batch=row.delta_batch
        ),
        "strategies": plot_strategies(pd.read_csv(a / "strategies.csv"), deriv),
        "strategies_faithful": plot_strategies(
            pd.read_csv(a / "strategies.csv"), deriv, valid=True, momentum=0.9
        ),
        "batch_size": plot_batch_size(pd.read_csv(a / "batch_size.csv"), reference_batch_size=16),
        "compare": plot_compare({"a": (t, l0), "b": (t, 1.1 * l0)}),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        paths = save_figure(fig, tmp_path, name)
        assert paths["png"].read_bytes()[:8] == PNG_MAGIC, name
        assert paths["pdf"].read_bytes()[:5] == b"%PDF-", name


# ------------------------------------------------------------------------------ report


def test_report_references_every_png_and_they_exist(built: Path) -> None:
    html = (built / "report.html").read_text()
    srcs = _imgs(html)
    pngs = {p.name for p in (built / "figures").glob("*.png")}
    assert {Path(s).name for s in srcs} == pngs
    assert len(pngs) == 8  # Figs 1, 2, 3, 4, 5, 6, 7 and the estimators figure
    for s in srcs:
        assert not Path(s).is_absolute() and s.startswith("figures/")
        assert (built / s).is_file()
    assert {p.stem for p in (built / "figures").glob("*.pdf")} == {Path(s).stem for s in srcs}
    assert "Analysis mode: <b>corrected</b>" in html
    assert "accuracy in eval mode at every checkpoint" in html


def test_core_table_holds_the_summary_numbers(built: Path) -> None:
    html = (built / "report.html").read_text()
    table = _core_table(html)
    s = json.loads((built / "analysis" / "summary.json").read_text())
    expected = [
        _f(s["fits"]["mean_mae_degree_1"]),
        _f(s["fits"]["mean_mae_degree_2"]),
        _f(s["distances"]["later_median"]),
        _f(s["distances"]["consecutive_median_later"]),
        _f(s["lambda_star"]["median"]),
        _f(s["lambda_star"]["q25"]),
        _f(s["lambda_star"]["q75"]),
    ]
    for name, st in s["strategies"].items():
        expected.append(_f(st["accumulated_improvement"]))
        if name != "optimal":
            expected.append(_pct(st["share_of_optimum"]))
    for key, r in s["batch_size"]["delta_ratio"].items():
        expected.append(f"{_f(r['median_ratio'])} ({_f(r['expected_ratio'])})")
        assert f"bs {key}" in table or key == "full"
    for text in expected:
        assert text in table, text
    assert "paper, " not in table  # the toy run matches no paper preset


def test_paper_column_for_a_paper_preset(tmp_path: Path) -> None:
    run = _tiny(tmp_path / "r18", n_lines=6)
    (run / "config.toml").write_text(
        '[problem]\ndataset = "cifar10"\nmodel = "resnet18"\nbatch_size = 16\n\n'
        "[train]\nlr = 0.1\nmomentum = 0.0\n"
    )
    rows = {r["key"]: r for r in core_results(load_run(run))}
    assert rows["strategy:pal"]["paper"].startswith("≈ 170")
    assert "0.005" in rows["fit_2"]["paper"]
    assert "0.05" in rows["lambda_star"]["paper"]


def test_stale_or_other_mode_tables_are_recomputed(tmp_path: Path) -> None:
    run = _tiny(tmp_path / "run", n_lines=6)
    analyze_run(run, AnalysisRequest("faithful"))
    load_run(run)
    assert json.loads((run / "analysis" / "summary.json").read_text())["mode"] == "corrected"
    before = (run / "analysis" / "summary.json").stat().st_mtime_ns
    load_run(run)  # fresh: not recomputed
    assert (run / "analysis" / "summary.json").stat().st_mtime_ns == before


def test_the_report_is_drawn_from_the_analysis_tables_alone(built: Path, tmp_path: Path) -> None:
    """Without lines.zarr every figure is still drawn: the analysis wrote what they need."""
    run = tmp_path / "run"
    shutil.copytree(built, run)
    shutil.rmtree(run / "lines.zarr")
    shutil.rmtree(run / "figures")
    page = build_report([run], formats=("png",))
    html = page.read_text()
    assert {Path(s).stem for s in _imgs(html)} == {
        p.stem for p in (built / "figures").glob("*.png")
    }
    assert "not drawn" not in html


def test_two_runs_side_by_side_as_the_paper_sets_them(built: Path, tmp_path: Path) -> None:
    """β = 0 above β = 0.9: a claims column per run, figures one row per run, one PDF per page;
    the β = 0.9 run misses two lines, and both its report and the comparison say so."""
    flat = tmp_path / "beta0"
    shutil.copytree(built, flat)
    gappy = _tiny(tmp_path / "beta0.9", momentum=0.9, skip=(3, 7))
    page = build_report([gappy, flat], formats=("png",))
    assert page == gappy / "compare.html"
    assert "2 of 12 lines are not measured" in (gappy / "report.html").read_text()
    html = page.read_text()
    assert 'href="report.html"' in html and 'href="../beta0/report.html"' in html
    assert "2 of 12 lines are not measured" in html and "banner" in html
    table = re.search(r'<table id="claims-matrix">(.*?)</table>', html, re.S).group(1)
    header = re.search(r"<tr>(.*?)</tr>", table, re.S).group(1)
    assert "beta0.9" in header and "beta0<" in header.replace("</th>", "<")
    assert table.count('<td class="verdict') == 2 * len(CLAIMS)
    # two setups (β 0 and 0.9): no pooled claims, and the page says why
    assert 'id="pooled-claims"' not in html and "Not pooled" in html and "train.momentum" in html
    # l(0) of both runs, and Figs. 2, 3, 4, 6, 7 one row per run
    assert [Path(s).stem for s in _imgs(html)] == [
        f"compare_{n}" for n in ("l0", "lines", "distances", "fits", "strategies", "batch_size")
    ]
    from matplotlib.image import imread

    for name in ("lines", "strategies"):
        stacked = imread(page.parent / "figures" / f"compare_{name}.png")
        single = imread(flat / "figures" / f"{name}.png")
        assert stacked.shape[0] > 1.6 * single.shape[0] * stacked.shape[1] / single.shape[1]
    assert not page.with_suffix(".pdf").exists()  # PNG only: no book


def test_report_pdf_is_the_whole_report_page_by_page(built: Path) -> None:
    """report.pdf holds the claims with verdicts and reasons, what was run, the core results,
    then one page per figure of the page, headed by its title, with its caption."""
    pypdf = pytest.importorskip("pypdf")
    pages = [p.extract_text() for p in pypdf.PdfReader(built / "report.pdf").pages]
    html = (built / "report.html").read_text()
    titles = re.findall(r'<img src="[^"]*" alt="([^"]*)"', html)
    text_pages = len(pages) - len(titles)
    assert text_pages >= 1 and pages[0].startswith("steplines report — run")
    text = "\n".join(pages[:text_pages])
    for heading in ("Claims of the paper", "What was run", "Core results"):
        assert heading in text
    squashed = re.sub(r"\s+", "", text)  # table cells wrap inside words
    for c in json.loads((built / "analysis" / "claims.json").read_text()):
        assert c["key"] in squashed and re.sub(r"\s+", "", c["reason"]) in squashed
    assert squashed.count("inconclusive") >= 1
    for row in core_results(load_run(built, reanalyze=False)):
        assert re.sub(r"\s+", "", row["ours"]) in squashed
    heads = {page.split("\n", 1)[0]: page for page in pages[text_pages:]}
    assert set(heads) == {t.replace("&#39;", "'") for t in titles}  # one page per figure
    assert all(len(page) > len(title) + 40 for title, page in heads.items())  # and its caption


def test_report_pages_draw_no_text_over_other_text(built: Path) -> None:
    from steplines.report.page import _page_values, report_pages

    run = load_run(built, reanalyze=False)
    figures = [
        {"src": f"figures/{p.name}", "title": p.stem, "caption": "caption " * 30}
        for p in sorted((built / "figures").glob("*.png"))[:2]
    ]
    for page in report_pages(_page_values(run), run.banners, figures, built):
        assert overlaps(page) == []


def test_a_failed_pdf_leaves_no_page_and_no_pdf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    from steplines.report.page import publish

    out = tmp_path / "page.html"
    out.write_text("the page before")
    calls = []

    def disk_full(self: object, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(PdfPages, "savefig", disk_full)
    with pytest.raises(OSError, match="No space"):
        publish(out, "the new page", [Figure() for _ in range(5)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]  # no PDF, no temp
    assert out.read_text() == "the page before"


def test_a_run_being_measured_is_reported_as_such(built: Path, tmp_path: Path) -> None:
    """While another process holds a segment lock, the page says the run is still measuring."""
    run = tmp_path / "run"
    shutil.copytree(built, run)
    hold = (
        "import sys, time\nfrom pathlib import Path\nfrom steplines.locks import segment_locks\n"
        "with segment_locks(Path(sys.argv[1]), [4]):\n    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        banners = [b["text"] for b in load_run(run, reanalyze=False).banners]
        assert any("being measured right now (segment_0000004.lock held)" in b for b in banners)
    finally:
        proc.kill()
        proc.wait()
    # the holder is gone (a SIGKILL leaves its file behind, the kernel dropped its lock)
    assert not any("being measured" in b["text"] for b in load_run(run, reanalyze=False).banners)


def test_a_damaged_table_is_rebuilt_from_the_store(built: Path, tmp_path: Path) -> None:
    """A 0-byte strategies.csv (a disk-full, an old crash) is derived data: analysed again."""
    run = tmp_path / "run"
    shutil.copytree(built, run)
    (run / "analysis" / "strategies.csv").write_bytes(b"")
    assert not load_run(run).strategies.empty
    assert (run / "analysis" / "strategies.csv").stat().st_size > 0
    (run / "analysis" / "strategies.csv").write_bytes(b"")
    with pytest.raises(RunDirError, match="changed or damaged"):
        load_run(run, reanalyze=False)  # told not to analyse: one line naming the fix


def test_claims_come_first_with_every_verdict(built: Path) -> None:
    html = (built / "report.html").read_text()
    claims = json.loads((built / "analysis" / "claims.json").read_text())
    assert [c["key"] for c in claims] == [s.key for s in CLAIMS]
    assert html.index('id="claims"') < html.index("What was run") < html.index("core-results")
    table = re.search(r'<table id="claims-table">(.*?)</table>', html, re.S).group(1)
    for c in claims:
        row = re.search(rf'<tr id="claim-{c["key"]}">(.*?)</tr>', table, re.S).group(1)
        assert f"<b>{c['verdict']}</b>" in row and c["threshold"] in row
        if c["value"] is not None:
            assert _f(c["value"]) in row
        assert c["quote"][:30] in row.replace("&#39;", "'").replace("&#34;", '"')
    # 12 lines: fewer than a claim needs, and the page says why
    assert {c["verdict"] for c in claims} <= {"inconclusive", "not applicable"}
    assert "only 12 lines (needs ≥ 20)" in table
    # the footer: how many claims at which level, and the minimum units
    note = re.search(r'<p class="note" id="claims-note">(.*?)</p>', html, re.S).group(1)
    assert "claims judged" in note and "at least 20 lines, 5 noisy steps" in note


def test_another_mode_never_replaces_the_default_report(built: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(built, run)
    keep = {p: p.read_bytes() for p in [run / "report.html", *run.glob("analysis/*")]}
    keep |= {p: p.read_bytes() for p in (run / "figures").iterdir()}
    out = tmp_path / "faithful.html"
    res = CliRunner().invoke(report, ["--mode", "faithful", "--out", str(out), str(run)])
    assert res.exit_code == 0, res.output
    for p, data in keep.items():
        assert p.read_bytes() == data, f"{p} was overwritten"
    html = out.read_text()
    assert "Analysis mode: <b>faithful</b>" in html
    srcs = _imgs(html)
    assert srcs and all(s.startswith("run/analysis-faithful-paper/figures/") for s in srcs)
    assert all((tmp_path / s).is_file() for s in srcs)
    # the page now exists: kept unless --force, and a directory is refused writing nothing
    before = out.read_bytes()
    res = CliRunner().invoke(report, ["--mode", "faithful", "--out", str(out), str(run)])
    assert res.exit_code == 2 and "--force" in res.stderr and res.stderr.count("\n") == 1
    assert out.read_bytes() == before
    res = CliRunner().invoke(report, ["--mode", "faithful", "--force", "--out", str(out), str(run)])
    assert res.exit_code == 0, res.output
    (tmp_path / "adir").mkdir()
    res = CliRunner().invoke(report, ["--out", str(tmp_path / "adir"), str(run)])
    assert res.exit_code == 2 and "is a directory" in res.stderr
    assert not (tmp_path / "adir.pdf").exists() and not any((tmp_path / "adir").iterdir())


def test_an_adamw_run_is_not_analysed_as_sgd_momentum(tmp_path: Path) -> None:
    run = _tiny(tmp_path / "adamw", n_lines=6, momentum=0.9, lr=0.00225796)
    (run / "config.toml").write_text(
        '[problem]\nfactory = "my_problem.py:make_problem"\n\n'
        '[train]\noptimizer = "AdamW"\nlr = 0.00225796\nmomentum = 0.9\n'
    )
    loaded = load_run(run)
    s = loaded.summary
    assert (s["optimizer"], s["momentum"], s["scale"]) == ("adamw", 0.0, "run")
    assert not any(n.endswith("_accum") for n in s["strategies"])
    assert "s_opt_over_minus_accumulated_delta" not in s["ratios"]
    rows = core_results(loaded)
    text = " ".join(r["quantity"] + " " + r["ours"] for r in rows)
    for internal in ("sgd_lambda_", "_accum", "s_opt_over_", "lambda_star_"):
        assert internal not in text, internal
    assert "0.00225796" not in text and "λ = 0.00226" in text


# ------------------------------------------------------------------------------ bad input


def test_bad_run_dirs_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a directory"):
        build_report([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=r"no lines\.zarr"):
        build_report([tmp_path / "empty"])
    none_done = _tiny(tmp_path / "none", n_lines=3, skip=(0, 1, 2))
    with pytest.raises(RunDirError, match="no measured lines"):
        build_report([none_done])
    old = _tiny(tmp_path / "old", n_lines=3)
    meta = old / "lines.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["schema_version"] = 0
    meta.write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="schema_version 0"):
        build_report([old])


def test_cli_report_errors_and_analyze_output(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(report, [str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output
    run = _tiny(tmp_path / "run", n_lines=6)
    res = runner.invoke(analyze, [str(run), "--mode", "faithful"])
    assert res.exit_code == 0, res.output
    # another mode never replaces the default analysis in RUN/analysis/
    assert not (run / "analysis").exists()
    s = json.loads((run / "analysis-faithful-paper" / "summary.json").read_text())
    assert s["mode"] == "faithful" and s["scale"] == "paper"
    claims = json.loads((run / "analysis-faithful-paper" / "claims.json").read_text())
    for c in claims:  # every claim is printed with its verdict
        assert f"{c['key']}" in res.stdout and c["verdict"].upper() in res.stdout
    assert _f(s["lambda_star"]["median"]) in res.stdout
    assert _f(s["fits"]["mean_mae_degree_2"]) in res.stdout
    res = runner.invoke(analyze, [str(run), "--lambdas", "0.1,x"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "--lambdas" in res.stderr


def test_plotting_and_report_never_import_torch() -> None:
    code = (
        "import sys, steplines.plotting, steplines.report, steplines.reporting\n"
        "import steplines.cli.report_cmds\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad[:5]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------ browser

_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  // the line browser: move the control to the last line and see the plot change
  const picker = document.getElementById('line-picker');
  const before = document.getElementById('line-full').getAttribute('points');
  picker.value = picker.max;
  picker.dispatchEvent(new Event('input'));
  const s = {
    n: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    errors: window.__errors,
    lines: Number(picker.max) + 1,
    before: before,
    after: document.getElementById('line-full').getAttribute('points'),
    label: document.getElementById('line-label').textContent,
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(s);
  document.body.appendChild(pre);
});
</script>"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (Debian: apt-get install chromium); browser check skipped",
)
def test_report_loads_in_headless_chromium(built: Path, tmp_path: Path) -> None:
    html = (built / "report.html").read_text()
    # the probe must run before anything else can fail: put it first in <head>
    probe_page = built / "report_probe.html"
    probe_page.write_text(html.replace("<head>", "<head>\n" + _PROBE, 1))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe_page.resolve().as_uri(),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    finally:
        probe_page.unlink()
    m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"probe did not run (rc {out.returncode}):\n{out.stderr[-2000:]}"
    status = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert status["n"] == 8  # Figs 1–7 and the estimators figure
    assert status["broken"] == []
    assert status["errors"] == []
    assert status["lines"] == 12  # every line of the 12-line run is in the browser
    assert status["before"].count(",") > 10 and status["after"] != status["before"]
    assert status["label"].startswith("line 11:")
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
