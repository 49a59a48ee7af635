"""What the supervisor of a registered machine records about it in the registry, and how a detached
supervisor gives back the memory its start-up needed."""

from __future__ import annotations

from hutch.container.prepare import Prepared
from hutch.linux import posixos as os


def fields(prep: Prepared, pid1: int, since: int, pending: bool) -> dict[str, object]:
    """The registry entry (hutch.machines.registry) of the machine PREP, led by PID1."""
    s = prep.settings
    link = prep.link
    return {
        "name": prep.name,
        "id": prep.uuid,
        "cls": "container",
        "service": "hutch",
        "supervisor": os.getpid(),
        "leader": pid1,
        "root": prep.image,
        "since": since,
        "uid_shift": prep.uid_range.base if prep.uid_range is not None else 0,
        "cgroup": prep.cgroup or "",
        "scope": prep.cgroup_scope or "",
        "addresses": link.addresses() if link is not None else [],
        "netif": link.ifname if link is not None else "",
        "zone": link.zone if link is not None else "",
        "ports": [f"{p}:{h}:{c}" for p, h, c in s.ports],
        "boot": s.boot,
        "kill_signal": prep.kill_signal,
        "private_network": s.private_network,
        "hostname": prep.hostname,
        "log": os.getenv("HUTCH_CONSOLE_LOG") or "",
        "argv": s.argv,
        # What hutch shell gives the processes it adds: the payload's own confinement.
        "keep_caps": sum(1 << c for c in prep.keep_caps),
        "syscall_allow": s.syscall_allow,
        "syscall_deny": s.syscall_deny,
        "suppress_sync": s.suppress_sync,
        "properties": s.properties,
        "limits_kind": prep.limit_backend.kind if prep.limit_backend is not None else "",
        "notify": prep.wait_ready,
        "state": "starting" if pending else "running",
    }
