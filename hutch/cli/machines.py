"""The machine verbs, with machinectl's names and options: start, list, status, show, poweroff, reboot,
terminate, kill."""

from __future__ import annotations

import os
import sys
from typing import Any

from hutch.cli import output
from hutch.cli.images import _parser
from hutch.cli.options import seconds
from hutch.cli.status import _process_tree, _usage
from hutch.errors import MachineError, UsageError
from hutch.machines import control, registry
from hutch.paths import Paths


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


def shell(args: list[str]) -> int:
    from hutch.machines import enter

    p = _parser(
        "shell",
        "[USER@]NAME [COMMAND...]",
        "Run a command (default: a login shell) inside a running machine; its exit status is hutch's.",
    )
    p.add_argument("--uid", metavar="USER", help="the user to run as (also USER@NAME)")
    p.add_argument(
        "-E",
        "--setenv",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable for the command",
    )
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
    p.add_argument("--read-only", action="store_true", help="the machine may not write to it")
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
                    if autostart.systemd_is_init() and not os.environ.get("HUTCH_SYSTEMD_UNIT_DIR"):
                        autostart.start_unit(name)  # machinectl enable --now: the unit runs it
                    else:
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


def top(args: list[str]) -> int:
    import time

    p = _parser(
        "top",
        "[-o json] [-d SEC] [-n N]",
        "CPU, memory, tasks and IO of each running machine, "
        "refreshing like systemd-cgtop (-o json: one sample, machine-readable).",
    )
    p.add_argument(
        "-o", "--output", choices=("table", "json", "json-pretty"), default="table", help="the output's form"
    )
    p.add_argument(
        "-d", "--delay", type=seconds, default=1.0, metavar="SEC", help="time between refreshes (1)"
    )
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
