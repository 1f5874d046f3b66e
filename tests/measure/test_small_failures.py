"""Smaller defects: empty redo ranges, sys.exit in a user's problem, lock files, a killed
training's missing store."""

from __future__ import annotations

from pathlib import Path

import pytest

from steplines.cli.parsing import parse_lines
from steplines.errors import ConfigError
from steplines.locks import segment_locks, train_lock
from steplines.problems.problem import load_problem_factory


def test_an_empty_redo_range_is_an_error() -> None:
    with pytest.raises(ConfigError, match="5-3 is an empty range; write 3-5"):
        parse_lines("5-3", 10)
    with pytest.raises(ConfigError, match="give lines like"):
        parse_lines(",", 10)
    assert parse_lines("3-5,1", 10) == [1, 3, 4, 5]


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nsys.exit(0)\n",
        "import sys\ndef make_problem():\n    sys.exit(0)\n",
    ],
)
def test_a_problem_that_exits_is_an_error_not_a_silent_success(tmp_path: Path, code: str) -> None:
    (tmp_path / "quits.py").write_text(code)
    with pytest.raises(ConfigError, match="SystemExit: 0"):
        load_problem_factory(f"{tmp_path / 'quits.py'}:make_problem")


def test_locks_leave_no_files(tmp_path: Path) -> None:
    with segment_locks(tmp_path, [0, 4]), train_lock(tmp_path):
        assert len(list((tmp_path / "locks").iterdir())) == 3
    assert list((tmp_path / "locks").iterdir()) == []
    with segment_locks(tmp_path, [0]):  # taken again after the files were removed
        assert (tmp_path / "locks" / "segment_0000000.lock").read_text().isdigit()
