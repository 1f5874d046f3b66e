"""Benchmark the line engines against the paper's loop, side by side in one run.

Every variant evaluates the same per-sample losses (the same positions and batches of 128 of
synthetic data, the model's input shape); the variants are timed in turns (round-robin, the
median of ``repeat`` turns), so that a machine shared with other work slows them alike. Each
row: sample-evaluations per second (one per-sample loss at one position), the ratio to the
paper's loop with the same number of cores, the largest |Δ| of any per-sample loss against
the reference engine, and the share of this machine's fp32 GEMM ceiling (``torch.mm``,
measured in the same run) converted to samples/s with the model's FLOP per sample.

Variants: ``paper loop`` (the original sampler: parameters walked in place to each position,
one ``no_grad`` forward per batch of 128, docs/method.md §3.4/§3.7), ``reference`` (the oracle),
and the fast engine with the layout (NCHW / channels-last; several batches per call interleaved in
NCHW), samples per call, compilation, and on CPU the engine's worker pool: single-threaded
processes that split the positions.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .engine.common import EvalBatch, LinePolicy
from .engine.fast import FastEvaluator
from .engine.reference import reference_losses
from .engine.workers import WorkerPool
from .problems.models import make_model

SHAPES = {"resnet20": (3, 32), "resnet18": (3, 32), "mobilenetv2": (3, 32), "digits-resnet": (1, 8)}
"""(channels, side) of the synthetic images per model: CIFAR-shaped, digits 8×8."""

BATCH = 128


def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy (the problems' loss)."""
    return F.cross_entropy(logits, y, reduction="none")


def paper_loop(
    model: nn.Module,
    theta: list[Tensor],
    direction: list[Tensor],
    positions: np.ndarray,
    batches: list[EvalBatch],
) -> Tensor:
    """The original sampler: walk the parameters in place, one ``no_grad`` forward per batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(sum(b.y.shape[0] for b in batches), len(positions), device=theta[0].device)
    with torch.no_grad():
        for p, a in zip(params, theta):
            p.copy_(a)
        current = 0.0
        for k, s in enumerate(positions):
            for p, d in zip(params, direction):
                p.add_(d, alpha=float(s - current))
            current = s
            row = 0
            for b in batches:
                n = b.y.shape[0]
                out[row : row + n, k] = loss_fn(model(b.x), b.y)
                row += n
    return out


def gemm_flops(threads: int, sizes: tuple[int, ...] = (1024, 2048), repeat: int = 5) -> float:
    """This machine's fp32 ``torch.mm`` FLOP/s with ``threads`` threads (best size, best turn)."""
    with _threads(threads):
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            for _ in range(repeat):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Problem:
    """A synthetic line: model, θ, unit direction, buffers, positions, batches."""

    model: nn.Module
    theta: list[Tensor]
    direction: list[Tensor]
    buffers: list[Tensor]
    positions: np.ndarray
    batches: list[EvalBatch]

    @property
    def evals(self) -> int:
        return sum(b.y.shape[0] for b in self.batches) * len(self.positions)


def make_line(
    model_name: str, device: torch.device, n_batches: int, n_positions: int, seed: int = 0
) -> Problem:
    """Seeded model at its initialisation, random unit direction, synthetic batches of 128."""
    torch.manual_seed(seed)
    ch, size = SHAPES[model_name]
    model = make_model(model_name, in_channels=ch, image_size=size).to(device).train()
    theta = [p.detach().clone() for p in model.parameters()]
    d = [torch.randn_like(p) for p in theta]
    norm = torch.sqrt(sum((x * x).sum() for x in d))
    batches = [
        EvalBatch(
            torch.randn(BATCH, ch, size, size, device=device),
            torch.randint(0, 10, (BATCH,), device=device),
            i,
        )
        for i in range(n_batches)
    ]
    return Problem(
        model,
        theta,
        [x / norm for x in d],
        [b.detach().clone() for b in model.buffers()],
        np.linspace(-0.5, 0.5, n_positions),
        batches,
    )


@dataclass
class Variant:
    """One timed way of computing the line; ``run()`` returns the losses ``[rows, K]``."""

    name: str
    run: Callable[[], Tensor]
    threads: int = 0
    processes: int = 1
    setup_s: float = 0.0
    close: Callable[[], None] | None = None
    times: list[float] = field(default_factory=list)
    out: Tensor | None = None


