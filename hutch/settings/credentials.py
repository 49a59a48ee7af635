"""--set-credential=ID:VALUE and --load-credential=ID:PATH (and their .nspawn keys): the data a guest
is provisioned with (root password, locale, ssh keys, firstboot.*), as nspawn passes it: a file per
credential in /run/host/credentials, named by $CREDENTIALS_DIRECTORY. Loaded only when used."""

from __future__ import annotations

from hutch.errors import UsageError
from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# systemd's CREDENTIAL_SIZE_MAX and CREDENTIALS_TOTAL_SIZE_MAX: a systemd PID 1 refuses to import more,
# and the credentials live in a ramfs, in memory that is never swapped.
SIZE_MAX = 1 << 20
TOTAL_MAX = 1 << 20
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34, "'": 39, "s": 32}


def name_valid(name: str) -> bool:
    """systemd's credential_name_valid(): a valid file name and a valid fd name."""
    return (
        0 < len(name) <= 255
        and name not in (".", "..")
        and "/" not in name
        and ":" not in name
        and all(0x20 < ord(c) < 0x7F for c in name)
    )


def cunescape(text: str) -> bytes:
    """The C escapes systemd's cunescape() takes (NUL included): \\n, \\xNN, \\NNN, \\uNNNN, ..."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("a backslash at the end")
        e = text[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e == "x" and _hex(text[i + 2 : i + 4], 2):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif e in "uU" and _hex(text[i + 2 : i + (6 if e == "u" else 10)], 4 if e == "u" else 8):
            width = 4 if e == "u" else 8
            code = int(text[i + 2 : i + 2 + width], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"\\{e}{text[i + 2 : i + 2 + width]} is no character")
            out += chr(code).encode()
            i += 2 + width
        elif (
            e in "01234567"
            and len(text[i + 1 : i + 4]) == 3
            and all(d in "01234567" for d in text[i + 1 : i + 4])
        ):
            code = int(text[i + 1 : i + 4], 8)
            if code > 0xFF:
                raise ValueError(f"\\{text[i + 1 : i + 4]} is more than a byte")
            out.append(code)
            i += 4
        else:
            raise ValueError(f"unknown escape \\{e}")
    return bytes(out)


def _hex(s: str, width: int) -> bool:
    return len(s) == width and all(c in "0123456789abcdefABCDEF" for c in s)


def _split(option: str, value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon:
        raise UsageError(
            f"Missing value for {option}: {value!r}",
            f"use {option}ID:{'VALUE' if 'set' in option else 'PATH'}",
        )
    if not name_valid(name):
        raise UsageError(
            f"Credential name is not valid: {name!r}",
            "a file name of printable ASCII, without '/' or ':', at most 255 characters",
        )
    return name, rest


def _add(creds: list[tuple[str, bytes]], name: str, data: bytes) -> None:
    if any(n == name for n, _ in creds):
        raise UsageError(f"Duplicate credential '{name}', refusing.")
    if len(data) > SIZE_MAX:
        raise UsageError(f"Credential '{name}' is larger than {SIZE_MAX >> 10} KiB.", "as systemd's may be")
    if sum(len(d) for _, d in creds) + len(data) > TOTAL_MAX:
        raise UsageError(
            f"Credentials exceed {TOTAL_MAX >> 10} KiB in all with '{name}'.", "as systemd's may not"
        )
    creds.append((name, data))


def set_credential(creds: list[tuple[str, bytes]], value: str) -> None:
    name, text = _split("--set-credential=", value)
    try:
        data = cunescape(text)
    except ValueError as e:
        raise UsageError(f"Failed to unescape credential data of '{name}': {e}.") from None
    _add(creds, name, data)


def load_credential(creds: list[tuple[str, bytes]], value: str) -> None:
    """PATH is a file (or an AF_UNIX socket to read from), or the name of one of our own credentials,
    when hutch itself runs with $CREDENTIALS_DIRECTORY (a unit's LoadCredential=)."""
    name, path = _split("--load-credential=", value)
    if "/" not in path:
        if not name_valid(path):
            raise UsageError(
                f"Credential source appears to be neither a valid path nor a credential name: {path!r}"
            )
        base = os.getenv("CREDENTIALS_DIRECTORY")
        if not base:
            raise UsageError(
                f"Credential not available (no credentials passed at all): {name}",
                "name a file: --load-credential=ID:/PATH",
            )
        path = os.path.join(base, path)
    _add(creds, name, _read(name, path))


def _read(name: str, path: str) -> bytes:
    try:
        kind = os.stat(path).st_mode & 0o170000
        if kind == 0o140000:  # a socket
            import socket

            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
                sock.shutdown(socket.SHUT_WR)
                return _bounded(sock.recv)
        if kind == 0o040000:
            raise IsADirectoryError(21, "Is a directory")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            return _bounded(lambda n: os.read(fd, n))
        finally:
            os.close(fd)
    except OSError as e:
        raise UsageError(f"Failed to read credential '{name}' from {path}: {e.strerror}.") from None


def _bounded(read: Callable[[int], bytes]) -> bytes:
    """Up to just past SIZE_MAX (enough for _add to refuse it): /dev/zero must not fill memory."""
    chunks, size = [], 0
    while size <= SIZE_MAX and (chunk := read(65536)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
