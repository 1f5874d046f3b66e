"""``steplines analyze RUN1 RUN2 RUN3 --out DIR``, ``--family`` and ``report RUN...`` pooled
over seeds of one setup (issue 20, items 3 and 4)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from steplines.cli.main import main

from analysis_fixtures import make_run


def seeded_run(path: Path, seed: int, lr: float = 0.1) -> Path:
    """A tiny measured run (6 lines) whose config.toml names ``train.seed``."""
    make_run(path, n_lines=6, lr=lr)
    cfg = path / "config.toml"
    cfg.write_text(cfg.read_text().replace("[train]\n", f"[train]\nseed = {seed}\n"))
    return path


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("seeds")
    return [seeded_run(root / f"seed-{s}", s) for s in (1, 2, 3)]


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def _error(args: list[str], *needles: str) -> None:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _inside(x: float | None, rng: list[float | None]) -> bool:
    lo, hi = rng
    return x is None or ((lo is None or x >= lo - 1e-12) and (hi is None or x <= hi + 1e-12))


def test_analyze_several_runs_writes_pooled_claims(seeds: list[Path], tmp_path: Path) -> None:
    out = _ok(["analyze", *map(str, seeds), "--out", str(tmp_path / "pooled")])
    assert "claims pooled over 3 runs" in out and "seed-1, seed-2, seed-3" in out
    assert "claims judged" in out and "at least 20 lines" in out
    claims = json.loads((tmp_path / "pooled" / "claims.json").read_text())
    summary = json.loads((tmp_path / "pooled" / "summary.json").read_text())
    assert [r["path"] for r in summary["runs"]] == [str(p.resolve()) for p in seeds]
    assert summary["family"] == "none" and summary["family_note"]
    opposite = {"holds": "does not hold", "does not hold": "holds"}
    for c in claims:
        assert [r["run"] for r in c["per_run"]] == ["seed-1", "seed-2", "seed-3"]
        for rec in (c, *c["per_run"]):
            assert {"verdict", "value", "low", "high"} <= set(rec)
            for k in ("value", "low", "high"):
                assert _inside(rec[k], c["range"]), (c["key"], k, rec[k])
        if c["verdict"] in opposite:
            assert opposite[c["verdict"]] not in {r["verdict"] for r in c["per_run"]}
        # 6 lines per run: fewer than a claim needs, so nothing is decided
        assert c["verdict"] in ("inconclusive", "not applicable")
    for run in seeds:
        assert (run / "analysis" / "claim_data.npz").is_file()


def test_family_on_single_and_pooled_analyze(seeds: list[Path], tmp_path: Path) -> None:
    run = tmp_path / "one"
    shutil.copytree(seeds[0], run)
    out = _ok(["analyze", str(run), "--family", "bonferroni"])
    assert "Bonferroni" in out
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["claims_family"] == "bonferroni"
    _ok(["analyze", *map(str, seeds), "--out", str(tmp_path / "p"), "--family", "holm"])
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["family"] == "holm" and "Holm" in summary["family_note"]
    res = CliRunner().invoke(main, ["analyze", str(run), "--family", "sidak"])
    assert res.exit_code == 2 and "'sidak' is not one of" in res.stderr


def test_bad_inputs_of_pooled_analyze(seeds: list[Path], tmp_path: Path) -> None:
    runs = list(map(str, seeds))
    _error(["analyze", *runs], "3 runs", "--out")
    _error(["analyze", *runs, "--out", str(seeds[1] / "pooled")], "inside the run")
    other = seeded_run(tmp_path / "lr05", 4, lr=0.05)
    _error(["analyze", *runs, str(other), "--out", str(tmp_path / "x")], "train.lr")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(seeds[0] / "config.toml", empty / "config.toml")
    _error(["analyze", *runs, str(empty), "--out", str(tmp_path / "x")], "empty", "measure")
    assert not (tmp_path / "x").exists()


def test_report_of_seeds_shows_each_seeds_verdict(seeds: list[Path], tmp_path: Path) -> None:
    from steplines.analysis.settings import AnalysisRequest
    from steplines.reporting import build_report

    holm = AnalysisRequest(family="holm")
    page = build_report(seeds, tmp_path / "compare.html", holm)
    html = page.read_text()
    table = re.search(r'<table id="pooled-claims">(.*?)</table>', html, re.S).group(1)
    claims = json.loads((seeds[0] / "analysis" / "claims.json").read_text())
    for name in ("seed-1", "seed-2", "seed-3"):
        assert f"<th>{name}</th>" in table
    for c in claims:
        row = re.search(rf'<tr id="pooled-{c["key"]}">(.*?)</tr>', table, re.S).group(1)
        assert row.count("per-run") == 3
        assert c["quote"][:40] in row.replace("&#39;", "'").replace("&#34;", '"')
    assert "Holm" in html and "at least 20 lines" in html
    # each run's own page: the paper's quote, the family note and the minimum units
    own = (seeds[0] / "report.html").read_text()
    assert 'class="quote"' in own and 'id="claims-note"' in own and "Holm" in own
    # compare.pdf: the runs, their claims and the pooled claims, then the figures
    pypdf = pytest.importorskip("pypdf")
    pages = [p.extract_text() for p in pypdf.PdfReader(page.with_suffix(".pdf")).pages]
    text = re.sub(r"\s+", "", "\n".join(pages))
    for heading in ("Runs", "Claims of the paper, run by run", "Claims pooled over the runs"):
        assert re.sub(r"\s+", "", heading) in text
    pooled = json.loads((seeds[0] / "analysis" / "claims.json").read_text())
    assert all(name in text for name in ("seed-1", "seed-2", "seed-3"))
    assert all(re.sub(r"\s+", "", c["claim"])[:20] in text for c in pooled)
    assert any(p.startswith("Fig. 10 — runs compared") for p in pages)


def test_report_of_different_setups_is_not_pooled(seeds: list[Path], tmp_path: Path) -> None:
    from steplines.analysis.settings import AnalysisRequest
    from steplines.reporting import pooled_section

    other = seeded_run(tmp_path / "lr05", 4, lr=0.05)
    section = pooled_section([seeds[0], other], AnalysisRequest())
    assert section["rows"] == [] and "train.lr" in section["note"]


def test_run_with_seeds_makes_one_run_per_seed(tmp_path: Path) -> None:
    from steplines.config import load_config

    from support import TINY, cli

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.format(steps=2))
    out = tmp_path / "seeds"
    res = cli("run", "--config", str(cfg), "--seeds", "3,5", "--out", str(out), "--quiet")
    assert res.returncode == 0, (res.stdout, res.stderr)
    for seed in (3, 5):
        run = out / f"seed-{seed}"
        assert load_config(path=run / "config.toml").train.seed == seed
        assert (run / "lines.zarr").is_dir()
    assert res.stdout.count("measured 2 new lines; 2/2 lines done") == 2
    seeded = tmp_path / "seeded.toml"
    seeded.write_text(TINY.format(steps=2).replace("[train]\n", "[train]\nseed = 4\n"))
    for args, needle in (
        (["--config", str(cfg), "--seeds", "1,x"], "distinct integers"),
        (["--config", str(cfg), "--seeds", "1,1"], "distinct integers"),
        (["--config", str(seeded), "--seeds", "1,2"], "train.seed"),
        (["--config", str(cfg), "--seeds", "1,2", "--out", str(out / "seed-3")], "run directory"),
    ):
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "new")]
        res = cli("run", *args)
        assert res.returncode == 2 and needle in res.stderr, (args, res.stderr)
    assert not (tmp_path / "new").exists()
