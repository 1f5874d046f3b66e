"""Live per-line metrics of a run that is still measuring: ``RUN/live.jsonl``.

As each line is written to the store (``steplines run``/``measure`` and ``LineProbe``), its
summary is appended to ``RUN/live.jsonl`` as one JSON object per line of text, and shown in the
progress bar. ``tail -f RUN/live.jsonl`` follows a run; :func:`read_live` reads the file. With
the optional ``tensorboard`` extra installed, the same numbers are written as TensorBoard
scalars under ``RUN/tensorboard/`` (``tensorboard --logdir RUN/tensorboard``).

A record (:func:`line_summary`) holds, for line t, computed from the full-batch mean line
``l(s)`` (mean of the N training rows, float64, as the store computes ``train_mean``):

* ``t``; ``s_opt`` and ``l_opt``: the first minimum of ``l`` over all measured positions
  (:func:`steplines.analysis.strategies.first_argmin`, the analysis' ``s_opt`` in its default
  ``corrected`` mode); ``l0 = l(0)``; ``s_update`` and ``l_update = l(s_update)``
  (:func:`~steplines.analysis.strategies.evaluate_line`); ``ratio = s_update / s_opt``;
* ``fit2_mae``: MAE of the least-squares parabola over the positions with
  ``|s| ≤ 2·|s_opt|`` (:func:`steplines.analysis.shape.polynomial_fits`), and ``fit2_rel``:
  that MAE over the line's range on the same window. **A live indication only**: the analysis
  fits on its own window (``--scale``) and recomputes everything from the store;
* ``lambda_opt = s_opt / direction_norm`` (the analysis' λ*_t = s_opt/‖m_t‖; s_opt/‖g_t‖ for SGD
  without momentum) and ``lambda_g = s_opt / ‖g_t‖``;
* ``direction_norm``, ``grad_norm``, ``directional_derivative``, ``lr``, ``batch_loss``,
  ``n_positions``, the cheap estimator inputs ``est_*`` the line has (null where not
  measured), ``seconds`` (time spent measuring the line; null for a record filled in
  afterwards from the store) and ``time`` (Unix time of the record).

NaN and infinities are written as ``null``. Crash safety: each record is one ``write`` of a
whole line in append mode followed by ``flush`` + ``fsync``, so a killed process (SIGKILL
included) leaves whole records; a torn last record (power loss, full disk) is ignored on read,
and the next writer starts on a fresh line. A line measured again (``--redo``, a resumed
record) appends a new record: :func:`read_live` keeps the **last record per t**.

This module never imports torch (TensorBoard's writer is imported only when it is used).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steplines.analysis.shape import polynomial_fits, window_range
from steplines.analysis.strategies import evaluate_line, first_argmin
from steplines.store.run import LIVE, TENSORBOARD, RunLayout
from steplines.store.schema import ESTIMATOR_ARRAYS

__all__ = [
    "LIVE_FILE",
    "TENSORBOARD_DIR",
    "LineProgress",
    "LiveLog",
    "line_summary",
    "read_live",
    "tensorboard_available",
]

LIVE_FILE = LIVE
"""Name of the live file inside a run directory (``RunLayout.live_path``)."""

TENSORBOARD_DIR = TENSORBOARD
"""Name of the TensorBoard log directory inside a run directory (``RunLayout.tensorboard_path``)."""

ESTIMATOR_FIELDS = ESTIMATOR_ARRAYS
"""The estimator inputs a record carries, under the store's names."""

RENAMED_FIELDS = {"update_norm": "direction_norm"}
"""Fields of records written before the line store's schema 3, and their current names:
:func:`read_live` returns them under the current name."""

