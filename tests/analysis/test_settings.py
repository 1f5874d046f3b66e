"""Analysis settings: the paper scale keeps the numbers, the run scale is scale-free.

``golden/`` holds the tables that ``analyze_run`` wrote for the fixture runs below before the
settings record and the ``run`` scale existed; ``scale="paper"`` must reproduce every one of
their values exactly (new columns, rows and keys may be added).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from steplines.analysis import analyze_run
from steplines.analysis.settings import AnalysisRequest, analysis_tag
from steplines.analysis.tables import AnalysisTables
from steplines.errors import ConfigError
from steplines.store import LineStore
from steplines.store.run import RunLayout

from analysis_fixtures import make_run

GOLDEN = Path(__file__).parent / "golden"
TABLES = ("strategies", "fits", "derivatives", "batch_size")


def _same_json(old: Any, new: Any, where: str = "summary") -> None:
    """Every value of ``old`` is in ``new`` unchanged (dicts may have gained keys)."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for k, v in old.items():
            assert k in new, f"{where}.{k} is gone"
            _same_json(v, new[k], f"{where}.{k}")
    elif isinstance(old, float) and isinstance(new, float):
        # to round-off: least-squares fits round by the CPU's BLAS kernel
        assert new == pytest.approx(old, rel=1e-9, abs=1e-12), f"{where}: {new!r} != {old!r}"
    else:
        assert new == old, f"{where}: {new!r} != {old!r}"


