"""Man pages hutch(1), hutch-spawn(1) and hutch.nspawn(5), written from the texts `--help` prints
(hutch.cli.USAGE, each verb's parser, hutch.cli.spawn.HELP) and from the settings-file parser's own
table of keys (hutch.settings.nspawnfile.KEYS), so a page cannot say what the program does not do.

`python -m hutch.manpages DIR` writes DIR/man1/hutch.1, DIR/man1/hutch-spawn.1, DIR/man5/hutch.nspawn.5.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from hutch import __version__

_HEADER = re.compile(r"^([A-Z][A-Za-z/ ]*):(?: (.*))?$")  # "Machines:" or "Environment: ..."


def _esc(text: str) -> str:
    """roff-safe text: backslashes, and a line start that roff would take for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _head(name: str, section: int, title: str) -> list[str]:
    return [
        f'.TH "{name.upper()}" "{section}" "" "hutch {__version__}" "{_esc(title)}"',
        ".SH NAME",
        f"{_esc(name)} \\- {_esc(title[0].lower() + title[1:])}",
    ]


def _parse(lines: list[str]) -> list[tuple[str, str, str]]:
    """(kind, tag, text) for each part of a help text: "header" (a line ending its first word in a
    colon), "entry" (a verb or option and what it does, continued by lines indented past the tag),
    "text" (anything else)."""
    out: list[tuple[str, str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        head = _HEADER.match(line)
        if head:
            out.append(("header", head.group(1), head.group(2) or ""))
        elif 2 <= indent < 8:
            tag, text = _split(line.strip())
            while text.startswith("-") and re.search(r" {2,}", text):  # two options on one line
                more, text = re.split(r" {2,}", text, maxsplit=1)
                tag += ", " + more
            out.append(("entry", tag, text))
        elif out and out[-1][0] == "entry":
            kind, tag, text = out[-1]
            out[-1] = (kind, tag, f"{text} {line.strip()}".strip())
        else:
            out.append(("text", "", line.strip()))
    return out


def _split(entry: str) -> tuple[str, str]:
    """A tag and its text, which two spaces or more keep apart."""
    parts = re.split(r" {2,}", entry, maxsplit=1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def _entries(lines: list[str]) -> list[str]:
    """A help text as roff: entries as tagged paragraphs, headers as subsections."""
    out: list[str] = []
    for kind, tag, text in _parse(lines):
        if kind == "header":
            out += [f'.SS "{_esc(tag)}"'] + ([_esc(text)] if text else [])
        elif kind == "entry":
            if tag.startswith("-") and len(tag) > 2 and tag[2] == " ":
                tag = tag[:2] + ", " + tag[3:]  # "-q --quiet" as "-q, --quiet"
            out += [".TP", f"\\fB{_esc(tag)}\\fR"] + ([_esc(text)] if text else [])
        else:
            out += [_esc(text)]
    return out


def verb_parsers() -> list[Any]:
    """Each verb's parser once (machinectl's other names for a verb are not repeated), a verb's
    subcommands after it."""
    from hutch.cli import options

    out: list[Any] = []
    for parser in {id(p): p for p in options.verb_parsers().values()}.values():
        out.append(parser)
        for action in parser._actions:
            out += list(getattr(action, "_name_parser_map", {}).values())
    return out


def _verb_section(parser: Any) -> list[str]:
    from hutch.cli import options

    page = [f'.SS "{_esc(parser.usage)}"']
    if parser.description:
        page += [_esc(parser.description)]
    for title, entries in options.help_entries(parser):
        if title and title != "Kinds":
            page += [".TP", f"\\fI{_esc(title)}:\\fR"]
        for tag, text in entries:
            if title == "Kinds" or tag == "-h --help":
                continue  # the subcommands have sections of their own; every verb takes --help
            page += [".TP", f"\\fB{_esc(tag.strip())}\\fR"] + ([_esc(text)] if text else [])
    return page


def hutch_1() -> str:
    from hutch.cli import USAGE

    lines = USAGE.splitlines()
    synopsis = lines[0]
    end = lines.index("", 2)
    description = " ".join(ln.strip() for ln in lines[2:end])
    page = _head("hutch", 1, "systemd-nspawn and machinectl for any Linux host")
    page += [".SH SYNOPSIS", f"\\fB{_esc(synopsis)}\\fR", ".SH DESCRIPTION", _esc(description),
             "Linked as \\fBmachinectl\\fR, \\fBsystemd\\-nspawn\\fR or \\fBimportctl\\fR it takes "
             "that tool's command line.",
             ".SH VERBS"]  # fmt: skip
    page += _entries(lines[end + 1 :])
    page += [".SH VERB OPTIONS", "What each verb's \\fB\\-\\-help\\fR prints; spawn's are in "
             "\\fBhutch\\-spawn\\fR(1)."]  # fmt: skip
    for parser in verb_parsers():
        page += _verb_section(parser)
    see = (
        "\\fBhutch\\-spawn\\fR(1)",
        "\\fBhutch.nspawn\\fR(5)",
        "\\fBsystemd\\-nspawn\\fR(1)",
        "\\fBmachinectl\\fR(1)",
    )
    page += [".SH SEE ALSO", ", ".join(see)]
    return "\n".join(page) + "\n"


def hutch_spawn_1() -> str:
    from hutch.cli.spawn import HELP

    lines = HELP.splitlines()
    synopses = [ln for ln in lines[:3] if ln.startswith("hutch spawn")]
    blank = lines.index("")
    rest = lines[blank + 1 :]
    desc_end = rest.index("")
    page = _head("hutch-spawn", 1, "Spawn a command or OS in a lightweight container")
    page += [".SH SYNOPSIS"]
    for s in synopses:
        page += [f"\\fB{_esc(s)}\\fR", ".br"]
    page += [".SH DESCRIPTION", _esc(" ".join(ln.strip() for ln in rest[:desc_end]))]
    page += [".SH OPTIONS"] + _entries(rest[desc_end + 1 :])
    page += [".SH EXIT STATUS", "As systemd\\-nspawn's: the payload's exit status; 0 when a booted OS "
             "powered off; 1 when the container could not start or was killed by a signal."]  # fmt: skip
    page += [".SH SEE ALSO", "\\fBhutch\\fR(1), \\fBhutch.nspawn\\fR(5), \\fBsystemd\\-nspawn\\fR(1)"]
    return "\n".join(page) + "\n"


def hutch_nspawn_5() -> str:
    from hutch.cli.spawn import HELP
    from hutch.settings.nspawnfile import KEYS, LIMITS, PRIVILEGED

    helps: dict[str, str] = {}
    for kind, tag, text in _parse(HELP.splitlines()):
        for option in re.findall(r"--([a-z0-9-]+)", tag) if kind == "entry" else ():
            helps.setdefault(option, text)
    page = _head("hutch.nspawn", 5, "Container settings")
    page += [".SH SYNOPSIS", "/etc/systemd/nspawn/\\fIMACHINE\\fR.nspawn, beside the image: "
             "\\fIIMAGE\\fR.nspawn",
             ".SH DESCRIPTION",
             "systemd.nspawn(5)'s files, read by \\fBhutch spawn\\fR and \\fBhutch start\\fR as "
             "systemd\\-nspawn reads them: files in /etc/systemd/nspawn and /run/systemd/nspawn are "
             "trusted; one beside an image in the image path may not set the keys marked privileged "
             "below. The command line wins unless \\fB\\-\\-settings=override\\fR."]  # fmt: skip
    for section in ("Exec", "Files", "Network"):
        page += [f'.SH "[{section}] SECTION OPTIONS"']
        for key, (sec, option, kind) in KEYS.items():
            if sec != section:
                continue
            value = {"flag": "BOOL", "bool": "BOOL", "list": "VALUE...", "words": "VALUE..."}.get(
                kind, "VALUE"
            )
            page += [".TP", f"\\fB{key}=\\fR\\fI{value}\\fR"]
            text = f"As \\fB\\-\\-{_esc(option)}\\fR: {_esc(helps.get(option, ''))}" if option else ""
            if key == "Parameters":
                text = "The command line, or with \\fBBoot=yes\\fR the init's arguments."
            page += [text + (" (privileged)" if key in PRIVILEGED else "")]
        if section == "Exec":
            names = ", ".join(f"Limit{x}=" for x in LIMITS)
            page += [".TP", f"\\fB{_esc(names)}\\fR", "As \\fB\\-\\-rlimit=\\fR (privileged)"]
    page += [".SH SEE ALSO", "\\fBhutch\\-spawn\\fR(1), \\fBsystemd.nspawn\\fR(5)"]
    return "\n".join(page) + "\n"


PAGES = {"man1/hutch.1": hutch_1, "man1/hutch-spawn.1": hutch_spawn_1, "man5/hutch.nspawn.5": hutch_nspawn_5}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m hutch.manpages DIR", file=sys.stderr)
        return 2
    for rel, make in PAGES.items():
        path = os.path.join(argv[0], rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(make())
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
