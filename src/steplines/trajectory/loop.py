"""The training loop that records exactly what it did.

A :class:`Trainer` performs training step t from explicit inputs — the batch's sample rows,
its augmentation seed and its dropout seed — so the same step can be replayed anywhere from a
checkpoint. The batch order is a seeded permutation per epoch (``drop_last``), augmentation
and dropout seeds are derived per step (:func:`steplines.seeding.derive_seed`); no global RNG
state carries over between steps.

The line of step t follows the update *as applied*: u_t = θ_{t+1} − θ_t, d_t = u_t/‖u_t‖
(norm over all trainable parameters), s_update = ‖u_t‖. For SGD with momentum β (PyTorch
semantics) u_t = −λ_t·m_t with m_t = β·m_{t−1} + g_t (the original's doubled first buffer,
docs/method.md §9.10, is not reproduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import TrainConfig, optimizer_error
from ..engine.common import trainable_parameters
from ..errors import ConfigError, DivergenceError
from ..problems.problem import Problem, to_device
from ..seeding import derive_seed


@dataclass(frozen=True)
class StepRecord:
    """What step t did (enough to replay it, plus its summary numbers).

    Attributes:
        rows: ``int64 [B]`` positions of the direction batch in the training set.
        aug_seed: augmentation seed of the batch.
        dropout_seed: seed of the training forward pass (fixes dropout masks).
        batch_loss: mean loss of the batch at θ_t (l_B(0)).
        lr: learning rate of parameter group 0 at step t.
        s_update: ‖u_t‖, where θ_{t+1} lies on the line.
        direction_norm: ‖u_t‖/lr (‖m_t‖ for SGD: the paper's n_t).
        grad_norm: ‖g_t‖ of the batch loss (without weight decay).
        directional_derivative: g_t·d_t, the exact slope of l_B at s = 0.
    """

    rows: np.ndarray
    aug_seed: int
    dropout_seed: int
    batch_loss: float
    lr: float
    s_update: float
    direction_norm: float
    grad_norm: float
    directional_derivative: float


@dataclass(frozen=True)
class LineAnchor:
    """Everything a line measurement at step t needs (transient, not stored)."""

    t: int
    theta: list[Tensor]
    direction: list[Tensor]
    buffers: list[Tensor]
    record: StepRecord


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Build the configured ``torch.optim`` optimizer (:meth:`TrainConfig.optimizer_call`)."""
    name, kwargs = cfg.optimizer_call()
    cls = getattr(torch.optim, name)
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise ConfigError(optimizer_error(cfg.optimizer, kwargs, err)) from None


def check_optimizer(cfg: TrainConfig) -> None:
    """Build the configured optimizer on a dummy parameter, so that a value it refuses in
    ``optimizer_kwargs`` (the configuration checks only their names) is reported before the
    run directory is made.

    Raises:
        ConfigError: The optimizer cannot be built.
    """
    make_optimizer([nn.Parameter(torch.zeros(1))], cfg)


def gradients(params: list[nn.Parameter]) -> list[Tensor]:
    """Copies of ``p.grad`` (zeros where a parameter got no gradient)."""
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@torch.no_grad()
def update_line(
    theta: list[Tensor], params: list[nn.Parameter], grads: list[Tensor]
) -> tuple[list[Tensor], float, float, float]:
    """The line of an applied update: ``(d_t, ‖u_t‖, g_t·d_t, ‖g_t‖)``.

    u_t = θ_{t+1} − θ_t with θ_{t+1} = ``params`` now and θ_t = ``theta``; d_t = u_t/‖u_t‖
    (zero when nothing moved); norms and the slope are accumulated in float64.
    """
    update = [p.detach() - a for p, a in zip(params, theta)]
    norm = math.sqrt(sum(float(u.double().pow(2).sum()) for u in update))
    direction = [u / (norm if norm > 0 else 1.0) for u in update]
    slope = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, direction))
    grad_norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    return direction, norm, slope, grad_norm


