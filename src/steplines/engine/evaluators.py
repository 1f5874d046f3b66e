"""Evaluate per-sample losses at many positions along one line.

Both engines compute, for every position ``s_k`` and every evaluation batch ``b``,

    ℓ_i(s_k) = loss(f(x_i; θ_t + s_k·d_t), y_i)      for all samples i of batch b,

with BatchNorm normalising each batch with its own statistics (policy ``batch``, the paper's
train-mode measurement, SPEC §3.5) or with θ_t's running statistics (``running``), and with one
dropout mask per batch per line (seeded by the batch's ``dropout_seed``). Positions are always
formed from the saved anchor θ_t (never by walking the parameters in place, SPEC §3.7), and no
engine changes the caller's model, buffers or RNG streams.

* :func:`reference_losses` — slow and obvious: a fresh ``functional_call`` per position and
  batch. The oracle for tests and benchmarks.
* :class:`FastEvaluator` — the same numbers (float32 |Δ| ≤ 1e-5): parameters written in place
  into a private model copy once per position, several equal-sized batches concatenated into
  one call with per-group BatchNorm statistics, ``inference_mode``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

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
def _forked_rng(device: torch.device) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def reference_losses(
    model: nn.Module,
    theta: Sequence[Tensor],
    direction: Sequence[Tensor],
    buffers: Sequence[Tensor],
    positions: np.ndarray,
    batches: Sequence[EvalBatch],
    policy: LinePolicy,
    loss_fn: LossFn,
) -> Tensor:
    """Per-sample losses ``[rows, K]`` by the obvious loop (the oracle).

    Args:
        model: the network (not modified).
        theta: θ_t, one tensor per trainable parameter (order of :func:`trainable_parameters`).
        direction: d_t, same structure (unit norm overall).
        buffers: θ_t's buffers (``model.named_buffers()`` order); copied for every call.
        positions: ``[K]`` positions s.
        batches: evaluation batches; output rows follow their order.
        policy: BatchNorm and dropout policy.
        loss_fn: per-sample loss.
    """
    model = copy.deepcopy(model)
    set_policy_modes(model, policy)
    names = [n for n, _ in trainable_parameters(model)]
    buf_names = [n for n, _ in model.named_buffers()]
    device = theta[0].device
    rows = sum(b.y.shape[0] for b in batches)
    out = torch.empty(rows, len(positions), dtype=theta[0].dtype, device=device)
    with torch.no_grad(), _forked_rng(device):
        for k, s in enumerate(positions):
            params = {n: point_on_line(a, d, s) for n, a, d in zip(names, theta, direction)}
            start = 0
            for b in batches:
                bufs = {n: t.clone() for n, t in zip(buf_names, buffers)}
                torch.manual_seed(b.dropout_seed)
                logits = functional_call(model, {**params, **bufs}, (b.x,))
                n = b.y.shape[0]
                out[start : start + n, k] = loss_fn(logits, b.y)
                start += n
    return out


class _GroupedBatchNorm:
    """Replacement forward for a BatchNorm module: statistics per group of ``group`` rows.

    With ``[G·b, C, …]`` input, normalises each of the G consecutive blocks of b rows with that
    block's own mean and (biased) variance — exactly what G separate train-mode calls would do
    — and never touches the running statistics.
    """

    def __init__(self, module: nn.modules.batchnorm._BatchNorm) -> None:
        self.m = module
        self.group: int | None = None

    def __call__(self, x: Tensor) -> Tensor:
        m = self.m
        if not m.training:
            return F.batch_norm(
                x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps
            )
        n, c = x.shape[0], x.shape[1]
        g = self.group or n
        if g >= n:
            return F.batch_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps)
        xv = x.reshape(n // g, g, c, -1)
        # Per-group mean and biased variance (two-pass, as F.batch_norm), then one fused
        # scale-and-shift: several times faster on CPU than var_mean over non-contiguous dims.
        mean = xv.mean(dim=(1, 3), keepdim=True)
        xc = xv - mean
        scale = torch.rsqrt((xc * xc).mean(dim=(1, 3), keepdim=True) + m.eps)
        if m.affine:
            y = torch.addcmul(m.bias.view(1, 1, c, 1), xc, scale * m.weight.view(1, 1, c, 1))
        else:
            y = xc * scale
        return y.view_as(x)


class FastEvaluator:
    """Fast per-sample line losses with the semantics of :func:`reference_losses`.

    Args:
        model: the network; a private copy is made once and reused across lines.
        policy: BatchNorm and dropout policy.
        loss_fn: per-sample loss.
        max_eval_batch: at most this many samples per forward call (memory bound).
    """

    def __init__(
        self, model: nn.Module, policy: LinePolicy, loss_fn: LossFn, max_eval_batch: int = 2048
    ) -> None:
        self.model = copy.deepcopy(model)
        set_policy_modes(self.model, policy)
        self.params = [p for _, p in trainable_parameters(self.model)]
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.buffers = list(self.model.buffers())
        self.loss_fn = loss_fn
        self.max_eval_batch = max_eval_batch
        self.per_call_seed = has_active_dropout(self.model, policy)
        self.bns: list[_GroupedBatchNorm] = []
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                bn = _GroupedBatchNorm(m)
                m.forward = bn  # instance attribute shadows the class method
                self.bns.append(bn)

    def _groups(self, batches: Sequence[EvalBatch]) -> list[tuple[Tensor, Tensor, int, int, int]]:
        """Concatenate runs of equal-sized batches: (x, y, group size, first row, seed)."""
        groups, i, start = [], 0, 0
        while i < len(batches):
            b = batches[i].y.shape[0]
            j = i + 1
            if not self.per_call_seed:
                while (
                    j < len(batches)
                    and batches[j].y.shape[0] == b
                    and (j - i + 1) * b <= self.max_eval_batch
                ):
                    j += 1
            xs = [bt.x for bt in batches[i:j]]
            ys = [bt.y for bt in batches[i:j]]
            x = xs[0] if len(xs) == 1 else torch.cat(xs)
            y = ys[0] if len(ys) == 1 else torch.cat(ys)
            groups.append((x, y, b, start, batches[i].dropout_seed))
            start += y.shape[0]
            i = j
        return groups

    def __call__(
        self,
        theta: Sequence[Tensor],
        direction: Sequence[Tensor],
        buffers: Sequence[Tensor],
        positions: np.ndarray,
        batches: Sequence[EvalBatch],
    ) -> Tensor:
        """Per-sample losses ``[rows, K]``; same arguments as :func:`reference_losses`."""
        device = theta[0].device
        groups = self._groups(batches)
        rows = sum(g[1].shape[0] for g in groups)
        out = torch.empty(rows, len(positions), dtype=theta[0].dtype, device=device)
        with torch.inference_mode(), _forked_rng(device):
            for dst, src in zip(self.buffers, buffers):
                dst.copy_(src)
            for k, s in enumerate(positions):
                for p, a, d in zip(self.params, theta, direction):
                    point_on_line(a, d, s, out=p)
                for x, y, size, start, seed in groups:
                    for bn in self.bns:
                        bn.group = size
                    if self.per_call_seed:
                        torch.manual_seed(seed)
                    out[start : start + y.shape[0], k] = self.loss_fn(self.model(x), y)
        return out
