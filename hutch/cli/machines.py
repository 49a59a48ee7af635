"""The machine verbs, with machinectl's names and options: start, list, status, show, poweroff, reboot,
terminate, kill."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from hutch.cli import fail, output
from hutch.cli.images import _Parser, _parser, seconds
from hutch.errors import MachineError, UsageError
from hutch.machines import control, registry
from hutch.paths import Paths


def _wait_options(p: _Parser, default_wait: bool = False) -> None:
    p.add_argument(
        "--wait",
        action="store_true",
        default=default_wait,
        help="return once the machine has stopped (reboot: once it runs again)",
    )
    p.add_argument("--timeout", type=seconds, default=60.0, metavar="SEC", help="how long --wait waits (60)")


def _os_release(entry: dict[str, Any]) -> dict[str, str]:
    from hutch.images import store

    root = entry["root"]
    if os.path.isfile(root):  # a disk image, mounted only inside the machine: read it there
        root = f"/proc/{entry['leader']}/root"
    img = store.Image(entry["name"], root, "directory")
    return store.os_release(img)


# journalctl's output modes, which machinectl status takes for the journal lines it shows.


def _host_entry() -> dict[str, Any]:
    """The host as machinectl shows it: `.host`, class host, its machine ID, up since its boot."""
    mid = ""
    try:
        with open("/etc/machine-id") as f:
            mid = f.read(64).strip()
    except OSError:
        pass
    since = 0
    try:
        with open("/proc/stat") as f:
            btime = next((ln.split()[1] for ln in f if ln.startswith("btime ")), "0")
        since = int(btime) * 1_000_000
    except (OSError, ValueError):
        pass
    return {"name": ".host", "cls": "host", "service": "", "root": "/", "leader": 1, "id": mid,
            "since": since, "supervisor": 0}  # fmt: skip


def _entry(name: str, paths: Paths) -> dict[str, Any]:
    """NAME's registry entry; `.host` is the host, as machined has it."""
    return _host_entry() if name == ".host" else control.get(name, paths)


def list_machines(args: list[str]) -> int:
    p = _parser("list", "[OPTIONS]", "List the running machines.")
    p.add_argument("-a", "--all", action="store_true", help="also the host itself (.host)")
    p.add_argument("--no-legend", action="store_true")
    p.add_argument("-o", "--output", choices=("table", "json", "json-pretty"), default="table")
    p.add_argument(
        "--max-addresses",
        type=_max_addresses,
        default=1,
        metavar="N|all",
        help="how many addresses a machine's row shows (1; 0 drops the column)",
    )
    ns = p.parse_args(args)
    damaged: list[registry.DamagedEntry] = []
    entries = registry.running(Paths.from_env().state_dir, damaged)
    registry.gc_cgroups()  # what SIGKILLed supervisors of unregistered machines left
    for bad in damaged:  # the others are listed all the same; the exit status tells
        fail("hutch list", bad)
    if ns.all:
        entries.insert(0, _host_entry())
    rows = []
    for e in entries:
        rel = _os_release(e) if e["name"] != ".host" else _host_release()
        # As machinectl's table: a missing value is null (a dash in the table), and the addresses
        # are one string, one per line.
        row: dict[str, str | None] = {
            "machine": e["name"],
            "class": e.get("cls", "container") or None,
            "service": e.get("service", "hutch") or None,
            "os": rel.get("ID") or None,
            "version": rel.get("VERSION_ID") or None,
            "addresses": "\n".join(e.get("addresses") or []) or None,
        }
        if ns.max_addresses == 0:
            del row["addresses"]
        rows.append(row)
    rows.sort(key=lambda r: r["machine"] or "")
    if ns.output.startswith("json"):
        output.print_json(rows, pretty=ns.output == "json-pretty")
        return 1 if damaged else 0
    columns = ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES"][: 6 if ns.max_addresses else 5]
    height = None if ns.full else ns.max_addresses
    table = [[_cell(r[c.lower()], height if c == "ADDRESSES" else None) for c in columns] for r in rows]
    output.table(columns, table, legend=not ns.no_legend, noun="machine")
    return 1 if damaged else 0


