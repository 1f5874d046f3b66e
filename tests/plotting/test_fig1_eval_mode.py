"""Fig. 1: the lines and the eval-mode checkpoints are drawn apart and labelled, and the
caption sets the eval-mode loss beside the line's l(0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from steplines.config import validate_config
from steplines.plotting import plot_training
from steplines.report.figures import _eval_vs_lines, _line_bn
from steplines.report.numbers import fmt as _f


def test_training_figure_draws_lines_and_eval_mode_apart() -> None:
    t = np.arange(80)
    l0 = np.geomspace(2.3, 0.39, t.size)
    evals = pd.DataFrame(
        {
            "step": [0, 40, 80],
            "train_loss": [2.3, 5.1, 6.2],
            "val_loss": [2.3, 5.4, 6.5],
            "train_accuracy": [0.1, 0.2, 0.15],
            "val_accuracy": [0.1, 0.18, 0.12],
        }
    )
    fig = plot_training(t, l0, l0 * 1.1, evals=evals)
    loss_ax, acc_ax = fig.axes
    curves = {ln.get_label(): ln for ln in loss_ax.get_lines()}
    np.testing.assert_array_equal(curves["full-batch training loss l(0)"].get_ydata(), l0)
    eval_curve = curves["training loss, eval mode"]
    np.testing.assert_array_equal(eval_curve.get_xdata(), [0, 40, 80])
    np.testing.assert_array_equal(eval_curve.get_ydata(), [2.3, 5.1, 6.2])
    assert "validation loss, eval mode" in curves
    assert "eval mode" in loss_ax.get_title() and "lines" in loss_ax.get_title()
    assert "eval mode" in acc_ax.get_title() and "running BatchNorm" in acc_ax.get_title()
    acc = {ln.get_label(): ln for ln in acc_ax.get_lines()}
    np.testing.assert_array_equal(acc["validation"].get_ydata(), [0.1, 0.18, 0.12])
    # without eval files (older runs, no classifier) only the lines are drawn
    (only,) = plot_training(t, l0).axes
    assert [ln.get_label() for ln in only.get_lines()] == ["full-batch training loss l(0)"]


def test_caption_sets_eval_mode_loss_beside_the_line(tmp_path: Path) -> None:
    traj = tmp_path / "trajectory"
    traj.mkdir()
    for step, loss in ((0, 2.3), (40, 5.1), (80, 6.2)):
        row = {"step": step, "train_loss": loss, "val_loss": loss, "val_accuracy": 0.1}
        (traj / f"eval_{step:07d}.json").write_text(json.dumps({**row, "train_accuracy": 0.1}))
    d = pd.DataFrame({"line": np.arange(80), "l0": np.geomspace(2.3, 0.39, 80)})
    text = _eval_vs_lines(tmp_path, d)
    # the checkpoint at step 80 lies after the last line (79); the last one within is 40
    assert text == (
        f"; at step 40 the eval-mode training loss is {_f(5.1)} and l(0) of line 40 is "
        f"{_f(d.l0[40])}"
    )
    assert _eval_vs_lines(tmp_path / "none", d) == ""
    # the caption names how the lines normalise BatchNorm
    assert "each evaluation batch's own statistics" in _line_bn(None)
    assert "each evaluation batch's own statistics" in _line_bn(
        validate_config({}, torch_checks=False)
    )
    running = validate_config({"measure": {"batchnorm": "running"}}, torch_checks=False)
    assert "running statistics" in _line_bn(running)
