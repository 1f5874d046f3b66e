"""The page of one run: draw its figures into ``RUN/figures/`` (PNG for the page, PDF for
papers, every figure also a page of ``report.pdf``) and render ``RUN/report.html`` from the
numbers of :mod:`steplines.report.sections` (``docs/report.md``).

The drawing helpers (:func:`draw_all`, :func:`book`) serve the comparison page as well. This
module never imports torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.backends.backend_pdf import PdfPages

from steplines.analysis.settings import match_preset
from steplines.atomic import temporary_path, write_atomic
from steplines.errors import SteplinesError
from steplines.plotting import save_figure
from steplines.report.data import RunData, banner
from steplines.report.figures import PageFigure, estimator_figure, figures_of
from steplines.report.paper import paper_values
from steplines.report.sections import (
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

__all__ = ["book", "build_run_report", "draw_all", "env", "rel"]


def build_run_report(run: RunData, out: Path, formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Draw the figures of ``run`` into ``RUN/figures/`` and write its page to ``out``.

    Args:
        run: The loaded run (:func:`steplines.reporting.load_run`); the figures are smoothed
            as its analysis mode says.
        out: The HTML file.
        formats: Figure files to write; PNG is always written (the page shows it).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    banners = list(run.banners)
    with book(out, formats) as pdf:
        figures = draw_all(figures_of(run), run.figures, out.parent, banners, formats, pdf)
        est = estimator_section(run)
        est_fig = estimator_figure(run)
        if est_fig is not None:
            drawn = draw_all([est_fig], run.figures, out.parent, banners, formats, pdf)
            est["figure"] = drawn[0] if drawn else None
    html = (
        env()
        .from_string(RUN_TEMPLATE)
        .render(
            **_page_values(run),
            banners=banners,
            figures=figures,
            est=est,
            book=rel(out.with_suffix(".pdf"), out.parent) if "pdf" in formats else "",
        )
    )
    write_atomic(out, html)  # a reader (or a killed report) never leaves half a page
    return out


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
    """``browser.json`` for embedding in a ``<script>`` element (``""`` when absent)."""
    path = run.analysis / "browser.json"
    if not path.is_file():
        return ""
    text = path.read_text()
    # inside <script>, "</" would end the element: JSON allows the escaped form
    return text.replace("</", "<\\/")


def draw_all(
    figs: Sequence[PageFigure],
    fig_dir: Path,
    page_dir: Path,
    banners: list[dict[str, str]],
    formats: Sequence[str] = ("png", "pdf"),
    book: PdfPages | None = None,
) -> list[dict[str, str]]:
    """Draw and save every figure (PNG always); a failed figure becomes a banner.

    With ``book``, every drawn figure is also appended as a page of that PDF.
    """
    formats = ("png", *[f for f in formats if f != "png"])
    out = []
    for f in figs:
        try:
            fig = f.draw()
            paths = save_figure(fig, fig_dir, f.name, formats)
            if book is not None:
                fig.suptitle(f.title, fontsize=10, x=0.01, ha="left")
                book.savefig(fig)
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


@contextlib.contextmanager
def book(page: Path, formats: Sequence[str]) -> Iterator[PdfPages | None]:
    """``<page>.pdf``, every figure of the page in one PDF (only when PDFs are written).

    Written under a temporary name and renamed at the end, so a reader never sees half a book.
    """
    if "pdf" not in formats:
        yield None
        return
    target = page.with_suffix(".pdf")
    tmp = temporary_path(target)  # per process; a killed one's is removed here
    with PdfPages(tmp, metadata={"CreationDate": None}) as pdf:
        yield pdf
    os.replace(tmp, target)


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
