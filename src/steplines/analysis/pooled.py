"""The paper's claims pooled over several runs of one setup (seeds): ``analyze RUN... --out``.

One run's interval covers the noise of its lines and of each line's rows, not the variation
between trajectories of the same setup. :func:`analyze_runs` makes sure every run's default
analysis is current (analysing it as ``steplines analyze RUN`` does when not), reads each run's
``claim_data.npz`` and judges every claim on all runs together
(:func:`steplines.analysis.claims.evaluate_claims`: runs, then lines, then rows resampled),
with each run's own verdict beside the pooled one. It writes ``DIR/claims.json`` and
``DIR/summary.json``. Runs are pooled only when their ``config.toml`` agree in everything but
``train.seed`` and where or how the lines were computed (the data's location, the engine and
its resources). This module never imports torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from steplines.analysis.claims import (
    LEVEL,
    MIN_UNITS,
    RESAMPLES,
    Claim,
    ClaimData,
    evaluate_claims,
    family_note,
)
from steplines.analysis.run import analyze_run
from steplines.analysis.settings import AnalysisRequest
from steplines.analysis.tables import AnalysisTables
from steplines.atomic import write_atomic
from steplines.errors import ConfigError, RunDirError
from steplines.store.run import RunLayout

__all__ = [
    "Pooled",
    "analyze_runs",
    "check_out_dir",
    "load_claim_data",
    "pool_claims",
    "pool_runs",
    "rejudge",
    "setup_differences",
]

SETUP_FREE = ("train.seed", "train.cpu_threads")
"""Fields besides where the data lies and how lines are computed in which runs of one setup
may differ (``RunConfig.resume_diff`` already leaves those out)."""


@dataclass(frozen=True)
class Pooled:
    """Claims judged on several runs together.

    Attributes:
        claims: One record per claim (``Claim.to_json()``), with ``per_run``: ``DIR/claims.json``.
        summary: What ``DIR/summary.json`` holds (runs, paths, settings, the family note).
        directory: Where they were written (None: not written).
    """

    claims: list[dict[str, Any]]
    summary: dict[str, Any]
    directory: Path | None = None

    @property
    def note(self) -> str:
        """How many claims were judged at which level (:func:`family_note`)."""
        return str(self.summary["family_note"])


def setup_differences(run_dirs: Sequence[Path]) -> list[str]:
    """The configuration fields in which the runs differ, beyond the seed (empty: one setup).

    Raises:
        RunDirError: A run has no ``config.toml`` (its setup cannot be compared).
        ConfigError: A ``config.toml`` is invalid.
    """
    configs = []
    for d in run_dirs:
        cfg = RunLayout(d).config_or_none()
        if cfg is None:
            raise RunDirError(
                f"{d} has no config.toml, so it cannot be told to be the same setup as the "
                "other runs; pool only runs made by 'steplines run' or LineProbe"
            )
        configs.append(cfg)
    fields: dict[str, None] = {}
    for cfg in configs[1:]:
        for d in configs[0].resume_diff(cfg):
            key = d.split(":")[0]
            if key not in SETUP_FREE:
                fields[key] = None
    return list(fields)


def check_out_dir(out_dir: Path, run_dirs: Sequence[Path]) -> None:
    """Refuse an output directory inside (or equal to) one of the runs.

    Raises:
        ConfigError: ``out_dir`` lies in a run directory.
    """
    out = Path(os.path.abspath(out_dir))
    for d in run_dirs:
        run = Path(os.path.abspath(d))
        if out == run or run in out.parents:
            raise ConfigError(
                f"--out {out_dir} lies inside the run {d}; write the pooled tables outside "
                "every run directory, e.g. --out pooled"
            )


def _names(run_dirs: Sequence[Path]) -> list[str]:
    """Each run's label: its directory name, made unique with its parent's where they clash."""
    names = [Path(os.path.abspath(d)).name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{Path(os.path.abspath(d)).parent.name}/{n}" for d, n in zip(run_dirs, names)]
    if len(set(names)) < len(names):
        names = [f"{n} [{k + 1}]" for k, n in enumerate(names)]
    return names


def load_claim_data(
    run_dirs: Sequence[Path], request: AnalysisRequest, *, reanalyze: bool = True
) -> tuple[list[ClaimData], list[AnalysisTables]]:
    """Each run's claim data, analysing a run first when its analysis is missing or stale.

    Args:
        run_dirs: The runs.
        request: The analysis of each run to pool (it picks the analysis directory).
        reanalyze: Analyse a run whose analysis is not current (False: the tables must exist).

    Returns:
        The claim data (labelled by :func:`_names`) and each run's tables.

    Raises:
        RunDirError: A run is not a directory, has no measured line, or its tables are
            incomplete or damaged.
    """
    data, tables = [], []
    for run_dir, name in zip(run_dirs, _names(run_dirs)):
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir} is not a directory; pass run directories")
        layout = RunLayout(run_dir)
        adir = layout.analysis_dir(request.tag(layout.config_or_none()))
        if reanalyze and not AnalysisTables.is_current(adir, run_dir, request.mode):
            t = analyze_run(run_dir, request)
        else:
            t = AnalysisTables.read(adir)
        data.append(replace(t.claim_data, name=name))
        tables.append(t)
    return data, tables


def _level(summary: dict[str, Any], level: float | None) -> float:
    if level is not None:
        return float(level)
    return float((summary.get("bootstrap") or {}).get("level") or LEVEL)


def _resamples(summary: dict[str, Any], resamples: int | None) -> int:
    """Line resamples behind each claim: none when the row bootstrap is switched off."""
    b = summary.get("bootstrap") or {}
    rows = b.get("row_resamples") if resamples is None else resamples
    if rows == 0:
        return 0
    return int(b.get("line_resamples") or RESAMPLES)


def rejudge(tables: AnalysisTables, family: str) -> list[dict[str, Any]]:
    """One run's claims judged again from its claim data with another ``family``, at the
    resamples and level its analysis used (``claims.json`` is left as it is)."""
    claims = evaluate_claims(
        [tables.claim_data],
        resamples=_resamples(tables.summary, None),
        level=_level(tables.summary, None),
        family=family,
    )
    return [_json_safe(c.to_json()) for c in claims]


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, str | int | bool) or x is None:
        return x
    try:
        return _json_safe(float(x))
    except (TypeError, ValueError):
        return str(x)


def _run_record(run_dir: Path, tables: AnalysisTables, d: ClaimData) -> dict[str, Any]:
    """One run's line of ``summary.json``: where it is and its key numbers."""
    s, adir = tables.summary, tables.directory
    cfg = RunLayout(run_dir).config_or_none()
    lam = s.get("lambda_star") or {}
    st = s.get("strategies") or {}
    return _json_safe(
        {
            "run": d.name,
            "path": str(Path(os.path.abspath(run_dir))),
            "tables": str(Path(os.path.abspath(adir))) if adir is not None else None,
            "seed": cfg.train.seed if cfg is not None else None,
            "lines": len(d),
            "lines_total": s.get("lines_total"),
            "noisy_steps": int(d.noisy["step"].size) if "step" in d.noisy else 0,
            "lr": d.meta.get("lr"),
            "epochs": d.meta.get("epochs"),
            "lambda_star_in": d.meta.get("lambda_star"),
            "lambda_star": {k: lam.get(k) for k in ("median", "q25", "q75") if k in lam},
            "later_median": d.meta.get("later_median"),
            "share_of_optimum": {
                k: (v or {}).get("share_of_optimum")
                for k, v in st.items()
                if isinstance(v, dict) and "share_of_optimum" in v
            },
            "verdicts": {},
        }
    )


