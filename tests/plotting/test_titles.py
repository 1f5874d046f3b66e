"""The report's "Fig. N — …" title above a figure never overlaps a panel or a panel's title.

A figure is saved (PNG, then PDF) and may be titled afterwards (``fig.suptitle``) and saved
again, as a book of figures does. This draws every
figure function the report uses the same way, from a small synthetic run, and compares the
title's extent with every axes' extent and title's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from steplines.plotting import (
    plot_approximations,
    plot_batch_size,
    plot_compare,
    plot_distance_matrices,
    plot_fits,
    plot_lines,
    plot_rows,
    plot_strategies,
    plot_training,
    save_figure,
)
from steplines.plotting.estimators import plot_estimators
from steplines.plotting.noisy import plot_noisy_matrices
from steplines.report.data import RunData
from steplines.report.figures import FIGURES, eval_metrics
from steplines.reporting import load_run

from analysis_fixtures import make_run

TITLES = {spec.name: spec.title for spec in FIGURES}
# the titles report/build.py gives the figures outside FIGURES
TITLES["estimators"] = "Cheap estimators against the measured line"
TITLES["compare"] = "Fig. 10 — runs compared"
TITLES["rows"] = f"{TITLES['strategies']}, one row per run"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    """A synthetic 30-line run with momentum (Fig. 9's ratio panel), analysed."""
    root = tmp_path_factory.mktemp("titles")
    path = make_run(root / "run", n_lines=30, n=64, m=8, b=16, momentum=0.9)
    return load_run(path)


def _noisy() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mats = rng.uniform(0.0, 0.1, (4, 5, 5))
    return {
        "steps": np.array([0, 10, 20, 29]),
        "matrices": mats,
        "median": np.median(mats, axis=(1, 2)),
        "window": np.array(0.5),
    }


def _drawers(run: RunData, tmp: Path) -> dict[str, Callable[[], Figure]]:
    """Figure name → its drawing, with the arguments report/figures.py and build.py pass."""
    tr = run.training.sort_values("line")
    d = run.derivatives.sort_values("line")
    row = d.set_index("line").loc[run.views[0].t]
    dist = run.summary["distances"]

    def rows() -> Figure:
        pngs = []
        for k in range(2):
            fig = plot_fits(run.fits)
            pngs.append(save_figure(fig, tmp, f"row{k}", ("png",))["png"])
        return plot_rows(pngs, ["run a: λ = 0.1", "run b: λ = 0.05"])

    return {
        "training": lambda: plot_training(
            tr.line.to_numpy(),
            tr.train_l0.to_numpy(float),
            tr.val_l0.to_numpy(float),
            tr.batch_loss.to_numpy(float),
            evals=eval_metrics(run.path),
        ),
        "lines": lambda: plot_lines(run.views),
        "distances": lambda: plot_distance_matrices(
            run.distances, int(dist.get("later_from_line_index") or 0), dist.get("matrix_stride")
        ),
        "directions": lambda: plot_noisy_matrices(_noisy()),
        "fits": lambda: plot_fits(run.fits),
        "approximations": lambda: plot_approximations(
            run.views[0],
            direction_norm=float(row.direction_norm),
            delta_batch=float(row.delta_batch),
        ),
        "strategies": lambda: plot_strategies(
            run.strategies, run.derivatives, momentum=run.momentum
        ),
        "batch_size": lambda: plot_batch_size(run.batch_size, reference_batch_size=16, lr=run.lr),
        "estimators": lambda: plot_estimators(run.estimators, batch_size=16),
        "compare": lambda: plot_compare(
            {"a (λ = 0.1)": (d.line.to_numpy(), d.l0.to_numpy(float)), "b": (d.line, d.l0 * 1.1)}
        ),
        "rows": rows,
    }


def _overlaps(a: Bbox, b: Bbox) -> bool:
    """Whether two extents share an area (touching edges do not count)."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_report_uses_every_figure_drawn_here() -> None:
    assert set(TITLES) == {*(spec.name for spec in FIGURES), "estimators", "compare", "rows"}


@pytest.mark.parametrize("name", sorted(TITLES))
def test_figure_title_clears_every_panel_and_panel_title(
    name: str, run: RunData, tmp_path: Path
) -> None:
    fig = _drawers(run, tmp_path)[name]()
    save_figure(fig, tmp_path, name, ("png", "pdf"))  # as the report: files first, ...
    fig.suptitle(TITLES[name], fontsize=10, x=0.01, ha="left")  # ... then the book's title
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    title = fig.get_suptitle()
    assert title == TITLES[name]
    top = fig._suptitle.get_window_extent(renderer)
    fig_box = fig.bbox
    assert top.y1 <= fig_box.y1 + 1 and top.x0 >= fig_box.x0 - 1, "title outside the figure"
    for ax in fig.axes:
        assert not _overlaps(top, ax.get_window_extent(renderer)), (name, "axes", ax)
        for t in (ax.title, ax._left_title, ax._right_title):
            if t.get_text():
                assert not _overlaps(top, t.get_window_extent(renderer)), (name, t.get_text())
