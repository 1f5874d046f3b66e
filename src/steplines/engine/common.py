"""What every engine shares: the evaluation batch, the line policy, the point on the line.

An engine computes, for every position ``s_k`` and every evaluation batch ``b``,

    ℓ_i(s_k) = loss(f(x_i; θ_t + s_k·d_t), y_i)      for all samples i of batch b,

with BatchNorm normalising each batch with its own statistics (policy ``batch``, the paper's
train-mode measurement, docs/method.md §3.5) or with θ_t's running statistics (``running``), and
with one dropout mask per batch per line (seeded by the batch's ``dropout_seed``). Positions are
always formed from the saved anchor θ_t by :func:`point_on_line` (never by walking the
parameters in place, docs/method.md §3.7), and no engine changes the caller's model, buffers or
RNG streams. The engines are :func:`~steplines.engine.reference.reference_losses` (the oracle)
and :class:`~steplines.engine.fast.FastEvaluator`; :func:`~steplines.engine.factory.make_engine`
builds the one a run asks for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class EvalBatch:
    """A fixed evaluation batch: inputs ``x [b, ...]``, targets ``y [b]``, its dropout seed."""

    x: Tensor
    y: Tensor
    dropout_seed: int


@dataclass(frozen=True)
class LinePolicy:
    """``batchnorm``: ``batch`` | ``running``; ``dropout``: ``fixed`` | ``off``."""

    batchnorm: str = "batch"
    dropout: str = "fixed"


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Parameters that lie on the line: those with ``requires_grad`` (never judged by ``.grad``)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def point_on_line(anchor: Tensor, direction: Tensor, s: float, out: Tensor | None = None) -> Tensor:
    """θ_t + s·d_t for one tensor, formed the same way by every engine."""
    return torch.add(anchor, direction, alpha=float(s), out=out)


def set_policy_modes(model: nn.Module, policy: LinePolicy) -> None:
    """Train mode, then BatchNorm → eval for ``running`` and dropout → eval for ``off``."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and policy.batchnorm == "running":
            m.eval()
        if isinstance(m, nn.modules.dropout._DropoutNd) and policy.dropout == "off":
            m.eval()


def has_active_dropout(model: nn.Module, policy: LinePolicy) -> bool:
    """Whether a forward pass draws dropout masks under ``policy``."""
    return policy.dropout == "fixed" and any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
    )


@contextlib.contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """Run the block under a forked RNG (CPU, and ``device`` on CUDA): the caller's random
    streams are exactly as before."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
