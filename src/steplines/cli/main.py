"""Command line: ``steplines run|train|measure|info|lr-grid``.

Each command parses options, builds a configuration and calls one library function. A
:class:`~steplines.errors.SteplinesError` is printed as one line ``error: …`` with exit code 2.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..config import PRESETS, RunConfig, load_config
from ._errors import _user_errors


def _config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--preset", type=str, default=None, help=f"named configuration: {', '.join(PRESETS)}"
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            default=None,
            help="TOML file with [problem], [train], [measure] tables",
        ),
        click.option(
            "--problem",
            type=str,
            default=None,
            help="your own problem: module:function or path/to/file.py:function returning a "
            "steplines.Problem (overrides the data set and model)",
        ),
        click.option("--data-dir", type=str, default=None, help="where the data set lives"),
        click.option(
            "--download",
            is_flag=True,
            default=False,
            help="download the data set (checksum-verified) if it is missing",
        ),
        click.option("--steps", type=int, default=None, help="override train.steps"),
        click.option("--device", type=str, default=None, help="auto | cpu | cuda | cuda:N"),
        click.option("--engine", type=click.Choice(["auto", "fast", "reference"]), default=None),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _resolve(
    preset: str | None,
    config_file: Path | None,
    problem: str | None,
    data_dir: str | None,
    download: bool,
    steps: int | None,
    device: str | None,
    engine: str | None,
) -> RunConfig:
    overrides: dict[str, Any] = {}
    if problem is not None:
        from ..problems.problem import resolve_problem_spec

        # stored resolved, so that `measure` works from any directory
        overrides["problem.factory"] = resolve_problem_spec(problem)
    if data_dir is not None:
        overrides["problem.data_dir"] = data_dir
    if download:
        overrides["problem.download"] = True
    if steps is not None:
        overrides["train.steps"] = steps
    if device is not None:
        overrides["measure.device"] = device
    if engine is not None:
        overrides["measure.engine"] = engine
    return load_config(preset, config_file, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="steplines", prog_name="steplines")
@click.option("-v", "--verbose", is_flag=True, help="log one line per segment")
def main(verbose: bool) -> None:
    """steplines: measure the loss along every SGD update-step line (Mutschler & Zell 2021)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )


def _trust_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--problem`` and ``--trust-problem``: the only ways a run's own code is imported."""
    fn = click.option(
        "--trust-problem",
        is_flag=True,
        help="import the problem file the run's config.toml names (checked against its SHA-256)",
    )(fn)
    return click.option(
        "--problem",
        "problem_spec",
        type=str,
        default=None,
        help="the run's own problem (module:function or file.py:function), if it has one: "
        "imported only if its SHA-256 is the one the run recorded",
    )(fn)


@main.command()
@_config_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory")
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option("--no-report", is_flag=True, help="skip the analysis and report.html at the end")
@click.option(
    "--seeds",
    type=str,
    default=None,
    help="one run per seed, e.g. 1,2,3: OUT/seed-1, OUT/seed-2, … (train.seed set), then the "
    "claims pooled over them in OUT/pooled/",
)
@_user_errors
def run(out: Path, quiet: bool, no_report: bool, seeds: str | None, **kw: Any) -> None:
    """Train, measure every line, and write the run directory (resumes an existing one)."""
    cfg = _resolve(**kw)
    if seeds is None:
        _run_one(cfg, out, quiet, no_report)
        return
    from ..errors import ConfigError

    values = _parse_seeds(seeds, kw.get("config_file"))
    if (out / "config.toml").is_file():
        raise ConfigError(
            f"--out {out} is a run directory; with --seeds give a new directory, which gets "
            "one run per seed"
        )
    dirs = []
    for seed in values:
        one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
        click.echo(f"seed {seed}:")
        dirs.append(_run_one(one, out / f"seed-{seed}", quiet, no_report))
    if no_report:
        return
    from ..analysis.pooled import analyze_runs
    from ..analysis.settings import AnalysisRequest
    from ..report.pooled import pooled_text

    pooled = analyze_runs(dirs, out / "pooled", AnalysisRequest())
    click.echo(pooled_text(pooled.claims, pooled.note))
    click.echo(f"pooled tables: {pooled.directory}")
    runs = " ".join(shlex.quote(str(d)) for d in dirs)
    click.echo(f"pooled report: steplines report {runs}")


