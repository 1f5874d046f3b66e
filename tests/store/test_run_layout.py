"""RunLayout: the paths of a run directory are those a real run writes, its config reader gives
the run's configuration, and neither needs torch (the analysis' and report's own imports are
checked in tests/analysis and tests/report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steplines.config import load_config
from steplines.errors import ConfigError, RunDirError
from steplines.store.run import RunLayout

REPO = Path(__file__).resolve().parents[2]


def _named(layout: RunLayout) -> dict[str, Path]:
    """Every top-level path the layout names (those of the default analysis and report)."""
    return {
        "config": layout.config_path,
        "provenance": layout.provenance_path,
        "provenance log": layout.provenance_log_path,
        "trajectory": layout.trajectory_path,
        "lines": layout.lines_path,
        "directions": layout.directions_path,
        "precision checks": layout.precision_checks_path,
        "live": layout.live_path,
        "tensorboard": layout.tensorboard_path,
        "locks": layout.locks_path,
        "analysis": layout.analysis_dir(),
        "figures": layout.figures_dir(),
        "report": layout.report_path(),
        "compare": layout.compare_path,
        "export": layout.export_path,
    }


def test_the_layout_names_every_file_a_run_writes(tiny_run: tuple[Path, Path]) -> None:
    from steplines.rundir import RunDir

    _, path = tiny_run
    layout = RunLayout(path)
    named = _named(layout)
    assert all(p.parent == path for p in named.values())
    assert len({p.name for p in named.values()}) == len(named)  # no two share a name
    written = {p.name for p in path.iterdir()}
    assert written <= {p.name for p in named.values()}, written
    for key in ("config", "provenance", "provenance log", "live"):
        assert named[key].is_file(), key
    assert layout.lines_path.is_dir() and (layout.lines_path / "zarr.json").is_file()
    assert layout.trajectory_meta_path.is_file()
    evals = layout.eval_paths()
    assert evals == sorted(layout.trajectory_path.glob("eval_*.json")) and evals
    assert layout.eval_path(4) in evals and layout.eval_path(3) not in evals  # checkpoints
    run = RunDir.open(path)
    assert run.layout == layout
    assert (run.lines_path, run.provenance_path) == (layout.lines_path, layout.provenance_path)
    assert run.trajectory.path == layout.trajectory_path


def test_analysis_and_report_paths_of_a_tagged_analysis(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert layout.analysis_dir() == tmp_path / "analysis"
    tagged = layout.analysis_dir("faithful-paper")
    assert tagged == tmp_path / "analysis-faithful-paper"
    assert layout.figures_dir(layout.analysis_dir()) == tmp_path / "figures"
    assert layout.figures_dir(tagged) == tagged / "figures"
    assert layout.report_path(None) == tmp_path / "report.html"
    assert layout.report_path(tagged) == tagged / "report.html"
    assert layout.segment_lock_path(40).parent == layout.train_lock_path.parent


def test_read_config_gives_the_runs_configuration(tiny_run: tuple[Path, Path]) -> None:
    cfg_file, path = tiny_run
    cfg = RunLayout(path).read_config()
    assert cfg == load_config(path=cfg_file)
    assert (cfg.train.steps, cfg.problem.train_size) == (10, 256)
    assert RunLayout(path).config_or_none() == cfg


def test_no_or_an_invalid_config(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert layout.config_or_none() is None
    with pytest.raises(RunDirError, match="not a steplines run directory"):
        layout.read_config()
    layout.config_path.write_text("[train]\nlr = -1\nsteps = 0\n")
    with pytest.raises(ConfigError, match=r"train\.lr.*train\.steps"):
        layout.config_or_none()
    layout.config_path.write_text('[train]\noptimizer = "nosuch"\n')
    assert layout.read_config().train.optimizer == "nosuch"  # the torch check is left out
    with pytest.raises(ConfigError, match="unknown optimizer"):
        layout.read_config(torch_checks=True)


def test_layout_and_its_config_reader_never_import_torch(tiny_run: tuple[Path, Path]) -> None:
    _, path = tiny_run
    code = (
        "import sys\n"
        "from steplines.store.run import RunLayout\n"
        "from steplines.analysis.settings import AnalysisRequest\n"
        f"cfg = RunLayout({str(path)!r}).read_config()\n"
        "assert cfg.train.steps == 10\n"
        "assert AnalysisRequest('faithful').tag(cfg) == 'faithful-paper'\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad[:5]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
