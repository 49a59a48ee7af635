"""The verbs that signal running machines: poweroff, reboot, terminate (with --wait: until it is done)
and kill. Their command lines are tables (hutch.cli.options): scripts and clients call them in loops,
and argparse would cost more than the signal."""

from __future__ import annotations

from hutch.cli.options import Arg, Opt, Verb, parse, seconds
from hutch.errors import UsageError
from hutch.machines import control
from hutch.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _stopper(verb: str, doc: str) -> Verb:
    return Verb(
        verb,
        "NAME...",
        doc,
        [
            Opt(
                "--wait",
                default=False,
                help="return once the machine has stopped (reboot: once it runs again)",
            ),
            Opt(
                "--timeout", convert=seconds, default=60.0, metavar="SEC", help="how long --wait waits (60)"
            ),
        ],
        [Arg("names", "NAME", "+")],
    )


POWEROFF = _stopper("poweroff", "Power machines off, with the signal their init understands.")
REBOOT = _stopper("reboot", "Reboot machines (SIGINT to their init).")
TERMINATE = _stopper("terminate", "Stop machines now: their kill signal, then SIGKILL after 5 s.")


def _stop(verb: Verb, action: Callable[[str, Paths], None], args: list[str]) -> int:
    ns = parse(verb, args)
    paths = Paths.from_env()
    leaders = {}
    for name in ns.names:
        leaders[name] = int(control.get(name, paths)["leader"])
        action(name, paths)
    if ns.wait:
        for name in ns.names:
            if verb is REBOOT:
                control.wait_rebooted(name, paths, ns.timeout, leaders[name])
            else:
                control.wait_stopped(name, paths, ns.timeout, action if verb is POWEROFF else None)
    return 0


def poweroff(args: list[str]) -> int:
    return _stop(POWEROFF, control.poweroff, args)


def reboot(args: list[str]) -> int:
    return _stop(REBOOT, control.reboot, args)


def terminate(args: list[str]) -> int:
    return _stop(TERMINATE, control.terminate, args)


KILL = Verb(
    "kill",
    "NAME... [-s SIGNAL] [--kill-whom=leader|all]",
    "Send a signal to machines' processes.",
    [
        Opt("-s", "--signal", value=True, default="SIGTERM", help="the signal (SIGTERM)"),
        Opt("--kill-whom", choices=("leader", "all"), default="all", help="the leader only, or all (all)"),
    ],
    [Arg("names", "NAME", "+")],
)


def kill(args: list[str]) -> int:
    from hutch.settings.values import parse_signal

    ns = parse(KILL, args)
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
