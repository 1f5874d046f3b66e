"""Build the static HTML report of one or several runs (``docs/report.md``).

:func:`build_report` analyses a run when its tables are missing or stale, draws every figure
into ``RUN/figures/`` (PNG for the page, PDF for papers) and renders ``RUN/report.html`` with the
core results beside the paper's numbers. Several runs: every run gets its own report, and one
comparison page links them (default ``RUN_A/compare.html``). This module never imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from steplines.analysis import analyze_run
from steplines.analysis.claims import family_note
from steplines.analysis.lines import lines_missing, scheduled_lines
from steplines.analysis.pooled import pool_runs, rejudge, setup_differences
from steplines.analysis.settings import AnalysisRequest, match_preset
from steplines.analysis.tables import AnalysisTables, TablesError
from steplines.analysis.views import LineView
from steplines.atomic import temporary_path, write_atomic
from steplines.errors import RunDirError, SteplinesError
from steplines.locks import held_locks
from steplines.plotting import (
    STRATEGY_ORDER,
    plot_compare,
    plot_rows,
    save_figure,
    strategy_label,
)
from steplines.plotting.estimators import plot_estimators
from steplines.report.figures import FIGURES
from steplines.report.numbers import fmt, overshoot, pct, read_json, span
from steplines.report.paper import paper_values
from steplines.report.pooled import claim_quantity, min_units_note, pooled_rows
from steplines.report.templates import COMPARE_TEMPLATE, RUN_TEMPLATE
from steplines.store import LineStore
from steplines.store.run import PRECISION_CHECKS, RunLayout

if TYPE_CHECKING:
    from steplines.config import RunConfig

__all__ = [
    "RunData",
    "build_report",
    "build_run_report",
    "claim_rows",
    "claims_matrix",
    "claims_note",
    "claims_text",
    "core_results",
    "load_run",
    "pooled_section",
    "with_family",
]

# ------------------------------------------------------------------------------ loading


@dataclass
class RunData:
    """Everything the report of one run draws from.

    Attributes:
        path: The run directory.
        config: The run's configuration (None without a ``config.toml``).
        provenance: ``provenance.json`` as a dict ({} if absent).
        summary: ``analysis/summary.json``.
        strategies, fits, derivatives, batch_size: The analysis tables.
        distances: The arrays of ``analysis/distances.npz``.
        banners: Problems found while loading (shown at the top of the page).
        estimators: ``analysis/estimators.csv``, or None when the analysis predates it.
        claims: ``analysis/claims.json``: one record per claim of the paper.
        training: ``analysis/training.csv`` (l(0), validation loss at 0, batch loss per line).
        views: The representative lines of ``analysis/views.npz``.
        tables: The directory the tables were read from (``RUN/analysis`` or
            ``RUN/analysis-<tag>`` for a non-default mode, scale or override).
    """

    path: Path
    config: RunConfig | None
    provenance: dict[str, Any]
    summary: dict[str, Any]
    strategies: pd.DataFrame
    fits: pd.DataFrame
    derivatives: pd.DataFrame
    batch_size: pd.DataFrame
    distances: dict[str, np.ndarray]
    banners: list[dict[str, str]] = field(default_factory=list)
    estimators: pd.DataFrame | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    tables: Path | None = None
    training: pd.DataFrame | None = None
    views: list[LineView] = field(default_factory=list)

    @property
    def layout(self) -> RunLayout:
        """The run directory's paths."""
        return RunLayout(self.path)

    @property
    def analysis(self) -> Path:
        """The directory of the tables: :attr:`tables`, else ``RUN/analysis``."""
        return self.tables or self.layout.analysis_dir()

    @property
    def figures(self) -> Path:
        """Where this analysis' figures go: ``RUN/figures`` (default) or beside its tables."""
        return self.layout.figures_dir(self.tables)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def momentum(self) -> float:
        """β used by the analysis."""
        return float(self.summary.get("momentum") or 0.0)

    @property
    def lr(self) -> float | None:
        """The run's (median) learning rate."""
        lr = self.derivatives["lr"].to_numpy(float) if "lr" in self.derivatives else []
        lr = np.asarray(lr)[np.isfinite(lr)]
        return float(np.median(lr)) if lr.size else None


def _read_tables(adir: Path) -> dict[str, Any]:
    """Every table of an analysis directory the report reads (raises on a damaged one)."""
    t = AnalysisTables.read(adir)
    return {
        "summary": t.summary,
        "tables": {
            name: getattr(t, name) for name in ("strategies", "fits", "derivatives", "batch_size")
        },
        "distances": t.distances,
        "estimators": t.estimators,
        "claims": t.claims,
        "training": t.training,
        "views": t.views,
    }


