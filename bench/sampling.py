"""What a sampled full batch costs: sub-sample a stored complete full batch, compare.

On a run whose full batch is complete (``measure.full_batch = "epoch"`` or ``"fixed"``: every
training row of every line evaluated), for each n this draws ``--repeats`` random subsets of n
of the stored training rows of every line and compares, against the complete full batch:

* ``s_opt``: |s_opt(n) − s_opt| over lines and repeats (median, 90th percentile), also in units
  of the grid spacing h (the median spacing of the measured positions);
* the accumulated optimum improvement Σ_t (l(0) − l(s_opt)), each line's l(0) and l(s_opt)
  read off the n-row line (relative error over repeats: median, 90th percentile; the JSON
  also has the median signed error, ``improvement_rel_bias_median``: the minimum of a noisier
  line lies deeper, so small n over-estimate the improvement);
* λ* = median_t s_opt/‖m_t‖ (``‖g_t‖`` for plain SGD; relative error over repeats);
* ``realised``: Σ_t (l(0) − l(s_opt(n))) / Σ_t (l(0) − l(s_opt)) on the complete line — the
  share of the optimum's improvement that stepping to the sampled minimum earns;
* the saving in evaluations, N/n;
* ``coverage``: how often the analysis' 95 % row-bootstrap interval
  (:mod:`steplines.analysis.bootstrap`, computed from the n sampled rows alone) contains the
  complete full batch's s_opt and l(0) − l(s_opt) of the line. The complete batch is the finite
  population the n rows are drawn from without replacement, so as n approaches N the
  intervals (made for an infinite population) grow conservative: coverage → 100 %.

A subset is n/B whole BatchNorm batches of the stored rows (``--unit batch``, the default; the
stored rows of ``epoch`` and ``fixed`` come in batches of B = the direction batch's size), which
is exactly what ``full_batch = "sample:n"`` evaluates: the first n/B batches of a random
epoch. ``--unit row`` draws n single rows instead (each then keeps its own batch's
statistics). Lines are the corrected-mode full-batch lines (the mean of the training rows) and
are evaluated with :func:`steplines.analysis.strategies.first_argmin` and
:func:`~steplines.analysis.strategies.evaluate_line`, as the analysis does. Only numpy and the
store are used; one line is in memory at a time (``LineStore.read_line``).

    python bench/sampling.py runs/demo --n 128,256,512,1024 --repeats 20
    python bench/sampling.py runs/demo --json sampling.json      # also save the records

Bad input (no store, a sampled store, an n that does not fit) is one line ``error: …``, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from steplines.analysis.bootstrap import (
    SampleWeights,
    basic_interval,
    line_replicates,
    percentile_interval,
)
from steplines.analysis.strategies import evaluate_line, first_argmin, rate_ratios
from steplines.errors import SteplinesError
from steplines.store import LineStore

DEFAULT_NS = (128, 256, 512, 1024)


class BenchError(Exception):
    """A user's mistake: printed as one line ``error: …``, exit status 2."""


def _line_values(positions: np.ndarray, mean: np.ndarray) -> tuple[float, float, float]:
    """``(s_opt, l(s_opt), l(0))`` of one mean line."""
    s_opt, l_min = first_argmin(positions, mean)
    l0 = float(evaluate_line(positions, mean, 0.0)[0])
    return s_opt, l_min, l0


