"""Host-side preparation: find and lock the image (hutch.container.locate), validate what can be
validated before anything changes, create temporary directories, and turn Settings into the mount plan.

Everything here runs in the supervisor before the first fork, so bad input fails with nothing mounted.
"""

from __future__ import annotations

import fcntl
import sys

from hutch.container import etcfiles, locate, plan, rootfs, userns
from hutch.container.etcfiles import read_host
from hutch.container.overlay import RootOverlay
from hutch.container.payload import DEFAULT_PATH
from hutch.container.plan import (
    Inaccessible,
    MakeSlave,
    Mkdirs,
    Mount,
    Op,
    PivotRoot,
    PopulateDev,
    RemountReadOnly,
    RootBind,
    RootVolatileYes,
    WriteFile,
)
from hutch.errors import ImageError, SetupError, UsageError
from hutch.images import thin
from hutch.linux import posixos as os
from hutch.linux.fsutil import gc_temp_dirs, release_lock_file
from hutch.linux.libc import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME
from hutch.paths import Paths
from hutch.settings.model import Settings
from hutch.settings.values import SIGRTMIN, parse_private_users, valid_machine_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTAINER_MANAGER = "hutch"

# /proc files that leak host state or allow host actions (nspawn's mount table; see security.md).
PROC_MASKED = ("kallsyms", "kcore", "keys", "sysrq-trigger", "timer_list")
PROC_READ_ONLY = ("acpi", "apm", "asound", "bus", "fs", "irq", "scsi")


