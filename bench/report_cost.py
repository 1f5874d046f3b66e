"""What the report costs, this code against another checkout's, side by side on one run.

    python bench/report_cost.py RUN --other /path/to/other/checkout [--repeat 3]

Copies RUN (without its analyses, figures and pages) twice, analyses each copy once with the
code that times it, then times ``steplines report COPY`` as a fresh process (wall seconds),
alternating this checkout and ``--other`` ``--repeat`` times so that both see the same load.
Prints, per code, the median seconds, the ratio to the other and the size of ``report.pdf``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def _steplines(src: Path, *args: str) -> float:
    """Run ``steplines ARGS`` with the package at ``src``; wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "steplines.cli", *args], check=True, env=env, capture_output=True
    )
    return time.perf_counter() - start


def _fresh(run: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    skip = shutil.ignore_patterns("analysis*", "figures", "report*", "compare*")
    return Path(shutil.copytree(run, dst, ignore=skip))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--other", type=Path, required=True, help="another checkout (its src/)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    codes = {"this": HERE, "other": a.other.resolve() / "src"}
    times: dict[str, list[float]] = {k: [] for k in codes}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeat):
            for name, src in codes.items():
                copy = _fresh(a.run, Path(tmp) / name / a.run.name)
                _steplines(src, "analyze", str(copy))
                times[name].append(_steplines(src, "report", str(copy)))
                sizes[name] = (copy / "report.pdf").stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"steplines report {a.run.name}, median of {a.repeat} (wall seconds)")
    print(f"{'code':<8}{'seconds':>10}{'ratio':>8}{'report.pdf':>14}  runs")
    for name in codes:
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(
            f"{name:<8}{med[name]:>10.2f}{med[name] / med['other']:>8.2f}"
            f"{sizes[name] / 1e6:>11.2f} MB  {runs}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
