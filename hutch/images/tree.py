"""Whole-tree operations on images: copy (reflink where the file system can, else an in-kernel copy)
and measure. Both work from directory file descriptors, never follow a symlink, and walk with an
explicit stack, as hutch.linux.fsutil.rm_rf does, because an image may be deeper than Python's
recursion limit.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable

from hutch.linux.fsutil import DIR_FLAGS, raise_fd_limit

FICLONE = 0x40049409
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_NOT_SUPPORTED = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM)

Progress = Callable[[int], None]


def copy_xattrs(src: int | str, dst: int | str, *, dst_dir_fd: int | None = None) -> None:
    """Every extended attribute of SRC onto DST (fds, or names for symlinks)."""
    follow = not isinstance(src, str)
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return
        raise
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=follow)
            os.setxattr(dst, name, value, follow_symlinks=follow)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM, errno.ENODATA):
                raise


class _Copier:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.reflink = True
        self.in_kernel = True
        self.links: dict[tuple[int, int], str] = {}

    def data(self, sfd: int, dfd: int, st: os.stat_result) -> None:
        size = st.st_size
        if size == 0:
            return
        if self.reflink:
            try:
                fcntl.ioctl(dfd, FICLONE, sfd)
                if self.progress:
                    self.progress(size)
                return
            except OSError as e:
                if e.errno not in _NOT_SUPPORTED:
                    raise
                self.reflink = False
        sparse = st.st_blocks * 512 < size
        pos = 0
        while pos < size:
            if sparse:
                try:
                    pos = os.lseek(sfd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(sfd, pos, os.SEEK_HOLE)
            else:
                end = size
            while pos < end:
                n = self._chunk(sfd, dfd, end - pos, pos)
                if n == 0:
                    break
                pos += n
                if self.progress:
                    self.progress(n)
            if not sparse:
                break
        if sparse:
            os.ftruncate(dfd, size)

    def _chunk(self, sfd: int, dfd: int, count: int, pos: int) -> int:
        """Copy up to COUNT bytes at POS: in the kernel where it can (copy_file_range refuses to
        cross file systems of different types), else through a buffer."""
        if self.in_kernel:
            try:
                return os.copy_file_range(sfd, dfd, count, pos, pos)
            except OSError as e:
                if e.errno not in _NOT_SUPPORTED:
                    raise
                self.in_kernel = False
        data = os.pread(sfd, min(count, 1 << 20), pos)
        view = memoryview(data)
        while view:
            view = view[os.pwrite(dfd, view, pos + len(data) - len(view)) :]
        return len(data)

    def file(self, sfd: int, dfd: int, name: str, st: os.stat_result) -> None:
        fs = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            fd = os.open(name, _NEW_FILE, 0o600, dir_fd=dfd)
            try:
                self.data(fs, fd, st)
                _meta(fd, st)
                copy_xattrs(fs, fd)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
        finally:
            os.close(fs)


def _meta(fd: int, st: os.stat_result) -> None:
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits


def copy_tree(src: str, dst: str, progress: Progress | None = None, workers: int | None = None) -> None:
    """Copy the directory tree SRC to the new path DST: owners, modes (setuid included), times,
    extended attributes, hard links, symlinks as they are, device nodes and sparse files.

    One thread walks and makes directories, symlinks and nodes; a small pool copies regular files,
    whose system calls release the GIL, so a two-core machine copies about as fast as `cp -a`.
    Directory times and modes are set last, deepest first, once nothing more is created in them.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    raise_fd_limit()
    c = _Copier(progress)
    dirs: list[tuple[int, int, os.stat_result]] = []
    links: list[tuple[str, int, str]] = []
    futures: list[Future[None]] = []
    pool = ThreadPoolExecutor(workers or min(4, (os.cpu_count() or 1) + 1))
    try:
        sroot = os.open(src, DIR_FLAGS)
        try:
            os.mkdir(dst, 0o700)
            droot = os.open(dst, DIR_FLAGS)
        except BaseException:
            os.close(sroot)
            raise
        dirs.append((sroot, droot, os.fstat(sroot)))
        todo = [(sroot, droot, "")]
        while todo:
            sfd, dfd, rel = todo.pop()
            with os.scandir(sfd) as it:
                entries = list(it)
            for e in entries:
                name = e.name
                st = e.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    os.mkdir(name, 0o700, dir_fd=dfd)
                    csfd = os.open(name, DIR_FLAGS, dir_fd=sfd)
                    try:
                        cdfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
                    except BaseException:
                        os.close(csfd)
                        raise
                    dirs.append((csfd, cdfd, st))
                    todo.append((csfd, cdfd, f"{rel}{name}/"))
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = c.links.get(key)
                    if first is not None:
                        links.append((first, dfd, name))
                        continue
                    c.links[key] = rel + name
                if stat.S_ISREG(mode):
                    futures.append(pool.submit(c.file, sfd, dfd, name, st))
                    continue
                if stat.S_ISLNK(mode):
                    os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
                else:
                    os.mknod(name, mode, st.st_rdev, dir_fd=dfd)
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISLNK(mode):
                    os.chmod(name, stat.S_IMODE(mode), dir_fd=dfd)
                os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
        for f in futures:
            f.result()
        for first, dfd, name in links:
            # The first link's path runs through directories this copy made itself.
            os.link(first, name, src_dir_fd=droot, dst_dir_fd=dfd, follow_symlinks=False)
        for sfd, dfd, st in reversed(dirs):
            _meta(dfd, st)
            copy_xattrs(sfd, dfd)
            os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for sfd, dfd, _ in dirs:
            os.close(sfd)
            os.close(dfd)


def disk_usage(path: str) -> int:
    """Bytes allocated below PATH, each inode counted once."""
    raise_fd_limit()
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [os.open(path, DIR_FLAGS)]
    try:
        total += os.fstat(stack[0]).st_blocks * 512
        while stack:
            fd = stack.pop()
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        st = e.stat(follow_symlinks=False)
                        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                            if (st.st_dev, st.st_ino) in seen:
                                continue
                            seen.add((st.st_dev, st.st_ino))
                        total += st.st_blocks * 512
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(os.open(e.name, DIR_FLAGS, dir_fd=fd))
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total
