"""The analysis tables of one run: the one list of their files, how they are written, read and
checked (docs/analysis.md, "Files written by analyze_run").

:class:`AnalysisTables` is everything an analysis produces, typed and frozen. The analysis
builds it (:func:`steplines.analysis.analyze_run`), :meth:`AnalysisTables.write` publishes it
as a whole (a reader sees the old tables or the new ones, never a mix), and the report, the
pooled claims and ``verify`` read it back with :meth:`AnalysisTables.read`, which checks every
file against the SHA-256 that ``manifest.json`` recorded when it was written.
:meth:`AnalysisTables.is_current` is the one staleness rule: all files there, checksums
recorded, the requested mode, and none older than the line store.

This module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steplines.analysis.claims import ClaimData
from steplines.analysis.settings import AnalysisSettings, Optimizer
from steplines.analysis.views import LineView, views_arrays, views_from_arrays
from steplines.atomic import process_alive
from steplines.errors import RunDirError
from steplines.store.run import RunLayout, store_mtime

__all__ = [
    "FILES",
    "MANIFEST",
    "OLDER",
    "OPTIONAL",
    "AnalysisTables",
    "LineCounts",
    "TablesError",
]

FILES: dict[str, str] = {
    "settings": "settings.json",
    "summary": "summary.json",
    "strategies": "strategies.csv",
    "fits": "fits.csv",
    "derivatives": "derivatives.csv",
    "batch_size": "batch_size.csv",
    "estimators": "estimators.csv",
    "distances": "distances.npz",
    "bootstrap": "bootstrap.npz",
    "claims": "claims.json",
    "claim_data": "claim_data.npz",
    "training": "training.csv",
    "views": "views.npz",
    "browser": "browser.json",
    "directions": "directions.npz",
}
"""Field of :class:`AnalysisTables` → its file in the analysis directory: the one list."""

OPTIONAL = ("bootstrap", "directions")
"""Files an analysis may lack: no row bootstrap (``--resamples 0``), no noisy directions."""

OLDER = ("estimators",)
"""Files that tables written by older versions lack: read as None, never current."""

MANIFEST = "manifest.json"
"""The SHA-256 of every file, written last: tables without it are incomplete or older."""

_CSV = ("strategies", "fits", "derivatives", "batch_size", "estimators", "training")
_NPZ = ("distances", "bootstrap", "directions")


class TablesError(RunDirError):
    """An analysis directory is incomplete, damaged or unreadable."""


@dataclass(frozen=True)
class LineCounts:
    """How many lines the tables cover: ``used`` of ``total`` scheduled, ``missing`` not done."""

    used: int
    missing: int
    total: int


@dataclass(frozen=True, eq=False)
class AnalysisTables:
    """Every table of one analysis (docs/analysis.md), as written to and read from its directory.

    Attributes:
        settings: The settings every number was computed with.
        summary: ``summary.json``: the run-level numbers.
        strategies, fits, derivatives, batch_size: The per-line CSV tables.
        distances: ``distances.npz``: the distance matrices and consecutive distances.
        claims: ``claims.json``: one record per claim of the paper, judged on this run.
        claim_data: The per-line columns the claims are judged on (for pooling runs).
        training: ``training.csv``: l(0), validation loss at 0 and batch loss per line.
        views: The representative lines the line figures draw.
        browser: ``browser.json``: the report's line picker, ``{"lines": [...]}``.
        estimators: ``estimators.csv``: the cheap estimators per line (None: tables older
            than the estimator analysis).
        bootstrap: ``bootstrap.npz``: row-bootstrap replicates ``[T, R]`` (None: not drawn).
        directions: ``directions.npz``: noisy-direction distances (None: none measured).
        directory: Where the tables were written or read (None: not yet written).
    """

    settings: AnalysisSettings
    summary: dict[str, Any]
    strategies: pd.DataFrame
    fits: pd.DataFrame
    derivatives: pd.DataFrame
    batch_size: pd.DataFrame
    distances: dict[str, np.ndarray]
    claims: list[dict[str, Any]]
    claim_data: ClaimData
    training: pd.DataFrame
    views: list[LineView]
    browser: dict[str, Any]
    estimators: pd.DataFrame | None = None
    bootstrap: dict[str, np.ndarray] | None = None
    directions: dict[str, np.ndarray] | None = None
    directory: Path | None = None

    @property
    def mode(self) -> str:
        """``corrected`` or ``faithful``."""
        return self.settings.mode

    @property
    def lines(self) -> LineCounts:
        """Lines used, missing and scheduled in all."""
        s = self.summary
        return LineCounts(
            int(s.get("lines_used") or 0),
            int(s.get("lines_missing") or 0),
            int(s.get("lines_total") or 0),
        )

    def accumulated_bands(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """Each strategy's row-bootstrap band of its accumulated improvement after every line
        (:func:`steplines.analysis.bootstrap.accumulated_bands` at the level of
        ``summary.bootstrap``); None without ``bootstrap.npz``."""
        if self.bootstrap is None:
            return None
        from steplines.analysis.bootstrap import accumulated_bands

        reps = {k: v for k, v in self.bootstrap.items() if k.startswith(("impr:", "point:impr:"))}
        level = float((self.summary.get("bootstrap") or {}).get("level") or 0.95)
        return accumulated_bands(reps, level)

    def path(self, name: str) -> Path:
        """The file of field ``name`` in :attr:`directory`."""
        if self.directory is None:
            raise ValueError("these tables are not written yet")
        return self.directory / FILES[name]

    # ------------------------------------------------------------------------------ writing

    def write(self, directory: Path) -> AnalysisTables:
        """Write every file into a private directory beside ``directory``, then put it in place
        as a whole (``manifest.json`` last). What else lives in ``directory`` (figures, a page)
        moves along. Returns the tables with :attr:`directory` set."""
        directory = Path(directory)
        work = _work_dir(directory)
        digests = {}
        for name, file in FILES.items():
            value = getattr(self, name)
            if value is None:
                continue
            _write_file(work / file, name, value, self.settings)
            digests[file] = _sha256(work / file)
        manifest = {"files": digests}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _publish(work, directory)
        return replace(self, directory=directory)

    # ------------------------------------------------------------------------------ reading

    @classmethod
    def read(cls, directory: Path) -> AnalysisTables:
        """Read the tables of ``directory``, every file checked against ``manifest.json``
        (tables written before it had checksums are read unchecked).

        Raises:
            TablesError: A file is missing, unreadable, or differs from its checksum.
        """
        directory = Path(directory)
        hint = "rerun 'steplines analyze'"
        for file in damaged(directory):
            raise TablesError(
                f"{directory / file} differs from its checksum in {MANIFEST} (changed or "
                f"damaged); {hint}"
            )
        values: dict[str, Any] = {}
        for name, file in FILES.items():
            path = directory / file
            if not path.is_file():
                if name in OPTIONAL + OLDER:
                    continue
                raise TablesError(f"{directory} is incomplete: {file} is missing; {hint}")
            try:
                values[name] = _read_file(path, name)
            except (OSError, ValueError, KeyError, EOFError) as exc:
                raise TablesError(
                    f"{path} is unreadable ({type(exc).__name__}: {exc}); {hint}"
                ) from exc
        return cls(**values, directory=directory)

    @staticmethod
    def is_current(directory: Path, run_dir: Path, mode: str) -> bool:
        """True when ``directory`` holds complete tables of ``mode``, each matching its
        checksum, none older than the run's line store. Without a store there is nothing to
        redo them from: tables of ``mode`` that can be read are current, older ones included.
        """
        directory = Path(directory)
        try:
            summary = json.loads((directory / FILES["summary"]).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(summary, dict) or summary.get("mode") != mode:
            return False
        store = RunLayout(run_dir).lines_path
        if not store.is_dir():
            return all(
                (directory / f).is_file() for n, f in FILES.items() if n not in OPTIONAL + OLDER
            )
        required = [f for n, f in FILES.items() if n not in OPTIONAL] + [MANIFEST]
        if not all((directory / f).is_file() for f in required) or damaged(directory):
            return False
        oldest = min((directory / f).stat().st_mtime for f in required)
        return oldest >= store_mtime(store)


def damaged(directory: Path) -> list[str]:
    """The files of ``directory`` that differ from (or lack) the SHA-256 its ``manifest.json``
    recorded ([] when there is no manifest: tables written before checksums)."""
    directory = Path(directory)
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        return [MANIFEST]
    return sorted(
        f
        for f, digest in files.items()
        if not (directory / f).is_file() or _sha256(directory / f) != digest
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_file(path: Path, name: str, value: Any, settings: AnalysisSettings) -> None:
    """One file in the format :func:`_read_file` reads back (``directions.npz`` also records
    the mode of ``settings``, as it always has)."""
    if name in _CSV:
        value.to_csv(path, index=False)
    elif name == "settings":
        text = json.dumps(value.to_json(), indent=2, ensure_ascii=False, allow_nan=False)
        path.write_text(text + "\n")
    elif name == "summary":
        path.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")
    elif name == "claims":
        path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    elif name == "browser":
        path.write_text(json.dumps(value, separators=(",", ":")))
    elif name == "claim_data":
        value.save(path)
    elif name == "views":
        np.savez_compressed(path, **views_arrays(value))
    elif name == "directions":
        np.savez(path, mode=settings.mode, **value)
    else:  # distances, bootstrap
        np.savez_compressed(path, **value)


def _read_file(path: Path, name: str) -> Any:
    if name in _CSV:
        return pd.read_csv(path)
    if name == "settings":
        return _settings(json.loads(path.read_text()))
    if name in ("summary", "claims", "browser"):
        return json.loads(path.read_text())
    if name == "claim_data":
        return ClaimData.load(path)
    with np.load(path, allow_pickle=False) as z:
        if name == "views":
            return views_from_arrays(z)
        arrays = {k: np.asarray(z[k]) for k in z.files}
    if name == "directions":
        arrays.pop("mode", None)
    return arrays


def _settings(d: dict[str, Any]) -> AnalysisSettings:
    """The inverse of :meth:`AnalysisSettings.to_json`."""
    step = d.get("typical_step")
    return AnalysisSettings(
        mode=d["mode"],
        scale=d["scale"],
        window=float(d["window"]),
        lambdas=tuple(float(x) for x in d["lambdas"]),
        mu=float(d["mu"]),
        optimizer=Optimizer(**d["optimizer"]),
        typical_step=math.nan if step is None else float(step),
        resamples=int(d["resamples"]),
        level=float(d["level"]),
        overrides=tuple(d.get("overrides") or ()),
        paper_setting=bool(d.get("paper_setting", False)),
    )


# ---------------------------------------------------------------------------- publishing


def _work_dir(final: Path) -> Path:
    """A fresh private directory beside ``final`` for the tables being written.

    Leftovers of analyses that were killed (their process is gone) are removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}.*-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    work = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _publish(work: Path, final: Path) -> None:
    """Put the finished tables in place: ``work`` replaces ``final`` as a whole.

    A reader sees the old tables or the new ones, never a mix (an analysis killed before this
    point leaves the old tables untouched and its work directory for the next one to remove).
    What else lives there (a non-default analysis' ``figures/`` and page) moves along.
    """
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        for child in final.iterdir():
            if not (work / child.name).exists():
                os.replace(child, work / child.name)
        os.replace(final, old)
    os.replace(work, final)
    shutil.rmtree(old, ignore_errors=True)
