"""``measure.full_batch = "sample:n"``: a fresh random subset of n training samples per line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steplines.config import load_config
from steplines.errors import ConfigError
from steplines.measure import LineBatches, check_full_batch, measure_lines, record_trajectory
from steplines.probe import LineProbe
from steplines.problems.datasets import FASHION_MNIST_SYSTEM_DIR, paper_split
from steplines.problems.problem import Problem, make_problem, per_sample_cross_entropy
from steplines.rundir import RunDir
from steplines.store import LineStore

from support import TINY, assert_same_store, steplines


def _batches(tiny_config: Path, full_batch: str, **over: object) -> LineBatches:
    cfg = load_config(path=tiny_config, overrides={"measure.full_batch": full_batch, **over})
    return LineBatches(make_problem(cfg.problem), cfg, torch.device("cpu"), torch.float32)


def test_sample_rows_are_distinct_fresh_and_reproducible(tiny_config: Path) -> None:
    # the tiny problem: 256 training images, B = 64
    lb = _batches(tiny_config, "sample:128")
    assert lb.n_train == 128
    lines = [lb.train_rows(t) for t in range(5)]
    for batches in lines:
        assert [len(b) for b in batches] == [64, 64]  # BatchNorm batches of B, like epoch
        rows = np.concatenate(batches)
        assert len(set(rows.tolist())) == 128 and rows.min() >= 0 and rows.max() < 256
    flat = [np.concatenate(b) for b in lines]
    assert all(not np.array_equal(flat[0], f) for f in flat[1:])  # a new subset per line
    again = _batches(tiny_config, "sample:128")  # a rerun / another shard
    for t in range(5):
        np.testing.assert_array_equal(np.concatenate(again.train_rows(t)), flat[t])
    # the subset is the first n/B batches of the epoch `epoch` draws for the same line
    epoch = _batches(tiny_config, "epoch")
    for t in range(5):
        np.testing.assert_array_equal(np.concatenate(epoch.train_rows(t))[:128], flat[t])
    # and its data (augmentation seeds per batch) is epoch's data
    s_train, _, s_rows = lb.full_and_val(3)
    e_train, _, e_rows = epoch.full_and_val(3)
    np.testing.assert_array_equal(s_rows, e_rows[:128])
    for a, b in zip(s_train, e_train[:2]):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.dropout_seed == b.dropout_seed


def test_tiny_sampled_run_store(tiny_config: Path, tmp_path: Path) -> None:
    """n_train == n; rows are the sample; a run measured in another order gives the same store."""
    over = {"measure.full_batch": "sample:128", "train.steps": 6}
    cfg = load_config(path=tiny_config, overrides=over)
    run = RunDir.prepare(tmp_path / "a", cfg)
    problem = make_problem(cfg.problem)
    record_trajectory(run, problem, torch.device("cpu"))
    measure_lines(run, problem, torch.device("cpu"))
    store = LineStore.open(run.lines_path)
    assert store.done().all() and (store.n_train, store.n_val, store.n_direction) == (128, 64, 64)
    assert store.attrs["full_batch"] == "sample:128"
    assert len(store.attrs["train_source_indices"]) == 256  # the training set it samples from
    lb = LineBatches(problem, cfg, torch.device("cpu"), torch.float32)
    for t in range(6):
        line = store.read_line(t)
        np.testing.assert_array_equal(line.train_indices, np.concatenate(lb.train_rows(t)))
        assert line.train_losses.shape == (128, line.positions.size)
        assert np.isfinite(line.train_losses).all()
    # segments measured last-first (a resumed or sharded run): the identical store
    other = RunDir.prepare(tmp_path / "b", cfg)
    record_trajectory(other, problem, torch.device("cpu"))
    for seg in reversed(other.trajectory.segments(6, 4)):
        measure_lines(other, problem, torch.device("cpu"), segments=[seg])
    assert_same_store(run.path, other.path)


def test_epoch_store_has_no_full_batch_attribute(tiny_config: Path, tmp_path: Path) -> None:
    cfg = load_config(path=tiny_config, overrides={"train.steps": 1})
    run = RunDir.prepare(tmp_path / "r", cfg)
    record_trajectory(run, make_problem(cfg.problem), torch.device("cpu"))
    store = LineStore.open(run.lines_path)
    assert store.n_train == 256 and "full_batch" not in store.attrs


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("sample:100", ["multiple of the batch size 64", "use sample:64 or sample:128"]),
        ("sample:512", ["more than the 256 training images", "at most sample:256"]),
        ("sample:0", ["'epoch', 'fixed' or 'sample:n'"]),
        ("everything", ["measure.full_batch", "'epoch', 'fixed' or 'sample:n'"]),
    ],
)
def test_bad_sample_sizes_are_config_errors(
    tiny_config: Path, value: str, needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(path=tiny_config, overrides={"measure.full_batch": value})
    assert all(n in str(err.value) for n in needles), str(err.value)


def test_bad_sample_size_from_cli_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.format(steps=3) + 'full_batch = "sample:100"\n')
    res = steplines("run", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "sample:128" in lines[0]
    assert not (tmp_path / "r").exists()


def test_users_problem_is_checked_on_its_own_data(tiny_config: Path) -> None:
    """A factory's batch size and training set are only known once built."""
    x, y = torch.randn(100, 3), torch.randint(0, 2, (100,))
    problem = Problem.from_tensors(
        (x, y), None, lambda: torch.nn.Linear(3, 2), per_sample_cross_entropy, 20
    )
    fine = load_config(overrides={"problem.factory": "m:f", "measure.full_batch": "sample:60"})
    assert check_full_batch(problem, fine) == 60
    for value, needle in (("sample:50", "batch size 20"), ("sample:120", "100 training")):
        cfg = load_config(overrides={"problem.factory": "m:f", "measure.full_batch": value})
        with pytest.raises(ConfigError, match=needle):
            check_full_batch(problem, cfg)


