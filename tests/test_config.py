"""The named presets: each one resolves, and the real-data CPU preset keeps the paper's protocol."""

from __future__ import annotations

import pytest

from steplines.config import MODELS, PRESETS, load_config
from steplines.problems.models import MODEL_NAMES


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_resolves(name: str) -> None:
    cfg = load_config(preset=name)
    assert cfg.problem.model in MODEL_NAMES


def test_config_knows_every_model() -> None:
    assert set(MODELS) == set(MODEL_NAMES)


def test_fashion_mnist_cpu_keeps_the_papers_protocol() -> None:
    cfg = load_config(preset="fashion-mnist-cpu")
    p, t, m = cfg.problem, cfg.train, cfg.measure
    assert (p.dataset, p.train_size, p.val_size, p.batch_size, p.augment) == (
        "fashion-mnist",
        4800,
        1200,
        128,
        True,
    )
    assert (t.optimizer, t.momentum) == ("sgd", 0.0) and t.lr in (1.0, 0.1, 10**-1.3, 0.01)
    assert (m.grid, m.interval, m.resolution, m.full_batch, m.batchnorm) == (
        "paper",
        0.5,
        0.006,
        "epoch",
        "batch",
    )
    assert t.steps >= 1000
