"""The verbs' command-line tables (hutch.cli.options): the fast reader and the argparse parser made from
the same table read every command line alike; the reader leaves to argparse what only argparse can say
(help, abbreviations, mistakes), and argparse's errors stay one line with a hint."""

from __future__ import annotations

import pytest

from hutch.cli import listing, options, status, stopping
from hutch.errors import UsageError

VERBS = {
    "list": listing.LIST, "status": status.STATUS, "show": status.SHOW, "poweroff": stopping.POWEROFF,
    "reboot": stopping.REBOOT, "terminate": stopping.TERMINATE, "kill": stopping.KILL,
}  # fmt: skip

# Command lines the reader must take itself, as argparse would.
FAST = {
    "list": [
        [], ["-a"], ["--all", "--no-legend"], ["-o", "json"], ["-ojson"], ["--output=json-pretty"],
        ["--output", "table"], ["--max-addresses=0"], ["--max-addresses", "all"], ["--max-addresses=3"],
        ["-l"], ["--full", "-q"], ["--no-pager", "--no-ask-password", "--quiet"], ["-a", "-o", "json", "-l"],
        ["-M", ".host"], ["--machine=root@"],
    ],
    "status": [["bb"], ["bb", "cc"], ["-n", "0", "bb"], ["bb", "--lines=3"], ["-o", "cat", "bb", "-l"],
               ["--max-addresses=all", "bb"], ["--", "bb"], ["bb", "-q", "--no-pager"]],
    "show": [[], ["bb"], ["bb", "-p", "Leader"], ["-pLeader", "-p", "Name", "bb"], ["-P", "Leader", "bb"],
             ["--property=Leader", "--value", "bb"], ["-a"], ["bb", "cc", "--all"]],
    "poweroff": [["bb"], ["bb", "--wait"], ["--wait", "--timeout", "5", "bb", "cc"],
                 ["--timeout=2.5s", "bb"], ["bb", "--timeout=infinity"]],
    "reboot": [["bb"], ["--wait", "bb"]],
    "terminate": [["bb", "cc", "dd"], ["-q", "bb"]],
    "kill": [["bb"], ["-s", "SIGKILL", "bb"], ["bb", "--signal=9"], ["-sHUP", "bb"],
             ["--kill-whom=leader", "bb"], ["--kill-whom", "all", "-s", "RTMIN+4", "bb", "cc"]],
}  # fmt: skip

# Left to argparse: help, abbreviations, bundles, bad values, wrong counts, unknown options.
SLOW = {
    "list": [["--al"], ["-o", "yaml"], ["--max-addresses=x"], ["-M", "bb"], ["bb"], ["-x"], ["-o"], ["-aq"]],
    "status": [[], ["-n", "x", "bb"], ["--lines=-1", "bb"], ["-o", "yaml", "bb"], ["--lin", "3", "bb"]],
    "show": [["-p"], ["--prop", "Leader", "bb"], ["--value=yes", "bb"]],
    "poweroff": [[], ["--timeout=0", "bb"], ["--timeout=nan", "bb"], ["--wait=1", "bb"], ["--wa", "bb"]],
    "reboot": [[]],
    "terminate": [["--bogus", "bb"]],
    "kill": [[], ["--kill-whom=some", "bb"], ["-s"]],
}  # fmt: skip


def _argparse(verb: options.Verb, args: list[str]) -> object:
    try:
        return options.Values(**vars(options.parser(verb).parse_args(list(args))))
    except UsageError as e:
        return f"UsageError: {e.message}"
    except SystemExit as e:
        return f"exit {e.code}"


@pytest.mark.parametrize(("name", "args"), [(n, a) for n, cases in FAST.items() for a in cases])
def test_the_reader_takes_these_as_argparse_does(name: str, args: list[str]) -> None:
    verb = VERBS[name]
    fast = options.read(verb, args)
    assert fast is not None, args
    assert fast == _argparse(verb, args), args


@pytest.mark.parametrize(("name", "args"), [(n, a) for n, cases in SLOW.items() for a in cases])
def test_the_reader_leaves_these_to_argparse(
    name: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    verb = VERBS[name]
    assert options.read(verb, args) is None, args
    got = _argparse(verb, args)
    if isinstance(got, str) and got.startswith("UsageError"):
        assert "\n" not in got
    try:
        parsed = options.parse(verb, args)
    except (UsageError, SystemExit):
        return
    assert parsed == got  # an abbreviation, read by argparse


@pytest.mark.parametrize("name", sorted(VERBS))
def test_help_shows_each_documented_option(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    verb = VERBS[name]
    with pytest.raises(SystemExit):
        options.parse(verb, ["--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"hutch {name} ")
    for o in verb.options:
        assert o.help and all(n in text for n in o.names), (name, o.names)
    assert "--no-pager" not in text  # machinectl's, taken and not shown
