"""Text the ``steplines`` command parses: ``--shard i/n``, line ranges, the backend."""

from __future__ import annotations

from ..errors import ConfigError
from ..schedule import parse_steps


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 ≤ i < n``; a bad value raises :class:`ConfigError`."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r} must be i/n with 0 <= i < n, e.g. 0/4")
    return i, n


def parse_lines(text: str, n_lines: int) -> list[int]:
    """``--redo "3,17-20"`` → ``[3, 17, 18, 19, 20]`` (:func:`steplines.schedule.parse_steps`)."""
    return parse_steps(text, n_lines, "--redo", "lines", "3,17-20")


def parse_backend(backend: str | None, old_spelling: str | None) -> str:
    """``measure --backend local|ray``; ``--engine local|ray`` is its old spelling, still
    accepted (hidden), since ``--engine`` names fast|reference under ``run``.

    Raises:
        ConfigError: both spellings, with different values.
    """
    if backend is not None and old_spelling is not None and backend != old_spelling:
        raise ConfigError(
            f"--backend {backend} and --engine {old_spelling} disagree; give --backend only"
        )
    return backend or old_spelling or "local"
