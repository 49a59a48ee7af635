"""--bind, --bind-ro, --tmpfs, --overlay, --overlay-ro and --inaccessible as mount plan operations.

Imported only when one of these options is given.
"""

from __future__ import annotations

from hutch.container import overlay, plan, rootfs
from hutch.container.plan import Inaccessible, Mount, Op
from hutch.container.prepare import Prepared, make_temp_dir
from hutch.linux import caps
from hutch.linux import posixos as os
from hutch.linux.libc import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def custom_mount_ops(prep: Prepared) -> list[Op]:
    """--bind, --tmpfs, --overlay and --inaccessible, parents before children (as nspawn sorts them)."""
    s = prep.settings
    items: list[tuple[str, int, Op]] = []
    for i, b in enumerate(s.binds):
        src = b.source
        if src == "":
            src = make_temp_dir(prep, "/var/tmp", "hutch-bind-")
        kind = "dir" if b.image_relative or os.path.isdir(src) else "file"
        if b.image_relative:
            kind = "auto"
        flags = MS_BIND | (MS_REC if b.recursive else 0)
        op = BindOp(src, b.destination, flags, kind, b.read_only, b.image_relative)
        if b.idmap in ("rootidmap", "owneridmap"):
            op.owner_to = _owner_target(prep, b.idmap)
        elif b.idmap == "noidmap":
            op.owner_to = -2  # an ordinary bind: host IDs unmapped under a user namespace
        items.append((b.destination, i, op))
    shift = prep.uid_range.base if prep.uid_range else 0
    owner_opts = (
        f",uid={shift},gid={shift}" if shift and "uid=" not in "".join(t.options for t in s.tmpfs) else ""
    )
    for i, t in enumerate(s.tmpfs):
        flags, data = tmpfs_flags(t.options)
        items.append(
            (t.destination, 1000 + i, Mount("tmpfs", t.destination, "tmpfs", flags, data + owner_opts))
        )
    for i, o in enumerate(s.overlays):
        lowers = list(o.lowers)
        upper = o.upper
        work = None
        if not o.read_only:
            if upper == "":
                upper = make_temp_dir(prep, "/var/tmp", "hutch-overlay-")
                os.mkdir(upper + "/upper")
                os.mkdir(upper + "/work")
                if prep.uid_range is not None and prep.ownership != "map":
                    # (Idmapped layers show the host's root as the container's: no chown then.)
                    os.chown(upper + "/upper", prep.uid_range.base, prep.uid_range.base)
                work = upper + "/work"
                upper = upper + "/upper"
            elif not upper.startswith("+"):
                parent, base = os.path.split(upper)
                work = make_temp_dir(prep, parent, f".#{base}.overlay-work-")
        else:
            if upper:
                lowers.append(upper)
            upper = ""
        items.append((o.destination, 2000 + i, _OverlayOp(lowers, upper, work, o.destination, o.read_only)))
    for i, p in enumerate(s.inaccessible):
        items.append((p, 3000 + i, Inaccessible(p)))
    items.sort(key=lambda t: (t[0].count("/") if t[0] != "/" else 0, t[1]))
    return [op for _, _, op in items]


def _owner_target(prep: Prepared, mode: str) -> int:
    """The host-side ID the bind source's owner is to show as: the container's root, or --user."""
    base = prep.uid_range.base if prep.uid_range else 0
    return base + (prep.user_ids[0] if mode == "owneridmap" else 0)


class BindOp(Mount):
    def __init__(
        self, source: str, dest: str, flags: int, kind: str, read_only: bool, in_root: bool
    ) -> None:
        super().__init__(
            source, dest, None, flags, kind=kind, read_only_after=read_only, source_in_root=in_root
        )
        # -1: host IDs as themselves (idmapped through the container's namespace); -2: not idmapped;
        # else rootidmap/owneridmap: the source's owner shows as this host ID, everyone else as nobody.
        self.owner_to = -1

    def describe(self) -> str:
        extra = f" (its owner as {self.owner_to})" if self.owner_to >= 0 else ""
        return super().describe() + extra

    def execute(self, ctx: plan.Context) -> None:
        if self.kind == "auto" and self.source is not None:
            fd = rootfs.open_in_root(ctx.root_fd, self.source)
            try:
                self.kind = "dir" if os.path.isdir(rootfs.fd_path(fd)) else "file"
            finally:
                os.close(fd)
        if self.owner_to >= 0 and self.source:
            self._attach(ctx, self._owner_mapped())
            return
        if ctx.idmap and self.source and not self.source_in_root and self.owner_to == -1:
            # Host files keep their owners inside (upstream shows them as nobody: its issue #5900).
            try:
                tree = ctx.clone_tree(self.source, recursive=bool(self.flags & MS_REC))
            except OSError:
                tree = -1  # a file system without idmapped mounts: an ordinary bind
            if tree >= 0:
                self._attach(ctx, tree)
                return
        super().execute(ctx)

    def _owner_mapped(self) -> int:
        """A copy of the source's mount tree on which its owner's files show as self.owner_to."""
        from hutch.container.userns import mapping_userns
        from hutch.linux import libc

        assert self.source is not None
        st = os.stat(self.source)
        rec = libc.AT_RECURSIVE if self.flags & MS_REC else 0
        tree = libc.open_tree(-100, self.source, libc.OPEN_TREE_CLONE | libc.OPEN_TREE_CLOEXEC | rec)
        try:
            userns = mapping_userns(f"{st.st_uid} {self.owner_to} 1\n", f"{st.st_gid} {self.owner_to} 1\n")
            try:
                libc.mount_setattr_idmap(tree, userns, bool(self.flags & MS_REC))
            finally:
                os.close(userns)
        except OSError as e:
            os.close(tree)
            raise OSError(e.errno, f"Failed to map ids for bind mount {self.source}: {e.strerror}") from e
        return tree

    def _attach(self, ctx: plan.Context, tree: int) -> None:
        from hutch.linux import libc

        try:
            target = ctx.target(self.dest, self.kind)
            try:
                libc.move_mount(tree, "", to_dirfd=target)
            except OSError as e:
                raise OSError(e.errno, f"Failed to bind {self.source} on {self.dest}: {e.strerror}") from e
            finally:
                os.close(target)
        finally:
            os.close(tree)
        if self.read_only_after:
            plan.RemountReadOnly(self.dest).execute(ctx)


