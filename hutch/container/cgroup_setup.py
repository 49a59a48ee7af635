"""The machine's cgroup: created by the supervisor, joined by the outer child (so PID 1 starts inside
it), seen by PID 1 through its own cgroup namespace as a cgroup2 mount on /sys/fs/cgroup.

Where systemd is PID 1 the tree is systemd's: the machine's unit (a transient machine-NAME.scope, or
the calling service's own under --keep-unit) is asked of it, and only that unit's delegated subtree is
written here (hutch.container.systemd). Elsewhere hutch makes machine.slice/machine-NAME.scope itself.
"""

from __future__ import annotations

from hutch.container import plan, rootfs
from hutch.container.prepare import Prepared
from hutch.errors import MachineError
from hutch.linux import cgroups, libc
from hutch.linux import posixos as os


def create(prep: Prepared) -> None:
    from hutch.container import systemd

    if systemd.booted():
        _create_delegated(prep)
        return
    if prep.settings.slice != "machine.slice":
        raise MachineError(
            f"--slice={prep.settings.slice}: slices are systemd's, and systemd is not PID 1 here.",
            "leave -S out: hutch keeps its machines in machine.slice on this host",
        )
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
    _delegate(prep, path)
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


def _delegate(prep: Prepared, path: str) -> None:
    """Give the payload's cgroup to the container's root, so a systemd guest can create its own."""
    if prep.uid_range is None:
        return
    base = prep.uid_range.base
    os.chown(path, base, base)
    for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
        try:
            os.chown(os.path.join(path, name), base, base)
        except FileNotFoundError:
            pass


# What systemd-nspawn's guests find in their cgroup.controllers.
GUEST_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


def _create_delegated(prep: Prepared) -> None:
    """The machine's unit from systemd, its subtree split as upstream's: the supervisor in
    UNIT/supervisor, PID 1 in UNIT/payload with the guest's controllers. Made once per supervisor; a
    reboot makes only a new payload."""
    from hutch.container import limits, systemd

    root = cgroups.unified_root(cgroups.CGROUP_ROOT)
    if root is None:
        prep.cgroup = None
        return
    if prep.unit_cgroup is None:
        own = cgroups.path_of() or ""
        if prep.settings.keep_unit:
            if not systemd.unit_of(own):
                raise MachineError(
                    f"--keep-unit: this process is in no unit of its own (cgroup {own or '?'}).",
                    "run it from a service with Delegate=yes, or leave --keep-unit out",
                )
            rel = own
        else:
            unit = "machine-" + systemd.unit_escape(prep.name) + ".scope"
            rel = systemd.start_scope(
                unit, prep.settings.slice, f"Container {prep.name}", prep.uid_range is None
            )
        unit_path = root + rel
        cgroups.create(f"{unit_path}/supervisor")
        cgroups.join(f"{unit_path}/supervisor")
        prep.unit_cgroup = unit_path
        try:
            with open(f"{unit_path}/cgroup.controllers") as f:
                have = f.read().split()
            want = " ".join(f"+{c}" for c in GUEST_CONTROLLERS if c in have)
            if want:
                with open(f"{unit_path}/cgroup.subtree_control", "w") as f:
                    f.write(want)
        except OSError as e:
            raise MachineError(
                f"Failed to enable the guest's controllers in {unit_path}: {e.strerror}.",
                "is the unit delegated (Delegate=yes)?",
            ) from None
        prep.limit_backend = limits.Unit(unit_path)
        if prep.limits:
            systemd.set_properties(systemd.unit_of(rel), prep.settings.properties)
    path = f"{prep.unit_cgroup}/payload"
    cgroups.create(path)
    prep.cgroup_scope = prep.unit_cgroup
    _delegate(prep, path)
    prep.cgroup = path


def lend(prep: Prepared) -> list[str]:
    """Before PID 1 is cloned: the supervisor's thread joins the v1 hierarchies PID 1's limits need,
    so PID 1 is born in them, at a fraction of what moving it afterwards costs (a grace period: see
    hutch.linux.cgroups.join_thread). v2: PID 1 is cloned into its cgroup; nothing to lend."""
    return prep.limit_backend.lend() if prep.limit_backend is not None else []


def give_back(prep: Prepared, back: list[str]) -> None:
    """Once PID 1 is cloned (or failed to be): the supervisor's thread back where it was."""
    if back:
        prep.limit_backend.give_back(back)


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
    rel = cgroups.path_of()
    return root + rel if rel is not None else None


def remove(prep: Prepared) -> None:
    if prep.unit_cgroup is not None:
        # systemd's unit: only the payload is ours to remove; the unit goes when the supervisor does.
        if prep.cgroup:
            cgroups.remove_tree(prep.cgroup)
            prep.cgroup = None
        prep.cgroup_scope = None
        return
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
