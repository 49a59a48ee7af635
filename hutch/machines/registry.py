"""The registry of running machines: $HUTCH_STATE_DIR/machines/NAME.json, written atomically by the
machine's supervisor, and NAME.lock, which the supervisor holds (flock) for the machine's whole life.

Liveness is "the lock is held": the kernel drops it when the supervisor dies, however it dies, so an
entry whose lock can be taken is stale and the next reader removes it. No PID files, no daemon.

The supervisor side (claim, write, release) runs on hutch spawn's start path, so it writes JSON by
hand instead of importing json; the readers use json.
"""

from __future__ import annotations

import errno
import fcntl

from hutch.errors import MachineError
from hutch.linux import posixos as os

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
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise MachineError(
                    f"Machine '{name}' is already running.", f"see 'hutch status {name}'"
                ) from None
            raise
        self.fd = fd
        self.fields: dict[str, object] = {}

    def write(self, **fields: object) -> None:
        self.fields.update(fields)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (_encode(self.fields) + "\n").encode())
        finally:
            os.close(fd)
        os.rename(tmp, self.path)

    def release(self) -> None:
        if self.fd < 0:
            return
        for p in (self.path, self.path[: -len(".json")] + ".limits"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        os.close(self.fd)
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


def load(state_dir: str, name: str) -> dict[str, Any] | None:
    """The entry of a running machine; a stale one (its supervisor is gone) is removed."""
    import json

    d = _dir(state_dir)
    path = os.path.join(d, f"{name}.json")
    if not _held(os.path.join(d, f"{name}.lock")):
        _reap(path)  # a supervisor killed before it could clean up
        return None
    try:
        with open(path) as f:
            entry: dict[str, Any] = json.load(f)
    except (FileNotFoundError, ValueError):
        return None  # starting: the lock is taken before the entry is written
    return entry


def _reap(path: str) -> None:
    """Remove a dead supervisor's entry and its machine's cgroup, once empty (its processes died with
    its PID namespace; the kernel frees a cgroup directory only when asked)."""
    import json

    try:
        with open(path) as f:
            entry = json.load(f)
        cgroup = str(entry.get("scope") or entry.get("cgroup") or "")
        zone = str(entry.get("zone") or "")
    except (OSError, ValueError):
        cgroup = zone = ""
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
            cgroups.remove_tree(tree, timeout=0)  # one try: a tree with processes in it stays
    for p in (path, path[: -len(".json")] + ".limits"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


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

    from hutch.linux import cgroups

    base = base or os.getenv("HUTCH_CGROUP_ROOT") or "/sys/fs/cgroup"
    if min_age is None:
        min_age = _seconds("HUTCH_CGROUP_GC_AGE", GC_AGE)
    removed: list[str] = []
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


def running(state_dir: str) -> list[dict[str, Any]]:
    out = []
    for name in names(state_dir):
        entry = load(state_dir, name)
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
