"""Thin wrappers, one per system call that Python 3.11's os module lacks.

Each raises OSError with errno and the path it was working on; none logs or decides policy.
Built on `_ctypes` directly: the `ctypes` package defines dozens of types at import, ~1.5 ms, a tenth
of `hutch spawn`'s start-up budget. libc is loaded by soname, never through ctypes.util (find_library
runs ldconfig: ~16 ms).
"""

from __future__ import annotations

import _ctypes
from _ctypes import (
    FUNCFLAG_CDECL,
    FUNCFLAG_PYTHONAPI,
    FUNCFLAG_USE_ERRNO,
    CFuncPtr,
    Structure,
    byref,
    sizeof,
)

from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class c_int(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class c_long(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "L"


class c_uint(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "I"


class c_uint64(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "Q"


class c_char(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "c"


class _Libc:
    _handle = _ctypes.dlopen("libc.so.6", os.RTLD_NOW)


class _Func(CFuncPtr):
    """libc's wrappers return int: reading them as long would turn -1 into 4294967295 on x86_64."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _LongFunc(CFuncPtr):
    """syscall(2) returns long."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class _PyFunc(CFuncPtr):
    """Called with the GIL held: a forked child must resume in the interpreter as the parent left it."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO | FUNCFLAG_PYTHONAPI
    _restype_ = c_long


def _fn(name: str, cls: Any = _Func) -> Any:
    return cls((name, _Libc))


class _LibcFuncs:
    def __getattr__(self, name: str) -> Any:
        f = _fn(name)
        setattr(self, name, f)
        return f


_libc = _LibcFuncs()
_syscall = _fn("syscall", _LongFunc)


def _errno() -> int:
    return int(_ctypes.get_errno())


CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOSYMFOLLOW = 256
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

O_PATH = 0o10000000
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
MOVE_MOUNT_T_EMPTY_PATH = 0x00000040
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000

# Syscalls added after 2019 share one number on every architecture; the older ones do not.
_NR_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)
_NR_CLONE3 = 435
_NR_OPEN_TREE = 428
_NR_MOVE_MOUNT = 429
_NR_OPENAT2 = 437
_NR_PIDFD_GETFD = 438


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = _errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        raise OSError(err, f"{what} '{path}': {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "Failed to unshare namespaces")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "Failed to join namespace")


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
    *,
    what: str | None = None,
) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), c_ulong(flags), _b(data))
    if ret < 0:
        err = _errno()
        shown = what or target
        src = source or fstype or "none"
        raise OSError(err, f"Failed to mount '{src}' on '{shown}': {os.strerror(err)}", shown)


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "Failed to unmount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(_NR_PIVOT_ROOT, _b(new_root), _b(put_old)), "Failed to pivot_root to", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "Failed to set hostname to", name)


def setfsid(uid: int, gid: int) -> None:
    """setfsgid() + setfsuid(): whose files we create. They report the old value, never an error."""
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)


def prctl5(option: int, arg2: int, arg3: int = 0) -> None:
    _check(_libc.prctl(option, c_ulong(arg2), c_ulong(arg3), 0, 0), "prctl failed")


def check_syscall(nr: int, *args: object, what: str) -> int:
    """A raw syscall(2) for the rare call without a wrapper here; ints are passed as C ints."""
    return _check(_syscall(nr, *args), what)


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(option, c_ulong(arg2), 0, 0, 0), "prctl failed")


class _OpenHow(Structure):
    _fields_ = [("flags", c_uint64), ("mode", c_uint64), ("resolve", c_uint64)]  # noqa: RUF012


CLONE_PIDFD = 0x00001000
CLONE_PARENT = 0x00008000
CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(Structure):
    _fields_ = [  # noqa: RUF012
        (name, c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


_pysyscall = _fn("syscall", _PyFunc)


def clone3_fork(flags: int, cgroup_fd: int = -1) -> tuple[int, int]:
    """fork() with namespaces and a target cgroup, via clone3(). Returns (pid, pidfd) in the parent and
    (0, -1) in the child.

    Spawning straight into the cgroup (CLONE_INTO_CGROUP) avoids migrating a process later: a write
    to cgroup.procs waits for an RCU grace period, ~9 ms here. The process must be single-threaded, as
    Python's own fork requires too; no at-fork hooks run.
    """
    pidfd = c_int(-1)
    args = _CloneArgs()
    args.flags = flags | CLONE_PIDFD | (CLONE_INTO_CGROUP if cgroup_fd >= 0 else 0)
    args.pidfd = _ctypes.addressof(pidfd)
    # With CLONE_PARENT the kernel takes the exit signal from the caller's own and insists on 0 here.
    args.exit_signal = 0 if flags & CLONE_PARENT else 17  # SIGCHLD
    args.cgroup = max(cgroup_fd, 0)
    ret = _pysyscall(_NR_CLONE3, byref(args), sizeof(args))
    if ret < 0:
        err = _errno()
        raise OSError(err, f"Failed to clone: {os.strerror(err)}")
    if ret == 0:
        return 0, -1
    return ret, pidfd.value


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_syscall(_NR_OPENAT2, dirfd, _b(path), byref(how), sizeof(how)), "Failed to open", path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_syscall(_NR_OPEN_TREE, dirfd, _b(path), c_uint(flags)), "Failed to clone mount", path)


def move_mount(from_fd: int, to_path: str, *, to_dirfd: int = -100) -> None:
    """Attach the detached tree FROM_FD at TO_PATH, or with to_path="" on the O_PATH fd TO_DIRFD itself
    (move_mount does not follow /proc/self/fd magic links)."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | (MOVE_MOUNT_T_EMPTY_PATH if not to_path else 0)
    _check(
        _syscall(_NR_MOVE_MOUNT, from_fd, b"", to_dirfd, _b(to_path), flags),
        "Failed to move mount onto",
        to_path or f"fd {to_dirfd}",
    )


_NR_MOUNT_SETATTR = 442
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(Structure):
    _fields_ = [  # noqa: RUF012
        ("attr_set", c_uint64),
        ("attr_clr", c_uint64),
        ("propagation", c_uint64),
        ("userns_fd", c_uint64),
    ]


def mount_setattr_idmap(tree_fd: int, userns_fd: int, recursive: bool = True) -> None:
    """Make the detached mount TREE_FD an idmapped mount through the user namespace USERNS_FD."""
    mount_setattr(tree_fd, MOUNT_ATTR_IDMAP, recursive, userns_fd=userns_fd)


_NR_FSOPEN = 430
_NR_FSCONFIG = 431
_NR_FSMOUNT = 432
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6


def fsmount_detached(
    fstype: str,
    options: dict[str, str] | None = None,
    fd_options: dict[str, int] | None = None,
    mount_flags: int = 0,
    flags: tuple[str, ...] = (),
    creator: Callable[[], None] | None = None,
) -> int:
    """A new file system mounted nowhere: an fd to its root, usable as a directory fd and through
    /proc/self/fd. It is freed when the last fd is closed, so a crash leaves nothing on the host.
    CREATOR: called just before the superblock is made, to take the credentials it is made with
    (overlayfs works its layers with its creator's); setfsid(0, 0) after. The options, paths among
    them, are looked up as ourselves."""
    fs = _check(_syscall(_NR_FSOPEN, _b(fstype), 1), "Failed to open file system", fstype)  # FSOPEN_CLOEXEC
    try:
        for key, fd in (fd_options or {}).items():
            _check(
                _syscall(_NR_FSCONFIG, fs, FSCONFIG_SET_FD, _b(key), None, fd),
                f"Failed to set {key} on",
                fstype,
            )
        for key in flags:  # "ro", say: a superblock flag, not a string option
            _check(
                _syscall(_NR_FSCONFIG, fs, FSCONFIG_SET_FLAG, _b(key), None, 0),
                f"Failed to set {key} on",
                fstype,
            )
        for key, value in (options or {}).items():
            _check(
                _syscall(_NR_FSCONFIG, fs, FSCONFIG_SET_STRING, _b(key), _b(value), 0),
                f"Failed to set {key}={value} on",
                fstype,
            )
        if creator is not None:
            creator()
        try:
            _check(
                _syscall(_NR_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0), "Failed to create", fstype
            )
        finally:
            if creator is not None:
                setfsid(0, 0)  # gives back the file capabilities too
        return _check(
            _syscall(_NR_FSMOUNT, fs, 1, mount_flags), "Failed to mount", fstype
        )  # FSMOUNT_CLOEXEC
    finally:
        os.close(fs)


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    return _check(_syscall(_NR_PIDFD_GETFD, pidfd, targetfd, 0), "Failed to fetch file descriptor")


def unix_datagram_socket(path: str) -> int:
    """A close-on-exec AF_UNIX datagram socket bound to PATH; returns its fd. Here rather than through
    _socket, whose initialisation (~0.45 ms) every container start would pay for this one socket."""
    name = os.fsencode(path)
    if len(name) >= 108:  # sun_path's size, with its terminating NUL
        raise OSError(36, f"Failed to bind socket '{path}': {os.strerror(36)}", path)
    fd = _check(_libc.socket(1, 2 | os.O_CLOEXEC, 0), "Failed to create socket")  # AF_UNIX, SOCK_DGRAM
    addr = (1).to_bytes(2, "little") + name + b"\0"
    try:
        _check(_libc.bind(fd, addr, len(addr)), "Failed to bind socket", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


_STATX_BTIME = 0x800
_AT_SYMLINK_NOFOLLOW = 0x100


def statx_btime_ns(path: str, dir_fd: int = -100) -> int | None:
    """The birth time of PATH (not following a final symlink) in ns, or None where the file system has
    none. Python 3.11's os.stat() does not expose it on Linux."""
    raw = (c_char * 256)()
    ret = _libc.statx(dir_fd, _b(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, raw)
    if ret < 0:
        err = _errno()
        raise OSError(err, f"Failed to stat '{path}': {os.strerror(err)}", path)
    data = bytes(raw)
    if not int.from_bytes(data[0:4], "little") & _STATX_BTIME:
        return None
    sec = int.from_bytes(data[80:88], "little", signed=True)
    nsec = int.from_bytes(data[88:92], "little")
    return sec * 1_000_000_000 + nsec


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def rename2(old: str, new: str, flags: int) -> None:
    """renameat2(): RENAME_NOREPLACE fails with EEXIST instead of replacing NEW; RENAME_EXCHANGE
    swaps the two atomically."""
    ret = _libc.renameat2(-100, _b(old), -100, _b(new), c_uint(flags))
    if ret < 0:
        err = _errno()
        raise OSError(err, f"Failed to rename '{old}' to '{new}': {os.strerror(err)}", new)


MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004


def mount_setattr(tree_fd: int, attr_set: int, recursive: bool = True, *, userns_fd: int = 0) -> None:
    """Set mount attributes (MOUNT_ATTR_*) on the detached or attached mount TREE_FD."""
    attr = _MountAttr()
    attr.attr_set = attr_set
    attr.userns_fd = userns_fd
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    what = "create an idmapped mount" if attr_set & MOUNT_ATTR_IDMAP else "change mount attributes"
    _check(_syscall(_NR_MOUNT_SETATTR, tree_fd, b"", flags, byref(attr), sizeof(attr)), f"Failed to {what}")