def load_run(
    run_dir: Path, request: AnalysisRequest | None = None, reanalyze: bool | None = None
) -> RunData:
    """Analyse ``run_dir`` if needed and load its tables.

    Args:
        run_dir: A run directory.
        mode: Analysis mode (``corrected`` or ``faithful``).
        reanalyze: True: always analyse; False: never (the tables must exist); None: when a
            table is missing, was made in another mode, or is older than the line store.
        options: ``scale``, ``window``, ``lambdas``, ``mu`` of
            :func:`steplines.analysis.analyze_run`. An analysis other than the run's default
            is read from (and written to) ``RUN/analysis-<tag>/``, never ``RUN/analysis/``.

    Raises:
        RunDirError: The directory does not exist, has no line store and no tables, has no
            measured line, or its store has another schema version.
        ConfigError: Unknown ``mode``.
    """
    request = request or AnalysisRequest()
    mode = request.mode
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass a run directory")
    banners: list[dict[str, str]] = []
    layout = RunLayout(run_dir)
    store = layout.lines_path
    adir = layout.analysis_dir(request.tag(layout.config_or_none()))
    if reanalyze is None:
        reanalyze = not AnalysisTables.is_current(adir, run_dir, mode)
        may_rebuild = True
    else:
        may_rebuild = False
    if reanalyze:
        if not store.is_dir():
            raise RunDirError(
                f"{run_dir} has no {store.name} and no complete {adir.name}/ tables in mode "
                f"{mode}; pass a run directory made by 'steplines run'"
            )
        analyze_run(run_dir, request)
    elif not store.is_dir():
        banners.append(
            _banner(f"{store.name} is missing: figures that need the raw lines are left out.")
        )
    try:
        t = _read_tables(adir)
    except TablesError:
        if reanalyze or not may_rebuild or not store.is_dir():
            raise
        analyze_run(run_dir, request)  # derived files: rebuilt from the store
        t = _read_tables(adir)
    summary, tables, distances = t["summary"], t["tables"], t["distances"]
    estimators, claims, training, views = t["estimators"], t["claims"], t["training"], t["views"]
    config = layout.config_or_none()
    if config is None:
        banners.append(
            _banner(
                f"{layout.config_path.name} is missing: what was run is unknown; β was "
                f"{summary.get('momentum_source', 'inferred')} as {summary.get('momentum')}."
            )
        )
    prov_path = layout.provenance_path
    provenance: dict[str, Any] = {}
    if prov_path.is_file():
        try:
            provenance = read_json(prov_path)
        except RunDirError as exc:
            banners.append(_banner(str(exc)))
    else:
        banners.append(_banner(f"{prov_path.name} is missing: versions and device are unknown."))
    if busy := held_locks(run_dir):
        banners.append(
            _banner(
                f"This run is being measured right now ({', '.join(busy)} held): the page shows "
                "the lines finished so far; build the report again when the run has ended."
            )
        )
    missing, total = _missing_lines(layout, config, summary)
    used = int(summary.get("lines_used") or 0)
    if missing:
        banners.append(
            _banner(
                f"{missing} of {total} lines are not measured (not done): every number and "
                f"figure covers the {used} measured lines only. Measure the rest with "
                + (
                    "your training loop and the same LineProbe settings (it measures only "
                    "the missing lines)"
                    if config is not None and config.probe is not None
                    else "'steplines measure RUN'"
                )
                + " and rebuild the report.",
                "error",
            )
        )
    if used < 50:
        banners.append(
            _banner(
                f"Only {used} lines: the 25-line moving averages and the 'later lines' "
                "statistics (the paper starts them at line 50 of 10 000) are rough."
            )
        )
    if summary.get("momentum_source") == "inferred":
        banners.append(
            _banner(f"β inferred from the store as {summary.get('momentum')} (no config value).")
        )
    return RunData(
        path=run_dir,
        config=config,
        provenance=provenance,
        summary=summary,
        strategies=tables["strategies"],
        fits=tables["fits"],
        derivatives=tables["derivatives"],
        batch_size=tables["batch_size"],
        distances=distances,
        banners=banners,
        estimators=estimators,
        claims=claims if isinstance(claims, list) else [],
        tables=adir,
        training=training,
        views=views,
    )


def _banner(text: str, level: str = "warning") -> dict[str, str]:
    return {"text": text, "level": level}


# ------------------------------------------------------------------------------ numbers


def _max_mae(fits: pd.DataFrame, degree: int) -> float | None:
    v = fits.loc[fits.degree == degree, "mae"].to_numpy(float)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else None


