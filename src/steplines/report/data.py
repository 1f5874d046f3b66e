"""What the report of one run draws from: its analysis tables as they were written, read back
and never recomputed, with the run's configuration, its provenance and the banners that say
what is missing or rough (``docs/report.md``).

:class:`RunData` holds the :class:`~steplines.analysis.tables.AnalysisTables` themselves and
gives the report modules their fields by name. This module does not analyse a run and never
opens its line store: deciding whether the tables must be made first is
:func:`steplines.reporting.load_run`'s job. It never imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steplines.analysis.tables import AnalysisTables, LineCounts
from steplines.analysis.views import LineView
from steplines.errors import RunDirError
from steplines.locks import held_locks
from steplines.report.numbers import read_json
from steplines.store.run import RunLayout

if TYPE_CHECKING:
    from steplines.config import RunConfig

__all__ = ["RunData", "banner"]

FEW_LINES = 50
"""Fewer lines than this: the moving averages and the 'later lines' statistics are rough."""


@dataclass(frozen=True)
class RunData:
    """Everything the report of one run draws from.

    Attributes:
        path: The run directory.
        config: The run's configuration (None without a ``config.toml``).
        provenance: ``provenance.json`` as a dict ({} if absent).
        tables: The analysis tables (``RUN/analysis`` or ``RUN/analysis-<tag>`` for a
            non-default mode, scale or override), read with :meth:`AnalysisTables.read`.
        banners: Problems found while loading (shown at the top of the page).
    """

    path: Path
    config: RunConfig | None
    provenance: dict[str, Any]
    tables: AnalysisTables
    banners: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_tables(cls, run_dir: Path, tables: AnalysisTables) -> RunData:
        """The run ``run_dir`` with its ``tables`` (read already), its ``config.toml``, its
        ``provenance.json`` and the banners about what is missing or rough.

        Raises:
            ConfigError: ``config.toml`` is invalid.
        """
        run_dir = Path(run_dir)
        layout = RunLayout(run_dir)
        banners: list[dict[str, str]] = []
        if not layout.lines_path.is_dir():
            banners.append(
                banner(
                    f"{layout.lines_path.name} is missing: figures that need the raw lines are "
                    "left out."
                )
            )
        config = layout.config_or_none()
        if config is None:
            banners.append(_no_config(layout, tables.summary))
        provenance = _provenance(layout, banners)
        banners += _run_banners(run_dir, config, tables)
        return cls(run_dir, config, provenance, tables, banners)

    def with_claims(self, claims: list[dict[str, Any]], family: str) -> RunData:
        """This run with ``claims`` judged under ``family`` in place of its own (the files of
        its tables are left as they are)."""
        summary = {**self.tables.summary, "claims_family": family}
        tables = dataclasses.replace(self.tables, claims=claims, summary=summary)
        return dataclasses.replace(self, tables=tables)

    # ------------------------------------------------------------------------------ where

    @property
    def layout(self) -> RunLayout:
        """The run directory's paths."""
        return RunLayout(self.path)

    @property
    def analysis(self) -> Path:
        """The directory of the tables (``RUN/analysis`` when they were not read from one)."""
        return self.tables.directory or self.layout.analysis_dir()

    @property
    def figures(self) -> Path:
        """Where this analysis' figures go: ``RUN/figures`` (default) or beside its tables."""
        return self.layout.figures_dir(self.tables.directory)

    @property
    def page(self) -> Path:
        """``RUN/report.html`` for the default analysis, else beside its tables."""
        return self.layout.report_path(self.tables.directory)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    # ------------------------------------------------------------------------------ tables

    @property
    def mode(self) -> str:
        """The analysis mode of the tables (``corrected`` or ``faithful``)."""
        return self.tables.mode

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``."""
        return self.tables.summary

    @property
    def strategies(self) -> pd.DataFrame:
        """``strategies.csv``."""
        return self.tables.strategies

    @property
    def fits(self) -> pd.DataFrame:
        """``fits.csv``."""
        return self.tables.fits

    @property
    def derivatives(self) -> pd.DataFrame:
        """``derivatives.csv``."""
        return self.tables.derivatives

    @property
    def batch_size(self) -> pd.DataFrame:
        """``batch_size.csv``."""
        return self.tables.batch_size

    @property
    def distances(self) -> dict[str, np.ndarray]:
        """The arrays of ``distances.npz``."""
        return self.tables.distances

    @property
    def estimators(self) -> pd.DataFrame | None:
        """``estimators.csv``, or None when the analysis predates it."""
        return self.tables.estimators

    @property
    def claims(self) -> list[dict[str, Any]]:
        """``claims.json``: one record per claim of the paper ([] when it holds no list)."""
        claims = self.tables.claims
        return claims if isinstance(claims, list) else []

    @property
    def training(self) -> pd.DataFrame:
        """``training.csv`` (l(0), validation loss at 0, batch loss per line)."""
        return self.tables.training

    @property
    def views(self) -> list[LineView]:
        """The representative lines of ``views.npz``."""
        return self.tables.views

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


def banner(text: str, level: str = "warning") -> dict[str, str]:
    """One banner at the top of a page (``level``: ``warning`` or ``error``)."""
    return {"text": text, "level": level}


def _no_config(layout: RunLayout, summary: dict[str, Any]) -> dict[str, str]:
    return banner(
        f"{layout.config_path.name} is missing: what was run is unknown; β was "
        f"{summary.get('momentum_source', 'inferred')} as {summary.get('momentum')}."
    )


def _provenance(layout: RunLayout, banners: list[dict[str, str]]) -> dict[str, Any]:
    """``provenance.json``, or {} with a banner saying why not."""
    path = layout.provenance_path
    if not path.is_file():
        banners.append(banner(f"{path.name} is missing: versions and device are unknown."))
        return {}
    try:
        return read_json(path)
    except RunDirError as exc:
        banners.append(banner(str(exc)))
        return {}


def _run_banners(
    run_dir: Path, config: RunConfig | None, tables: AnalysisTables
) -> list[dict[str, str]]:
    """Banners on the run itself: being measured, lines not measured, few lines, β inferred."""
    out = []
    summary = tables.summary
    if busy := held_locks(run_dir):
        out.append(
            banner(
                f"This run is being measured right now ({', '.join(busy)} held): the page shows "
                "the lines finished so far; build the report again when the run has ended."
            )
        )
    lines = tables.lines
    if lines.missing:
        out.append(_missing_lines(lines, config))
    if lines.used < FEW_LINES:
        out.append(
            banner(
                f"Only {lines.used} lines: the 25-line moving averages and the 'later lines' "
                "statistics (the paper starts them at line 50 of 10 000) are rough."
            )
        )
    if summary.get("momentum_source") == "inferred":
        out.append(
            banner(f"β inferred from the store as {summary.get('momentum')} (no config value).")
        )
    return out


def _missing_lines(lines: LineCounts, config: RunConfig | None) -> dict[str, str]:
    """The error banner on lines the run set out to measure but has not.

    Those lines are the ones measured and the ones missing (``summary.json``'s
    ``lines_missing`` counts only lines a LineProbe schedule asks for, so the lines it skips
    are neither).
    """
    how = (
        "your training loop and the same LineProbe settings (it measures only the missing lines)"
        if config is not None and config.probe is not None
        else "'steplines measure RUN'"
    )
    return banner(
        f"{lines.missing} of {lines.used + lines.missing} lines are not measured (not done): "
        f"every number and figure covers the {lines.used} measured lines only. Measure the "
        f"rest with {how} and rebuild the report.",
        "error",
    )
