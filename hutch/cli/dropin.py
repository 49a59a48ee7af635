"""hutch under the names of the tools it replaces: linked as `machinectl`, `systemd-nspawn` or `importctl`,
it takes their command lines as they are and answers as they do, so scripts and clients that call those
tools by name (Ansible's machinectl become plugin, connection plugins built on `machinectl shell`) work
unchanged. Which tool is chosen by argv[0]'s basename; `hutch` itself stays as it is.

systemd's tools parse with getopt, which takes options anywhere before the verb's own arguments:
`machinectl --no-legend list`, `machinectl -q shell root@ CMD`. hutch's verbs take their options after
the verb, so the options before it are moved there; bare `machinectl` lists machines, as upstream.
"""

from __future__ import annotations

import sys

# The systemd release whose interface hutch implements: clients read the number on `--version`'s first
# line to pick options.
SYSTEMD_VERSION = 257
TOOLS = ("machinectl", "systemd-nspawn", "importctl")

# machinectl's options that take a value (getopt's table: "hp:als:H:M:qn:o:E:V" and the long ones).
_MACHINECTL_VALUED = {
    "-p", "--property", "-s", "--signal", "--kill-whom", "--kill-who", "-H", "--host", "-M", "--machine",
    "-n", "--lines", "-o", "--output", "-E", "--setenv", "--uid", "--max-addresses", "--format",
    "--verify", "--runner",
}  # fmt: skip
IMPORTCTL_VERBS = (
    "pull-tar", "pull-raw", "pull-oci", "import-tar", "import-raw", "import-fs", "export-tar",
    "export-raw", "list-transfers", "cancel-transfer", "list-images",
)  # fmt: skip


def tool_of(argv0: str) -> str:
    base = argv0.rsplit("/", 1)[-1]
    return base if base in TOOLS else ""


def version(tool: str) -> str:
    from hutch import __version__

    features = "-PAM -AUDIT -SELINUX -APPARMOR +SECCOMP -DBUS +CGROUPS"
    return f"systemd {SYSTEMD_VERSION} (hutch {__version__})\n{features}\n"


def _leading_options(args: list[str], valued: set[str]) -> tuple[list[str], list[str]]:
    """The options before the first word that is not one (the verb), and the rest from the verb on."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return out, args[i + 1 :]
        if not a.startswith("-") or a == "-":
            break
        out.append(a)
        attached = "=" in a or (not a.startswith("--") and len(a) > 2)
        if a.split("=", 1)[0] in valued and not attached and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out, args[i:]


def machinectl_args(args: list[str]) -> list[str]:
    """machinectl's command line as hutch's: [VERB, options that came before it, the verb's own]."""
    options, rest = _leading_options(args, _MACHINECTL_VALUED)
    if not rest:
        return ["list", *options]
    return [rest[0], *options, *rest[1:]]


def importctl_args(args: list[str]) -> list[str]:
    options, rest = _leading_options(args, {"--class", "--verify", "--format", "--keep-download"})
    kept = []
    i = 0
    while i < len(options):
        o = options[i]
        name, eq, value = o.partition("=")
        if name == "--class" and not eq and i + 1 < len(options):
            value, i = options[i + 1], i + 1
        if name == "-m":
            pass  # --class=machine, the default
        elif name == "--class":
            kept.append(f"--class={value}")  # the verb checks the class
        elif name in ("-N", "--keep-download") or (name == "--keep-download" and eq):
            pass  # hutch keeps no pristine copy of a download to reuse
        else:
            kept.append(o)
        i += 1
    if not rest:
        rest = ["list-transfers"]
    return [rest[0], *kept, *rest[1:]]


def translate(tool: str, args: list[str]) -> list[str] | str:
    """hutch's arguments for TOOL's ARGS, or the text --version prints."""
    valued = _MACHINECTL_VALUED if tool == "machinectl" else {"--class", "--verify", "--format"}
    lead, rest = _leading_options(args, valued if tool != "systemd-nspawn" else set())
    if "--version" in lead:
        return version(tool)
    if tool == "systemd-nspawn":
        return ["spawn", *args]
    if not rest and any(o in ("-h", "--help") for o in lead):
        return ["--help"]
    return machinectl_args(args) if tool == "machinectl" else importctl_args(args)


def main(tool: str, args: list[str]) -> int:
    from hutch.cli import main as hutch_main

    try:
        out = translate(tool, args)
    except Exception as e:  # a UsageError: one line, as every verb's
        from hutch.cli import fail
        from hutch.errors import HutchError

        if isinstance(e, HutchError):
            return fail(tool, e)
        raise
    if isinstance(out, str):
        sys.stdout.write(out)
        return 0
    return hutch_main(out)
