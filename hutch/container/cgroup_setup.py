"""The machine's cgroup: created by the supervisor, joined by the outer child (so PID 1 starts inside
it), seen by PID 1 through its own cgroup namespace as a cgroup2 mount on /sys/fs/cgroup."""

from __future__ import annotations

from hutch.container import plan, rootfs
from hutch.container.prepare import Prepared
from hutch.errors import MachineError
from hutch.linux import cgroups, libc
from hutch.linux import posixos as os


def create(prep: Prepared) -> None:
    root = cgroups.unified_root(os.getenv("HUTCH_CGROUP_ROOT") or cgroups.CGROUP_ROOT)
    if root is None:
        prep.cgroup = None
        return
    scope = cgroups.machine_cgroup(root, prep.name)
    path = scope
    if _populated(scope) and not _drained(scope):
        raise MachineError(
            f"Machine '{prep.name}' is already running (its cgroup {scope} has processes).",
            "pick another name with -M, or stop the running one",
        )
    cgroups.create(scope)
    if os.getenv("HUTCH_READY_FD"):
        # A detached machine (hutch start): upstream's supervisor/payload split. The supervisor moves
        # into machine-NAME.scope/supervisor, out of whatever session started it (and would take it
        # down at logout), and PID 1 gets machine-NAME.scope/payload, delegated. Not for a plain
        # `hutch spawn`: moving a process costs an RCU grace period (~9 ms) at every start.
        path = f"{scope}/payload"
        cgroups.create(path)
        cgroups.create(f"{scope}/supervisor")
        prep.supervisor_cgroup = _own_cgroup(root)
        cgroups.join(f"{scope}/supervisor")
    prep.cgroup_scope = scope
    prep.devices_cgroup = devices_cgroup(prep)
    if prep.uid_range is not None:
        # Delegate the subtree to the container's root, so a systemd guest can create its own cgroups.
        base = prep.uid_range.base
        os.chown(path, base, base)
        for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            try:
                os.chown(os.path.join(path, name), base, base)
            except FileNotFoundError:
                pass
    prep.cgroup = path
    if prep.limits:
        from hutch.container import limits

        backend = limits.backend(prep.name, os.getenv("HUTCH_CGROUP_ROOT"))
        prep.limit_backend = backend
        try:
            backend.prepare(prep.limits)
            backend.apply(prep.limits)
        except BaseException:
            remove(prep)  # a limit this host cannot apply: nothing of the machine is left behind
            raise


def attach(prep: Prepared, pid: int) -> None:
    """Put PID 1 into the v1 hierarchies its limits need (v2: it was cloned into its cgroup)."""
    if prep.limit_backend is not None:
        prep.limit_backend.attach(pid)


# systemd-nspawn's DevicePolicy=closed plus its DeviceAllow= list: the pseudo devices, ptys, tun, fuse.
DEVICE_ALLOW = (
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rw",
    "c 10:200 rwm",
    "c 10:229 rwm",
)
DEVICES_V1 = "/sys/fs/cgroup/devices"


def devices_cgroup(prep: Prepared) -> str | None:
    """Without a user namespace the container's root can create device nodes (CAP_MKNOD): on hosts with a
    v1 devices controller, a cgroup that allows only the pseudo devices keeps them unusable. (With a user
    namespace the kernel refuses to open device nodes the container creates, on every host.)"""
    if prep.uid_range is not None:
        return None
    base = (os.getenv("HUTCH_CGROUP_ROOT") or cgroups.CGROUP_ROOT) + "/devices"
    if not os.path.exists(base + "/devices.deny"):
        return None
    path = f"{base}/machine.slice/machine-{prep.name}.scope"
    os.makedirs(path, exist_ok=True)
    with open(path + "/devices.deny", "w") as f:
        f.write("a")
    for rule in DEVICE_ALLOW:
        with open(path + "/devices.allow", "w") as f:
            f.write(rule)
    return path


def join(prep: Prepared) -> None:
    assert prep.cgroup is not None
    cgroups.join(prep.cgroup)


def mount_inside(ctx: plan.Context) -> None:
    fd = ctx.target("sys/fs/cgroup")
    try:
        libc.mount(
            "cgroup2",
            rootfs.fd_path(fd),
            "cgroup2",
            libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
            what="/sys/fs/cgroup",
        )
    finally:
        os.close(fd)


def _drained(scope: str, timeout: float = 2.0) -> bool:
    """Whether the processes in SCOPE leave it within TIMEOUT. This run holds the machine's name, so
    no live hutch machine owns them: they are the last of one whose supervisor was killed (its
    namespace's processes take tens of milliseconds to exit), or someone else's that stay."""
    from time import monotonic, sleep

    deadline = monotonic() + timeout
    while monotonic() < deadline:
        sleep(0.01)
        if not _populated(scope):
            return True
    return False


def _populated(scope: str) -> bool:
    for dirpath, _dirs, _files in os.walk(scope):
        if not dirpath.endswith("/supervisor") and cgroups.is_populated(dirpath):
            return True
    return False


def _own_cgroup(root: str) -> str | None:
    """Our cgroup2 directory, to return to before the machine's scope is removed."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next((ln.strip()[3:] for ln in f if ln.startswith("0::")), None)
    except OSError:
        return None
    return root + rel if rel is not None else None


def remove(prep: Prepared) -> None:
    if prep.supervisor_cgroup:
        try:
            cgroups.join(prep.supervisor_cgroup)
        except OSError:
            pass
        prep.supervisor_cgroup = None
    if prep.cgroup_scope:
        cgroups.remove_tree(prep.cgroup_scope)
        prep.cgroup_scope = None
    if prep.cgroup:
        cgroups.remove_tree(prep.cgroup)
        prep.cgroup = None
    if prep.limit_backend is not None:
        for path in prep.limit_backend.paths():
            cgroups.remove_tree(path)
    base = os.getenv("HUTCH_CGROUP_ROOT") or cgroups.CGROUP_ROOT
    if not os.path.exists(f"{base}/cgroup.subtree_control"):
        # v1 hierarchies: also those `hutch set-property` added while the machine ran.
        for path in cgroups.v1_scopes(base, f"machine.slice/machine-{prep.name}.scope"):
            cgroups.remove_tree(path)
    if prep.limit_backend is not None:
        prep.limit_backend = None
    if prep.devices_cgroup:
        cgroups.remove_tree(prep.devices_cgroup)