def core_results(run: RunData) -> list[dict[str, str]]:
    """The rows of the core-results table: ``key``, ``quantity``, ``ours``, ``paper``.

    Numbers come from ``summary.json`` (plus the SGD overshoot and the fit maxima from
    ``derivatives.csv``/``fits.csv``). ``paper`` is filled for runs matching a paper preset.
    """
    s = run.summary
    _, paper = paper_values(match_preset(run.config))
    rows: list[dict[str, str]] = []

    def add(key: str, quantity: str, ours: str, paper_key: str | None = None) -> None:
        rows.append(
            {
                "key": key,
                "quantity": quantity,
                "ours": ours,
                "paper": paper.get(paper_key or key, ""),
            }
        )

    add(
        "lines",
        "lines analysed (measured / total)",
        f"{s.get('lines_used')} / {s.get('lines_total')}",
    )
    fits = s.get("fits", {})
    over = fits.get("lines", "all lines")
    for deg in (1, 2):
        add(
            f"fit_{deg}",
            f"MAE of the degree-{deg} fit on ±{fmt(fits.get('window'))}, mean over {over} (max)",
            f"{fmt(fits.get(f'mean_mae_degree_{deg}'))} ({fmt(_max_mae(run.fits, deg))})",
        )
    m1, m2 = fits.get("mean_mae_degree_1"), fits.get("mean_mae_degree_2")
    if m1 and m2:
        add("fit_ratio", "degree-1 / degree-2 mean MAE", f"{fmt(m1 / m2)}×")
    dist = s.get("distances", {})
    later_idx = dist.get("later_from_line_index")
    add(
        "dist_first", "median distance between the first lines (MAE)", fmt(dist.get("first_median"))
    )
    add(
        "dist_later",
        f"median distance between later lines (from the {_ordinal(later_idx)} line on) (max)",
        f"{fmt(dist.get('later_median'))} ({fmt(dist.get('later_max'))})",
    )
    add(
        "dist_consecutive",
        "median distance of consecutive lines: all / later",
        f"{fmt(dist.get('consecutive_median'))} / {fmt(dist.get('consecutive_median_later'))}",
    )
    lam = s.get("lambda_star", {})
    add(
        "lambda_star",
        "λ* = median s_opt/‖g_t‖ [IQR]; first → second half median (slope per line)",
        f"{fmt(lam.get('median'))} [{fmt(lam.get('q25'))}–{fmt(lam.get('q75'))}]; "
        f"{fmt(lam.get('first_half_median'))} → {fmt(lam.get('second_half_median'))} "
        f"({fmt(lam.get('slope_per_line'), 2)})",
    )
    ratios = s.get("ratios", {})
    if "s_opt_over_minus_accumulated_delta" in ratios:
        acc = ratios["s_opt_over_minus_accumulated_delta"]
        upd = ratios.get("s_opt_over_direction_norm", {})
        add(
            "lambda_star_momentum",
            "β > 0: median s_opt/(−D_t) [IQR]; median s_opt/‖m_t‖; flatter reading",
            f"{fmt(acc.get('median'))} [{fmt(acc.get('q25'))}–{fmt(acc.get('q75'))}]; "
            f"{fmt(upd.get('median'))}; {s.get('momentum_ratio_flatter') or '—'}",
        )
    reading = s.get("momentum_sgd_lambda_over_sgd_step")
    if reading:
        add(
            "sgd_lambda_reading",
            "β > 0: median SGD λ step / SGD original step, −λ·δ_B vs −λ·D_t",
            "; ".join(f"{strategy_label(k)}: {fmt(v)}" for k, v in reading.items()),
        )
    rates = s.get("rates") or {}
    if rates:
        add(
            "rates",
            "learning rate: as trained; λ* in-sample; λ* out-of-sample at the last line",
            f"{fmt(rates.get('trained'))}; {fmt(rates.get('lambda_star_in'))}"
            f"{span(rates, 'lambda_star_in')}; {fmt(rates.get('lambda_star_out_last'))}",
            "lambda_star",
        )
    add(
        "sgd_overshoot",
        f"step as trained / s_opt (median; λ = {fmt(run.lr)})",
        f"{fmt(overshoot(run.derivatives))}×",
    )
    opt = s.get("strategies", {}).get("optimal", {})
    for name, st in _ordered(s.get("strategies", {})):
        key = "strategy:sgd_lambda" if name.startswith("sgd_lambda") else f"strategy:{name}"
        ours = (
            f"{fmt(st.get('accumulated_improvement'))}{span(st, 'accumulated_improvement')} "
            f"({pct(st.get('share_of_optimum'))}{span(st, 'share_of_optimum', pct)}); "
            f"Σ|distance| {fmt(st.get('accumulated_abs_distance'))}"
        )
        label = strategy_label(name, run.lr, s.get("mu", 0.1), rates.get("lambda_star_in"))
        add(
            f"strategy:{name}",
            f"accumulated improvement of {label} (share of the optimum's)",
            ours if name != "optimal" else f"{fmt(opt.get('accumulated_improvement'))} (100 %)",
            key,
        )
    bs = s.get("batch_size", {})
    ref = bs.get("reference_batch_size")
    for key, r in bs.get("delta_ratio", {}).items():
        label = f"bs {key}" if key != "full" else f"full batch ({r.get('batch_size')} rows)"
        add(
            f"delta_ratio:{key}",
            f"δ ratio {label} / bs {ref}: median (expected {ref}/bs)",
            f"{fmt(r.get('median_ratio'))} ({fmt(r.get('expected_ratio'))})",
            "delta_ratio",
        )
    # the paper's text for a group is shown once, on its first row
    seen: set[str] = set()
    for row in rows:
        if row["paper"] and row["paper"] in seen:
            row["paper"] = "(as above)"
        seen.add(row["paper"])
    return rows


def claim_rows(run: RunData) -> list[dict[str, str]]:
    """Rows of the "Claims" table: each claim of the paper with this run's verdict.

    From ``claims.json`` (:mod:`steplines.analysis.claims`): the claim, its metric, this run's
    value with its 95 % interval, the threshold, the verdict and its reason, the paper's value.
    """
    rows = []
    for c in run.claims:
        value = fmt(c.get("value"))
        if c.get("low") is not None and c.get("high") is not None:
            value += f" [{fmt(c['low'])}, {fmt(c['high'])}]"
        verdict = str(c.get("verdict", "inconclusive"))
        rows.append(
            {
                "key": str(c.get("key", "")),
                "claim": str(c.get("claim", "")),
                "metric": str(c.get("metric", "")),
                "value": value,
                "threshold": str(c.get("threshold", "")),
                "verdict": verdict,
                "css": verdict.replace(" ", "-"),
                "reason": str(c.get("reason", "")),
                "paper": str(c.get("paper", "")),
                "n": str(c.get("n", "")),
                "quote": str(c.get("quote", "")),
                "figure": str(c.get("figure", "")),
                "quantity": claim_quantity(c),
            }
        )
    return rows


