"""Files into and out of running machines: `bind` (a host directory mounted into the machine, user
namespaced ones included, which upstream refuses) and `copy-to`/`copy-from`.

Container paths are always resolved inside the container's root: through the leader's /proc/PID/root
with openat2(RESOLVE_IN_ROOT), or inside its mount namespace, so a symlink the guest planted (say
/tmp/x -> /etc/shadow) resolves to the guest's own file and never to the host's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hutch.errors import MachineError
from hutch.machines import control
from hutch.paths import Paths

PR_SET_SECUREBITS = 28
SECBIT_NO_SETUID_FIXUP = 1 << 2


def _error_pipe() -> tuple[int, int]:
    return os.pipe2(os.O_CLOEXEC)


def _run_child(fn: Any, what: str) -> None:
    """Run FN in a child process (it changes namespaces and IDs); its error comes back as one line."""
    r, w = _error_pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            fn()
        except BaseException as e:
            msg = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
            os.write(w, msg.encode(errors="replace"))
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise MachineError(f"{what}: {err.rstrip('.') or 'failed'}.")


def bind(
    name: str, src: str, dst: str | None, paths: Paths, *, read_only: bool = False, mkdir: bool = False
) -> None:
    from hutch.container import rootfs
    from hutch.linux import libc

    entry = control.get(name, paths)
    dst = dst or src
    if not os.path.isabs(dst):
        raise MachineError(f"Destination path '{dst}' is not absolute.", "give the path inside the machine")
    if not os.path.exists(src):
        raise MachineError(f"Failed to bind {src}: No such file or directory.")
    leader = int(entry["leader"])
    shift = int(entry.get("uid_shift") or 0)
    pidfd = control._leader_pidfd(entry, paths)

    def child() -> None:
        flags = libc.OPEN_TREE_CLONE | libc.OPEN_TREE_CLOEXEC | libc.AT_RECURSIVE
        tree = libc.open_tree(-100, os.path.abspath(src), flags)
        if shift:
            # Host files show their real owners inside, as with spawn --bind.
            userns = os.open(f"/proc/{leader}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            libc.mount_setattr_idmap(tree, userns)
            os.close(userns)
        if read_only:
            libc.mount_setattr(tree, libc.MOUNT_ATTR_RDONLY)
        # Before setns(): afterwards /proc is the container's, where we have no /proc/self.
        kind = "dir" if os.path.isdir(src) else "file"
        libc.setns(pidfd, libc.CLONE_NEWNS)  # our root and cwd are now the container's
        rootfs.OWNER = shift or None
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            target = rootfs.make_path(root, dst, kind) if mkdir else rootfs.open_in_root(root, dst)
        except FileNotFoundError:
            raise MachineError(f"{dst} does not exist in machine '{name}'; --mkdir creates it") from None
        libc.move_mount(tree, "", to_dirfd=target)

    try:
        _run_child(child, f"Failed to bind {src} into machine '{name}' at {dst}")
    finally:
        os.close(pidfd)


@contextmanager
def _as_container_root(shift: int) -> Iterator[None]:
    """Create files as the container's root (an idmapped root has no ID for the host's root),
    keeping our capabilities, which a change of file-system UID would otherwise clear."""
    from hutch.linux import libc

    if not shift:
        yield
        return
    libc.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP)
    libc.setfsid(shift, shift)
    try:
        yield
    finally:
        libc.setfsid(0, 0)
        libc.prctl(PR_SET_SECUREBITS, 0)


def _container_root(entry: dict[str, Any], paths: Paths) -> int:
    pidfd = control._leader_pidfd(entry, paths)  # the registry still names this leader
    try:
        return os.open(f"/proc/{entry['leader']}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(pidfd)


def _split(path: str) -> tuple[str, str]:
    parent, _, base = path.rstrip("/").rpartition("/")
    return parent or "/", base


def _copy_file(sfd: int, dparent: int, dname: str, mode: int) -> None:
    from hutch.images.tree import _Copier

    tmp = f".#{dname}.hutch-{os.urandom(4).hex()}"
    dfd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dparent
    )
    try:
        _Copier(None).data(sfd, dfd, os.fstat(sfd))
        os.fchmod(dfd, stat.S_IMODE(mode))
    except BaseException:
        os.close(dfd)
        os.unlink(tmp, dir_fd=dparent)
        raise
    os.close(dfd)
    os.rename(tmp, dname, src_dir_fd=dparent, dst_dir_fd=dparent)


def _copy(src_fd: int, dparent: int, dname: str, force: bool, where: str) -> None:
    """Copy the file or tree open at SRC_FD to DNAME in DPARENT, replacing it only with FORCE."""
    from hutch.images.tree import copy_tree_at
    from hutch.linux.fsutil import rm_rf

    try:
        st = os.stat(dname, dir_fd=dparent, follow_symlinks=False)
        exists = True
    except FileNotFoundError:
        exists = False
        st = None
    if exists and not force:
        raise MachineError(f"{where} already exists; --force replaces it")
    src_st = os.fstat(src_fd)
    if stat.S_ISDIR(src_st.st_mode):
        if exists:
            assert st is not None
            if stat.S_ISDIR(st.st_mode):
                rm_rf(f"/proc/self/fd/{dparent}/{dname}")
            else:
                os.unlink(dname, dir_fd=dparent)
        copy_tree_at(src_fd, dparent, dname, keep_owners=False)
    else:
        if exists and st is not None and stat.S_ISDIR(st.st_mode):
            raise MachineError(f"{where} is a directory")
        _copy_file(src_fd, dparent, dname, src_st.st_mode)


def copy_to(name: str, src: str, dst: str | None, paths: Paths, *, force: bool = False) -> None:
    from hutch.container import rootfs

    entry = control.get(name, paths)
    dst = dst or src
    try:
        sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise MachineError(f"Failed to open {src}: {e.strerror}.") from None
    root = _container_root(entry, paths)
    try:
        parent, base = _split(dst)
        try:
            pfd = rootfs.open_in_root(root, parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise MachineError(f"Failed to open {parent} in machine '{name}': {e.strerror}.") from None
        try:
            with _as_container_root(int(entry.get("uid_shift") or 0)):
                _copy(sfd, pfd, base, force, f"{dst} in machine '{name}'")
        except OSError as e:
            raise MachineError(f"Failed to copy {src} to {dst} in machine '{name}': {e.strerror}.") from None
        finally:
            os.close(pfd)
    finally:
        os.close(root)
        os.close(sfd)


def copy_from(name: str, src: str, dst: str | None, paths: Paths, *, force: bool = False) -> None:
    from hutch.linux import libc

    entry = control.get(name, paths)
    dst = dst or src
    root = _container_root(entry, paths)
    try:
        try:
            # Inside the container's root, symlinks resolved as the container sees them, and no further.
            sfd = libc.openat2(
                root, src.lstrip("/") or ".", os.O_RDONLY, libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
            )
        except OSError as e:
            raise MachineError(f"Failed to open {src} in machine '{name}': {e.strerror}.") from None
        parent, base = _split(os.path.abspath(dst))
        try:
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            os.close(sfd)
            raise MachineError(f"Failed to open {parent}: {e.strerror}.") from None
        try:
            _copy(sfd, pfd, base, force, dst)
        except OSError as e:
            raise MachineError(
                f"Failed to copy {src} from machine '{name}' to {dst}: {e.strerror}."
            ) from None
        finally:
            os.close(pfd)
            os.close(sfd)
    finally:
        os.close(root)
