"""How the report writes numbers, in one place: significant digits, percentages, intervals.

This module never imports torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steplines.errors import RunDirError

__all__ = ["fmt", "overshoot", "pct", "read_json", "span"]


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``—`` for None/NaN."""
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "—"
    return f"{v:.{digits}g}"


def pct(x: Any) -> str:
    """A share as a percentage with one decimal (``98.6 %``); ``—`` for None/NaN."""
    if x is None:
        return "—"
    v = float(x)
    return f"{100 * v:.1f} %" if math.isfinite(v) else "—"


def span(record: dict[str, Any], key: str, style: Callable[[Any], str] = fmt) -> str:
    """`` [low, high]`` of ``record[key + "_low"/"_high"]`` (the row bootstrap), or ``""``."""
    lo, hi = record.get(f"{key}_low"), record.get(f"{key}_high")
    if lo is None or hi is None:
        return ""
    return f" [{style(lo)}, {style(hi)}]"


def overshoot(d: pd.DataFrame) -> float | None:
    """Median of ``s_update / s_opt`` over lines with ``s_opt > 0`` (paper: ≈ 2 for λ = 0.1)."""
    if not {"s_update", "s_opt"} <= set(d.columns):
        return None
    s_opt = d.s_opt.to_numpy(float)
    s_upd = d.s_update.to_numpy(float)
    ok = np.isfinite(s_opt) & np.isfinite(s_upd) & (s_opt > 0)
    return float(np.median(s_upd[ok] / s_opt[ok])) if ok.any() else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a one-line :class:`RunDirError` when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} cannot be read ({exc}); delete it and rerun") from exc
    return data if isinstance(data, dict) else {}
