"""Opt-in precisions of the fast engine: fp32 is the default bit for bit, bf16 really changes
the numbers (within a loose bound), tf32 is refused off CUDA, and a line's error is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steplines.config import EngineConfig, MeasureConfig, load_config
from steplines.engine.common import LinePolicy
from steplines.engine.factory import make_engine
from steplines.engine.fast import FastEvaluator
from steplines.engine.precision import (
    check_precision,
    compare_lines,
    engine_flags,
    precision_context,
)
from steplines.errors import ConfigError
from steplines.measure import LineMeasurer
from steplines.provenance import collect_provenance
from steplines.rundir import resolve_device
from steplines.store.run import PRECISION_CHECKS
from steplines.trajectory.loop import LineAnchor, StepRecord

from cases import digits_line

CPU = torch.device("cpu")
POSITIONS = np.array([-0.5, -0.002, 0.0, 0.006, 0.137, 0.5])


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@pytest.fixture(scope="module")
def digits():
    """The digits network on 8×8 inputs: θ, a unit direction, buffers, two batches + a partial."""
    return digits_line((16, 16, 5))


def test_fp32_is_bitwise_the_default(digits) -> None:
    model, theta, d, bufs, batches = digits
    default = FastEvaluator(model, LinePolicy(), loss_fn, None)(theta, d, bufs, POSITIONS, batches)
    fp32 = FastEvaluator(model, LinePolicy(), loss_fn, None, precision="fp32")
    assert torch.equal(fp32(theta, d, bufs, POSITIONS, batches), default)
    m = MeasureConfig()
    assert m.precision == "fp32"
    run_engine = make_engine(
        EngineConfig.from_measure(m), model, loss_fn, CPU, precision=m.precision
    )
    assert run_engine.precision == "fp32"
    assert torch.equal(run_engine(theta, d, bufs, POSITIONS, batches), default)


def test_bf16_changes_the_numbers_within_a_loose_bound(digits) -> None:
    model, theta, d, bufs, batches = digits
    fp32 = FastEvaluator(model, LinePolicy(), loss_fn, None)(theta, d, bufs, POSITIONS, batches)
    bf16 = FastEvaluator(model, LinePolicy(), loss_fn, None, precision="bf16")
    low = bf16(theta, d, bufs, POSITIONS, batches)
    assert low.dtype == torch.float32 and low.shape == fp32.shape
    assert torch.isfinite(low).all()
    diff = (low - fp32).abs()
    assert diff.max().item() > 0  # the mode really computes in bfloat16
    # bf16 rounds to 2⁻⁸ relative: losses of ≈ 2.8 stay within a few hundredths
    assert diff.max().item() < 0.1 and diff.mean().item() < 0.02
    assert not torch.is_autocast_enabled("cpu")  # the context is left


def test_low_precision_never_compiles(digits) -> None:
    model = digits[0]
    assert FastEvaluator(model, LinePolicy(), loss_fn, compile=True).compile is True
    assert (
        FastEvaluator(model, LinePolicy(), loss_fn, compile=True, precision="bf16").compile is False
    )


def test_precision_context_sets_and_restores_the_tf32_flags() -> None:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with precision_context("fp32", CPU):
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with precision_context("tf32", CPU):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with precision_context("bf16", CPU):
            assert torch.is_autocast_enabled("cpu")
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert not torch.is_autocast_enabled("cpu") and torch.backends.cudnn.allow_tf32
        with pytest.raises(ValueError, match="unknown precision"):
            precision_context("fp8", CPU)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_provenance_records_the_engine_flags() -> None:
    assert engine_flags("bf16", CPU)["autocast"] == "bfloat16"
    prov = collect_provenance(CPU, {"run": 1}, 3, "bf16")["precision"]
    assert prov["engine"]["precision"] == "bf16" and prov["engine"]["autocast"] == "bfloat16"
    fp32 = collect_provenance(CPU, {"run": 1}, 3)["precision"]["engine"]
    assert fp32 == {
        "precision": "fp32",
        "cuda_matmul_allow_tf32": False,
        "cudnn_allow_tf32": False,
        "autocast": None,
    }


def test_tf32_is_refused_off_cuda_and_bf16_needs_float32() -> None:
    with pytest.raises(
        ConfigError, match=r"exists only on CUDA GPUs.*use precision 'fp32' or 'bf16'"
    ):
        check_precision("tf32", CPU)
    with pytest.raises(ConfigError, match="only on CUDA GPUs"):
        resolve_device("cpu", "tf32")
    check_precision("bf16", CPU)
    assert resolve_device("cpu", "bf16") == CPU
    with pytest.raises(ConfigError, match=r"measure: precision 'bf16' .* needs dtype = 'float32'"):
        load_config(overrides={"measure.precision": "bf16", "measure.dtype": "float64"})
    with pytest.raises(ConfigError, match="reference engine is the fp32 oracle"):
        load_config(overrides={"measure.precision": "bf16", "measure.engine": "reference"})
    with pytest.raises(ConfigError, match=r"measure\.precision"):
        load_config(overrides={"measure.precision": "fp16"})
    with pytest.raises(ConfigError, match=r"measure\.precision_check_every"):
        load_config(overrides={"measure.precision_check_every": 0})


def test_compare_lines_formulas() -> None:
    pos = np.array([-0.1, 0.0, 0.1, 0.2])
    ref = np.array([[3.0, 2.0, 1.0, 2.0], [3.0, 2.0, 1.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    low = ref.copy()
    low[0] = [3.0, 2.0, 1.5, 0.5]  # train row 0 moves the full-batch minimum to s = 0.2
    low[2, 0] = np.inf  # a non-finite entry (an overflow far out) is left out
    c = compare_lines(pos, low.astype(np.float32), ref.astype(np.float32), n_train=2)
    assert c["per_sample_max"] == 1.5
    assert c["per_sample_mean"] == pytest.approx(2.0 / 11)
    # L = (ℓ₀ + ℓ₁)/2: [3, 2, 1.25, 1.25] against [3, 2, 1, 2]
    assert c["full_batch_max"] == pytest.approx(0.75)
    assert (c["s_min"], c["s_min_fp32"]) == (0.1, 0.1)  # the first of the tied minima
    assert c["s_min_diff"] == 0.0
    assert (c["positions"], c["rows"]) == (4, 3)
    low[0] = [3.0, 2.0, 1.5, -0.5]
    assert compare_lines(pos, low, ref, n_train=2)["s_min_diff"] == pytest.approx(0.1)
    nothing = compare_lines(pos, np.full((2, 4), np.nan), ref[:2], n_train=2)
    assert nothing["per_sample_max"] is None and nothing["s_min_diff"] is None


def _anchor(t: int, theta, d, bufs) -> LineAnchor:
    record = StepRecord(
        rows=np.arange(16),
        aug_seed=1,
        dropout_seed=2,
        batch_loss=2.5,
        grad_norm=1.0,
        direction_norm=0.1,
        s_update=0.1,
        directional_derivative=-1.0,
        lr=0.1,
    )
    return LineAnchor(t, theta, d, bufs, record)


def test_line_measurer_records_the_error_on_its_own_lines(digits, tmp_path: Path) -> None:
    model, theta, d, bufs, batches = digits
    m = MeasureConfig(
        precision="bf16",
        precision_check_every=2,
        estimators=False,
        grid="symmetric",
        resolution=0.25,
        max_passes=1,
    )
    path = tmp_path / PRECISION_CHECKS
    measurer = LineMeasurer(m, model, loss_fn, CPU, 16, record_path=path)
    records = [
        measurer(_anchor(t, theta, d, bufs), batches[:2], batches[2:], batches[0], np.arange(32))
        for t in range(10, 15)
    ]
    checks = [json.loads(line) for line in path.read_text().splitlines()]
    assert [c["t"] for c in checks] == [10, 12, 14]  # its first line, then every 2nd
    for c in checks:
        assert c["precision"] == "bf16" and c["rows"] == 16 + 16 + 5 + 16
        assert 0 < c["per_sample_max"] < 0.1 and 0 < c["per_sample_mean"] <= c["per_sample_max"]
        assert 0 < c["full_batch_max"] <= c["per_sample_max"]
        assert c["s_min_diff"] >= 0
    assert c["positions"] == records[-1].positions.size
    # fp32 measures no check; the report reads the file the engine writes
    plain = LineMeasurer(MeasureConfig(estimators=False), model, loss_fn, CPU, 16, record_path=path)
    assert plain.fp32 is None