def claims_note(run: RunData) -> str:
    """How many claims were judged at which level (the family), and the minimum units."""
    if not run.claims:
        return ""
    family = str(run.summary.get("claims_family") or "none")
    level = float((run.summary.get("bootstrap") or {}).get("level") or 0.95)
    return f"{family_note(run.claims, family, level)} {min_units_note()}"


def claims_text(run: RunData) -> str:
    """The claims as aligned plain text (``steplines analyze`` prints it)."""
    rows = claim_rows(run)
    if not rows:
        return "claims: not analysed (rerun 'steplines analyze RUN')"
    width = max(len(r["key"]) for r in rows)
    lines = ["claims of the paper (verdict: value [interval] vs threshold; reason):"]
    for r in rows:
        why = "" if r["reason"].startswith("the interval") else f"; {r['reason']}"
        if r["verdict"] == "not applicable":
            lines.append(f"  {r['key'].ljust(width)}  {'NOT APPLICABLE':<14}  {r['reason']}")
            continue
        lines.append(
            f"  {r['key'].ljust(width)}  {r['verdict'].upper():<14}  {r['value']} vs "
            f"{r['threshold']}{why}"
        )
    lines.append(claims_note(run))
    return "\n".join(lines)


def _browser_json(run: RunData) -> str:
    """``browser.json`` for embedding in a ``<script>`` element (``""`` when absent)."""
    path = run.analysis / "browser.json"
    if not path.is_file():
        return ""
    text = path.read_text()
    # inside <script>, "</" would end the element: JSON allows the escaped form
    return text.replace("</", "<\\/")


def _interval_note(run: RunData) -> dict[str, str]:
    """``level`` and ``row_note`` of the page's interval notes (from ``summary.bootstrap``)."""
    b = run.summary.get("bootstrap") or {}
    level = f"{100 * float(b.get('level') or 0.95):g} %"
    rows = b.get("row_resamples")
    full = run.config.measure.full_batch if run.config is not None else "epoch"
    if full.startswith("sample:"):
        level += f"; the full batch of every line is a fresh sample of {full[7:]} training rows"
    if rows is None:
        return {"level": level, "row_note": "not computed: these tables predate it"}
    if not rows:
        return {"level": level, "row_note": "switched off: --resamples 0"}
    return {
        "level": level,
        "row_note": f"{rows} resamples of the {b.get('full_batch_rows')} rows per line",
    }


def _settings_line(run: RunData) -> str:
    """One sentence on the analysis' scale and constants."""
    st = run.summary.get("settings") or {}
    s = run.summary
    if not st:
        return ""
    opt = st.get("optimizer") or {}
    name = opt.get("name", "?")
    if st.get("scale") == "run":
        how = (
            f"run scale: the window and µ follow this run's typical step "
            f"s_typ = median |s_opt| = {fmt(st.get('typical_step'))} (w = 2·s_typ, µ = s_typ), "
            "and SGD is compared at the run's own λ* (in- and out-of-sample)"
        )
    else:
        how = "paper scale: the constants of the paper's ResNet-20 run"
    given = st.get("overrides") or []
    lams = ", ".join(fmt(x) for x in s.get("lambdas") or [])
    return (
        f"{how}; window ±{fmt(s.get('window'))}, µ = {fmt(s.get('mu'))}"
        + (f", SGD λ = {lams}" if lams else "")
        + f"; optimizer {name}"
        + (f" (β = {fmt(opt.get('momentum'))})" if opt.get("momentum") else "")
        + (f"; set by you: {', '.join(given)}" if given else "")
        + "."
    )


def _ordinal(i: Any) -> str:
    if i is None:
        return "?"
    n = int(i) + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ordered(strategies: dict[str, Any]) -> list[tuple[str, Any]]:
    def key(item: tuple[str, Any]) -> tuple[int, str]:
        base = "sgd_lambda" if item[0].startswith("sgd_lambda") else item[0]
        return (STRATEGY_ORDER.index(base) if base in STRATEGY_ORDER else 99, item[0])

    return sorted(strategies.items(), key=key)


def _noise_scale_note(run: RunData) -> str:
    """One line on B_simple beside the batch-size table ('' when it was not measured)."""
    est = run.summary.get("estimators") or {}
    if not est.get("noise_scale_measured"):
        return ""
    bs = est.get("b_simple", {})
    return (
        f"Gradient noise scale B_simple = tr Σ/|G|² of the direction batch (McCandlish et al. "
        f"2018; per-sample gradients on {bs.get('n', 0)} lines): median {fmt(bs.get('median'))} "
        f"[{fmt(bs.get('q25'))}, {fmt(bs.get('q75'))}], against the run's batch size "
        f"{est.get('batch_size')}; McCandlish et al. expect little gain from batches much "
        "larger than B_simple. Over training: the estimators section below."
    )


def _bs_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    imp = run.summary.get("batch_size", {}).get("improvement", {})
    if not imp:
        return [], []
    names = sorted({n for v in imp.values() for n in v}, key=lambda n: (n != "sgd", n))
    header = [strategy_label(n, run.lr, run.summary.get("mu", 0.1)) for n in names]
    rows = []
    for bs in sorted(imp, key=int):
        cells = [bs]
        for n in names:
            v = imp[bs].get(n, {})
            cells.append(
                f"{fmt(v.get('accumulated_improvement'))} ({pct(v.get('share_of_optimum'))})"
            )
        rows.append(cells)
    return header, rows


# ------------------------------------------------------------------------------ figures


