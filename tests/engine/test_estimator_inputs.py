"""The estimator inputs are exact on a quadratic problem and never change model or RNG state.

Quadratic problem: ``f(x) = w·x + b`` (``nn.Linear(D, 1)``, no BatchNorm) with the per-sample
squared error ``ℓ_i = (f(x_i) − y_i)²``. The loss is exactly quadratic in θ = (w, b), so every
line ``l_B(θ + s·d)`` is the parabola ``a s² + β s + c`` with, for ``x̃_i = (x_i, 1)``,
``a = (1/B) Σ_i (d·x̃_i)²``, ``β = (2/B) Σ_i r_i (d·x̃_i)``, ``r_i = θ·x̃_i − y_i``; its Hessian
is ``H = (2/B) X̃ᵀX̃`` and the per-sample gradients are ``g_i = 2 r_i x̃_i``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from steplines.engine.common import EvalBatch, LinePolicy
from steplines.engine.estimators import LineEstimator

from cases import make_case

D, B = 5, 12


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.squeeze(1) - y) ** 2


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def quadratic_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(D, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, D, generator=g, dtype=torch.float64))
        model.bias.fill_(0.3)
    theta = [p.detach().clone() for p in model.parameters()]
    d = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in theta]
    norm = torch.sqrt(sum((x * x).sum() for x in d))
    d = [x / norm for x in d]
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, generator=g, dtype=torch.float64)
    return model, theta, d, EvalBatch(x, y, 5)


def closed_form(theta, d, batch):
    """``a, β`` of the parabola, the Hessian and the per-sample gradients (numpy float64)."""
    xt = np.hstack([batch.x.numpy(), np.ones((B, 1))])  # x̃_i
    th = np.concatenate([t.numpy().ravel() for t in theta])  # (w, b): Linear's order
    dv = np.concatenate([t.numpy().ravel() for t in d])
    r = xt @ th - batch.y.numpy()
    proj = xt @ dv
    a = float(np.mean(proj**2))
    beta = float(2 * np.mean(r * proj))
    hessian = 2.0 / B * xt.T @ xt
    per_sample = 2.0 * r[:, None] * xt  # [B, P]
    return a, beta, hessian, dv, per_sample


@pytest.mark.parametrize("method", ["loop", "batched"])
def test_quadratic_problem_estimates_equal_closed_forms(method: str) -> None:
    model, theta, d, batch = quadratic_problem()
    a, beta, hessian, dv, g = closed_form(theta, d, batch)
    s_u = 0.37
    est = LineEstimator(model, squared_error, LinePolicy(), per_sample=method, chunk=5)
    e = est(theta, d, [], s_u, batch, per_sample=True)
    # dᵀH_B d = 2a of the line's parabola = the explicit XᵀX-based value
    assert e.curvature == pytest.approx(2 * a, rel=1e-12)
    assert e.curvature == pytest.approx(float(dv @ hessian @ dv), rel=1e-12)
    # slopes of the parabola at 0 and at s_u
    assert e.slope_zero == pytest.approx(beta, rel=1e-12)
    assert e.slope_update == pytest.approx(beta + 2 * a * s_u, rel=1e-12)
    # per-sample quantities against explicitly formed per-sample gradients
    assert e.sample_grad_sq == pytest.approx(float(np.mean(np.sum(g**2, axis=1))), rel=1e-12)
    assert e.batch_grad_sq == pytest.approx(float(np.sum(g.mean(0) ** 2)), rel=1e-12)
    # the parabola's curvature also from three loss values (no autograd at all)
    with torch.no_grad():
        vals = [
            float(
                squared_error(
                    batch.x @ (theta[0] + s * d[0]).T + (theta[1] + s * d[1]), batch.y
                ).mean()
            )
            for s in (-1.0, 0.0, 1.0)
        ]
    assert e.curvature == pytest.approx(vals[0] - 2 * vals[1] + vals[2], rel=1e-10)


def test_loop_and_batched_per_sample_agree_with_batchnorm() -> None:
    """Per-sample gradients of the one train-mode batch forward: their mean is ∇l_B exactly."""
    model, theta, d, bufs, batches = make_case("conv_bn", torch.float64)
    batch = batches[0]
    policy = LinePolicy("batch")
    loop = LineEstimator(model, cross_entropy, policy)(theta, d, bufs, 0.2, batch, True)
    batched = LineEstimator(model, cross_entropy, policy, per_sample="batched", chunk=3)(
        theta, d, bufs, 0.2, batch, True
    )
    assert loop.sample_grad_sq == pytest.approx(batched.sample_grad_sq, rel=1e-10)
    assert loop.batch_grad_sq == pytest.approx(batched.batch_grad_sq, rel=1e-10)
    # |mean g_i|² = |∇ mean loss|² of the same forward (direct computation)
    ref = type(model)().double()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, a in zip(ref.parameters(), theta):
            p.copy_(a)
    ref.train()
    torch.manual_seed(batch.dropout_seed)
    loss = cross_entropy(ref(batch.x), batch.y).mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    direct = float(sum((g**2).sum() for g in grads))
    assert loop.batch_grad_sq == pytest.approx(direct, rel=1e-10)
    assert loop.slope_zero == pytest.approx(
        float(sum((g * v).sum() for g, v in zip(grads, d))), rel=1e-10
    )
    # BatchNorm couples the samples: (1/B)Σ|g_i|² ≥ |mean g_i|² still holds (Jensen)
    assert loop.sample_grad_sq >= loop.batch_grad_sq


@pytest.mark.parametrize("case", ["conv_bn", "mlp_dropout"])
def test_estimator_leaves_model_buffers_and_rng_untouched(case: str) -> None:
    model, theta, d, bufs, batches = make_case(case, torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bufs_before = [b.clone() for b in bufs]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    est = LineEstimator(model, cross_entropy, LinePolicy("batch", "fixed"))
    first = est(theta, d, bufs, 0.3, batches[0], per_sample=True)
    second = est(theta, d, bufs, 0.3, batches[0], per_sample=True)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(a, b) for a, b in zip(bufs, bufs_before))
    assert all(p.grad is None for p in model.parameters())
    # the direction batch's dropout seed fixes the masks: the same numbers every call
    assert first == second
    assert np.isfinite([first.curvature, first.slope_update, first.sample_grad_sq]).all()


class _NoDoubleBackward(torch.autograd.Function):
    """tanh whose backward is not differentiable again (as some custom ops)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NoDoubleBackward.apply(self.fc(x))


def test_model_without_double_backward_gives_nan_curvature_not_an_error() -> None:
    model = _Custom().double()
    theta = [p.detach().clone() for p in model.parameters()]
    d = [torch.ones_like(p) / 4.0 for p in theta]
    x = torch.randn(B, D, dtype=torch.float64)
    batch = EvalBatch(x, torch.randint(0, 3, (B,)), 0)
    e = LineEstimator(model, cross_entropy, LinePolicy())(theta, d, [], 0.1, batch, True)
    assert np.isnan(e.curvature)
    assert np.isfinite([e.slope_zero, e.slope_update, e.sample_grad_sq, e.batch_grad_sq]).all()
