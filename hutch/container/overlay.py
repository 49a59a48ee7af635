"""overlayfs: the overlay roots (-x, --volatile=overlay, thin clones) and the mount of an overlay whose
layers are detached mounts, on kernels that take them as layers and on those that do not."""

from __future__ import annotations

from hutch.container import rootfs
from hutch.container.plan import Context, Op
from hutch.linux import libc
from hutch.linux import posixos as os
from hutch.linux.libc import MS_NODEV, MS_NOSUID

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

PR_SET_SECUREBITS = 28
SECBIT_NO_SETUID_FIXUP = 1 << 2


def mount_layers(
    mount: Callable[[Callable[[str], str]], None],
    layers: list[int],
    where: str,
    make: bool = False,
) -> None:
    """Run MOUNT(fix), an overlayfs mount whose options name the detached mounts LAYERS by their
    /proc/self/fd paths, through fix(options). Kernels before 6.15 (Debian 12's 6.1, 13's 6.12)
    refuse a layer outside the mounter's mount namespace ("failed to clone lowerpath", EINVAL):
    then each layer's clone is attached under a private tmpfs on the directory WHERE, which the
    overlay covers, and MOUNT runs again with fix() naming the clones. The layers themselves stay
    detached (-x keeps its tmpfs across reboots; a mount once attached cannot be again)."""
    try:
        mount(lambda opts: opts)
        return
    except OSError as e:
        if e.errno != 22 or not layers:
            raise
    import re

    if make:
        os.mkdir(where, 0o700)
    # Made detached and attached whole: WHERE may be a /proc/self/fd path, and a path through such
    # a link reaches the directory under a mount on it, not the mount.
    tmp = libc.fsmount_detached(
        "tmpfs", {"mode": "0700"}, mount_flags=libc.MOUNT_ATTR_NOSUID | libc.MOUNT_ATTR_NODEV
    )
    clones: dict[str, int] = {}
    try:
        for i in range(len(layers)):
            os.mkdir(f"{rootfs.fd_path(tmp)}/{i}", 0o700)
        wfd = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.move_mount(tmp, "", to_dirfd=wfd)
        finally:
            os.close(wfd)
        for i, fd in enumerate(layers):
            try:
                flags = libc.OPEN_TREE_CLONE | libc.OPEN_TREE_CLOEXEC | libc.AT_EMPTY_PATH
                layer = clones[str(fd)] = libc.open_tree(fd, "", flags)
            except OSError as e:
                # These kernels clone no mount made by fsmount() either (-x's tmpfs): attach the
                # original. Its writes then cannot outlive this boot's mount namespace.
                if e.errno != 22:
                    raise
                layer = fd
            dfd = os.open(f"{rootfs.fd_path(tmp)}/{i}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                libc.move_mount(layer, "", to_dirfd=dfd)
            except OSError as e:
                raise OSError(
                    e.errno or 22,
                    f"Failed to attach an overlay layer: {e.strerror}. On this kernel (before 6.15) an"
                    " ephemeral machine's writes cannot survive its reboot",
                ) from None
            finally:
                os.close(dfd)

        def fix(opts: str) -> str:
            return re.sub(
                r"/proc/self/fd/(\d+)(?=[/,:]|$)",
                lambda m: f"/proc/self/fd/{clones.get(m.group(1), int(m.group(1)))}",
                opts,
            )

        mount(fix)
    finally:
        os.close(tmp)
        for fd in clones.values():
            os.close(fd)


class RootOverlay(Op):
    """Ephemeral and --volatile=overlay roots: the image as the lower layer, writes go to UPPER.

    With upper=None a tmpfs holds upper and work; it is mounted on the root path first and the image
    is reached through a detached clone taken beforehand, so nothing is left on the host afterwards.
    With LAYERS (a thin clone's directory) upper and work are LAYERS/upper and LAYERS/work, reached
    through a clone of LAYERS that is idmapped like the image, so files the container writes are kept
    with the image's own owners.
    """

    def __init__(self, image: str, upper: str | None, work: str | None, layers: str | None = None) -> None:
        self.image = image
        self.upper = upper
        self.work = work
        self.layers = layers

    def describe(self) -> str:
        if self.layers:
            return f"root: overlay lower={self.image} upper={self.layers}/upper"
        where = "tmpfs" if self.upper is None or self.upper.startswith("/proc/self/fd/") else self.upper
        return f"root: overlay lower={self.image} upper={where}"

    def execute(self, ctx: Context) -> None:
        lower_fd = ctx.clone_tree(self.image, recursive=False)
        layers_fd = -1
        try:
            upper, work = self.upper, self.work
            if self.layers:
                layers_fd = ctx.clone_tree(self.layers, recursive=False)
                upper = rootfs.fd_path(layers_fd) + "/upper"
                work = rootfs.fd_path(layers_fd) + "/work"
            elif upper is None or work is None:
                libc.mount("tmpfs", ctx.root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
                os.mkdir(ctx.root + "/.upper", 0o755)
                os.mkdir(ctx.root + "/.work", 0o700)
                upper, work = ctx.root + "/.upper", ctx.root + "/.work"
            if not self.layers:
                # The image root's mode and owner become the overlay root's: copy them onto the upper.
                st = os.stat(rootfs.fd_path(lower_fd))
                os.chmod(upper, st.st_mode & 0o7777)
                os.chown(upper, st.st_uid, st.st_gid)
            assert upper is not None and work is not None
            opts = f"lowerdir={rootfs.fd_path(lower_fd)},upperdir={upper},workdir={work}"
            as_owner = bool(self.layers and ctx.idmap and rootfs.OWNER is not None)

            def mount(fix: Callable[[str], str]) -> None:
                o = fix(opts)
                if as_owner:
                    # overlayfs works in its upper layer with the mounter's credentials. Host root has
                    # no ID on an idmapped upper (EOVERFLOW), so mount as the container's root, keeping
                    # the capabilities a change of file-system UID would otherwise clear.
                    libc.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP)
                    libc.setfsid(rootfs.OWNER or 0, rootfs.OWNER or 0)
                    try:
                        libc.mount("overlay", ctx.root, "overlay", 0, o, what=ctx.root)
                    finally:
                        libc.setfsid(0, 0)
                        libc.prctl(PR_SET_SECUREBITS, 0)
                else:
                    libc.mount("overlay", ctx.root, "overlay", 0, o, what=ctx.root)

            # Where the tmpfs on the root holds upper and work already, the layers go beside them.
            on_tmpfs = upper == ctx.root + "/.upper"
            where = ctx.root + "/.layers" if on_tmpfs else ctx.root
            detached = [fd for fd in (lower_fd, layers_fd) if fd >= 0]
            if upper.startswith("/proc/self/fd/"):  # -x: upper and work on a tmpfs mounted nowhere
                detached.append(int(upper.split("/")[4]))
            mount_layers(mount, detached, where, make=on_tmpfs)
        finally:
            os.close(lower_fd)
            if layers_fd >= 0:
                os.close(layers_fd)
        ctx.open_root()