def _parse_seeds(text: str, config_file: Path | None) -> list[int]:
    """``--seeds 1,2,3`` → ``[1, 2, 3]`` (distinct integers; not with a file that sets one)."""
    from ..errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or len(set(values)) < len(values):
        raise ConfigError(f"--seeds {text!r}: give distinct integers, e.g. 1,2,3")
    if config_file is not None and Path(config_file).is_file():
        import tomllib

        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, ValueError):
            data = {}  # load_config has read it already; its own errors come from there
        if "seed" in (data.get("train") or {}):
            raise ConfigError(
                f"--seeds and train.seed in {config_file} both set the seed; drop one of them"
            )
    return values


def _run_one(cfg: RunConfig, out: Path, quiet: bool, no_report: bool) -> Path:
    """One run of ``cfg`` into ``out`` (train, measure, analysis and report unless skipped)."""
    from ..errors import DivergenceError
    from ..measure import run_all
    from ..problems.problem import make_problem
    from ..reporting import build_report
    from ..rundir import RunDir, resolve_device
    from ..trajectory.loop import check_optimizer

    # everything that can be checked is checked before the run directory is made: the
    # configuration (optimizer included), the device, the data and a user's problem
    resolve_device(cfg.measure.device, cfg.measure.precision)
    _check_recorded_problem(out, cfg)
    check_optimizer(cfg.train)
    problem = make_problem(cfg.problem)
    rd = RunDir.prepare(out, cfg)
    rd.check_problem_source(problem.source)
    from ..atomic import watch_work_dirs

    watch_work_dirs(rd.path)  # Ctrl-C in the closing analysis leaves no .analysis.tmp-PID
    try:
        _, measured = run_all(rd, progress=not quiet, problem=problem)
    except DivergenceError:
        if not no_report and rd.lines_path.exists() and _done_count(rd):
            build_report([rd.path])
        raise
    click.echo(f"measured {measured} new lines; {_done_summary(rd)}")
    click.echo(
        f"results: {rd.path.resolve()}  (inspect: steplines info {shlex.quote(str(rd.path))})"
    )
    if not no_report:
        from ..report.sections import claims_text
        from ..reporting import load_run

        click.echo(f"report: {build_report([rd.path])}")
        click.echo(claims_text(load_run(rd.path, reanalyze=False)))
    return rd.path


@main.command()
@_config_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_user_errors
def train(out: Path, quiet: bool, **kw: Any) -> None:
    """Record the trajectory only (checkpoints + per-step records)."""
    from ..measure import record_trajectory
    from ..problems.problem import make_problem
    from ..rundir import RunDir, resolve_device
    from ..trajectory.loop import check_optimizer

    cfg = _resolve(**kw)
    device = resolve_device(cfg.measure.device, cfg.measure.precision)
    _check_recorded_problem(out, cfg)
    check_optimizer(cfg.train)  # the values of optimizer_kwargs
    problem = make_problem(cfg.problem)  # checked before the run directory is made
    rd = RunDir.prepare(out, cfg)
    rd.check_problem_source(problem.source)
    rd.write_provenance(device, problem.source)
    record_trajectory(rd, problem, device, progress=not quiet)
    click.echo(f"trajectory of {rd.config.train.steps} steps in {rd.trajectory.path}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--shard", type=str, default=None, help="i/n: measure every n-th segment from i")
