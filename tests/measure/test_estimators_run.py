"""End to end: a tiny run fills the estimator arrays and estimators.csv; old configs reopen."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from steplines.analysis import analyze_run
from steplines.config import load_config
from steplines.engine.common import LinePolicy
from steplines.engine.estimators import LineEstimator
from steplines.errors import RunDirError
from steplines.measure import LineBatches, run_all
from steplines.problems.problem import make_problem
from steplines.rundir import RunDir
from steplines.store import LineStore, differing_arrays
from steplines.store.schema import ESTIMATOR_ARRAYS
from steplines.trajectory.loop import Trainer

from support import TINY


def _run(tmp_path: Path, name: str, **measure) -> RunDir:
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(steps=4))
    overrides = {f"measure.{k}": v for k, v in {"noise_scale_every": 2, **measure}.items()}
    run = RunDir.prepare(tmp_path / name, load_config(path=path, overrides=overrides))
    run_all(run)
    return run


def test_tiny_run_fills_the_estimator_arrays_and_table(tmp_path: Path) -> None:
    run = _run(tmp_path, "on")
    store = LineStore.open(run.lines_path)
    assert store.has_estimator_inputs and store.done().all()
    s = store.read_summary()
    assert np.isfinite(s["est_slope_update"]).all() and np.isfinite(s["est_curvature"]).all()
    per_sample = np.isfinite(s["est_sample_grad_sq"])
    assert per_sample.tolist() == [True, False, True, False]  # every 2nd line
    # the mean of the per-sample gradients is the step's gradient: |G_B|² = ‖g_t‖²
    np.testing.assert_allclose(
        s["est_batch_grad_sq"][per_sample], s["grad_norm"][per_sample] ** 2, rtol=1e-4
    )
    assert (s["est_sample_grad_sq"][per_sample] > s["est_batch_grad_sq"][per_sample]).all()

    est = pd.read_csv(analyze_run(run.path).path("estimators"))
    assert list(est.line) == [0, 1, 2, 3]
    assert est[["alpha_cockpit", "curvature_hvp", "labpal_step", "armijo_step"]].notna().all().all()
    assert est.b_simple_naive.notna().tolist() == [True, False, True, False]

    # the estimator sees the step's own batch, BatchNorm mode and dropout masks: its slope at
    # 0 reproduces the training step's exact g_t·d_t
    cfg, device = run.config, torch.device("cpu")
    problem = make_problem(cfg.problem)
    trainer = Trainer(problem, cfg.train, device)
    trainer.load_state_dict(run.trajectory.load_checkpoint(0, device))
    batches = LineBatches(problem, cfg, device, torch.float32)
    estimator = LineEstimator(trainer.model, problem.loss_fn, LinePolicy())
    for t, rec in zip(range(4), run.trajectory.load_records(0)):
        _, anchor = trainer.step(t, rec.rows, rec.aug_seed, rec.dropout_seed, keep_anchor=True)
        direction = batches.batches(t, rec)[2]
        e = estimator(anchor.theta, anchor.direction, anchor.buffers, rec.s_update, direction)
        assert e.slope_zero == pytest.approx(rec.directional_derivative, rel=1e-5)
        assert e.curvature == pytest.approx(s["est_curvature"][t], rel=1e-4)

    # the estimators change nothing else: a run without them writes the same store
    off = _run(tmp_path, "off", estimators=False)
    assert np.isnan(LineStore.open(off.lines_path).read_summary()["est_curvature"]).all()
    # the estimator inputs, and the checksum that covers them
    assert set(differing_arrays(run.lines_path, off.lines_path)) == {
        *ESTIMATOR_ARRAYS,
        "record_checksum",
    }


def test_config_without_the_estimator_fields_reopens(tmp_path: Path) -> None:
    cfg = load_config(preset="demo")
    RunDir.prepare(tmp_path / "run", cfg)
    cfg_file = tmp_path / "run" / "config.toml"
    # a config.toml written before these fields existed
    old = re.sub(r"^(estimators|noise_scale_every) = .*\n", "", cfg_file.read_text(), flags=re.M)
    assert "estimators" not in old
    cfg_file.write_text(old)
    assert RunDir.prepare(tmp_path / "run", cfg).config.measure.estimators
    assert RunDir.open(tmp_path / "run").config.measure.noise_scale_every == 10
    # but they are part of what was run: a run made without estimators stays without
    cfg_file.write_text(old.replace("[measure]\n", "[measure]\nestimators = false\n"))
    with pytest.raises(RunDirError, match=r"measure\.estimators"):
        RunDir.prepare(tmp_path / "run", cfg)
