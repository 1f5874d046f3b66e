"""The one owner of the analysis files: what is written is read back, checked, and judged
current by one rule (``steplines.analysis.tables``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steplines.analysis import analyze_run
from steplines.analysis.settings import AnalysisRequest
from steplines.analysis.tables import FILES, MANIFEST, OPTIONAL, AnalysisTables, TablesError

from analysis_fixtures import make_run

REQUEST = AnalysisRequest(batch_sizes=(8,), line_resamples=50)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnalysisTables]:
    run = make_run(tmp_path_factory.mktemp("tables") / "run", n_lines=6)
    return run, analyze_run(run, REQUEST)


def _same(a: object, b: object) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _copy(analysed: tuple[Path, AnalysisTables], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(analysed[0], run)
    return run


def test_what_is_written_is_read_back(analysed: tuple[Path, AnalysisTables]) -> None:
    run, written = analysed
    assert written.directory == run / "analysis"
    back = AnalysisTables.read(written.directory)
    assert back.settings == written.settings and back.mode == "corrected"
    assert back.summary == written.summary and back.claims == written.claims
    assert back.browser == written.browser
    assert back.lines.used == 6 and back.lines.total == 6 and back.lines.missing == 0
    for name in ("strategies", "fits", "derivatives", "batch_size", "estimators", "training"):
        pd.testing.assert_frame_equal(
            getattr(back, name), getattr(written, name).reset_index(drop=True), check_dtype=False
        )
    for name in ("distances", "bootstrap"):
        a, b = getattr(back, name), getattr(written, name)
        assert set(a) == set(b) and all(_same(a[k], b[k]) for k in a), name
    assert [v.t for v in back.views] == [v.t for v in written.views]
    assert np.array_equal(back.views[0].full, written.views[0].full)
    for key, col in written.claim_data.columns.items():
        assert _same(back.claim_data.columns[key], col), key
    # every file named once, in FILES, and the manifest covers each one written
    names = {p.name for p in written.directory.iterdir()}
    assert names == {f for n, f in FILES.items() if n != "directions"} | {MANIFEST}


def test_a_changed_or_missing_file_is_named(
    analysed: tuple[Path, AnalysisTables], tmp_path: Path
) -> None:
    run = _copy(analysed, tmp_path)
    adir = run / "analysis"
    fits = adir / FILES["fits"]
    fits.write_text(fits.read_text().replace("1", "2", 1))
    with pytest.raises(TablesError, match=r"fits\.csv differs from its checksum"):
        AnalysisTables.read(adir)
    assert not AnalysisTables.is_current(adir, run, "corrected")
    (adir / MANIFEST).unlink()  # tables written before the manifest: read unchecked
    assert AnalysisTables.read(adir).fits.shape[0] > 0
    (adir / FILES["claims"]).unlink()
    with pytest.raises(TablesError, match=r"incomplete: claims\.json is missing"):
        AnalysisTables.read(adir)


def test_the_one_staleness_rule(analysed: tuple[Path, AnalysisTables], tmp_path: Path) -> None:
    run = _copy(analysed, tmp_path)
    adir = run / "analysis"
    assert AnalysisTables.is_current(adir, run, "corrected")
    assert not AnalysisTables.is_current(adir, run, "faithful")  # made in the other mode
    later = max(p.stat().st_mtime for p in adir.iterdir()) + 10
    os.utime(run / "lines.zarr" / "zarr.json", (later, later))  # a line measured since
    assert not AnalysisTables.is_current(adir, run, "corrected")
    shutil.rmtree(run / "lines.zarr")  # without a store nothing can be redone: current
    assert AnalysisTables.is_current(adir, run, "corrected")
    (adir / MANIFEST).unlink()
    assert AnalysisTables.is_current(adir, run, "corrected")  # older tables, still the best
    (adir / FILES["fits"]).unlink()
    assert not AnalysisTables.is_current(adir, run, "corrected")


def test_optional_files_are_absent_not_damaged(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n_lines=6)
    tables = analyze_run(run, AnalysisRequest(batch_sizes=(8,), line_resamples=50, resamples=0))
    assert tables.bootstrap is None and tables.directions is None
    assert set(OPTIONAL) == {"bootstrap", "directions"}
    back = AnalysisTables.read(tables.directory)
    assert back.bootstrap is None and back.directions is None
    assert AnalysisTables.is_current(tables.directory, run, "corrected")