def test_fashion_mnist_full_preset_validates() -> None:
    cfg = load_config("fashion-mnist-full")
    p, m = cfg.problem, cfg.measure
    assert (p.dataset, p.train_size, p.val_size, p.batch_size) == (
        "fashion-mnist",
        48000,
        1200,
        128,
    )
    assert (m.full_batch, m.batchnorm, m.grid, m.interval, m.resolution) == (
        "sample:2048",
        "batch",
        "paper",
        0.5,
        0.006,
    )
    # every image of the 80 % training pool trains; validation = the fashion-mnist preset's
    train, val = paper_split(60000, pool_train=48000, train_size=48000, val_size=1200)
    small_train, small_val = paper_split(60000, pool_train=48000, train_size=4800, val_size=1200)
    assert len(set(train.tolist())) == 48000 and not set(train.tolist()) & set(val.tolist())
    np.testing.assert_array_equal(val, small_val)
    assert set(small_train.tolist()) <= set(train.tolist())


@pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM_DIR.exists(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_fashion_mnist_full_preset_problem() -> None:
    cfg = load_config("fashion-mnist-full")
    problem = make_problem(cfg.problem)
    assert (len(problem.train), len(problem.val)) == (48000, 1200)
    lb = LineBatches(problem, cfg, torch.device("cpu"), torch.float32)
    rows = lb.train_rows(0)
    assert lb.n_train == 2048 and len(rows) == 16 and len(set(np.concatenate(rows))) == 2048


def test_readme_full_cifar_snippet_validates(tmp_path: Path) -> None:
    """The README's full CIFAR-10 TOML over the paper preset: a valid sampled configuration."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("**Full CIFAR-10**", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "cifar-full.toml"
    path.write_text(block)
    cfg = load_config("paper-resnet20-sgd", path)
    assert (cfg.problem.train_size, cfg.measure.full_batch) == (40000, "sample:4096")
    # what the loader allows: the 80 % pool of CIFAR-10's 50,000 training images
    train, _ = paper_split(50000, pool_train=40000, train_size=40000, val_size=1000)
    assert len(set(train.tolist())) == 40000


def test_line_probe_with_a_sampled_full_batch(tmp_path: Path) -> None:
    """A user's loop: n rows of the user's training set per line; a bad n is refused up front."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 4, generator=g), torch.randint(0, 3, (96,), generator=g)

    def net() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
        )

    problem = Problem.from_tensors((x, y), None, net, per_sample_cross_entropy, batch_size=16)
    grid = {"resolution": 0.1, "interval": 0.2, "max_passes": 1}
    with pytest.raises(ConfigError, match="multiple of the batch size 16"):
        LineProbe(
            tmp_path / "bad",
            net(),
            problem=problem,
            steps=2,
            measure={**grid, "full_batch": "sample:40"},
        )
    assert not (tmp_path / "bad").exists()
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    measure = {**grid, "full_batch": "sample:32"}
    probe = LineProbe(
        tmp_path / "run", model, problem=problem, steps=2, optimizer=opt, measure=measure
    )
    for t in range(2):
        with probe.step(t, x[:16], y[:16]):
            opt.zero_grad()
            per_sample_cross_entropy(model(x[:16]), y[:16]).mean().backward()
            opt.step()
    store = LineStore.open(tmp_path / "run" / "lines.zarr")
    assert store.done().all() and store.n_train == 32
    rows = [store.read_line(t).train_indices for t in range(2)]
    assert all(len(set(r.tolist())) == 32 and r.max() < 96 for r in rows)
    assert not np.array_equal(rows[0], rows[1])
