"""A custom ``nn.Module`` and data set for ``steplines run --problem``.

``make_problem`` takes no arguments and returns a :class:`steplines.Problem`: the training and
validation tensors, a factory that builds a freshly initialised model, a per-sample loss and
the batch size. steplines then trains it with the ``[train]`` settings (optimizer, lr, steps,
seed), measures every line and writes the report, exactly as for the built-in problems::

    steplines run --problem examples/custom_module.py:make_problem --steps 200 --out runs/mlp
    steplines run --problem examples.custom_module:make_problem ...   # as a module, from here
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from steplines import Problem


class ResidualMLP(nn.Module):
    """Two residual blocks of Linear-LayerNorm-GELU on flattened 8×8 digits."""

    def __init__(self, width: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()) for _ in range(2)
        )
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def per_sample_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One loss per sample (``reduction="none"``): steplines stores every sample's loss."""
    return F.cross_entropy(logits, y, reduction="none")


def make_problem() -> Problem:
    """Digits (1,280 train / 517 validation images, fixed split) with a residual MLP."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = perm[:1280], perm[1280:]
    return Problem.from_tensors(
        train=(x[train], y[train]),
        val=(x[val], y[val]),
        model_factory=ResidualMLP,
        loss_fn=per_sample_ce,
        batch_size=128,
        name="digits-flat",
    )
