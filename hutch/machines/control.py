"""Starting and stopping machines without a daemon: `start` runs the spawn supervisor detached and waits
for it to say the machine is up; the stop verbs signal the machine's leader through a pidfd, checked
against the registry so a reused PID is never signalled."""

from __future__ import annotations

import sys
import time

from hutch.errors import MachineError
from hutch.linux import posixos as os
from hutch.machines import registry
from hutch.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~5 ms to import: not at run time
    from collections.abc import Callable
    from typing import Any

SIGRTMIN = 34
START_TIMEOUT = 90.0
SETTLE = 0.1
STOP_WAIT = 10.0  # a supervisor whose PID 1 has exited: its cleanup, at most


def check_name(name: str) -> str:
    from hutch.settings.values import valid_machine_name

    if not valid_machine_name(name):
        raise MachineError(
            f"Invalid machine name {name!r}.",
            "use letters, digits, '-', '_' and '.', at most 64 characters",
        )
    return name


def get(name: str, paths: Paths) -> dict[str, Any]:
    check_name(name)
    entry = registry.load(paths.state_dir, name)
    if entry is None:
        raise MachineError(f"No machine '{name}' known.", "see 'hutch list'")
    return entry


def _self_argv() -> list[str]:
    """How to run hutch again: the launcher that runs us, else the module."""
    argv0 = os.path.realpath(sys.argv[0])  # through a machinectl link to the launcher, too
    if os.path.basename(argv0) == "hutch" and os.access(argv0, os.X_OK):
        return [argv0]
    return [sys.executable, "-m", "hutch"]


def spawn_args(name: str, extra: list[str] | None = None) -> list[str]:
    """upstream's systemd-nspawn@.service: boot, user namespace, settings files override, a veth pair
    with addresses."""
    return [
        "spawn",
        "--quiet",
        "--boot",
        "-U",
        "--settings=override",
        f"--machine={name}",
        "--network-veth",
        "--console=read-only",
        *(extra or []),
    ]


def log_path(paths: Paths, name: str) -> str:
    return os.path.join(paths.log_dir, f"{name}.log")


