"""Benchmark the line engines against the paper's loop (side by side, one process).

Prints one row per variant: sample-evaluations per second, ratio to the paper's loop, and the
largest |Δ| of any per-sample loss against the reference engine. The paper's loop moves the
parameters in place to each position and evaluates batches of 128 under ``no_grad`` (SPEC §3.4,
§3.7); the reference engine is the slow, obvious oracle; the fast engine is what runs by default.

    python bench/engine_bench.py --model resnet20 --device cpu --positions 8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from steplines.engine.evaluators import EvalBatch, FastEvaluator, LinePolicy, reference_losses
from steplines.problems.models import make_model

SHAPES = {"resnet20": (3, 32), "resnet18": (3, 32), "mobilenetv2": (3, 32), "digits-resnet": (1, 8)}


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def paper_loop(model, theta, direction, positions, batches):
    """The original sampler: walk the parameters in place, one no_grad forward per batch."""
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat):
    fn()  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=8, help="evaluation batches of 128")
    ap.add_argument("--positions", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--groups", default="128,512,1024,4096", help="fast engine max_eval_batch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    ch, size = SHAPES[args.model]
    model = make_model(args.model, in_channels=ch, image_size=size).to(device).train()
    theta = [p.detach().clone() for p in model.parameters()]
    d = [torch.randn_like(p) for p in theta]
    norm = torch.sqrt(sum((x * x).sum() for x in d))
    direction = [x / norm for x in d]
    buffers = [b.detach().clone() for b in model.buffers()]
    batches = [
        EvalBatch(
            torch.randn(128, ch, size, size, device=device),
            torch.randint(0, 10, (128,), device=device),
            i,
        )
        for i in range(args.batches)
    ]
    positions = np.linspace(-0.5, 0.5, args.positions)
    evals = 128 * args.batches * args.positions
    policy = LinePolicy()
    ref, t_ref = timed(
        lambda: reference_losses(
            model, theta, direction, buffers, positions, batches, policy, loss_fn
        ),
        device,
        1,
    )
    rows = []
    paper, t_paper = timed(
        lambda: paper_loop(model, theta, direction, positions, batches), device, args.repeat
    )
    rows.append(("paper loop", evals / t_paper, (paper - ref).abs().max().item()))
    rows.append(("reference", evals / t_ref, 0.0))
    for g in (int(v) for v in args.groups.split(",")):
        ev = FastEvaluator(model, policy, loss_fn, g)
        out, t = timed(
            lambda ev=ev: ev(theta, direction, buffers, positions, batches), device, args.repeat
        )
        rows.append((f"fast (≤{g} per call)", evals / t, (out - ref).abs().max().item()))
    base = rows[0][1]
    recs = [
        {"variant": v, "evals_per_s": e, "ratio_to_paper_loop": e / base, "max_abs_diff": dm}
        for v, e, dm in rows
    ]
    if args.json:
        print(json.dumps(recs, indent=2))
        return
    print(
        f"model={args.model} device={device} threads={torch.get_num_threads()} "
        f"batches={args.batches}x128 positions={args.positions} torch={torch.__version__}"
    )
    print(f"{'variant':<24} {'evals/s':>10} {'× paper':>8} {'max |Δ| vs ref':>15}")
    for r in recs:
        print(
            f"{r['variant']:<24} {r['evals_per_s']:>10.0f} {r['ratio_to_paper_loop']:>8.2f} "
            f"{r['max_abs_diff']:>15.2e}"
        )


if __name__ == "__main__":
    main()
