"""User-facing errors.

Every mistake a user can make (bad config, missing data, a run directory from another
configuration, a diverging run) raises a :class:`SteplinesError` subclass whose message is one
line that names the problem and the fix. The CLI prints it as ``error: <message>`` and exits
with status 2, without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class SteplinesError(Exception):
    """A user-facing error: ``str(err)`` is one line naming the problem and the fix."""


class ConfigError(SteplinesError):
    """Invalid, unknown or inconsistent configuration."""


class DataError(SteplinesError):
    """A data set is missing, incomplete, corrupt or cannot be downloaded."""


class RunDirError(SteplinesError):
    """A run directory is missing, locked, or was made with another configuration."""


class DivergenceError(SteplinesError):
    """Training produced a non-finite loss."""


class ReplayMismatchError(SteplinesError):
    """Replaying a segment did not reproduce the recorded checkpoint."""
