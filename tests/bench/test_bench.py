"""``steplines bench``: the table and the JSON records (quick mode: no compiler wait)."""

from __future__ import annotations

import json

import torch

from support import steplines


def test_bench_json_records() -> None:
    out = steplines(
        "bench",
        "--model",
        "digits-resnet",
        "--device",
        "cpu",
        "--batches",
        "2",
        "--positions",
        "2",
        "--repeat",
        "1",
        "--quick",
        "--json",
        check=True,
    )
    recs = json.loads(out.stdout)
    names = [r["variant"] for r in recs]
    assert "reference" in names and any(n.startswith("paper loop") for n in names)
    for r in recs:
        assert {"variant", "evals_per_s", "ratio_to_paper_loop", "max_abs_diff"} <= set(r)
        assert r["evals_per_s"] > 0
        if r["variant"].startswith("opt-in"):  # bf16: its error is what the row reports
            assert 0 < r["max_abs_diff"] < 0.2
        else:
            assert r["max_abs_diff"] <= 1e-5  # every fp32 variant computes the reference's losses
    if torch.get_num_threads() >= 2:
        assert any("2 procs" in n for n in names)  # the engine's worker pool
    assert any(n.startswith("opt-in bf16") for n in names)


def test_bench_table() -> None:
    out = steplines(
        "bench",
        "--model",
        "digits-resnet",
        "--device",
        "cpu",
        "--batches",
        "1",
        "--positions",
        "2",
        "--repeat",
        "1",
        "--quick",
        check=True,
    )
    head, cols, *rows = out.stdout.splitlines()
    assert "gemm_gflops" in head and "evals/s" in cols and "max |Δ|" in cols
    assert any(r.startswith("paper loop") for r in rows)
