"""Fig. 10: a run's smoothed l(0) depends only on its own values near each line, never on how
many lines the run has (the window is fixed, clipped at the ends the same way for every run)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from steplines.plotting import plot_compare

WINDOW = 25
HALF = WINDOW // 2


def _smoothed(fig: Figure) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Label → (x, y) of each run's smoothed (labelled) curve; the faint raw ones have none."""
    (ax,) = fig.axes
    return {
        ln.get_label(): (np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata(), float))
        for ln in ax.get_lines()
        if not ln.get_label().startswith("_")
    }


def _centred(x: np.ndarray, k: int) -> float:
    return float(np.mean(x[max(0, k - HALF) : k + HALF + 1]))


def test_same_values_give_the_same_curve_whatever_the_run_length() -> None:
    rng = np.random.default_rng(0)
    lines = np.arange(100, 150)
    values = np.geomspace(2.3, 0.4, lines.size) * np.exp(0.1 * rng.standard_normal(lines.size))
    n_short = 20  # fewer lines than the window: the old window shrank to the run's length
    curves = _smoothed(
        plot_compare(
            {"short": (lines[:n_short], values[:n_short]), "long": (lines, values)},
            smoothing=WINDOW,
        )
    )
    (xs, ys), (xl, yl) = curves["short"], curves["long"]
    np.testing.assert_array_equal(xs, lines[:n_short])
    np.testing.assert_array_equal(xl[:n_short], xs)
    # the common part whose 25-line window lies inside the shared values: identical curves
    same = n_short - HALF
    np.testing.assert_allclose(ys[:same], yl[:same], rtol=1e-12)
    # each value is the centred mean of the run's own values, clipped at its ends
    np.testing.assert_allclose(ys, [_centred(values[:n_short], k) for k in range(n_short)])
    np.testing.assert_allclose(yl, [_centred(values, k) for k in range(lines.size)])


def test_a_run_alone_or_beside_others_is_drawn_the_same() -> None:
    lines = np.arange(12)
    values = np.linspace(1.0, 0.5, 12) + 0.05 * (-1.0) ** lines
    alone = _smoothed(plot_compare({"a": (lines, values)}))["a"]
    both = _smoothed(plot_compare({"a": (lines, values), "b": (lines, values.copy())}))
    for x, y in (both["a"], both["b"]):
        np.testing.assert_array_equal(x, alone[0])
        np.testing.assert_allclose(y, alone[1], rtol=1e-12)
