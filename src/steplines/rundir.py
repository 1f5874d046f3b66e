"""The run directory, torch side: its device, CPU threads and provenance writing.

Every path of a run directory and its configuration reader are
:class:`steplines.store.run.RunLayout` (no torch; its docstring lists the layout);
:class:`RunDir` holds one (``run.layout``) with the run's configuration and adds what needs
torch: the device, the run's thread count, the provenance record and the user's problem.
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .atomic import append_line, read_json_lines, write_atomic
from .config import RunConfig, write_config
from .engine.precision import check_precision
from .errors import ConfigError, RunDirError
from .provenance import collect_provenance
from .store.run import PROVENANCE_LOG, RunLayout
from .store.schema import SCHEMA_VERSION
from .trajectory.storage import TrajectoryDir

if TYPE_CHECKING:
    from .problems.problem import Problem


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    """Refuse a device name steplines cannot use (``tpu``, ``cuda:abc``) in one line.

    Raises:
        ConfigError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    if not _DEVICE.fullmatch(name):
        raise ConfigError(
            f"device {name!r} is not one steplines can use; give auto, cpu, cuda or cuda:N "
            "(e.g. --device cpu)"
        )


def resolve_device(name: str, precision: str = "fp32") -> torch.device:
    """``auto`` → CUDA when available, else CPU. On CUDA, TF32 is switched off (fp32 results;
    ``measure.precision = "tf32"`` switches it on inside the fast engine only).

    Raises:
        RunDirError: a CUDA device is named but CUDA is not available.
        ConfigError: ``precision`` cannot run on the device (``tf32`` on CPU).
    """
    check_device_name(name)
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
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RunDirError(
                f"measure.device {name!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s); use --device cuda or a lower index"
            )
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    check_precision(precision, dev)
    return dev


