"""Your own training loop, AdamW with a schedule, measured by :class:`steplines.LineProbe`.

A small convolutional network with BatchNorm and dropout trains on scikit-learn's bundled 8×8
digits with AdamW (two parameter groups: weight decay on weights only), linear warm-up then
cosine decay, all in an ordinary PyTorch loop. The probe measures the line of every scheduled
step along the update *as AdamW applied it* and writes a steplines run directory; the report
then shows the same figures and numbers as for ``steplines run``.

    python examples/own_loop_adamw.py --out runs/adamw               # 300 steps, ~1 minute
    python examples/own_loop_adamw.py --out runs/adamw --report      # and write report.html
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from steplines import LineProbe


class DigitsNet(nn.Module):
    """conv(16)-BN-ReLU, conv(32)-BN-ReLU, global pooling, dropout, linear(10)."""

    def __init__(self, p_drop: float = 0.2) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.drop, self.head = nn.Dropout(p_drop), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(self.drop(x.mean(dim=(2, 3))))


def per_sample_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample, shape [n] (steplines needs every sample's loss)."""
    return F.cross_entropy(logits, y, reduction="none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory to write")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lines", type=int, default=20, help="log-spaced lines to measure")
    ap.add_argument("--resolution", type=float, default=0.05, help="grid spacing of s")
    ap.add_argument("--report", action="store_true", help="analyse and write report.html")
    args = ap.parse_args()

    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = perm[:1280], perm[1280:]
    batch = 64

    torch.manual_seed(0)
    model = DigitsNet()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-3,
    )
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda t: (
            (t + 1) / warmup
            if t < warmup
            else 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, args.steps - warmup)))
        ),
    )
    probe = LineProbe(
        args.out,
        model,
        per_sample_ce,
        train=(x[train], y[train]),
        val=(x[val], y[val]),
        batch_size=batch,
        steps=args.steps,
        optimizer=opt,
        schedule=f"log:{args.lines}",
        measure={"interval": 1.0, "resolution": args.resolution, "max_passes": 3},
    )
    order = torch.Generator().manual_seed(1)
    per_epoch = len(train) // batch
    for t in range(args.steps):
        if t % per_epoch == 0:
            epoch = train[torch.randperm(len(train), generator=order)]
        rows = epoch[(t % per_epoch) * batch : (t % per_epoch + 1) * batch]
        xb, yb = x[rows], y[rows]
        with probe.step(t, xb, yb, rows=rows.numpy()) as line:
            opt.zero_grad()
            loss = per_sample_ce(model(xb), yb).mean()
            loss.backward()
            opt.step()
            line.loss = loss
        sched.step()
        if line.record is not None:
            r = line.record
            full = r.train_losses.astype(np.float64).mean(axis=0)
            s_min = r.positions[int(np.argmin(full))]
            print(
                f"step {t:4d}: step length {r.s_update:.4f}, full-batch minimum at s = {s_min:.4f}"
            )
    probe.close()
    if args.report:
        from steplines.reporting import build_report

        print(f"report: {build_report([args.out])}")
    else:
        print(f"lines written to {args.out}; next: steplines report {args.out}")


if __name__ == "__main__":
    main()
