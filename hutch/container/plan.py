"""The mount plan: a list of operations built from Settings before anything runs.

Each operation can describe() itself (printed by --debug) and execute() against a Context that holds the
container root. Paths named by the image are resolved inside the root (rootfs.make_path); paths on fresh
tmpfs mounts that hutch itself just created are trusted.
"""

from __future__ import annotations

from hutch.container import rootfs
from hutch.linux import libc
from hutch.linux import posixos as os
from hutch.linux.libc import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
)

_EINVAL, _EOPNOTSUPP = 22, 95  # errno's, without importing errno on the spawn path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Context:
    """The state the operations share: where the root is, and an fd of it once it is mounted."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.root_fd = -1
        # With a user namespace: its fd, and whether image and binds are shown through idmapped mounts.
        self.userns_fd = -1
        self.idmap = False
        # Ownership 'auto': shifts the image's files on disk instead when its file system has no
        # idmapped mounts (overlayfs, NFS, FUSE: the kernel refuses with EINVAL or EOPNOTSUPP), as
        # upstream's auto falls back to chown; False: not that case, the error stands.
        self.chown_instead: Callable[[], bool] | None = None
        # The container's PID namespace, for a /proc mounted from outside it (procfs's pidns= option).
        self.pidns_fd = -1
        # /run/host/notify, bound by NotifySocket: the supervisor reads READY=1 from it.
        self.notify_fd = -1

    def clone_tree(self, path: str, recursive: bool = True) -> int:
        """A detached copy of the mount tree at PATH, idmapped into the container's user namespace when
        the ownership mode is 'map'; attach it with libc.move_mount()."""
        flags = libc.OPEN_TREE_CLONE | libc.OPEN_TREE_CLOEXEC | (libc.AT_RECURSIVE if recursive else 0)
        fd = libc.open_tree(-100, path, flags)
        if self.idmap and self.userns_fd >= 0:
            try:
                libc.mount_setattr_idmap(fd, self.userns_fd, recursive)
            except OSError as e:
                os.close(fd)
                err = e.errno or 0
                raise OSError(
                    err, f"Failed to create an idmapped mount of '{path}': {os.strerror(err)}", path
                ) from e
        return fd

    def open_root(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
        self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def target(self, path: str, kind: str = "dir") -> int:
        return rootfs.make_path(self.root_fd, path, kind)

    def attach(self, tree_fd: int, path: str) -> None:
        """Attach the detached mount TREE_FD at PATH inside the root (made where missing), then close
        TREE_FD."""
        try:
            target = self.target(path)
            try:
                libc.move_mount(tree_fd, "", to_dirfd=target)
            finally:
                os.close(target)
        finally:
            os.close(tree_fd)

    def open_parent(self, path: str, create: bool = True) -> tuple[int, str]:
        """A directory fd of PATH's parent inside the root (created unless create=False) and PATH's
        last component, for *at() calls that must not follow a symlink in that last component."""
        parent, _, name = path.strip("/").rpartition("/")
        if not create:
            return rootfs.open_in_root(self.root_fd, parent or ".", os.O_RDONLY | os.O_DIRECTORY), name
        pfd = self.target(parent or "/")
        try:
            return os.open(rootfs.fd_path(pfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), name
        finally:
            os.close(pfd)


class Op:
    def describe(self) -> str:
        raise NotImplementedError

    def execute(self, ctx: Context) -> None:
        raise NotImplementedError


def _flags_text(flags: int) -> str:
    names = [
        (MS_RDONLY, "ro"),
        (MS_NOSUID, "nosuid"),
        (MS_NODEV, "nodev"),
        (MS_NOEXEC, "noexec"),
        (MS_BIND, "bind"),
        (MS_REC, "rec"),
        (MS_REMOUNT, "remount"),
        (MS_STRICTATIME, "strictatime"),
    ]
    return ",".join(n for f, n in names if flags & f) or "-"


class MakeSlave(Op):
    """Our mount namespace starts as a copy of the host's; stop our mounts from propagating back."""

    def describe(self) -> str:
        return "mount --make-rslave /"

    def execute(self, ctx: Context) -> None:
        libc.mount(None, "/", None, MS_REC | MS_SLAVE)


