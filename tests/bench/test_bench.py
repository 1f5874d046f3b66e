"""``steplines bench``: the table and the JSON records (quick mode: no compiler wait)."""

from __future__ import annotations

import json

import pytest
import torch

from support import cli, steplines


@pytest.fixture(scope="module")
def bench_json() -> list[dict]:
    """One quick benchmark run (a `steplines` process): its JSON records, read by both tests."""
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
    return json.loads(out.stdout)


def test_bench_json_records(bench_json: list[dict]) -> None:
    recs = bench_json
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


def test_bench_table(bench_json: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """The command without --json prints the table of the same records (the benchmark itself
    is not run again: its result is the JSON run's)."""
    import steplines.bench

    facts = bench_json[0]["machine"]
    records = [{k: v for k, v in r.items() if k != "machine"} for r in bench_json]
    monkeypatch.setattr(steplines.bench, "run_bench", lambda *a, **kw: (facts, records))
    out = cli("bench", "--model", "digits-resnet", "--device", "cpu", "--quick", check=True)
    head, cols, *rows = out.stdout.splitlines()
    assert "gemm_gflops" in head and "evals/s" in cols and "max |Δ|" in cols
    assert any(r.startswith("paper loop") for r in rows)
    assert len(rows) >= len(records)
