"""Claims: the verdict rule, the bootstrap interval, and claims judged on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from steplines.analysis.claims import (
    CLAIMS,
    MIN_LINES,
    ClaimInputs,
    block_bootstrap,
    evaluate_claims,
    verdict,
)


def test_verdict_rule() -> None:
    assert verdict(0.02, 0.01, 0.03, 0.05, holds_above=False)[0] == "holds"
    assert verdict(0.09, 0.06, 0.12, 0.05, holds_above=False)[0] == "does not hold"
    v, why = verdict(0.05, 0.04, 0.06, 0.05, holds_above=False)
    assert v == "inconclusive" and "straddles" in why
    assert verdict(0.95, 0.91, 0.99, 0.9, holds_above=True)[0] == "holds"
    assert verdict(0.5, 0.4, 0.6, 0.9, holds_above=True)[0] == "does not hold"
    assert verdict(float("nan"), 0.0, 1.0, 0.9, holds_above=True)[0] == "inconclusive"


def _mean(x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=-1)


def test_bootstrap_interval_covers_the_population_mean_at_its_level() -> None:
    """Nominal 95 % intervals of the mean of 60 normal draws cover μ in 88–100 % of 150 runs."""
    rng = np.random.default_rng(1)
    covered = 0
    for k in range(150):
        x = rng.normal(3.0, 2.0, size=60)
        lo, hi = block_bootstrap((x,), _mean, resamples=300, seed=k, block=1)
        covered += lo <= 3.0 <= hi
    assert 0.88 <= covered / 150 <= 1.0


def test_block_bootstrap_widens_for_dependent_lines() -> None:
    """A slowly drifting series: blocks keep the drift and give a wider interval than iid."""
    t = np.arange(400)
    x = np.sin(t / 40.0) + 0.05 * np.random.default_rng(0).normal(size=t.size)
    iid = block_bootstrap((x,), _mean, block=1)
    blocks = block_bootstrap((x,), _mean)
    assert blocks[1] - blocks[0] > 1.5 * (iid[1] - iid[0])


def _inputs(n: int, *, overshoot: float = 2.0, spread: float = 0.05) -> ClaimInputs:
    rng = np.random.default_rng(0)
    s_opt = rng.uniform(0.08, 0.12, size=n)
    norm = s_opt / (0.05 * (1 + spread * rng.uniform(-1, 1, size=n)))
    opt = rng.uniform(0.5, 1.0, size=n)
    return ClaimInputs(
        later_from=n // 10,
        fit_mae2=np.full(n, 1e-4),
        fit_range=np.full(n, 0.1),
        consecutive=np.concatenate([[np.nan], np.full(n - 1, 0.3)]),  # 30 % of the height
        height=np.full(n, 1.0),
        s_opt=s_opt,
        s_update=overshoot * s_opt,
        impr={
            "optimal": opt,
            "lambda_star_out": np.concatenate([[np.nan], 0.97 * opt[1:]]),
            "exact_batch": 0.5 * opt,
        },
        rate=s_opt / norm,
        delta_ratio={64: np.full(n, 1.02), 256: np.full(n, 0.9)},
        noisy_ratio=np.empty(0),
        batch_size=128,
    )


def test_claims_on_known_inputs() -> None:
    claims = {c.key: c for c in evaluate_claims(_inputs(80), resamples=200)}
    assert [c.key for c in CLAIMS] == list(claims)
    assert claims["parabola"].value == pytest.approx(1e-3)
    assert claims["parabola"].verdict == "holds"
    assert claims["little_change"].verdict == "does not hold"
    assert claims["constant_rate"].value == pytest.approx(0.97)
    assert claims["constant_rate"].verdict == "holds"
    assert claims["trained_overshoots"].value == pytest.approx(2.0)
    assert claims["trained_overshoots"].verdict == "holds"
    assert claims["batch_search_poor"].verdict == "holds"
    assert claims["proportional"].verdict == "holds"
    assert claims["batch_size"].value == pytest.approx(0.1)
    assert claims["batch_size"].verdict == "holds"
    assert claims["noisy_directions"].verdict == "inconclusive"
    assert "noisy_every" in claims["noisy_directions"].reason
    for c in claims.values():
        if c.verdict != "inconclusive":
            assert c.low is not None and c.low <= c.value <= c.high


def test_trained_step_at_the_optimum_does_not_overshoot() -> None:
    claims = {c.key: c for c in evaluate_claims(_inputs(80, overshoot=1.0), resamples=200)}
    assert claims["trained_overshoots"].verdict == "does not hold"


def test_too_few_lines_are_inconclusive() -> None:
    claims = evaluate_claims(_inputs(MIN_LINES - 1), resamples=50)
    assert {c.verdict for c in claims} == {"inconclusive"}
    assert all(c.low is None for c in claims)
