"""The paper's learning-rate grid search (footnote 6): λ ∈ {10⁻ⁱ | i ∈ {0, 1, 1.3, 2, 3, 4}}.

Each λ trains the configured problem for the configured steps without line measurement; the
selected λ is the one with the best validation accuracy at the end (eval mode, running
BatchNorm statistics). A diverging λ scores NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .config import RunConfig
from .errors import DivergenceError
from .problems.problem import make_problem
from .rundir import resolve_device
from .trajectory.loop import Trainer

PAPER_LRS = tuple(10.0**-i for i in (0, 1, 1.3, 2, 3, 4))


@dataclass(frozen=True)
class GridResult:
    """Final metrics of one learning rate (NaN when training diverged)."""

    lr: float
    val_accuracy: float
    val_loss: float
    train_loss: float
    diverged_at: int | None


def lr_grid(
    cfg: RunConfig, lrs: tuple[float, ...] = PAPER_LRS, progress: bool = False
) -> list[GridResult]:
    """Train ``cfg`` once per learning rate and return the final metrics of each."""
    device = resolve_device(cfg.measure.device)
    problem = make_problem(cfg.problem)
    dtype = torch.float64 if cfg.measure.dtype == "float64" else torch.float32
    results = []
    for lr in lrs:
        train_cfg = cfg.train.model_copy(update={"lr": lr})
        trainer = Trainer(problem, train_cfg, device, dtype)
        diverged = None
        for t in tqdm(
            range(train_cfg.steps), desc=f"lr {lr:.4g}", disable=not progress, leave=False
        ):
            try:
                trainer.step(t, *trainer.step_inputs(t))
            except DivergenceError:
                diverged = t
                break
        if diverged is None:
            m = trainer.evaluate()
            results.append(GridResult(lr, m["val_accuracy"], m["val_loss"], m["train_loss"], None))
        else:
            results.append(GridResult(lr, math.nan, math.nan, math.nan, diverged))
    return results


def best_lr(results: list[GridResult]) -> float:
    """The learning rate with the best final validation accuracy."""
    ok = [r for r in results if r.diverged_at is None]
    return max(ok, key=lambda r: r.val_accuracy).lr if ok else math.nan
