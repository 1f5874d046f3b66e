"""The page of one run: draw its figures into ``RUN/figures/`` (PNG for the page, PDF for
papers), render ``RUN/report.html`` from the numbers of :mod:`steplines.report.sections`, and
write ``report.pdf``, the whole report on A4 — the claims with their verdicts and reasons, what
was run, the core results and every figure with its caption (``docs/report.md``).

The page and its PDF are written under temporary names and put in place together at the end:
a report that fails (or is killed) leaves neither, and never half of one. The drawing helper
(:func:`draw_all`) and :func:`publish` serve the comparison page as well. This module never imports
torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from steplines.analysis.settings import match_preset
from steplines.atomic import temporary_path, write_atomic
from steplines.errors import SteplinesError
from steplines.plotting import save_figure
from steplines.plotting.pages import Heading, Table, image_page, text_pages
from steplines.report.data import RunData, banner
from steplines.report.figures import PageFigure, estimator_figure, figures_of
from steplines.report.paper import paper_values
from steplines.report.sections import (
    SCOPE_NOTE,
    bs_table,
    claim_rows,
    claims_note,
    core_results,
    estimator_section,
    interval_note,
    meta,
    noise_scale_note,
    paper_note,
    precision_section,
    settings_line,
)
from steplines.report.templates import RUN_TEMPLATE

__all__ = ["build_run_report", "draw_all", "env", "publish", "rel", "report_pages"]


def build_run_report(run: RunData, out: Path, formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Draw the figures of ``run`` into ``RUN/figures/``, write its page to ``out`` and, when
    PDFs are written, the whole report to ``out`` with suffix ``.pdf``.

    Args:
        run: The loaded run (:func:`steplines.reporting.load_run`); the figures are smoothed
            as its analysis mode says.
        out: The HTML file.
        formats: Figure files to write; PNG is always written (the page shows it).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    banners = list(run.banners)
    figures = draw_all(figures_of(run), run.figures, out.parent, banners, formats)
    est = estimator_section(run)
    est_fig = estimator_figure(run)
    if est_fig is not None:
        drawn = draw_all([est_fig], run.figures, out.parent, banners, formats)
        est["figure"] = drawn[0] if drawn else None
    values = _page_values(run)
    html = (
        env()
        .from_string(RUN_TEMPLATE)
        .render(
            **values,
            banners=banners,
            figures=figures,
            est=est,
            book=rel(out.with_suffix(".pdf"), out.parent) if "pdf" in formats else "",
        )
    )
    pages = None
    if "pdf" in formats:
        shown = figures + ([est["figure"]] if est.get("figure") else [])
        pages = report_pages(values, banners, shown, out.parent)
    publish(out, html, pages)
    return out


def report_pages(
    values: dict[str, Any],
    banners: Sequence[dict[str, str]],
    figures: Sequence[dict[str, str]],
    page_dir: Path,
) -> list[Figure]:
    """The pages of ``report.pdf``: the text of the report, then one page per figure with its
    title and caption (``figures`` as :func:`draw_all` returns them, relative to
    ``page_dir``)."""
    v = values
    blocks: list[Any] = [
        f"Analysis mode: {v['mode']}; {v['lines_used']} of {v['lines_total']} lines measured. "
        f"steplines {v['version']}.",
        *(f"{'Error' if b.get('level') == 'error' else 'Note'}: {b['text']}" for b in banners),
        Heading("Claims of the paper"),
        v["claims_note"],
        Table(
            ["claim", "verdict", "value [interval]", "threshold", "reason"],
            [
                [f"{c['key']}: {c['claim']}", c["verdict"], c["value"], c["threshold"], c["reason"]]
                for c in v["claims"]
            ],
            [0.28, 0.13, 0.17, 0.1, 0.32],
        ),
        Heading("What was run"),
        *(Table([name, ""], rows, [0.3, 0.7]) for name, rows in v["meta"]),
        Heading("Core results" + (f" beside {v['paper_title']}" if v["paper_title"] else "")),
        v["settings_line"],
        f"[low, high]: {v['level']} interval from resampling each line's full-batch rows "
        f"({v['row_note']}). {v['scope_note']}",
        Table(
            ["quantity", "this run", "paper"],
            [[r["quantity"], r["ours"], r["paper"]] for r in v["core"]],
            [0.45, 0.33, 0.22],
        ),
        v["paper_note"],
    ]
    if v["bs_table"]:
        n = len(v["bs_strategies"])
        blocks += [
            Heading("Batch size (simulated)"),
            Table(["batch size", *v["bs_strategies"]], v["bs_table"], [0.16] + [0.84 / n] * n),
            v["bs_note"],
        ]
    pages = text_pages(f"steplines report — {v['name']}", [b for b in blocks if b])
    pages += [image_page(page_dir / f["src"], f["title"], f["caption"]) for f in figures]
    return pages


def publish(out: Path, html: str, pages: Sequence[Figure] | None) -> None:
    """Write ``out`` and, with ``pages``, its ``.pdf``: the PDF under a temporary name first,
    then the page (:func:`~steplines.atomic.write_atomic`), then the PDF renamed beside it. A
    failure while writing either leaves neither new file (and an existing pair as it was)."""
    pdf = out.with_suffix(".pdf")
    tmp = temporary_path(pdf) if pages is not None else None
    try:
        if tmp is not None:
            with PdfPages(tmp, metadata={"CreationDate": None}) as book:
                for page in pages or ():
                    book.savefig(page)
        write_atomic(out, html)
        if tmp is not None:
            os.replace(tmp, pdf)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _page_values(run: RunData) -> dict[str, Any]:
    """The values of :data:`RUN_TEMPLATE` that are numbers and text (not the drawn figures)."""
    title, _ = paper_values(match_preset(run.config))
    bs_header, bs_rows = bs_table(run)
    return {
        "name": run.name,
        "mode": run.summary.get("mode", run.mode),
        "lines_used": run.summary.get("lines_used"),
        "lines_total": run.summary.get("lines_total"),
        "meta": meta(run),
        "core": core_results(run),
        "claims": claim_rows(run),
        "claims_note": claims_note(run),
        "settings_line": settings_line(run),
        **interval_note(run),
        "scope_note": SCOPE_NOTE,
        "paper_title": title,
        "paper_note": paper_note(title),
        "bs_strategies": bs_header,
        "bs_table": bs_rows,
        "bs_note": noise_scale_note(run),
        "precision": precision_section(run),
        "browser": _browser_json(run),
        "version": _version(),
    }


def _browser_json(run: RunData) -> str:
    """The line picker's lines (``browser.json``) for embedding in a ``<script>`` element."""
    text = json.dumps(run.tables.browser, separators=(",", ":"))  # as the analysis wrote it
    # inside <script>, "</" would end the element: JSON allows the escaped form
    return text.replace("</", "<\\/")


