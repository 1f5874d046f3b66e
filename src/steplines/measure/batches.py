"""The fixed evaluation batches of a line: full batch, validation set, direction batch.

For line t: the full batch is ``epoch`` (a fresh augmented ``drop_last`` epoch seeded by
(run seed, t), the paper), ``fixed`` (the whole un-augmented training set) or ``sample:n``
(the first n/B batches of that epoch); the validation set is whole and un-augmented; the
direction batch is step t's own mini-batch (its rows and augmentation seed from the step
record). Every batch gets its own dropout seed, so a line is a pure function of (run seed, t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import RunConfig, check_sample_size, sample_size
from ..engine.common import EvalBatch
from ..errors import ConfigError
from ..problems.problem import Problem, to_device
from ..seeding import derive_seed
from ..trajectory.loop import StepRecord


def full_batch_rows(problem: Problem, cfg: RunConfig) -> int:
    """N: rows of the full batch per line.

    ``⌊N/B⌋·B`` for ``epoch``, all training images for ``fixed``, n for ``sample:n``.

    Raises:
        ConfigError: ``sample:n`` does not fit the problem (n not a multiple of its batch
            size, or more than its training images); see :func:`check_full_batch`.
    """
    n, b = len(problem.train), problem.batch_size
    sample = check_full_batch(problem, cfg)
    if sample is not None:
        return sample
    return (n // b) * b if cfg.measure.full_batch == "epoch" else n


def check_full_batch(problem: Problem, cfg: RunConfig) -> int | None:
    """n of ``full_batch = "sample:n"`` checked against the problem's data (None otherwise).

    The configuration checks n against the batch size and training size it names; a user's
    problem (``problem.factory``, LineProbe) brings its own, so they are checked here again.

    Raises:
        ConfigError: n is not a multiple of the batch size or exceeds the training images.
    """
    n = sample_size(cfg.measure.full_batch)
    if n is not None:
        try:
            check_sample_size(n, problem.batch_size, len(problem.train))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return n


@dataclass
class LineBatches:
    """Builds the fixed evaluation batches of a line (full batch, validation, direction)."""

    problem: Problem
    cfg: RunConfig
    device: torch.device
    dtype: torch.dtype

    def __post_init__(self) -> None:
        check_full_batch(self.problem, self.cfg)
        b, n_val = self.problem.batch_size, len(self.problem.val)
        self._val_rows = [np.arange(s, min(s + b, n_val)) for s in range(0, n_val, b)]
        self._val_data = [self.to_device(self.problem.val_batch(r)) for r in self._val_rows]
        self._fixed_train: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def to_device(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(xy[0], self.device, self.dtype), xy[1].to(self.device)

    @property
    def n_train(self) -> int:
        """N: rows of the full batch (``drop_last`` for ``epoch``, n for ``sample:n``)."""
        return full_batch_rows(self.problem, self.cfg)

    def train_rows(self, t: int) -> list[np.ndarray]:
        """Training rows of line t, one array per BatchNorm batch.

        ``fixed``: all rows in order. ``epoch``: a permutation seeded by (run seed, t),
        ``drop_last``. ``sample:n``: the first n rows of that same permutation — the first
        n/B batches of the epoch ``epoch`` would draw for line t (augmented alike), so n
        distinct training rows, a different subset on every line, identical on every rerun,
        resume or shard.
        """
        n, b = len(self.problem.train), self.problem.batch_size
        if self.cfg.measure.full_batch == "fixed":
            return [np.arange(s, min(s + b, n)) for s in range(0, n, b)]
        g = torch.Generator().manual_seed(derive_seed(self.cfg.train.seed, "full_batch", t))
        perm = torch.randperm(n, generator=g).numpy()[: self.n_train]
        return [perm[s : s + b] for s in range(0, self.n_train, b)]

    def batches(
        self, t: int, record: StepRecord
    ) -> tuple[list[EvalBatch], list[EvalBatch], EvalBatch, np.ndarray]:
        """``(train, val, direction, train_rows)`` evaluation batches of line t."""
        train, val, rows = self.full_and_val(t)
        x, y = self.to_device(self.problem.train_batch(record.rows, record.aug_seed))
        return train, val, EvalBatch(x, y, record.dropout_seed), rows

    def full_and_val(self, t: int) -> tuple[list[EvalBatch], list[EvalBatch], np.ndarray]:
        """``(train, val, train_rows)``: the full-batch and validation batches of line t."""
        seed = self.cfg.train.seed
        rows = self.train_rows(t)
        if self.cfg.measure.full_batch == "fixed":
            if self._fixed_train is None:
                self._fixed_train = [
                    self.to_device(self.problem.train_batch(r, None)) for r in rows
                ]
            data = self._fixed_train
        else:
            data = [
                self.to_device(
                    self.problem.train_batch(r, derive_seed(seed, "full_batch_aug", t, i))
                )
                for i, r in enumerate(rows)
            ]
        train = [
            EvalBatch(x, y, derive_seed(seed, "dropout_eval", t, 0, i))
            for i, (x, y) in enumerate(data)
        ]
        val = [
            EvalBatch(x, y, derive_seed(seed, "dropout_eval", t, 1, i))
            for i, (x, y) in enumerate(self._val_data)
        ]
        return train, val, np.concatenate(rows)