def pool_claims(
    data: Sequence[ClaimData],
    *,
    family: str = "none",
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> list[dict[str, Any]]:
    """Every claim judged on ``data`` together, as ``claims.json`` records (with ``per_run``).

    Raises:
        ConfigError: An unknown ``family``.
    """
    try:
        claims: list[Claim] = evaluate_claims(data, resamples=resamples, level=level, family=family)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return [_json_safe(c.to_json()) for c in claims]


def pool_runs(
    run_dirs: Sequence[Path], request: AnalysisRequest, *, reanalyze: bool = True
) -> Pooled:
    """The pooled claims of ``run_dirs`` and their summary, written nowhere.

    Raises:
        ConfigError: Fewer than one run, runs of different setups.
        RunDirError: A run without lines or without a ``config.toml``.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ConfigError("no run directory given; pass the runs to pool")
    same = [str(Path(os.path.abspath(d))) for d in dirs]
    if len(set(same)) < len(same):
        raise ConfigError("a run is given twice; pass each run directory once")
    for d in dirs:
        if not d.is_dir():
            raise RunDirError(f"{d} is not a directory; pass run directories")
        layout = RunLayout(d)
        adir = layout.analysis_dir(request.tag(layout.config_or_none()))
        if not layout.lines_path.is_dir() and not AnalysisTables.is_current(adir, d, request.mode):
            # said before any other run is analysed
            raise RunDirError(f"{d} has no {layout.lines_path.name}; measure the run first")
    differ = setup_differences(dirs)
    if differ:
        raise ConfigError(
            f"the runs are not one setup: their config.toml differ in {', '.join(differ)} "
            "(only train.seed may differ); pool seeds of one setup"
        )
    data, tables = load_claim_data(dirs, request, reanalyze=reanalyze)
    first, family = tables[0].summary, request.family
    lvl = _level(first, request.level)
    n_res = _resamples(first, request.resamples)
    claims = pool_claims(data, family=family, resamples=n_res, level=lvl)
    runs = [_run_record(r, t, d) for r, t, d in zip(dirs, tables, data)]
    for k, run in enumerate(runs):
        run["verdicts"] = {c["key"]: c["per_run"][k]["verdict"] for c in claims}
    summary = {
        "runs": runs,
        "mode": request.mode,
        "family": family,
        "level": lvl,
        "interval_level": claims[0]["level"] if claims else lvl,
        "line_resamples": n_res,
        "min_units": dict(MIN_UNITS),
        "settings": first.get("settings"),
        "claims": {c["key"]: c["verdict"] for c in claims},
        "family_note": family_note(claims, family, lvl),
    }
    return Pooled(claims=claims, summary=_json_safe(summary))


def analyze_runs(run_dirs: Sequence[Path], out_dir: Path, request: AnalysisRequest) -> Pooled:
    """Pool the claims of ``run_dirs`` (seeds of one setup) and write ``out_dir``.

    Args:
        run_dirs: The runs; each one's analysis that ``request`` names is made or refreshed
            first, as ``steplines analyze RUN`` makes it.
        out_dir: Where ``claims.json`` and ``summary.json`` go (not inside a run).
        request: The analysis of every run, and the family of the pooled verdicts.

    Returns:
        The pooled claims as written, with ``directory`` = ``out_dir``.

    Raises:
        ConfigError: ``out_dir`` inside a run, runs of different setups.
        RunDirError: A run without measured lines or without a ``config.toml``.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, run_dirs)
    pooled = pool_runs(run_dirs, request)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "claims.json", pooled.claims)
    _write(out_dir / "summary.json", pooled.summary)
    return replace(pooled, directory=out_dir)


def _write(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
