"""The comparison page of several runs (default ``RUN_A/compare.html``): one row of numbers
per run linking its own page, l(0) of every run in one figure, the figures of the runs one row
per run, the claims matrix and the claims pooled over the runs (``docs/report.md``).

Pooling is not done here: the page shows the section :func:`pooled_claims` or
:func:`not_pooled` made of what :mod:`steplines.analysis.pooled` returned. This module never
imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from steplines.plotting import plot_compare, plot_rows
from steplines.plotting.pages import Heading, Table, image_page, text_pages
from steplines.report.data import RunData
from steplines.report.figures import FIGURES, PageFigure
from steplines.report.numbers import fmt, pct
from steplines.report.page import draw_all, env, publish, rel
from steplines.report.pooled import min_units_note, pooled_rows
from steplines.report.sections import claim_rows, problem_label
from steplines.report.templates import COMPARE_TEMPLATE

__all__ = ["build_compare_page", "claims_matrix", "compare_pages", "not_pooled", "pooled_claims"]

_HEADER = [
    "run",
    "dataset / model",
    "λ",
    "β",
    "lines",
    "final l(0)",
    "fit MAE deg 1 / 2",
    "later-line distance",
    "λ* [IQR]",
    "SGD / SGD λ / PAL / FBPAL (share of optimum)",
]
"""The columns of the runs' table."""

_ROWS = ("lines", "strategies", "fits", "distances", "batch_size")
"""The figures the comparison page sets side by side, one row per run (as the paper's)."""

_L0_TITLE = "Fig. 10 — runs compared"
_L0_CAPTION = (
    "Full-batch training loss l(0) over lines for every run (faint: per line; solid: moving "
    "average over 25 lines). Paper (Fig. 10): a step larger than the locally optimal one "
    "(λ = 0.1 vs ≈ 0.05) can perform better globally."
)


