"""``steplines analyze`` and ``steplines report`` (registered on the main group by ``main.py``).

Both import only the analysis/plotting/report layers, never torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SteplinesError
from ._errors import _user_errors

__all__ = ["analyze", "core_table", "report"]

_MODE = click.option(
    "--mode",
    type=click.Choice(["corrected", "faithful"]),
    default="corrected",
    show_default=True,
    help="corrected: the original analysis's quirks fixed; faithful: reproduce them (SPEC §9)",
)


def core_table(run_dir: Path, mode: str) -> str:
    """The core results of an analysed run as aligned plain-text rows."""
    from ..report.build import core_results, load_run

    run = load_run(run_dir, mode, reanalyze=False)
    rows = [(r["quantity"], r["ours"]) for r in core_results(run)]
    width = max(len(q) for q, _ in rows)
    lines = [f"{q.ljust(width)}  {v}" for q, v in rows]
    lines += [f"note: {b['text']}" for b in run.banners if b["level"] == "error"]
    return "\n".join(lines)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@_MODE
@_user_errors
def analyze(run_dir: Path, mode: str) -> None:
    """Write RUN/analysis/ (tables, summary.json) and print the core numbers."""
    from ..analysis import analyze_run

    paths = analyze_run(run_dir, mode)
    click.echo(core_table(run_dir, mode))
    click.echo(f"tables: {paths['summary'].parent}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_MODE
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="HTML file to write (default: RUN/report.html; several runs: RUN_A/compare.html)",
)
@_user_errors
def report(run_dirs: tuple[Path, ...], mode: str, out: Path | None) -> None:
    """Analyse when needed, draw every figure and write the HTML report; print its path."""
    from ..report import build_report

    try:
        path = build_report(list(run_dirs), out=out, mode=mode)
    except OSError as exc:  # unwritable output directory and the like
        raise SteplinesError(f"cannot write the report ({exc}); choose another --out") from exc
    click.echo(str(path.resolve()))
