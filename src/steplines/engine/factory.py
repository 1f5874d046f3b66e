"""One way to an engine: :func:`make_engine` from a :class:`~steplines.config.EngineConfig`.

An engine is a callable ``(θ_t, d_t, buffers, positions [K], batches) → losses [rows, K]``
(:data:`~steplines.engine.line.Evaluate`) with ``losses[i, k] = ℓ_i(θ_t + s_k·d_t)``
(:mod:`steplines.engine.common`). Which one, and with which resources, is the
:class:`~steplines.config.EngineConfig`'s business; what is measured (BatchNorm and dropout
policy, precision) is passed beside it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..config import EngineConfig
from .common import LinePolicy, LossFn
from .fast import FastEvaluator
from .line import Evaluate
from .reference import reference_losses
from .workers import WORKERS_MIN_FLOP, WorkerPool


def make_engine(
    config: EngineConfig,
    model: nn.Module,
    loss_fn: LossFn,
    device: torch.device,
    *,
    policy: LinePolicy | None = None,
    precision: str = "fp32",
    workers_ok: bool = False,
) -> Evaluate:
    """The engine ``config.engine`` selects, bound to (a private copy of) ``model``.

    ``reference``: :func:`~steplines.engine.reference.reference_losses` (the oracle; fp32).
    ``fast``/``auto``: a :class:`~steplines.engine.fast.FastEvaluator` — samples per call
    ``config.max_eval_batch`` or :func:`~steplines.engine.fast.default_per_call`, bounded by
    ``config.memory_budget_mb``; channels-last for convolutional networks of ≥
    :data:`~steplines.engine.fast.CHANNELS_LAST_MIN_FLOP` per sample (CPU and CUDA);
    ``config.compile`` (``auto``: CPU only, for lines of ≥
    :data:`~steplines.engine.fast.COMPILE_MIN_FLOP`); ``precision``
    (:mod:`~steplines.engine.precision`). On CPU with ``config.workers = "auto"`` (and
    ``workers_ok``: the CLI's measuring loop, not a user's training loop or a Ray task) and ≥ 2
    threads, or an explicit ``config.workers`` ≥ 2, it runs in a
    :class:`~steplines.engine.workers.WorkerPool` of single-threaded processes (``auto``: for
    passes of ≥ :data:`~steplines.engine.workers.WORKERS_MIN_FLOP`). Whatever holds worker
    processes has a ``close()``.

    Args:
        config: how lines are measured (engine, call size, compile, memory, workers).
        model: the network; the engine works on a private copy and never changes it.
        loss_fn: per-sample loss.
        device: where to measure (``config.device`` resolved).
        policy: BatchNorm and dropout policy (default: the paper's, ``batch``/``fixed``).
        precision: ``fp32``, ``tf32`` or ``bf16`` (the fast engine's forward passes).
        workers_ok: ``config.workers = "auto"`` may start worker processes.
    """
    policy = policy if policy is not None else LinePolicy()
    if config.engine == "reference":
        return functools.partial(reference_losses, model, policy=policy, loss_fn=loss_fn)
    engine = FastEvaluator(
        model,
        policy,
        loss_fn,
        config.max_eval_batch,
        channels_last="auto",
        compile={"on": True, "off": False}.get(config.compile, "auto"),
        memory_budget_mb=config.memory_budget_mb,
        precision=precision,
    )
    if device.type != "cpu":
        return engine
    if config.workers == "auto":
        n = torch.get_num_threads()
        if workers_ok and n >= 2:
            return WorkerPool(engine, n, min_flop=WORKERS_MIN_FLOP)
        return engine
    return WorkerPool(engine, config.workers) if config.workers >= 2 else engine