@dataclass
class _Fig:
    name: str
    title: str
    caption: str
    draw: Callable[[], Figure]


def _missing_lines(
    layout: RunLayout, config: RunConfig | None, summary: dict[str, Any]
) -> tuple[int, int]:
    """``(scheduled but not done, scheduled)`` lines (:func:`analysis.lines.lines_missing`):
    from the store when it is there, else ``summary.json``'s ``lines_missing``/``lines_total``.
    """
    store = layout.lines_path
    if store.is_dir():
        done = LineStore.open(store).done()
        return lines_missing(done, config), int(scheduled_lines(config, done.size).sum())
    return int(summary.get("lines_missing") or 0), int(summary.get("lines_total") or 0)


def _figures(run: RunData, mode: str) -> list[_Fig]:
    """The figures of :data:`steplines.report.figures.FIGURES` this run has the data for."""
    return [
        _Fig(spec.name, spec.title, spec.caption(run), functools.partial(spec.draw, run, mode))
        for spec in FIGURES
        if spec.available(run)
    ]


_EST_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    (
        "Cockpit α",
        "α from a least-squares parabola through l_B(0), l_B(s_u) and the direction-batch "
        "slopes at 0 and s_u (same batch; Schneider et al. 2021) against α_true = "
        "s_u/s_opt − 1 of the measured full-batch line",
        "alpha_error",
        True,
    ),
    (
        "LABPAL-style parabola",
        "PAL's parabola (l(0), l(µ), slope at 0) of the mean of {labpal} mini-batches: its "
        "step against s_opt",
        "labpal_step_ratio",
        False,
    ),
    (
        "LABPAL-style curvature",
        "its a against a of the degree-2 fit of the full-batch line",
        "labpal_a_rel_error",
        False,
    ),
    (
        "Armijo backtracking (SLS)",
        "first step with l_B(s) ≤ l_B(0) + c·s·g·d on the measured direction-batch line "
        "(c = {c:g}, β = {beta:g}, SLS's reset γ = {gamma:g}; Vaswani et al. 2019) against s_opt",
        "armijo_step_ratio",
        False,
    ),
    (
        "directional curvature",
        "dᵀH_B d by a Hessian-vector product at θ_t against 2a of the full-batch degree-2 fit",
        "curvature_rel_error",
        True,
    ),
)


def _estimator_section(run: RunData) -> dict[str, Any]:
    """Numbers of the section "Cheap estimators against the measured line" (never fails)."""
    intro = (
        "What a practitioner could have estimated cheaply during training, set against the "
        "measured full-batch line of each step (formulas and variants: docs/analysis.md). "
        "Errors: α as a difference, steps as ratios to s_opt (1 = exact), curvatures as "
        "relative errors (0 = exact)."
    )
    est = run.summary.get("estimators")
    if not est:
        return {
            "intro": intro,
            "note": "Not analysed: these tables predate the estimator analysis; run "
            "'steplines analyze RUN' with the line store present.",
            "rows": [],
            "figure": None,
        }
    measured = bool(est.get("measured"))
    errors = est.get("errors", {})
    arm = est.get("armijo", {})
    rows = []
    for name, what, col, needs_inputs in _EST_ROWS:
        q = errors.get(col, {})
        if needs_inputs and not measured:
            error, n = "not measured", "0"
        else:
            error = f"{fmt(q.get('median'))} [{fmt(q.get('q25'))}, {fmt(q.get('q75'))}]"
            n = str(q.get("n", 0))
        what = what.format(
            labpal=est.get("labpal_batches", "?"),
            c=float(arm.get("c", 0.1)),
            beta=float(arm.get("beta", 0.9)),
            gamma=float(arm.get("gamma", 2.0)),
        )
        rows.append({"name": name, "what": what, "error": error, "n": n})
    bs = est.get("b_simple", {})
    b = est.get("batch_size")
    if est.get("noise_scale_measured"):
        naive = est.get("b_simple_naive", {})
        b_err = (
            f"{fmt(bs.get('median'))} [{fmt(bs.get('q25'))}, {fmt(bs.get('q75'))}] "
            f"(plug-in tr Σ/|G_B|²: {fmt(naive.get('median'))})"
        )
        b_n = str(bs.get("n", 0))
    else:
        b_err, b_n = "not measured", "0"
    rows.append(
        {
            "name": "gradient noise scale B_simple",
            "what": "tr Σ/|G|² from per-sample gradients of the direction batch (McCandlish et "
            f"al. 2018), a value, not an error; the run's batch size is {b}: next to the "
            "batch-size table above",
            "error": b_err,
            "n": b_n,
        }
    )
    note = ""
    if not measured:
        note = (
            "Not measured: this line store has no estimator inputs (made with store schema "
            "version 1 or with measure.estimators = false), so Cockpit α, dᵀHd and B_simple "
            "are not available; the LABPAL-style parabola and the Armijo step need only the "
            "stored line and are shown."
        )
    return {"intro": intro, "note": note, "rows": rows, "figure": None, "measured": measured}


