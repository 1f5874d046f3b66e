"""Turn user-facing errors into one line on stderr and exit status 2 (no traceback)."""

from __future__ import annotations

import errno
import functools
import sys
import zlib
from collections.abc import Callable
from typing import Any

import click

from ..errors import SteplinesError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


# commands that measure lines; the others (analyze, report, export, ...) write files only
_MEASURING = {"run", "train", "measure"}


def _kept(command: str) -> str:
    """What an interrupted or failed ``command`` leaves: measured lines, or earlier files."""
    if command in _MEASURING:
        return "every line finished before this is kept"
    return "nothing half-written is left; earlier output is unchanged"


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    command = fn.__name__.replace("_cmd", "").replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..atomic import remove_own_temporaries

        try:
            return fn(*args, **kwargs)
        except SteplinesError as err:
            remove_own_temporaries()
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except OSError as err:
            remove_own_temporaries()
            if err.errno not in _DISK_ERRNOS:
                raise
            where = err.filename or "the run directory"
            click.echo(
                f"error: cannot write {where} ({err.strerror}); free space or fix permissions "
                f"and rerun — {_kept(command)}",
                err=True,
            )
            sys.exit(2)
        except zlib.error as err:  # a compressed file cut short by a full disk
            remove_own_temporaries()
            click.echo(
                f"error: cannot write a compressed file ({err}); the disk may be full: free "
                f"space and rerun — {_kept(command)}",
                err=True,
            )
            sys.exit(2)
        except KeyboardInterrupt:
            remove_own_temporaries()
            click.echo(f"interrupted; {_kept(command)} — rerun to continue", err=True)
            sys.exit(130)

    return wrapper
