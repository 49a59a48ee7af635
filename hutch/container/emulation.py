"""Signals for an init that runs under qemu-user (a foreign-architecture image through binfmt_misc).

qemu-user keeps the lowest host real-time signals for itself and hands the guest the rest, shifted:
the guest's signal T arrives when the host sends T + 2 + K, where K is how many qemu reserves past
glibc's two (0 up to 8.1, 1 from 8.2, which remaps SIGABRT; 2 from 10.0, which adds an interrupt
signal; measured: qemu 7.2 here delivers host 40 as the guest's 38). So the SIGRTMIN+4 that powers
systemd off would reach an emulated systemd as SIGRTMIN+2 and be taken for something else. Signals
below 32 pass unchanged. The version is read from the interpreter's file, never by running it: without
binfmt_misc's F flag, the path could name a file of the machine's.
"""

from __future__ import annotations

from hutch.linux import posixos as os

RT_FIRST = 32  # the kernel's first real-time signal, the target's and the host's
_READ_MAX = 64 << 20


def qemu_shift(pid: int) -> int:
    """How far the host's signal numbers for PID's real-time signals are above its own: 0 when PID
    is no emulated process (or its qemu says no version hutch knows)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return 0
    base = os.path.basename(exe)
    if not base.startswith("qemu-") and "binfmt" not in base:
        return 0
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if b"QEMU_RTSIG_MAP=" in f.read(1 << 20):
                return 0  # a map of the user's own: nothing to guess
        version = _version(f"/proc/{pid}/exe")
    except OSError:
        return 0
    if version is None:
        return 0
    return 2 + (2 if version >= (10, 0) else 1 if version >= (8, 2) else 0)


def _version(path: str) -> tuple[int, int] | None:
    """From the "qemu-ARCH version X.Y.Z" of the binary's usage text."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while len(data) < _READ_MAX and (chunk := os.read(fd, 1 << 20)):
            data = data[-64:] + chunk  # a match may straddle two chunks
            at = data.find(b" version ")
            while at >= 0:
                head = data[max(0, at - 40) : at]
                tail = data[at + 9 : at + 30]
                if b"qemu-" in head:
                    parts = tail.split(b".")
                    if len(parts) >= 2 and parts[0].isdigit():
                        minor = bytes(c for c in parts[1][:3] if 48 <= c <= 57)
                        if minor:
                            return int(parts[0]), int(minor)
                at = data.find(b" version ", at + 1)
    finally:
        os.close(fd)
    return None


def host_signal(pid: int, signo: int) -> int:
    """The host's number for PID's signal SIGNO."""
    if signo < RT_FIRST:
        return signo
    return signo + qemu_shift(pid)
