"""The run directory: resolved config, provenance, trajectory and line store in one place.

::

    RUN/
      config.toml        the resolved configuration (what was run, not what was typed)
      provenance.json    versions, git commit, device, seeds, precision flags, schema version
      trajectory/        checkpoints every C steps + per-step records
      lines.zarr/        the measurements (docs/store.md)
      precision_checks.jsonl   with measure.precision tf32/bf16: its error against fp32
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import RunConfig, read_toml, validate_config, write_config
from .engine.precision import check_precision
from .errors import RunDirError
from .provenance import collect_provenance
from .store.schema import SCHEMA_VERSION
from .trajectory.storage import TrajectoryDir

# Fields that say where or how fast to compute, not what: a run may resume with other values.
NON_SEMANTIC = (
    "problem.data_dir",
    "problem.download",
    "measure.engine",
    "measure.device",
    "measure.max_eval_batch",
    "measure.compile",
    "measure.memory_budget_mb",
    "measure.precision_check_every",
    "measure.workers",
)


def resolve_device(name: str, precision: str = "fp32") -> torch.device:
    """``auto`` → CUDA when available, else CPU. On CUDA, TF32 is switched off (fp32 results;
    ``measure.precision = "tf32"`` switches it on inside the fast engine only).

    Raises:
        RunDirError: a CUDA device is named but CUDA is not available.
        ConfigError: ``precision`` cannot run on the device (``tf32`` on CPU).
    """
    dev = torch.device(
        "cuda"
        if name == "auto" and torch.cuda.is_available()
        else ("cpu" if name == "auto" else name)
    )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RunDirError(
                f"measure.device {name!r} requested but CUDA is not available; use --device cpu"
            )
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    check_precision(precision, dev)
    return dev


class RunDir:
    """A run directory bound to its configuration."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = Path(path)
        self.config = config
        self.trajectory = TrajectoryDir(self.path / "trajectory")

    @property
    def lines_path(self) -> Path:
        """The Zarr line store."""
        return self.path / "lines.zarr"

    @classmethod
    def prepare(cls, path: Path, config: RunConfig) -> RunDir:
        """Create a run directory, or reopen one made with the same configuration.

        Raises:
            RunDirError: the directory holds another configuration or is not a run directory.
        """
        path = Path(path)
        cfg_file = path / "config.toml"
        if cfg_file.exists():
            stored = validate_config(read_toml(cfg_file), str(cfg_file))
            diff = [d for d in stored.diff(config) if d.split(":")[0] not in NON_SEMANTIC]
            if diff:
                raise RunDirError(
                    f"{path} was made with a different configuration ({'; '.join(diff[:4])}"
                    f"{'; …' if len(diff) > 4 else ''}); use a new --out directory or rerun "
                    "with the original settings"
                )
            run = cls(path, config)
        else:
            if path.exists() and any(path.iterdir()):
                raise RunDirError(
                    f"{path} exists, is not empty and has no config.toml; choose a "
                    "new --out directory"
                )
            path.mkdir(parents=True, exist_ok=True)
            write_config(config, cfg_file)
            run = cls(path, config)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open an existing run directory with its stored configuration."""
        cfg_file = Path(path) / "config.toml"
        if not cfg_file.exists():
            raise RunDirError(
                f"{path} is not a steplines run directory (no config.toml); pass "
                "the --out directory of a run"
            )
        return cls(Path(path), validate_config(read_toml(cfg_file), str(cfg_file)))

    def cpu_threads(self) -> int:
        """The run's CPU thread count: fixed at its first training (``trajectory/meta.json``)."""
        meta = self.trajectory.path / "meta.json"
        if meta.exists():
            return int(json.loads(meta.read_text())["cpu_threads"])
        n = self.config.train.cpu_threads or torch.get_num_threads()
        self.trajectory.path.mkdir(parents=True, exist_ok=True)
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cpu_threads": n}))
        tmp.replace(meta)
        return n

    def use_cpu_threads(self, device: torch.device) -> None:
        """On CPU, compute with the run's thread count so that replays are bitwise."""
        if device.type == "cpu":
            torch.set_num_threads(self.cpu_threads())

    def write_provenance(self, device: torch.device, problem_source: dict | None = None) -> None:
        """Write ``provenance.json`` (once per session; earlier sessions are kept in a list).

        ``problem_source``: for a user's problem, its spec, file and the file's sha256.
        """
        p = self.path / "provenance.json"
        seeds = {"run": self.config.train.seed, "split": self.config.problem.split_seed}
        precision = self.config.measure.precision
        record = collect_provenance(device, seeds, SCHEMA_VERSION, precision)
        if problem_source:
            record["problem_source"] = problem_source
        sessions = json.loads(p.read_text()).get("sessions", []) if p.exists() else []
        record["sessions"] = [
            *sessions,
            {k: record[k] for k in ("git_commit", "device", "precision", "packages")},
        ]
        p.write_text(json.dumps(record, indent=2, sort_keys=True))