def _num(x: Any) -> float | None:
    """A finite float, else None (records are read from a file a user may have edited)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _worst(records: list[dict[str, Any]], key: str) -> str:
    values = [v for r in records if (v := _num(r.get(key))) is not None]
    return fmt(max(values)) if values else "—"


def read_precision_checks(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``RUN/precision_checks.jsonl`` and the number of unreadable lines."""
    try:
        text = RunLayout(run_dir).precision_checks_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return [], 0
    records, bad = [], 0
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _precision_section(run: RunData) -> dict[str, Any] | None:
    """The paragraph "Measurement precision" (never fails); None for a plain fp32 run.

    Per precision: the checks of ``RUN/precision_checks.jsonl`` (a line measured again in
    fp32) and the worst of each error over them: per-sample max |Δℓ|, full-batch max |ΔL| and
    the shift of the full-batch minimum |Δs_min|.
    """
    measure = run.config.measure if run.config is not None else None
    precision = measure.precision if measure is not None else "fp32"
    records, bad = read_precision_checks(run.path)
    if not records and not bad and precision == "fp32":
        return None
    every = measure.precision_check_every if measure is not None else "?"
    intro = (
        f"The lines were measured in {precision} (measure.precision; fp32 is the default and "
        f"the oracle). The first line of each measuring process, then one in every {every} "
        "lines, was measured again in fp32 on the same positions and batches; worst differences "
        f"over these checks ({PRECISION_CHECKS}): per-sample losses, full-batch (mean "
        "training) loss, and the position of the full-batch minimum on the grid."
    )
    rows = []
    for p in sorted({str(r.get("precision", "?")) for r in records}):
        mine = [r for r in records if str(r.get("precision", "?")) == p]
        rows.append(
            {
                "precision": p,
                "checks": str(len(mine)),
                "per_sample": _worst(mine, "per_sample_max"),
                "full_batch": _worst(mine, "full_batch_max"),
                "s_min": _worst(mine, "s_min_diff"),
            }
        )
    note = ""
    if not records:
        note = f"No precision check is recorded ({PRECISION_CHECKS} is missing or empty)."
    if bad:
        note = f"{bad} line(s) of {PRECISION_CHECKS} could not be read and are left out. {note}"
    return {"intro": intro, "rows": rows, "note": note.strip()}


def _estimator_figure(run: RunData) -> _Fig | None:
    if run.estimators is None or run.estimators.empty:
        return None
    b = (run.summary.get("estimators") or {}).get("batch_size")
    return _Fig(
        "estimators",
        "Cheap estimators against the measured line",
        "Top: each estimator's error at every line (grey), its rolling median and 25–75 % "
        "band; dashed: no error (B_simple: the run's batch size). Bottom: distribution over "
        "all lines (red: median). Panels without data say 'not measured'.",
        lambda: plot_estimators(run.estimators, batch_size=b),
    )


