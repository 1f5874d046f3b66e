"""Whole lines: closed-form parabolas on least squares, and interval enlargement."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from steplines.engine.common import EvalBatch, LinePolicy
from steplines.engine.fast import FastEvaluator
from steplines.engine.line import GridSpec, measure_line
from steplines.engine.reference import reference_losses


def squared_error(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ℓ_i = ½ (x_iᵀθ − y_i)²."""
    return 0.5 * (pred.squeeze(-1) - y) ** 2


def least_squares(seed: int = 0, n: int = 40, p: int = 6):
    torch.manual_seed(seed)
    model = nn.Linear(p, 1, bias=False).double()
    x, y = torch.randn(n, p, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    theta = [model.weight.detach().clone()]
    d = torch.randn_like(theta[0])
    direction = [d / d.norm()]
    batches = [EvalBatch(x[i : i + 8], y[i : i + 8], i) for i in range(0, n, 8)]
    return model, x, y, theta, direction, batches


@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("grid", ["paper", "symmetric"])
def test_least_squares_lines_are_exact_parabolas(engine: str, grid: str) -> None:
    """ℓ_i(s) = ½r_i² + s·r_i·(x_iᵀd) + ½s²(x_iᵀd)², r_i = x_iᵀθ − y_i, to float64 precision."""
    model, x, y, theta, direction, batches = least_squares()
    policy = LinePolicy()
    evaluate = (
        functools.partial(reference_losses, model, policy=policy, loss_fn=squared_error)
        if engine == "reference"
        else FastEvaluator(model, policy, squared_error)
    )
    line = measure_line(
        evaluate,
        theta,
        direction,
        [],
        0.3,
        batches[:3],
        batches[3:4],
        batches[4],
        GridSpec(grid, 0.5, 0.05, max_passes=1),
    )
    r = (x @ theta[0].T).squeeze(-1) - y
    xd = (x @ direction[0].T).squeeze(-1)
    s = torch.from_numpy(line.positions)
    exact = (
        0.5 * r[:, None] ** 2 + s[None] * (r * xd)[:, None] + 0.5 * s[None] ** 2 * xd[:, None] ** 2
    )
    got = np.concatenate([line.train, line.val, line.direction])
    np.testing.assert_allclose(got, exact.numpy(), rtol=0, atol=1e-12)
    assert 0.3 in line.positions and 0.0 in line.positions


def minimum_at(s_star: float):
    """Least squares whose every per-sample loss is minimal at s = s_star along d."""
    model, x, _, theta, direction, batches = least_squares(n=24)
    with torch.no_grad():
        xd = (x @ direction[0].T).squeeze(-1)
        y2 = (x @ theta[0].T).squeeze(-1) + s_star * xd
    batches = [EvalBatch(b.x, y2[i * 8 : (i + 1) * 8], 0) for i, b in enumerate(batches)]
    evaluate = FastEvaluator(model, LinePolicy(), squared_error)

    def measure(spec: GridSpec):
        return measure_line(
            evaluate, theta, direction, [], 0.1, batches[:1], batches[1:2], batches[2], spec
        )

    return measure


def test_enlargement_follows_a_far_minimum_and_stops() -> None:
    """Minimum of every mean line at s* = 1.3: passes grow until it is inside."""
    measure = minimum_at(1.3)
    line = measure(GridSpec("symmetric", 0.5, 0.1, max_passes=5))
    assert line.n_passes == 3  # [-0.5, 0.5] → [-1, 1] → [-1.5, 1.5] contains 1.3
    assert np.isclose(line.positions[np.argmin(line.train.mean(0))], 1.3)
    assert np.all(np.diff(line.positions) > 0)
    capped = measure(GridSpec("symmetric", 0.5, 0.1, max_passes=2))
    assert capped.n_passes == 2 and capped.positions.max() == pytest.approx(1.0)


def test_no_enlargement_when_minimum_inside() -> None:
    line = minimum_at(0.2)(GridSpec("paper", 0.5, 0.05))
    assert line.n_passes == 1