class Credentials(Op):
    """--set-credential and --load-credential, where nspawn puts them: a ramfs (never swapped) with one
    file per credential, readable by the container's root only, then read-only."""

    DIR = "/run/host/credentials"

    def __init__(self, creds: list[tuple[str, bytes]], owner: int, group: int | None = None) -> None:
        # The container's root, or with --user= that user (as nspawn hands them to it): host IDs.
        self.creds = creds
        self.owner = owner
        self.group = owner if group is None else group

    def describe(self) -> str:
        return f"mount ramfs on {self.DIR} with {len(self.creds)} credentials: " + ", ".join(
            n for n, _ in self.creds
        )

    def execute(self, ctx: Context) -> None:
        fd = ctx.target(self.DIR)
        try:
            libc.mount(
                "credentials", rootfs.fd_path(fd), "ramfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700"
            )
        finally:
            os.close(fd)
        dfd = rootfs.open_in_root(ctx.root_fd, self.DIR, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, data in self.creds:
                f = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dfd,
                )
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(f, view) :]
                    os.fchown(f, self.owner, self.group)
                    os.fchmod(f, 0o400)
                finally:
                    os.close(f)
            os.fchown(dfd, self.owner, self.group)
        finally:
            os.close(dfd)
        RemountReadOnly(self.DIR, MS_NOSUID | MS_NODEV | MS_NOEXEC).execute(ctx)


class BootId(Op):
    """A boot ID of the machine's own, fresh at each boot, as nspawn gives: with the host's, journalctl
    -b and the journal's list of boots mix the machine's boots with each other and with the host's."""

    FILE = "/run/proc-sys-kernel-random-boot-id"

    def describe(self) -> str:
        return "bind a random boot ID over /proc/sys/kernel/random/boot_id"

    def execute(self, ctx: Context) -> None:
        b = bytearray(os.urandom(16))
        b[6] = b[6] & 0x0F | 0x40  # a version 4 UUID, as the kernel makes
        b[8] = b[8] & 0x3F | 0x80
        h = b.hex()
        text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}\n"
        dfd, name = ctx.open_parent(self.FILE)
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444, dir_fd=dfd
            )
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            try:
                flags = MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC
                Mount(
                    self.FILE,
                    "/proc/sys/kernel/random/boot_id",
                    None,
                    flags,
                    kind="file",
                    read_only_after=True,
                    source_in_root=True,
                ).execute(ctx)
            finally:
                os.unlink(name, dir_fd=dfd)  # the mount keeps the file; nothing else needs its name
        finally:
            os.close(dfd)


class RootBind(Op):
    """Bind the image onto itself so it is a mount point we can pivot_root into and remount."""

    def __init__(self, image: str) -> None:
        self.image = image

    def describe(self) -> str:
        return f"root: bind {self.image}"

    def execute(self, ctx: Context) -> None:
        if ctx.idmap:
            try:
                fd = ctx.clone_tree(self.image)
            except OSError as e:
                if ctx.chown_instead is None or e.errno not in (_EINVAL, _EOPNOTSUPP):
                    raise
                if not ctx.chown_instead():
                    raise
                ctx.idmap = False  # the binds too, as with ownership 'chown'
            else:
                try:
                    libc.move_mount(fd, ctx.root)
                finally:
                    os.close(fd)
        if not ctx.idmap:
            libc.mount(self.image, ctx.root, None, MS_BIND | MS_REC)
        ctx.open_root()


class AttachPartitions(Op):
    """A disk image's /usr, /home, /srv, /var and /var/tmp partitions, from their detached mounts,
    onto the root just made (idmapped as the root is)."""

    def __init__(self, mounts: list[tuple[str, int]]) -> None:
        self.mounts = mounts

    def describe(self) -> str:
        return "partitions: " + ", ".join(f"/{where}" for where, _ in self.mounts)

    def execute(self, ctx: Context) -> None:
        for where, mfd in self.mounts:
            ctx.attach(ctx.clone_tree(rootfs.fd_path(mfd)), where)