def _draw_all(
    figs: Sequence[_Fig],
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
            banners.append(_banner(f"{f.title} not drawn: {exc}"))
            continue
        except Exception as exc:  # a figure must never break the page
            banners.append(_banner(f"{f.title} not drawn ({type(exc).__name__}: {exc})."))
            continue
        out.append(
            {
                "name": f.name,
                "title": f.title,
                "caption": f.caption,
                "src": _rel(paths["png"], page_dir),
                "pdf": _rel(paths["pdf"], page_dir) if "pdf" in paths else "",
            }
        )
    return out


def _problem_label(config: RunConfig | None) -> str:
    """``data / model`` of a run; a LineProbe run names the user's model and optimizer."""
    if config is None:
        return "? / ?"
    if probe := config.probe:
        opt = f" ({probe.optimizer})" if probe.optimizer else ""
        return f"{probe.data} / {probe.model}{opt}"
    if config.problem.factory:
        return config.problem.factory
    return f"{config.problem.dataset} / {config.problem.model}"


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


# ------------------------------------------------------------------------------ pages


def _meta(run: RunData) -> list[tuple[str, list[tuple[str, str]]]]:
    p = run.provenance
    # the resolved configuration as config.toml holds it (None values are not written)
    c = run.config.model_dump(mode="json", exclude_none=True) if run.config is not None else {}
    prob, train, meas = c.get("problem", {}), c.get("train", {}), c.get("measure", {})

    def rows(table: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
        return [(k, str(table[k])) for k in keys if k in table]

    out = []
    if prob:
        keys = ("dataset", "model", "factory", "train_size", "val_size", "batch_size")
        out.append(("problem", rows(prob, keys)))
    if probe := c.get("probe"):
        out.append(
            ("your own loop (LineProbe)", rows(probe, ("model", "optimizer", "schedule", "data")))
        )
    if train:
        out.append(
            (
                "training",
                rows(train, ("optimizer", "lr", "momentum", "weight_decay", "steps", "seed")),
            )
        )
    if meas:
        out.append(
            (
                "measurement",
                rows(
                    meas,
                    (
                        "grid",
                        "interval",
                        "resolution",
                        "full_batch",
                        "batchnorm",
                        "dtype",
                        "precision",
                    ),
                ),
            )
        )
    if p:
        pk = p.get("packages", {})
        dev = p.get("device", {})
        out.append(
            (
                "provenance",
                [
                    ("steplines", str(p.get("steplines", "—"))),
                    ("git commit", str(p.get("git_commit", "—"))[:12]),
                    ("device", ", ".join(f"{k}: {v}" for k, v in dev.items()) or "—"),
                    ("torch", str(pk.get("torch", "—"))),
                    ("python", str(p.get("python", "—"))),
                    ("store schema", str(p.get("schema_version", "—"))),
                ],
            )
        )
    s = run.summary
    out.append(
        (
            "analysis",
            [
                ("mode / scale", f"{s.get('mode')} / {s.get('scale', 'paper')}"),
                ("lines", f"{s.get('lines_used')} of {s.get('lines_total')}"),
                ("optimizer", str(s.get("optimizer", "sgd"))),
                ("β (SGD momentum)", f"{s.get('momentum')} ({s.get('momentum_source')})"),
                ("window", f"±{fmt(s.get('window'))}"),
                (
                    "SGD λ / PAL µ",
                    f"{', '.join(fmt(x) for x in s.get('lambdas') or []) or '—'} / "
                    f"{fmt(s.get('mu'))}",
                ),
                (
                    "full batch rows",
                    f"{s.get('full_batch_rows_metrics')} (metrics), "
                    f"{s.get('full_batch_rows_shape')} (shape)",
                ),
            ],
        )
    )
    return out


def _env() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("steplines")
    except Exception:  # pragma: no cover - not installed
        return "?"


def build_run_report(
    run: RunData, out: Path, mode: str, formats: Sequence[str] = ("png", "pdf")
) -> Path:
    """Draw the figures of ``run`` into ``RUN/figures/`` and write its page to ``out``.

    Args:
        run: The loaded run (:func:`load_run`).
        out: The HTML file.
        mode: Analysis mode (figure smoothing follows it).
        formats: Figure files to write; PNG is always written (the page shows it).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    banners = list(run.banners)
    with _book(out, formats) as book:
        figures = _draw_all(_figures(run, mode), run.figures, out.parent, banners, formats, book)
        est = _estimator_section(run)
        est_fig = _estimator_figure(run)
        if est_fig is not None:
            drawn = _draw_all([est_fig], run.figures, out.parent, banners, formats, book)
            est["figure"] = drawn[0] if drawn else None
    title, _ = paper_values(match_preset(run.config))
    paper_note = (
        "Paper column: docs/method.md §7; the supplementary numbers were read off the "
        "paper's plots "
        "(≈). The paper's runs have 10 000 lines; runs of another length are not directly "
        "comparable."
        if title
        else "This run matches none of the paper's settings (CIFAR-10 with ResNet-20, "
        "ResNet-18 or MobileNetV2, β 0 or 0.9), so there is no paper column; the figure "
        "captions quote the paper's ResNet-20 findings for orientation."
    )
    bs_header, bs_rows = _bs_table(run)
    html = (
        _env()
        .from_string(RUN_TEMPLATE)
        .render(
            name=run.name,
            mode=run.summary.get("mode", mode),
            lines_used=run.summary.get("lines_used"),
            lines_total=run.summary.get("lines_total"),
            banners=banners,
            meta=_meta(run),
            core=core_results(run),
            claims=claim_rows(run),
            claims_note=claims_note(run),
            settings_line=_settings_line(run),
            **_interval_note(run),
            paper_title=title,
            paper_note=paper_note,
            bs_strategies=bs_header,
            bs_table=bs_rows,
            bs_note=_noise_scale_note(run),
            figures=figures,
            est=est,
            precision=_precision_section(run),
            book=_rel(out.with_suffix(".pdf"), out.parent) if "pdf" in formats else "",
            browser=_browser_json(run),
            version=_version(),
        )
    )
    write_atomic(out, html)  # a reader (or a killed report) never leaves half a page
    return out


@contextlib.contextmanager
def _book(page: Path, formats: Sequence[str]) -> Iterator[PdfPages | None]:
    """``<page>.pdf``, every figure of the page in one PDF (only when PDFs are written).

    Written under a temporary name and renamed at the end, so a reader never sees half a book.
    """
    if "pdf" not in formats:
        yield None
        return
    target = page.with_suffix(".pdf")
    tmp = temporary_path(target)  # per process; a killed one's is removed here
    with PdfPages(tmp, metadata={"CreationDate": None}) as book:
        yield book
    os.replace(tmp, target)


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


_ROWS = ("lines", "strategies", "fits", "distances", "batch_size")
"""The figures the comparison page sets side by side, one row per run (as the paper's)."""


def _row_figures(runs: Sequence[RunData], stem: str, labels: Sequence[str]) -> list[_Fig]:
    out = []
    for spec in (s for s in FIGURES if s.name in _ROWS):
        images = [run.figures / f"{spec.name}.png" for run in runs]
        if all(p.is_file() for p in images):
            out.append(
                _Fig(
                    f"{stem}_{spec.name}",
                    f"{spec.title}, one row per run",
                    "The figure of each run's report, one row per run, as the paper sets its "
                    "settings one above the other.",
                    functools.partial(plot_rows, images, labels),
                )
            )
    return out


def _l0(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    d = run.derivatives.sort_values("line")
    return d.line.to_numpy(), d.l0.to_numpy(float)


def _compare_page(
    runs: Sequence[RunData],
    pages: Sequence[Path],
    out: Path,
    mode: str,
    formats: Sequence[str] = ("png", "pdf"),
    pooled: dict[str, Any] | None = None,
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [
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
    rows = []
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for run, page in zip(runs, pages):
        s = run.summary
        fits, lam, st = s.get("fits", {}), s.get("lambda_star", {}), s.get("strategies", {})
        lam_name = next((n for n in st if n.startswith("sgd_lambda") and "accum" not in n), "")
        lines, l0 = _l0(run)
        rows.append(
            {
                "name": run.name,
                "href": _rel(page, out.parent),
                "cells": [
                    _problem_label(run.config),
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
        )
        label = f"{run.name} (λ = {fmt(run.lr)}, β = {fmt(run.momentum)})"
        labels[label if label not in labels else f"{label} [{len(labels)}]"] = (lines, l0)
    banners = [
        {"text": f"{r.name}: {b['text']}"} for r in runs for b in r.banners if b["level"] == "error"
    ]
    fig = _Fig(
        "compare",
        "Fig. 10 — runs compared",
        "Full-batch training loss l(0) over lines for every run (faint: per line; solid: moving "
        "average over 25 lines). Paper (Fig. 10): a step larger than the locally optimal one "
        "(λ = 0.1 vs ≈ 0.05) can perform better globally.",
        lambda: plot_compare(labels),
    )
    extra: list[dict[str, str]] = []
    stem = out.stem
    row_labels = [
        f"{r.name}: {_problem_label(r.config)}, λ = {fmt(r.lr)}, β = {fmt(r.momentum)}"
        for r in runs
    ]
    with _book(out, formats) as book:
        figs = _draw_all(
            [
                _Fig(f"{stem}_l0", fig.title, fig.caption, fig.draw),
                *_row_figures(runs, stem, row_labels),
            ],
            out.parent / "figures",
            out.parent,
            extra,
            formats,
            book,
        )
    html = (
        _env()
        .from_string(COMPARE_TEMPLATE)
        .render(
            runs=rows,
            header=header,
            mode=mode,
            banners=banners + extra,
            figures=figs,
            claims=claims_matrix(runs),
            pooled=pooled,
            book=_rel(out.with_suffix(".pdf"), out.parent) if "pdf" in formats else "",
        )
    )
    write_atomic(out, html)  # a reader (or a killed report) never leaves half a page
    return out


def _page(run: RunData) -> Path:
    """``RUN/report.html`` for the default analysis, else beside its tables."""
    return run.layout.report_path(run.tables)


def build_report(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    request: AnalysisRequest | None = None,
    *,
    formats: Sequence[str] = ("png", "pdf"),
) -> Path:
    """Analyse (when needed), draw every figure and write the HTML report.

    Args:
        run_dirs: One or more run directories. Each gets ``RUN/figures/`` and
            ``RUN/report.html``.
        out: The page to return. One run: where its report goes (default
            ``RUN/report.html``). Several runs: the comparison page (default
            ``RUN_A/compare.html``, in the first run's directory); each run's own report
            stays at ``RUN/report.html``.
        mode: Analysis mode, ``corrected`` (default) or ``faithful``. Tables made in the other
            mode, missing, or older than the line store are recomputed.
        formats: Figure files written to ``RUN/figures/`` (PNG always: the page shows it).
        family: How the claims' verdicts are read together (``none``, ``bonferroni``,
            ``holm``). Several runs of one setup (seeds): the comparison page also shows the
            claims pooled over them, with each run's verdict.
        options: ``scale``, ``window``, ``lambdas``, ``mu`` (:func:`load_run`). Any analysis
            but the run's default keeps its tables, figures and (default) page in
            ``RUN/analysis-<tag>/``, so it never replaces the default report.

    Returns:
        The path of the HTML page (the run's report, or the comparison page).

    Raises:
        RunDirError: A run directory is missing, has no measured line, or has another
            store schema version (one-line message).
        ConfigError: Unknown ``mode``.
    """
    request = request or AnalysisRequest()
    mode, family = request.mode, request.family
    dirs = [Path(p) for p in run_dirs]
    if not dirs:
        raise RunDirError("no run directory given; pass at least one RUN")
    runs = [with_family(load_run(p, request), family) for p in dirs]
    if len(runs) == 1:
        target = Path(out) if out is not None else _page(runs[0])
        return build_run_report(runs[0], target, mode, formats)
    pages = [build_run_report(run, _page(run), mode, formats) for run in runs]
    target = Path(out) if out is not None else RunLayout(dirs[0]).compare_path
    pooled = pooled_section(dirs, request)
    return _compare_page(runs, pages, target, mode, formats, pooled=pooled)


def with_family(run: RunData, family: str) -> RunData:
    """``run`` with its claims judged by ``family`` (from its ``claim_data.npz``) when its
    tables were judged otherwise; ``claims.json`` is left as ``steplines analyze`` wrote it."""
    if family == (run.summary.get("claims_family") or "none") or not run.claims:
        return run
    run.claims = rejudge(AnalysisTables.read(run.analysis), family)
    run.summary = {**run.summary, "claims_family": family}
    return run


def pooled_section(dirs: Sequence[Path], request: AnalysisRequest) -> dict[str, Any]:
    """The claims pooled over ``dirs`` for the comparison page, or why they are not pooled:
    ``{"rows", "runs", "note"}`` (rows empty when not pooled)."""
    try:
        differ = setup_differences(dirs)
    except SteplinesError as exc:
        return {"rows": [], "runs": [], "note": f"Not pooled: {exc}."}
    if differ:
        return {
            "rows": [],
            "runs": [],
            "note": f"Not pooled: the runs are not one setup (their config.toml differ in "
            f"{', '.join(differ)}; only train.seed may differ).",
        }
    try:
        pooled = pool_runs(dirs, request, reanalyze=False)
    except SteplinesError as exc:
        return {"rows": [], "runs": [], "note": f"Not pooled: {exc}."}
    return {
        "rows": pooled_rows(pooled.claims),
        "runs": [r["run"] for r in pooled.summary["runs"]],
        "note": f"{pooled.note} {min_units_note()}",
    }
