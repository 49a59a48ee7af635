"""Resolving and creating paths inside the container's root without ever leaving it.

Every path that comes from the image (mount points, /etc files) is opened with openat2(RESOLVE_IN_ROOT),
so a symlink planted in the image (`/dev -> /etc` or `/etc/resolv.conf -> /host/file`) resolves inside
the container root, never on the host. Mounts then target the resulting fd through /proc/self/fd.
"""

from __future__ import annotations

import errno
from _stat import S_ISREG  # the C half of stat: the module around it costs ~0.1 ms to import

from hutch.linux import caps, libc
from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS

# The container root's host UID while the supervisor builds a user-namespaced container. Through an
# idmapped mount the host's root has no identity (creating a file fails with EOVERFLOW), so files are
# created as the container's root instead: see as_owner().
OWNER: int | None = None


def as_owner(create: Callable[[], T]) -> T:
    """Run CREATE; if the file system cannot represent our IDs (an idmapped image), run it again as the
    container's root. Only the file-system IDs change: capabilities stay (CAP_DAC_OVERRIDE too, so a
    read-only directory, like an image root of mode 0555, still takes a mount point)."""
    try:
        return create()
    except OSError as e:
        if e.errno != errno.EOVERFLOW or OWNER is None:
            raise
    caps.setfsid_keeping_caps(OWNER)
    try:
        return create()
    finally:
        libc.setfsid(0, 0)


def open_in_root(root_fd: int, path: str, flags: int = libc.O_PATH) -> int:
    return libc.openat2(root_fd, path.lstrip("/") or ".", flags, _RESOLVE)


def make_path(root_fd: int, path: str, kind: str = "dir", mode: int = 0o755) -> int:
    """Open PATH inside the root as O_PATH, creating missing components (parents as directories; the
    last as KIND 'dir' or 'file'). Returns the fd."""
    rel = path.strip("/")
    if not rel:
        return os.dup(root_fd)
    try:
        return open_in_root(root_fd, rel)
    except FileNotFoundError:
        pass
    parts = rel.split("/")
    # Find the deepest existing ancestor, then create the rest one component at a time from its fd.
    k = len(parts) - 1
    while k > 0:
        try:
            fd = open_in_root(root_fd, "/".join(parts[:k]), libc.O_PATH | os.O_DIRECTORY)
            break
        except FileNotFoundError:
            k -= 1
    else:
        fd = os.dup(root_fd)
    try:
        for idx in range(k, len(parts)):
            name = parts[idx]
            last = idx == len(parts) - 1
            if last and kind == "file":

                def create(fd: int = fd, name: str = name) -> None:
                    try:
                        flags = os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                        os.close(os.open(name, flags, 0o644, dir_fd=fd))
                    except FileExistsError:
                        pass

            else:

                def create(fd: int = fd, name: str = name) -> None:
                    try:
                        os.mkdir(name, mode, dir_fd=fd)
                    except FileExistsError:
                        pass

            try:
                as_owner(create)
            except OSError as e:
                raise OSError(
                    e.errno, f"Failed to create mount point '/{rel}': {e.strerror}", "/" + rel
                ) from e
            # The new entry may be a symlink raced in by the container: never follow it.
            nfd = os.open(
                name,
                libc.O_PATH
                | os.O_NOFOLLOW
                | os.O_CLOEXEC
                | (0 if last and kind == "file" else os.O_DIRECTORY),
                dir_fd=fd,
            )
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def read_file_in_root(root: str, path: str, limit: int = 1 << 20) -> str | None:
    """Read a small text file from the image, resolving symlinks inside it; None if absent or not a
    regular file (a FIFO planted there must not hang the reader: O_NONBLOCK, then the type check)."""
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(rfd, path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    finally:
        os.close(rfd)
    try:
        if not S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def exists_in_root(root: str, path: str) -> bool:
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(open_in_root(rfd, path))
        return True
    except OSError:
        return False
    finally:
        os.close(rfd)
