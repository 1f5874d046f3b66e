"""How often each claim's interval covers the truth: synthetic populations with known values.

Every claim of :mod:`steplines.analysis.claims` is a statistic of per-line (or per noisy step)
columns. :func:`synthetic_run` draws a run from a population in which every claim holds by
construction (or, for the keys in ``fail``, fails by construction); the lines are dependent
(AR(1) noise, ρ = 0.5), as neighbouring lines of a real run are. The population's value of each
statistic is the statistic on a very long run (:func:`population`). The coverage of a claim is
the share of small runs whose interval contains that value.

    python bench/claims_coverage.py                       # single runs of 200 lines
    python bench/claims_coverage.py --trials 200 --lines 200 --runs 1,5

With ``--runs 5`` every trial pools 5 runs, each with its own run effect (the setup's
variation between seeds), against the population value over infinitely many runs.

The tests (``tests/analysis/test_claims.py``) use the same generator in a fast form.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable

import numpy as np

from steplines.analysis.claims import CLAIMS, ClaimData, evaluate_claims
from steplines.analysis.resample import resample

FAILABLE = tuple(s.key for s in CLAIMS)


def _ar1(rng: np.random.Generator, n: int, rho: float = 0.5) -> np.ndarray:
    """Standard-normal AR(1) noise of length ``n``."""
    e = rng.normal(size=n)
    out = np.empty(n)
    out[0] = e[0]
    for i in range(1, n):
        out[i] = rho * out[i - 1] + math.sqrt(1 - rho * rho) * e[i]
    return out


def synthetic_run(
    n: int,
    *,
    seed: int,
    fail: Iterable[str] = (),
    noisy_steps: int = 30,
    name: str = "run",
    run_effect: float = 0.0,
    plain_sgd: bool = True,
) -> ClaimData:
    """A run in which every claim holds, except those named in ``fail``, which fail.

    Args:
        n: Lines.
        seed: Seed of the draw.
        fail: Claim keys that fail by construction.
        noisy_steps: Noisy-direction steps.
        name: The run's label.
        run_effect: Standard deviation of a run-level effect on every column (seeds of one
            setup differ by it).
        plain_sgd: The run is plain SGD (else the batch-size claim does not apply).
    """
    fail = set(fail)
    rng = np.random.default_rng(seed)
    eff = rng.normal(0.0, run_effect, size=8)

    def noise(scale: float, k: int) -> np.ndarray:
        return np.exp(scale * _ar1(rng, n) + eff[k % 8])

    i = np.arange(n)
    position = i / max(1, n - 1)
    mae2 = 1e-4 * noise(0.3, 0)
    rng_ = np.full(n, 0.1)
    rel = mae2 / rng_ * (100 if "parabola" in fail else 1)
    rel = np.where(rng.random(n) < 0.04, 0.08, rel)  # a few exceptions: shares inside (0, 1)
    mae1 = mae2 * (1.5 if "parabola_not_line" in fail else 20.0) * noise(0.2, 1)
    trend = 2.0 - 1.5 * position if "curvature_falls" not in fail else 0.5 + 1.5 * position
    curvature = trend * noise(0.2, 2)
    flip = 0.5 if "positive_curvature" in fail else 0.04
    curvature = curvature * np.where(rng.random(n) < flip, -1.0, 1.0)
    far = 0.1 * noise(0.3, 3)
    consecutive = (0.1 if "little_change" in fail else 0.01) * noise(0.3, 4)
    consecutive[0] = np.nan
    s_opt = 0.1 * np.exp(0.4 * rng.normal(size=n))
    norm = s_opt / 0.05 * noise(0.05, 5)
    if "proportional" in fail:
        norm = 2.0 * np.exp(0.4 * rng.normal(size=n))
    over = 1.0 if "trained_overshoots" in fail else 2.0
    s_update = over * s_opt * noise(0.05, 6) * np.where(rng.random(n) < 0.04, 0.5, 1.0)
    slope_full = -1.0 * noise(0.2, 7)
    slope_batch = slope_full * (2.0 if "batch_steeper" not in fail else noise(0.5, 0))
    slope_batch = np.where(rng.random(n) < 0.04, 0.5 * slope_full, slope_batch)
    opt = rng.uniform(0.5, 1.0, size=n)

    def part(share: float, k: int) -> np.ndarray:
        return opt * np.clip(share * noise(0.02, k), None, 1.0)

    impr = {
        "optimal": opt,
        "fbpal": part(0.5 if "fbpal_near_optimal" in fail else 0.98, 1),
        "lambda_star_in": part(0.5 if "constant_rate" in fail else 0.95, 2),
        "lambda_star_out": part(0.5 if "constant_rate_out" in fail else 0.94, 3),
        "exact_batch": part(0.95 if "batch_search_poor" in fail else 0.3, 4),
        "step_star_in": part(0.99 if "norm_explains" in fail else 0.7, 5),
    }
    impr["lambda_star_out"][0] = np.nan
    if "norm_explains" in fail:
        impr["lambda_star_in"] = part(0.9, 2)
    dev = 0.5 if "batch_size" in fail else 1.0
    columns = {
        "step": i.astype(np.float64),
        "position": position,
        "later": (i >= n // 10).astype(np.float64),
        "rel_fit2": rel,
        "mae1": mae1,
        "mae2": mae2,
        "curvature": curvature,
        "consecutive": consecutive,
        "far": far,
        "s_opt": s_opt,
        "s_update": s_update,
        "direction_norm": norm,
        "slope_batch": slope_batch,
        "slope_full": slope_full,
        **{f"impr:{k}": v for k, v in impr.items()},
        "delta_ratio:64": dev * noise(0.05, 6),
        "delta_ratio:256": dev * 0.95 * noise(0.05, 7),
    }
    noisy_scale = 0.1 if "noisy_directions" in fail else 0.01
    noisy = {
        "step": np.arange(noisy_steps, dtype=np.float64) * 10,
        "median": noisy_scale * np.exp(0.3 * rng.normal(size=noisy_steps) + eff[3]),
        "far": 0.1 * np.exp(0.3 * rng.normal(size=noisy_steps) + eff[3]),
    }
    meta = {"plain_sgd": plain_sgd, "batch_size": 128, "later_median": 0.05}
    return ClaimData(name=name, columns=columns, noisy=noisy, meta=meta)


def population(runs: int = 1, lines: int = 100_000, run_effect: float = 0.0) -> dict[str, float]:
    """Each claim's statistic on the population (a very long run, or many runs)."""
    n = max(1, lines // runs)
    data = [
        synthetic_run(
            n,
            seed=10_000 + r,
            noisy_steps=max(5, 20_000 // runs),
            run_effect=run_effect,
            name=f"population-{r}",
        )
        for r in range(runs)
    ]
    out = {}
    for spec in CLAIMS:
        cols = [spec.columns(d) for d in data]
        out[spec.key] = resample(cols, spec.stat, value_range=spec.range, resamples=0).estimate
    return out


def coverage(
    trials: int, lines: int, runs: int = 1, resamples: int = 300, run_effect: float = 0.0
) -> dict[str, float]:
    """Share of ``trials`` draws of ``runs`` runs whose interval covers the population value."""
    truth = population(runs=200 if runs > 1 else 1, run_effect=run_effect)
    hits = dict.fromkeys(truth, 0)
    for k in range(trials):
        data = [
            synthetic_run(lines, seed=k * 97 + r, name=f"r{r}", run_effect=run_effect)
            for r in range(runs)
        ]
        for c in evaluate_claims(data, resamples=resamples, seed=k):
            if c.low is not None and c.high is not None:
                hits[c.key] += c.low <= truth[c.key] <= c.high
    return {key: hits[key] / trials for key in truth}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--runs", default="1,5", help="runs pooled per trial, comma-separated")
    ap.add_argument("--resamples", type=int, default=300)
    ap.add_argument("--run-effect", type=float, default=0.1)
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.runs.split(",")]
    table = {
        r: coverage(a.trials, a.lines, r, a.resamples, a.run_effect if r > 1 else 0.0)
        for r in counts
    }
    head = " | ".join(f"{r} run{'s' if r > 1 else ''}" for r in counts)
    print(f"| claim | {head} |")
    print("|---|" + "---|" * len(counts))
    for spec in CLAIMS:
        row = " | ".join(f"{table[r][spec.key]:.0%}" for r in counts)
        print(f"| `{spec.key}` | {row} |")
    print(
        f"\n{a.trials} trials of {a.lines} lines per run (AR(1) ρ = 0.5), {a.resamples} "
        f"resamples, nominal 95 %; pooled runs with a run effect of SD {a.run_effect}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
