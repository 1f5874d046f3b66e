"""``steplines analyze`` and ``steplines report`` (registered on the main group by ``main.py``).

Both import only the analysis/plotting/report layers, never torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError, SteplinesError
from ._errors import _user_errors

if TYPE_CHECKING:
    from ..analysis.settings import AnalysisRequest

__all__ = ["analyze", "core_table", "report"]

_MODE = click.option(
    "--mode",
    type=click.Choice(["corrected", "faithful"]),
    default="corrected",
    show_default=True,
    help="corrected: the original analysis's quirks fixed; faithful: reproduce them "
    "(docs/analysis.md)",
)


def _settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--scale``, ``--window``, ``--lambdas``, ``--mu`` (docs/analysis.md, "Settings")."""
    options = (
        click.option(
            "--scale",
            type=click.Choice(["paper", "run"]),
            default=None,
            help="paper: the paper's constants (window 0.2, λ 0.05, µ 0.1); run: read off this "
            "run (window 2·s_typ, µ s_typ, λ*). Default: paper for the paper's settings and "
            "--mode faithful, run otherwise",
        ),
        click.option("--window", type=float, default=None, help="half-width w of fits/distances"),
        click.option(
            "--lambdas", default=None, help="SGD λ list to compare, comma-separated (0.05,0.1)"
        ),
        click.option("--mu", type=float, default=None, help="µ of PAL and FBPAL"),
        click.option(
            "--resamples",
            type=int,
            default=None,
            help="bootstrap resamples of each line's full-batch rows (default 200; 0: none)",
        ),
        click.option("--level", type=float, default=None, help="interval level (default 0.95)"),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


def _request(
    mode: str,
    family: str,
    scale: str | None,
    window: float | None,
    lambdas: str | None,
    mu: float | None,
    resamples: int | None,
    level: float | None,
) -> AnalysisRequest:
    """The analysis the options ask for (``--lambdas`` parsed), checked once here."""
    from ..analysis.settings import AnalysisRequest

    lams = None
    if lambdas is not None:
        try:
            lams = tuple(float(x) for x in lambdas.split(",") if x.strip())
        except ValueError:
            raise ConfigError(
                f"--lambdas {lambdas!r} is not a comma-separated list of numbers; e.g. 0.05,0.1"
            ) from None
        if not lams:
            raise ConfigError("--lambdas is empty; give at least one rate, e.g. 0.05")
    return AnalysisRequest(
        mode,
        scale=scale,
        window=window,
        lambdas=lams,
        mu=mu,
        resamples=resamples,
        level=level,
        family=family,
    )


_FAMILY = click.option(
    "--family",
    type=click.Choice(["none", "bonferroni", "holm"]),
    default="none",
    show_default=True,
    help="how the claims' verdicts are read together: none (each at --level), bonferroni or "
    "holm (all together at --level)",
)


def core_table(run_dir: Path, request: AnalysisRequest) -> str:
    """The claims and core results of an analysed run as aligned plain-text rows."""
    from ..report.sections import claims_text, core_results
    from ..reporting import load_run

    run = load_run(run_dir, request, reanalyze=False)
    rows = [(r["quantity"], r["ours"]) for r in core_results(run)]
    width = max(len(q) for q, _ in rows)
    lines = [claims_text(run), "", "core results:"]
    lines += [f"  {q.ljust(width)}  {v}" for q, v in rows]
    lines += [f"note: {b['text']}" for b in run.banners if b["level"] == "error"]
    return "\n".join(lines)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_MODE
@_settings_options
@_FAMILY
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="several runs (seeds of one setup): where the pooled claims.json and summary.json go",
)
@_user_errors
def analyze(
    run_dirs: tuple[Path, ...], mode: str, family: str, out: Path | None, **kw: Any
) -> None:
    """Write RUN/analysis/ (tables, claims.json, summary.json) and print the claims.

    Several runs of one setup (seeds) with --out DIR: each run's analysis is made when
    missing or stale, and the claims pooled over the runs go to DIR/claims.json and
    DIR/summary.json.
    """
    from ..analysis import analyze_run
    from ..atomic import watch_work_dirs

    watch_work_dirs(*run_dirs)  # an interrupted analysis leaves no .analysis.tmp-PID
    request = _request(mode, family, **kw)
    if len(run_dirs) > 1 or out is not None:
        if out is None:
            raise ConfigError(
                f"{len(run_dirs)} runs: give --out DIR for the pooled claims "
                "(e.g. --out pooled), or analyse one run at a time"
            )
        from ..analysis.pooled import analyze_runs
        from ..report.pooled import pooled_text

        pooled = analyze_runs(list(run_dirs), out, request)
        click.echo(pooled_text(pooled.claims, pooled.note))
        click.echo(f"pooled tables: {pooled.directory}")
        return
    tables = analyze_run(run_dirs[0], request)
    click.echo(core_table(run_dirs[0], request))
    click.echo(f"tables: {tables.directory}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_MODE
@_settings_options
@_FAMILY
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="HTML file to write (default: RUN/report.html; several runs: RUN_A/compare.html)",
)
@click.option("--force", is_flag=True, help="replace an existing --out file (and its .pdf)")
@_user_errors
def report(
    run_dirs: tuple[Path, ...],
    mode: str,
    family: str,
    out: Path | None,
    force: bool,
    **kw: Any,
) -> None:
    """Analyse when needed, draw every figure and write the HTML report; print its path.

    Several runs of one setup (seeds): the comparison page also shows the claims pooled over
    the runs, each run's verdict beside the pooled one. An --out that exists is kept unless
    --force; a directory as --out is refused before anything is written.
    """
    from ..atomic import watch_work_dirs
    from ..reporting import build_report

    if out is not None:
        _check_out(out, force)
    watch_work_dirs(*run_dirs)
    try:
        path = build_report(list(run_dirs), out, _request(mode, family, **kw))
    except OSError as exc:  # unwritable output directory and the like
        raise SteplinesError(f"cannot write the report ({exc}); choose another --out") from exc
    click.echo(str(path.resolve()))


def _check_out(out: Path, force: bool) -> None:
    """Refuse a directory as ``--out``, and an existing page or PDF without ``--force``."""
    if out.is_dir():
        raise SteplinesError(
            f"--out {out} is a directory; give a file, e.g. --out {out}/report.html"
        )
    taken = [p for p in (out, out.with_suffix(".pdf")) if p.exists()]
    if taken and not force:
        raise SteplinesError(
            f"{taken[0]} exists; pass --force to replace it, or choose another --out"
        )