def build_compare_page(
    runs: Sequence[RunData],
    pages: Sequence[Path],
    out: Path,
    formats: Sequence[str] = ("png", "pdf"),
    pooled: dict[str, Any] | None = None,
) -> Path:
    """Write the comparison page of ``runs`` to ``out`` (its figures into ``figures/`` beside
    it), each run linking its own page of ``pages``.

    Args:
        runs: The loaded runs, analysed in one mode (the page names the first run's).
        pages: Each run's own page.
        out: The HTML file.
        formats: Figure files to write; PNG is always written.
        pooled: The claims pooled over the runs (:func:`pooled_claims`, :func:`not_pooled`).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    extra: list[dict[str, str]] = []
    figs_dir = out.parent / "figures"
    figs = draw_all(_compare_figures(runs, out.stem), figs_dir, out.parent, extra, formats)
    banners = [
        {"text": f"{r.name}: {b['text']}"} for r in runs for b in r.banners if b["level"] == "error"
    ]
    values = {
        "runs": [_run_row(run, page, out) for run, page in zip(runs, pages)],
        "header": _HEADER,
        "mode": runs[0].mode,
        "banners": banners + extra,
        "figures": figs,
        "claims": claims_matrix(runs),
        "pooled": pooled,
    }
    html = (
        env()
        .from_string(COMPARE_TEMPLATE)
        .render(**values, book=rel(out.with_suffix(".pdf"), out.parent) if "pdf" in formats else "")
    )
    publish(out, html, compare_pages(values, out.parent) if "pdf" in formats else None)
    return out


def compare_pages(values: dict[str, Any], page_dir: Path) -> list[Figure]:
    """The pages of ``compare.pdf``: the runs' table, the claims of every run, the claims pooled
    over them, then one page per figure with its title and caption."""
    v, pooled = values, values["pooled"] or {}
    names = v["claims"]["runs"]
    blocks: list[Any] = [
        f"Analysis mode: {v['mode']}.",
        *(f"Note: {b['text']}" for b in v["banners"]),
        Heading("Runs"),
        Table(
            ["run", *v["header"][1:]],
            [[r["name"], *r["cells"]] for r in v["runs"]],
            [0.1] * 10,
        ),
        Heading("Claims of the paper, run by run"),
        Table(
            ["claim", *names],
            [[r["claim"], *(c["verdict"] for c in r["cells"])] for r in v["claims"]["rows"]],
            [0.4] + [0.6 / max(1, len(names))] * len(names),
        ),
        Heading("Claims pooled over the runs"),
    ]
    if pooled.get("rows"):
        blocks.append(
            Table(
                ["claim", "pooled value", "verdict", "reason"],
                [[r["claim"], r["value"], r["verdict"], r["reason"]] for r in pooled["rows"]],
                [0.3, 0.2, 0.13, 0.37],
            )
        )
    blocks.append(pooled.get("note", ""))
    pages = text_pages("steplines — runs compared", [b for b in blocks if b])
    pages += [image_page(page_dir / f["src"], f["title"], f["caption"]) for f in v["figures"]]
    return pages


def _run_row(run: RunData, page: Path, out: Path) -> dict[str, Any]:
    """One run's row of the runs' table: its name linking ``page``, then :data:`_HEADER`."""
    s = run.summary
    fits, lam, st = s.get("fits", {}), s.get("lambda_star", {}), s.get("strategies", {})
    lam_name = next((n for n in st if n.startswith("sgd_lambda") and "accum" not in n), "")
    _, l0 = _l0(run)
    return {
        "name": run.name,
        "href": rel(page, out.parent),
        "cells": [
            problem_label(run.config),
            fmt(run.lr),
            fmt(run.momentum),
            f"{s.get('lines_used')} / {s.get('lines_total')}",
            fmt(l0[-1]) if l0.size else "—",
            f"{fmt(fits.get('mean_mae_degree_1'))} / {fmt(fits.get('mean_mae_degree_2'))}",
            fmt(s.get("distances", {}).get("later_median")),
            f"{fmt(lam.get('median'))} [{fmt(lam.get('q25'))}–{fmt(lam.get('q75'))}]",
            " / ".join(
                pct(st.get(n, {}).get("share_of_optimum"))
                for n in ("sgd", lam_name, "pal", "fbpal")
            ),
        ],
    }


def _l0(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    d = run.derivatives.sort_values("line")
    return d.line.to_numpy(), d.l0.to_numpy(float)


def _compare_figures(runs: Sequence[RunData], stem: str) -> list[PageFigure]:
    """l(0) of every run in one figure, then the figures of :data:`_ROWS`, one row per run."""
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for run in runs:
        label = f"{run.name} (λ = {fmt(run.lr)}, β = {fmt(run.momentum)})"
        curves[label if label not in curves else f"{label} [{len(curves)}]"] = _l0(run)
    row_labels = [
        f"{r.name}: {problem_label(r.config)}, λ = {fmt(r.lr)}, β = {fmt(r.momentum)}" for r in runs
    ]
    return [
        PageFigure(f"{stem}_l0", _L0_TITLE, _L0_CAPTION, lambda: plot_compare(curves)),
        *_row_figures(runs, stem, row_labels),
    ]


def _row_figures(runs: Sequence[RunData], stem: str, labels: Sequence[str]) -> list[PageFigure]:
    out = []
    for spec in (s for s in FIGURES if s.name in _ROWS):
        images = [run.figures / f"{spec.name}.png" for run in runs]
        if all(p.is_file() for p in images):
            out.append(
                PageFigure(
                    f"{stem}_{spec.name}",
                    f"{spec.title}, one row per run",
                    "The figure of each run's report, one row per run, as the paper sets its "
                    "settings one above the other.",
                    functools.partial(plot_rows, images, labels),
                )
            )
    return out


def claims_matrix(runs: Sequence[RunData]) -> dict[str, Any]:
    """The claims table of several runs: one row per claim, one column per run.

    Returns:
        ``{"runs": [names], "rows": [{"claim": text, "cells": [{"verdict", "css", "value"}]}]}``.
    """
    per_run = [{r["key"]: r for r in claim_rows(run)} for run in runs]
    keys = list(dict.fromkeys(k for rows in per_run for k in rows))
    rows = []
    for key in keys:
        first = next(rows[key] for rows in per_run if key in rows)
        cells = []
        for rows_ in per_run:
            r = rows_.get(key)
            cells.append(
                {"verdict": r["verdict"], "css": r["css"], "value": f"{r['value']} ({r['n']})"}
                if r
                else {"verdict": "—", "css": "", "value": "not analysed"}
            )
        rows.append({"claim": first["claim"], "threshold": first["threshold"], "cells": cells})
    return {"runs": [run.name for run in runs], "rows": rows}


def pooled_claims(
    claims: Sequence[dict[str, Any]], runs: Sequence[str], note: str
) -> dict[str, Any]:
    """The section of the claims pooled over ``runs``: ``{"rows", "runs", "note"}``
    (``note``: how many claims were judged at which level)."""
    return {"rows": pooled_rows(claims), "runs": list(runs), "note": f"{note} {min_units_note()}"}


def not_pooled(why: str) -> dict[str, Any]:
    """The section when the claims are not pooled, saying why (``why`` ends without a dot)."""
    return {"rows": [], "runs": [], "note": f"Not pooled: {why}."}
