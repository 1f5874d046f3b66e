"""``bench/sampling.py``: sub-sampled full batches against the complete one (synthetic store)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis_fixtures import make_run

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sampling.py"


def _bench():
    spec = importlib.util.spec_from_file_location("sampling_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 parabolic lines, N = 48 training rows in 3 batches of B = 16, grid spacing 0.006
    return make_run(tmp_path_factory.mktemp("sampling") / "run", n_lines=6, n=48, m=4, b=16)


def test_all_rows_give_zero_error_and_few_rows_a_positive_one(run: Path) -> None:
    res = _bench().sampling_errors(run, [16, 32, 48], repeats=10, seed=3, resamples=100)
    assert (res["N"], res["B"], res["lines"]) == (48, 16, 6)
    assert res["grid_spacing"] == pytest.approx(0.006)
    small, mid, full = res["rows"]
    assert full["saving"] == 1 and small["saving"] == 3
    for key in (
        "s_opt_err_median",
        "s_opt_err_p90",
        "improvement_rel_err_median",
        "lambda_star_rel_err_p90",
    ):
        assert full[key] == 0.0
        assert small[key] >= 0
    assert full["realised_median"] == 1.0
    # one batch of 16 of the 48 rows moves the minimum by grid steps and the improvement
    assert small["s_opt_err_p90_h"] >= 1 and small["improvement_rel_err_median"] > 1e-3
    assert small["lambda_star_rel_err_p90"] > 0 and small["realised_min"] < 1.0
    assert small["s_opt_err_p90"] >= mid["s_opt_err_p90"]
    # the complete batch's values lie inside the intervals computed from all of its rows
    assert full["coverage_s_opt"] >= 0.9 and full["coverage_improvement"] >= 0.9
    assert 0 <= small["coverage_s_opt"] <= 1 and 0 <= small["coverage_improvement"] <= 1
    # single rows instead of whole batches: any n
    rows = _bench().sampling_errors(run, [5, 48], repeats=4, unit="row", resamples=0)
    assert rows["rows"][0]["s_opt_err_p90"] > 0 and rows["rows"][1]["s_opt_err_p90"] == 0
    # every third line: lines 0 and 3
    assert _bench().sampling_errors(run, [48], repeats=1, resamples=0, every=3)["lines"] == 2


def test_cli_table_json_and_bad_input(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    cmd = [sys.executable, str(BENCH), str(run), "--n", "16,48", "--repeats", "3"]
    cmd += ["--resamples", "20"]
    res = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| 16 | 3× |" in res.stdout and "| 48 | 1× |" in res.stdout
    assert [r["n"] for r in json.loads(out.read_text())["rows"]] == [16, 48]
    for args, needle in (
        (["--n", "20"], "multiple of B = 16"),
        (["--n", "64"], "1..48"),
        (["--n", "x"], "give sizes like"),
        (["--every", "0"], "give at least 1"),
    ):
        bad = subprocess.run([*cmd[:3], *args], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert bad.stderr.startswith("error: ") and needle in bad.stderr, bad.stderr
    none = subprocess.run(
        [sys.executable, str(BENCH), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert none.returncode == 2 and "has no lines.zarr" in none.stderr
