"""Atomic writes of the small files steplines keeps next to its stores.

Every small file (``config.toml``, ``provenance.json``, the trajectory's JSON, checkpoints and
records) is written through :func:`write_atomic`: the data goes to a temporary file in the same
directory, is flushed and fsynced, and is renamed over the target with :func:`os.replace`. A
killed process or a full disk therefore leaves either the old file or the new one, never a
cut-off file (a stray ``.NAME.*.tmp`` is harmless and removed by the next write of NAME).

:func:`append_line` appends one line to a log in a single ``write`` (lines of concurrent
writers do not interleave); readers ignore a torn last line (:func:`read_json_lines`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["append_line", "read_json_lines", "write_atomic"]


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes | str | Callable[[IO[bytes]], Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, :func:`os.replace`).

    Args:
        path: the target file; its directory must exist.
        data: the bytes or text (UTF-8) to write, or a function that writes into the open
            binary file (e.g. ``lambda f: torch.save(state, f)``).

    Raises:
        OSError: the file cannot be written (the target is left as it was).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` in a single ``write`` (then fsync)."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; undecodable lines (a torn last line) are skipped."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