class RunDir:
    """A run directory bound to its configuration.

    Attributes:
        path: the run directory.
        config: its configuration.
        layout: its paths (:class:`steplines.store.run.RunLayout`).
        trajectory: its ``trajectory/`` (checkpoints and step records).
    """

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.layout = RunLayout(Path(path))
        self.path = self.layout.path
        self.config = config
        self.trajectory = TrajectoryDir(self.layout.trajectory_path)

    @property
    def lines_path(self) -> Path:
        """The Zarr line store (``RunLayout.lines_path``)."""
        return self.layout.lines_path

    @classmethod
    def prepare(cls, path: Path, config: RunConfig) -> RunDir:
        """Create a run directory, or reopen one made with the same configuration.

        Raises:
            RunDirError: the directory holds another configuration or is not a run directory.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path} is a file, not a directory; choose a directory")
        layout = RunLayout(path)
        if layout.config_path.exists():
            stored = layout.read_config(torch_checks=True)
            if stored.problem.factory:  # older runs stored a relative path as typed
                from .problems.problem import resolve_problem_spec

                pc = stored.problem.model_copy(
                    update={"factory": resolve_problem_spec(stored.problem.factory)}
                )
                stored = stored.model_copy(update={"problem": pc})
            diff = stored.resume_diff(config)  # the data location and EngineConfig may differ
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
                    f"{path} exists, is not empty and has no {layout.config_path.name}; choose "
                    "a new --out directory"
                )
            path.mkdir(parents=True, exist_ok=True)
            write_config(config, layout.config_path)
            run = cls(path, config)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open an existing run directory with its stored configuration.

        Raises:
            RunDirError: no ``config.toml``: not a run directory.
            ConfigError: an invalid configuration.
        """
        return cls(Path(path), RunLayout(Path(path)).read_config(torch_checks=True))

    def cpu_threads(self) -> int:
        """The run's CPU thread count: fixed at its first training (``trajectory/meta.json``)."""
        meta = self.layout.trajectory_meta_path
        if meta.exists():
            try:
                n = int(json.loads(meta.read_text())["cpu_threads"])
                if n >= 1:
                    return n
            except (OSError, ValueError, TypeError, KeyError):
                pass
            if self.config.train.cpu_threads is None:
                raise RunDirError(
                    f"{meta} is damaged and holds the run's CPU thread count; write "
                    '{"cpu_threads": N} into it with the count the run was trained with '
                    "(torch's default on that machine, usually its number of cores)"
                )
        n = self.config.train.cpu_threads or torch.get_num_threads()
        self.trajectory.path.mkdir(parents=True, exist_ok=True)
        write_atomic(meta, json.dumps({"cpu_threads": n}))
        return n

    def use_cpu_threads(self, device: torch.device) -> None:
        """On CPU, compute with the run's thread count so that replays are bitwise."""
        if device.type == "cpu":
            torch.set_num_threads(self.cpu_threads())

    @property
    def provenance_path(self) -> Path:
        """``provenance.json``: the first session's versions, device, seeds and flags."""
        return self.layout.provenance_path

    @property
    def provenance_log_path(self) -> Path:
        """``provenance.log.jsonl``: one compact JSON line per invocation (append-only)."""
        return self.layout.provenance_log_path

    def read_provenance(self) -> dict | None:
        """``provenance.json`` as a dict; None when missing or damaged (cut off, not JSON).

        Both layouts are read: this one (written once, sessions in the log) and the older one
        that kept a ``sessions`` list in the file.
        """
        try:
            record = json.loads(self.provenance_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def recorded_problem_source(self) -> dict | None:
        """``{"spec", "file", "sha256"}`` of the user's problem file, as provenance recorded it
        (from ``provenance.json``, else from the invocation log if that file is damaged)."""
        source = (self.read_provenance() or {}).get("problem_source")
        if isinstance(source, dict):
            return source
        for rec in reversed(read_json_lines(self.provenance_log_path)):
            if isinstance(rec.get("problem_source"), dict):
                return rec["problem_source"]
        return None

    def check_problem_source(self, source: dict | None) -> None:
        """Refuse a user's problem file other than the one this run was made with.

        Raises:
            ConfigError: the run recorded a SHA-256 and ``source`` has another one.
        """
        recorded = (self.recorded_problem_source() or {}).get("sha256")
        got = (source or {}).get("sha256")
        if recorded and got and recorded != got:
            raise ConfigError(
                f"{source.get('file') if source else '?'} has SHA-256 {got[:12]}…, but "
                f"{self.path} was made with a file of SHA-256 {recorded[:12]}…; pass the "
                "original problem file, or use a new --out directory"
            )

    def trusted_problem_spec(
        self, spec: str | None = None, trust: bool = False, command: str = "measure"
    ) -> str | None:
        """The spec of the run's user problem that may be imported now, checked without
        importing it; None for a built-in problem.

        A user's problem (``problem.factory``) is imported only when the user says so for this
        invocation — ``spec`` (``--problem``, which may name the same file at another path) or
        ``trust`` (``--trust-problem``: the stored spec) — and only if the file's SHA-256
        equals the one recorded in provenance.

        ``command``: the CLI command, for the hint (``verify`` also offers ``--no-replay``).

        Raises:
            ConfigError: user code neither named nor trusted, no recorded SHA-256, or a file
                whose SHA-256 differs — one line saying what to pass.
        """
        from .problems.problem import check_problem_file, resolve_problem_spec

        factory = self.config.problem.factory
        if not factory:
            if spec is not None:
                raise ConfigError(
                    f"{self.path} uses the built-in {self.config.problem.dataset} problem; "
                    "leave out --problem"
                )
            return None
        run = shlex.quote(str(self.path))
        if spec is None and not trust:
            raise ConfigError(
                f"{self.path} names user code ({factory}) and a run directory runs no code "
                f"unless you say so; if you trust it, pass --problem {shlex.quote(factory)} "
                f"(or --trust-problem), e.g. steplines {command} {run} --trust-problem"
                + (" (or skip the replay with --no-replay)" if command == "verify" else "")
            )
        spec = resolve_problem_spec(spec or factory)
        expected = (self.recorded_problem_source() or {}).get("sha256")
        if not expected:
            raise ConfigError(
                f"{self.provenance_path} records no SHA-256 of the problem file, so "
                f"{spec} cannot be checked and is not imported; measure again into a new run "
                "directory with steplines run --problem …"
            )
        check_problem_file(spec, expected)
        return spec

    def load_problem(self, spec: str | None = None, trust: bool = False) -> Problem:
        """The run's problem; a user's one only as :meth:`trusted_problem_spec` allows.

        Raises:
            ConfigError: see :meth:`trusted_problem_spec`; a failing user problem.
            DataError: the data set is missing.
        """
        from .problems.problem import load_problem_factory, make_problem

        checked = self.trusted_problem_spec(spec, trust)
        if checked is None:
            return make_problem(self.config.problem)
        expected = (self.recorded_problem_source() or {})["sha256"]
        return load_problem_factory(checked, expected_sha256=expected)

    def with_problem_spec(self, spec: str | None) -> RunDir:
        """This run with ``problem.factory`` pointing at ``spec`` (None: unchanged)."""
        if spec is None:
            return self
        pc = self.config.problem.model_copy(update={"factory": spec})
        return RunDir(self.path, self.config.model_copy(update={"problem": pc}))

    def write_provenance(self, device: torch.device, problem_source: dict | None = None) -> None:
        """Record this invocation's provenance.

        ``provenance.json`` (versions, git commit, device, seeds, precision flags, schema
        version, the user's problem file and its SHA-256) is written once, atomically, and
        rebuilt only when missing or damaged (it is derived metadata); every invocation adds
        one compact line to ``provenance.log.jsonl`` (time, versions, device, threads), so the
        directory grows by ~200 bytes per invocation, not by a rewritten copy.

        Args:
            device: where this invocation computes.
            problem_source: for a user's problem, its spec, file and the file's sha256.
        """
        seeds = {"run": self.config.train.seed, "split": self.config.problem.split_seed}
        precision = self.config.measure.precision
        record = collect_provenance(device, seeds, SCHEMA_VERSION, precision)
        source = problem_source or self.recorded_problem_source()
        if self.read_provenance() is None:
            if source:
                record["problem_source"] = source
            record["log"] = PROVENANCE_LOG
            write_atomic(self.provenance_path, json.dumps(record, indent=2, sort_keys=True))
        line: dict = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "steplines": record["steplines"],
            "git_commit": record["git_commit"],
            "torch": record["packages"].get("torch"),
            "device": record["device"].get("name", record["device"]["type"]),
            "threads": record["precision"]["num_threads"],
            "precision": precision,
        }
        if source:
            line["problem_source"] = {"sha256": source.get("sha256")}  # the spec: config.toml
        append_line(self.provenance_log_path, line)
