"""A quadratic toy: every line of linear least squares is exactly a parabola.

The per-sample loss ℓ_i(w) = ½(w·x_i − y_i)² is quadratic in the parameters, so along any line
w + s·d the full-batch loss is l(s) = l(0) + s·(g·d) + ½·s²·(dᵀHd) with H = XᵀX/N, minimised at
s* = −(g·d)/(dᵀHd). This script trains it with plain SGD in its own loop, measures every line
with :class:`steplines.LineProbe`, and compares the measured minimum with that closed form.

    python examples/quadratic.py --out runs/quadratic            # 30 steps, then a report
    steplines report runs/quadratic
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from steplines import LineProbe


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ½(f(x_i) − y_i)², shape [n]."""
    return 0.5 * (out.squeeze(-1) - y) ** 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run directory to write")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    n, d, b = 512, 10, 32
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2.0, d).double()
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    torch.manual_seed(0)
    model = nn.Linear(d, 1, bias=False).double()  # float64: the comparison is exact to ~1e-12
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    probe = LineProbe(
        args.out,
        model,
        squared_error,
        train=(x, y),
        batch_size=b,
        steps=args.steps,
        optimizer=opt,
        measure={"dtype": "float64", "interval": 1.0, "resolution": 0.01},
    )
    hessian = x.T @ x / n
    print(f"{'step':>4} {'s_update':>9} {'s* measured':>12} {'s* closed form':>15}")
    worst = 0.0
    for t in range(args.steps):
        rows = torch.randperm(n, generator=g)[:b]
        with probe.step(t, x[rows], y[rows], rows=rows.numpy()) as line:
            w0 = model.weight.detach().clone().squeeze(0)
            opt.zero_grad()
            loss = squared_error(model(x[rows]), y[rows]).mean()
            loss.backward()
            opt.step()
            line.loss = loss
        rec = line.record
        u = model.weight.detach().squeeze(0) - w0
        direction = u / u.norm()
        g_full = x.T @ (x @ w0 - y) / n
        s_closed = float(-(g_full @ direction) / (direction @ hessian @ direction))
        mean = rec.train_losses.astype(np.float64).mean(axis=0)
        c2, c1, _ = np.polyfit(rec.positions, mean, 2)  # exact parabola: measured minimum
        s_measured = -c1 / (2 * c2)
        worst = max(worst, abs(s_measured - s_closed) / abs(s_closed))
        if t % max(1, args.steps // 10) == 0:
            print(f"{t:>4} {rec.s_update:>9.4f} {s_measured:>12.6f} {s_closed:>15.6f}")
    probe.close()
    print(f"largest relative difference, measured vs closed-form s*: {worst:.2e}")
    print(f"lines written to {args.out}; next: steplines report {args.out}")


if __name__ == "__main__":
    main()
