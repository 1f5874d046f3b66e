"""Pages of a printed report: text, tables and captioned figures on A4, as matplotlib Figures.

The report's PDF (``report.pdf``) is the whole report, not only its figures: these functions
lay out its text — the claims with their verdicts and reasons, what was run, the core results
— and put every figure on a page of its own with its title and caption. Text is set in a
monospaced font, so a line's width is known exactly (``0.61 em`` per character) and wrapping
never lets one cell run into the next; every page is laid out top to bottom by one cursor, so
no title is drawn over another (tested on the text extents of every page).

This module never imports torch.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image as mpimg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["PAGE", "Heading", "Table", "image_page", "text_pages"]

PAGE = (8.27, 11.69)
"""A4 portrait, inches."""

_MARGIN = 0.6
_BODY = 7.5
_TITLE = 13.0
_HEADING = 10.0
_CHAR = 0.61
"""Advance of one DejaVu Sans Mono character in em (0.602), rounded up."""


@dataclass(frozen=True)
class Heading:
    """A section heading inside a text page."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table: ``header`` and ``rows`` of strings, ``widths`` the share of the text width of
    each column (they sum to at most 1)."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    widths: Sequence[float]


Block = str | Heading | Table


def _height(size: float) -> float:
    """Line height in inches of text set at ``size`` points."""
    return 1.35 * size / 72.0


def _wrap(text: str, width_in: float, size: float = _BODY) -> list[str]:
    """``text`` wrapped to ``width_in`` inches of monospaced characters (at least one line)."""
    chars = max(4, int(width_in / (_CHAR * size / 72.0)))
    out: list[str] = []
    for para in str(text).splitlines() or [""]:
        out += textwrap.wrap(para, chars, break_long_words=True, break_on_hyphens=False) or [""]
    return out


class _Pages:
    """A cursor that writes down A4 pages and starts a new one when the next item won't fit."""

    def __init__(self, title: str) -> None:
        self.title, self.pages, self.y = title, [], 0.0
        self.width = PAGE[0] - 2 * _MARGIN
        self._new()

    def _new(self) -> None:
        self.fig = Figure(figsize=PAGE)
        self.pages.append(self.fig)
        suffix = " (continued)" if len(self.pages) > 1 else ""
        self.y = _MARGIN
        self.text(0.0, self.title + suffix, _TITLE, weight="bold", family="sans-serif")
        self.y += _height(_TITLE) + 0.1

    def room(self, height: float) -> None:
        """Start a new page unless ``height`` inches still fit on this one."""
        if self.y + height > PAGE[1] - _MARGIN and self.y > _MARGIN + _height(_TITLE) + 0.2:
            self._new()

    def text(self, x: float, s: str, size: float, **kw: object) -> None:
        """One line of text at ``x`` inches from the left margin, on the cursor's line."""
        self.fig.text(
            (_MARGIN + x) / PAGE[0],
            1 - self.y / PAGE[1],
            s,
            fontsize=size,
            va="top",
            ha="left",
            family=kw.pop("family", "monospace"),
            **kw,
        )

    def rule(self) -> None:
        """A thin horizontal line across the text width at the cursor."""
        y = 1 - (self.y - 0.03) / PAGE[1]
        x0, x1 = _MARGIN / PAGE[0], 1 - _MARGIN / PAGE[0]
        self.fig.add_artist(Line2D([x0, x1], [y, y], lw=0.4, color="0.6"))

    def heading(self, text: str) -> None:
        self.room(_height(_HEADING) + 3 * _height(_BODY))
        self.y += 0.08
        self.text(0.0, text, _HEADING, weight="bold", family="sans-serif")
        self.y += _height(_HEADING) + 0.04

    def paragraph(self, text: str) -> None:
        for line in _wrap(text, self.width):
            self.room(_height(_BODY))
            self.text(0.0, line, _BODY)
            self.y += _height(_BODY)
        self.y += 0.06

    def table(self, table: Table) -> None:
        xs = [0.0]
        for w in table.widths[:-1]:
            xs.append(xs[-1] + w * self.width)
        gap = 0.08  # inches between columns
        widths = [w * self.width - gap for w in table.widths]
        self.row(table.header, xs, widths, bold=True)
        for row in table.rows:
            self.row(row, xs, widths)
        self.y += 0.06

    def row(
        self, cells: Sequence[str], xs: list[float], widths: list[float], bold: bool = False
    ) -> None:
        wrapped = [_wrap(c, w) for c, w in zip(cells, widths)]
        lines = max(len(w) for w in wrapped)
        self.room(lines * _height(_BODY) + 0.05)
        self.rule()
        for x, cell in zip(xs, wrapped):
            self.text(x, "\n".join(cell), _BODY, weight="bold" if bold else "normal")
        self.y += lines * _height(_BODY) + 0.05


def text_pages(title: str, blocks: Sequence[Block]) -> list[Figure]:
    """A4 pages holding ``blocks`` (paragraphs, :class:`Heading` and :class:`Table`) under
    ``title``, continued on as many pages as they need."""
    pages = _Pages(title)
    for block in blocks:
        if isinstance(block, Heading):
            pages.heading(block.text)
        elif isinstance(block, Table):
            pages.table(block)
        else:
            pages.paragraph(block)
    return pages.pages


def image_page(image: Path, title: str, caption: str) -> Figure:
    """One A4 page: ``title``, the figure's image (PNG) scaled to the text width, and its
    ``caption`` below it."""
    pages = _Pages(title)
    img = mpimg.imread(image)
    h_px, w_px = img.shape[:2]
    cap = _wrap(caption, pages.width)
    room = PAGE[1] - _MARGIN - pages.y - (len(cap) + 1) * _height(_BODY)
    w = pages.width
    h = min(room, w * h_px / w_px)
    w = h * w_px / h_px
    ax = pages.fig.add_axes(
        (
            (_MARGIN + (pages.width - w) / 2) / PAGE[0],
            1 - (pages.y + h) / PAGE[1],
            w / PAGE[0],
            h / PAGE[1],
        )
    )
    ax.imshow(img, interpolation="none")
    ax.set_axis_off()
    pages.y += h + 0.12
    pages.paragraph(caption)
    return pages.fig