class Prepared:
    """A container ready to launch: names, root, environment and the two halves of the mount plan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = ""
        self.hostname = ""
        self.image = ""
        self.root = ""
        self.thin_lower = ""
        # The tree the container's root is made from: the image directory, a thin clone's source, or
        # a disk image's root partition (self.raw, hutch.images.rawimage.Mounted) as /proc/self/fd/N.
        self.tree = ""
        self.raw: Any = None
        self.state_dir = ""
        # --property limits and the cgroup backend that applies them (hutch.container.limits).
        self.limits: dict[str, object] = {}
        self.limit_backend: Any = None
        # machine-NAME.scope; self.cgroup is its payload leaf when the supervisor has one of its own.
        self.cgroup_scope: str | None = None
        self.supervisor_cgroup: str | None = None
        # Where systemd is PID 1: the machine's unit's cgroup (kept across reboots; hutch.container.systemd).
        self.unit_cgroup: str | None = None
        self.link: Any = None  # -n: the veth pair's names and addresses (hutch.container.network)
        self.net_extra: Any = None  # --network-interface, --network-veth-extra (network.Extra)
        self.netns_fd = -1  # --network-namespace-path
        self.port_listeners: list[Any] = []  # -p: listening sockets, bound before the machine starts
        self.relay_pid = -1
        self.dhcp_sock: Any = None  # -n: the machine's DHCP server's socket (hutch.container.dhcp)
        self.lease: Any = None
        self.dns: list[str] = []  # the IPv4 nameservers given to the machine, for DHCP
        # -n: the host's nameservers, for the machine's DNS forwarder (hutch.container.dns), and it.
        self.dns_upstream: list[str] | None = None
        self.dns_forwarder: Any = None
        self.router6: Any = None  # -n: RAs and DHCPv6 on the host side (hutch.container.dhcp6)
        # Every payload gets $NOTIFY_SOCKET (/run/host/notify), bound by the supervisor, as upstream's.
        # wait_ready: "up" means READY=1 came (a systemd init, or --notify-ready=yes), not the exec.
        self.wait_ready = False
        self.notify_fd = -1
        self.uuid = ""
        self.console = "read-only"
        self.kill_signal = 9
        self.env: dict[str, str] = {}
        self.outer_ops: list[Op] = []
        self.inner_ops: list[Op] = []
        self.cleanup_dirs: list[str] = []
        self.cgroup: str | None = None
        self.devices_cgroup: str | None = None
        self.lock_fd = -1
        self.keep_fds: list[int] = []  # closed by the supervisor at the end; the child closes them too
        self.keep_caps: frozenset[int] = frozenset()
        self.uid_range: userns.UidRange | None = None
        self.ownership = "off"
        self.chown_fallback = False  # ownership 'map' may become 'chown' (hutch.container.plan)
        self.seccomp: bytes | None = None
        self.bound_users: list[Any] = []  # --bind-user: binduser.BoundUser each
        self.user_ids = (0, 0)  # --user='s IDs inside the container (the credentials are theirs)


def _random_hex(n: int) -> str:
    return os.urandom(n).hex()


def _format_uuid(h: str) -> str:
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _new_uuid() -> str:
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b).hex()


_HOST_OS: list[bytes] = []


def _host_os_release() -> bytes:
    if not _HOST_OS:
        _HOST_OS.append(read_host("/etc/os-release") or read_host("/usr/lib/os-release") or b"")
    return _HOST_OS[0]


def _sanitize_hostname(name: str) -> str:
    out = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "-" for c in name)
    return out.strip(".-")[:64]


def make_temp_dir(prep: Prepared, base: str = "/var/tmp", prefix: str = "hutch-") -> str:
    """A directory for this run only, removed at its end. It is flocked for the run's life: a run
    SIGKILLed before it could remove its directories leaves them unlocked, and the next run that
    makes one of the same kind (or `hutch clean`) removes them."""
    os.makedirs(base, exist_ok=True)
    gc_temp_dirs(base, prefix)
    path = os.path.join(base, prefix + _random_hex(8))
    os.mkdir(path, 0o755)
    prep.cleanup_dirs.append(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    prep.keep_fds.append(fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return path


# The oldest kernel hutch runs on: Debian 12's, which the systemd-host lane boots (tests/vm). Older ones
# lack pieces it needs with no fallback (idmapped tmpfs and overlay layers, the new mount API's details).
MIN_KERNEL = (6, 1)


def check_kernel(release: str) -> None:
    nums = []
    for part in release.split("-")[0].split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        nums.append(int(digits) if digits else 0)
    if tuple(nums) < MIN_KERNEL:
        want = ".".join(map(str, MIN_KERNEL))
        raise SetupError(
            f"hutch needs Linux {want} or newer; this kernel is {release}.",
            f"boot a kernel of {want} or later (Debian 12's is the oldest hutch is tested on)",
        )


def prepare(s: Settings, paths: Paths) -> Prepared:
    """Everything the run needs that can be done before a process starts. A failure gives back
    what was taken so far (the image's lock, a UID range, addresses, temporary directories)."""
    check_kernel(os.uname().release)
    prep = Prepared(s)
    try:
        return _prepare(prep, s, paths)
    except BaseException:
        cleanup(prep)
        raise


def _prepare(prep: Prepared, s: Settings, paths: Paths) -> Prepared:
    image = locate.resolve_image(s, paths)
    prep.image = image
    prep.root = image
    raw = os.path.isfile(image)
    # A thin clone (hutch clone --thin): IMAGE holds an overlay's upper and work directories, and the
    # tree below them is the read-only image its record beside IMAGE names.
    prep.thin_lower = "" if raw else thin.read(image, os.stat(image).st_ino) or ""
    if prep.thin_lower and not os.path.isdir(prep.thin_lower):
        raise ImageError(
            f"Image {image} is a thin clone whose source {prep.thin_lower} is gone.",
            "remove it with 'hutch remove', or clone another",
        )
    tree = prep.thin_lower or image
    if not raw and not s.command and not s.boot:
        locate.oci_process(s, image)
    if prep.thin_lower and (s.ephemeral or s.volatile != "no"):
        raise ImageError(
            f"Image {image} is a thin clone; --ephemeral and --volatile do not stack on it.",
            "run them on its source image, or make a full copy with 'hutch clone'",
        )

    if s.machine:
        name = s.machine
    else:
        base = os.path.basename(image)
        name = _sanitize_hostname(base[:-4] if raw and base.endswith(".raw") else base) or "container"
        if not valid_machine_name(name):
            raise UsageError(f"Failed to determine machine name automatically from {image}.", "use -M NAME")
    if s.ephemeral:
        name = f"{name[:47]}-{_random_hex(8)}"
    prep.name = name
    prep.hostname = s.hostname or name

    # An image marked read-only (chattr +i, as `hutch read-only` and systemd set it; for a disk image,
    # a file without write permission) runs read-only.
    from hutch.linux.fsutil import is_immutable

    read_only = s.read_only or s.volatile in ("yes", "state") or is_immutable(image)
    if raw:
        from hutch.images import rawimage

        read_only = read_only or not rawimage.writable_file(image)
    prep.lock_fd = locate.lock_image(
        image, exclusive=not (read_only or s.ephemeral or s.volatile == "overlay")
    )
    usr_tree = ""
    if raw:
        # Its partitions mounted nowhere and held by this process (so by nothing once it is gone);
        # the container's root is attached from them onto a directory of this run's own.
        prep.raw = rawimage.open_image(image, read_only or s.ephemeral or s.volatile != "no")
        prep.keep_fds += prep.raw.fds()
        tree = prep.raw.root
        usr_tree = next((f"/proc/self/fd/{fd}" for where, fd in prep.raw.extra if where == "usr"), "")
        prep.root = make_temp_dir(prep, os.path.join(paths.state_dir, "roots"), "root-")
    prep.tree = tree
    if s.pivot_root:
        # What the container runs is the directory pivoted to: the checks below look there.
        tree = os.path.join(tree, s.pivot_root[0].lstrip("/"))
        if not os.path.isdir(tree):
            raise ImageError(f"--pivot-root={s.pivot_root[0]}: no such directory in {image}.")

    def in_tree(path: str) -> bool:
        if usr_tree and path.startswith("usr/"):
            return rootfs.exists_in_root(usr_tree, path[4:])
        return rootfs.exists_in_root(tree, path)

    has_os_release = in_tree("etc/os-release") or in_tree("usr/lib/os-release")
    if s.boot and not has_os_release and _check_os_release():
        raise ImageError(
            f"Directory {image} doesn't look like an OS root directory (os-release file is "
            "missing). Refusing.",
            "an OS tree needs /etc/os-release or /usr/lib/os-release",
        )
    if not s.boot and not (usr_tree or os.path.isdir(os.path.join(tree, "usr"))) and s.volatile == "no":
        raise ImageError(
            f"Directory {image} doesn't look like it has an OS tree (/usr/ directory is missing). Refusing.",
            "an OS tree needs at least /usr",
        )
    if s.volatile == "yes" and not (usr_tree or os.path.isdir(os.path.join(tree, "usr"))):
        raise ImageError(f"Directory {image}/usr is missing; --volatile=yes needs it.")
    _user_namespace(prep, paths, read_only)

    # Machine identity: --uuid, else a valid machine-id in the image, else random.
    mid = (rootfs.read_file_in_root(tree, "etc/machine-id") or "").strip()
    if s.uuid:
        prep.uuid = s.uuid
    elif len(mid) == 32 and all(c in "0123456789abcdef" for c in mid):
        prep.uuid = mid
    else:
        prep.uuid = _new_uuid()

    console = s.console
    tty = os.isatty(0) and os.isatty(1)
    if console is None:
        console = "interactive" if tty else "read-only"
    elif console == "autopipe":
        console = "interactive" if tty else "pipe"
    prep.console = console
    if console == "pipe" and s.boot and not s.quiet:
        # As upstream: the pipes go to PID 1 as they are, and systemd writes its boot status to
        # /dev/console only, which this mode has none of. Said, rather than left to look like a hang.
        print(
            "hutch: --console=pipe gives the booted init no /dev/console: its boot messages go nowhere. "
            "Hint: --console=read-only shows them (the default off a terminal).",
            file=sys.stderr,
        )
    prep.kill_signal = s.kill_signal or (SIGRTMIN + 3 if s.boot else 9)

    prep.env = _environment(prep, console)
    prep.state_dir = paths.state_dir
    _network(prep, paths)
    if s.network_masquerade and not s.network_veth:
        raise UsageError("--network-masquerade needs a veth: add -n or --network-zone=.")
    if s.ports:
        if not s.network_veth:
            raise UsageError("--port needs a veth: add -n or --network-zone=.")
        from hutch.container import ports

        prep.port_listeners = ports.listen(s.ports)
    if s.properties:
        from hutch.container import limits

        prep.limits = limits.parse_all(s.properties)
    prep.env["NOTIFY_SOCKET"] = "/run/host/notify"
    if s.notify_ready is not None:
        prep.wait_ready = s.notify_ready
    else:
        prep.wait_ready = s.boot and (in_tree("usr/lib/systemd/systemd") or in_tree("lib/systemd/systemd"))
    _security(prep, paths)
    if s.user:
        # Checked again inside the container; failing here means nothing has been set up yet.
        from hutch.container.payload import resolve_user

        user = resolve_user(s.user, rootfs.read_file_in_root(tree, "etc/passwd"), None)
        prep.user_ids = (user.uid, user.gid)
    if s.bind_users:
        from hutch.container import binduser

        assert prep.uid_range is not None  # cmdline.verify() refuses --bind-user without one
        prep.bound_users = binduser.resolve(s, tree)
        prep.uid_range.extra_uids = [(u.inner, u.host_uid) for u in prep.bound_users]
        prep.uid_range.extra_gids = [(u.inner, u.host_gid) for u in prep.bound_users]
    _check_sources(s, tree)
    _build_plan(prep, paths, read_only)
    return prep


def _user_namespace(prep: Prepared, paths: Paths, read_only: bool) -> None:
    """Pick and lock the UID range, and decide how the image's files get their owners inside."""
    s = prep.settings
    mode, base, count = parse_private_users(s.private_users)
    if mode == "no":
        if not s.quiet:
            print(
                "hutch: warning: --private-users=no: the container's root is the host's root; this "
                "container is no security boundary.",
                file=sys.stderr,
            )
        return
    owner = os.stat(prep.tree).st_uid
    rng = userns.acquire(mode, base, count, prep.name, paths.state_dir, owner)
    prep.uid_range = rng
    own = s.private_users_ownership
    if mode == "identity":
        own = "off"
    elif own == "auto" or (
        own == "chown" and (read_only or s.ephemeral or s.volatile != "no" or prep.thin_lower)
    ):
        # A shared or read-only image is never chowned; auto falls back to chown where the image's
        # file system cannot be idmapped (plan.Context.chown_instead), as upstream's does.
        prep.chown_fallback = own == "auto" and not (
            read_only or s.ephemeral or s.volatile != "no" or prep.thin_lower
        )
        own = "map"
    if own == "chown":
        userns.chown_image(prep.tree, rng.base)
    prep.ownership = own


def _network(prep: Prepared, paths: Paths) -> None:
    s = prep.settings
    if s.network_namespace_path:
        if (
            s.network_veth
            or s.network_interfaces
            or s.network_veth_extra
            or s.network_macvlan
            or s.network_ipvlan
        ):
            raise UsageError(
                "--network-namespace-path= cannot be combined with other network options.",
                "the machine joins that namespace as it is",
            )
        from hutch.container import network

        prep.netns_fd = network.open_netns(s.network_namespace_path)
        prep.keep_fds.append(prep.netns_fd)
        return
    if s.network_bridge and s.network_zone:
        raise UsageError("--network-bridge= and --network-zone= are mutually exclusive.")
    if s.network_interfaces or s.network_veth_extra or s.network_macvlan or s.network_ipvlan:
        from hutch.container import network

        prep.net_extra = network.check_extra(
            s.network_interfaces, s.network_veth_extra, s.network_macvlan, s.network_ipvlan
        )
    if s.network_veth:
        from hutch.container import network

        if s.network_bridge:
            prep.link = network.allocate_bridge(prep.name, s.network_bridge)
        elif s.network_zone:
            prep.link = network.allocate_zone(prep.name, s.network_zone, paths.state_dir)
        else:
            prep.link = network.allocate(prep.name, paths.state_dir)


def _security(prep: Prepared, paths: Paths) -> None:
    """The capabilities the payload keeps and its seccomp program (compiled once, then cached)."""
    from hutch.container import security
    from hutch.linux import caps

    s = prep.settings
    # Only what we hold can be kept (this host's bounding set lacks CAP_SYS_RESOURCE, for one).
    held = caps.current("CapPrm")
    keep = caps.retained(s.capabilities, s.drop_capabilities, s.private_network)
    nbs = caps.NUMBERS["NET_BIND_SERVICE"]
    asked = s.capabilities | s.ambient_capabilities
    if prep.uid_range is not None and not s.private_network and nbs not in asked:
        # On the host's network a user namespace's root cannot bind low ports anyway: say so, as
        # upstream does, rather than hold a capability that only looks like it works.
        keep = keep - {nbs}
    prep.keep_caps = frozenset(c for c in keep if held >> c & 1)
    if (os.getenv("HUTCH_SECCOMP") or "1") != "0" or s.suppress_sync:
        prep.seccomp = security.program(
            prep.keep_caps, s.syscall_allow, s.syscall_deny, paths.cache_dir, s.suppress_sync
        )


def _check_sources(s: Settings, image: str) -> None:
    for b in s.binds:
        if b.source and not b.image_relative and not os.path.exists(b.source):
            raise UsageError(
                f"Failed to stat {b.source}: No such file or directory",
                "the source of --bind must exist on the host",
            )
        if b.image_relative and not rootfs.exists_in_root(image, b.source):
            raise UsageError(f"Failed to stat +{b.source} in the image: No such file or directory")
    for o in s.overlays:
        for p in [*o.lowers, o.upper]:
            if p and not p.startswith("+") and not os.path.isdir(p):
                raise UsageError(f"Overlay source {p} is not a directory")
            if "," in p or ":" in p:
                raise UsageError(f"Overlay path {p!r} may not contain ',' or ':'")


def _environment(prep: Prepared, console: str) -> dict[str, str]:
    s = prep.settings
    from hutch.images import osrelease

    host_os = osrelease.parse(_host_os_release().decode(errors="replace"))
    term = (os.getenv("TERM") or "vt220") if console in ("interactive", "pipe") else "vt220"
    env = {
        "PATH": DEFAULT_PATH,
        "container": os.getenv("HUTCH_CONTAINER_SERVICE") or CONTAINER_MANAGER,
        "container_uuid": _format_uuid(prep.uuid),
        "TERM": term,
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
    }
    for key in ("ID", "VERSION_ID", "BUILD_ID", "VARIANT_ID", "IMAGE_ID", "IMAGE_VERSION"):
        if key in host_os:
            env["container_host_" + key.lower()] = host_os[key]
    if s.credentials:
        env["CREDENTIALS_DIRECTORY"] = plan.Credentials.DIR
    for kv in s.setenv:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def _api_vfs_writable() -> str:
    """$SYSTEMD_NSPAWN_API_VFS_WRITABLE, upstream's debugging knob: 'yes' leaves /proc/sys and /sys
    writable, 'network' /proc/sys/net; anything else (the default) keeps them read-only."""
    v = (os.getenv("SYSTEMD_NSPAWN_API_VFS_WRITABLE") or "").lower()
    if v == "network":
        return v
    return "yes" if v in ("1", "yes", "y", "true", "t", "on") else "no"


def _check_os_release() -> bool:
    """$SYSTEMD_NSPAWN_CHECK_OS_RELEASE=0 boots a tree without os-release (upstream's knob); a value
    that is no boolean keeps the check, as upstream's does."""
    v = (os.getenv("SYSTEMD_NSPAWN_CHECK_OS_RELEASE") or "").lower()
    return v not in ("0", "no", "n", "false", "f", "off")


def _build_plan(prep: Prepared, paths: Paths, read_only: bool) -> None:
    s = prep.settings
    image = prep.raw.root if prep.raw else prep.image
    ops: list[Op] = [MakeSlave()]
    if s.ephemeral:
        # -x keeps its writes in a tmpfs mounted nowhere, held by the supervisor: starting is O(1) in the
        # image's size on any file system, the writes survive a reboot of the container (as upstream's
        # snapshot does), and even a SIGKILLed run leaves nothing on the host.
        from hutch.linux import libc

        fd = libc.fsmount_detached("tmpfs", {"mode": "0755"})
        prep.keep_fds.append(fd)
        os.mkdir("upper", 0o755, dir_fd=fd)
        os.mkdir("work", 0o700, dir_fd=fd)
        ops.append(RootOverlay(image, f"/proc/self/fd/{fd}/upper", f"/proc/self/fd/{fd}/work"))
    elif s.volatile == "overlay":
        # A tmpfs upper layer in the container's own mount namespace: gone at every reboot, as upstream.
        ops.append(RootOverlay(image, None, None))
    elif s.volatile == "yes":
        ops.append(RootVolatileYes(prep.thin_lower or image, prep.uid_range.base if prep.uid_range else 0))
    elif prep.thin_lower:
        ops.append(RootOverlay(prep.thin_lower, None, None, layers=image))
    else:
        ops.append(RootBind(image))
    if prep.raw and prep.raw.extra:
        ops.append(plan.AttachPartitions(prep.raw.extra))
    if s.pivot_root:
        ops.append(plan.PivotInside(*s.pivot_root))

    base_dirs = ["dev", "proc", "sys", "run", "tmp"]
    if s.volatile != "yes":
        base_dirs.append("etc")
    ops.append(Mkdirs(base_dirs))
    if read_only and s.volatile != "yes":  # --volatile=yes: a writable tmpfs root, /usr read-only
        ops.append(RemountReadOnly("/"))
    if s.volatile == "state":
        shifted = f",uid={prep.uid_range.base},gid={prep.uid_range.base}" if prep.uid_range else ""
        ops.append(
            Mount("tmpfs", "/var", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=0755" + shifted)
        )

    nsd = MS_NOSUID | MS_NODEV
    shift = prep.uid_range.base if prep.uid_range else None
    # With a user namespace the file systems we create belong to the container's root, as nspawn's do.
    own = f",uid={shift},gid={shift}" if shift else ""
    tty_gid = 5 + (shift or 0)
    writable = _api_vfs_writable()  # upstream's knob: "yes" leaves /sys and /proc/sys writable
    sys_ro = 0 if writable == "yes" else MS_RDONLY
    sysfs = Mount("sysfs", "/sys", "sysfs", sys_ro | nsd | MS_NOEXEC)
    mqueue = Mount("mqueue", "/dev/mqueue", "mqueue", nsd | MS_NOEXEC)
    # sysfs and mqueue show the mounter's network and IPC namespaces: in a user namespace they are
    # mounted by the helper that joined the container's (see launch._build_userns).
    late: list[Op] = []
    ops += [
        Mount("tmpfs", "/tmp", "tmpfs", nsd | MS_STRICTATIME, "mode=1777" + own),
        *([sysfs] if shift is None or not s.private_network else []),
        Mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=0755,size=4m,nr_inodes=64k" + own),
        PopulateDev(),
        Mount(
            "devpts",
            "/dev/pts",
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            f"newinstance,ptmxmode=0666,mode=0620,gid={tty_gid}" + (f",uid={shift}" if shift else ""),
        ),
        Mount("tmpfs", "/dev/shm", "tmpfs", nsd | MS_STRICTATIME, "mode=1777" + own),
        *([mqueue] if shift is None else []),
        Mount("tmpfs", "/run", "tmpfs", nsd | MS_STRICTATIME, "mode=0755,size=20%,nr_inodes=800k" + own),
        Mount("tmpfs", "/run/host", "tmpfs", nsd | MS_NOEXEC, "mode=0755,size=1m"),
    ]
    if shift is not None:
        late = [mqueue, *([sysfs] if s.private_network else [])]
    host_os = _host_os_release()
    ops += [
        WriteFile("/run/host/os-release", host_os, 0o444, label="the host's os-release"),
        WriteFile("/run/host/container-manager", (prep.env["container"] + "\n").encode(), 0o444),
        WriteFile("/run/host/container-uuid", (_format_uuid(prep.uuid) + "\n").encode(), 0o444),
        Mkdirs(["/run/host/inaccessible/dir"]),
        WriteFile("/run/host/inaccessible/reg", b"", 0),
        _Chmod000("/run/host/inaccessible/dir"),
        plan.NotifySocket(),
        *(
            [
                plan.Credentials(
                    s.credentials, (shift or 0) + prep.user_ids[0], (shift or 0) + prep.user_ids[1]
                )
            ]
            if s.credentials
            else []
        ),
    ]
    user_binds: list[Op] = []
    if prep.bound_users:
        from hutch.container import binduser

        user_files, user_binds = binduser.ops(prep.bound_users, s.bind_user_shell)
        ops += user_files
    ops += [RemountReadOnly("/run/host", MS_NOSUID | MS_NODEV | MS_NOEXEC), *user_binds]
    if s.binds or s.tmpfs or s.overlays or s.inaccessible:
        # Loaded only when used: the default start-up path does not pay for these options' code.
        from hutch.container.custom_mounts import custom_mount_ops

        ops += custom_mount_ops(prep)
    if s.link_journal not in ("no", "auto"):
        from hutch.container import journal

        ops += journal.ops(s, prep.tree, paths)
    ops += [
        plan.BestEffort(op)
        for op in etcfiles.resolv_conf_ops(prep, read_only) + etcfiles.timezone_ops(prep, read_only)
    ]
    prep.outer_ops = ops

    pns = MS_NOSUID | MS_NODEV | MS_NOEXEC
    inner: list[Op] = [
        plan.ProcMount(pns),
        Mount("proc/sys", "/proc/sys", None, MS_BIND | pns, source_in_root=True, read_only_after=sys_ro > 0),
    ]
    if s.private_network or writable == "network":
        # The network namespace is ours: its sysctls may stay writable.
        inner.append(_RemountWritable("/proc/sys/net"))
    inner.append(plan.BootId())
    inner += late
    inner += [Inaccessible("/proc/" + p, optional=True) for p in PROC_MASKED]
    inner += [
        Mount(
            "proc/" + p,
            "/proc/" + p,
            None,
            MS_BIND | pns,
            source_in_root=True,
            read_only_after=True,
            optional=True,
        )
        for p in PROC_READ_ONLY
    ]
    prep.inner_ops = inner


class _Chmod000(Op):
    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"chmod 000 {self.path}"

    def execute(self, ctx: plan.Context) -> None:
        fd = rootfs.open_in_root(ctx.root_fd, self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fchmod(fd, 0)
        finally:
            os.close(fd)


class _RemountWritable(Op):
    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"bind {self.path} writable"

    def execute(self, ctx: plan.Context) -> None:
        from hutch.linux import libc

        fd = rootfs.open_in_root(ctx.root_fd, self.path)
        try:
            libc.mount(rootfs.fd_path(fd), rootfs.fd_path(fd), None, MS_BIND, what=self.path)
        finally:
            os.close(fd)
        fd = rootfs.open_in_root(ctx.root_fd, self.path)
        try:
            libc.mount(
                None,
                rootfs.fd_path(fd),
                None,
                libc.MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                what=self.path,
            )
        finally:
            os.close(fd)


__all__ = ["PivotRoot", "Prepared", "prepare"]


def cleanup(prep: Prepared) -> None:
    """Remove what prepare() created on the host: ephemeral layers and temporary bind sources."""
    if prep.cleanup_dirs:
        from hutch.linux.fsutil import rm_rf

        for d in prep.cleanup_dirs:
            try:
                rm_rf(d)
            except OSError as e:
                print(f"hutch: Failed to remove {d}: {e.strerror}", file=sys.stderr)
        prep.cleanup_dirs = []
    for fd in prep.keep_fds:
        os.close(fd)
    prep.keep_fds = []
    if prep.raw is not None and not prep.raw.wait_released():
        print(f"hutch: warning: the loop devices of {prep.image} outlive the machine.", file=sys.stderr)
    if prep.lock_fd >= 0:
        release_lock_file(locate.image_lock_path(prep.image), prep.lock_fd)
        prep.lock_fd = -1
    if prep.uid_range is not None:
        prep.uid_range.release()
    for sock, _, _ in prep.port_listeners:
        sock.close()
    prep.port_listeners = []
    if prep.link is not None:
        # No explicit delete at the end: the kernel removes the pair with the machine's network
        # namespace, and deleting it ourselves waits for an RCU grace period (~20 ms) at every stop.
        # A zone's last member must take the bridge with it, though.
        if prep.link.zone:
            from hutch.container import network

            network.leave_zone(prep.link)
        prep.link.release()
