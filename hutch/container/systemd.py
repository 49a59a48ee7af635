"""Living under systemd as PID 1: a machine's cgroup asked of systemd, and the machine registered with
systemd-machined, so systemd's own tools (machinectl, journalctl -M, systemd-cgls -M, systemctl -M)
see it.

Where systemd runs, the cgroup tree is systemd's: only a unit's delegated subtree may be written by
anyone else (systemd.io/CGROUP_DELEGATION). A machine's cgroup is therefore a transient
machine-NAME.scope with Delegate=yes that systemd creates with the supervisor in it, or, under
--keep-unit, the delegated cgroup of the unit that runs the supervisor (hutch@.service). Limits are
that unit's properties, set by systemd, which keeps them across daemon-reload and its own rewrites of
machine.slice.

systemd is reached through its own clients, busctl and systemctl, rather than a D-Bus library: they
are on every host where this code runs, parse unit property assignments exactly as systemd does
(systemctl set-property takes what --property takes), and cost a few milliseconds per start on a path
that runs only where a D-Bus round trip is due anyway. machined is reached over its varlink socket
(systemd 256 and later: JSON over a unix socket, no client needed), through busctl before that.
"""

from __future__ import annotations

import posix
import time

from hutch.errors import MachineError
from hutch.linux import cgroups
from hutch.linux import posixos as os

MACHINED_VARLINK = "/run/systemd/machine/io.systemd.Machine"
_SYSTEMD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
_MACHINED = ("org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager")


def booted() -> bool:
    """systemd is PID 1 and owns the cgroup tree (sd_booted()'s test). HUTCH_CGROUP_ROOT points tests at a
    directory laid out like cgroupfs, which is nobody's: then hutch manages it itself."""
    return os.path.isdir("/run/systemd/system") and not os.getenv("HUTCH_CGROUP_ROOT")


def _run(argv: list[str]) -> tuple[int, str]:
    """Run one of systemd's clients; its exit status and what it wrote (stdout and stderr, together)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = posix.posix_spawnp(
            argv[0],
            argv,
            posix.environ,
            file_actions=[(posix.POSIX_SPAWN_DUP2, w, 1), (posix.POSIX_SPAWN_DUP2, w, 2)],
        )
    except FileNotFoundError:
        os.close(r)
        os.close(w)
        return 127, f"{argv[0]}: command not found"
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace").strip()


def _busctl(target: tuple[str, str, str], method: str, signature: str, *args: str) -> tuple[int, str]:
    return _run(["busctl", "--system", "--quiet", "call", *target, method, signature, *args])


def _last_line(text: str) -> str:
    return text.splitlines()[-1] if text else "no reason given"


# systemd-nspawn's DevicePolicy=closed list, in systemd's DeviceAllow= syntax.
DEVICE_ALLOW = (
    ("/dev/null", "rwm"), ("/dev/zero", "rwm"), ("/dev/full", "rwm"), ("/dev/random", "rwm"),
    ("/dev/urandom", "rwm"), ("/dev/tty", "rwm"), ("/dev/console", "rwm"), ("/dev/ptmx", "rwm"),
    ("/dev/net/tun", "rwm"), ("/dev/fuse", "rwm"), ("char-pts", "rw"),
)  # fmt: skip


def start_scope(unit: str, slice_name: str, description: str, devices: bool) -> str:
    """Ask systemd for the transient UNIT in SLICE_NAME with Delegate=yes and this process in it; wait
    until it is, and return its cgroup path. DEVICES: DevicePolicy=closed plus nspawn's DeviceAllow=."""
    props = [
        "PIDs", "au", "1", str(os.getpid()), "Delegate", "b", "true", "Slice", "s", slice_name,
        "Description", "s", description, "CollectMode", "s", "inactive-or-failed",
    ]  # fmt: skip
    count = 5
    if devices:
        allow = [x for pair in DEVICE_ALLOW for x in pair]
        props += ["DevicePolicy", "s", "closed", "DeviceAllow", "a(ss)", str(len(DEVICE_ALLOW)), *allow]
        count += 2
    rc, out = _busctl(
        _SYSTEMD, "StartTransientUnit", "ssa(sv)a(sa(sv))", unit, "fail", str(count), *props, "0"
    )
    if rc != 0:
        hint = "see 'systemctl status " + unit + "'"
        if "already exists" in out:
            hint = f"a unit of that name runs: stop it, or pick another name with -M ({hint})"
        raise MachineError(f"systemd refused to create {unit}: {_last_line(out)}", hint)
    # The job that moves us runs after the call returns: wait for its effect rather than for its signal.
    want = "/" + unit
    deadline = time.monotonic() + 10
    while True:
        cg = cgroups.path_of() or ""
        if cg.endswith(want):
            return cg
        if time.monotonic() > deadline:
            raise MachineError(
                f"systemd created {unit} but did not move the supervisor into it.",
                f"see 'systemctl status {unit}'",
            )
        time.sleep(0.002)


