"""The fast engine equals the reference engine; neither changes model state or RNG streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steplines.engine.common import LinePolicy
from steplines.engine.fast import FastEvaluator
from steplines.engine.reference import reference_losses

from cases import CASES, make_case


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


POSITIONS = np.array([-0.5, -0.002, 0.0, 0.006, 0.137, 0.5, 1.9])
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("max_eval_batch", [8, 24, 4096], ids=lambda m: f"meb={m}")
def test_fast_equals_reference(
    case: str, batchnorm: str, dtype: torch.dtype, max_eval_batch: int
) -> None:
    model, theta, d, bufs, batches = make_case(case, dtype)
    policy = LinePolicy(batchnorm=batchnorm, dropout="fixed")
    ref = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
    fast = FastEvaluator(model, policy, loss_fn, max_eval_batch)(theta, d, bufs, POSITIONS, batches)
    assert ref.shape == fast.shape == (29, len(POSITIONS))
    assert torch.isfinite(ref).all()
    assert (fast - ref).abs().max().item() <= TOL[dtype]


def test_batch_policy_depends_on_batch_mates_and_running_does_not() -> None:
    """Train-mode BN: a sample's loss changes with its batch; eval-mode BN: it does not."""
    model, theta, d, bufs, batches = make_case("conv_bn", torch.float64)
    swapped = [batches[1], batches[0], *batches[2:]]
    for policy, same in ((LinePolicy("batch"), False), (LinePolicy("running"), True)):
        a = reference_losses(model, theta, d, bufs, POSITIONS, batches, policy, loss_fn)
        b = reference_losses(model, theta, d, bufs, POSITIONS, swapped, policy, loss_fn)
        # rows of batch 0 and 1 swapped: equal as sets of losses in both policies
        assert torch.allclose(a[:16], torch.cat([b[8:16], b[:8]]))
        # but a sample moved into another batch keeps its loss only with running statistics
        mixed = [
            type(batches[0])(
                torch.cat([batches[0].x[:4], batches[1].x[:4]]),
                torch.cat([batches[0].y[:4], batches[1].y[:4]]),
                0,
            )
        ]
        c = reference_losses(model, theta, d, bufs, POSITIONS, mixed, policy, loss_fn)
        assert torch.allclose(c[:4], a[:4]) is same


def test_dropout_fixed_per_batch_and_off() -> None:
    model, theta, d, bufs, batches = make_case("mlp_dropout", torch.float64)
    fixed = reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    again = reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    off = reference_losses(
        model, theta, d, bufs, POSITIONS, batches, LinePolicy(dropout="off"), loss_fn
    )
    assert torch.equal(fixed, again)  # one mask per batch, reproducible
    assert not torch.allclose(fixed, off)  # dropout really is active
    model.eval()
    with torch.no_grad():
        plain = loss_fn(model(batches[0].x), batches[0].y)
    assert torch.allclose(off[:8, 2], plain)  # s = 0 with dropout off is the plain model


@pytest.mark.parametrize("case", ["conv_bn", "mlp_dropout"])
@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_measurement_changes_no_state(engine: str, case: str) -> None:
    model, theta, d, bufs, batches = make_case(case, torch.float32)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    if engine == "reference":
        reference_losses(model, theta, d, bufs, POSITIONS, batches, LinePolicy(), loss_fn)
    else:
        # max_eval_batch=None: the engine sizes its calls by a profiling forward pass first
        fast = FastEvaluator(model, LinePolicy(), loss_fn, None, memory_budget_mb=64)
        fast(theta, d, bufs, POSITIONS, batches)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
