"""Analysis and report of a many-line run with bounded memory (synthetic line store).

Builds (or, with ``--reuse``, reuses) a synthetic run directory whose ``lines.zarr`` has the
paper's shapes — N = 3,968 training rows, M = 896 validation rows, B = 128 direction rows, a
store capacity of K = 842 positions of which the paper's grid uses 169 per line — and per-sample
losses that look like measured lines: per-sample parabolas ``a_i s² + b_i s + c_i`` whose
coefficients drift from line to line, with a little multiplicative noise, positive, float32.
``s_update = lr·‖g_t‖`` with ``‖g_t‖`` decaying over the lines, ``lr = 0.1`` and
``directional_derivative = −‖g_t‖`` (plain SGD).

Then it runs, each in a fresh subprocess so that the peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that step alone:

* ``faithful``:  ``analyze_run(run, "faithful")``
* ``corrected``: ``analyze_run(run, "corrected")`` (leaves the corrected tables in place)
* ``report``:    ``build_report([run])`` in corrected mode, which reuses those tables

and prints one row per step (seconds, peak RSS in MiB). Exit status 1 if any peak reaches
``--max-gib`` (default 2 GiB).

    python bench/analysis_scale.py /tmp/scale-run --lines 2000
    python bench/analysis_scale.py /tmp/scale-run --reuse          # measure again, same store

With ``--reuse`` only the done lines are analysed (``analyze_run`` skips the others), so a
store with lines invalidated by ``LineStore.invalidate`` measures a shorter run.

``--steps`` also accepts ``preload``: a control that reads every line's per-sample data into
memory at once (what a non-streaming analysis would hold); the tests use it to show that the
memory check can fail.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from steplines.engine.positions import first_pass
from steplines.store import LineRecord, LineStore

LR = 0.1
GRID, INTERVAL, RESOLUTION = "paper", 0.5, 0.006
STEPS = ("faithful", "corrected", "report")
CONTROL_STEPS = ("preload",)
GIB = 1024**3

CONFIG = """\
# Synthetic run of bench/analysis_scale.py (no model was trained; the losses are parabolas).
[problem]
dataset = "cifar10"
model = "resnet20"
train_size = {n}
val_size = {m}
batch_size = {b}
augment = true
split_seed = 42

[train]
optimizer = "sgd"
lr = {lr}
momentum = 0.0
weight_decay = 0.0
steps = {lines}
seed = 1
checkpoint_every = 100

