"""The paper grid of docs/method.md §3.3 and the symmetric grid."""

from __future__ import annotations

import numpy as np

from steplines.engine.positions import first_pass, max_positions, ring


def test_paper_grid_pass0_matches_spec() -> None:
    pts = ring("paper", 0.5, 0.006, 0)
    left, right = pts[pts < 0], pts[pts >= 0]
    assert left.size == right.size == 84
    assert np.isclose(left[0], -0.5) and np.isclose(left[-1], -0.002)
    assert right[0] == 0.0 and np.isclose(right[-1], 0.498)
    full = first_pass("paper", 0.5, 0.006, s_update=0.1234)
    assert full.size == 169 and 0.0 in full and 0.1234 in full
    np.testing.assert_allclose(
        full[(full > -0.01) & (full < 0.013)], [-0.008, -0.002, 0.0, 0.006, 0.012], atol=1e-12
    )


def test_paper_rings_join_with_0002_spacing() -> None:
    r1 = ring("paper", 0.5, 0.006, 1)
    assert r1.size == 168
    assert np.isclose(r1.min(), -1.0) and np.isclose(r1[r1 > 0].min(), 0.5)
    assert np.isclose(r1[r1 < 0].max(), -0.502)
    assert max_positions("paper", 0.5, 0.006, 5) == 170 + 4 * 168


def test_symmetric_grid_is_symmetric_and_uniform_across_rings() -> None:
    p0, p1 = ring("symmetric", 0.5, 0.006, 0), ring("symmetric", 0.5, 0.006, 1)
    np.testing.assert_allclose(p0, -p0[::-1])
    assert 0.0 in p0 and p0.size == 167
    both = np.sort(np.concatenate([p0, p1]))
    np.testing.assert_allclose(np.diff(both), 0.006, atol=1e-12)


def test_update_on_grid_is_not_duplicated() -> None:
    assert first_pass("symmetric", 0.5, 0.25, s_update=0.25).tolist() == [-0.5, -0.25, 0, 0.25, 0.5]
