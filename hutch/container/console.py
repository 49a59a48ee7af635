"""The container's console: a pty from the container's own devpts, forwarded by the supervisor.

The master is opened inside the container's fresh devpts instance, so /dev/console is a pty the guest
owns (getty can chown it); the slave is bind-mounted onto /dev/console, as nspawn does.
"""

from __future__ import annotations

import fcntl

from hutch.container import rootfs
from hutch.linux import libc
from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hutch.container.plan import Context

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCGPTPEER = 0x5441
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
TIOCSCTTY = 0x540E

HOTKEY = 0x1D  # Ctrl-]
HOTKEY_COUNT = 3
HOTKEY_WINDOW = 1.0


def open_console_pty(root_fd: int) -> tuple[int, int]:
    """Open a new pty in the container's devpts; returns (master, slave)."""
    master = rootfs.open_in_root(root_fd, "dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
    # TIOCGPTPEER opens the slave through the master, with no path lookup that a mount could redirect.
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    return master, slave


def mount_console(ctx: Context, mode: str) -> int:
    """A pty from the container's devpts, its slave bind-mounted on /dev/console; returns the master
    (-1 with MODE pipe)."""
    if mode == "pipe":
        return -1
    master, slave = open_console_pty(ctx.root_fd)
    target = ctx.target("dev/console", "file")
    try:
        libc.mount(
            f"/proc/self/fd/{slave}", f"/proc/self/fd/{target}", None, libc.MS_BIND, what="/dev/console"
        )
    finally:
        os.close(target)
        os.close(slave)
    return master


def raw_tty(fd: int) -> list[Any] | None:
    """Put the terminal FD in raw mode, for the console forwarded to it; its settings before, or None
    if FD is no terminal."""
    import termios
    import tty

    try:
        saved = termios.tcgetattr(fd)
        tty.setraw(fd)
    except termios.error:
        return None
    return saved


def restore_tty(fd: int, saved: list[Any]) -> None:
    import termios

    termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def copy_winsize(src: int, dst: int) -> None:
    try:
        ws = fcntl.ioctl(src, TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, TIOCSWINSZ, ws)
    except OSError:
        pass


class Hotkey:
    """Counts Ctrl-] presses; three within a second means 'kill the container'."""

    def __init__(self, now: float = 0.0) -> None:
        self.times: list[float] = []

    def feed(self, data: bytes, now: float) -> bool:
        for b in data:
            if b == HOTKEY:
                self.times = [t for t in self.times if now - t < HOTKEY_WINDOW] + [now]
                if len(self.times) >= HOTKEY_COUNT:
                    return True
            else:
                self.times = []
        return False


def write_all(fd: int, data: bytes) -> bool:
    """Write everything; False if the reader went away."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        except (BrokenPipeError, OSError):
            return False
        view = view[n:]
    return True


class RotatingLog:
    """The console log of a machine started with `hutch start`: appended to, and moved to PATH.1 once
    it passes CAP bytes, so it never grows without bound."""

    def __init__(self, path: str, cap: int = 1 << 20) -> None:
        self.path = path
        self.cap = cap
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes) -> bool:
        if self.size + len(data) > self.cap and self.size:
            os.close(self.fd)
            os.replace(self.path, self.path + ".1")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self.size = 0
        ok = write_all(self.fd, data)
        self.size += len(data)
        return ok