class _OverlayOp(Op):
    def __init__(self, lowers: list[str], upper: str, work: str | None, dest: str, read_only: bool) -> None:
        self.lowers = lowers
        self.upper = upper
        self.work = work
        self.dest = dest
        self.read_only = read_only

    def describe(self) -> str:
        return f"mount overlay on {self.dest} lower={':'.join(self.lowers)} upper={self.upper or '-'}"

    def execute(self, ctx: plan.Context) -> None:
        from hutch.linux import libc

        fds: list[int] = []
        clones: list[int] = []
        # Layers idmapped as the image is (the default user namespace with ownership 'map').
        mapped = ctx.idmap and ctx.userns_fd >= 0

        def host(p: str) -> str:
            if p.startswith("+"):
                fd = rootfs.open_in_root(ctx.root_fd, p[1:])
                fds.append(fd)
                return rootfs.fd_path(fd)
            if mapped:
                # Host layers idmapped as the image is: the container's root may write the upper one
                # (and sees host root's files as its own), where a plain layer gave it EACCES.
                fd = ctx.clone_tree(p, recursive=False)
                fds.append(fd)
                clones.append(fd)
                return f"/proc/self/fd/{fd}"
            return p

        try:
            # overlayfs lists lower layers top first; the option lists them bottom first.
            opts = "lowerdir=" + ":".join(host(p) for p in reversed(self.lowers))
            if not self.read_only:
                work = self.work
                if self.upper.startswith("+"):
                    upper = host(self.upper)
                    work = work or _sibling_work_dir(upper)
                elif work is None:
                    raise OSError(22, f"--overlay: no work directory for {self.upper}")
                elif mapped:
                    # overlayfs wants upper and work on one mount: clone their common parent once.
                    parent, upper_name = os.path.split(self.upper)
                    wparent, work_name = os.path.split(work)
                    if wparent != parent:
                        raise OSError(22, f"--overlay: {work} is not beside {self.upper}")
                    base = host(parent)
                    upper, work = f"{base}/{upper_name}", f"{base}/{work_name}"
                else:
                    upper = host(self.upper)
                opts += f",upperdir={upper},workdir={work}"
            target = ctx.target(self.dest)
            fds.append(target)

            def mount(fix: Callable[[str], str]) -> None:
                o = fix(opts)
                if mapped and rootfs.OWNER is not None:
                    # overlayfs works its layers with its creator's credentials: through idmapped layers
                    # the host's root has no ID (EOVERFLOW, a read-only mount); the container's root has.
                    options = dict(kv.split("=", 1) for kv in o.split(","))
                    tree = libc.fsmount_detached(
                        "overlay",
                        options,
                        mount_flags=libc.MOUNT_ATTR_RDONLY if self.read_only else 0,
                        creator=lambda: caps.setfsid_keeping_caps(rootfs.OWNER or 0),
                    )
                    try:
                        libc.move_mount(tree, "", to_dirfd=target)
                    finally:
                        os.close(tree)
                else:
                    libc.mount(
                        "overlay",
                        rootfs.fd_path(target),
                        "overlay",
                        MS_RDONLY if self.read_only else 0,
                        o,
                        what=self.dest,
                    )

            overlay.mount_layers(mount, clones, rootfs.fd_path(target))
        finally:
            for fd in fds:
                os.close(fd)


def _sibling_work_dir(upper: str) -> str:
    real = os.path.realpath(upper)
    work = os.path.join(os.path.dirname(real), f".#{os.path.basename(real)}.overlay-work")
    os.makedirs(work, exist_ok=True)
    return work


# Mount flags among --tmpfs= options (`rw,nosuid,noexec`, as upstream's test writes them): what they set
# and what they clear; tmpfs itself would refuse them as data (EINVAL).
_FLAG_OPTIONS = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY), "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV), "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
}  # fmt: skip


def tmpfs_flags(options: str) -> tuple[int, str]:
    """(mount flags, tmpfs data) for --tmpfs= OPTIONS: nosuid and nodev unless they say otherwise."""
    flags = MS_NOSUID | MS_NODEV
    data = []
    for opt in options.split(","):
        if opt in _FLAG_OPTIONS:
            on, off = _FLAG_OPTIONS[opt]
            flags = (flags | on) & ~off
        elif opt:
            data.append(opt)
    return flags, ",".join(data) or "mode=0755"
