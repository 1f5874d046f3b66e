"""Claims pooled over seeds of one setup (``steplines.analysis.pooled``, issue 20 item 3)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from steplines.analysis.claims import CLAIMS
from steplines.analysis.pooled import (
    analyze_runs,
    check_out_dir,
    pool_claims,
    setup_differences,
)
from steplines.analysis.settings import AnalysisRequest
from steplines.analysis.tables import AnalysisTables
from steplines.errors import ConfigError, RunDirError

from analysis_fixtures import make_run

BENCH = Path(__file__).resolve().parents[2] / "bench" / "claims_coverage.py"


def _bench():
    spec = importlib.util.spec_from_file_location("claims_coverage_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def seeded_run(path: Path, seed: int, lr: float = 0.1) -> Path:
    """A tiny measured run (6 lines) whose config.toml names ``train.seed``."""
    make_run(path, n_lines=6, lr=lr)
    cfg = path / "config.toml"
    cfg.write_text(cfg.read_text().replace("[train]\n", f"[train]\nseed = {seed}\n"))
    return path


def _inside(x: float | None, rng: list[float | None]) -> bool:
    lo, hi = rng
    return x is None or ((lo is None or x >= lo - 1e-12) and (hi is None or x <= hi + 1e-12))


def test_pooled_claims_keep_every_interval_in_range_and_never_contradict() -> None:
    bench = _bench()
    runs = [bench.synthetic_run(60, seed=s, name=f"seed-{s}", run_effect=0.05) for s in (1, 2, 3)]
    claims = pool_claims(runs, resamples=200)
    assert [c["key"] for c in claims] == [s.key for s in CLAIMS]
    opposite = {"holds": "does not hold", "does not hold": "holds"}
    for c in claims:
        assert [r["run"] for r in c["per_run"]] == ["seed-1", "seed-2", "seed-3"]
        assert c["runs"] == 3
        for rec in (c, *c["per_run"]):
            for k in ("value", "low", "high"):
                assert _inside(rec[k], c["range"]), (c["key"], k, rec[k], c["range"])
        own = {r["verdict"] for r in c["per_run"]}
        if c["verdict"] in opposite:
            assert opposite[c["verdict"]] not in own, c
    assert sum(c["verdict"] == "holds" for c in claims) >= 10  # claims hold by construction
    json.dumps(claims, allow_nan=False)  # claims.json is strict JSON


def test_a_claim_failing_in_every_seed_fails_pooled() -> None:
    bench = _bench()
    runs = [bench.synthetic_run(60, seed=s, fail=["parabola_not_line"]) for s in (4, 5, 6)]
    c = {c["key"]: c for c in pool_claims(runs, resamples=200)}["parabola_not_line"]
    assert c["verdict"] == "does not hold"
    assert {r["verdict"] for r in c["per_run"]} == {"does not hold"}


def test_two_runs_are_too_few_for_a_pooled_verdict() -> None:
    bench = _bench()
    runs = [bench.synthetic_run(60, seed=s, name=f"s{s}") for s in (1, 2)]
    claims = pool_claims(runs, resamples=100)
    judged = [c for c in claims if c["verdict"] != "not applicable"]
    assert judged and all(c["verdict"] == "inconclusive" for c in judged)
    assert any("only 2 runs pooled" in c["reason"] for c in judged)


def test_holm_and_bonferroni_are_passed_through() -> None:
    bench = _bench()
    runs = [bench.synthetic_run(60, seed=s, name=f"s{s}") for s in (1, 2, 3)]
    bonf = pool_claims(runs, resamples=100, family="bonferroni")
    assert all(c["level"] > 0.99 for c in bonf)
    holm = pool_claims(runs, resamples=100, family="holm")
    assert any(c["reason"].startswith("Holm") for c in holm)
    with pytest.raises(ConfigError, match="unknown family"):
        pool_claims(runs, family="sidak")


def test_analyze_runs_writes_claims_and_summary(tmp_path: Path) -> None:
    runs = [seeded_run(tmp_path / f"seed-{s}", s) for s in (1, 2, 3)]
    out = analyze_runs(runs, tmp_path / "pooled", AnalysisRequest(family="holm")).directory
    claims = json.loads((out / "claims.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert len(claims) == len(CLAIMS)
    assert all(len(c["per_run"]) == 3 for c in claims)
    assert [r["run"] for r in summary["runs"]] == ["seed-1", "seed-2", "seed-3"]
    assert [r["seed"] for r in summary["runs"]] == [1, 2, 3]
    assert [r["lines"] for r in summary["runs"]] == [6, 6, 6]
    assert summary["family"] == "holm" and "Holm" in summary["family_note"]
    assert summary["min_units"] == {"lines": 20, "noisy steps": 5, "runs": 3}
    for run in runs:  # every run's own analysis was made first
        assert AnalysisTables.is_current(run / "analysis", run, "corrected")


def test_runs_of_different_setups_are_refused(tmp_path: Path) -> None:
    a = seeded_run(tmp_path / "a", 1)
    b = seeded_run(tmp_path / "b", 2, lr=0.05)
    assert setup_differences([a, b]) == ["train.lr"]
    with pytest.raises(ConfigError, match=r"differ in train\.lr"):
        analyze_runs([a, b], tmp_path / "out", AnalysisRequest())
    assert not (tmp_path / "out").exists()


def test_bad_inputs_get_one_line(tmp_path: Path) -> None:
    a = seeded_run(tmp_path / "a", 1)
    with pytest.raises(ConfigError, match="inside the run"):
        check_out_dir(a / "pooled", [a])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.toml").write_text((a / "config.toml").read_text())
    with pytest.raises(RunDirError, match="measure the run first"):
        analyze_runs([a, empty], tmp_path / "out", AnalysisRequest())
    bare = make_run(tmp_path / "bare", n_lines=6, write_config=False)
    with pytest.raises(RunDirError, match=r"no config\.toml"):
        analyze_runs([a, bare], tmp_path / "out", AnalysisRequest())
    with pytest.raises(ConfigError, match="given twice"):
        analyze_runs([a, a], tmp_path / "out", AnalysisRequest())
