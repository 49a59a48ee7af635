"""The registry of running machines: $HUTCH_STATE_DIR/machines/NAME.json, written atomically by the
machine's supervisor, and NAME.lock, which the supervisor holds (flock) for the machine's whole life.

Liveness is "the lock is held": the kernel drops it when the supervisor dies, however it dies, so an
entry whose lock can be taken is stale and the next reader removes it. No PID files, no daemon.

The supervisor side (claim, write, release) runs on hutch spawn's start path, so it writes JSON by
hand instead of importing json; the readers use hutch.jsonread, json's C scanner without json.
"""

from __future__ import annotations

import errno
import fcntl

from hutch.errors import MachineError
from hutch.linux import posixos as os
from hutch.linux.fsutil import release_lock_file, take_lock_file, write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _dir(state_dir: str) -> str:
    return os.path.join(state_dir, "machines")


def _quote(s: str) -> str:
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _encode(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quote(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot encode {type(value).__name__}")


class Claim:
    """A supervisor's hold on a machine name: the lock, and the entry it writes and removes."""

    def __init__(self, state_dir: str, name: str) -> None:
        self.dir = _dir(state_dir)
        self.name = name
        self.lock_path = os.path.join(self.dir, f"{name}.lock")
        self.path = os.path.join(self.dir, f"{name}.json")
        os.makedirs(self.dir, 0o755, exist_ok=True)
        try:
            fd = take_lock_file(self.lock_path, mode=0o644)  # readable: users may list machines
        except BlockingIOError:
            raise MachineError(
                f"Machine '{name}' is already running.", f"see 'hutch status {name}'"
            ) from None
        self.fd = fd
        self.fields: dict[str, object] = {}

    def write(self, **fields: object) -> None:
        self.fields.update(fields)
        # No fsync: the registry lives on /run, and a machine does not outlive a crash of the host.
        write_atomic(self.path, (_encode(self.fields) + "\n").encode(), sync=False)

    def release(self) -> None:
        if self.fd < 0:
            return
        for p in (self.path, self.path[: -len(".json")] + ".limits"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        release_lock_file(self.lock_path, self.fd)
        self.fd = -1


def _held(lock_path: str) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False


def is_running(state_dir: str, name: str) -> bool:
    return _held(os.path.join(_dir(state_dir), f"{name}.lock"))


class DamagedEntry(MachineError):
    """A running machine's entry that is not what its supervisor writes (a hand edit, a full disk)."""


# What record.fields() writes, by type; the first group must be there.
_REQUIRED = {"name": str, "leader": int, "supervisor": int, "root": str, "since": int, "state": str}
_OPTIONAL = {
    "id": str, "cls": str, "service": str, "uid_shift": int, "cgroup": str, "scope": str, "addresses": list,
    "netif": str, "zone": str, "ports": list, "boot": bool, "kill_signal": int, "private_network": bool,
    "hostname": str, "log": str, "argv": list, "keep_caps": int, "syscall_allow": list,
    "syscall_deny": list, "properties": list, "limits_kind": str, "notify": bool, "ready": int,
    "suppress_sync": bool,
}  # fmt: skip
MAX_ENTRY = 1 << 20
REAP_WAIT = 2.0  # seconds a dead machine's processes get to leave its cgroup


def check_entry(name: str, entry: object) -> str:
    """Why ENTRY is not a machine NAME's registry entry ("" if it is one)."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    for key, kind in (*_REQUIRED.items(), *_OPTIONAL.items()):
        if key not in entry:
            if key in _REQUIRED:
                return f"no '{key}'"
            continue
        value = entry[key]
        # bool is an int to Python, never to the registry.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"'{key}' is not a {kind.__name__}"
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return f"'{key}' holds something other than strings"
    if entry["name"] != name:
        return f"it names machine {entry['name']!r}"
    if entry["leader"] <= 0 or entry["supervisor"] <= 0:
        return "a PID that is not positive"
    return ""


def _read(path: str) -> object:
    """The JSON at PATH; FileNotFoundError if absent, ValueError if it is not JSON (or not UTF-8, or
    larger than any entry)."""
    from hutch import jsonread

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        data = os.read(fd, MAX_ENTRY + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_ENTRY:
        raise ValueError("larger than any entry")
    return jsonread.loads(data.decode("utf-8"))


def load(state_dir: str, name: str) -> dict[str, Any] | None:
    """The entry of a running machine; a stale one (its supervisor is gone) is removed, whatever
    state it is in. A live machine's damaged entry raises DamagedEntry."""
    d = _dir(state_dir)
    path = os.path.join(d, f"{name}.json")
    lock = os.path.join(d, f"{name}.lock")
    if not _held(lock):
        # A supervisor killed before it could clean up: its entry, cgroup and lock file go, under
        # the lock, so a supervisor starting now keeps what it writes.
        try:
            fd = take_lock_file(lock, mode=0o644)
        except OSError:
            return None  # starting right now, or a reader without the right to clean up
        try:
            _reap(path)
        finally:
            release_lock_file(lock, fd)
        return None
    try:
        entry = _read(path)
    except FileNotFoundError:
        return None  # starting: the lock is taken before the entry is written
    except (OSError, ValueError) as e:
        entry = None
        problem = "not JSON" if isinstance(e, ValueError) else str(e.strerror)
    else:
        problem = check_entry(name, entry)
    if problem:
        from hutch.text import cescape

        holder = lock_holder(lock)
        raise DamagedEntry(
            cescape(f"Machine '{name}' has a damaged registry entry {path} ({problem})."),
            f"its supervisor (PID {holder}) runs: 'kill {holder}' stops the machine" if holder else None,
        )
    assert isinstance(entry, dict)
    return entry


def lock_holder(lock_path: str) -> int:
    """The PID that holds the flock on LOCK_PATH, from /proc/locks (0 if none is found)."""
    try:
        st = os.stat(lock_path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    want = f":{st.st_ino}"
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].endswith(want) and parts[4].isdigit():
            return int(parts[4])
    return 0


def _reap(path: str) -> None:
    """Remove a dead supervisor's entry and its machine's cgroup, once empty (its processes died with
    its PID namespace; the kernel frees a cgroup directory only when asked)."""
    try:
        entry = _read(path)
    except (OSError, ValueError):
        entry = None
    if not isinstance(entry, dict):
        entry = {}
    cgroup = entry.get("scope") or entry.get("cgroup") or ""
    zone = entry.get("zone") or ""
    if not isinstance(cgroup, str) or not isinstance(zone, str) or "/" in zone or ".." in cgroup:
        cgroup = zone = ""  # a damaged entry names nothing to remove
    from hutch.container import systemd

    owned = systemd.booted()  # the machine's cgroup is a systemd unit's, which systemd removes itself
    if owned:
        cgroup = ""
    if not cgroup and not owned:
        # Killed after it made the machine's cgroup and before its entry said so: the one its name
        # gives (removed only if empty, like any other).
        from hutch.linux import cgroups

        root = cgroups.unified_root(os.getenv("HUTCH_CGROUP_ROOT") or cgroups.CGROUP_ROOT)
        if root is not None:
            cgroup = cgroups.machine_cgroup(root, os.path.basename(path)[: -len(".json")])
    if zone:
        # Its supervisor could not take the zone's bridge with it if it was the last member.
        from hutch.container import network

        network.gc_zone(os.path.dirname(os.path.dirname(path)), zone)
    if cgroup and "/machine.slice/machine-" in cgroup:
        from hutch.linux import cgroups

        trees = [cgroup]
        if "/unified/machine.slice/" in cgroup:
            # A hybrid host: the limits' v1 hierarchies hold a directory of the same name.
            base, _, rel = cgroup.partition("/unified/")
            trees += cgroups.v1_scopes(base, rel)
        for tree in trees:
            # The supervisor's lock goes with its files, before its PID 1 gets the death signal: the
            # machine's processes are still leaving (~50 ms for a systemd guest). A tree that stays
            # busy past REAP_WAIT is left to gc_cgroups.
            cgroups.remove_tree(tree, timeout=REAP_WAIT)
    for p in (path, path[: -len(".json")] + ".limits"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    gc_lock_files(os.path.dirname(os.path.dirname(path)))


def gc_lock_files(state_dir: str) -> list[str]:
    """The UID range and address locks that killed supervisors (and killed image operations) left:
    each held by no one any more."""
    from hutch.linux.fsutil import gc_lock_files as gc

    removed = []
    for sub in ("uid-ranges", "net", "locks"):
        removed += [f"{sub}/{e}" for e in gc(os.path.join(state_dir, sub))]
    return removed


def names(state_dir: str) -> list[str]:
    try:
        entries = os.listdir(_dir(state_dir))
    except FileNotFoundError:
        return []
    return sorted({e[: -len(".lock")] for e in entries if e.endswith(".lock")})


GC_AGE = 60.0


def _seconds(var: str, default: float) -> float:
    value = os.getenv(var)
    if not value:
        return default
    try:
        n = float(value)
    except ValueError:
        n = -1.0
    if not 0 <= n < 1e9:  # nan fails this too
        raise MachineError(
            f"${var}={value!r} is not a number of seconds.", f"unset it (default: {default:g})"
        )
    return n


def gc_cgroups(base: str | None = None, min_age: float | None = None) -> list[str]:
    """Remove machine cgroups nobody uses: empty machine-*.scope directories older than MIN_AGE seconds
    (a starting machine's is empty for milliseconds), left by a supervisor that was SIGKILLed, whose
    machine had no registry entry to clean it up from (--register=no, or -x's random names)."""
    import time

    from hutch.container import systemd
    from hutch.linux import cgroups

    removed: list[str] = []
    if base is None and systemd.booted():
        return removed  # systemd collects the units of machines that are gone
    base = base or os.getenv("HUTCH_CGROUP_ROOT") or "/sys/fs/cgroup"
    if min_age is None:
        min_age = _seconds("HUTCH_CGROUP_GC_AGE", GC_AGE)
    try:
        hierarchies = os.listdir(base)
    except OSError:
        return removed
    now = time.time()
    for h in ["", *hierarchies]:
        slice_dir = f"{base}/{h}/machine.slice" if h else f"{base}/machine.slice"
        try:
            scopes = [e for e in os.listdir(slice_dir) if e.startswith("machine-") and e.endswith(".scope")]
        except OSError:
            continue
        for scope in scopes:
            path = f"{slice_dir}/{scope}"
            try:
                if now - os.stat(path).st_mtime < min_age or _cgroup_in_use(path):
                    continue
            except OSError:
                continue
            if cgroups.remove_tree(path, timeout=0):  # refused (EBUSY) while a process is in it
                removed.append(path)
    return removed


def _cgroup_in_use(path: str) -> bool:
    """Never touch a live machine's tree (a systemd guest keeps empty cgroups of its own in it)."""
    try:
        with open(f"{path}/cgroup.events") as f:  # v2: the whole subtree at once
            return "populated 1" in f.read()
    except FileNotFoundError:
        pass
    with open(f"{path}/cgroup.procs") as f:  # v1: hutch makes no sub-cgroups there
        return bool(f.read().strip())


def running(state_dir: str, damaged: list[DamagedEntry] | None = None) -> list[dict[str, Any]]:
    """The entries of running machines. A damaged one is left out, and added to DAMAGED if given
    (else raised)."""
    out = []
    for name in names(state_dir):
        try:
            entry = load(state_dir, name)
        except DamagedEntry as e:
            if damaged is None:
                raise
            damaged.append(e)
            continue
        if entry is not None:
            out.append(entry)
    return out


def wait_stopped(state_dir: str, name: str, timeout: float) -> bool:
    """Wait until the machine's supervisor has let go of its lock; False on timeout."""
    import time

    lock_path = os.path.join(_dir(state_dir), f"{name}.lock")
    deadline = time.monotonic() + timeout
    while _held(lock_path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