@click.option("--redo", type=str, default=None, help="lines to measure again, e.g. 3,17-20")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="local (default): this process; ray: one Ray task per segment (needs steplines[ray])",
)
@click.option(
    "--engine",
    "old_backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    hidden=True,  # the spelling before --backend (it names fast|reference under `run`)
)
@click.option("--address", type=str, default=None, help="Ray cluster address (default: local)")
@click.option("--data-dir", type=str, default=None, help="where the data set lives")
@click.option("--device", type=str, default=None)
@click.option("--quiet", is_flag=True, help="no progress bars")
@_trust_options
@_user_errors
def measure(
    run_dir: Path,
    shard: str | None,
    redo: str | None,
    backend: str | None,
    old_backend: str | None,
    address: str | None,
    data_dir: str | None,
    device: str | None,
    quiet: bool,
    problem_spec: str | None,
    trust_problem: bool,
) -> None:
    """Measure every missing line of a recorded trajectory (or a shard of its segments).

    A run made with your own problem imports it only with --problem or --trust-problem.
    """
    from ..measure import shard_segments
    from ..rundir import RunDir
    from .parsing import parse_backend, parse_lines, parse_shard

    backend = parse_backend(backend, old_backend)

    rd = RunDir.open(run_dir)
    # nothing the run directory names is imported unless the user says so (SHA-256 checked)
    rd = rd.with_problem_spec(rd.trusted_problem_spec(problem_spec, trust_problem))
    cfg = rd.config
    problem_cfg = cfg.problem.model_copy(update={"data_dir": data_dir}) if data_dir else cfg.problem
    meas = cfg.measure.model_copy(update={"device": device}) if device else cfg.measure
    rd = RunDir(rd.path, cfg.model_copy(update={"problem": problem_cfg, "measure": meas}))
    steps, every = cfg.train.steps, cfg.train.checkpoint_every
    segments = shard_segments(
        rd.trajectory.segments(steps, every), parse_shard(shard) if shard else None
    )
    lines = parse_lines(redo, steps) if redo else None
    if backend == "ray":
        from ..distributed.ray_backend import measure_with_ray

        n = measure_with_ray(rd, segments, address=address, redo=lines, progress=not quiet)
    else:
        from ..measure import measure_lines
        from ..rundir import resolve_device

        dev = resolve_device(rd.config.measure.device, rd.config.measure.precision)
        problem = rd.load_problem(problem_spec, trust_problem)
        rd.write_provenance(dev)
        n = measure_lines(rd, problem, dev, segments, progress=not quiet, redo=lines)
    click.echo(f"measured {n} new lines; {_done_summary(rd)}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--no-replay", is_flag=True, help="skip replaying the trajectory")
@click.option("--data-dir", type=str, default=None, help="where the data set lives (replay)")
@_trust_options
@_user_errors
def verify(
    run_dir: Path,
    no_replay: bool,
    data_dir: str | None,
    problem_spec: str | None,
    trust_problem: bool,
) -> None:
    """Check every finished line and the trajectory; say how to re-measure what is wrong.

    Replaying a run made with your own problem imports it only with --problem or
    --trust-problem (or skip the replay with --no-replay).
    """
    from ..verify import verify_run

    rd, problem = _open_for_verify(run_dir, no_replay, data_dir, problem_spec, trust_problem)
    report = verify_run(rd, replay=not no_replay, problem=problem)
    click.echo(f"checked {report.checked} finished lines")
    _echo_findings(report)
    _echo_repairs(report, rd)
    if report.ok:
        click.echo("OK" + (" (replay skipped)" if report.skipped else ""))
    else:
        if report.unchecked and not (report.corrupt or report.missing or report.replay_error):
            click.echo("NOT VERIFIED: a check could not run (see 'not checked' above)")
        sys.exit(1)


def _open_for_verify(
    run_dir: Path,
    no_replay: bool,
    data_dir: str | None,
    problem_spec: str | None,
    trust_problem: bool,
) -> tuple[Any, Any]:
    """The run directory ``verify`` checks (``--data-dir`` applied) and the problem to replay
    it with: None with ``--no-replay`` or for a probe's run, which is not replayed. A user's
    problem is imported only if trusted and its SHA-256 is the recorded one
    (:meth:`RunDir.trusted_problem_spec`)."""
    from ..rundir import RunDir

    rd = RunDir.open(run_dir)
    if not no_replay:
        checked = rd.trusted_problem_spec(problem_spec, trust_problem, command="verify")
        rd = rd.with_problem_spec(checked)
    if data_dir:
        cfg = rd.config
        rd = RunDir(
            rd.path,
            cfg.model_copy(
                update={"problem": cfg.problem.model_copy(update={"data_dir": data_dir})}
            ),
        )
    problem = None
    if not no_replay and rd.config.probe is None:
        problem = rd.load_problem(problem_spec, trust_problem)
    return rd, problem