SCALAR_FIELDS = (
    "s_opt",
    "l_opt",
    "l0",
    "s_update",
    "l_update",
    "ratio",
    "fit2_mae",
    "fit2_rel",
    "lambda_opt",
    "lambda_g",
    "seconds",
)
"""The fields also written as TensorBoard scalars (tag ``line/<field>``, step t)."""


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON null) for NaN, ±inf and None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def line_summary(
    t: int,
    positions: np.ndarray,
    train_mean: np.ndarray,
    scalars: Mapping[str, Any],
    seconds: float | None = None,
) -> dict[str, Any]:
    """The live record of line t (see the module docstring for every field).

    Args:
        t: the step.
        positions: float ``[k]`` positions s of the line (NaN padding is ignored).
        train_mean: float ``[k]`` the full-batch mean line at ``positions``.
        scalars: the line's scalars by store name (``s_update``, ``direction_norm``,
            ``grad_norm``, ``directional_derivative``, ``lr``, ``batch_loss``, ``est_*``);
            missing ones are null.
        seconds: time spent measuring the line, if known.

    Returns:
        A JSON-able dict (non-finite numbers are None).
    """
    pos = np.asarray(positions, dtype=np.float64)
    mean = np.asarray(train_mean, dtype=np.float64)
    ok = np.isfinite(pos)
    pos, mean = pos[ok], mean[ok]
    s_opt, l_opt = first_argmin(pos, mean)
    s_upd = float(scalars.get("s_update", math.nan))
    l0 = float(evaluate_line(pos, mean, 0.0)[0])
    l_upd = float(evaluate_line(pos, mean, s_upd)[0])
    fit, fit_rel = math.nan, math.nan
    if math.isfinite(s_opt) and s_opt != 0:
        w = 2.0 * abs(s_opt)
        mae, _ = polynomial_fits(pos[None], mean[None], w, degrees=(2,))
        fit = float(mae[0, 0])
        fit_rel = _ratio(fit, float(window_range(pos[None], mean[None], w)[0]))
    direction_norm = float(scalars.get("direction_norm", math.nan))
    grad_norm = float(scalars.get("grad_norm", math.nan))
    record: dict[str, Any] = {
        "t": int(t),
        "s_opt": s_opt,
        "l_opt": l_opt,
        "l0": l0,
        "s_update": s_upd,
        "l_update": l_upd,
        "ratio": _ratio(s_upd, s_opt),
        "fit2_mae": fit,
        "fit2_rel": fit_rel,
        "lambda_opt": _ratio(s_opt, direction_norm),
        "lambda_g": _ratio(s_opt, grad_norm),
        "direction_norm": direction_norm,
        "grad_norm": grad_norm,
        "directional_derivative": scalars.get("directional_derivative"),
        "lr": scalars.get("lr"),
        "batch_loss": scalars.get("batch_loss"),
        "n_positions": int(pos.size),
        **{name: scalars.get(name) for name in ESTIMATOR_FIELDS},
        "seconds": seconds,
        "time": time.time(),
    }
    return {
        k: (v if isinstance(v, (int, str)) and not isinstance(v, bool) else _num(v))
        for k, v in record.items()
    }


