"""Atomic writes of the small files steplines keeps next to its stores.

Every small file (``config.toml``, ``provenance.json``, the trajectory's JSON, checkpoints and
records) is written through :func:`write_atomic`: the data goes to a temporary file in the same
directory, is flushed and fsynced, and is renamed over the target with :func:`os.replace`. A
killed process or a full disk therefore leaves either the old file or the new one, never a
cut-off file (a stray ``.NAME.PID.tmp`` of a killed process is harmless and removed by the
next write of NAME: :func:`temporary_path`).

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

__all__ = [
    "append_line",
    "process_alive",
    "read_json_lines",
    "remove_own_temporaries",
    "temporary_path",
    "watch_work_dirs",
    "write_atomic",
]

# temporaries this process has named, and directories where it may leave an analysis work
# directory (removed on Ctrl-C or an error by the CLI: remove_own_temporaries)
_OURS: set[Path] = set()
_WORK_DIRS: set[Path] = set()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def temporary_path(target: Path) -> Path:
    """A temporary name beside ``target`` that no other process uses: ``.NAME.PID.tmp``.

    Leftovers of processes that are gone (killed while writing ``target``) are removed first;
    the name is remembered so that :func:`remove_own_temporaries` can remove it when the
    command is interrupted. Rename the finished file over ``target`` with :func:`os.replace`.
    """
    target = Path(target)
    for old in target.parent.glob(f".{target.name}.*.tmp"):
        pid = old.name[len(target.name) + 2 : -4]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                old.unlink()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _OURS.add(tmp)
    return tmp


def watch_work_dirs(*directories: Path) -> None:
    """Let :func:`remove_own_temporaries` remove this process's analysis work directories
    (``.NAME.tmp-PID``) in ``directories`` (run directories the command analyses)."""
    _WORK_DIRS.update(Path(d) for d in directories)


def remove_own_temporaries() -> None:
    """Remove this process's temporaries (called when a command is interrupted or fails):
    every name :func:`temporary_path` gave out that was not renamed into place, and the
    analysis work directories ``.NAME.tmp-PID`` in the directories of
    :func:`watch_work_dirs`. Those of a killed process are removed by the next run."""
    import shutil

    for tmp in list(_OURS):
        with contextlib.suppress(OSError):
            tmp.unlink()
        _OURS.discard(tmp)
    for directory in _WORK_DIRS:
        for work in Path(directory).glob(f".*.tmp-{os.getpid()}"):
            shutil.rmtree(work, ignore_errors=True)


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
    tmp = temporary_path(path)  # a killed writer's leftover is removed here
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
    finally:
        _OURS.discard(tmp)
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