def tail(path: str, lines: int, since: int = 0) -> list[str]:
    """The last LINES lines of the log at PATH, of what was written after offset SINCE."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)  # the end
            size = f.tell()
            f.seek(max(since, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    cleaned = [ln.rstrip("\r") for ln in text.replace("\r\n", "\n").split("\n")]
    while cleaned and not cleaned[-1].strip():
        cleaned.pop()
    return cleaned[-lines:] if lines > 0 else []


def start(
    name: str, paths: Paths, timeout: float = START_TIMEOUT, extra: list[str] | None = None
) -> dict[str, Any]:
    """Start NAME detached; return its registry entry once it is up. On failure raise with the
    reason; the console's last lines are in the exception's `console` attribute."""
    from hutch.images import store

    check_name(name)
    if registry.is_running(paths.state_dir, name):
        raise MachineError(f"Machine '{name}' is already running.", f"see 'hutch status {name}'")
    registry.load(paths.state_dir, name)  # drops a dead supervisor's entry and cgroup
    registry.gc_cgroups()
    if store.find(name, paths) is None:
        raise MachineError(f"No image '{name}' in {':'.join(paths.image_path)}.", "see 'hutch list-images'")
    os.makedirs(paths.log_dir, 0o755, exist_ok=True)
    log = log_path(paths, name)
    try:
        with open(log, "ab") as f:
            f.write(f"-- hutch start {name} at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode())
            since = f.tell()  # a failure shows this start's console lines, not an earlier one's
    except OSError as e:
        from hutch.errors import io_hint

        raise MachineError(
            f"Failed to write the console log {log}: {e.strerror}.", io_hint(e.errno)
        ) from None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: becomes the supervisor, in a session of its own, never returns
        try:
            os.close(r)
            os.setsid()
            null = os.open("/dev/null", os.O_RDONLY)
            out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(null)
            os.close(out)
            from hutch.linux.fsutil import close_other_fds

            close_other_fds({w})  # whatever our caller let us inherit is not the machine's to hold
            os.set_inheritable(w, True)
            from os import environ  # the real os: this is no verb's hot path

            env = dict(environ, HUTCH_READY_FD=str(w), HUTCH_CONSOLE_LOG=log)
            argv = [*_self_argv(), *spawn_args(name, extra)]
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(w)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        import select

        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise _failed(name, paths, f"it did not report ready within {timeout:.0f} s", since, True)
            data = os.read(r, 256)
            if not data:
                break
            got += data
            if b"READY" in got:
                break
    finally:
        os.close(r)
    if b"READY" not in got:
        raise _failed(name, paths, "its supervisor exited", since)
    entry = registry.load(paths.state_dir, name)
    if entry is not None and not entry.get("notify") and not _leader_lasts(entry, SETTLE):
        # "Up" for an init that does not report readiness only means it was exec'd: one that fails at
        # once had a moment to show it. Its supervisor's cleanup after it is not part of that moment
        # (with -n's link services it took more than SETTLE here, and a failed init was "started").
        registry.wait_stopped(paths.state_dir, name, STOP_WAIT)
        entry = registry.load(paths.state_dir, name)
    if entry is None:
        if _exit_status(pid) == 0:
            # An init that did its work and exited 0 (upstream's dummy init does): started, as
            # machinectl reports it, and gone already.
            raise ExitedAtOnce(f"Machine '{name}' started and exited successfully right away.")
        raise _failed(name, paths, "it stopped right after starting", since)
    return entry


def _leader_lasts(entry: dict[str, Any], seconds: float) -> bool:
    """Whether the leader the registry names is still running SECONDS from now."""
    import select

    try:
        fd = os.pidfd_open(int(entry["leader"]))
    except (ProcessLookupError, KeyError, ValueError):
        return False
    try:
        return not select.select([fd], [], [], seconds)[0]  # a pidfd turns readable at its exit
    finally:
        os.close(fd)


def _exit_status(pid: int) -> int | None:
    """The supervisor's exit status (the payload's, as spawn's), if it has exited; it is our child."""
    for _ in range(50):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    return None


class ExitedAtOnce(MachineError):
    """start: the machine ran, and its init exited with status 0 before start returned."""


def _failed(name: str, paths: Paths, why: str, since: int, running: bool = False) -> MachineError:
    lines = tail(log_path(paths, name), 10, since)  # from after this start's "-- hutch start" line
    reason = next((ln for ln in reversed(lines) if ln.startswith("hutch spawn: ")), None)
    hint = f"it is still running; see 'hutch status {name}'" if running else f"see 'hutch logs {name}'"
    if reason:
        lines.remove(reason)  # it becomes the message: shown once
        why, _, own_hint = reason[len("hutch spawn: ") :].partition(" Hint: ")
        hint = own_hint.rstrip(".") or hint  # the supervisor's hint says more than "see the log"
    e = MachineError(f"Failed to start machine '{name}': {why.rstrip('.')}.", hint)
    e.console = lines  # type: ignore[attr-defined]
    return e


def _leader_pidfd(entry: dict[str, Any], paths: Paths) -> int:
    """A pidfd of the machine's leader, taken only while the registry still names that PID for a live
    supervisor: a PID the kernel has reused for something else is never signalled."""
    pid = int(entry["leader"])
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise MachineError(f"Machine '{entry['name']}' has no leader any more.") from None
    again = registry.load(paths.state_dir, entry["name"])
    if again is None or int(again["leader"]) != pid:
        os.close(fd)
        raise MachineError(f"Machine '{entry['name']}' stopped or restarted meanwhile.", "try again")
    return fd