def _monotonic_usec(realtime_usec: int) -> int:
    import time

    return max(0, realtime_usec - time.time_ns() // 1000 + time.monotonic_ns() // 1000)


def _ifindexes(names: str) -> str:
    """NetworkInterfaces as machined has it: the host's interface indexes, not names."""
    import socket

    out = []
    for name in names.split():
        try:
            out.append(str(socket.if_nametoindex(name)))
        except OSError:
            pass
    return " ".join(out)


def _lines(text: str) -> int:
    """-n/--lines as machinectl takes it: a count, never negative."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid number of lines '{text}'")
    return int(text)


def _max_addresses(text: str) -> int:
    if text in ("all", "infinity"):
        return 1 << 30
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid number of addresses '{text}': a count, or 'all'")
    return int(text)


def _cell(value: str | None, lines: int | None) -> str:
    """A table cell as systemd's tables show it: '-' for nothing, at most LINES lines, the last of them
    ending in '…' when some were cut."""
    if not value:
        return "-"
    parts = value.split("\n")
    if lines is None or len(parts) <= lines:
        return value
    return "\n".join([*parts[: lines - 1], parts[lines - 1] + "…"])


def _host_release() -> dict[str, str]:
    from hutch.images import store

    return store.os_release(store.host_image())


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


def status(args: list[str]) -> int:
    p = _parser("status", "NAME...", "Show a running machine, for people.")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-n", "--lines", type=_lines, default=10, help="console lines to show (10)")
    p.add_argument("--max-addresses", type=_max_addresses, default=1 << 30, help="addresses to show (all)")
    p.add_argument(
        "-o",
        "--output",
        choices=output.JOURNAL_MODES,
        default="short",
        help="as journalctl's -o, for the console lines (hutch's are the console's text: all show it so)",
    )
    ns = p.parse_args(args)
    paths = Paths.from_env()
    for n, name in enumerate(ns.names):
        e = _entry(name, paths)
        if n:
            print()
        rel = _os_release(e)
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


def show(args: list[str]) -> int:
    p = _parser("show", "[NAME...] [-p PROPERTY] [--value]", "Show a machine's properties as Key=Value.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-p", "--property", action="append", default=[])
    p.add_argument("-P", dest="value_property", action="append", default=[])
    p.add_argument("--value", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    ns = p.parse_args(args)
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


def start(args: list[str]) -> int:
    p = _parser(
        "start",
        "NAME...",
        "Start machines in the background (boot, user namespace, a veth pair "
        "with addresses) and return once each is up.",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=control.START_TIMEOUT,
        metavar="SEC",
        help="how long to wait for a machine to come up (90)",
    )
    p.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a resource limit, as hutch spawn --property (MemoryMax=512M, TasksMax=100, ...)",
    )
    ns = p.parse_args(args)
    paths = Paths.from_env()
    if ns.property:
        from hutch.container import limits

        limits.parse_all(ns.property)  # refused before anything starts
    rc = 0
    for name in ns.names:
        try:
            e = control.start(name, paths, ns.timeout, [f"--property={x}" for x in ns.property])
        except control.ExitedAtOnce as err:
            if not ns.quiet:
                print(err.message, file=sys.stderr)
            continue
        except MachineError as err:
            from hutch.cli import fail

            rc = fail("hutch start", err)
            for line in getattr(err, "console", []):
                print(f"  | {line}", file=sys.stderr)
            continue
        if not ns.quiet:
            print(f"Started machine '{name}' (leader {e['leader']}).", file=sys.stderr)
    return rc


def _stopper(verb: str, doc: str, action: Any, default_wait: bool = False) -> Any:
    def run(args: list[str]) -> int:
        p = _parser(verb, "NAME...", doc)
        p.add_argument("names", nargs="+", metavar="NAME")
        _wait_options(p, default_wait)
        ns = p.parse_args(args)
        paths = Paths.from_env()
        leaders = {}
        for name in ns.names:
            leaders[name] = int(control.get(name, paths)["leader"])
            action(name, paths)
        if ns.wait:
            for name in ns.names:
                if verb == "reboot":
                    control.wait_rebooted(name, paths, ns.timeout, leaders[name])
                else:
                    resend = action if verb == "poweroff" else None
                    control.wait_stopped(name, paths, ns.timeout, resend)
        return 0

    return run


poweroff = _stopper(
    "poweroff", "Power machines off, with the signal their init understands.", control.poweroff
)
reboot = _stopper("reboot", "Reboot machines (SIGINT to their init).", control.reboot)
terminate = _stopper(
    "terminate", "Stop machines now: their kill signal, then SIGKILL after 5 s.", control.terminate
)


def kill(args: list[str]) -> int:
    from hutch.settings.values import parse_signal

    p = _parser(
        "kill", "NAME... [-s SIGNAL] [--kill-whom=leader|all]", "Send a signal to machines' processes."
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-s", "--signal", default="SIGTERM")
    p.add_argument("--kill-whom", choices=("leader", "all"), default="all")
    ns = p.parse_args(args)
    try:
        signo = parse_signal(ns.signal)
    except UsageError as e:
        raise UsageError(
            f"Unknown signal '{ns.signal}'.", "use a name like SIGTERM, TERM or RTMIN+4, or a number"
        ) from e
    paths = Paths.from_env()
    for name in ns.names:
        control.kill(name, signo, ns.kill_whom, paths)
    return 0


def shell(args: list[str]) -> int:
    from hutch.machines import enter

    p = _parser(
        "shell",
        "[USER@]NAME [COMMAND...]",
        "Run a command (default: a login shell) inside a running machine; its exit status is hutch's.",
    )
    p.add_argument("--uid", metavar="USER", help="the user to run as (also USER@NAME)")
    p.add_argument("-E", "--setenv", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("target", metavar="[USER@]NAME")
    p.add_argument("command", nargs="*", metavar="COMMAND")
    # Everything after [USER@]NAME is the command's, options included (argparse would take them).
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if args[i] in ("-E", "--setenv", "--uid") else 1
    if i < len(args) and args[i] == "--":
        head, tail = args[:i], args[i + 1 :]
    else:
        head, tail = args[: i + 1], args[i + 1 :]
    ns = p.parse_args(head)
    ns.command = tail
    user, name = enter.split_target(ns.target)
    if ns.uid:
        user = ns.uid
    if name in ("", ".host"):  # USER@ or USER@.host: the host itself, as machinectl's
        from hutch.machines import hostshell

        return hostshell.run(user, ns.command or None, ns.setenv)
    control.check_name(name)
    return enter.run(name, Paths.from_env(), user=user, command=ns.command or None, setenv=ns.setenv)


ANALYZE_VERBS = ("time", "blame", "critical-chain")


def analyze(args: list[str]) -> int:
    from hutch.machines import enter

    p = _parser(
        "analyze",
        "NAME [time|blame|critical-chain]",
        "How a running machine's boot went: `systemd-analyze -M NAME VERB`, run inside a systemd "
        "guest; for other inits, the start-up time hutch measured (time only).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("verb", nargs="?", default="time", choices=ANALYZE_VERBS)
    ns = p.parse_args(args)
    paths = Paths.from_env()
    e = control.get(ns.name, paths)
    if _init_name(e) == "systemd":
        return enter.run(ns.name, paths, command=["systemd-analyze", ns.verb, "--no-pager"])
    if ns.verb != "time":
        raise MachineError(
            f"Machine '{ns.name}' runs {_init_name(e) or 'an init'} rather than systemd: "
            f"'{ns.verb}' has no units to show.",
            f"'hutch analyze {ns.name} time' shows its start-up time",
        )
    since, ready = e.get("since"), e.get("ready")
    if not isinstance(since, int) or not isinstance(ready, int):
        raise MachineError(f"Machine '{ns.name}' has no start-up time recorded.", "it is still starting")
    print(f"Startup finished in {_duration(ready - since)} (hutch: from its start until PID 1 ran)")
    return 0


def _init_name(e: dict[str, Any]) -> str:
    try:
        with open(f"/proc/{int(e['leader'])}/comm") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def _duration(us: int) -> str:
    """As systemd-analyze prints spans: 1.234s, 56ms."""
    return f"{us / 1e6:.3f}s" if us >= 1_000_000 else f"{us / 1000:.0f}ms"


def login(args: list[str]) -> int:
    from hutch.machines import enter

    p = _parser("login", "NAME", "Log in to a running machine on a new pseudo-terminal, whatever its init.")
    p.add_argument("name", metavar="NAME")
    ns = p.parse_args(args)
    if ns.name != ".host":
        control.check_name(ns.name)
    if not os.isatty(0):
        raise UsageError(
            "hutch login needs a terminal.", f"use 'hutch shell {ns.name} COMMAND' from scripts"
        )
    if ns.name == ".host":  # the host's own login prompt, on this terminal
        from hutch.machines import hostshell

        return hostshell.run("root", ["/bin/login"], [])
    if not ns.quiet:
        print(f"Connected to machine {ns.name}. Log out to leave.", file=sys.stderr)
    rc = enter.run(ns.name, Paths.from_env(), login=True)
    if not ns.quiet:
        print(f"\nConnection to machine {ns.name} terminated.", file=sys.stderr)
    return rc


def logs(args: list[str]) -> int:
    import time

    p = _parser(
        "logs",
        "NAME [-f] [-n N] [--journal]",
        "Show a machine's console output (kept by its "
        "supervisor, capped at 1 MiB and rotated), or with --journal the guest's journal.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many lines (50; 0: all)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing as the machine writes")
    p.add_argument("--journal", action="store_true", help="the guest's journal (journalctl in the machine)")
    ns = p.parse_args(args)
    control.check_name(ns.name)
    paths = Paths.from_env()
    if ns.journal:
        from hutch.machines import enter

        control.get(ns.name, paths)
        cmd = ["journalctl", "--no-pager", "-n", str(ns.lines) if ns.lines else "all"]
        return enter.run(ns.name, paths, command=[*cmd, "-f"] if ns.follow else cmd)
    path = control.log_path(paths, ns.name)
    if not os.path.exists(path):
        raise MachineError(
            f"No console log for machine '{ns.name}'.", "only machines started with 'hutch start' keep one"
        )
    text = ""
    for part in (path + ".1", path):
        try:
            with open(part, "rb") as f:
                text += f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            pass
    lines = text.replace("\r\n", "\n").replace("\r", "").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines[-ns.lines :] if ns.lines else lines:
        print(line)
    if ns.follow:
        sys.stdout.flush()
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            try:
                while True:
                    data = f.read()
                    if data:
                        sys.stdout.write(data.decode("utf-8", "replace").replace("\r", ""))
                        sys.stdout.flush()
                    elif not registry.is_running(paths.state_dir, ns.name):
                        break
                    else:
                        time.sleep(0.2)
            except KeyboardInterrupt:
                pass
    return 0


def cgls(args: list[str]) -> int:
    p = _parser("cgls", "[NAME...]", "Show machines' cgroup process trees.")
    p.add_argument("names", nargs="*", metavar="NAME")
    ns = p.parse_args(args)
    paths = Paths.from_env()
    entries = [control.get(n, paths) for n in ns.names] if ns.names else registry.running(paths.state_dir)
    for n, e in enumerate(entries):
        if n:
            print()
        print(f"{e['name']}: {e.get('cgroup') or '(no cgroup)'}")
        for line in _process_tree(e):
            print(line)
    return 0


def bind(args: list[str]) -> int:
    from hutch.machines import files

    p = _parser(
        "bind",
        "NAME SRC [DST] [--read-only] [--mkdir]",
        "Mount a host file or directory into a "
        "running machine (user-namespaced ones too: the source shows its real owners).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", nargs="?", metavar="DST")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--mkdir", action="store_true", help="create DST in the machine if missing")
    ns = p.parse_args(args)
    control.check_name(ns.name)
    files.bind(ns.name, ns.src, ns.dst, Paths.from_env(), read_only=ns.read_only, mkdir=ns.mkdir)
    return 0


def _copier(verb: str, doc: str, fn_name: str) -> Any:
    def run(args: list[str]) -> int:
        from hutch.machines import files

        p = _parser(verb, "NAME SRC [DST] [--force]", doc)
        p.add_argument("name", metavar="NAME")
        p.add_argument("src", metavar="SRC")
        p.add_argument("dst", nargs="?", metavar="DST")
        p.add_argument("--force", action="store_true", help="replace DST if it exists")
        ns = p.parse_args(args)
        control.check_name(ns.name)
        getattr(files, fn_name)(ns.name, ns.src, ns.dst, Paths.from_env(), force=ns.force)
        return 0

    return run


copy_to = _copier("copy-to", "Copy a host file or directory into a running machine.", "copy_to")
copy_from = _copier("copy-from", "Copy a file or directory out of a running machine.", "copy_from")


def _enabler(verb: str) -> Any:
    def run(args: list[str]) -> int:
        from hutch.machines import autostart

        p = _parser(
            verb,
            "[--now] NAME...",
            f"{verb.capitalize()} starting machines at boot "
            "(a systemd unit where systemd is init, else 'hutch autostart').",
        )
        p.add_argument("names", nargs="+", metavar="NAME")
        p.add_argument("--now", action="store_true", help="also start (or power off) them now")
        ns = p.parse_args(args)
        paths = Paths.from_env()
        for name in ns.names:
            changed = autostart.enable(name, paths) if verb == "enable" else autostart.disable(name, paths)
            if not ns.quiet:
                for path in changed:
                    print(f"{'Created' if verb == 'enable' else 'Removed'} {path}.", file=sys.stderr)
            if ns.now:
                if verb == "enable" and not registry.is_running(paths.state_dir, name):
                    control.start(name, paths)
                elif verb == "disable" and registry.is_running(paths.state_dir, name):
                    control.poweroff(name, paths)
                    control.wait_stopped(name, paths, 60)
        return 0

    return run


enable = _enabler("enable")
disable = _enabler("disable")


def autostart_(args: list[str]) -> int:
    from hutch.machines import autostart

    p = _parser(
        "autostart",
        "",
        "Start every enabled machine that is not running (for OpenRC, sysvinit "
        "or rc.local, where systemd is not init).",
    )
    p.parse_args(args)
    return autostart.autostart(Paths.from_env())


def set_property(args: list[str]) -> int:
    p = _parser(
        "set-property",
        "NAME KEY=VALUE...",
        "Change a running machine's resource limits: "
        "MemoryMax, MemoryHigh, MemorySwapMax, CPUQuota, CPUWeight, AllowedCPUs, TasksMax, IOWeight.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("props", nargs="+", metavar="KEY=VALUE")
    ns = p.parse_args(args)
    control.check_name(ns.name)
    control.set_property(ns.name, ns.props, Paths.from_env())
    return 0


def _usage(entry: dict[str, Any]) -> dict[str, int]:
    from hutch.container import limits

    return limits.backend(entry["name"]).usage()


def top(args: list[str]) -> int:
    import time

    p = _parser(
        "top",
        "[-o json] [-d SEC] [-n N]",
        "CPU, memory, tasks and IO of each running machine, "
        "refreshing like systemd-cgtop (-o json: one sample, machine-readable).",
    )
    p.add_argument("-o", "--output", choices=("table", "json", "json-pretty"), default="table")
    p.add_argument("-d", "--delay", type=seconds, default=1.0, metavar="SEC")
    p.add_argument("-n", "--iterations", type=int, default=0, metavar="N", help="stop after N refreshes")
    ns = p.parse_args(args)
    paths = Paths.from_env()

    def sample() -> dict[str, dict[str, int]]:
        return {e["name"]: _usage(e) for e in registry.running(paths.state_dir)}

    before, t0 = sample(), time.monotonic()
    n = 0
    try:
        while True:
            time.sleep(ns.delay if not ns.output.startswith("json") else min(ns.delay, 0.5))
            now, t1 = sample(), time.monotonic()
            rows: list[dict[str, Any]] = []
            for name, u in sorted(now.items()):
                prev = before.get(name, {})
                cpu = None
                if "cpu_ns" in u and "cpu_ns" in prev:
                    cpu = round(100 * (u["cpu_ns"] - prev["cpu_ns"]) / ((t1 - t0) * 1e9), 1)
                io = None
                if "io_bytes" in u and "io_bytes" in prev:
                    io = int((u["io_bytes"] - prev["io_bytes"]) / (t1 - t0))
                rows.append(
                    {"machine": name, "cpu_percent": cpu, "memory": u.get("memory"), "tasks": u.get("tasks"),
                     "io_bytes_per_second": io}
                )  # fmt: skip
            if ns.output.startswith("json"):
                output.print_json(rows, pretty=ns.output == "json-pretty")
                return 0
            if sys.stdout.isatty():
                sys.stdout.write("\033[H\033[2J")
            table = [
                [str(r["machine"]), "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}",
                 output.size(r["memory"]), "-" if r["tasks"] is None else str(r["tasks"]),
                 "-" if r["io_bytes_per_second"] is None else output.size(r["io_bytes_per_second"]) + "/s"]
                for r in rows
            ]  # fmt: skip
            output.table(["MACHINE", "%CPU", "MEMORY", "TASKS", "IO"], table, legend=True, noun="machine")
            sys.stdout.flush()
            n += 1
            if ns.iterations and n >= ns.iterations:
                return 0
            before, t0 = now, t1
    except KeyboardInterrupt:
        return 0


def set_limit(args: list[str]) -> int:
    from hutch.images import store

    p = _parser("set-limit", "[NAME] BYTES", "Set a size limit on an image, or on the image store.")
    p.add_argument("words", nargs="+", metavar="[NAME] BYTES")
    ns = p.parse_args(args)
    if len(ns.words) > 2:
        raise UsageError("set-limit takes at most a NAME and a size.")
    paths = Paths.from_env()
    where = store.get(ns.words[0], paths).path if len(ns.words) == 2 else paths.image_dir
    # machined sets btrfs quota groups; hutch's images are plain directories, files and overlays.
    raise MachineError(
        f"Failed to set a size limit on {where}: quota is only supported on btrfs subvolumes.",
        "hutch's images are not btrfs subvolumes; limit the file system the store is on instead",
    )