def _fast(p: Problem, per_call: int, **kw: object) -> FastEvaluator:
    return FastEvaluator(p.model, LinePolicy(), loss_fn, per_call, **kw)  # type: ignore[arg-type]


def cpu_variants(p: Problem, name: str, quick: bool, cores: int) -> list[Variant]:
    """The CPU variants for model ``name`` with 1 and ``cores`` threads; compiled ones only
    without ``quick``; with 2+ cores also the engine's worker pool (``cores`` single-threaded
    processes splitting the positions, :class:`~steplines.engine.workers.WorkerPool`)."""
    th = (p.theta, p.direction, p.buffers, p.positions, p.batches)
    n = len(p.batches) * BATCH
    mid = min(n, 5 * BATCH)  # the demo preset's calls: 5 BatchNorm batches
    out = [Variant("reference", functools_partial_reference(p), cores)]
    configs: list[tuple[str, int, dict]] = [
        ("fast NCHW, 1 batch/call", BATCH, {}),
        (f"fast NCHW interleaved, ≤{mid}/call", mid, {}),
        ("fast channels-last, 1 batch/call", BATCH, {"channels_last": True}),
        (f"fast channels-last, ≤{n}/call", n, {"channels_last": True}),
    ]
    if not quick:
        configs += [
            ("fast channels-last compiled, 1 batch/call", BATCH, {"channels_last": True}),
            (f"fast channels-last compiled, ≤{n}/call", n, {"channels_last": True}),
        ]
    for c in sorted({1, cores}):
        out.append(
            Variant(
                f"paper loop, {c} thr",
                lambda: paper_loop(p.model, p.theta, p.direction, p.positions, p.batches),
                c,
            )
        )
        for label, per_call, kw in configs:
            compiled = "compiled" in label
            ev = _fast(p, per_call, compile=compiled, **kw)
            t0 = time.perf_counter()
            if compiled:
                with _threads(c):  # inductor's CPU kernels fix their thread count when built
                    ev(*th)
            out.append(
                Variant(
                    f"{label}, {c} thr",
                    lambda ev=ev: ev(*th),
                    c,
                    setup_s=time.perf_counter() - t0,
                )
            )
    # opt-in bf16 autocast (measure.precision = "bf16"): speed, and its error in max |Δ|
    per_call, kw = (mid, {}) if name == "digits-resnet" else (BATCH, {"channels_last": True})
    bf16 = _fast(p, per_call, precision="bf16", **kw)
    out.append(Variant(f"opt-in bf16, ≤{per_call}/call, {cores} thr", lambda: bf16(*th), cores))
    if cores >= 2:
        for label, per_call, kw in _pool_configs(name, n, mid, quick):
            pool = WorkerPool(_fast(p, per_call, **kw), cores)
            t0 = time.perf_counter()
            pool(*th)  # starts the workers (and compiles in each)
            out.append(
                Variant(
                    f"{label}, {cores} procs × 1 thr",
                    lambda pool=pool: pool(*th),
                    1,
                    processes=cores,
                    setup_s=time.perf_counter() - t0,
                    close=pool.close,
                )
            )
    return out


def _pool_configs(name: str, n: int, mid: int, quick: bool) -> list[tuple[str, int, dict]]:
    """The worker-pool rows: the best one-process configurations of each network."""
    if name == "digits-resnet":
        rows = [(f"workers: NCHW interleaved, ≤{mid}/call", mid, {})]
        if not quick:
            kw = {"channels_last": True, "compile": True}
            rows.append((f"workers: channels-last compiled, ≤{n}/call", n, kw))
        return rows
    kw = {"channels_last": True, "compile": not quick}
    return [(f"workers: channels-last{'' if quick else ' compiled'}, 1 batch/call", BATCH, kw)]


def functools_partial_reference(p: Problem) -> Callable[[], Tensor]:
    def ref() -> Tensor:
        return reference_losses(
            p.model, p.theta, p.direction, p.buffers, p.positions, p.batches, LinePolicy(), loss_fn
        )

    return ref


