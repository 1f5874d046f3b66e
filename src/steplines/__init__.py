"""steplines: measure the loss along every update-step line of training (Mutschler & Zell 2021).

The public Python API, imported lazily so that ``steplines.analysis``, ``.store`` and
``.report`` stay importable without torch:

* :class:`LineProbe` — measure the lines of your own training loop (``steplines.probe``);
* :class:`Problem` — data, model factory and per-sample loss, e.g. ``Problem.from_tensors``,
  for ``steplines run --problem module:function`` (``steplines.problems.problem``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .probe import LineProbe
    from .problems.problem import Problem

__all__ = ["LineProbe", "Problem"]

_EXPORTS = {"LineProbe": "steplines.probe", "Problem": "steplines.problems.problem"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steplines' has no attribute {name!r}")
