"""The part of `os` that spawn's start-up path uses, taken from `posix` directly.

`import os` costs 0.8-1.6 ms on this kind of machine although it is frozen: its body builds
os.environ as a MutableMapping, which loads _collections_abc and creates two dozen ABCs. That is
more than any module of hutch's own, on a path where a whole container start takes ~20 ms. The
modules on that path import this module as `os`. Its functions are the C functions that `os`
re-exports from `posix`. The few that `os` writes in Python (os.path, makedirs, walk, fsencode,
getenv) are here, for str paths, as hutch uses them. Modules off that path keep the real `os`;
both read the one process environment: os.environ writes through to posix.environ.
"""

from __future__ import annotations

import sys
from posix import *  # noqa: F403
from posix import _exit as _exit
from posix import close as _close
from posix import environ as _environb
from posix import getcwd, lstat, mkdir, open, readlink, scandir, stat

# posix.environ is keyed by bytes, where os.environ's keys are str: reading it by a str key would find
# nothing, silently. The environment is read through getenv() here.
del environ  # noqa: F821

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

_S_IFMT, _S_IFDIR, _S_IFREG = 0o170000, 0o040000, 0o100000
_O_PATH = 0o10000000
_O_CLOEXEC = 0o2000000


def fsencode(filename: str) -> bytes:
    return filename.encode(sys.getfilesystemencoding(), "surrogateescape")


def fsdecode(b: bytes) -> str:
    return b.decode(sys.getfilesystemencoding(), "surrogateescape")


_fsdecode = fsdecode


def getenv(key: str) -> str | None:
    v = _environb.get(fsencode(key))
    return None if v is None else _fsdecode(v)


def _is(p: str, kind: int, follow: bool = True) -> bool:
    try:
        mode = (stat(p) if follow else lstat(p)).st_mode
    except (OSError, ValueError):
        return False
    return kind == 0 or mode & _S_IFMT == kind


class path:
    """posixpath's functions that hutch uses, for str paths, with the same results."""

    @staticmethod
    def join(a: str, *p: str) -> str:
        out = a
        for b in p:
            if b.startswith("/"):
                out = b
            elif not out or out.endswith("/"):
                out += b
            else:
                out += "/" + b
        return out

    @staticmethod
    def split(p: str) -> tuple[str, str]:
        i = p.rfind("/") + 1
        head, tail = p[:i], p[i:]
        if head and head != "/" * len(head):
            head = head.rstrip("/")
        return head, tail

    @staticmethod
    def dirname(p: str) -> str:
        return path.split(p)[0]

    @staticmethod
    def basename(p: str) -> str:
        return p[p.rfind("/") + 1 :]

    @staticmethod
    def normpath(p: str) -> str:
        if not p:
            return "."
        # POSIX keeps exactly two leading slashes, and folds three or more into one.
        initial = 2 if p.startswith("//") and not p.startswith("///") else 1 if p.startswith("/") else 0
        parts: list[str] = []
        for comp in p.split("/"):
            if comp in ("", "."):
                continue
            if comp != ".." or (not initial and not parts) or (parts and parts[-1] == ".."):
                parts.append(comp)
            elif parts:
                parts.pop()
        return "/" * initial + "/".join(parts) or "."

    @staticmethod
    def abspath(p: str) -> str:
        return path.normpath(p if p.startswith("/") else path.join(getcwd(), p))

    @staticmethod
    def realpath(p: str) -> str:
        # The kernel resolves an existing path in one open(); posixpath walks it a component at a
        # time. Anything else (a missing tail, no /proc) goes to posixpath, which resolves what exists.
        try:
            fd = open(p, _O_PATH | _O_CLOEXEC)
            try:
                r = readlink(f"/proc/self/fd/{fd}")
            finally:
                _close(fd)
            if r.startswith("/") and not r.endswith(" (deleted)"):
                return r
        except (OSError, ValueError):
            pass
        import posixpath

        return posixpath.realpath(p)

    @staticmethod
    def exists(p: str) -> bool:
        return _is(p, 0)

    @staticmethod
    def lexists(p: str) -> bool:
        return _is(p, 0, follow=False)

    @staticmethod
    def isdir(p: str) -> bool:
        return _is(p, _S_IFDIR)

    @staticmethod
    def isfile(p: str) -> bool:
        return _is(p, _S_IFREG)


def makedirs(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    head, tail = path.split(name)
    if not tail:
        head, tail = path.split(head)
    if head and tail and not path.exists(head):
        try:
            makedirs(head, exist_ok=exist_ok)
        except FileExistsError:
            pass  # made by someone else meanwhile
    try:
        mkdir(name, mode)
    except OSError:
        # As os.makedirs: an existing directory is fine with exist_ok, anything else is not.
        if not exist_ok or not path.isdir(name):
            raise


def walk(top: str, topdown: bool = True) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk without its onerror and followlinks: unreadable directories are skipped, symlinks to
    directories are listed but not entered."""
    try:
        with scandir(top) as it:
            entries = list(it)
    except OSError:
        return
    dirs: list[str] = []
    files: list[str] = []
    walk_into: list[str] = []
    for e in entries:
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        (dirs if is_dir else files).append(e.name)
        if is_dir and not e.is_symlink():
            walk_into.append(e.name)
    if topdown:
        yield top, dirs, files
        walk_into = [d for d in dirs if d in walk_into]  # the caller may prune dirs
    for d in walk_into:
        yield from walk(path.join(top, d), topdown)
    if not topdown:
        yield top, dirs, files
