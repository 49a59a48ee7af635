"""The machine's cgroup: created by the supervisor, joined by the outer child (so PID 1 starts inside
it), seen by PID 1 through its own cgroup namespace as a cgroup2 mount on /sys/fs/cgroup."""

from __future__ import annotations

import os

from hutch.container import plan, rootfs
from hutch.container.prepare import Prepared
from hutch.errors import MachineError
from hutch.linux import cgroups, libc


def create(prep: Prepared) -> None:
    root = cgroups.unified_root(os.environ.get("HUTCH_CGROUP_ROOT", cgroups.CGROUP_ROOT))
    if root is None:
        prep.cgroup = None
        return
    path = cgroups.machine_cgroup(root, prep.name)
    if cgroups.is_populated(path):
        raise MachineError(
            f"Machine '{prep.name}' is already running (its cgroup {path} has processes).",
            "pick another name with -M, or stop the running one",
        )
    cgroups.create(path)
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


def remove(prep: Prepared) -> None:
    if prep.cgroup:
        cgroups.remove_tree(prep.cgroup)
