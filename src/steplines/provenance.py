"""Provenance of a run: versions, git commit, device, seeds and precision flags."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .engine.precision import engine_flags


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def precision_flags() -> dict[str, Any]:
    """Every torch flag that changes fp32 numerics (TF32, matmul precision, determinism)."""
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "num_threads": torch.get_num_threads(),
    }


def collect_provenance(
    device: torch.device,
    seeds: dict[str, int],
    schema_version: int,
    engine_precision: str = "fp32",
) -> dict[str, Any]:
    """Return the provenance record written to ``RUN/provenance.json``.

    ``precision`` holds the process-wide flags (:func:`precision_flags`) and, under
    ``engine``, ``measure.precision`` with the TF32 and autocast state the fast engine's
    forward passes run under (:func:`~steplines.engine.precision.engine_flags`).
    """
    dev: dict[str, Any] = {"type": device.type}
    if device.type == "cuda":
        dev["name"] = torch.cuda.get_device_name(device)
        dev["cuda"] = torch.version.cuda
    return {
        "schema_version": schema_version,
        "steplines": _version("steplines"),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            p: _version(p) for p in ("torch", "numpy", "zarr", "pydantic", "scikit-learn")
        },
        "device": dev,
        "seeds": seeds,
        "precision": {**precision_flags(), "engine": engine_flags(engine_precision, device)},
    }