[measure]
grid = "{grid}"
interval = {interval}
resolution = {resolution}
max_passes = 5
full_batch = "epoch"
batchnorm = "batch"
dropout = "fixed"
"""


# ---------------------------------------------------------------------------- synthetic lines


def grad_norm_at(t: int, n_lines: int) -> float:
    """‖g_t‖: decays from about 2.5 to about 0.6 over the run, with 5 % line-to-line jitter."""
    rng = np.random.default_rng([11, t])
    decay = 0.5 + 2.0 * np.exp(-4.0 * t / max(n_lines, 1))
    return float(decay * (1.0 + 0.05 * rng.standard_normal()))


def _rows(
    rng: np.random.Generator, rows: int, t: int, n_lines: int, s_center: float, slope: float
) -> np.ndarray:
    """``[rows, 3]`` per-sample coefficients ``a, b, c`` of ``a (s − s*_i)² + m_i``.

    ``s*_i`` scatters around ``s_center``; the mean slope at 0, ``mean(b) = −2·mean(a·s*)``,
    is ``slope``; the minimum values ``m_i`` (per-sample loss at its own minimum) shrink as
    training goes on, so ``c = a·s*² + m`` stays positive.
    """
    progress = t / max(n_lines, 1)
    s_star = s_center * (1.0 + 0.6 * rng.standard_normal(rows))
    a = rng.lognormal(0.0, 0.5, rows)
    a *= -slope / (2.0 * float(np.mean(a * s_star)))  # mean slope at 0 equals ``slope``
    m = rng.exponential(1.6 - 1.2 * progress, rows) + 1e-3
    return np.stack([a, -2.0 * a * s_star, a * s_star**2 + m], axis=1)


def _losses(rng: np.random.Generator, coef: np.ndarray, s: np.ndarray) -> np.ndarray:
    """float32 ``[R, k]``: the parabolas at ``s`` times ``1 + 0.5 %`` noise (stays positive)."""
    a, b, c = coef[:, 0:1], coef[:, 1:2], coef[:, 2:3]
    vals = a * s[None, :] ** 2 + b * s[None, :] + c
    noise = 1.0 + 0.005 * rng.standard_normal(vals.shape)
    return np.maximum(vals * noise, 1e-6).astype(np.float32)


def synthetic_record(t: int, n_lines: int, n: int, m: int, b: int) -> LineRecord:
    """Line ``t`` of the synthetic run (deterministic in ``t``)."""
    rng = np.random.default_rng([2021, t])
    grad_norm = grad_norm_at(t, n_lines)
    s_update = LR * grad_norm
    pos = first_pass(GRID, INTERVAL, RESOLUTION, s_update)
    s_center = 1.3 * s_update  # the full-batch minimum lies a bit beyond SGD's step
    train = _losses(rng, _rows(rng, n, t, n_lines, s_center, -0.9 * grad_norm), pos)
    val = _losses(rng, _rows(rng, m, t, n_lines, s_center, -0.8 * grad_norm), pos)
    direction = _losses(rng, _rows(rng, b, t, n_lines, s_center, -grad_norm), pos)
    return LineRecord(
        positions=pos,
        train_losses=train,
        val_losses=val,
        direction_losses=direction,
        train_indices=rng.permutation(50_000)[:n],
        direction_indices=rng.permutation(50_000)[:b],
        s_update=s_update,
        direction_norm=grad_norm,
        grad_norm=grad_norm,
        directional_derivative=-grad_norm,
        lr=LR,
        batch_loss=float(direction[:, int(np.flatnonzero(pos == 0.0)[0])].mean()),
        n_passes=3 * pos.size,
    )


def _write_segments(args: tuple[str, list[int], int, int, int, int]) -> int:
    """Worker: write the given lines (whole ``lines_per_chunk`` segments) into the store."""
    path, lines, n_lines, n, m, b = args
    store = LineStore.open(Path(path), mode="r+")
    for t in lines:
        store.write_line(t, synthetic_record(t, n_lines, n, m, b))
    return len(lines)


def build_run(
    run_dir: Path,
    *,
    n_lines: int,
    n: int,
    m: int,
    b: int,
    k: int,
    lines_per_chunk: int = 50,
    workers: int = 2,
) -> float:
    """Create ``run_dir`` (``config.toml`` + ``lines.zarr``) and return the seconds it took.

    Segments of ``lines_per_chunk`` lines are written by ``workers`` processes; aligned segments
    never share a chunk (``docs/store.md``), so they may write concurrently.
    """
    start = time.perf_counter()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(
        CONFIG.format(
            n=n,
            m=m,
            b=b,
            lr=LR,
            lines=n_lines,
            grid=GRID,
            interval=INTERVAL,
            resolution=RESOLUTION,
        )
    )
    path = run_dir / "lines.zarr"
    LineStore.create(
        path,
        n_lines=n_lines,
        n_train=n,
        n_val=m,
        n_direction=b,
        n_positions=k,
        val_indices=np.arange(m),
        lines_per_chunk=lines_per_chunk,
        attrs={"synthetic": "bench/analysis_scale.py"},
    )
    segments = [
        list(range(lo, min(lo + lines_per_chunk, n_lines)))
        for lo in range(0, n_lines, lines_per_chunk)
    ]
    jobs = [(str(path), seg, n_lines, n, m, b) for seg in segments]
    if workers > 1 and len(segments) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_segments, jobs):
                pass
            pool.close()
            pool.join()
    else:
        for job in jobs:
            _write_segments(job)
    return time.perf_counter() - start


def du(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- measured steps


def _peak_mib() -> float:
    """Peak RSS of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(step: str, run_dir: Path) -> dict[str, Any]:
    """Run one step in this (fresh) process; return seconds and peak RSS (MiB)."""
    from steplines.analysis import analyze_run
    from steplines.analysis.settings import AnalysisRequest
    from steplines.reporting import build_report

    baseline = _peak_mib()  # after the imports
    info: dict[str, Any] = {"step": step}
    start = time.perf_counter()
    if step in ("corrected", "faithful"):
        analyze_run(run_dir, AnalysisRequest(step))
    elif step == "report":
        summary = run_dir / "analysis" / "summary.json"
        before = summary.stat().st_mtime_ns if summary.is_file() else None
        build_report([run_dir])
        after = summary.stat().st_mtime_ns if summary.is_file() else None
        info["reused_analysis"] = before is not None and before == after
    elif step == "preload":
        store = LineStore.open(run_dir / "lines.zarr")
        held = [store.read_line(int(t)) for t in np.flatnonzero(store.done())]
        info["lines_held"] = len(held)
    else:
        raise SystemExit(f"unknown step {step!r}; use one of {STEPS + CONTROL_STEPS}")
    info["seconds"] = time.perf_counter() - start
    info["baseline_mib"] = baseline
    info["peak_mib"] = _peak_mib()
    return info