def signal_leader(name: str, signo: int, paths: Paths) -> None:
    from hutch.container import emulation
    from hutch.linux import sig

    entry = get(name, paths)
    fd = _leader_pidfd(entry, paths)
    try:
        # SIGNO as the leader knows it: under qemu-user, its real-time signals have other numbers.
        sig.pidfd_send_signal(fd, emulation.host_signal(int(entry["leader"]), signo))
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def cgroup_pids(entry: dict[str, Any]) -> list[int]:
    """Every process in the machine's cgroup tree."""
    root = entry.get("cgroup") or ""
    pids: list[int] = []
    if not root:
        return pids
    for dirpath, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
            except OSError:
                continue
    return pids


def kill(name: str, signo: int, whom: str, paths: Paths) -> None:
    if whom == "leader":
        signal_leader(name, signo, paths)
        return
    entry = get(name, paths)
    # The leader first (through its pidfd), then everything else in the machine's cgroup.
    signal_leader(name, signo, paths)
    for pid in cgroup_pids(entry):
        if pid == int(entry["leader"]):
            continue
        try:
            os.kill(pid, signo)
        except ProcessLookupError:
            pass


def poweroff_signal(entry: dict[str, Any]) -> int:
    """What the machine's init takes as "power off": busybox init SIGUSR2, sysvinit SIGPWR (its
    powerfail action, LXC's halt signal too), anything else SIGRTMIN+4: systemd's, and the container
    interface's (systemd.io/CONTAINER_INTERFACE), which upstream sends every init."""
    pid = int(entry["leader"])
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = ""
    try:
        # An init whose binary was replaced (an upgrade) or whose image was removed under it still
        # runs that binary: the kernel appends " (deleted)" to the name.
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)"))
    except OSError:
        exe = ""
    if comm == "systemd" or exe == "systemd":
        return SIGRTMIN + 4
    if exe == "busybox" and comm == "init":
        return 12  # SIGUSR2: busybox init's poweroff
    if exe == "init" and comm == "init" and _is_sysvinit(pid):
        return 30  # SIGPWR
    return SIGRTMIN + 4


