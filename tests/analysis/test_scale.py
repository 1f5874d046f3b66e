"""Analysis of many lines with bounded memory (``bench/analysis_scale.py``).

``analyze_run`` must stream the per-sample data one line at a time and use the ``[T]`` /
``[T, K]`` summary arrays for everything else, so its peak memory must not grow with the number
of lines the way the per-sample data does. Each measurement runs in a fresh subprocess
(``ru_maxrss`` of that process alone).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from steplines.store import LineStore

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "analysis_scale.py"
GIB_IN_MIB = 1024.0


def run_bench(run_dir: Path, *args: str, timeout: float) -> dict[str, Any]:
    """Run the benchmark script on ``run_dir``; return its JSON results keyed by step."""
    out = run_dir.parent / f"{run_dir.name}.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), str(run_dir), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    result["by_step"] = {r["step"]: r for r in result["steps"]}
    return result


def test_analysis_peak_memory_does_not_grow_with_lines(tmp_path: Path) -> None:
    """Doubling the analysed lines (50 → 100) grows analyze_run's peak RSS by less than 20 %.

    One 100-line store (N = 2,048 rows × 169 positions, float32: ~1.4 MB of per-sample data per
    line) is analysed whole, then with lines 50–99 invalidated (``analyze_run`` skips lines
    that are not done). The per-sample data of 50 lines (~70 MB) is far more than 20 % of the
    50-line peak, so an analysis holding every line's per-sample data at once would fail; the
    ``preload`` control (every line read into memory) measures that margin on the same store,
    so the test cannot pass vacuously.
    """
    run = tmp_path / "run"
    small = ("--n", "2048", "--m", "32", "--b", "128", "--k", "176")
    r100 = run_bench(run, "--lines", "100", *small, "--steps", "corrected,preload", timeout=600)
    assert r100["lines_done"] == 100
    LineStore.open(run / "lines.zarr", mode="r+").invalidate(list(range(50, 100)))
    r50 = run_bench(run, "--reuse", "--steps", "corrected", timeout=600)
    assert r50["lines_done"] == 50
    shutil.rmtree(run)  # ~110 MB; pytest keeps the last few tmp_path trees

    base = r50["by_step"]["corrected"]["peak_mib"]
    grown = r100["by_step"]["corrected"]["peak_mib"]
    preload = r100["by_step"]["preload"]
    per_50_lines = (preload["peak_mib"] - preload["baseline_mib"]) / 2
    assert per_50_lines > 0.2 * base, (
        f"control too weak: 50 lines of per-sample data take only {per_50_lines:.0f} MiB "
        f"(limit {0.2 * base:.0f} MiB)"
    )
    assert grown < 1.2 * base, (
        f"analyze_run peak RSS grew from {base:.0f} MiB (50 lines) to {grown:.0f} MiB "
        f"(100 lines); per-sample data must be streamed line by line"
    )


@pytest.mark.slow
def test_analysis_of_2000_paper_sized_lines_under_2_gib(tmp_path: Path) -> None:
    """2,000 lines of the paper's shapes (N 3,968, M 896, B 128, K 842): every step < 2 GiB.

    Writes about 5 GB to ``tmp_path`` and takes several minutes (opt-in: ``pytest -m slow``).
    """
    try:
        result = run_bench(tmp_path / "run", "--lines", "2000", timeout=3600)
    finally:
        shutil.rmtree(tmp_path / "run", ignore_errors=True)  # ~5 GB
    assert result["lines"] == 2000
    assert set(result["by_step"]) == {"faithful", "corrected", "report"}
    assert result["by_step"]["report"]["reused_analysis"]
    for step, r in result["by_step"].items():
        assert r["peak_mib"] < 2 * GIB_IN_MIB, f"{step}: peak RSS {r['peak_mib']:.0f} MiB"
