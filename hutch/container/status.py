"""The status pipe: how the children that set a container up tell the supervisor what failed.

A child writes one line, "E message<TAB>hint", before it exits; the supervisor turns the line back into
the SetupError the user sees. Messages may hold paths from the command line, which may be bytes that
are not UTF-8: they travel as surrogate escapes both ways, and the CLI escapes them for the terminal.
"""

from __future__ import annotations

import sys

from hutch.errors import HutchError, SetupError
from hutch.linux import posixos as os


def report(fd: int, e: BaseException) -> None:
    """E on the status pipe FD, as one line."""
    if os.getenv("HUTCH_DEBUG") and "traceback" in sys.modules:
        sys.modules["traceback"].print_exception(e)
    if isinstance(e, HutchError):
        msg = e.message + (f"\t{e.hint}" if e.hint else "")
    elif isinstance(e, OSError):
        msg = str(e.strerror or e)
        if e.filename is not None and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
    else:
        msg = f"{type(e).__name__}: {e}"
    try:
        # A path from the command line may hold bytes that are not UTF-8 (surrogate escapes here).
        os.write(fd, ("E " + msg.replace("\n", " ") + "\n").encode("utf-8", "surrogateescape"))
    except OSError:
        pass


def error_from(text: str, default: str = "container setup failed") -> SetupError:
    """The error a child reported on a status pipe ("E message<TAB>hint")."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    message, _, hint = (first[2:] if first.startswith("E ") else first).partition("\t")
    return SetupError(message or default, hint or None)


def read_line(fd: int) -> str:
    """One line from FD, read a byte at a time: what follows it is not ours to take."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="surrogateescape").rstrip("\n")


def drain(fd: int) -> str:
    """Everything left on FD, up to its end."""
    out = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return out.decode(errors="surrogateescape")
        out += chunk