class Trainer:
    """Model, optimizer and schedule of one run; performs and replays steps.

    Args:
        problem: data, model factory and loss.
        cfg: the training configuration.
        device: where to train.
        dtype: parameter dtype (float32, or float64 for exactness tests).
    """

    def __init__(
        self,
        problem: Problem,
        cfg: TrainConfig,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.problem, self.cfg, self.device, self.dtype = problem, cfg, device, dtype
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "init"))
            self.model = problem.model_factory()
        self.model.to(device=device, dtype=dtype)
        self.params = [p for _, p in trainable_parameters(self.model)]
        self.optimizer = make_optimizer(self.params, cfg)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
        self.steps_per_epoch = len(problem.train) // problem.batch_size

    # -- what step t uses --------------------------------------------------------------------
    def batch_rows(self, t: int) -> np.ndarray:
        """Rows of step t: batch ``t mod E`` of the seeded permutation of epoch ``t // E``."""
        e, i = divmod(t, self.steps_per_epoch)
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "order", e))
        perm = torch.randperm(len(self.problem.train), generator=g).numpy()
        b = self.problem.batch_size
        return perm[i * b : (i + 1) * b].astype(np.int64)

    def step_inputs(self, t: int) -> tuple[np.ndarray, int, int]:
        """``(rows, aug_seed, dropout_seed)`` of step t for a fresh trajectory."""
        return (
            self.batch_rows(t),
            derive_seed(self.cfg.seed, "augment", t),
            derive_seed(self.cfg.seed, "dropout", t),
        )

    def batch(self, rows: np.ndarray, aug_seed: int) -> tuple[Tensor, Tensor]:
        """The (augmented) batch on the trainer's device and dtype."""
        x, y = self.problem.train_batch(rows, aug_seed)
        return to_device(x, self.device, self.dtype), y.to(self.device)

    # -- one step ------------------------------------------------------------------------------
    def step(
        self, t: int, rows: np.ndarray, aug_seed: int, dropout_seed: int, keep_anchor: bool = False
    ) -> tuple[StepRecord, LineAnchor | None]:
        """Perform training step t on the given batch.

        Args:
            t: the step index.
            rows, aug_seed, dropout_seed: the batch and seeds (recorded or fresh).
            keep_anchor: also return θ_t, d_t and θ_t's buffers for a line measurement.

        Raises:
            DivergenceError: the batch loss is not finite.
        """
        x, y = self.batch(rows, aug_seed)
        buffers = [b.detach().clone() for b in self.model.buffers()] if keep_anchor else []
        theta = [p.detach().clone() for p in self.params]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(dropout_seed)
            loss = self.problem.loss_fn(self.model(x), y).mean()
        batch_loss = float(loss.detach())
        if not math.isfinite(batch_loss):
            raise DivergenceError(
                f"training diverged at step {t} (batch loss {batch_loss}); every line before it "
                "is kept — lower train.lr or add a schedule"
            )
        loss.backward()
        grads = gradients(self.params)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.scheduler.step()
        direction, norm, slope, grad_norm = update_line(theta, self.params, grads)
        record = StepRecord(
            rows=np.asarray(rows, dtype=np.int64),
            aug_seed=int(aug_seed),
            dropout_seed=int(dropout_seed),
            batch_loss=batch_loss,
            lr=lr,
            s_update=norm,
            direction_norm=norm / lr if lr > 0 else float("nan"),
            grad_norm=grad_norm,
            directional_derivative=slope,
        )
        anchor = LineAnchor(t, theta, direction, buffers, record) if keep_anchor else None
        return record, anchor

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model (parameters + buffers), optimizer and scheduler state."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @torch.no_grad()
    def evaluate(self, train_rows: int | None = None) -> dict[str, float]:
        """Eval-mode loss (and accuracy, for classifiers) on the validation and training sets."""
        was = self.model.training
        self.model.eval()
        out = {}
        for name, n, get in (
            ("val", len(self.problem.val), self.problem.val_batch),
            (
                "train",
                train_rows or len(self.problem.train),
                lambda r: self.problem.train_batch(r, None),
            ),
        ):
            loss = correct = 0.0
            classify = True
            for s in range(0, n, 1024):
                x, y = get(np.arange(s, min(n, s + 1024)))
                logits = self.model(to_device(x, self.device, self.dtype))
                y = y.to(self.device)
                loss += float(self.problem.loss_fn(logits, y).sum())
                # accuracy only where it means something: class scores [n, C], labels [n]
                classify = (
                    classify and logits.ndim == 2 and y.ndim == 1 and not y.is_floating_point()
                )
                if classify:
                    correct += float((logits.argmax(1) == y).sum())
            if n == 0:
                continue
            out[f"{name}_loss"] = loss / n
            if classify:
                out[f"{name}_accuracy"] = correct / n
        self.model.train(was)
        return out
