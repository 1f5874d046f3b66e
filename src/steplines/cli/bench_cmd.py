"""``steplines bench``: the engine benchmark table (registered on the main group by ``main.py``)."""

from __future__ import annotations

import json

import click

from ._errors import _user_errors

__all__ = ["bench"]


@click.command()
@click.option(
    "--model",
    type=click.Choice(["resnet20", "digits-resnet", "resnet18", "mobilenetv2"]),
    default="resnet20",
    show_default=True,
)
@click.option("--device", type=str, default=None, help="cpu | cuda (default: cuda if present)")
@click.option("--batches", type=int, default=4, show_default=True, help="batches of 128")
@click.option("--positions", type=int, default=4, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True, help="timed turns (median)")
@click.option("--quick", is_flag=True, help="skip the compiled variants (no compiler wait)")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON records")
@_user_errors
def bench(
    model: str,
    device: str | None,
    batches: int,
    positions: int,
    repeat: int,
    quick: bool,
    as_json: bool,
) -> None:
    """Time the line engines against the paper's loop on synthetic data, side by side.

    One row per variant: evals/s (per-sample losses per second), ratio to the paper's loop
    with the same cores, max |Δ| against the reference engine, share of this machine's fp32
    GEMM ceiling (CPU).
    """
    from ..bench import format_table, run_bench
    from ..errors import ConfigError
    from ..rundir import check_device_name

    for name, value in (("--batches", batches), ("--positions", positions), ("--repeat", repeat)):
        if value < 1:
            raise ConfigError(f"{name} {value} must be at least 1")
    if device is not None:
        check_device_name(device)
    facts, records = run_bench(model, device, batches, positions, repeat, quick)
    if as_json:
        click.echo(json.dumps([{**r, **{"machine": facts}} for r in records], indent=2))
    else:
        click.echo(format_table(facts, records))
