"""The run directory's layout: every path of ``RUN/`` named once, and its configuration reader.

::

    RUN/
      config.toml            the resolved configuration (what was run, not what was typed)
      provenance.json        versions, git commit, device, seeds, precision flags, schema
                             version, the user's problem file and its SHA-256 (written once)
      provenance.log.jsonl   one compact line per invocation (append-only)
      trajectory/            checkpoints every C steps + per-step records
                             (``steplines.trajectory.storage``), and the files read without
                             torch: meta.json (the run's CPU thread count) and
                             eval_<t>.json (eval-mode metrics at the checkpoints)
      lines.zarr/            the measurements (docs/store.md)
      directions.zarr/       the noisy-direction lines (``measure.noisy_every``)
      precision_checks.jsonl with measure.precision tf32/bf16: its error against fp32
      live.jsonl             one summary per measured line (``steplines.live``)
      tensorboard/           the same summaries as TensorBoard scalars
      locks/                 train.lock, segment_<c>.lock while a process writes
      analysis/              the default analysis' tables (``steplines.analysis.run``)
      analysis-<tag>/        any other analysis: its tables, figures/ and report.html
      figures/               the default report's figures (PNG, PDF)
      report.html            the default report (report.pdf: its figures as one PDF)
      compare.html           several runs' comparison page, in the first run's directory
      export/                ``steplines export``'s default files

:class:`RunLayout` is the one place these names are spelled: the analysis, the report, the
export, the live records and the CLI ask it, and :class:`steplines.rundir.RunDir` (device,
threads, provenance writing) builds on it. This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steplines.config import RunConfig, read_toml, validate_config
from steplines.errors import RunDirError

__all__ = [
    "ANALYSIS",
    "COMPARE",
    "CONFIG",
    "DIRECTIONS",
    "EVAL_GLOB",
    "EXPORT",
    "FIGURES",
    "LINES",
    "LIVE",
    "LOCKS",
    "PRECISION_CHECKS",
    "PROVENANCE",
    "PROVENANCE_LOG",
    "REPORT",
    "TENSORBOARD",
    "TRAJECTORY",
    "TRAJECTORY_META",
    "RunLayout",
    "eval_file",
    "store_mtime",
]

CONFIG = "config.toml"
PROVENANCE = "provenance.json"
PROVENANCE_LOG = "provenance.log.jsonl"
TRAJECTORY = "trajectory"
TRAJECTORY_META = "meta.json"
EVAL_GLOB = "eval_*.json"
LINES = "lines.zarr"
DIRECTIONS = "directions.zarr"
PRECISION_CHECKS = "precision_checks.jsonl"
LIVE = "live.jsonl"
TENSORBOARD = "tensorboard"
LOCKS = "locks"
ANALYSIS = "analysis"
FIGURES = "figures"
REPORT = "report.html"
COMPARE = "compare.html"
EXPORT = "export"


def eval_file(t: int) -> str:
    """The name of the eval-mode metrics at step ``t`` in ``trajectory/``: ``eval_<t>.json``."""
    return f"eval_{t:07d}.json"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (see the module docstring); nothing is read or made.

    Attributes:
        path: the run directory.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -------------------------------------------------------------------- configuration

    @property
    def config_path(self) -> Path:
        """``config.toml``: the resolved configuration."""
        return self.path / CONFIG

    def read_config(self, *, torch_checks: bool = False) -> RunConfig:
        """The run's configuration, validated (:func:`steplines.config.validate_config`).

        Args:
            torch_checks: also make the checks that import torch (the optimizer exists, takes
                ``optimizer_kwargs`` and needs no closure). ``config.toml`` passed them when it
                was written; the torch-free side (analysis, report, export) leaves them out.

        Raises:
            RunDirError: no ``config.toml``: not a run directory.
            ConfigError: the file is unreadable, not TOML, or holds an invalid configuration.
        """
        if not self.config_path.is_file():
            raise RunDirError(
                f"{self.path} is not a steplines run directory (no {CONFIG}); pass the --out "
                "directory of a run"
            )
        data = read_toml(self.config_path)
        return validate_config(data, str(self.config_path), torch_checks=torch_checks)

    def config_or_none(self) -> RunConfig | None:
        """:meth:`read_config`, or None when the directory has no ``config.toml`` (a store
        copied on its own: the analysis then takes the run as SGD and infers β).

        Raises:
            ConfigError: the file is unreadable, not TOML, or holds an invalid configuration.
        """
        return self.read_config() if self.config_path.is_file() else None

    # -------------------------------------------------------------------- written while running

    @property
    def provenance_path(self) -> Path:
        """``provenance.json``: the first session's versions, device, seeds and flags."""
        return self.path / PROVENANCE

    @property
    def provenance_log_path(self) -> Path:
        """``provenance.log.jsonl``: one compact JSON line per invocation (append-only)."""
        return self.path / PROVENANCE_LOG

    @property
    def trajectory_path(self) -> Path:
        """``trajectory/``: checkpoints and step records (``TrajectoryDir``)."""
        return self.path / TRAJECTORY

    @property
    def trajectory_meta_path(self) -> Path:
        """``trajectory/meta.json``: the run's CPU thread count, fixed at its first training."""
        return self.trajectory_path / TRAJECTORY_META

    def eval_path(self, t: int) -> Path:
        """``trajectory/eval_<t>.json``: eval-mode metrics of the checkpoint at step ``t``."""
        return self.trajectory_path / eval_file(t)

    def eval_paths(self) -> list[Path]:
        """Every ``trajectory/eval_*.json``, in step order."""
        return sorted(self.trajectory_path.glob(EVAL_GLOB))

    @property
    def lines_path(self) -> Path:
        """``lines.zarr``: the line store."""
        return self.path / LINES

    @property
    def directions_path(self) -> Path:
        """``directions.zarr``: the noisy-direction store."""
        return self.path / DIRECTIONS

    @property
    def precision_checks_path(self) -> Path:
        """``precision_checks.jsonl``: one record per fp32 check of a reduced precision."""
        return self.path / PRECISION_CHECKS

    @property
    def live_path(self) -> Path:
        """``live.jsonl``: one summary per measured line."""
        return self.path / LIVE

    @property
    def tensorboard_path(self) -> Path:
        """``tensorboard/``: the live summaries as TensorBoard scalars."""
        return self.path / TENSORBOARD

    @property
    def locks_path(self) -> Path:
        """``locks/``: the lock files of the processes writing the run."""
        return self.path / LOCKS

    @property
    def train_lock_path(self) -> Path:
        """``locks/train.lock``: held while the trajectory is trained."""
        return self.locks_path / "train.lock"

    def segment_lock_path(self, c: int) -> Path:
        """``locks/segment_<c>.lock``: held while the segment starting at step ``c`` is
        measured."""
        return self.locks_path / f"segment_{c:07d}.lock"

    # -------------------------------------------------------------------- derived files

    def analysis_dir(self, tag: str = "") -> Path:
        """Where an analysis is written: ``analysis/`` (default, ``tag == ""``) or
        ``analysis-<tag>/``."""
        return self.path / (ANALYSIS if not tag else f"{ANALYSIS}-{tag}")

    def _beside(self, tables: Path | None, name: str) -> Path:
        if tables is None or Path(tables).name == ANALYSIS:
            return self.path / name
        return Path(tables) / name

    def figures_dir(self, tables: Path | None = None) -> Path:
        """The figures of the analysis in ``tables``: ``figures/`` for the default analysis
        (``tables`` None or ``analysis/``), else ``analysis-<tag>/figures/``."""
        return self._beside(tables, FIGURES)

    def report_path(self, tables: Path | None = None) -> Path:
        """The report page of the analysis in ``tables``: ``report.html`` for the default
        analysis, else ``analysis-<tag>/report.html`` (its PDF: the same name, ``.pdf``)."""
        return self._beside(tables, REPORT)

    @property
    def compare_path(self) -> Path:
        """``compare.html``: the comparison page of several runs, in the first one."""
        return self.path / COMPARE

    @property
    def export_path(self) -> Path:
        """``export/``: where ``steplines export`` writes by default."""
        return self.path / EXPORT


def store_mtime(store: Path) -> float:
    """Newest modification time of a line store's metadata and done mask (written last per
    line): an analysis older than this is stale."""
    times = [store.stat().st_mtime]
    for sub in (store / "zarr.json", store / "done"):
        if sub.exists():
            times.append(sub.stat().st_mtime)
            if sub.is_dir():
                times.extend(p.stat().st_mtime for p in sub.rglob("*") if p.is_file())
    return max(times)