class RootVolatileYes(Op):
    """--volatile=yes: a tmpfs root with only the image's /usr, read-only. The tmpfs belongs to the
    container's root (OWNER on the host), which writes to it."""

    def __init__(self, image: str, owner: int = 0) -> None:
        self.image = image
        self.owner = owner

    def describe(self) -> str:
        return f"root: tmpfs, bind {self.image}/usr ro onto /usr"

    def execute(self, ctx: Context) -> None:
        usr_fd = ctx.clone_tree(self.image + "/usr")
        try:
            own = f",uid={self.owner},gid={self.owner}" if self.owner else ""
            libc.mount("tmpfs", ctx.root, "tmpfs", MS_STRICTATIME, "mode=0755" + own)
            os.mkdir(ctx.root + "/usr", 0o755)
            libc.move_mount(usr_fd, ctx.root + "/usr")
        finally:
            os.close(usr_fd)
        libc.mount(None, ctx.root + "/usr", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        ctx.open_root()
        # A merged-/usr OS finds its top-level directories through these symlinks.
        for name in ("bin", "sbin", "lib", "lib64"):
            if os.path.isdir(ctx.root + "/usr/" + name):
                os.symlink("usr/" + name, name, dir_fd=ctx.root_fd)


class Mkdirs(Op):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def describe(self) -> str:
        return "mkdir -p " + " ".join(self.paths)

    def execute(self, ctx: Context) -> None:
        for p in self.paths:
            os.close(ctx.target(p))


class RemountReadOnly(Op):
    def __init__(self, path: str, flags: int = 0) -> None:
        self.path = path
        self.flags = flags

    def describe(self) -> str:
        return f"remount {self.path} read-only"

    def execute(self, ctx: Context) -> None:
        fd = ctx.target(self.path)
        try:
            libc.mount(
                None, rootfs.fd_path(fd), None, MS_REMOUNT | MS_BIND | MS_RDONLY | self.flags, what=self.path
            )
        finally:
            os.close(fd)


class Mount(Op):
    """Mount a file system (or bind a host path when fstype is None) onto a path inside the root."""

    def __init__(
        self,
        source: str | None,
        dest: str,
        fstype: str | None,
        flags: int = 0,
        data: str | None = None,
        kind: str = "dir",
        read_only_after: bool = False,
        source_in_root: bool = False,
        optional: bool = False,
    ) -> None:
        self.source = source
        self.dest = dest
        self.fstype = fstype
        self.flags = flags
        self.data = data
        self.kind = kind
        self.read_only_after = read_only_after
        self.source_in_root = source_in_root
        self.optional = optional

    def describe(self) -> str:
        what = self.fstype or f"bind {'+' if self.source_in_root else ''}{self.source}"
        extra = f" [{self.data}]" if self.data else ""
        ro = " then ro" if self.read_only_after else ""
        return f"mount {what} on {self.dest} ({_flags_text(self.flags)}){extra}{ro}"

    def execute(self, ctx: Context) -> None:
        src_fd = -1
        source = self.source
        if self.source_in_root and source is not None:
            try:
                src_fd = rootfs.open_in_root(ctx.root_fd, source)
            except FileNotFoundError:
                if self.optional:
                    return
                raise
            source = rootfs.fd_path(src_fd)
        try:
            fd = ctx.target(self.dest, self.kind)
        except FileNotFoundError:
            if self.optional:
                return
            raise
        try:
            target = rootfs.fd_path(fd)
            libc.mount(
                source if source is not None else self.fstype,
                target,
                self.fstype,
                self.flags,
                self.data,
                what=self.dest,
            )
            if self.read_only_after:
                # A bind mount ignores MS_RDONLY at creation; it needs a remount, of the new mount.
                RemountReadOnly(self.dest, self.flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC)).execute(ctx)
        finally:
            os.close(fd)
            if src_fd >= 0:
                os.close(src_fd)


class ProcMount(Op):
    """/proc of the container's PID namespace. Mounted from inside it, or, in a user namespace, by the
    supervisor through procfs's pidns= option (Linux 6.15), so the mount belongs to the more
    privileged mount namespace and reaches the container locked."""

    def __init__(self, flags: int) -> None:
        self.flags = flags

    def describe(self) -> str:
        return f"mount proc on /proc ({_flags_text(self.flags)})"

    def execute(self, ctx: Context) -> None:
        if ctx.pidns_fd < 0:
            Mount("proc", "/proc", "proc", self.flags).execute(ctx)
            return
        # MOUNT_ATTR_NOSUID | NODEV | NOEXEC
        fd = libc.fsmount_detached("proc", fd_options={"pidns": ctx.pidns_fd}, mount_flags=0x2 | 0x4 | 0x8)
        ctx.attach(fd, "/proc")


# name, major, minor: the pseudo devices a container gets (nspawn's copy_devnodes()).
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
)


