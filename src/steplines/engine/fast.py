"""The fast engine: the reference engine's numbers at a fraction of its cost.

:class:`FastEvaluator` computes the per-sample losses ℓ_i(s_k) of
:func:`~steplines.engine.reference.reference_losses` (float32 |Δ| ≤ 1e-5): parameters written
in place into a private model copy once per position (the same ``θ_t + s·d_t`` as
:func:`~steplines.engine.common.point_on_line`), several equal-sized batches concatenated into
one call with per-group BatchNorm statistics (:mod:`~steplines.engine.batchnorm`),
``inference_mode``. Its sizing constants (when to compile, when channels-last pays off, the
activation memory per sample) are measured on the 2-core CPU (BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .batchnorm import GroupedBatchNorm
from .common import (
    EvalBatch,
    LinePolicy,
    LossFn,
    forked_rng,
    has_active_dropout,
    set_policy_modes,
    trainable_parameters,
)
from .precision import precision_context

COMPILE_MIN_FLOP = 1e12
"""``compile="auto"`` compiles when one call of the engine (a line's pass) costs at least this
many FLOP — about 10 s on the 2-core CPU, so a ~30–60 s compilation pays for itself within the
first lines of a run, while tests and the tiny demo network never wait for the compiler."""

CHANNELS_LAST_MIN_FLOP = 1e7
"""``channels_last="auto"`` switches to channels-last for networks of at least this many FLOP
per sample: ResNet-20 (81 MFLOP) ran 1.28× faster eagerly on CPU, the digits network
(0.27 MFLOP, overhead-bound) 0.72× (BENCHMARKS.md)."""

ACTIVATION_FACTOR = 6
"""Bytes one sample occupies during a forward call ≈ this × its largest layer output (input,
output, residual and the per-group BatchNorm temporaries of the widest layer are alive at
once); the memory budget divides by it to bound the samples per call."""

log = logging.getLogger("steplines")


def is_conv_model(model: nn.Module) -> bool:
    """Whether ``model`` has 2-D convolutions (channels-last pays off only for those)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def default_per_call(device: torch.device, flop_per_sample: float, batch: int) -> int:
    """Samples per call when not configured: CUDA 8192 (all samples of a position of the
    paper's ResNet-20 run, 3,968 + 896 + 128, in one call); CPU one BatchNorm batch (bigger
    calls measured slower on one thread for both ResNet-20 and the digits network,
    BENCHMARKS.md)."""
    del flop_per_sample
    return 8192 if device.type == "cuda" else batch


@dataclass(frozen=True)
class _Call:
    """One forward call: inputs, targets, rows per BatchNorm group, first output row, dropout
    seed, and whether the rows are interleaved (row ``i·G + j`` = sample i of batch j)."""

    x: Tensor
    y: Tensor
    size: int
    start: int
    seed: int
    interleaved: bool


class FastEvaluator:
    """Fast per-sample line losses with the semantics of :func:`reference_losses`.

    Per call (one pass of a line): θ_t's buffers are copied into a private model once; per
    position the parameters are written in place (``_foreach``), then each run of equal-sized
    batches is evaluated in calls of at most ``max_eval_batch`` samples (fewer if the memory
    budget says so) with per-group BatchNorm statistics, under ``inference_mode``.

    Args:
        model: the network; a private copy is made once and reused across lines.
        policy: BatchNorm and dropout policy.
        loss_fn: per-sample loss.
        max_eval_batch: at most this many samples per forward call; ``None`` = per device
            (:func:`default_per_call`).
        channels_last: ``True``, ``False`` or ``"auto"`` (networks of ≥
            :data:`CHANNELS_LAST_MIN_FLOP` per sample): keep 4-D activations channels-last
            (oneDNN's fast layout on CPU, tensor
            cores' on CUDA); ignored with active dropout (its masks follow memory order).
        compile: ``torch.compile`` the forward of the main call shape: ``True``, ``False`` or
            ``"auto"`` (on CPU when a call costs ≥ :data:`COMPILE_MIN_FLOP` and no dropout
            is active, since the compiled dropout draws other masks). Other shapes (a partial
            last batch) run eagerly; a compiler failure falls back to eager with a warning.
        memory_budget_mb: bound on the activation memory of one call; ``None`` = unbounded.
        precision: ``fp32``, ``tf32`` or ``bf16``: the arithmetic of the forward passes and
            losses (:mod:`~steplines.engine.precision`); the losses are stored in the
            parameters' dtype. A precision other than fp32 never compiles (eager autocast and
            TF32 flags are what is measured and documented).
    """

    def __init__(
        self,
        model: nn.Module,
        policy: LinePolicy,
        loss_fn: LossFn,
        max_eval_batch: int | None = 2048,
        *,
        channels_last: bool | str = False,
        compile: bool | str = False,
        memory_budget_mb: float | None = None,
        precision: str = "fp32",
    ) -> None:
        self.model = copy.deepcopy(model)
        set_policy_modes(self.model, policy)
        self.params = [p for _, p in trainable_parameters(self.model)]
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.loss_fn = loss_fn
        self.max_eval_batch = max_eval_batch
        self.per_call_seed = has_active_dropout(self.model, policy)
        self._channels_last = channels_last if is_conv_model(model) else False
        self.channels_last = False  # decided (for "auto") at the first call
        if self.per_call_seed:
            self._channels_last = False
        if self._channels_last is True:
            self._use_channels_last()
        self.buffers = list(self.model.buffers())
        self.precision = precision
        self.compile = False if self.per_call_seed or precision != "fp32" else compile
        self.memory_budget_mb = memory_budget_mb
        self.bns: list[GroupedBatchNorm] = []
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                bn = GroupedBatchNorm(m)
                m.forward = bn  # instance attribute shadows the class method
                self.bns.append(bn)
        self._compiled: Callable[[Tensor], Tensor] | None = None
        self._compiled_key: tuple[tuple[int, ...], int, bool] | None = None
        self._profile: tuple[float, float] | None = None  # (FLOP, activation bytes) per sample

    def __getstate__(self) -> dict:
        """Picklable (for worker processes): a compiled forward is rebuilt where it is used."""
        state = self.__dict__.copy()
        state["_compiled"], state["_compiled_key"] = None, None
        return state

    # -- sizing -------------------------------------------------------------------------------

    def profile(self, x: Tensor) -> tuple[float, float]:
        """(FLOP, activation bytes) of one sample, from a 2-sample forward of ``x``'s rows."""
        if self._profile is None:
            from torch.utils.flop_counter import FlopCounterMode

            largest = [0]

            def hook(_m: nn.Module, _i: object, out: object) -> None:
                if isinstance(out, Tensor):
                    largest[0] = max(largest[0], out.numel() * out.element_size())

            leaves = [m for m in self.model.modules() if not list(m.children())]
            handles = [m.register_forward_hook(hook) for m in leaves]
            xs = x[:2] if x.shape[0] >= 2 else x
            try:
                # forked RNG: a dropout layer must not move the caller's random stream
                with (
                    torch.inference_mode(),
                    forked_rng(x.device),
                    FlopCounterMode(display=False) as fc,
                ):
                    for bn in self.bns:
                        bn.group = None
                    self.model(self._layout(xs))
            finally:
                for h in handles:
                    h.remove()
            n = xs.shape[0]
            flop = fc.get_total_flops() / n
            act = ACTIVATION_FACTOR * largest[0] / n + x[0].numel() * x.element_size()
            self._profile = (float(flop), float(act))
        return self._profile

    def per_call(self, batches: Sequence[EvalBatch]) -> int:
        """Samples per forward call: ``max_eval_batch`` (``None``: per device, see
        :func:`default_per_call`), lowered to fit the memory budget (never below one batch)."""
        if not batches:
            return 1
        limit = self.max_eval_batch
        if limit is None:
            x = batches[0].x
            limit = default_per_call(x.device, self.profile(x)[0], batches[0].y.shape[0])
        if self.memory_budget_mb is not None:
            act = self.profile(batches[0].x)[1]
            limit = min(limit, int(self.memory_budget_mb * 2**20 // act))
        return max(limit, 1)

    def frozen(
        self, batches: Sequence[EvalBatch], n_positions: int, processes: int = 1
    ) -> FastEvaluator:
        """This engine with every decision that depends on the line taken, for another process.

        The layout (channels-last for ``"auto"``) and ``compile="auto"`` are decided now, for
        lines of ``n_positions`` positions on ``batches``, in this engine too — so that the
        copy runs exactly the engine this process runs. The copy shares the model (pickle it
        to send it) and the memory budget divided by ``processes`` (the calls of that many
        worker processes together stay within one budget).
        """
        self._decide_layout(batches)
        if self.compile == "auto" and batches:
            rows = sum(b.y.shape[0] for b in batches)
            self.compile = self._want_compile(self._layout(batches[0].x), rows, n_positions)
        self._channels_last = self.channels_last
        twin = copy.copy(self)
        if self.memory_budget_mb is not None:
            twin.memory_budget_mb = self.memory_budget_mb / processes
        return twin

    # -- evaluation -----------------------------------------------------------------------------

    def _use_channels_last(self) -> None:
        self.channels_last = True
        self.model.to(memory_format=torch.channels_last)  # the parameters stay the same objects

    def _decide_layout(self, batches: Sequence[EvalBatch]) -> None:
        if self._channels_last == "auto" and batches:
            self._channels_last = self.profile(batches[0].x)[0] >= CHANNELS_LAST_MIN_FLOP
            if self._channels_last:
                self._use_channels_last()

    def _layout(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _groups(self, batches: Sequence[EvalBatch], limit: int) -> list[_Call]:
        """Concatenate runs of equal-sized batches into calls of at most ``limit`` rows.

        NCHW (and 2-D) calls are *interleaved* — row ``i·G + j`` is sample i of batch j — so
        that BatchNorm takes every batch's statistics in one fused ATen call
        (:meth:`GroupedBatchNorm._interleaved`); channels-last calls stack the batches.
        """
        calls, i, start = [], 0, 0
        while i < len(batches):
            b = batches[i].y.shape[0]
            j = i + 1
            if not self.per_call_seed:
                while j < len(batches) and batches[j].y.shape[0] == b and (j - i + 1) * b <= limit:
                    j += 1
            xs = [bt.x for bt in batches[i:j]]
            ys = [bt.y for bt in batches[i:j]]
            inter = len(xs) > 1 and not self.channels_last
            if len(xs) == 1:
                x, y = xs[0], ys[0]
            elif inter:
                x, y = torch.stack(xs, 1).flatten(0, 1), torch.stack(ys, 1).flatten(0, 1)
            else:
                x, y = torch.cat(xs), torch.cat(ys)
            calls.append(_Call(self._layout(x), y, b, start, batches[i].dropout_seed, inter))
            start += y.shape[0]
            i = j
        return calls

    def _want_compile(self, x: Tensor, rows: int, n_positions: int) -> bool:
        if self.compile == "auto":
            if x.device.type != "cpu":
                return False
            return self.profile(x)[0] * rows * n_positions >= COMPILE_MIN_FLOP
        return bool(self.compile)

    def _prepare_compiled(self, calls: list[_Call], rows: int, n_positions: int) -> None:
        if self._compiled_key is not None or not calls or not self.compile:
            return
        c = max(calls, key=lambda c: c.x.shape[0])
        self._compiled_key = (tuple(c.x.shape), c.size, c.interleaved)
        if self._want_compile(c.x, rows, n_positions):
            self._compiled = torch.compile(self.model, dynamic=False)

    def _forward(self, c: _Call) -> Tensor:
        """Per-sample losses of one call, in batch order."""
        for bn in self.bns:
            bn.group, bn.interleaved = c.size, c.interleaved
        logits = self._logits(c)
        loss = self.loss_fn(logits, c.y)
        if c.interleaved:
            loss = loss.view(c.size, -1).t().reshape(-1)
        return loss

    def _logits(self, c: _Call) -> Tensor:
        x = c.x
        key = (tuple(x.shape), c.size, c.interleaved)
        if self._compiled is not None and key == self._compiled_key:
            try:
                return self._compiled(x)
            except Exception as err:  # no compiler, unsupported op: the eager path is exact
                log.warning("torch.compile failed (%s); evaluating eagerly", err)
                self._compiled = None
        return self.model(x)

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
        self._decide_layout(batches)
        calls = self._groups(batches, self.per_call(batches))
        rows = sum(c.y.shape[0] for c in calls)
        self._prepare_compiled(calls, rows, len(positions))
        out = torch.empty(rows, len(positions), dtype=theta[0].dtype, device=device)
        theta, direction = list(theta), list(direction)
        with torch.inference_mode(), forked_rng(device):
            for dst, src in zip(self.buffers, buffers):
                dst.copy_(src)
            for k, s in enumerate(positions):
                torch._foreach_copy_(self.params, theta)
                torch._foreach_add_(self.params, direction, alpha=float(s))
                for c in calls:
                    if self.per_call_seed:
                        torch.manual_seed(c.seed)
                    with precision_context(self.precision, device):  # bf16 → out's float32
                        out[c.start : c.start + c.y.shape[0], k] = self._forward(c)
        return out
