"""Short end-to-end runs on real data formats: CIFAR-10 (python pickles) and Fashion-MNIST."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from steplines.problems.datasets import FASHION_MNIST_SYSTEM_DIR
from steplines.store import LineStore

from support import cli, steplines

# the paper presets with two lines over small sets, without the estimators (their per-sample
# gradients and Hessian-vector products of ResNet-20 were most of these tests' time; the
# estimators are tested end to end in test_estimators_run.py)
SMALL = """
[problem]
train_size = {train}
val_size = {val}
batch_size = 16
[train]
steps = 2
checkpoint_every = 2
cpu_threads = 1
[measure]
resolution = 0.1
max_passes = 1
estimators = false
"""


def _fake_cifar(root: Path, per_batch: int = 200) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    return root


# slow: ResNet-20 on CIFAR-format files end to end; the loader is tested in test_datasets and
# the real-data pipeline by the Fashion-MNIST test
@pytest.mark.slow
def test_paper_preset_runs_on_cifar_format(tmp_path: Path) -> None:
    data = _fake_cifar(tmp_path / "cifar")
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL.format(train=32, val=16))
    run = tmp_path / "run"
    steplines(
        "run",
        "--preset",
        "paper-resnet20-sgd",
        "--config",
        str(cfg),
        "--out",
        str(run),
        "--data-dir",
        str(data),
        "--quiet",
        check=True,
        report=True,
    )
    assert (run / "report.html").exists() and any((run / "figures").glob("*.png"))
    store = LineStore.open(run / "lines.zarr")
    assert store.done().all() and (store.n_train, store.n_val) == (32, 16)
    assert store.attrs["dataset"] == "cifar10"
    assert len(store.attrs["train_source_indices"]) == 32
    assert "resnet20" in (run / "config.toml").read_text()


@pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM_DIR.exists(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_fashion_mnist_preset_end_to_end(tmp_path: Path) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL.format(train=48, val=16))
    run = tmp_path / "run"
    res = steplines(
        "run",
        "--preset",
        "fashion-mnist",
        "--config",
        str(cfg),
        "--out",
        str(run),
        "--quiet",
        check=True,
    )
    assert "2/2 lines done" in res.stdout
    line = LineStore.open(run / "lines.zarr").read_line(0)
    assert line.train_losses.shape == (48, line.positions.size)
    # an untrained 10-class network starts near ln 10 ≈ 2.3
    assert np.isfinite(line.train_losses).all() and 1.0 < line.batch_loss < 5.0


def test_lr_grid_prints_table_and_best(tmp_path: Path) -> None:
    # in this process (support.cli): the table is the subject, not the process
    res = cli(
        "lr-grid", "--preset", "demo", "--steps", "10", "--lrs", "1,0.001", "--quiet", check=True
    )
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["lr", "val", "acc"]
    assert lines[-1] == "best lr: 1 (10 steps each)"
