"""Reuse the synthetic-run builder of the analysis tests (tests/analysis/analysis_fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

_ANALYSIS_TESTS = str(Path(__file__).resolve().parents[1] / "analysis")
if _ANALYSIS_TESTS not in sys.path:
    sys.path.insert(0, _ANALYSIS_TESTS)
