"""Arithmetic precision of the fast engine's forward passes, and its measured error.

``measure.precision`` selects how the fast engine computes the per-sample losses
ℓ_i(s) = loss(f(x_i; θ_t + s·d_t), y_i):

* ``fp32`` (default, the oracle): IEEE float32 throughout; TF32 is explicitly off for CUDA
  matmuls and cuDNN convolutions (torch enables it for cuDNN by default). Every result of the
  test suite and BENCHMARKS.md is fp32.
* ``tf32`` (CUDA only): matmuls and convolutions round their inputs to TF32 (10 explicit
  mantissa bits, relative rounding 2⁻¹¹ ≈ 4.9e-4, float32 range) on tensor cores and
  accumulate in float32; every other op stays float32.
* ``bf16``: ``torch.autocast(dtype=bfloat16)``: autocast-eligible ops (convolutions, linear
  layers, matmuls) run in bfloat16 (7 explicit mantissa bits, relative rounding 2⁻⁸ ≈ 3.9e-3,
  float32 range), their outputs are bfloat16; ops on autocast's float32 list (e.g. losses,
  softmax) and ops that promote with float32 operands run in float32, with TF32 off. The
  losses are returned as float32.

Positions θ_t + s·d_t are always formed in the run's dtype (``_foreach_add_``/``torch.add``
are not autocast ops and TF32 does not touch element-wise arithmetic), and the reference
engine, the estimators and training never use these modes.

A run in ``tf32`` or ``bf16`` records the error of its own lines: :func:`compare_lines`
measures a line a second time in fp32 and reports per-sample and full-batch differences.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def _bf16(device: torch.device) -> Iterator[None]:
    with _tf32(False), torch.autocast(device.type, dtype=torch.bfloat16):
        yield


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context in which the fast engine runs its forward passes and losses.

    ``fp32``: TF32 off for CUDA matmuls and cuDNN; ``tf32``: both on; ``bf16``:
    ``torch.autocast(device.type, dtype=torch.bfloat16)`` with TF32 off. The TF32 flags are
    restored on exit.

    Raises:
        ValueError: an unknown precision.
    """
    if precision == "fp32":
        return _tf32(False)
    if precision == "tf32":
        return _tf32(True)
    if precision == "bf16":
        return _bf16(device)
    raise ValueError(f"unknown precision {precision!r} (choose one of {', '.join(PRECISIONS)})")


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`~steplines.errors.ConfigError` when ``precision`` cannot run on ``device``."""
    if precision == "tf32" and device.type != "cuda":
        raise ConfigError(
            f"measure.precision 'tf32' exists only on CUDA GPUs, but the device is "
            f"{device.type}; use precision 'fp32' or 'bf16'"
        )


def engine_flags(precision: str, device: torch.device) -> dict[str, Any]:
    """The numerics flags as the fast engine sees them (read inside :func:`precision_context`)."""
    with precision_context(precision, device):
        return {
            "precision": precision,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "autocast": (
                str(torch.get_autocast_dtype(device.type)).removeprefix("torch.")
                if torch.is_autocast_enabled(device.type)
                else None
            ),
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def compare_lines(
    positions: np.ndarray,
    losses: np.ndarray,
    reference: np.ndarray,
    n_train: int,
) -> dict[str, Any]:
    """Error of one line measured at reduced precision against the same line in fp32.

    With ℓ (``losses``) and ℓ^fp32 (``reference``), both ``[rows, K]`` at the same positions
    s_k and the same rows (the first ``n_train`` rows are the full batch), over the entries
    finite in both:

        per_sample_max  = max_{i,k} |ℓ_i(s_k) − ℓ^fp32_i(s_k)|
        per_sample_mean = mean_{i,k} |ℓ_i(s_k) − ℓ^fp32_i(s_k)|
        full_batch_max  = max_k |L(s_k) − L^fp32(s_k)|,  L(s) = (1/N) Σ_{i<N} ℓ_i(s)
        s_min, s_min_fp32 = argmin_s L(s), argmin_s L^fp32(s) on the grid
        s_min_diff      = |s_min − s_min_fp32|

    Values that cannot be computed (no finite entry) are None.
    """
    lo, ref = losses.astype(np.float64), reference.astype(np.float64)
    both = np.isfinite(lo) & np.isfinite(ref)
    diff = np.abs(lo - ref)[both]
    with np.errstate(over="ignore", invalid="ignore"):
        full, full_ref = lo[:n_train].mean(axis=0), ref[:n_train].mean(axis=0)
    ok = np.isfinite(full) & np.isfinite(full_ref)
    out: dict[str, Any] = {
        "positions": len(positions),
        "rows": int(lo.shape[0]),
        "per_sample_max": _finite_or_none(diff.max()) if diff.size else None,
        "per_sample_mean": _finite_or_none(diff.mean()) if diff.size else None,
        "full_batch_max": None,
        "s_min": None,
        "s_min_fp32": None,
        "s_min_diff": None,
    }
    if ok.any():
        out["full_batch_max"] = float(np.abs(full - full_ref)[ok].max())
        s = positions[ok]
        s_min, s_ref = float(s[np.argmin(full[ok])]), float(s[np.argmin(full_ref[ok])])
        out.update(s_min=s_min, s_min_fp32=s_ref, s_min_diff=abs(s_min - s_ref))
    return out