def _is_sysvinit(pid: int) -> bool:
    """sysvinit's init keeps /run/initctl, its control FIFO, open: nothing else called init does."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/initctl"):
                return True
    except OSError:
        pass
    return False


def poweroff(name: str, paths: Paths) -> None:
    entry = get(name, paths)
    signal_leader(name, poweroff_signal(entry), paths)


def reboot(name: str, paths: Paths) -> None:
    signal_leader(name, 2, paths)  # SIGINT: every init's ctrl-alt-del, as upstream sends


TERMINATE_GRACE = 5.0  # seconds init gets to act on its kill signal before terminate kills it


def _takes_signal(entry: dict[str, Any], signo: int, paths: Paths) -> bool:
    """Whether the leader would get SIGNO from us (hutch.linux.sig.taken); in doubt, yes."""
    from hutch.container import emulation
    from hutch.linux import sig

    fd = _leader_pidfd(entry, paths)
    try:
        pid = int(entry["leader"])
        taken = sig.taken(pid, emulation.host_signal(pid, signo))
        sig.pidfd_send_signal(fd, 0)  # the same process still: its PID was not reused meanwhile
        return taken
    except OSError:
        return True
    finally:
        os.close(fd)


def terminate(name: str, paths: Paths) -> None:
    """Stop the machine now: its init gets its kill signal (--kill-signal; SIGRTMIN+3 for a booted
    one), as machined's stop of the unit gives it through nspawn, and TERMINATE_GRACE seconds to act;
    then SIGKILL to the leader takes the whole PID namespace with it. One call is enough (upstream
    #40282)."""
    entry = get(name, paths)
    first = int(entry.get("kill_signal") or 9)
    if first != 9 and not _takes_signal(entry, first, paths):
        first = 9  # an init that would drop it (busybox's and SIGRTMIN+3): no grace to wait out
    signal_leader(name, first, paths)
    if first == 9 or registry.wait_stopped(paths.state_dir, name, TERMINATE_GRACE):
        return
    try:
        signal_leader(name, 9, paths)
    except MachineError:
        pass  # it stopped in between


def wait_stopped(
    name: str, paths: Paths, timeout: float, resend: Callable[[str, Paths], None] | None = None
) -> None:
    """Wait until the machine's supervisor is gone. With RESEND (poweroff), a machine that comes back
    with a new leader meanwhile gets the signal again: it was rebooting, and the init that took the
    first one was already on its way out (upstream loses that poweroff)."""
    entry = registry.load(paths.state_dir, name)
    leader = int(entry["leader"]) if entry else 0
    deadline = time.monotonic() + timeout
    while not registry.wait_stopped(paths.state_dir, name, 0.05):
        if time.monotonic() > deadline:
            raise MachineError(
                f"Machine '{name}' is still running after {timeout:g} s.",
                f"'hutch terminate {name}' stops it at once",
            )
        if resend is not None:
            e = registry.load(paths.state_dir, name)
            if e and e.get("state") == "running" and int(e.get("leader") or 0) not in (0, leader):
                leader = int(e["leader"])
                resend(name, paths)


def wait_rebooted(name: str, paths: Paths, timeout: float, old_leader: int) -> None:
    """Wait until the machine runs again under a new leader."""
    deadline = time.monotonic() + timeout
    while True:
        e = registry.load(paths.state_dir, name)
        if e is None:
            raise MachineError(f"Machine '{name}' stopped instead of rebooting.", f"see 'hutch logs {name}'")
        if e.get("state") == "running" and int(e.get("leader") or 0) not in (0, old_leader):
            return
        if time.monotonic() > deadline:
            raise MachineError(
                f"Machine '{name}' did not come back within {timeout:g} s.", f"see 'hutch logs {name}'"
            )
        time.sleep(0.02)


def limits_path(paths: Paths, name: str) -> str:
    return os.path.join(paths.state_dir, "machines", f"{name}.limits")


def current_limits(entry: dict[str, Any], paths: Paths) -> dict[str, str]:
    """Key -> value as given, from --property at start and later set-property calls."""
    from hutch import jsonread

    out: dict[str, str] = {}
    for item in entry.get("properties") or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    try:
        with open(limits_path(paths, entry["name"])) as f:
            saved = jsonread.loads(f.read())
    except (OSError, ValueError):
        return out
    if isinstance(saved, dict):
        out.update(saved)
    return out


def set_property(name: str, items: list[str], paths: Paths) -> None:
    """Change a running machine's limits (systemctl set-property for machines)."""
    import json

    from hutch.container import limits

    entry = get(name, paths)
    props = limits.parse_all(items)
    backend = limits.backend(name, scope=str(entry.get("scope") or ""))
    usage = backend.usage()
    # A v1 hierarchy the machine is not in yet counts nothing: its processes are at least its tasks.
    if "tasks" not in usage:
        usage["tasks"] = len(cgroup_pids(entry))
    limits.check_usage(props, usage)
    backend.prepare(props)
    if backend.kind == "v1":
        # Hierarchies the machine was not in yet: move every one of its processes in.
        from hutch.errors import SettingsError

        for pid in cgroup_pids(entry):
            try:
                backend.attach(pid)
            except SettingsError:
                pass  # exited meanwhile
    from hutch.linux.fsutil import write_atomic

    # The record first: on a full disk nothing changes, and `status` never shows less than applies.
    before = current_limits(entry, paths)
    merged = dict(before)
    merged.update({item.partition("=")[0].strip(): item.partition("=")[2].strip() for item in items})
    write_atomic(limits_path(paths, name), json.dumps(merged).encode(), sync=False)
    try:
        if isinstance(backend, limits.Unit):
            backend.apply_items(items)
        else:
            backend.apply(props)
    except BaseException:
        write_atomic(limits_path(paths, name), json.dumps(before).encode(), sync=False)
        raise
