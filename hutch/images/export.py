"""Writing an image as a tar stream, as importd's `tar -c --xattrs --xattrs-include=* .` does: numeric
owners, modes with setuid bits, times, symlinks as they are, hard links once, device nodes, and every
extended attribute as a SCHILY.xattr PAX record (what GNU tar and hutch's importer read back).

The walk is by directory fd with an explicit stack, so no symlink in the image is ever followed and no
depth breaks it.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable

from hutch.linux.fsutil import DIR_FLAGS, raise_fd_limit

_KINDS = {
    stat.S_IFREG: tarfile.REGTYPE,
    stat.S_IFDIR: tarfile.DIRTYPE,
    stat.S_IFLNK: tarfile.SYMTYPE,
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


class _FdFile:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, n: int = -1) -> bytes:
        return os.read(self.fd, 1 << 20 if n < 0 else n)


def _info(name: str, st: os.stat_result, xattr_src: int | None) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = _KINDS[stat.S_IFMT(st.st_mode)]
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid = st.st_uid
    ti.gid = st.st_gid
    ti.uname = ti.gname = ""
    # Exact to the nanosecond (a float would round): hutch's importer reads this record back exactly.
    ti.mtime = st.st_mtime_ns // 1_000_000_000
    pax: dict[str, str] = {"mtime": f"{ti.mtime}.{st.st_mtime_ns % 1_000_000_000:09d}"}
    if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor = os.major(st.st_rdev)
        ti.devminor = os.minor(st.st_rdev)
    if xattr_src is not None:
        try:
            keys = os.listxattr(xattr_src)
        except OSError:
            keys = []
        for key in keys:
            try:
                value = os.getxattr(xattr_src, key)
            except OSError:
                continue
            pax["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    ti.pax_headers = pax
    return ti


def write_tar(root: str, out: object, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    raise_fd_limit()
    counts = {"members": 0, "bytes": 0}
    links: dict[tuple[int, int], str] = {}
    top = os.open(root, DIR_FLAGS)
    stack: list[tuple[int, str, list[str]]] = []
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            tf.addfile(_info(".", os.fstat(top), top))
            with os.scandir(top) as it:
                stack.append((top, "./", sorted((e.name for e in it), reverse=True)))
            while stack:
                dfd, prefix, entries = stack[-1]
                if not entries:
                    stack.pop()
                    os.close(dfd)
                    continue
                name = entries.pop()
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                path = prefix + name
                counts["members"] += 1
                fmt = stat.S_IFMT(st.st_mode)
                if fmt == stat.S_IFSOCK:
                    continue  # tar has no sockets; GNU tar skips them too
                if fmt == stat.S_IFDIR:
                    sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
                    try:
                        tf.addfile(_info(path, st, sub))
                        with os.scandir(sub) as it:
                            children = sorted((e.name for e in it), reverse=True)
                    except BaseException:
                        os.close(sub)
                        raise
                    stack.append((sub, path + "/", children))
                    continue
                if fmt != stat.S_IFLNK and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = links.get(key)
                    if first is not None:
                        ti = _info(path, st, None)
                        ti.type = tarfile.LNKTYPE
                        ti.linkname = first
                        tf.addfile(ti)
                        continue
                    links[key] = path
                if fmt == stat.S_IFREG:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                    try:
                        ti = _info(path, st, fd)
                        ti.size = st.st_size
                        tf.addfile(ti, _FdFile(fd))
                    finally:
                        os.close(fd)
                    counts["bytes"] += st.st_size
                    if progress is not None:
                        progress(st.st_size)
                elif fmt == stat.S_IFLNK:
                    ti = _info(path, st, None)
                    ti.linkname = os.readlink(name, dir_fd=dfd)
                    tf.addfile(ti)
                else:
                    tf.addfile(_info(path, st, None))
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)
    return counts