def record_summary(t: int, record: Any, seconds: float | None = None) -> dict[str, Any]:
    """:func:`line_summary` of a :class:`~steplines.store.LineRecord` (the mean line in
    float64 over its training rows, as the store computes ``train_mean``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.asarray(record.train_losses, dtype=np.float64).mean(axis=0)
    names = ("s_update", "direction_norm", "grad_norm", "directional_derivative", "lr")
    scalars = {n: getattr(record, n) for n in (*names, "batch_loss", *ESTIMATOR_FIELDS)}
    return line_summary(t, record.positions, mean, scalars, seconds)


def postfix(summary: Mapping[str, Any]) -> dict[str, str]:
    """A few short fields of a record for a progress bar's postfix."""

    def f(key: str) -> str:
        v = summary.get(key)
        return "-" if v is None else f"{v:.3g}"

    return {
        "t": str(summary.get("t")),
        "s_opt": f("s_opt"),
        "upd/opt": f("ratio"),
        "l0": f("l0"),
        "fit2": f("fit2_rel"),
    }


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class LiveLog:
    """Appends line summaries to ``RUN/live.jsonl`` (and to TensorBoard when installed).

    Args:
        run_dir: the run directory.
        tensorboard: write TensorBoard scalars under ``RUN/tensorboard/``; None (default) =
            when the ``tensorboard`` package is installed.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool | None = None) -> None:
        layout = RunLayout(Path(run_dir))
        self.path = layout.live_path
        self._tb_dir = layout.tensorboard_path
        self._tb_wanted = tensorboard_available() if tensorboard is None else tensorboard
        self._tb: Any = None
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Start on a fresh line if the file ends in a torn record (the reader skips it)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        except FileNotFoundError:
            return
        if torn:
            self._write(b"\n")

    def _write(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write per record: concurrent shards do not interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def known(self) -> set[int]:
        """The steps t that already have a record."""
        return {int(r["t"]) for r in read_live(self.path)}

    def append(self, summary: Mapping[str, Any]) -> None:
        """Append one record (flush + fsync) and, if enabled, its TensorBoard scalars."""
        line = json.dumps(dict(summary), allow_nan=False, separators=(",", ":")) + "\n"
        self._write(line.encode("utf-8"))
        if self._tb_wanted:
            self._tensorboard(summary)

    def _tensorboard(self, summary: Mapping[str, Any]) -> None:
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self._tb_dir))
        t = int(summary["t"])
        for name in SCALAR_FIELDS:
            value = summary.get(name)
            if value is not None:
                self._tb.add_scalar(f"line/{name}", float(value), t)
        self._tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer, if one was opened (idempotent)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_live(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``live.jsonl`` (or the run directory holding one): the records, ascending t.

    A line that is not a whole JSON object with an integer ``t`` (a torn record left by a
    crash) is skipped; of several records of one t (a line measured again) the last one in
    the file is kept. A missing file reads as no records. Fields of records written by older
    steplines are returned under their current names (:data:`RENAMED_FIELDS`). Needs neither
    torch nor numpy.
    """
    path = Path(path)
    if path.is_dir():
        path = RunLayout(path).live_path
    records: dict[int, dict[str, Any]] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("t"), int):
            records[rec["t"]] = {RENAMED_FIELDS.get(k, k): v for k, v in rec.items()}
    return [records[t] for t in sorted(records)]


class LineProgress:
    """A tqdm progress bar over lines whose ETA comes from measured per-line times.

    tqdm's own rate is replaced by the mean of the last ``window`` per-line times (the first
    line, which pays for warm-up such as worker start or compilation, is dropped once a second
    one is measured); the postfix shows the ETA, seconds per line and the last line's summary.

    Args:
        total: lines to measure.
        desc: the bar's label.
        enabled: False: no output at all.
        window: how many recent per-line times the ETA averages.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, window: int = 10) -> None:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.total = total
        self.done = 0
        self.times: deque[float] = deque(maxlen=window + 1)
        self.bar = tqdm(
            total=total,
            desc=desc,
            disable=not enabled or total == 0,
            unit="line",
            mininterval=0.5 if tty else 30.0,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    def per_line(self) -> float | None:
        """Mean of the recent per-line times (without the first line once there are two)."""
        times = list(self.times)
        if self.done > 1:  # the first line (warm-up) or the oldest, beyond the window
            times = times[1:]
        return sum(times) / len(times) if times else None

    def eta(self) -> float | None:
        """Seconds left: remaining lines × :meth:`per_line` (None before the first line)."""
        per = self.per_line()
        return None if per is None else per * max(0, self.total - self.done)

    def update(self, seconds: float, summary: Mapping[str, Any] | None = None) -> None:
        """One line done, which took ``seconds``; show its summary."""
        self.times.append(seconds)
        self.done += 1
        fields: dict[str, str] = {}
        eta, per = self.eta(), self.per_line()
        if eta is not None and per is not None:
            fields["eta"] = _clock(eta)
            fields["s/line"] = f"{per:.3g}"
        if summary is not None:
            fields.update(postfix(summary))
        self.bar.set_postfix(fields, refresh=False)
        self.bar.update()
        if self.done >= self.total:
            self.close()

    def close(self) -> None:
        """Close the bar."""
        with contextlib.suppress(Exception):
            self.bar.close()


def _clock(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
