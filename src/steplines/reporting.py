"""Build the static HTML report of one or several runs (``docs/report.md``): analyse a run when
its tables are missing or stale, then write its page; for several runs, write every run's page
and one comparison page with the claims pooled over the runs; judge the claims under another
``--family`` than the tables were.

This module decides what is analysed (:func:`steplines.analysis.analyze_run`,
:mod:`steplines.analysis.pooled`); :mod:`steplines.report` draws and writes the pages from the
tables alone. It never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steplines.analysis.pooled import pool_runs, rejudge, setup_differences
from steplines.analysis.run import analyze_run
from steplines.analysis.settings import AnalysisRequest
from steplines.analysis.tables import AnalysisTables, TablesError
from steplines.errors import RunDirError, SteplinesError
from steplines.report.compare import build_compare_page, not_pooled, pooled_claims
from steplines.report.data import RunData
from steplines.report.page import build_run_report
from steplines.store.run import RunLayout

__all__ = ["build_report", "load_run", "pooled_section", "with_family"]


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
        request: What to analyse (default :class:`AnalysisRequest`): its ``mode``
            (``corrected`` or ``faithful``; tables made in the other mode, missing, or older
            than the line store are recomputed), ``scale`` and overrides (any analysis but the
            run's default keeps its tables, figures and page in ``RUN/analysis-<tag>/``, so it
            never replaces the default report), and ``family``: how the claims' verdicts are
            read together (``none``, ``bonferroni``, ``holm``). Several runs of one setup
            (seeds): the comparison page also shows the claims pooled over them, with each
            run's verdict.
        formats: Figure files written to ``RUN/figures/`` (PNG always: the page shows it).

    Returns:
        The path of the HTML page (the run's report, or the comparison page).

    Raises:
        RunDirError: A run directory is missing, has no measured line, or has another
            store schema version (one-line message).
        ConfigError: Unknown ``mode``.
    """
    request = request or AnalysisRequest()
    dirs = [Path(p) for p in run_dirs]
    if not dirs:
        raise RunDirError("no run directory given; pass at least one RUN")
    runs = [with_family(load_run(p, request), request.family) for p in dirs]
    if len(runs) == 1:
        target = Path(out) if out is not None else runs[0].page
        return build_run_report(runs[0], target, formats)
    pages = [build_run_report(run, run.page, formats) for run in runs]
    target = Path(out) if out is not None else RunLayout(dirs[0]).compare_path
    pooled = pooled_section(dirs, request)
    return build_compare_page(runs, pages, target, formats, pooled=pooled)


def load_run(
    run_dir: Path, request: AnalysisRequest | None = None, reanalyze: bool | None = None
) -> RunData:
    """Analyse ``run_dir`` if needed and load its tables.

    Args:
        run_dir: A run directory.
        request: What to analyse (default :class:`AnalysisRequest`). An analysis other than
            the run's default is read from (and written to) ``RUN/analysis-<tag>/``, never
            ``RUN/analysis/``.
        reanalyze: True: always analyse; False: never (the tables must exist); None: when a
            table is missing, was made in another mode, or is older than the line store.

    Raises:
        RunDirError: The directory does not exist, has no line store and no tables, has no
            measured line, or its store has another schema version.
        ConfigError: Unknown ``mode``.
    """
    request = request or AnalysisRequest()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass a run directory")
    return RunData.from_tables(run_dir, _tables(run_dir, request, reanalyze))


def _tables(run_dir: Path, request: AnalysisRequest, reanalyze: bool | None) -> AnalysisTables:
    """The tables ``request`` asks for, analysed first when ``reanalyze`` (None: when they are
    not current), and analysed again when they are damaged and may be rebuilt."""
    layout = RunLayout(run_dir)
    store = layout.lines_path
    adir = layout.analysis_dir(request.tag(layout.config_or_none()))
    may_rebuild = reanalyze is None
    if reanalyze is None:
        reanalyze = not AnalysisTables.is_current(adir, run_dir, request.mode)
    if reanalyze:
        if not store.is_dir():
            raise RunDirError(
                f"{run_dir} has no {store.name} and no complete {adir.name}/ tables in mode "
                f"{request.mode}; pass a run directory made by 'steplines run'"
            )
        analyze_run(run_dir, request)
    try:
        return AnalysisTables.read(adir)
    except TablesError:
        if reanalyze or not may_rebuild or not store.is_dir():
            raise
        analyze_run(run_dir, request)  # derived files: rebuilt from the store
        return AnalysisTables.read(adir)


def with_family(run: RunData, family: str) -> RunData:
    """``run`` with its claims judged by ``family`` (from its ``claim_data.npz``) when its
    tables were judged otherwise; ``claims.json`` is left as ``steplines analyze`` wrote it."""
    if family == (run.summary.get("claims_family") or "none") or not run.claims:
        return run
    return run.with_claims(rejudge(run.tables, family), family)


def pooled_section(dirs: Sequence[Path], request: AnalysisRequest) -> dict[str, Any]:
    """The claims pooled over ``dirs`` for the comparison page, or why they are not pooled:
    ``{"rows", "runs", "note"}`` (rows empty when not pooled)."""
    try:
        differ = setup_differences(dirs)
    except SteplinesError as exc:
        return not_pooled(str(exc))
    if differ:
        return not_pooled(
            f"the runs are not one setup (their config.toml differ in {', '.join(differ)}; "
            "only train.seed may differ)"
        )
    try:
        pooled = pool_runs(dirs, request, reanalyze=False)
    except SteplinesError as exc:
        return not_pooled(str(exc))
    return pooled_claims(pooled.claims, [r["run"] for r in pooled.summary["runs"]], pooled.note)
