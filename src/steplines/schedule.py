"""Which steps of a run get a line: the line schedule (no torch).

``steplines run`` measures every step. :class:`~steplines.probe.LineProbe` measures the steps
its ``schedule`` selects and records the schedule's text in ``config.toml``
(``[probe] schedule``); :func:`schedule_mask` turns either form back into a mask, so the
analysis and the report can tell a line the schedule skipped from one that is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .errors import ConfigError

__all__ = ["Schedule", "parse_steps", "schedule_mask"]

Schedule = str | int | Iterable[int] | Callable[[int], bool]


def schedule_mask(schedule: Schedule, steps: int) -> tuple[np.ndarray, str]:
    """Which of ``steps`` steps get a line, and the schedule's text for ``config.toml``.

    Args:
        schedule: ``"all"``; ``k`` or ``"every:k"`` (steps 0, k, 2k, …); ``"log:n"`` (about n
            log-spaced steps from 0 to ``steps − 1``, both included: the distinct values of
            ``round(geomspace(1, steps, n)) − 1``); ``"steps:a,b,…"`` (the text this function
            returns for the two forms below; steps outside ``0..T−1`` are dropped, so a text
            read back from a run's config never fails on them); an iterable of step indices;
            or a function ``t → bool``.
        steps: T, the number of training steps.

    Returns:
        ``(mask bool [T], text)``; ``schedule_mask(text, steps)`` gives the same mask.

    Raises:
        ConfigError: an unknown form, a non-positive k or n, or (iterable) steps outside
            ``0..T−1``.
    """
    if isinstance(schedule, str):
        return _text_mask(schedule, steps)
    if isinstance(schedule, int) and not isinstance(schedule, bool):
        return schedule_mask(f"every:{schedule}", steps)
    mask = np.zeros(steps, dtype=bool)
    if callable(schedule):
        mask[:] = [bool(schedule(t)) for t in range(steps)]
    else:
        mask[_listed_steps(schedule, steps)] = True
    return mask, _steps_text(mask)


def _text_mask(schedule: str, steps: int) -> tuple[np.ndarray, str]:
    """:func:`schedule_mask` of a schedule's text: ``"all"``, ``"every:k"``, ``"log:n"`` or
    ``"steps:a,b,…"``.

    Raises:
        ConfigError: an unknown form or a non-positive k or n.
    """
    mask = np.zeros(steps, dtype=bool)
    kind, _, arg = schedule.partition(":")
    if kind == "steps" and (ts := _step_list(arg)) is not None:
        mask[ts[(ts >= 0) & (ts < steps)]] = True
        return mask, _steps_text(mask)
    try:
        n = int(arg) if arg else 0
    except ValueError:
        n = 0
    if kind == "all" and not arg:
        mask[:] = True
        return mask, "all"
    if kind in ("every", "log") and n > 0:
        if kind == "every":
            mask[::n] = True
        elif steps > 0:
            ts = np.unique(np.round(np.geomspace(1, steps, n)).astype(np.int64) - 1)
            mask[ts] = True
        return mask, f"{kind}:{n}"
    raise ConfigError(
        f"schedule {schedule!r}: use 'all', 'every:K', 'log:N' (K, N > 0), a list of "
        "steps or a function t -> bool"
    )


def _step_list(arg: str) -> np.ndarray | None:
    """The steps of ``"a,b,…"`` (int64, in the given order; empty items skipped), None if one
    is not an integer."""
    try:
        return np.asarray([int(v) for v in arg.split(",") if v.strip()], dtype=np.int64)
    except ValueError:
        return None


def _listed_steps(schedule: Iterable[int], steps: int) -> np.ndarray:
    """The distinct steps of an iterable, sorted (int64).

    Raises:
        ConfigError: a step outside ``0..steps−1``.
    """
    ts = np.asarray(sorted(set(int(t) for t in schedule)), dtype=np.int64)
    if ts.size and (ts[0] < 0 or ts[-1] >= steps):
        raise ConfigError(f"schedule: steps must lie in 0..{steps - 1}")
    return ts


def _steps_text(mask: np.ndarray) -> str:
    """``"steps:a,b,…"``: the text of a mask's steps, which :func:`schedule_mask` reads back."""
    return "steps:" + ",".join(str(int(t)) for t in np.flatnonzero(mask))


def parse_steps(text: str, n_lines: int, option: str, noun: str, example: str) -> list[int]:
    """``"3,17-20"`` → ``[3, 17, 18, 19, 20]``: the steps a command-line option names.

    Args:
        text: comma-separated steps and inclusive ranges ``a-b``.
        n_lines: steps must lie in ``0 .. n_lines-1``.
        option, noun, example: how the error messages name the option (``--redo``), what it
            lists (``lines``) and an example (``3,17-20``).

    Raises:
        ConfigError: not a list of steps and ranges, an empty range such as ``5-3``, no step
            at all, or steps outside ``0 .. n_lines-1`` — one line each.
    """
    out: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, _, b = part.partition("-")
            lo, hi = int(a), int(b or a)
            if hi < lo:
                raise ConfigError(f"{option} {text!r}: {part} is an empty range; write {hi}-{lo}")
            out.update(range(lo, hi + 1))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give {noun} like {example}") from None
    if not out:
        raise ConfigError(f"{option} {text!r}: give {noun} like {example}")
    if bad := sorted(t for t in out if not 0 <= t < n_lines):
        raise ConfigError(f"{option}: {noun} {bad[:5]} are outside 0..{n_lines - 1}")
    return sorted(out)
