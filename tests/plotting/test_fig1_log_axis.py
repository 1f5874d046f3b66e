"""Fig. 1's log y-axis has tick labels at any span (less than a decade included)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from steplines.plotting import plot_training


def _visible_labels(ax) -> list[tuple[float, str]]:
    """(tick position, label text) of every labelled y tick inside the view limits."""
    lo, hi = sorted(ax.get_ylim())
    out = []
    for minor in (False, True):
        ticks = ax.yaxis.get_ticklocs(minor=minor)
        labels = ax.get_yticklabels(minor=minor)
        for loc, lab in zip(ticks, labels):
            text = lab.get_text().replace("$\\mathdefault{", "").replace("}$", "")
            if text and lo <= loc <= hi:
                out.append((float(loc), text.replace("\u2212", "-")))
    return out


@pytest.mark.parametrize("lo, hi", [(0.6, 0.9), (0.52, 0.58), (1.2, 4.0), (0.05, 3.0)])
def test_log_loss_axis_has_tick_labels_at_any_span(lo: float, hi: float) -> None:
    t = np.arange(40)
    fig = plot_training(t, np.geomspace(hi, lo, t.size), np.geomspace(hi, lo, t.size) * 1.02)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = _visible_labels(ax)
    assert len(labels) >= 2, labels
    for loc, text in labels:  # each label says the value at its tick
        assert float(text) == pytest.approx(loc, rel=1e-3), (loc, text)