def draw_all(
    figs: Sequence[PageFigure],
    fig_dir: Path,
    page_dir: Path,
    banners: list[dict[str, str]],
    formats: Sequence[str] = ("png", "pdf"),
) -> list[dict[str, str]]:
    """Draw and save every figure (PNG always); a failed figure becomes a banner."""
    formats = ("png", *[f for f in formats if f != "png"])
    out = []
    for f in figs:
        try:
            fig = f.draw()
            paths = save_figure(fig, fig_dir, f.name, formats)
        except SteplinesError as exc:
            banners.append(banner(f"{f.title} not drawn: {exc}"))
            continue
        except Exception as exc:  # a figure must never break the page
            banners.append(banner(f"{f.title} not drawn ({type(exc).__name__}: {exc})."))
            continue
        out.append(
            {
                "name": f.name,
                "title": f.title,
                "caption": f.caption,
                "src": rel(paths["png"], page_dir),
                "pdf": rel(paths["pdf"], page_dir) if "pdf" in paths else "",
            }
        )
    return out


def rel(path: Path, start: Path) -> str:
    """``path`` relative to ``start``, with ``/`` (a link on a page in ``start``)."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def env() -> jinja2.Environment:
    """The templates' environment: autoescaped, and a missing value is an error."""
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("steplines")
    except Exception:  # pragma: no cover - not installed
        return "?"
