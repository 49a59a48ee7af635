"""Signals without the `signal` module, which wraps them in IntEnums: `enum` costs ~2 ms at start-up."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Handler = Callable[[int, Any], None] | int

SIGHUP = 1
SIGINT = 2
SIGQUIT = 3
SIGUSR1 = 10
SIGUSR2 = 12
SIGKILL = 9
SIGPIPE = 13
SIGTERM = 15
SIGCHLD = 17
SIGCONT = 18
SIGTSTP = 20
SIGTTIN = 21
SIGTTOU = 22
SIGXFSZ = 25
SIGWINCH = 28
SIGPWR = 30
SIG_DFL = 0
SIG_IGN = 1


def signal(sig: int, handler: Handler) -> None:
    _signal.signal(sig, handler)


def set_wakeup_fd(fd: int) -> int:
    return int(_signal.set_wakeup_fd(fd, warn_on_full_buffer=False))


def reset(*sigs: int) -> None:
    for s in sigs:
        _signal.signal(s, SIG_DFL)


def strsignal(sig: int) -> str:
    return str(_signal.strsignal(sig) or sig)
