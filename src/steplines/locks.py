"""Advisory locks that keep two uncoordinated writers out of the same part of a run.

A writer locks every segment it is about to measure (``RUN/locks/segment_<c>.lock``) and the
trajectory while it trains (``train.lock``). Locks are POSIX ``fcntl`` record locks (they work on
local file systems and on NFS with lock support) and are released by the kernel when the
process dies, so a SIGKILL never leaves a stale lock. Disjoint shards take disjoint locks and
run at once; overlapping writers are refused at once with a one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import RunDirError
from .store.run import RunLayout


class Locks:
    """A set of held lock files; release them with :meth:`release` (or ``with``)."""

    def __init__(self) -> None:
        self._held: list[tuple[int, Path]] = []

    def acquire(self, path: Path, what: str) -> None:
        """Take the lock at ``path`` without waiting; :class:`RunDirError` if it is held.

        The file is removed again on :meth:`release` (``locks/`` is empty when nothing runs).
        A lock taken on a file that its holder removed meanwhile is retried on the new file,
        so two processes never both hold "the" lock of one path.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    raise RunDirError(
                        f"{what} is being written by another process (pid {holder}); wait for "
                        "it to finish, or measure a disjoint --shard"
                    ) from None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed this file while we opened it
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._held.append((fd, path))

    def release(self) -> None:
        """Release every held lock and remove its file."""
        for fd, path in self._held:
            with contextlib.suppress(OSError):
                path.unlink()  # still locked: nobody can hold this file's lock meanwhile
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held.clear()

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_locks(run_path: Path) -> list[str]:
    """Names of the lock files under ``RUN/locks/`` that a live process holds now.

    A file a killed writer left behind is not held (the kernel released its lock), so this
    says whether a run is being trained or measured at this moment. Never blocks.
    """
    held = []
    for path in sorted(RunLayout(run_path).locks_path.glob("*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EAGAIN):
                held.append(path.name)
        finally:
            os.close(fd)
    return held


@contextlib.contextmanager
def segment_locks(run_path: Path, starts: Iterable[int]) -> Iterator[Locks]:
    """Hold the locks of the segments starting at ``starts`` for the ``with`` block."""
    with Locks() as locks:
        for c in starts:
            locks.acquire(
                RunLayout(run_path).segment_lock_path(c),
                f"segment starting at step {c} of {run_path}",
            )
        yield locks


@contextlib.contextmanager
def train_lock(run_path: Path) -> Iterator[Locks]:
    """Hold the trajectory lock for the ``with`` block."""
    with Locks() as locks:
        locks.acquire(RunLayout(run_path).train_lock_path, f"the trajectory of {run_path}")
        yield locks