class PopulateDev(Op):
    """Device nodes and the standard symlinks in the fresh /dev tmpfs."""

    def describe(self) -> str:
        names = [d[0] for d in DEVICES + _host_optional_devices()]
        return "populate /dev: " + " ".join(names) + ", /dev/char links, fd symlinks"

    def execute(self, ctx: Context) -> None:
        dev = rootfs.open_in_root(ctx.root_fd, "dev", os.O_RDONLY | os.O_DIRECTORY)
        made = ["char"]
        try:
            os.mkdir("char", 0o755, dir_fd=dev)
            old = os.umask(0)
            try:
                for name, major, minor in DEVICES + _host_optional_devices():
                    if "/" in name:
                        os.mkdir(name.split("/")[0], 0o755, dir_fd=dev)
                        made.append(name.split("/")[0])
                    os.mknod(name, 0o666 | 0o020000, os.makedev(major, minor), dir_fd=dev)
                    os.symlink(f"../{name}", f"char/{major}:{minor}", dir_fd=dev)
                    made += [name, f"char/{major}:{minor}"]
            finally:
                os.umask(old)
            for name, target in DEV_LINKS:
                os.symlink(target, name, dir_fd=dev)
                made.append(name)
            if rootfs.OWNER is not None:
                # The container's root owns its /dev, as under upstream's user namespace.
                for name in made:
                    os.chown(name, rootfs.OWNER, rootfs.OWNER, dir_fd=dev, follow_symlinks=False)
        finally:
            os.close(dev)


def _host_optional_devices() -> tuple[tuple[str, int, int], ...]:
    """/dev/net/tun and /dev/fuse, where the host has them (upstream's container gets both; the
    kernel lets a user namespace's root use them only within what it owns)."""
    out = []
    for name, major, minor in (("net/tun", 10, 200), ("fuse", 10, 229)):
        try:
            st = os.stat("/dev/" + name)
        except OSError:
            continue
        if st.st_mode & 0o170000 == 0o020000 and st.st_rdev == os.makedev(major, minor):
            out.append((name, major, minor))
    return tuple(out)


class Symlink(Op):
    def __init__(self, target: str, path: str) -> None:
        self.target = target
        self.path = path

    def describe(self) -> str:
        return f"symlink {self.path} -> {self.target}"

    def execute(self, ctx: Context) -> None:
        dfd, name = ctx.open_parent(self.path)
        try:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                return
            rootfs.as_owner(lambda: os.symlink(self.target, name, dir_fd=dfd))
        finally:
            os.close(dfd)


class WriteFile(Op):
    """Write a file at PATH inside the root; replace=False leaves a non-regular file (a symlink) alone."""

    def __init__(
        self, path: str, data: bytes, mode: int = 0o644, replace: bool = True, label: str | None = None
    ) -> None:
        self.path = path
        self.data = data
        self.mode = mode
        self.replace = replace
        self.label = label

    def describe(self) -> str:
        return f"write {self.path} ({self.label or f'{len(self.data)} bytes'})"

    def execute(self, ctx: Context) -> None:
        dfd, name = ctx.open_parent(self.path)
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if (
                    (st.st_mode & 0o170000) == 0o100000
                    and st.st_size == len(self.data)
                    and _same(dfd, name, self.data)
                ):
                    return  # already there: leave the file (and its inode) alone
                if (st.st_mode & 0o170000) != 0o100000:
                    if not self.replace:
                        return
                    if (st.st_mode & 0o170000) == 0o040000:
                        return
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = rootfs.as_owner(lambda: os.open(name, flags, self.mode, dir_fd=dfd))
            try:
                os.write(fd, self.data)
                os.fchmod(fd, self.mode)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)


def _same(dfd: int, name: str, data: bytes) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    try:
        return os.read(fd, len(data) + 1) == data
    finally:
        os.close(fd)


class Unlink(Op):
    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"delete {self.path}"

    def execute(self, ctx: Context) -> None:
        try:
            dfd, name = ctx.open_parent(self.path, create=False)
        except FileNotFoundError:
            return
        try:
            os.unlink(name, dir_fd=dfd)
        except (FileNotFoundError, IsADirectoryError):
            pass
        finally:
            os.close(dfd)


