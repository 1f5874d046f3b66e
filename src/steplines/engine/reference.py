"""The reference engine: slow and obvious, the oracle for tests and benchmarks.

A fresh ``functional_call`` per position and batch computes ℓ_i(s_k) =
loss(f(x_i; θ_t + s_k·d_t), y_i) (:mod:`steplines.engine.common`), each batch with fresh
copies of θ_t's buffers and its own dropout seed. :class:`~steplines.engine.fast.FastEvaluator`
must give the same numbers (float32 |Δ| ≤ 1e-5).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .common import (
    EvalBatch,
    LinePolicy,
    LossFn,
    forked_rng,
    point_on_line,
    set_policy_modes,
    trainable_parameters,
)


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
    with torch.no_grad(), forked_rng(device):
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
