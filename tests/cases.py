"""Tiny seeded problems shared by the engine tests (cases as data)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from steplines.engine.common import EvalBatch


class ConvBN(nn.Module):
    """conv → BN → ReLU → pool → linear: a model whose losses depend on batch mates."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.bn1d = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.bn1d(self.fc(h))


class MLPDropout(nn.Module):
    """MLP with dropout and no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


CASES: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)),
    "conv_bn": ConvBN,
    "mlp_dropout": MLPDropout,
}


def random_anchor(model: nn.Module) -> tuple[list, list, list]:
    """``(θ, d, buffers)``: the model's parameters, a random unit direction, its buffers."""
    theta = [p.detach().clone() for p in model.parameters()]
    d = [torch.randn_like(p) for p in theta]
    norm = torch.sqrt(sum((x * x).sum() for x in d))
    return theta, [x / norm for x in d], [b.detach().clone() for b in model.buffers()]


def digits_line(
    sizes: tuple[int, ...] = (16, 16, 5), seed: int = 0, first_seed: int = 7
) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[EvalBatch]]:
    """The demo's digits network on 8×8 inputs: model, θ, a unit direction, buffers, and
    evaluation batches of ``sizes`` rows (dropout seeds from ``first_seed``)."""
    from steplines.problems.models import make_model

    torch.manual_seed(seed)
    model = make_model("digits-resnet", in_channels=1, image_size=8)
    theta, d, bufs = random_anchor(model)
    batches = [
        EvalBatch(torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,)), first_seed + i)
        for i, n in enumerate(sizes)
    ]
    return model, theta, d, bufs, batches


def make_case(
    name: str, dtype: torch.dtype, sizes: tuple[int, ...] = (8, 8, 8, 5), seed: int = 0
) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[EvalBatch]]:
    """Model, θ, unit direction d, buffers and evaluation batches (equal + one partial)."""
    torch.manual_seed(seed)
    model = CASES[name]().to(dtype)
    # Give BatchNorm non-trivial running statistics and affine parameters.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    theta, direction, buffers = random_anchor(model)
    batches = [
        EvalBatch(torch.randn(n, 1, 4, 4, dtype=dtype), torch.randint(0, 3, (n,)), 100 + i)
        for i, n in enumerate(sizes)
    ]
    return model, theta, direction, buffers, batches
