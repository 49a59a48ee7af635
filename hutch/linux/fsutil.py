"""File tree helpers that never follow symlinks and cost nothing to import (shutil pulls in `re`, ~6 ms).

They walk with an explicit stack: a tree may be deeper than Python's recursion limit (a 1500-deep tree
breaks os.walk, shutil.copytree and shutil.rmtree; rmtree leaves it half deleted).
"""

from __future__ import annotations

import errno
import fcntl
import sys

from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010


def raise_fd_limit() -> None:
    """A deep tree keeps one directory fd per level open (two when copying)."""
    import resource  # not at the top: spawn imports this module and never needs it

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def get_flags(fd: int) -> int:
    """The inode flags (chattr) of FD; OSError where the file system has none."""
    buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
    return int.from_bytes(buf[:4], sys.byteorder)


def set_flags(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags & 0xFFFFFFFF).to_bytes(4, sys.byteorder) + b"\0" * 4)


def set_immutable_fd(fd: int, on: bool) -> None:
    flags = get_flags(fd)
    new = (flags | FS_IMMUTABLE_FL) if on else (flags & ~FS_IMMUTABLE_FL)
    if new != flags:
        set_flags(fd, new)


def is_immutable(path: str) -> bool:
    """chattr +i on PATH itself: how systemd (and hutch) mark a directory image read-only. False where
    the file system has no inode flags."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return bool(get_flags(fd) & FS_IMMUTABLE_FL)
    except OSError:  # ENOTTY, EOPNOTSUPP
        return False
    finally:
        os.close(fd)


def _clear_immutable(fd: int) -> None:
    try:
        set_immutable_fd(fd, False)
    except OSError:
        pass


def rm_rf(path: str) -> None:
    """Remove PATH and everything below it, by file descriptor; a symlink is removed, not followed.
    Clears the immutable flag (chattr +i, a directory image's read-only mark) on the way."""
    try:
        top = os.open(path, DIR_FLAGS | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    raise_fd_limit()
    _clear_immutable(top)
    # Each frame: a directory fd and its entries left, (name, is_dir). A directory entry is descended
    # into first and removed when the walk comes back to it.
    stack: list[tuple[int, list[tuple[str, bool]]]] = []

    def push(fd: int) -> None:
        with os.scandir(fd) as it:
            stack.append((fd, [(e.name, e.is_dir(follow_symlinks=False)) for e in it]))

    try:
        push(top)
    except BaseException:
        os.close(top)
        raise
    try:
        while stack:
            fd, entries = stack[-1]
            if not entries:
                stack.pop()
                os.close(fd)
                continue
            name, is_dir = entries[-1]
            if is_dir:
                entries[-1] = (name, False)
                try:
                    sub = os.open(name, DIR_FLAGS | os.O_NONBLOCK, dir_fd=fd)
                except FileNotFoundError:
                    continue
                _clear_immutable(sub)
                try:
                    push(sub)
                except BaseException:
                    os.close(sub)
                    raise
                continue
            entries.pop()
            try:
                os.unlink(name, dir_fd=fd)
            except IsADirectoryError:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
    finally:
        for fd, _ in stack:
            os.close(fd)
    os.rmdir(path)


def close_other_fds(keep: set[int]) -> None:
    """Close every descriptor from 3 up except those in KEEP (a child about to enter another
    namespace, or to be confined, must hold nothing else of ours)."""
    prev = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(prev, fd)
        prev = fd + 1
    os.closerange(prev, 65536)


def take_lock_file(path: str, exclusive: bool = True, blocking: bool = False, mode: int = 0o600) -> int:
    """An fd holding a flock on the file PATH (created with MODE). BlockingIOError if another holds it
    (without BLOCKING). Lock files are removed by their last holder (release_lock_file), so the file
    taken may have been unlinked between open() and flock(): then try again with the new one, as
    systemd's make_lock_file() does."""
    op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        try:
            fcntl.flock(fd, op)
            st = os.fstat(fd)
            try:
                now = os.stat(path)
                same = (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


def release_lock_file(path: str, fd: int) -> None:
    """Give up the lock FD on PATH, removing PATH if no one else holds or waits on it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        st = os.fstat(fd)
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
    except OSError:
        pass  # another holder: the file is theirs to remove
    finally:
        os.close(fd)


def gc_lock_files(directory: str, match: Callable[[str], bool] | None = None) -> list[str]:
    """Remove the lock files in DIRECTORY that no process holds (their holders were killed before
    they could remove them); MATCH (a callable on the name) limits which. Returns what went."""
    removed: list[str] = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        if match is not None and not match(entry):
            continue
        path = os.path.join(directory, entry)
        try:
            fd = take_lock_file(path)
        except OSError:
            continue
        release_lock_file(path, fd)
        if not os.path.lexists(path):
            removed.append(entry)
    return removed


def gc_temp_dirs(base: str, prefix: str) -> list[str]:
    """Remove the directories BASE/PREFIX<16 hex digits> that no process holds a flock on: the
    temporary directories of runs killed before they could remove them."""
    removed: list[str] = []
    try:
        entries = [e for e in os.listdir(base) if e.startswith(prefix) and len(e) == len(prefix) + 16]
    except OSError:
        return removed
    for entry in entries:
        path = os.path.join(base, entry)
        try:
            fd = os.open(path, DIR_FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_dev == os.stat(base).st_dev:  # never into a mount
                rm_rf(path)
                removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def write_atomic(path: str, data: bytes, mode: int = 0o644, tmp: str = "", sync: bool = True) -> None:
    """DATA as the file PATH, whole or not at all: written to TMP (by default .#NAME.XXXXXXXX beside
    it), synced (unless SYNC is false: state on tmpfs), and renamed over PATH. A failure (a full
    disk, say) leaves PATH as it was, removes TMP, and names PATH: a write's OSError names nothing."""
    if not tmp:
        parent, base = os.path.split(path)
        tmp = os.path.join(parent, f".#{base}.{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, path) from None
        raise
    os.close(fd)
    os.rename(tmp, path)
