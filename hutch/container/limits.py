"""Resource limits on a machine's cgroup, with systemd's property names and value syntax, for cgroup v2
and for v1/hybrid hosts behind one interface.

- v2: the machine's cgroup in the unified hierarchy; its parents get the controllers enabled in
  cgroup.subtree_control, then memory.max, memory.high, memory.swap.max, cpu.max, cpu.weight,
  cpuset.cpus, pids.max, io.weight are written.
- v1 (this host's hybrid layout: controllers under /sys/fs/cgroup/<controller>): a machine-NAME.scope
  directory in each controller's hierarchy that a limit needs, the payload's PID written into each,
  then memory.limit_in_bytes, memory.soft_limit_in_bytes, memory.memsw.limit_in_bytes,
  cpu.cfs_quota_us, cpu.shares, cpuset.cpus, pids.max, blkio.weight.

A limit the host cannot apply (no such controller, no such file) is an error, never ignored.
"""

from __future__ import annotations

from hutch.errors import SettingsError
from hutch.linux import posixos as os

_SIZE_HINT = "use bytes (512M, 2G), a percentage or infinity"

PROPERTIES = (
    "MemoryMax", "MemoryHigh", "MemorySwapMax", "CPUQuota", "CPUWeight", "AllowedCPUs", "TasksMax",
    "IOWeight",
)  # fmt: skip
# Which controller each property needs, by cgroup version.
V2_CONTROLLER = {
    "MemoryMax": "memory", "MemoryHigh": "memory", "MemorySwapMax": "memory", "CPUQuota": "cpu",
    "CPUWeight": "cpu", "AllowedCPUs": "cpuset", "TasksMax": "pids", "IOWeight": "io",
}  # fmt: skip
V1_CONTROLLER = {**V2_CONTROLLER, "IOWeight": "blkio"}
INFINITY = -1
MAX_BYTES = 1 << 63


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def parse_bytes(value: str, key: str) -> int:
    """systemd's size syntax: 512M, 1.5G, 10%, infinity; suffixes are powers of 1024."""
    v = value.strip()
    if v == "infinity":
        return INFINITY
    if v.endswith("%"):
        try:
            pct = float(v[:-1])
        except ValueError:
            raise SettingsError(f"Invalid {key}= value '{value}'.", _SIZE_HINT) from None
        if not 0 < pct <= 100:
            raise SettingsError(f"{key}= percentage out of range: '{value}'.", "between 0 and 100%")
        return int(_mem_total() * pct / 100)
    mult = 1
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
    if v and v[-1].upper() in units:
        mult = units[v[-1].upper()]
        v = v[:-1]
    elif v.endswith("B"):
        v = v[:-1]
    try:
        n = float(v)
    except ValueError:
        raise SettingsError(f"Invalid {key}= value '{value}'.", _SIZE_HINT) from None
    if not n >= 0:  # nan fails this too
        raise SettingsError(f"Invalid {key}= value '{value}': negative.")
    if n * mult >= MAX_BYTES:  # the kernel would wrap it (a limit of 0), as systemd refuses it
        raise SettingsError(f"{key}= value '{value}' is out of range.", "at most 8E, or 'infinity'")
    return int(n * mult)


def parse_cpus(value: str, key: str = "AllowedCPUs") -> str:
    out = []
    for part in value.replace(" ", ",").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
            raise SettingsError(f"Invalid {key}= value '{value}'.", "use CPU numbers and ranges, like 0-1,3")
        out.append(part)
    if not out:
        raise SettingsError(f"Invalid {key}= value '{value}': no CPUs.")
    return ",".join(out)


def _int_range(value: str, key: str, lo: int, hi: int) -> int:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise SettingsError(f"Invalid {key}= value '{value}'.", f"a number from {lo} to {hi}")
    return int(value)


