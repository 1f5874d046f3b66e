"""The training loop: measuring lines never changes the trajectory, and the line follows the
update as applied (θ_t + s_update·d_t = θ_{t+1}) for any optimizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steplines.config import load_config
from steplines.engine.common import EvalBatch, LinePolicy
from steplines.engine.fast import FastEvaluator
from steplines.engine.reference import reference_losses
from steplines.problems.problem import make_problem
from steplines.trajectory.loop import Trainer


def test_measurement_does_not_change_the_trajectory(tiny_config: Path) -> None:
    """Steps interleaved with both engines' measurements are bitwise those without (CPU)."""
    cfg = load_config(path=tiny_config)
    problem = make_problem(cfg.problem)
    plain = Trainer(problem, cfg.train, torch.device("cpu"))
    probed = Trainer(problem, cfg.train, torch.device("cpu"))
    fast = FastEvaluator(probed.model, LinePolicy(), problem.loss_fn)
    x, y = problem.val_batch(np.arange(64))
    batches = [EvalBatch(x, y, 0)]
    for t in range(6):
        plain.step(t, *plain.step_inputs(t))
        _, a = probed.step(t, *probed.step_inputs(t), keep_anchor=True)
        pos = np.array([-0.3, 0.0, a.record.s_update, 0.4])
        fast(a.theta, a.direction, a.buffers, pos, batches)
        reference_losses(
            probed.model,
            a.theta,
            a.direction,
            a.buffers,
            pos,
            batches,
            LinePolicy(),
            problem.loss_fn,
        )
        for (k, v), w in zip(plain.model.state_dict().items(), probed.model.state_dict().values()):
            assert torch.equal(v, w), (t, k)
        for s1, s2 in zip(
            plain.optimizer.state_dict()["state"].values(),
            probed.optimizer.state_dict()["state"].values(),
        ):
            assert all(torch.equal(s1[k], s2[k]) for k in s1 if torch.is_tensor(s1[k]))


@pytest.mark.parametrize(
    "train",
    [
        {"train.momentum": 0.9, "train.weight_decay": 1e-3, "train.milestones": [2]},
        {"train.optimizer": "adam", "train.lr": 1e-3},
        {"train.optimizer": "AdamW", "train.lr": 1e-3, "train.weight_decay": 0.1},
    ],
    ids=["sgd-momentum-wd-milestone", "adam", "adamw"],
)
def test_line_passes_through_next_parameters(tiny_config: Path, train: dict) -> None:
    """θ_t + s_update·d_t = θ_{t+1}: the line follows the update as applied, any optimizer."""
    cfg = load_config(path=tiny_config, overrides=train)
    problem = make_problem(cfg.problem)
    tr = Trainer(problem, cfg.train, torch.device("cpu"), torch.float64)
    lrs = []
    for t in range(4):
        rec, a = tr.step(t, *tr.step_inputs(t), keep_anchor=True)
        lrs.append(rec.lr)
        for p, th, d in zip(tr.params, a.theta, a.direction):
            torch.testing.assert_close(th + rec.s_update * d, p.detach(), rtol=0, atol=1e-12)
        assert np.isclose(rec.direction_norm * rec.lr, rec.s_update)
    if "train.milestones" in train:
        assert lrs == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]
