"""Finding the cgroup2 hierarchy and making a machine's cgroup in it.

On a pure v2 host cgroup2 is /sys/fs/cgroup; on a hybrid host (systemd's "hybrid" layout, this machine)
it is /sys/fs/cgroup/unified, holding no controllers. Either way a systemd guest needs its own cgroup2
subtree, entered through a cgroup namespace, to boot (shared/reference/findings.md).
"""

from __future__ import annotations

import time

from hutch.linux import posixos as os

CGROUP_ROOT = "/sys/fs/cgroup"


def unified_root(base: str = CGROUP_ROOT) -> str | None:
    """The mount point of the cgroup2 hierarchy, or None on a v1-only host."""
    for cand in (base, base + "/unified"):
        # cgroup.subtree_control exists only in cgroup2; a v1 hierarchy or a tmpfs has none.
        if os.path.exists(cand + "/cgroup.subtree_control"):
            return cand
    return None


def path_of(pid: int | str = "self") -> str | None:
    """PID's cgroup2 path, relative to the hierarchy's root as the caller's cgroup namespace sees it;
    None where it has none or is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return next((ln.strip()[3:] for ln in f if ln.startswith("0::")), None)
    except OSError:
        return None


def machine_cgroup(root: str, name: str) -> str:
    return f"{root}/machine.slice/machine-{name}.scope"


def create(path: str) -> None:
    os.makedirs(path, 0o755, exist_ok=True)


def join(path: str, file: str = "cgroup.procs") -> None:
    """Move the calling process into PATH (writing 0 means 'myself'); FILE 'tasks': its thread."""
    fd = os.open(f"{path}/{file}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def join_thread(path: str) -> None:
    """Move the calling thread into the v1 cgroup PATH, through its `tasks` file. For a single-threaded
    process (a child just forked) that is the whole process, and its children are born there. A
    whole-process move (cgroup.procs, or any PID but 0) takes the kernel's threadgroup lock, which
    waits for an RCU grace period: measured 4.5-16 ms after an idle moment on this host, against
    ~0.4 ms for this one (the kernel skips the lock for the caller's own thread). v1 only: cgroup2's
    domain cgroups take no thread."""
    join(path, "tasks")


def own_v1(controller: str) -> str:
    """The calling thread's cgroup in CONTROLLER's v1 hierarchy, from /proc/thread-self/cgroup."""
    with open("/proc/thread-self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                return path
    return "/"


def is_populated(path: str) -> bool:
    try:
        with open(path + "/cgroup.procs", "rb") as f:
            return bool(f.read().strip())
    except FileNotFoundError:
        return False


def remove_tree(path: str, timeout: float = 2.0) -> bool:
    """Remove PATH and its sub-cgroups depth-first. Exiting processes linger for a moment after the
    PID namespace's init dies, so retry EBUSY until TIMEOUT. Returns False if something stayed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for top, dirs, _files in os.walk(path, topdown=False):
                for d in dirs:
                    os.rmdir(os.path.join(top, d))
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def v1_scopes(base: str, rel: str) -> list[str]:
    """The directory REL (say machine.slice/machine-NAME.scope) in each v1 hierarchy under BASE that
    has one: a hybrid host's per-controller trees, the unified one left out."""
    try:
        controllers = sorted(os.listdir(base))
    except OSError:
        return []
    return [
        f"{base}/{c}/{rel}" for c in controllers if c != "unified" and os.path.isdir(f"{base}/{c}/{rel}")
    ]
