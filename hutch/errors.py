"""One exception tree for everything a user can be told. Imports nothing else of hutch."""

from __future__ import annotations


class HutchError(Exception):
    """An error with a one-line message and an optional hint; the CLI prints both and exits non-zero."""

    exit_status = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(HutchError):
    """The command line is malformed."""


class SettingsError(HutchError):
    """A settings value (option or .nspawn key) is invalid."""


class ImageError(HutchError):
    """An image is missing, malformed or in use."""


class MachineError(HutchError):
    """A machine is missing, already running or failed."""


class SetupError(HutchError):
    """Setting up the container failed."""


def io_hint(errno: int | None) -> str | None:
    """What to do about a failed write whose cause is the file system, not hutch: a full or read-only
    disk (errno values as numbers: this module imports nothing)."""
    if errno in (28, 122):  # ENOSPC, EDQUOT
        return "free space on that file system (or raise its quota), then try again"
    if errno == 30:  # EROFS
        return "that file system is mounted read-only"
    return None
