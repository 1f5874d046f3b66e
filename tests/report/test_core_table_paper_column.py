"""The paper column of the core-results table uses no glyph a font may lack (no ditto mark)."""

from __future__ import annotations

from pathlib import Path

from steplines.report import core_results
from steplines.reporting import load_run

from analysis_fixtures import make_run


def test_repeated_paper_text_reads_as_above(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r20", n_lines=6, n=64, m=8, b=16)
    (run / "config.toml").write_text(
        '[problem]\ndataset = "cifar10"\nmodel = "resnet20"\nbatch_size = 16\n\n'
        "[train]\nlr = 0.1\nmomentum = 0.0\n"
    )
    rows = core_results(load_run(run))
    papers = [r["paper"] for r in rows]
    assert all("\u3003" not in p and "\u2033" not in p for p in papers)
    # every paper text is printed once; later rows of its group say so in plain text
    repeats = [i for i, p in enumerate(papers) if p == "(as above)"]
    assert repeats, papers
    for i in repeats:
        earlier = [p for p in papers[:i] if p and p != "(as above)"]
        assert earlier  # there is a text above to refer to
    texts = [p for p in papers if p and p != "(as above)"]
    assert len(texts) == len(set(texts))