def unit_escape(name: str) -> str:
    """systemd's unit-name escaping of one component: machine-my\\x2dbox.scope for machine 'my-box'."""
    out = []
    for i, c in enumerate(name):
        keep = c.isascii() and (c.isalnum() or c in ":_" or (c == "." and i > 0))
        out.append(c if keep else "".join(f"\\x{b:02x}" for b in c.encode()))
    return "".join(out)


def unit_of(cgroup: str) -> str:
    """The unit owning a cgroup path: its last component that names a unit (a scope or service)."""
    for part in reversed(cgroup.split("/")):
        if part.endswith((".scope", ".service")):
            return part
    return ""


def set_properties(unit: str, assignments: list[str], runtime: bool = True) -> None:
    """systemctl set-property: systemd parses and applies them, and keeps them for the unit's life."""
    if not assignments:
        return
    rc, out = _run(["systemctl", "set-property", *(["--runtime"] if runtime else []), unit, *assignments])
    if rc != 0:
        raise MachineError(
            f"systemd refused {' '.join(assignments)} on {unit}: {_last_line(out)}",
            f"see 'systemctl show {unit}'",
        )


def daemon_reload() -> None:
    rc, out = _run(["systemctl", "daemon-reload"])
    if rc != 0:
        raise MachineError(
            f"systemctl daemon-reload failed: {_last_line(out)}", "see 'journalctl -u init.scope'"
        )


def start_unit(unit: str) -> None:
    rc, out = _run(["systemctl", "start", unit])
    if rc != 0:
        raise MachineError(f"Failed to start {unit}: {_last_line(out)}", f"see 'systemctl status {unit}'")


def register(name: str, uuid: str, leader: int, root: str, ifindices: list[int]) -> bool:
    """Tell systemd-machined about a running machine: over varlink where it listens (256+), else D-Bus.
    machined finds the machine's unit from the leader's cgroup. False where machined does not run; a
    refusal is an error (a machine of that name exists)."""
    if os.path.exists(MACHINED_VARLINK):
        params: dict[str, object] = {
            "name": name,
            "service": "hutch",
            "class": "container",
            "leader": leader,
        }
        if uuid:
            params["id"] = uuid
        if root:
            params["rootDirectory"] = root
        if ifindices:
            params["ifIndices"] = ifindices
        reply = _varlink(MACHINED_VARLINK, "io.systemd.Machine.Register", params)
        err = reply.get("error")
        if err:
            raise MachineError(
                f"systemd-machined refused to register '{name}': {err}.", "see 'machinectl list'"
            )
        return True
    if not os.path.exists("/run/dbus/system_bus_socket"):
        return False
    idbytes = [str(int(uuid[i : i + 2], 16)) for i in range(0, 32, 2)] if len(uuid) == 32 else []
    rc, out = _busctl(
        _MACHINED, "RegisterMachineWithNetwork", "sayssusai", name, str(len(idbytes)), *idbytes, "hutch",
        "container", str(leader), root, str(len(ifindices)), *map(str, ifindices),
    )  # fmt: skip
    if rc != 0:
        if "not activatable" in out or "was not provided" in out or "ServiceUnknown" in out:
            return False  # no machined on this host
        raise MachineError(
            f"systemd-machined refused to register '{name}': {_last_line(out)}", "see 'machinectl list'"
        )
    return True


def unregister(name: str) -> None:
    """Best effort: machined also drops a machine whose unit stops or whose leader dies."""
    if os.path.exists("/run/dbus/system_bus_socket"):
        _busctl(_MACHINED, "UnregisterMachine", "s", name)


def notify(message: bytes) -> None:
    """sd_notify(): tell the service manager that runs us (Type=notify units) how we are."""
    path = os.getenv("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(message, "\0" + path[1:] if path[0] == "@" else path)
        except OSError:
            pass  # the manager went away: nobody is waiting


def _varlink(path: str, method: str, params: dict[str, object]) -> dict[str, object]:
    """One varlink call: a NUL-terminated JSON request, a NUL-terminated JSON reply."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps({"method": method, "parameters": params}).encode() + b"\0")
        buf = b""
        while not buf.endswith(b"\0"):
            data = s.recv(65536)
            if not data:
                break
            buf += data
    reply = json.loads(buf.rstrip(b"\0") or b"{}")
    return reply if isinstance(reply, dict) else {}