class Inaccessible(Op):
    """Over-mount PATH with an empty node of the same type and mode 000 (from /run/host/inaccessible)."""

    def __init__(self, path: str, optional: bool = False) -> None:
        self.path = path
        self.optional = optional

    def describe(self) -> str:
        return f"mask {self.path}"

    def execute(self, ctx: Context) -> None:
        try:
            fd = rootfs.open_in_root(ctx.root_fd, self.path)
        except FileNotFoundError:
            if self.optional:
                return
            raise OSError(2, f"Failed to mask '{self.path}': No such file or directory", self.path) from None
        try:
            st = os.fstat(fd)
            kind = "dir" if (st.st_mode & 0o170000) == 0o040000 else "reg"
            src = rootfs.open_in_root(ctx.root_fd, "run/host/inaccessible/" + kind)
            try:
                libc.mount(rootfs.fd_path(src), rootfs.fd_path(fd), None, MS_BIND, what=self.path)
                fd2 = rootfs.open_in_root(ctx.root_fd, self.path)
                try:
                    libc.mount(
                        None,
                        rootfs.fd_path(fd2),
                        None,
                        MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        what=self.path,
                    )
                finally:
                    os.close(fd2)
            finally:
                os.close(src)
        finally:
            os.close(fd)


class PivotRoot(Op):
    def describe(self) -> str:
        return "pivot_root into the container root"

    def execute(self, ctx: Context) -> None:
        # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only ours.
        os.fchdir(ctx.root_fd)
        libc.pivot_root(".", ".")
        libc.umount(".", libc.MNT_DETACH)
        os.chdir("/")
        # The whole tree shared, as nspawn makes it (its issue #3860): a mount that a service's own
        # namespace makes, such as the ramfs systemd moves onto /run/credentials/UNIT, reaches PID 1's
        # view, and PID 1's later mounts reach its services. (Only now: pivot_root refuses a shared
        # root.) It stays a slave of the host's tree, so nothing propagates back to the host.
        libc.mount(None, "/", None, MS_REC | MS_SHARED)


class BestEffort(Op):
    """Integration steps (resolv.conf, localtime) that must not stop a container: nspawn only warns when
    the image is read-only or the file is a dangling symlink."""

    def __init__(self, op: Op) -> None:
        self.op = op

    def describe(self) -> str:
        return self.op.describe() + " (if possible)"

    def execute(self, ctx: Context) -> None:
        try:
            self.op.execute(ctx)
        except OSError:
            pass


def describe(ops: list[Op]) -> str:
    return "\n".join(f"{i:2d}. {op.describe()}" for i, op in enumerate(ops, 1))


def execute(ops: list[Op], ctx: Context) -> None:
    for op in ops:
        op.execute(ctx)


class PivotInside(Op):
    """--pivot-root=NEW[:OLD]: the image's directory NEW becomes the container's root; the image's own
    root is then at OLD inside it, or nowhere. Stacked on the root bind, before anything is mounted
    into the root, as upstream's setup_pivot_root() runs."""

    def __init__(self, new: str, old: str) -> None:
        self.new = new
        self.old = old

    def describe(self) -> str:
        return f"pivot {self.new} to / (old root: {self.old or 'unmounted'})"

    def execute(self, ctx: Context) -> None:
        flags = libc.OPEN_TREE_CLONE | libc.OPEN_TREE_CLOEXEC | libc.AT_RECURSIVE
        old_tree = libc.open_tree(ctx.root_fd, "", flags | libc.AT_EMPTY_PATH) if self.old else -1
        try:
            src = rootfs.open_in_root(ctx.root_fd, self.new, os.O_PATH | os.O_DIRECTORY)
            try:
                new_tree = libc.open_tree(src, "", flags | libc.AT_EMPTY_PATH)
            finally:
                os.close(src)
            libc.move_mount(new_tree, ctx.root)
            os.close(new_tree)
            ctx.open_root()
            if old_tree >= 0:
                ctx.attach(old_tree, self.old)
                old_tree = -1
        finally:
            if old_tree >= 0:
                os.close(old_tree)


class NotifySocket(Op):
    """/run/host/notify, where a systemd PID 1 reports READY=1 ($NOTIFY_SOCKET): bound by the supervisor
    in the container's /run/host while it is still writable, owned by the container's root so it may
    send to it."""

    def describe(self) -> str:
        return "bind the notify socket /run/host/notify"

    def execute(self, ctx: Context) -> None:
        dfd = rootfs.open_in_root(ctx.root_fd, "run/host", os.O_PATH | os.O_DIRECTORY)
        try:
            path = f"/proc/self/fd/{dfd}/notify"
            sock = libc.unix_datagram_socket(path)
            try:
                if rootfs.OWNER is not None:
                    os.chown(path, rootfs.OWNER, rootfs.OWNER)
                os.chmod(path, 0o600)
            except BaseException:
                os.close(sock)
                raise
        finally:
            os.close(dfd)
        ctx.notify_fd = sock
