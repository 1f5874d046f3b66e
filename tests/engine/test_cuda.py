"""GPU path (opt-in: ``pytest -m gpu``): the fast engine equals the reference on CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steplines.engine.common import LinePolicy
from steplines.engine.fast import FastEvaluator
from steplines.engine.reference import reference_losses

from cases import CASES, make_case, random_anchor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

POSITIONS = np.array([-0.5, -0.002, 0.0, 0.006, 0.137, 0.5, 1.9])


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@pytest.fixture(autouse=True)
def _no_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_equals_reference_on_cuda(case: str, batchnorm: str, dtype: torch.dtype) -> None:
    model, theta, d, bufs, batches = make_case(case, dtype)
    dev = torch.device("cuda")
    model = model.to(dev)
    theta, d, bufs = ([t.to(dev) for t in x] for x in (theta, d, bufs))
    batches = [type(b)(b.x.to(dev), b.y.to(dev), b.dropout_seed) for b in batches]
    policy = LinePolicy(batchnorm=batchnorm)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    fast = FastEvaluator(model, policy, loss_fn, 24)(theta, d, bufs, POSITIONS, batches)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert (fast - ref).abs().max().item() <= tol


def test_run_on_cuda_replays_exactly(tiny_config: Path, tmp_path: Path) -> None:
    from steplines.config import load_config
    from steplines.measure import run_all
    from steplines.rundir import RunDir
    from steplines.store import LineStore

    cfg = load_config(path=tiny_config, overrides={"measure.device": "cuda"})
    run = RunDir.prepare(tmp_path / "run", cfg)
    run_all(run)
    assert LineStore.open(run.lines_path).done().all()


@pytest.mark.parametrize("compile_", ["off", "on"])
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
def test_run_engine_on_cuda_equals_reference(batchnorm: str, compile_: str) -> None:
    """The engine a run builds on CUDA (channels-last, all samples of a position per call,
    optionally compiled) equals the reference (float32, TF32 off)."""
    from steplines.config import EngineConfig, MeasureConfig
    from steplines.engine.factory import make_engine
    from steplines.problems.models import make_model

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = make_model("resnet20", image_size=16).to(dev)
    theta, d, bufs = random_anchor(model)
    from steplines.engine.common import EvalBatch

    batches = [
        EvalBatch(torch.randn(n, 3, 16, 16, device=dev), torch.randint(0, 10, (n,), device=dev), i)
        for i, n in enumerate((32, 32, 32, 7))
    ]
    policy = LinePolicy(batchnorm=batchnorm)
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    m = MeasureConfig(batchnorm=batchnorm, compile=compile_)
    ev = make_engine(EngineConfig.from_measure(m), model, loss_fn, dev, policy=policy)
    fast = ev(theta, d, bufs, POSITIONS, batches)
    assert ev.channels_last and ev.per_call(batches) >= 96
    assert (fast - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("precision", "bound"), [("tf32", 0.01), ("bf16", 0.05)])
def test_reduced_precision_on_cuda_changes_the_numbers_within_a_bound(
    precision: str, bound: float
) -> None:
    from steplines.engine.common import EvalBatch
    from steplines.problems.models import make_model

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = make_model("resnet20", in_channels=3, image_size=8).to(dev)
    theta, d, bufs = random_anchor(model)
    batches = [
        EvalBatch(torch.randn(n, 3, 8, 8, device=dev), torch.randint(0, 10, (n,), device=dev), i)
        for i, n in enumerate((16, 16, 5))
    ]
    pos = POSITIONS[:-1]
    fp32 = FastEvaluator(model, LinePolicy(), loss_fn, None)(theta, d, bufs, pos, batches)
    low = FastEvaluator(model, LinePolicy(), loss_fn, None, precision=precision)
    diff = (low(theta, d, bufs, pos, batches) - fp32).abs().max().item()
    assert 0 < diff < bound * fp32.abs().max().item()  # relative to the losses' size
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
