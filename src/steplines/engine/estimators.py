"""What a practitioner could estimate cheaply during training, computed at each measured line.

The analysis (``steplines.analysis.estimators``) compares the estimators built on them with the
measured full-batch line. This module only computes the few scalars the estimators need beyond
what the line measurement stores; all of them concern the **direction batch** ``B`` (the
mini-batch whose gradient made the update) with mean loss ``l_B(θ) = (1/|B|) Σ_i ℓ_i(θ)``:

* ``slope_update = ∇l_B(θ_t + s_u·d_t) · d_t`` — the slope of ``l_B`` along the line where the
  step lands (``s_u = ‖u_t‖``). With ``l_B(0)``, ``l_B(s_u)`` (measured) and the exact slope at
  0 (stored by training) it gives Cockpit's two-point quadratic fit of the step, α
  (Schneider, Dangel & Hennig 2021, "Cockpit: A Practical Debugging Tool for the Training of
  Deep Neural Networks").
* ``curvature = d_tᵀ ∇²l_B(θ_t) d_t`` — the directional curvature of ``l_B`` at θ_t by one
  Hessian-vector product (double backward). On a quadratic ``l_B`` it is exactly ``2a`` of the
  parabola ``l_B(θ_t + s·d_t) = a s² + b s + c``. LABPAL (Mutschler & Zell 2021/2022) and PAL
  estimate the same ``2a`` from loss values instead.
* On selected lines, per-sample gradients ``g_i = ∇ℓ_i(θ_t)`` of the direction batch for the
  simple gradient noise scale ``B_simple = tr(Σ)/|G|²`` (McCandlish, Kaplan, Amodei et al.
  2018, "An Empirical Model of Large-Batch Training"): ``sample_grad_sq = (1/|B|) Σ_i |g_i|²``
  and ``batch_grad_sq = |(1/|B|) Σ_i g_i|²``, from which the analysis forms
  ``tr(Σ) ≈ |B|/(|B|−1)·(sample_grad_sq − batch_grad_sq)``.

  **Per-sample gradients under BatchNorm.** With the ``batch`` policy a train-mode forward
  couples the samples of a batch through its statistics. Here ``g_i`` is the gradient of the
  i-th loss *of the one batch forward pass* (``ℓ_i`` depends on every sample of the batch
  through the statistics, and so does ``g_i``); so ``(1/|B|) Σ_i g_i`` is exactly the gradient
  of the batch's mean loss that SGD used, but the ``g_i`` are not gradients of independent
  samples. With the ``running`` policy (eval-mode BatchNorm) they are.

Every quantity is evaluated like the line measurement: on a private copy of the model, with
θ_t's buffers, the line policy's BatchNorm/dropout modes and the direction batch's dropout
seed, under a forked RNG, so the caller's model, buffers and RNG streams are never changed.
Results are float64 Python floats (sums accumulated in float64).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .common import (
    EvalBatch,
    LinePolicy,
    LossFn,
    point_on_line,
    set_policy_modes,
    trainable_parameters,
)

__all__ = ["EstimatorInputs", "LineEstimator"]

_NAN = float("nan")

log = logging.getLogger("steplines")


@dataclass(frozen=True)
class EstimatorInputs:
    """The estimator inputs of one line (float64; NaN = not computed).

    Attributes:
        slope_zero: ``∇l_B(θ_t)·d_t`` recomputed here (equals the training step's
            ``directional_derivative`` up to rounding; a consistency check, not stored).
        slope_update: ``∇l_B(θ_t + s_u·d_t)·d_t``.
        curvature: ``d_tᵀ ∇²l_B(θ_t) d_t``.
        sample_grad_sq: ``(1/|B|) Σ_i |g_i|²`` (per-sample gradients; selected lines only).
        batch_grad_sq: ``|(1/|B|) Σ_i g_i|²`` (selected lines only).
    """

    slope_zero: float = _NAN
    slope_update: float = _NAN
    curvature: float = _NAN
    sample_grad_sq: float = _NAN
    batch_grad_sq: float = _NAN


def _dot(a: Sequence[Tensor | None], b: Sequence[Tensor]) -> float:
    """``Σ_p a_p·b_p`` in float64 (``None`` entries count as zero)."""
    return math.fsum(
        float((x.detach().double() * y.double()).sum()) for x, y in zip(a, b) if x is not None
    )


class LineEstimator:
    """Cheap estimator inputs along a line (module docstring), on a private model copy.

    Args:
        model: the network (copied once; the copy is reused for every line).
        loss_fn: per-sample loss ``loss_fn(logits, y) -> [b]``.
        policy: the line measurement's BatchNorm and dropout policy.
        per_sample: how per-sample gradients are computed: ``loop`` (one backward pass per
            sample through the retained graph) or ``batched``
            (``torch.autograd.grad(..., is_grads_batched=True)`` over ``chunk`` samples at a
            time). Both give the same numbers; ``loop`` was faster on the digits model on CPU
            (``docs/analysis.md``).
        chunk: samples per batched backward (``batched`` only; memory ``chunk × P``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        policy: LinePolicy,
        per_sample: str = "loop",
        chunk: int = 32,
    ) -> None:
        if per_sample not in ("loop", "batched"):
            raise ValueError(f"per_sample must be 'loop' or 'batched', got {per_sample!r}")
        self.model = copy.deepcopy(model)
        set_policy_modes(self.model, policy)
        trainable = {id(p) for _, p in trainable_parameters(self.model)}
        self.params = [p for _, p in trainable_parameters(self.model)]
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        self.buffers = list(self.model.buffers())
        self.loss_fn = loss_fn
        self.per_sample = per_sample
        self.chunk = int(chunk)
        self._warned = False

    # -- helpers --------------------------------------------------------------------------
    def _load(
        self, theta: Sequence[Tensor], direction: Sequence[Tensor], buffers: Sequence[Tensor], s
    ) -> None:
        with torch.no_grad():
            for p, a, d in zip(self.params, theta, direction):
                p.copy_(point_on_line(a, d, s))
            for dst, src in zip(self.buffers, buffers):
                dst.copy_(src)

    def _losses(self, batch: EvalBatch) -> Tensor:
        torch.manual_seed(batch.dropout_seed)
        return self.loss_fn(self.model(batch.x), batch.y)

    def _grad(self, out: Tensor, **kwargs) -> list[Tensor | None]:
        return list(torch.autograd.grad(out, self.params, allow_unused=True, **kwargs))

    def _per_sample(self, losses: Tensor) -> tuple[float, float]:
        """``((1/b) Σ_i |g_i|², |(1/b) Σ_i g_i|²)`` of the per-sample gradients of ``losses``."""
        b = losses.shape[0]
        total = [torch.zeros_like(p, dtype=torch.float64) for p in self.params]
        sq = 0.0
        if self.per_sample == "loop":
            for i in range(b):
                gi = self._grad(losses[i], retain_graph=True)
                for acc, g in zip(total, gi):
                    if g is not None:
                        acc += g.double()
                sq += math.fsum(float(g.double().pow(2).sum()) for g in gi if g is not None)
        else:
            eye = torch.eye(b, dtype=losses.dtype, device=losses.device)
            for start in range(0, b, self.chunk):
                rows = eye[start : start + self.chunk]
                gs = self._grad(losses, grad_outputs=rows, retain_graph=True, is_grads_batched=True)
                for acc, g in zip(total, gs):
                    if g is not None:
                        acc += g.double().sum(0)
                sq += math.fsum(float(g.double().pow(2).sum()) for g in gs if g is not None)
        mean_sq = math.fsum(float((t / b).pow(2).sum()) for t in total)
        return sq / b, mean_sq

    def _curvature(self, gd: Tensor, direction: Sequence[Tensor]) -> float:
        """``d/dθ (∇l·d) · d``; NaN (warned once) for a model without double backward.

        A gradient whose graph does not reach any parameter again (``gd`` not requiring grad,
        or every ``∂(g·d)/∂θ`` unused) means that some op's backward is not differentiable
        (e.g. ``once_differentiable``), not that the curvature is 0, so it gives NaN as well
        (an exactly linear loss, whose curvature is 0, is reported as NaN too). Such an op in
        only a part of the model cannot be detected: that part's contribution is missing.
        """
        try:
            hd = self._grad(gd) if gd.requires_grad else []
            if all(h is None for h in hd):
                raise RuntimeError("the gradient's graph does not reach the parameters again")
            return _dot(hd, direction)
        except RuntimeError as err:  # an op without a double-backward formula
            if not self._warned:
                log.warning("dᵀHd not computed (no double backward in this model: %s)", err)
                self._warned = True
            return _NAN

    # -- the estimator inputs --------------------------------------------------------------
    def __call__(
        self,
        theta: Sequence[Tensor],
        direction: Sequence[Tensor],
        buffers: Sequence[Tensor],
        s_update: float,
        batch: EvalBatch,
        per_sample: bool = False,
    ) -> EstimatorInputs:
        """Estimator inputs of one line.

        Args:
            theta: θ_t, one tensor per trainable parameter (order of ``trainable_parameters``).
            direction: d_t (unit norm), same structure.
            buffers: θ_t's buffers (``model.buffers()`` order).
            s_update: ``s_u = ‖u_t‖``, where θ_{t+1} lies on the line.
            batch: the direction batch with its dropout seed.
            per_sample: also compute the per-sample gradient quantities (``|B|`` extra
                backward passes).

        Returns:
            :class:`EstimatorInputs`; ``slope_update`` is NaN when ``s_update`` is not finite.
        """
        dev = theta[0].device
        rng_devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices), torch.enable_grad():
            self._load(theta, direction, buffers, 0.0)
            losses = self._losses(batch)
            sample_sq = batch_sq = _NAN
            if per_sample:
                sample_sq, batch_sq = self._per_sample(losses)
            grads = self._grad(losses.mean(), create_graph=True)
            slope_zero = _dot(grads, direction)
            gd = sum(
                ((g * d).sum() for g, d in zip(grads, direction) if g is not None),
                torch.zeros((), dtype=losses.dtype, device=dev),
            )
            # dᵀHd = d/ds (∇l_B(θ_t + s d)·d) at s = 0: one Hessian-vector product.
            curvature = self._curvature(gd, direction)
            del grads, gd, losses
            slope_update = _NAN
            if math.isfinite(s_update):
                self._load(theta, direction, buffers, s_update)
                slope_update = _dot(self._grad(self._losses(batch).mean()), direction)
        return EstimatorInputs(
            slope_zero=slope_zero,
            slope_update=slope_update,
            curvature=curvature,
            sample_grad_sq=sample_sq,
            batch_grad_sq=batch_sq,
        )
