"""The shape of the code the analysis → report half is built from: short functions.

A function of ``analysis/``, ``report/`` or ``plotting/`` that grows past 80 lines (from its
``def`` to the end of its body) is doing several jobs; split it into named steps.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "steplines"
MAX_LINES = 80


def _long_functions(package: str) -> list[str]:
    out = []
    for path in sorted((SRC / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    out.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    return out


@pytest.mark.parametrize("package", ["analysis", "report", "plotting"])
def test_no_function_over_80_lines(package: str) -> None:
    assert _long_functions(package) == []


def test_the_check_sees_a_long_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (pkg / "m.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    assert _long_functions("pkg") == [f"m.py:1 long ({MAX_LINES + 1} lines)"]