def sampling_errors(
    run: Path,
    ns: list[int],
    repeats: int = 20,
    seed: int = 0,
    unit: str = "batch",
    resamples: int = 200,
    every: int = 1,
    interval: str = "percentile",
) -> dict[str, Any]:
    """Sub-sample every done line of ``run``'s store and compare with the complete full batch.

    Args:
        run: a run directory (or its ``lines.zarr``) with a complete full batch.
        ns: subset sizes n (each ≤ N; with ``unit = "batch"`` multiples of B).
        repeats: random subsets per line and n.
        seed: seed of the subset draws.
        unit: ``batch`` — n/B whole BatchNorm batches of the stored rows (what
            ``sample:n`` measures); ``row`` — n single rows.
        resamples: bootstrap resamples of each subset's interval (0: no coverage columns).
        every: use every ``every``-th done line (a long run's lines in a tenth of the time).
        interval: ``percentile`` (what the analysis gives a line's own values) or ``basic``
            (what it gives sums over lines), whose per-line coverage is measured.

    Returns:
        ``{"run", "N", "B", "lines", "repeats", "unit", "grid_spacing", "improvement",
        "lambda_star", "rows": [one record per n]}``; each record has ``n``, ``saving`` (N/n)
        and the error statistics named in the module docstring.

    Raises:
        BenchError: no store, a store that is itself sampled, no done line, or a bad n.
    """
    path = Path(run)
    lines_path = path if path.name == "lines.zarr" else path / "lines.zarr"
    if not lines_path.exists():
        raise BenchError(f"{path} has no lines.zarr; give a run directory with measured lines")
    try:
        store = LineStore.open(lines_path)
    except SteplinesError as err:
        raise BenchError(str(err)) from None
    if "full_batch" in store.attrs:
        raise BenchError(
            f"{path} measured a sampled full batch ({store.attrs['full_batch']}); "
            "give a run measured with full_batch = 'epoch' or 'fixed'"
        )
    n_rows, b = store.n_train, store.n_direction
    if unit not in ("batch", "row"):
        raise BenchError(f"--unit {unit!r}: use batch or row")
    group = b if unit == "batch" else 1
    groups = n_rows // group  # whole groups of rows (a `fixed` store's short last batch: left out)
    if repeats < 1:
        raise BenchError(f"--repeats {repeats}: give at least 1")
    if interval not in ("percentile", "basic"):
        raise BenchError(f"--interval {interval!r}: use percentile or basic")

    def interval_of(estimate: float, replicates: np.ndarray) -> tuple[float, float]:
        if interval == "basic":
            return basic_interval(estimate, replicates)
        return percentile_interval(replicates)

    if every < 1:
        raise BenchError(f"--every {every}: give at least 1 (1 = every line)")
    bad = [n for n in ns if not 0 < n <= groups * group or n % group]
    if bad:
        raise BenchError(
            f"--n {bad[0]} does not fit: each n must be in 1..{groups * group} (this run's N)"
            + (f" and a multiple of B = {b} (or use --unit row)" if group > 1 else "")
        )
    done = np.flatnonzero(store.done())[::every]
    if done.size == 0:
        raise BenchError(f"{path} has no finished line; measure it first")
    rng = np.random.default_rng(seed)
    full = {k: np.full(done.size, np.nan) for k in ("s_opt", "l_min", "l0", "norm", "h")}
    est = {k: np.full((len(ns), repeats, done.size), np.nan) for k in ("s_opt", "l_min", "l0")}
    realised = np.full((len(ns), repeats, done.size), np.nan)
    covered = {k: np.zeros((len(ns), repeats, done.size), bool) for k in ("s_opt", "impr")}
    weights = [SampleWeights(resamples, seed=seed * 1000 + r) for r in range(repeats)]
    for i, t in enumerate(done):
        line = store.read_line(int(t))
        pos = line.positions
        losses = line.train_losses.astype(np.float64)
        mean = losses.mean(axis=0)
        full["s_opt"][i], full["l_min"][i], full["l0"][i] = _line_values(pos, mean)
        full["norm"][i] = line.direction_norm
        steps = np.diff(pos[np.isfinite(pos)])
        full["h"][i] = np.median(steps[steps > 0]) if (steps > 0).any() else np.nan
        for j, n in enumerate(ns):
            for r in range(repeats):
                chosen = np.sort(rng.choice(groups, n // group, replace=False))
                rows = (chosen[:, None] * group + np.arange(group)[None, :]).ravel()
                sub = losses[rows].mean(axis=0)
                s, lm, l0 = _line_values(pos, sub)
                est["s_opt"][j, r, i], est["l_min"][j, r, i], est["l0"][j, r, i] = s, lm, l0
                realised[j, r, i] = evaluate_line(pos, mean, s)[0]
                if resamples:
                    reps = line_replicates(
                        line,
                        {},
                        window=0.0,
                        counts_train=_subset_weights(weights[r], line, rows),
                        counts_direction=np.zeros((resamples, line.direction_losses.shape[0])),
                    )
                    lo, hi = interval_of(s, reps.s_opt)
                    covered["s_opt"][j, r, i] = lo <= full["s_opt"][i] <= hi
                    lo, hi = interval_of(l0 - lm, reps.impr["optimal"])
                    truth = full["l0"][i] - full["l_min"][i]
                    covered["impr"][j, r, i] = lo - 1e-12 <= truth <= hi + 1e-12
    h = float(np.nanmedian(full["h"]))
    impr = float(np.nansum(full["l0"] - full["l_min"]))
    lam = float(np.nanmedian(rate_ratios(full["s_opt"], full["norm"])))
    rows_out = []
    for j, n in enumerate(ns):
        err = np.abs(est["s_opt"][j] - full["s_opt"][None, :]).ravel()
        err = err[np.isfinite(err)]
        impr_n = np.nansum(est["l0"][j] - est["l_min"][j], axis=1)  # [repeats]
        impr_signed = (impr_n - impr) / abs(impr)
        impr_err = np.abs(impr_signed)
        lam_n = np.array(
            [np.nanmedian(rate_ratios(est["s_opt"][j, r], full["norm"])) for r in range(repeats)]
        )
        lam_err = np.abs(lam_n - lam) / abs(lam)
        got = np.nansum(full["l0"][None, :] - realised[j], axis=1) / impr
        rows_out.append(
            {
                "n": n,
                "saving": n_rows / n,
                "s_opt_err_median": float(np.median(err)),
                "s_opt_err_p90": float(np.percentile(err, 90)),
                "s_opt_err_median_h": float(np.median(err)) / h,
                "s_opt_err_p90_h": float(np.percentile(err, 90)) / h,
                "improvement_rel_err_median": float(np.median(impr_err)),
                "improvement_rel_err_p90": float(np.percentile(impr_err, 90)),
                "improvement_rel_bias_median": float(np.median(impr_signed)),
                "lambda_star_rel_err_median": float(np.median(lam_err)),
                "lambda_star_rel_err_p90": float(np.percentile(lam_err, 90)),
                "realised_median": float(np.median(got)),
                "realised_min": float(np.min(got)),
                "coverage_s_opt": float(covered["s_opt"][j].mean()) if resamples else None,
                "coverage_improvement": float(covered["impr"][j].mean()) if resamples else None,
            }
        )
    return {
        "run": str(path),
        "N": n_rows,
        "B": b,
        "lines": int(done.size),
        "repeats": repeats,
        "unit": unit,
        "grid_spacing": h,
        "improvement": impr,
        "lambda_star": lam,
        "rows": rows_out,
    }


def _subset_weights(weights: SampleWeights, line: Any, rows: np.ndarray) -> np.ndarray:
    """``[R, N]`` bootstrap weights of a subset: the rows' samples' weights, 0 elsewhere."""
    out = np.zeros((weights.resamples, line.train_losses.shape[0]))
    ids = np.asarray(line.train_indices, np.int64)[rows]
    out[:, rows] = weights.weights(ids if (ids >= 0).all() else rows)
    return out


def format_table(res: dict[str, Any]) -> str:
    """The records of :func:`sampling_errors` as a Markdown table with a one-line header."""
    unit = "BatchNorm batches" if res["unit"] == "batch" else "rows"
    head = (
        f"{res['run']}: N = {res['N']}, B = {res['B']}, {res['lines']} lines, "
        f"{res['repeats']} subsets per line and n ({unit}), grid spacing h = "
        f"{res['grid_spacing']:.4g}, Σ improvement = {res['improvement']:.4g}, "
        f"λ* = {res['lambda_star']:.4g}"
    )
    cols = (
        "| n | N/n | \\|Δs_opt\\| median (p90) | in h | Σ improvement rel. err. median (p90) "
        "| λ* rel. err. median (p90) | realised share median (min) "
        "| 95 % interval covers s_opt / improvement |"
    )
    lines = [head, "", cols, "|" + "---|" * 8]
    for r in res["rows"]:
        lines.append(
            f"| {r['n']} | {r['saving']:.3g}× | {r['s_opt_err_median']:.3g} "
            f"({r['s_opt_err_p90']:.3g}) | {r['s_opt_err_median_h']:.2g} "
            f"({r['s_opt_err_p90_h']:.2g}) | {100 * r['improvement_rel_err_median']:.2g} % "
            f"({100 * r['improvement_rel_err_p90']:.2g} %) | "
            f"{100 * r['lambda_star_rel_err_median']:.2g} % "
            f"({100 * r['lambda_star_rel_err_p90']:.2g} %) | "
            f"{100 * r['realised_median']:.4g} % ({100 * r['realised_min']:.4g} %) | "
            + (
                f"{100 * r['coverage_s_opt']:.0f} % / {100 * r['coverage_improvement']:.0f} % |"
                if r.get("coverage_s_opt") is not None
                else "— |"
            )
        )
    return "\n".join(lines)


def _parse_ns(text: str) -> list[int]:
    try:
        ns = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--n {text!r}: give sizes like 128,256,512") from None
    if not ns:
        raise BenchError("--n: give at least one size, e.g. 128,256")
    return ns


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table (and save the records with ``--json PATH``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="run directory with a complete full batch")
    ap.add_argument("--n", default=",".join(map(str, DEFAULT_NS)), help="subset sizes")
    ap.add_argument("--repeats", type=int, default=20, help="subsets per line and n")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset draws")
    ap.add_argument("--unit", default="batch", help="batch (as sample:n measures) or row")
    ap.add_argument(
        "--resamples", type=int, default=200, help="bootstrap resamples (0: no coverage)"
    )
    ap.add_argument("--every", type=int, default=1, help="every k-th line (1: all)")
    ap.add_argument("--interval", default="percentile", help="percentile (per line) or basic")
    ap.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = ap.parse_args(argv)
    try:
        res = sampling_errors(
            args.run,
            _parse_ns(args.n),
            args.repeats,
            args.seed,
            args.unit,
            args.resamples,
            args.every,
            args.interval,
        )
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
