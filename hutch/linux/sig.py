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

pidfd_send_signal: Callable[..., None] = _signal.pidfd_send_signal


def signal(sig: int, handler: Handler) -> None:
    _signal.signal(sig, handler)


def set_wakeup_fd(fd: int) -> int:
    return int(_signal.set_wakeup_fd(fd, warn_on_full_buffer=False))


def reset(*sigs: int) -> None:
    for s in sigs:
        _signal.signal(s, SIG_DFL)


def strsignal(sig: int) -> str:
    return str(_signal.strsignal(sig) or sig)


_SIGTIMEDWAIT = {"x86_64": 128, "aarch64": 137}  # rt_sigtimedwait's number


def taken(pid: int, signo: int) -> bool:
    """Whether PID, the PID 1 of a child PID namespace, would get SIGNO from outside it. Such a PID 1
    is sent only the signals it catches or blocks (systemd reads its own from a signalfd); any other is
    dropped, pid_namespaces(7). Waiting in sigtimedwait(2), as busybox init does, takes the set waited
    for out of SigBlk for the wait, while those signals are still taken: the set is read from its
    memory. In doubt, yes."""
    from hutch.linux import posixos as os

    try:
        masks = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigBlk:", "SigCgt:")):
                    masks |= int(line.split()[1], 16)
        with open(f"/proc/{pid}/syscall") as f:
            call = f.read().split()
        if call and call[0] == str(_SIGTIMEDWAIT.get(os.uname().machine)):
            mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            try:
                masks |= int.from_bytes(os.pread(mem, 8, int(call[1], 16)), "little")
            finally:
                os.close(mem)
        return bool(masks >> (signo - 1) & 1)
    except (OSError, ValueError, IndexError):
        return True
