"""The static HTML report of one or several runs (``docs/report.md``).

Entry point: :func:`build_report`. This package never imports torch.
"""

from __future__ import annotations

from steplines.report.build import RunData, build_report, build_run_report, core_results, load_run
from steplines.report.paper import match_preset, paper_values

__all__ = [
    "RunData",
    "build_report",
    "build_run_report",
    "core_results",
    "load_run",
    "match_preset",
    "paper_values",
]
