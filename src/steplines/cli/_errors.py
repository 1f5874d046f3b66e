"""Turn user-facing errors into one line on stderr and exit status 2 (no traceback)."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import SteplinesError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SteplinesError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except OSError as err:
            if err.errno not in _DISK_ERRNOS:
                raise
            where = err.filename or "the run directory"
            click.echo(
                f"error: cannot write {where} ({err.strerror}); free space or fix permissions "
                "and rerun — every line finished before this is kept",
                err=True,
            )
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; every finished line is kept — rerun to continue", err=True)
            sys.exit(130)

    return wrapper
