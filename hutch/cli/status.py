"""`hutch status` and `hutch show`, machinectl's views of a running machine (for people; as Key=Value),
read from the registry and the machine's cgroup and /proc. Their command lines are tables
(hutch.cli.options): real clients call them often, and argparse would cost more than the rest."""

from __future__ import annotations

from hutch.cli import output
from hutch.cli.listing import address_count, host_entry, os_release_of
from hutch.cli.options import Arg, BadValue, Opt, Verb, parse
from hutch.linux import posixos as os
from hutch.machines import control, registry
from hutch.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _entry(name: str, paths: Paths) -> dict[str, Any]:
    """NAME's registry entry; `.host` is the host, as machined has it."""
    return host_entry() if name == ".host" else control.get(name, paths)


def lines(text: str) -> int:
    """-n/--lines as machinectl takes it: a count, never negative."""
    if not text.isdigit():
        raise BadValue(f"invalid number of lines '{text}'")
    return int(text)


def _monotonic_usec(realtime_usec: int) -> int:
    import time

    return max(0, realtime_usec - time.time_ns() // 1000 + time.monotonic_ns() // 1000)


def _ifindexes(names: str) -> str:
    """NetworkInterfaces as machined has it: the host's interface indexes, not names (_socket's
    if_nametoindex: the socket module around it costs ~4 ms to import)."""
    import _socket

    out = []
    for name in names.split():
        try:
            out.append(str(_socket.if_nametoindex(name)))
        except OSError:
            pass
    return " ".join(out)


def _process_tree(entry: dict[str, Any]) -> list[str]:
    pids = control.cgroup_pids(entry)
    info: dict[int, tuple[int, str]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as sf:
                stat = sf.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as cf:
                cmd = cf.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            continue
        info[pid] = (ppid, cmd or stat[stat.index("(") + 1 : stat.rindex(")")])
    lines: list[str] = []

    def walk(pid: int, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'└─' if last else '├─'}{pid} {info[pid][1]}")
        kids = sorted(p for p, (pp, _) in info.items() if pp == pid)
        for i, k in enumerate(kids):
            walk(k, prefix + ("  " if last else "│ "), i == len(kids) - 1)

    roots = sorted(p for p, (pp, _) in info.items() if pp not in info)
    for i, r in enumerate(roots):
        walk(r, "", i == len(roots) - 1)
    return lines


STATUS = Verb(
    "status",
    "NAME...",
    "Show a running machine, for people.",
    [
        Opt("-n", "--lines", convert=lines, default=10, help="console lines to show (10)"),
        Opt(
            "--max-addresses",
            convert=address_count,
            default=1 << 30,
            metavar="N|all",
            help="how many addresses to show (all)",
        ),
        Opt(
            "-o",
            "--output",
            choices=output.JOURNAL_MODES,
            default="short",
            help="as journalctl's -o, for the console lines (all show the console's text)",
        ),
    ],
    [Arg("names", "NAME", "+")],
)


def status(args: list[str]) -> int:
    ns = parse(STATUS, args)
    paths = Paths.from_env()
    for n, name in enumerate(ns.names):
        e = _entry(name, paths)
        if n:
            print()
        rel = os_release_of(e)
        try:
            with open(f"/proc/{e['leader']}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        # machinectl's layout, tabs included, so scripts that grep it (`status NAME | grep Unit:`) work;
        # hutch's own lines (Limits, Usage) come before Unit, as systemctl status shows such values.
        print(f"{e['name']}({e['id']})")
        print(f"\t   Since: {output.timestamp(e['since'])}; {output.timespan_ago(e['since'])}")
        print(f"\t  Leader: {e['leader']} ({comm})")
        if e.get("service", "hutch"):
            print(f"\t Service: {e.get('service', 'hutch')}; class {e.get('cls', 'container')}")
        else:
            print(f"\t   Class: {e.get('cls', 'container')}")
        print(f"\t    Root: {e['root']}")
        if e.get("netif"):
            print(f"\t   Iface: {e['netif']}")
        addresses = (e.get("addresses") or [])[: ns.max_addresses]
        if addresses:
            more = len(e["addresses"]) - len(addresses)
            print("\t Address: " + "\n\t          ".join(addresses + ([f"and {more} more"] if more else [])))
        if rel.get("PRETTY_NAME"):
            print(f"\t      OS: {rel['PRETTY_NAME']}")
        if e.get("uid_shift"):
            print(f"  UID Shift: {e['uid_shift']}")  # sic: machinectl prints this one without a tab
        lim = control.current_limits(e, paths)
        if lim:
            print("\t  Limits: " + " ".join(f"{k}={v}" for k, v in sorted(lim.items())))
        u = _usage(e)
        if u:
            parts = []
            if "memory" in u:
                parts.append(f"memory {output.size(u['memory'])}")
            if "tasks" in u:
                parts.append(f"tasks {u['tasks']}")
            if "cpu_ns" in u:
                parts.append(f"CPU {u['cpu_ns'] / 1e9:.1f}s")
            if "io_bytes" in u:
                parts.append(f"IO {output.size(u['io_bytes'])}")
            print(f"\t   Usage: {', '.join(parts)}")
        if e.get("cgroup"):
            scope = str(e.get("scope") or e["cgroup"])
            print(f"\t    Unit: {scope.rstrip('/').rsplit('/', 1)[-1]}")
            for line in _process_tree(e):
                print(f"\t\t  {line}")
        if e.get("log") and ns.lines > 0:
            print()
            for line in control.tail(e["log"], ns.lines):
                print(line)
    return 0


SHOW = Verb(
    "show",
    "[NAME...] [-p PROPERTY] [--value]",
    "Show a machine's properties as Key=Value.",
    [
        Opt("-p", "--property", append=True, help="only this property (again for more)"),
        Opt("-P", dest="value_property", append=True, help="only this property, its value alone"),
        Opt("--value", help="values alone, without Key="),
        Opt("-a", "--all", help="also properties that are empty"),
    ],
    [Arg("names", "NAME", "*")],
)


def show(args: list[str]) -> int:
    ns = parse(SHOW, args)
    paths = Paths.from_env()
    wanted = ns.property + ns.value_property
    value_only = ns.value or bool(ns.value_property)
    if not ns.names:
        vfs = os.statvfs(paths.image_dir) if os.path.isdir(paths.image_dir) else None
        props = [
            ("PoolPath", paths.image_dir),
            ("PoolUsage", str((vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize) if vfs else ""),
            ("PoolLimit", str(vfs.f_blocks * vfs.f_frsize) if vfs else ""),
            ("StateDirectory", paths.state_dir),
            ("Machines", str(len(registry.running(paths.state_dir)))),
        ]
        output.properties(props, wanted, value_only, ns.all)
        return 0
    for n, name in enumerate(ns.names):
        e = _entry(name, paths)
        if n and not value_only:
            print()
        # org.freedesktop.machine1.Machine's properties, in its order and formats.
        props = [
            ("Name", e["name"]),
            ("Id", e["id"]),
            ("Timestamp", output.timestamp(e["since"])),
            ("TimestampMonotonic", str(_monotonic_usec(int(e["since"])))),
            ("Service", e.get("service", "hutch")),
            ("Unit", os.path.basename(e.get("scope") or e.get("cgroup") or "")),
            ("Leader", str(e["leader"])),
            ("Class", e.get("cls", "container")),
            ("RootDirectory", e["root"]),
            ("NetworkInterfaces", _ifindexes(e.get("netif") or "")),
            ("State", e.get("state", "running")),
        ]
        extra = [
            ("TimestampUSec", str(e["since"])),
            ("Supervisor", str(e["supervisor"])),
            ("Addresses", " ".join(e.get("addresses") or [])),
            ("UIDShift", str(e.get("uid_shift", 0))),
        ]
        output.properties(props, wanted, value_only, ns.all, extra)
    return 0


def _usage(entry: dict[str, Any]) -> dict[str, int]:
    from hutch.container import limits

    return limits.backend(entry["name"], scope=str(entry.get("scope") or "")).usage()