def _echo_findings(report: Any) -> None:
    """Print what ``verify`` found wrong, one line each: damaged arrays, corrupt lines not in a
    damaged chunk, missing lines, the trajectory, checks not run or skipped, damaged files."""
    from ..verify import format_lines

    for name, ranges in report.damaged.items():
        lines = format_lines([t for a, b in ranges for t in range(a, b)])
        click.echo(f"damaged array {name}: chunk of lines {lines} cannot be decoded")
    in_damaged = {t for r in report.damaged.values() for a, b in r for t in range(a, b)}
    for t, why in sorted(report.corrupt.items()):
        if t not in in_damaged:
            click.echo(f"corrupt line {t}: {why}")
    if report.missing:
        click.echo(f"missing lines: {format_lines(report.missing)}")
    if report.replay_error:
        click.echo(f"trajectory: {report.replay_error}")
    for what in report.unchecked:
        click.echo(f"not checked: {what}")
    for what in report.skipped:
        click.echo(f"skipped on request: {what}")
    for what in report.files:
        click.echo(f"damaged file: {what}")


def _echo_repairs(report: Any, rd: Any) -> None:
    """Print the ``steplines measure`` commands that repair what ``verify`` found: rewrite the
    ``val_indices``, re-measure the corrupt lines, measure the missing ones."""
    from ..verify import format_lines

    run_arg = shlex.quote(str(rd.path))
    extra = " --trust-problem" if rd.config.problem.factory else ""
    if report.corrupt and all(w.startswith("val_indices:") for w in report.corrupt.values()):
        # written once at creation: measure rewrites them, no line needs measuring again
        click.echo(f"rewrite val_indices with: steplines measure {run_arg}{extra}")
    elif report.corrupt:
        click.echo(
            f"re-measure with: steplines measure {run_arg} --redo "
            f"{format_lines(sorted(report.corrupt))}{extra}"
        )
    if report.missing:
        click.echo(f"measure the missing lines with: steplines measure {run_arg}{extra}")


def _check_recorded_problem(out: Path, cfg: Any) -> None:
    """Into an existing run directory that recorded a user problem's SHA-256 (a received run,
    resumed or repaired with ``--config RUN/config.toml --out RUN``), import that problem only
    if its file still has that SHA-256: checked before anything is imported.

    Raises:
        ConfigError: the file differs or is not found (nothing imported).
    """
    if not cfg.problem.factory or not (Path(out) / "config.toml").is_file():
        return
    from ..problems.problem import check_problem_file, resolve_problem_spec
    from ..rundir import RunDir

    try:
        recorded = RunDir.open(out).recorded_problem_source() or {}
    except Exception:  # not a run directory: RunDir.prepare says so
        return
    if sha := recorded.get("sha256"):
        check_problem_file(resolve_problem_spec(cfg.problem.factory), sha)


def _done_count(rd: Any) -> int:
    from ..store import LineStore

    return int(LineStore.open(rd.lines_path).done().sum())


def _done_summary(rd: Any) -> str:
    from ..store import LineStore, StoreDamagedError

    if not rd.lines_path.exists():
        return "no lines measured yet"
    store = LineStore.open(rd.lines_path)
    try:
        done, note = store.done(), ""
    except StoreDamagedError as err:  # another shard's chunk: say so, do not fail
        done, note = store.done(tolerant=True), f" ({err})"
    return f"{int(done.sum())}/{done.size} lines done{note}"


