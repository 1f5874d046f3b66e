"""The static HTML report of one or several runs (``docs/report.md``), drawn from their
analysis tables alone.

:mod:`~steplines.report.data` holds what a run's page draws from (:class:`RunData`),
:mod:`~steplines.report.sections` its numbers and text, :mod:`~steplines.report.figures` the
registry of its figures, :mod:`~steplines.report.page` draws them and writes the page and
:mod:`~steplines.report.compare` the page of several runs. Deciding what to analyse first is
not this package's job: the entry point is :func:`steplines.reporting.build_report`. This
package never imports torch.
"""

from __future__ import annotations

from steplines.report.data import RunData
from steplines.report.page import build_run_report
from steplines.report.paper import match_preset, paper_values
from steplines.report.sections import claims_text, core_results

__all__ = [
    "RunData",
    "build_run_report",
    "claims_text",
    "core_results",
    "match_preset",
    "paper_values",
]
