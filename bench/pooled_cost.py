"""What pooling seeds costs: one run's analysis against the pooled analysis of several.

    python bench/pooled_cost.py RUN1 RUN2 RUN3 [--repeat 2]

Copies the runs (without their analyses) to a temporary directory and times, each as a fresh
``steplines`` process (wall seconds, best of ``--repeat``):

* ``one run``: ``steplines analyze COPY1`` from nothing;
* ``pooled``: ``steplines analyze COPY1 COPY2 COPY3 --out POOLED`` from nothing (it analyses
  every run, then pools their ``claim_data.npz``);
* ``pooling alone``: the same command once every run's analysis is current.

and prints one row each with its ratio to ``one run``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPLINES = [sys.executable, "-m", "steplines.cli"]


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("analysis*", "figures", "report*"))
    return dst


def _clear(runs: list[Path]) -> None:
    for r in runs:
        for a in r.glob("analysis*"):
            shutil.rmtree(a)


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*STEPLINES, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_copy(r, Path(tmp) / f"seed-{i + 1}") for i, r in enumerate(a.runs)]
        pooled = ["analyze", *map(str, runs), "--out", str(Path(tmp) / "pooled")]
        rows: dict[str, list[float]] = {"one run": [], "pooled": [], "pooling alone": []}
        for _ in range(a.repeat):
            _clear(runs)
            rows["one run"].append(_timed(["analyze", str(runs[0])]))
            _clear(runs)
            rows["pooled"].append(_timed(pooled))
            rows["pooling alone"].append(_timed(pooled))
    base = min(rows["one run"])
    print(f"| step ({len(runs)} runs) | wall s (best of {a.repeat}) | × one run |")
    print("|---|---|---|")
    for name, t in rows.items():
        print(f"| {name} | {min(t):.1f} | {min(t) / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