def _info_warnings(rd: Any, out: dict[str, Any]) -> list[str]:
    """What ``info`` warns about: a run that cannot be replayed, resumed or re-measured."""
    if rd.config.probe is not None:
        return []
    recorded, done = int(out["steps_recorded"]), int(out.get("lines_done", 0))
    traj = rd.trajectory
    warnings = []
    if not traj.path.exists():
        warnings.append(
            f"{traj.path} is missing: this run cannot be replayed, resumed or re-measured "
            "(steplines verify reports it as not checked)"
        )
    elif done and recorded < done:
        warnings.append(
            f"only {recorded} steps of the trajectory are recorded but {done} lines are done "
            "(checkpoints or step records deleted?): those lines cannot be replayed or "
            "re-measured"
        )
    elif recorded < int(out["steps"]) and not traj.checkpoint_path(0).exists():
        warnings.append(f"{traj.checkpoint_path(0).name} is missing: training cannot resume")
    return warnings


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print a JSON record")
@_user_errors
def info(run_dir: Path, as_json: bool) -> None:
    """What was run, how many lines are done, and the store size."""
    from ..rundir import RunDir
    from ..store import LineStore

    rd = RunDir.open(run_dir)
    cfg = rd.config
    steps, every = cfg.train.steps, cfg.train.checkpoint_every
    out: dict[str, Any] = {
        "run": str(rd.path),
        "problem": f"{cfg.problem.dataset} / {cfg.problem.model}",
        "optimizer": f"{cfg.train.optimizer} lr={cfg.train.lr} momentum={cfg.train.momentum}",
        "steps_recorded": rd.trajectory.recorded_steps(steps, every),
        "steps": steps,
        "grid": f"{cfg.measure.grid} ±{cfg.measure.interval} step {cfg.measure.resolution}, "
        f"≤{cfg.measure.max_passes} passes",
    }
    if (d := rd.trajectory.divergence()) is not None:
        out["diverged_at"] = d["step"]
    if rd.lines_path.exists():
        store = LineStore.open(rd.lines_path)
        done = store.done()
        out.update(
            lines_done=int(done.sum()),
            lines=int(done.size),
            shape=f"N={store.n_train} M={store.n_val} B={store.n_direction} K={store.n_positions}",
            store_bytes=_dir_bytes(rd.lines_path),
        )
    else:
        out.update(lines_done=0, lines=steps)
    out["trajectory_bytes"] = _dir_bytes(rd.trajectory.path) if rd.trajectory.path.exists() else 0
    warnings = _info_warnings(rd, out)
    if warnings:
        out["warnings"] = warnings
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for k, v in out.items():
        if k == "warnings":
            continue
        if k.endswith("_bytes"):
            v = f"{v / 2**20:.1f} MiB"
        click.echo(f"{k:>16}: {v}")
    for w in warnings:
        click.echo(f"warning: {w}")


@main.command("lr-grid")
@_config_options
@click.option("--lrs", type=str, default=None, help="comma-separated list (default: the paper's)")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_user_errors
def lr_grid_cmd(lrs: str | None, quiet: bool, **kw: Any) -> None:
    """The paper's λ grid search: train per λ, pick the best final validation accuracy."""
    from ..errors import ConfigError
    from ..lr_grid import PAPER_LRS, best_lr, lr_grid

    cfg = _resolve(**kw)
    try:
        grid = tuple(float(v) for v in lrs.split(",")) if lrs else PAPER_LRS
    except ValueError:
        raise ConfigError(f"--lrs {lrs!r}: give positive numbers like 0.1,0.01") from None
    if not grid or not all(0 < v < float("inf") for v in grid):
        raise ConfigError(f"--lrs {lrs!r}: every learning rate must be positive and finite")
    results = lr_grid(cfg, grid, progress=not quiet)
    click.echo(f"{'lr':>10} {'val acc':>8} {'val loss':>9} {'train loss':>10}")
    for r in results:
        if r.diverged_at is not None:
            click.echo(f"{r.lr:>10.4g} diverged at step {r.diverged_at}")
        else:
            click.echo(
                f"{r.lr:>10.4g} {r.val_accuracy:>8.4f} {r.val_loss:>9.4f} {r.train_loss:>10.4f}"
            )
    click.echo(f"best lr: {best_lr(results):.4g} ({cfg.train.steps} steps each)")


def _register_report_commands() -> None:
    from .report_cmds import analyze, report

    main.add_command(analyze)
    main.add_command(report)

    from .bench_cmd import bench

    main.add_command(bench)

    from .export_cmd import export

    main.add_command(export)


_register_report_commands()