@pytest.mark.parametrize("mode", ["corrected", "faithful"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_paper_scale_reproduces_the_golden_tables(
    tmp_path: Path, mode: str, momentum: float
) -> None:
    golden = GOLDEN / f"{mode}-{momentum}"
    run = make_run(tmp_path / "run", n_lines=7, skip=(3,), momentum=momentum)
    tables = analyze_run(run, AnalysisRequest(mode, scale="paper", batch_sizes=(8, 16, 32, 64)))
    for name in TABLES:
        old = pd.read_csv(golden / f"{name}.csv")
        new = pd.read_csv(tables.path(name))
        if name == "strategies":  # the constant-rate strategies are new rows
            new = new[new.strategy.isin(set(old.strategy))].reset_index(drop=True)
        # to round-off: an ill-conditioned degree-4 fit rounds by the CPU's BLAS kernel
        pd.testing.assert_frame_equal(
            new[old.columns], old, check_exact=False, rtol=1e-9, atol=1e-9, obj=name
        )
    _same_json(
        json.loads((golden / "summary.json").read_text()),
        json.loads(tables.path("summary").read_text()),
    )
    with np.load(golden / "distances.npz") as old, np.load(tables.path("distances")) as new:
        for key in old.files:
            np.testing.assert_array_equal(new[key], old[key], err_msg=key)


def _scaled_copy(src: Path, dst: Path, c: float) -> Path:
    """The run ``src`` with every position multiplied by ``c`` (the same losses).

    s_opt, s_update and λ* scale by c, slopes by 1/c; ‖g‖ and ‖m‖ stay.
    """
    dst.mkdir(parents=True)
    (dst / "config.toml").write_text((src / "config.toml").read_text())
    old = LineStore.open(src / "lines.zarr")
    new = LineStore.create(
        dst / "lines.zarr",
        n_lines=old.n_lines,
        n_train=old.n_train,
        n_val=old.n_val,
        n_direction=old.n_direction,
        n_positions=old.n_positions,
        val_indices=np.arange(old.n_val),
        lines_per_chunk=old.n_lines,
        attrs={},
    )
    for t in np.flatnonzero(old.done()):
        r = old.read_line(int(t))
        new.write_line(
            int(t),
            dataclasses.replace(
                r,
                positions=r.positions * c,
                s_update=r.s_update * c,
                lr=r.lr * c,
                directional_derivative=r.directional_derivative / c,
            ),
        )
    return dst


def _dimensionless(tables: AnalysisTables) -> dict[str, Any]:
    summary = json.loads(tables.path("summary").read_text())
    claims = json.loads(tables.path("claims").read_text())
    fits = pd.read_csv(tables.path("fits"))
    mae = fits.pivot(index="line", columns="degree", values="mae")
    with np.load(tables.path("distances")) as d:
        dist = {k: d[k] for k in ("matrix", "first_matrix", "consecutive")}
    return {
        "shares": {k: v["share_of_optimum"] for k, v in summary["strategies"].items()},
        "fit_error_ratio": (mae[1] / mae[2]).to_numpy(),
        "distances": dist,
        "claims": [(c["key"], c["value"], c["low"], c["high"], c["verdict"]) for c in claims],
        "delta_ratio": {
            k: v["median_ratio"] for k, v in summary["batch_size"]["delta_ratio"].items()
        },
    }


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_run_scale_results_do_not_depend_on_the_units_of_s(tmp_path: Path, c: float) -> None:
    base = make_run(tmp_path / "base", n_lines=24, n=32, m=4, b=16)
    scaled = _scaled_copy(base, tmp_path / "scaled", c)
    kw = {"batch_sizes": (8, 32), "line_resamples": 200}
    a = analyze_run(base, AnalysisRequest(scale="run", **kw))
    b = analyze_run(scaled, AnalysisRequest(scale="run", **kw))
    sa = json.loads(a.path("settings").read_text())
    sb = json.loads(b.path("settings").read_text())
    assert sb["window"] == pytest.approx(c * sa["window"], rel=1e-12)
    assert sb["mu"] == pytest.approx(c * sa["mu"], rel=1e-12)
    ra, rb = _dimensionless(a), _dimensionless(b)
    assert ra["shares"].keys() == rb["shares"].keys()
    for k in ra["shares"]:
        assert rb["shares"][k] == pytest.approx(ra["shares"][k], rel=1e-6, abs=1e-12), k
    np.testing.assert_allclose(rb["fit_error_ratio"], ra["fit_error_ratio"], rtol=1e-4)
    for k in ra["distances"]:
        np.testing.assert_allclose(rb["distances"][k], ra["distances"][k], rtol=1e-6, atol=1e-9)
    for ca, cb in zip(ra["claims"], rb["claims"]):
        assert cb[0] == ca[0] and cb[4] == ca[4], (ca, cb)
        for x, y in zip(ca[1:4], cb[1:4]):
            assert (x is None) == (y is None) and (x is None or y == pytest.approx(x, rel=1e-5))
    assert rb["delta_ratio"].keys() == ra["delta_ratio"].keys()
    for k, x in ra["delta_ratio"].items():
        y = rb["delta_ratio"][k]
        assert (x is None) == (y is None) and (x is None or y == pytest.approx(x, rel=1e-6)), k
    # and the paper's constants are not scale-free: the same run in paper scale differs
    p = json.loads(
        analyze_run(scaled, AnalysisRequest(scale="paper", **kw)).path("settings").read_text()
    )
    assert p["window"] == 0.2 and p["mu"] == 0.1


def test_non_default_analyses_never_replace_the_default(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=6)
    default = analyze_run(run, AnalysisRequest(batch_sizes=(8,), line_resamples=50))
    assert default.path("summary").parent == run / "analysis"
    before = default.path("summary").read_bytes()
    faithful = analyze_run(run, AnalysisRequest("faithful", batch_sizes=(8,), line_resamples=50))
    custom = analyze_run(
        run, AnalysisRequest(window=0.3, mu=0.05, batch_sizes=(8,), line_resamples=50)
    )
    assert faithful.path("summary").parent == run / "analysis-faithful-paper"
    assert custom.path("summary").parent.name.startswith("analysis-corrected-run-")
    assert default.path("summary").read_bytes() == before
    s = json.loads(custom.path("settings").read_text())
    assert (s["window"], s["mu"], s["overrides"]) == (0.3, 0.05, ["window", "mu"])
    # the tag of a request is known before analysing (the report finds the tables by it)
    assert (
        RunLayout(run).analysis_dir(analysis_tag("faithful", None, False))
        == faithful.path("summary").parent
    )
    assert analysis_tag("corrected", "run", False) == ""
    assert analysis_tag("corrected", None, True) == ""  # paper setting: paper is the default


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=3)
    bad = (
        {"scale": "huge"},
        {"window": 0.0},
        {"mu": -1.0},
        {"lambdas": (0.1, -0.2)},
        {"resamples": -1},
        {"resamples": 2.5},
        {"level": 1.5},
    )
    for kw in bad:
        with pytest.raises(ConfigError):
            analyze_run(run, AnalysisRequest(batch_sizes=(8,), **kw))


def test_a_killed_analysis_leaves_the_previous_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables are written aside and swapped in whole: a kill midway changes nothing."""
    import steplines.analysis.tables as tables_mod

    run = make_run(tmp_path / "run", n_lines=6)
    analyze_run(run, AnalysisRequest(batch_sizes=(8,), line_resamples=50))
    before = {p.name: p.read_bytes() for p in (run / "analysis").iterdir()}

    write = tables_mod._write_file

    def killed(path: Path, name: str, *args: object) -> None:
        if name == "claims":  # after half the files are written
            raise KeyboardInterrupt
        write(path, name, *args)

    monkeypatch.setattr(tables_mod, "_write_file", killed)
    with pytest.raises(KeyboardInterrupt):
        analyze_run(run, AnalysisRequest(batch_sizes=(8, 16), line_resamples=50))
    assert {p.name: p.read_bytes() for p in (run / "analysis").iterdir()} == before
    monkeypatch.undo()
    assert list(run.glob(".analysis.tmp-*"))  # the killed analysis' work directory
    analyze_run(run, AnalysisRequest(batch_sizes=(8, 16), line_resamples=50))
    assert not list(run.glob(".analysis.*"))  # the next analysis cleaned it up
    assert (run / "analysis" / "summary.json").read_bytes() != before["summary.json"]
