"""Lines along noisy directions (docs/method.md §5, the paper's Fig. 8)."""

from __future__ import annotations

import copy

import torch

from ..engine.common import EvalBatch, trainable_parameters
from ..engine.line import Evaluate, GridSpec, measure_line
from ..problems.problem import Problem
from ..rundir import RunDir
from ..seeding import derive_seed
from ..store.integrity import row_mean
from ..trajectory.loop import LineAnchor, Trainer, gradients
from .batches import LineBatches
from .stores import open_or_create_direction_store


class NoisyDirections:
    """Lines along noisy directions at every ``noisy_every``-th step (docs/method.md §5).

    From θ_t, for D mini-batches j of a fresh seeded epoch: g_j = ∇ mean loss of batch j at θ_t
    (train mode, its own BatchNorm statistics), direction −g_j/‖g_j‖, position of an SGD step
    s = λ_t·‖g_j‖; each line is measured on line t's full batch and validation set and on
    batch j. The original's bugs are fixed (§9.15): no skipped step-0 update, the noisy batches
    do not come from the full-batch loader, the inserted point is λ‖g_j‖, and with momentum the
    direction is the pure noisy gradient (not β·m_t + g_j).
    """

    def __init__(self, run: RunDir, problem: Problem, trainer: Trainer) -> None:
        m = run.config.measure
        self.every, self.count = m.noisy_every, m.noisy_directions
        self.seed = run.config.train.seed
        self.problem = problem
        self.trainer = trainer
        self.scratch = copy.deepcopy(trainer.model)
        self.params = [p for _, p in trainable_parameters(self.scratch)]
        self.store = open_or_create_direction_store(run)
        self._done = self.store.done()

    def due(self, t: int) -> bool:
        """Whether step t is a position whose lines are still missing."""
        return t % self.every == 0 and not self._done[t // self.every]

    def _gradient(
        self, anchor: LineAnchor, x: torch.Tensor, y: torch.Tensor, seed: int
    ) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, a in zip(self.params, anchor.theta):
                p.copy_(a)
            for b, a in zip(self.scratch.buffers(), anchor.buffers):
                b.copy_(a)
        self.scratch.train()
        self.scratch.zero_grad(set_to_none=True)
        dev = self.trainer.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            self.problem.loss_fn(self.scratch(x), y).mean().backward()
        return gradients(self.params)

    def measure(
        self,
        t: int,
        anchor: LineAnchor,
        train: list[EvalBatch],
        val: list[EvalBatch],
        evaluate: Evaluate,
        spec: GridSpec,
        batches: LineBatches,
    ) -> None:
        """Measure and store the D noisy lines of position ``t // every``."""
        b, n = self.problem.batch_size, len(self.problem.train)
        per_epoch = n // b
        lines = []
        for j in range(self.count):
            e, i = divmod(j, per_epoch)  # batch i of a fresh seeded epoch e (drop_last)
            g = torch.Generator().manual_seed(derive_seed(self.seed, "noisy", t, e))
            rows = torch.randperm(n, generator=g).numpy()[i * b : (i + 1) * b]
            x, y = batches.to_device(
                self.problem.train_batch(rows, derive_seed(self.seed, "noisy_aug", t, j))
            )
            seed = derive_seed(self.seed, "noisy_dropout", t, j)
            grads = self._gradient(anchor, x, y, seed)
            norm = float(torch.sqrt(sum((gr.double() ** 2).sum() for gr in grads)))
            direction = [-gr / (norm if norm > 0 else 1.0) for gr in grads]
            s_upd = anchor.record.lr * norm
            samples = measure_line(
                evaluate,
                anchor.theta,
                direction,
                anchor.buffers,
                s_upd,
                train,
                val,
                EvalBatch(x, y, seed),
                spec,
            )
            lines.append(
                {
                    "positions": samples.positions,
                    "train_mean": row_mean(samples.train),
                    "val_mean": row_mean(samples.val),
                    "direction_mean": row_mean(samples.direction),
                    "grad_norm": norm,
                    "s_update": s_upd,
                }
            )
        self.store.write_position(t // self.every, t, lines)
        self._done[t // self.every] = True
