"""The fast engine as runs configure it equals the reference for every model and policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steplines.config import EngineConfig, MeasureConfig
from steplines.engine.common import EvalBatch, LinePolicy
from steplines.engine.factory import make_engine
from steplines.engine.fast import FastEvaluator, default_per_call
from steplines.engine.reference import reference_losses
from steplines.problems.models import make_model

from cases import make_case, random_anchor

POSITIONS = np.array([-0.5, -0.002, 0.0, 0.006, 0.137, 0.5])
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# model: (input channels, side, batch sizes) — two equal batches and a partial one
MODELS = {
    "digits-resnet": (1, 8, (16, 16, 5)),
    "resnet20": (3, 8, (8, 8, 3)),
    "mobilenetv2": (3, 8, (4, 4, 3)),
    "resnet18": (3, 8, (4, 4, 3)),
}
FAST_MODELS = ["digits-resnet", "resnet20"]


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def model_case(name: str, dtype: torch.dtype):
    ch, side, sizes = MODELS[name]
    torch.manual_seed(0)
    model = make_model(name, in_channels=ch, image_size=side).to(dtype)
    with torch.no_grad():  # non-trivial running statistics for the ``running`` policy
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    theta, direction, buffers = random_anchor(model)
    batches = [
        EvalBatch(torch.randn(n, ch, side, side, dtype=dtype), torch.randint(0, 10, (n,)), 7 + i)
        for i, n in enumerate(sizes)
    ]
    return model, theta, direction, buffers, batches


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("dropout", ["fixed", "off"])
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
@pytest.mark.parametrize("name", FAST_MODELS)
def test_run_engine_equals_reference(
    name: str, batchnorm: str, dropout: str, dtype: torch.dtype
) -> None:
    """The engine a run builds (channels-last, per-device call size) for the engine models."""
    model, theta, d, bufs, batches = model_case(name, dtype)
    policy = LinePolicy(batchnorm, dropout)
    m = MeasureConfig(batchnorm=batchnorm, dropout=dropout)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    ev = make_engine(
        EngineConfig.from_measure(m), model, loss_fn, torch.device("cpu"), policy=policy
    )
    fast = ev(theta, d, bufs, POSITIONS, batches)
    assert ev._compiled is None  # tiny lines never wait for the compiler
    assert torch.isfinite(ref).all()
    assert (fast - ref).abs().max().item() <= TOL[dtype]


@pytest.mark.slow
@pytest.mark.parametrize("dropout", ["fixed", "off"])
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
@pytest.mark.parametrize("name", ["mobilenetv2", "resnet18"])
def test_big_models_equal_reference(name: str, batchnorm: str, dropout: str) -> None:
    """MobileNetV2 and ResNet-18 (slow: minutes on CPU). float64 only: with 8×8 inputs and
    batches of 4 their last BatchNorm layers normalise over a handful of values, which
    amplifies float32 rounding of the channels-last convolutions past 1e-5 (float64 agrees
    to 1e-11, so the engine is exact; at CIFAR sizes float32 agrees as for ResNet-20)."""
    model, theta, d, bufs, batches = model_case(name, torch.float64)
    policy = LinePolicy(batchnorm, dropout)
    ref = reference_losses(model, theta, d, bufs, POSITIONS[:3], batches, policy, loss_fn)
    m = MeasureConfig(batchnorm=batchnorm, dropout=dropout)
    ev = make_engine(
        EngineConfig.from_measure(m), model, loss_fn, torch.device("cpu"), policy=policy
    )
    fast = ev(theta, d, bufs, POSITIONS[:3], batches)
    assert (fast - ref).abs().max().item() <= TOL[torch.float64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", ["conv_bn", "mlp_dropout"])
@pytest.mark.parametrize("budget_mb", [1e-4, 1e3])
def test_memory_budget_bounds_call_size(case: str, budget_mb: float, dtype: torch.dtype) -> None:
    model, theta, d, bufs, batches = make_case(case, dtype, sizes=(8, 8, 8, 8, 5))
    ev = FastEvaluator(model, LinePolicy(), loss_fn, 4096, memory_budget_mb=budget_mb)
    per_call = ev.per_call(batches)
    act = ev.profile(batches[0].x)[1]
    if budget_mb < 1:
        assert per_call == 1  # below one batch: one batch per call (the group is the unit)
    else:
        assert per_call == 4096 or per_call * act <= budget_mb * 2**20
    groups = ev._groups(batches, per_call)
    assert max(c.x.shape[0] for c in groups) <= max(per_call, 8)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    assert (ev(theta, d, bufs, POSITIONS, batches) - ref).abs().max().item() <= TOL[dtype]


def test_default_call_size_per_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_per_call(cuda, 8e7, 128) == 8192  # all samples of a position
    assert default_per_call(cpu, 8e7, 128) == 128  # ResNet-20: one BatchNorm batch
    assert default_per_call(cpu, 2.7e5, 128) == 128


def test_channels_last_grouped_batchnorm_equals_separate_batches() -> None:
    """Per-group statistics on channels-last input equal separate train-mode calls."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(5).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(12, 5, 3, 4, dtype=torch.float64)
    from steplines.engine.batchnorm import GroupedBatchNorm

    g = GroupedBatchNorm(bn)
    g.group = 4
    with torch.no_grad():
        want = torch.cat(
            [F.batch_norm(c, None, None, bn.weight, bn.bias, True, 0.0, bn.eps) for c in x.split(4)]
        )
        got = g(x.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(g(x), want, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["digits-resnet", "resnet20"])
def test_interleaved_calls_equal_reference(name: str, dtype: torch.dtype) -> None:
    """NCHW calls of several batches interleave their rows (sample i of batch j at i·G + j) and
    take all groups' BatchNorm statistics in one ATen call: same losses, rows in batch order."""
    model, theta, d, bufs, batches = model_case(name, dtype)
    ev = FastEvaluator(model, LinePolicy(), loss_fn, 4096)
    calls = ev._groups(batches, 4096)
    assert [c.interleaved for c in calls] == [True, False]  # two equal batches, a partial one
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    assert (ev(theta, d, bufs, POSITIONS, batches) - ref).abs().max().item() <= TOL[dtype]


def test_interleaved_batchnorm_equals_separate_batches() -> None:
    """BatchNorm1d and BatchNorm2d on interleaved rows = separate train-mode calls per group."""
    from steplines.engine.batchnorm import GroupedBatchNorm

    torch.manual_seed(0)
    for bn, shape in ((torch.nn.BatchNorm2d(5), (4, 5, 3, 2)), (torch.nn.BatchNorm1d(5), (4, 5))):
        bn = bn.double()
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        groups = [torch.randn(*shape, dtype=torch.float64) for _ in range(3)]
        g = GroupedBatchNorm(bn)
        g.group, g.interleaved = 4, True
        with torch.no_grad():
            want = torch.stack(
                [
                    F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
                    for x in groups
                ],
                1,
            ).flatten(0, 1)
            got = g(torch.stack(groups, 1).flatten(0, 1))
        assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
@pytest.mark.parametrize("name", ["digits-resnet", "resnet20"])
def test_compiled_engine_equals_reference(name: str, batchnorm: str) -> None:
    """torch.compile (inductor) of the per-group-BatchNorm forward: same losses (slow: compiles)."""
    model, theta, d, bufs, batches = model_case(name, torch.float32)
    policy = LinePolicy(batchnorm)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    ev = FastEvaluator(model, policy, loss_fn, 64, channels_last=True, compile=True)
    fast = ev(theta, d, bufs, POSITIONS, batches)
    assert ev._compiled is not None  # the compiled path ran (no silent eager fallback)
    assert (fast - ref).abs().max().item() <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
@pytest.mark.parametrize("per_call", [8, 64], ids=["1-batch", "grouped"])
@pytest.mark.parametrize("name", FAST_MODELS)
def test_channels_last_equals_reference(
    name: str, per_call: int, batchnorm: str, dtype: torch.dtype
) -> None:
    """Channels-last forced (the tiny test inputs are below the automatic threshold)."""
    model, theta, d, bufs, batches = model_case(name, dtype)
    if name == "digits-resnet":
        per_call *= 2  # batches of 16
    policy = LinePolicy(batchnorm)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    ev = FastEvaluator(model, policy, loss_fn, per_call, channels_last=True)
    fast = ev(theta, d, bufs, POSITIONS, batches)
    assert ev.channels_last
    assert (fast - ref).abs().max().item() <= TOL[dtype]


def test_channels_last_auto_follows_the_network_size() -> None:
    small = model_case("digits-resnet", torch.float32)
    ev = FastEvaluator(small[0], LinePolicy(), loss_fn, None, channels_last="auto")
    ev(*small[1:4], POSITIONS[:1], small[4])
    assert not ev.channels_last  # 0.27 MFLOP per sample: overhead-bound, NCHW
    torch.manual_seed(0)
    big = make_model("resnet20", image_size=32)
    x = torch.randn(2, 3, 32, 32)
    ev = FastEvaluator(big, LinePolicy(), loss_fn, None, channels_last="auto")
    ev._decide_layout([EvalBatch(x, torch.zeros(2, dtype=torch.long), 0)])
    assert ev.channels_last  # 81 MFLOP per sample


@pytest.mark.slow
def test_auto_compiles_large_lines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``compile="auto"`` compiles once a pass is large enough, with the same losses."""
    import steplines.engine.fast as ev_mod

    model, theta, d, bufs, batches = model_case("resnet20", torch.float32)
    policy = LinePolicy()
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    m = MeasureConfig()
    monkeypatch.setattr(ev_mod, "COMPILE_MIN_FLOP", 1.0)
    ev = make_engine(
        EngineConfig.from_measure(m), model, loss_fn, torch.device("cpu"), policy=policy
    )
    assert (ev(theta, d, bufs, POSITIONS, batches) - ref).abs().max().item() <= 1e-5
    assert ev._compiled is not None