def cuda_variants(p: Problem) -> list[Variant]:
    """CUDA: paper loop, reference, fast (eager, channels-last, compiled) at growing call sizes."""
    th = (p.theta, p.direction, p.buffers, p.positions, p.batches)
    n = len(p.batches) * BATCH
    out = [
        Variant(
            "paper loop",
            lambda: paper_loop(p.model, p.theta, p.direction, p.positions, p.batches),
        ),
        Variant("reference", functools_partial_reference(p)),
    ]
    for label, per_call, kw in (
        ("fast NCHW, 1 batch/call", BATCH, {}),
        (f"fast NCHW, ≤{n}/call", n, {}),
        (f"fast channels-last, ≤{n}/call", n, {"channels_last": True}),
        (f"fast channels-last compiled, ≤{n}/call", n, {"channels_last": True, "compile": True}),
        (f"opt-in tf32, channels-last, ≤{n}/call", n, {"channels_last": True, "precision": "tf32"}),
        (f"opt-in bf16, channels-last, ≤{n}/call", n, {"channels_last": True, "precision": "bf16"}),
    ):
        ev = _fast(p, per_call, **kw)
        t0 = time.perf_counter()
        ev(*th)
        out.append(Variant(label, lambda ev=ev: ev(*th), setup_s=time.perf_counter() - t0))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bench(
    model: str = "resnet20",
    device: str | None = None,
    batches: int = 4,
    positions: int = 4,
    repeat: int = 3,
    quick: bool = False,
) -> tuple[dict, list[dict]]:
    """Time every variant in turns; return (machine facts, one record per variant)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cores = torch.get_num_threads()
    p = make_line(model, dev, batches, positions)
    flop = FastEvaluator(p.model, LinePolicy(), loss_fn).profile(p.batches[0].x)[0]
    variants = cpu_variants(p, model, quick, cores) if dev.type == "cpu" else cuda_variants(p)
    try:
        for v in variants:  # warm-up turn
            with _threads(v.threads):
                v.out = v.run()
        for _ in range(repeat):
            for v in variants:
                with _threads(v.threads):
                    _sync(dev)
                    t0 = time.perf_counter()
                    v.out = v.run()
                    _sync(dev)
                    v.times.append(time.perf_counter() - t0)
    finally:
        for v in variants:
            if v.close is not None:
                v.close()
    ceiling = {c: gemm_flops(c) for c in sorted({1, cores})} if dev.type == "cpu" else {}
    ref = next(v.out for v in variants if v.name == "reference")
    assert ref is not None
    rate = {v.name: p.evals / statistics.median(v.times) for v in variants}
    base = {v.threads: rate[v.name] for v in variants if v.name.startswith("paper")}
    records = []
    for v in variants:
        c = v.threads * v.processes
        peak = ceiling.get(c)
        records.append(
            {
                "variant": v.name,
                "evals_per_s": rate[v.name],
                "ratio_to_paper_loop": rate[v.name] / base.get(c, base[max(base)]),
                "max_abs_diff": float((v.out.cpu() - ref.cpu()).abs().max()),
                "ceiling_share": rate[v.name] * flop / peak if peak else None,
                "cores": c or None,
                "setup_s": round(v.setup_s, 1),
            }
        )
    facts = {
        "model": model,
        "device": str(dev),
        "torch": torch.__version__,
        "threads": cores,
        "batches": f"{batches}x{BATCH}",
        "positions": positions,
        "repeat": repeat,
        "flop_per_sample": flop,
        "gemm_gflops": {c: round(f / 1e9, 1) for c, f in ceiling.items()},
        "ceiling_evals_per_s": {c: round(f / flop) for c, f in ceiling.items()},
    }
    if dev.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(dev)
    return facts, records


def format_table(facts: dict, records: list[dict]) -> str:
    """The records as a plain-text table under one line of facts."""
    head = " ".join(f"{k}={v}" for k, v in facts.items())
    lines = [
        head,
        f"{'variant':<58} {'evals/s':>9} {'× paper':>8} {'max |Δ|':>9} {'ceiling':>8} "
        f"{'setup s':>8}",
    ]
    for r in records:
        share = f"{100 * r['ceiling_share']:.0f} %" if r["ceiling_share"] is not None else "–"
        lines.append(
            f"{r['variant']:<58} {r['evals_per_s']:>9.0f} {r['ratio_to_paper_loop']:>8.2f} "
            f"{r['max_abs_diff']:>9.1e} {share:>8} {r['setup_s']:>8.1f}"
        )
    return "\n".join(lines)
