"""The one exception kdtune shows to users: a single line naming the cause and the fix."""

from __future__ import annotations


class KdtuneError(Exception):
    """A user-facing error. ``str(err)`` is one line: what went wrong, then how to fix it.

    The CLI prints it without a traceback and exits with ``exit_code``.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(KdtuneError):
    """A study file that cannot be used as written (exit code 2)."""

    exit_code = 2


class DataError(KdtuneError):
    """A dataset that cannot be loaded (missing files, wrong format)."""

    exit_code = 2


class TrainingError(KdtuneError):
    """Training that cannot go on, e.g. a loss that became NaN or infinite."""


class SweepInterrupted(KdtuneError):
    """A sweep stopped before all its trials ended (Ctrl-C); what finished is stored (exit code 130)."""

    exit_code = 130
