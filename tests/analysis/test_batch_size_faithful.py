"""Faithful batch sizes: the original cuts the N + B rows to a multiple of bs (training rows
first, then direction rows, so the cut drops direction rows first); corrected keeps them all."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steplines.analysis.batch_size import batch_size_rows, faithful_full_line, kept_rows

from analysis_fixtures import make_record


def _rows_t(train: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([train, direction]).T, np.float64)


def test_full_line_cut_to_a_multiple_of_bs_by_hand() -> None:
    train = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50]], np.float32)  # N = 5
    direction = np.array([[100, 1000], [200, 2000], [300, 3000]], np.float32)  # B = 3
    rows_t = _rows_t(train, direction)
    expected = {
        2: ([615 / 8, 6150 / 8], 8),  # 8 rows: all
        3: ([115 / 6, 1150 / 6], 6),  # 6 rows: the 5 training rows + the first direction row
        4: ([615 / 8, 6150 / 8], 8),
        5: ([3.0, 30.0], 5),  # 5 rows: the training rows only
        1: ([615 / 8, 6150 / 8], 8),
    }
    for bs, (line, rows) in expected.items():
        got, kept = faithful_full_line(rows_t, bs)
        assert kept == rows == kept_rows(8, bs)
        np.testing.assert_allclose(got, line, rtol=1e-15)
    got, kept = faithful_full_line(rows_t, 9)  # no whole batch
    assert kept == 0 and np.isnan(got).all()


def test_demo_shape_keeps_only_training_rows_from_bs_256() -> None:
    rng = np.random.default_rng(3)
    train = rng.gamma(2.0, 0.3, (1024, 7)).astype(np.float32)  # the demo: N = 1024, B = 128
    direction = rng.gamma(2.0, 0.3, (128, 7)).astype(np.float32) + 5.0
    rows_t = _rows_t(train, direction)
    everything = np.concatenate([train, direction]).astype(np.float64).mean(0)
    train_only = train.astype(np.float64).mean(0)
    for bs in (32, 64, 128):
        np.testing.assert_allclose(faithful_full_line(rows_t, bs)[0], everything, rtol=1e-12)
    for bs in (256, 512, 1024):
        line, kept = faithful_full_line(rows_t, bs)
        assert kept == 1024
        np.testing.assert_allclose(line, train_only, rtol=1e-12)


def _nearest(pos: np.ndarray, values: np.ndarray, s: float) -> float:
    """Plain nearest-position lookup, clipped to the measured range (the original's rule)."""
    ok = np.isfinite(pos)
    p, v = pos[ok], values[ok]
    s = min(max(s, p[0]), p[-1])
    return float(v[int(np.argmin(np.abs(p - s)))])


def test_batch_size_rows_use_the_cut_full_batch_in_faithful_only() -> None:
    n, b = 40, 8  # N + B = 48: bs 4 and 8 keep all rows, bs 32 keeps training rows 0..31
    rec = make_record(0, n, 2, b)
    pos = rec.positions
    train = rec.train_losses.astype(np.float64)
    direction = rec.direction_losses.astype(np.float64)
    lines = {
        "faithful": {
            4: np.concatenate([train, direction]).mean(0),
            8: np.concatenate([train, direction]).mean(0),
            32: train[:32].mean(0),
        },
    }
    sizes = (4, 8, 32)
    tab = pd.DataFrame(
        batch_size_rows(iter([(0, rec)]), faithful=True, momentum=0.0, batch_sizes=sizes)
    )
    uncut = np.concatenate([train, direction]).mean(0)
    differs = False
    for row in tab[tab.strategy != "optimal"].itertuples():
        line = lines["faithful"][row.batch_size]
        expected = _nearest(pos, line, 0.0) - _nearest(pos, line, row.step)
        np.testing.assert_allclose(row.improvement, expected, rtol=1e-9, atol=1e-12)
        if row.batch_size == 32:
            old = _nearest(pos, uncut, 0.0) - _nearest(pos, uncut, row.step)
            differs |= abs(old - expected) > 1e-6
    assert differs  # the cut changes the numbers: the test would catch the old behaviour
    # the optimum row: the first batch size's full batch (the original plots that curve)
    (opt,) = tab[tab.strategy == "optimal"].itertuples()
    assert opt.batch_size == 48
    first32 = pd.DataFrame(
        batch_size_rows(iter([(0, rec)]), faithful=True, momentum=0.0, batch_sizes=(32,))
    )
    (opt32,) = first32[first32.strategy == "optimal"].itertuples()
    line = lines["faithful"][32]
    k = int(np.nanargmin(line))
    assert opt32.batch_size == 32 and opt32.step == pos[k]
    np.testing.assert_allclose(opt32.improvement, _nearest(pos, line, 0.0) - line[k], rtol=1e-9)

    # corrected keeps every row: the N training rows, the same line for every bs
    corr = pd.DataFrame(batch_size_rows(iter([(0, rec)]), momentum=0.0, batch_sizes=sizes))
    full = train.mean(0)
    for row in corr[corr.strategy != "optimal"].itertuples():
        expected = np.interp(0.0, pos, full) - np.interp(
            np.clip(row.step, pos[0], pos[-1]), pos, full
        )
        np.testing.assert_allclose(row.improvement, expected, rtol=1e-9, atol=1e-12)
    assert (corr[corr.strategy == "optimal"].batch_size == n).all()
