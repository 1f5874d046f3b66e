"""``steplines export`` (registered on the main group by ``main.py``); never imports torch."""

from __future__ import annotations

from pathlib import Path

import click

from ._errors import _user_errors

__all__ = ["export"]


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["netcdf", "parquet", "csv"]),
    required=True,
    help="netcdf (scipy engine), parquet (needs steplines[export]) or csv (+ a .json sidecar)",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="output file (default RUN/export/lines-<what>.<ext>)",
)
@click.option("--lines", type=str, default=None, help="steps to export, e.g. 0-99 or 3,17-20")
@click.option(
    "--what",
    type=click.Choice(["samples", "summary"]),
    default="samples",
    show_default=True,
    help="samples: every per-sample loss; summary: mean lines and per-line scalars",
)
@_user_errors
def export(run_dir: Path, fmt: str, out: Path | None, lines: str | None, what: str) -> None:
    """Write the measured lines with coordinates (step, position/s, sample, split) and units."""
    from ..export import export_lines

    path = export_lines(run_dir, fmt, out, lines, what)  # type: ignore[arg-type]
    click.echo(f"wrote {path}")