def measure(step: str, run_dir: Path) -> dict[str, Any]:
    """Run ``step`` in a fresh Python subprocess and return its measurements."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(run_dir), "--child", step],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the synthetic run, measure the steps, print the table; 1 if over budget."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="run directory to create (or reuse)")
    p.add_argument("--lines", type=int, default=2000, help="T, lines of the store")
    p.add_argument("--n", type=int, default=3968, help="N, training rows per line")
    p.add_argument("--m", type=int, default=896, help="M, validation rows")
    p.add_argument("--b", type=int, default=128, help="B, direction-batch rows")
    p.add_argument("--k", type=int, default=842, help="K, store capacity in positions")
    p.add_argument("--reuse", action="store_true", help="reuse an existing run_dir")
    p.add_argument("--workers", type=int, default=2, help="processes writing the store")
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to measure")
    p.add_argument("--max-gib", type=float, default=2.0, help="peak RSS budget per step")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.run_dir)))
        return 0

    steps = [s for s in args.steps.split(",") if s]
    bad = [s for s in steps if s not in STEPS + CONTROL_STEPS]
    if bad:
        p.error(f"unknown steps {bad}; use {STEPS + CONTROL_STEPS}")
    store_path = args.run_dir / "lines.zarr"
    built_s = None
    if args.reuse and store_path.is_dir():
        store = LineStore.open(store_path)
    else:
        built_s = build_run(
            args.run_dir,
            n_lines=args.lines,
            n=args.n,
            m=args.m,
            b=args.b,
            k=args.k,
            workers=args.workers,
        )
        store = LineStore.open(store_path)
    k_used = int(np.max(store.read_summary()["n_positions"]))
    n_done = int(store.done().sum())
    size = du(store_path)
    print(
        f"store: T={store.n_lines} ({n_done} done) N={store.n_train} M={store.n_val} "
        f"B={store.n_direction} K={store.n_positions} ({k_used} used per line), "
        f"{size / 1e9:.2f} GB on disk, "
        f"per-sample train data {store.n_train * k_used * 4 / 1e6:.2f} MB per line"
        + (f", built in {built_s:.0f} s" if built_s is not None else " (reused)")
    )

    results = [measure(step, args.run_dir) for step in steps]
    print()
    print("| step | seconds | peak RSS MiB |")
    print("|---|---:|---:|")
    for r in results:
        name = {
            "faithful": 'analyze_run(mode="faithful")',
            "corrected": 'analyze_run(mode="corrected")',
            "report": "build_report (reuses the corrected analysis)"
            if r.get("reused_analysis")
            else "build_report (analysed again)",
            "preload": "control: every line's per-sample data held at once",
        }[r["step"]]
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |")
    print(f"\n(peak RSS after imports alone: {min(r['baseline_mib'] for r in results):.0f} MiB)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "lines": store.n_lines,
                    "lines_done": n_done,
                    "n_train": store.n_train,
                    "n_val": store.n_val,
                    "n_direction": store.n_direction,
                    "n_positions": store.n_positions,
                    "positions_used": k_used,
                    "store_bytes": size,
                    "build_seconds": built_s,
                    "steps": results,
                },
                indent=2,
            )
            + "\n"
        )
    over = [
        r for r in results if r["step"] in STEPS and r["peak_mib"] * 1024**2 >= args.max_gib * GIB
    ]
    if over:
        names = ", ".join(r["step"] for r in over)
        print(f"FAIL: peak RSS of {names} reached {args.max_gib:g} GiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