def parse(text: str) -> tuple[str, object]:
    """'Key=Value' -> (Key, parsed value)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq:
        raise SettingsError(f"Invalid property '{text}'.", "use KEY=VALUE, like MemoryMax=512M")
    if key not in PROPERTIES:
        raise SettingsError(f"Unknown property '{key}'.", "known: " + ", ".join(PROPERTIES))
    value = value.strip()
    if key in ("MemoryMax", "MemoryHigh", "MemorySwapMax"):
        return key, parse_bytes(value, key)
    if key == "CPUQuota":
        if value in ("", "infinity"):
            return key, INFINITY
        try:
            pct = float(value[:-1]) if value.endswith("%") else float("nan")
        except ValueError:
            pct = float("nan")
        if not 0 < pct < 1e7:  # nan and inf fail this too
            raise SettingsError(
                f"Invalid CPUQuota= value '{value}'.", "a percentage of one CPU, like 50% or 200%"
            )
        return key, pct
    if key in ("CPUWeight", "IOWeight"):
        return key, _int_range(value, key, 1, 10000)
    if key == "AllowedCPUs":
        return key, parse_cpus(value)
    # TasksMax
    if value == "infinity":
        return key, INFINITY
    if value.endswith("%"):
        try:
            with open("/proc/sys/kernel/pid_max") as f:
                pid_max = int(f.read())
            pct = float(value[:-1])
            if 0 < pct <= 100:
                return key, max(1, int(pid_max * pct / 100))
        except (OSError, ValueError):
            pass
    return key, _int_range(value, key, 1, 1 << 30)


def _write(path: str, value: str, key: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        raise SettingsError(
            f"Cannot apply {key}= on this host: {path} does not exist.",
            "the controller is not available here",
        ) from None
    except OSError as e:
        what = f"{os.path.basename(path)}={value.strip()}"
        raise SettingsError(f"Failed to set {key}= ({what}): {e.strerror}.") from None


def _read_int_into(out: dict[str, int], key: str, path: str) -> None:
    """OUT[KEY] = the number in the cgroup file PATH, left out where the host has no such file."""
    try:
        with open(path) as f:
            out[key] = int(f.read())
    except (OSError, ValueError):
        pass


class V2:
    """The unified hierarchy: ROOT is its mount point (or a directory laid out like it, for tests)."""

    kind = "v2"

    def __init__(self, root: str, name: str) -> None:
        self.root = root
        self.path = f"{root}/machine.slice/machine-{name}.scope"

    def available(self) -> set[str]:
        try:
            with open(f"{self.root}/cgroup.controllers") as f:
                return set(f.read().split())
        except FileNotFoundError:
            return set()

    def prepare(self, props: dict[str, object]) -> None:
        """Enable the controllers PROPS need on the way down to the machine's cgroup."""
        need = {V2_CONTROLLER[k] for k in props}
        missing = need - self.available()
        if missing:
            keys = ", ".join(sorted(k for k in props if V2_CONTROLLER[k] in missing))
            raise SettingsError(
                f"Cannot apply {keys}= on this host: its cgroup2 hierarchy has no "
                f"{', '.join(sorted(missing))} controller.",
                "the controller must be enabled at the cgroup2 root",
            )
        for parent in (self.root, f"{self.root}/machine.slice"):
            os.makedirs(parent, exist_ok=True)
            if need:
                _write(f"{parent}/cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(need)), "cgroup")
        os.makedirs(self.path, exist_ok=True)

    def apply(self, props: dict[str, object]) -> None:
        p = self.path
        for key, value in props.items():
            inf = value == INFINITY
            if key == "MemoryMax":
                _write(f"{p}/memory.max", "max" if inf else str(value), key)
            elif key == "MemoryHigh":
                _write(f"{p}/memory.high", "max" if inf else str(value), key)
            elif key == "MemorySwapMax":
                _write(f"{p}/memory.swap.max", "max" if inf else str(value), key)
            elif key == "CPUQuota":
                _write(f"{p}/cpu.max", "max 100000" if inf else f"{int(float(value) * 1000)} 100000", key)  # type: ignore[arg-type]
            elif key == "CPUWeight":
                _write(f"{p}/cpu.weight", str(value), key)
            elif key == "AllowedCPUs":
                _write(f"{p}/cpuset.cpus", str(value), key)
            elif key == "TasksMax":
                _write(f"{p}/pids.max", "max" if inf else str(value), key)
            elif key == "IOWeight":
                _write(f"{p}/io.weight", f"default {value}", key)

    def attach(self, pid: int) -> None:
        pass  # the payload is cloned into the machine's cgroup (CLONE_INTO_CGROUP)

    def lend(self) -> list[str]:
        return []  # as attach()

    @staticmethod
    def give_back(back: list[str]) -> None:
        pass

    def paths(self) -> list[str]:
        return [self.path]

    def usage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        p = self.path
        try:
            with open(f"{p}/cpu.stat") as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "usage_usec":
                        out["cpu_ns"] = int(v) * 1000
        except OSError:
            pass
        for key, file in (("memory", "memory.current"), ("tasks", "pids.current")):
            _read_int_into(out, key, f"{p}/{file}")
        try:
            with open(f"{p}/io.stat") as f:
                total = 0
                for line in f:
                    for field in line.split()[1:]:
                        k, _, v = field.partition("=")
                        if k in ("rbytes", "wbytes"):
                            total += int(v)
                out["io_bytes"] = total
        except (OSError, ValueError):
            pass
        return out


class V1:
    """Per-controller hierarchies under BASE (/sys/fs/cgroup/<controller>)."""

    kind = "v1"

    def __init__(self, base: str, name: str) -> None:
        self.base = base
        self.name = name
        self.dirs: dict[str, str] = {}

    def _dir(self, controller: str) -> str:
        return f"{self.base}/{controller}/machine.slice/machine-{self.name}.scope"

    def prepare(self, props: dict[str, object]) -> None:
        for key in props:
            controller = V1_CONTROLLER[key]
            if not os.path.isdir(f"{self.base}/{controller}"):
                raise SettingsError(
                    f"Cannot apply {key}= on this host: no cgroup v1 {controller} controller.",
                    f"mount the {controller} hierarchy, or leave {key}= out",
                )
            path = self._dir(controller)
            os.makedirs(path, exist_ok=True)
            if controller == "cpuset":
                # A v1 cpuset takes no task until both its CPUs and memory nodes are set.
                for f in ("cpuset.cpus", "cpuset.mems"):
                    for d in (f"{self.base}/cpuset/machine.slice", path):
                        with open(f"{os.path.dirname(d)}/{f}") as src:
                            cur = src.read().strip()
                        try:
                            with open(f"{d}/{f}") as dst:
                                if dst.read().strip():
                                    continue
                        except FileNotFoundError:
                            pass
                        _write(f"{d}/{f}", cur, key)
            self.dirs[controller] = path

    def apply(self, props: dict[str, object]) -> None:
        for key, value in props.items():
            d = self._dir(V1_CONTROLLER[key])
            inf = value == INFINITY
            if key == "MemoryMax":
                _write(f"{d}/memory.limit_in_bytes", "-1" if inf else str(value), key)
            elif key == "MemoryHigh":
                _write(f"{d}/memory.soft_limit_in_bytes", "-1" if inf else str(value), key)
            elif key == "MemorySwapMax":
                # v1 limits memory+swap together: MemoryMax plus the swap allowance.
                with open(f"{d}/memory.limit_in_bytes") as f:
                    mem = int(f.read())
                _write(f"{d}/memory.memsw.limit_in_bytes", "-1" if inf else str(mem + int(value)), key)  # type: ignore[call-overload]
            elif key == "CPUQuota":
                _write(f"{d}/cpu.cfs_period_us", "100000", key)
                _write(f"{d}/cpu.cfs_quota_us", "-1" if inf else str(int(float(value) * 1000)), key)  # type: ignore[arg-type]
            elif key == "CPUWeight":
                _write(f"{d}/cpu.shares", str(max(2, int(value) * 1024 // 100)), key)  # type: ignore[call-overload]
            elif key == "AllowedCPUs":
                _write(f"{d}/cpuset.cpus", str(value), key)
            elif key == "TasksMax":
                _write(f"{d}/pids.max", "max" if inf else str(value), key)
            elif key == "IOWeight":
                w = int(value)  # type: ignore[call-overload]
                if os.path.exists(f"{d}/blkio.bfq.weight"):  # the BFQ scheduler: 1..1000, as systemd maps it
                    _write(f"{d}/blkio.bfq.weight", str(max(1, min(1000, w))), key)
                else:  # CFQ: 10..1000 around 500
                    _write(f"{d}/blkio.weight", str(max(10, min(1000, w * 5))), key)

    def attach(self, pid: int) -> None:
        for path in self.dirs.values():
            _write(f"{path}/cgroup.procs", str(pid), "cgroup")

    def lend(self) -> list[str]:
        """Move the calling thread into the machine's hierarchies, so a process it clones next is born
        there (hutch.linux.cgroups.join_thread: no RCU grace period, unlike attach()); returns where
        it was, for give_back()."""
        from hutch.linux import cgroups

        back = []
        for controller, path in self.dirs.items():
            back.append(f"{self.base}/{controller}{cgroups.own_v1(controller)}".rstrip("/"))
            cgroups.join_thread(path)
        return back

    @staticmethod
    def give_back(back: list[str]) -> None:
        from hutch.linux import cgroups

        for path in back:
            cgroups.join_thread(path)

    def paths(self) -> list[str]:
        return list(self.dirs.values())

    def usage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, file in (
            ("cpu_ns", f"{self.base}/cpuacct/machine.slice/machine-{self.name}.scope/cpuacct.usage"),
            ("memory", f"{self._dir('memory')}/memory.usage_in_bytes"),
            ("tasks", f"{self._dir('pids')}/pids.current"),
        ):
            _read_int_into(out, key, file)
        try:  # only where the machine has a blkio cgroup (IOWeight=)
            with open(f"{self._dir('blkio')}/blkio.throttle.io_service_bytes") as f:
                total = [ln for ln in f if ln.startswith("Total ")]
            out["io_bytes"] = int(total[0].split()[1]) if total else 0
        except (OSError, ValueError, IndexError):
            pass
        return out


class Unit(V2):
    """A machine whose cgroup is a systemd unit's (hutch.container.systemd): systemd applies the limits, as
    the unit's properties; this only reads the unit's cgroup."""

    kind = "systemd"

    def __init__(self, path: str) -> None:
        self.root = ""
        self.path = path

    def prepare(self, props: dict[str, object]) -> None:
        pass

    def apply_items(self, items: list[str]) -> None:
        from hutch.container import systemd

        systemd.set_properties(systemd.unit_of(self.path), items)

    def paths(self) -> list[str]:
        return []  # the unit's, not ours to remove


def backend(name: str, base: str | None = None, scope: str = "") -> V1 | V2:
    """The backend for this host: the machine's systemd unit where systemd is PID 1 (SCOPE: its cgroup,
    from the machine's record), else the unified hierarchy when it is mounted on /sys/fs/cgroup itself
    (a pure v2 host), the v1 controller hierarchies otherwise. HUTCH_CGROUP_ROOT points tests at a
    directory laid out like cgroupfs."""
    if scope and base is None:
        from hutch.container import systemd

        if systemd.booted():
            return Unit(scope)
    base = base or os.getenv("HUTCH_CGROUP_ROOT") or "/sys/fs/cgroup"
    if os.path.exists(f"{base}/cgroup.subtree_control"):
        return V2(base, name)
    return V1(base, name)


def parse_all(items: list[str]) -> dict[str, object]:
    """--property values in order; a later one for the same key wins."""
    out: dict[str, object] = {}
    for item in items:
        key, value = parse(item)
        out[key] = value
    return out


def check_usage(props: dict[str, object], usage: dict[str, int]) -> None:
    """A limit below what the machine already uses is refused rather than left to the OOM killer."""
    mem = props.get("MemoryMax")
    if isinstance(mem, int) and mem != INFINITY and "memory" in usage and mem < usage["memory"]:
        raise SettingsError(
            f"MemoryMax={mem} is below the machine's current memory use ({usage['memory']} bytes).",
            "free memory in the machine first, or choose a higher limit",
        )
    tasks = props.get("TasksMax")
    if isinstance(tasks, int) and tasks != INFINITY and "tasks" in usage and tasks < usage["tasks"]:
        raise SettingsError(
            f"TasksMax={tasks} is below the machine's current number of tasks ({usage['tasks']}).",
            "stop some processes first, or choose a higher limit",
        )
