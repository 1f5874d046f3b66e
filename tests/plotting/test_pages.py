"""The printed report's text pages: everything on the page, nothing drawn over anything else."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from steplines.plotting.pages import PAGE, Heading, Table, image_page, text_pages

from support import overlaps


def test_the_overlap_check_sees_a_title_over_another() -> None:
    fig = Figure(figsize=PAGE)
    fig.text(0.1, 0.9, "Fig. 3 — distances", fontsize=13, va="top")
    fig.text(0.12, 0.9, "first panel title", fontsize=10, va="top")
    assert overlaps(fig)


def test_a_long_table_continues_on_new_pages_without_overlap() -> None:
    rows = [
        [f"claim_{i}", "inconclusive", f"{i * 0.137:.3g}", "≥ 0.9", "the interval " * (i % 7 + 1)]
        for i in range(60)
    ]
    pages = text_pages(
        "Claims of the paper",
        [
            Heading("Claims"),
            "A paragraph long enough to wrap: " + "words " * 60,
            Table(
                ["claim", "verdict", "value", "threshold", "reason"],
                rows,
                [0.2, 0.13, 0.1, 0.12, 0.45],
            ),
        ],
    )
    assert len(pages) >= 2
    assert "(continued)" in pages[1].texts[0].get_text()
    text = "\n".join(t.get_text() for p in pages for t in p.texts)
    assert all(f"claim_{i}" in text for i in range(60))
    for page in pages:
        assert overlaps(page) == []


def test_a_figure_page_keeps_title_image_and_caption_apart(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.plot(np.arange(10))
    ax.set_title("panel title")
    fig.savefig(tmp_path / "f.png", dpi=80)
    plt.close(fig)
    page = image_page(tmp_path / "f.png", "Fig. 1 — training", "caption words " * 80)
    assert overlaps(page) == []
    assert page.texts[0].get_text() == "Fig. 1 — training"
