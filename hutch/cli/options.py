"""A verb's command line as one table (Verb: its options and arguments), read two ways from it.

- read(): the common command lines, at the cost of a loop. argparse, with the re, gettext and enum it
  pulls in, costs 10-13 ms a call here, as much again as the interpreter's own start, on verbs that
  clients call many times a task (list, status, show, poweroff, kill, shell).
- parser(): the argparse parser made from the same table, for what read() leaves to it: --help, an
  abbreviation, a bundle of short flags, a mistake. So help, errors and odd spellings stay argparse's,
  and the two readings cannot disagree on what the table says (tests/unit/test_options.py holds them
  to the same result).

parse() is read() and, where it gives up, parser(). Values that a converter refuses raise BadValue,
which argparse reports as its own type errors.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any


class BadValue(ValueError):
    """A converter's refusal: its text is the whole message (argparse's ArgumentTypeError)."""


class Opt:
    """An option. VALUE: it takes one (else it is a flag, true when given). APPEND: each use adds one."""

    __slots__ = ("append", "choices", "convert", "default", "dest", "help", "metavar", "names", "value")

    def __init__(
        self,
        *names: str,
        dest: str = "",
        value: bool = False,
        convert: Callable[[str], Any] | None = None,
        default: Any = None,
        append: bool = False,
        choices: Sequence[str] | None = None,
        help: str | None = None,  # None: not shown in --help
        metavar: str | None = None,
    ) -> None:
        self.names = names
        self.dest = dest or names[-1].lstrip("-").replace("-", "_")
        self.value = value or append or convert is not None or choices is not None
        self.convert = convert
        self.default = ([] if default is None else default) if append else default
        if not self.value and default is None:
            self.default = False
        self.append = append
        self.choices = choices
        self.help = help
        self.metavar = metavar


class Arg:
    """A positional argument. NARGS: None (exactly one), '?', '*' or '+', as argparse's."""

    __slots__ = ("choices", "default", "dest", "help", "metavar", "nargs")

    def __init__(
        self,
        dest: str,
        metavar: str,
        nargs: str | None = None,
        default: Any = None,
        choices: Sequence[str] | None = None,
        help: str | None = None,
    ) -> None:
        self.dest = dest
        self.metavar = metavar
        self.nargs = nargs
        self.default = default
        self.choices = choices
        self.help = help


def local_machine(text: str) -> str:
    """-M/--machine: hutch manages this host's machines, so the host it names must be this one: .host,
    USER@, USER@.host (machinectl's forms)."""
    user, at, host = text.rpartition("@")
    local = (at and host in ("", ".host")) or text == ".host"
    if local and all(c.isalnum() or c in "-_." for c in user):
        return text
    raise BadValue(
        f"'{text}' is not this host: hutch's verbs act on the local host's machines (-M .host, USER@)"
    )


def seconds(text: str) -> float:
    """A --timeout value: a number of seconds, positive and finite, or 'infinity' (as systemd's
    time spans take it)."""
    if text in ("infinity", "inf"):
        return 1e9
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if not 0 < value < 1e9:  # nan fails this too
        raise BadValue(f"invalid time span '{text}': a positive number of seconds")
    return value


# machinectl's options every verb takes, so a command line written for it works as it is.
COMMON = (
    Opt("--no-pager"),
    Opt("--no-ask-password"),
    Opt("--no-legend"),
    Opt("-l", "--full"),
    Opt("-q", "--quiet", help="print no progress or status messages"),
    Opt("-M", "--machine", convert=local_machine),
)


class Verb:
    """NAME's command line: hutch NAME USAGE. OPTIONS come after COMMON's (a verb's own wins);
    REST: everything after the first argument is the last argument's, options included (shell's
    command)."""

    def __init__(
        self,
        name: str,
        usage: str,
        description: str,
        options: Sequence[Opt] = (),
        args: Sequence[Arg] = (),
        rest: bool = False,
    ) -> None:
        self.name = name
        self.usage = usage
        self.description = description
        self.options = options
        self.args = args
        self.rest = rest
        self._index: dict[str, Opt] | None = None

    def index(self) -> dict[str, Opt]:
        if self._index is None:
            mine = {n for o in self.options for n in o.names}
            table = {n: o for o in COMMON for n in o.names if n not in mine}
            table.update({n: o for o in self.options for n in o.names})
            self._index = table
        return self._index

    def all_options(self) -> list[Opt]:
        seen: list[Opt] = []
        for o in self.index().values():
            if o not in seen:
                seen.append(o)
        return seen


class Values:
    """What a command line says: one attribute per option and argument (argparse's Namespace)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Values) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Values({vars(self)!r})"

    def __getattr__(self, name: str) -> Any:  # for the type checker: attributes are the table's
        raise AttributeError(name)


def read(verb: Verb, args: Sequence[str]) -> Values | None:
    """ARGS as the table says, or None where argparse must decide (help, unknown or abbreviated
    options, bundled flags, a value refused, the wrong number of arguments)."""
    table = verb.index()
    values: dict[str, Any] = {}
    for opt in table.values():
        values[opt.dest] = list(opt.default) if opt.append else opt.default
    positional: list[str] = []
    o: Opt | None
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        i += 1
        if verb.rest and positional:
            positional.append(a)
            continue
        if a == "--":
            positional.extend(args[i:])
            break
        if len(a) < 2 or a[0] != "-":
            positional.append(a)
            continue
        if a.startswith("--"):
            name, eq, text = a.partition("=")
            o = table.get(name)
            if o is None or (eq and not o.value):
                return None
            value: str | None = text if eq else None
        else:
            o = table.get(a[:2])
            if o is None or (len(a) > 2 and not o.value):
                return None
            value = a[2:] or None
        if not o.value:
            values[o.dest] = True
            continue
        if value is None:
            if i >= n:
                return None
            value, i = args[i], i + 1
        if o.choices is not None and value not in o.choices:
            return None
        if o.convert is not None:
            try:
                converted = o.convert(value)
            except (BadValue, ValueError):
                return None
        else:
            converted = value
        if o.append:
            values[o.dest].append(converted)
        else:
            values[o.dest] = converted
    if not _assign(verb.args, positional, values):
        return None
    return Values(**values)


def _assign(specs: Sequence[Arg], given: list[str], values: dict[str, Any]) -> bool:
    """Hand GIVEN to SPECS left to right as argparse does for these patterns; False if they do not fit."""
    needed = [1 if s.nargs in (None, "+") else 0 for s in specs]
    i = 0
    for k, s in enumerate(specs):
        after = sum(needed[k + 1 :])
        free = len(given) - i - after
        if s.nargs is None:
            if free < 1:
                return False
            values[s.dest], i = given[i], i + 1
        elif s.nargs == "?":
            if free >= 1:
                values[s.dest], i = given[i], i + 1
            else:
                values[s.dest] = s.default
        else:
            take = max(free, 0)
            if s.nargs == "+" and take < 1:
                return False
            values[s.dest], i = list(given[i : i + take]), i + take
        got = values[s.dest]
        if s.choices is not None and got is not None and got not in s.choices:
            return False
    return i == len(given)


def parse(verb: Verb, args: Sequence[str]) -> Values:
    got = read(verb, args)
    if got is not None:
        return got
    ns = parser(verb).parse_args(list(args))
    return Values(**vars(ns))


def parser(verb: Verb) -> argparse.ArgumentParser:
    """The argparse parser of VERB's table, with hutch's usage errors and machinectl's `-o help`."""
    import argparse

    p = make_parser(verb.name, verb.usage, verb.description)
    for o in verb.options:
        kw: dict[str, Any] = {"dest": o.dest, "help": o.help if o.help is not None else argparse.SUPPRESS}
        if o.value:
            kw["action"] = "append" if o.append else "store"
            kw["default"] = list(o.default) if o.append else o.default
            if o.choices is not None:
                kw["choices"] = o.choices
            if o.convert is not None:
                kw["type"] = o.convert
            if o.metavar:
                kw["metavar"] = o.metavar
        else:
            kw["action"] = "store_true"
        p.add_argument(*o.names, **kw)
    for s in verb.args:
        akw: dict[str, Any] = {"metavar": s.metavar, "help": s.help}
        if s.nargs is not None:
            akw["nargs"] = s.nargs
        if s.nargs == "?":
            akw["default"] = s.default
        if s.choices is not None:
            akw["choices"] = s.choices
        p.add_argument(s.dest, **akw)
    if verb.rest and verb.args:
        # Everything after the first argument is the last one's, options included.
        last = verb.args[-1].dest
        original = p.parse_args

        def parse_args(args: Any = None, namespace: Any = None) -> Any:
            args = list(args or [])
            i = 0
            table = verb.index()
            while i < len(args) and args[i].startswith("-") and args[i] != "--":
                o = table.get(args[i])
                i += 2 if o is not None and o.value else 1
            if i < len(args) and args[i] == "--":
                head, tail = args[:i], args[i + 1 :]
            else:
                head, tail = args[: i + 1], args[i + 1 :]
            ns = original(head, namespace)
            setattr(ns, last, tail)
            return ns

        p.parse_args = parse_args
    result: argparse.ArgumentParser = p
    return result


_PARSER_CLASS: Any = None
# Where a help request leaves its parser instead of printing it: hutch.manpages writes each verb's
# page section from the parser --help prints, so the two cannot drift.
HELP_SINK: list[Any] | None = None

_TAG = 26  # systemd's --help column, as spawn's help has it


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def verb_parsers() -> dict[str, Any]:
    """Each verb's argparse parser but spawn's (which has its own help), as its --help prints it: the
    verb is called with --help and leaves its parser in HELP_SINK instead of printing. For the man
    page and shell completion, which so cannot say what --help does not."""
    import contextlib
    import io

    from hutch.cli import VERBS

    global HELP_SINK
    out: dict[str, Any] = {}
    by_target: dict[str, Any] = {}
    for verb, target in VERBS.items():
        if verb == "spawn":
            continue
        if target not in by_target:
            module, _, func = target.partition(":")
            HELP_SINK = []
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                    getattr(__import__(module, fromlist=["run"]), func or "run")(["--help"])
                if len(HELP_SINK) != 1:
                    raise RuntimeError(f"hutch {verb} --help made no parser")
                by_target[target] = HELP_SINK[0]
            finally:
                HELP_SINK = None
        out[verb] = by_target[target]
    return out


def help_entries(p: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """PARSER's options, arguments and subcommands as (section, [(tag, text)]), in the style of
    systemd's and spawn's --help: "-q --quiet", "   --timeout=SEC", capitalised texts."""
    import argparse

    opts: list[tuple[str, str]] = []
    args: list[tuple[str, str]] = []
    kinds: list[tuple[str, str]] = []
    for a in p._actions:
        if a.help == argparse.SUPPRESS:
            continue
        if isinstance(a, argparse._SubParsersAction):
            for choice in a._choices_actions:
                sub = a.choices[choice.dest]
                kinds.append((f"{choice.dest} {sub.usage.split(' ', 3)[-1]}", _capital(choice.help or "")))
            continue
        if not a.option_strings:
            if a.help:
                metavar = a.metavar or a.dest
                args.append((metavar + ("..." if a.nargs in ("+", "*") else ""), _capital(a.help)))
            continue
        short = [o for o in a.option_strings if not o.startswith("--")]
        long = [o for o in a.option_strings if o.startswith("--")]
        value = ""
        if a.nargs != 0:
            choices = "|".join(a.choices or ())
            value = a.metavar or (choices if 0 < len(choices) <= 24 else a.dest.upper())
        head = short[0] if short else "  "
        tag = f"{head} {long[0]}" if long else head
        if value:
            tag += f"={value}" if long else f" {value}"
        text = "Show this help" if isinstance(a, argparse._HelpAction) else _capital(a.help or "")
        opts.append((tag, text))
    out = [("", opts)]
    if args:
        out.append(("Arguments", args))
    if kinds:
        out.append(("Kinds", kinds))
    return out


def format_help(usage: str, description: str, sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """One verb's --help: its synopsis, what it does, then its entries in two columns."""
    import textwrap

    lines = [usage, ""]
    if description:
        lines += [*textwrap.wrap(description, 100), ""]
    for title, entries in sections:
        if title:
            lines.append(f"{title}:")
        for tag, text in entries:
            head = f"  {tag}"
            body = textwrap.wrap(text, 100 - _TAG - 2) or [""]
            if len(head) > _TAG:
                lines.append(head)
            else:
                lines.append(head.ljust(_TAG + 2) + body.pop(0))
            lines += [" " * (_TAG + 2) + b for b in body]
    return "\n".join(ln.rstrip() for ln in lines) + "\n"


def make_parser(verb: str, usage: str, description: str) -> Any:
    """An argparse parser for `hutch VERB`, with COMMON's options; what it refuses is a UsageError
    (one line and a hint), and converters' BadValue its type errors."""
    global _PARSER_CLASS
    import argparse

    if _PARSER_CLASS is None:
        from itertools import pairwise

        from hutch.cli import output
        from hutch.errors import UsageError

        class Parser(argparse.ArgumentParser):
            def __init__(self, **kw: Any) -> None:
                # A verb may define again an option every verb takes (--no-legend, -l): the verb's wins.
                super().__init__(conflict_handler="resolve", **kw)

            def add_argument(self, *names: Any, **kw: Any) -> Any:
                convert = kw.get("type")
                if callable(convert) and not isinstance(convert, type):
                    kw["type"] = _typed(convert)
                return super().add_argument(*names, **kw)

            def error(self, message: str) -> None:  # type: ignore[override]
                raise UsageError(message, f"see '{self.prog} --help'")

            def format_help(self) -> str:
                return format_help(self.usage or self.prog, self.description or "", help_entries(self))

            def print_help(self, file: Any = None) -> None:
                if HELP_SINK is not None:
                    HELP_SINK.append(self)
                else:
                    super().print_help(file)

            def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
                # machinectl's -o help lists the output modes, whichever verb it comes with.
                if args is not None and (
                    "--output=help" in args
                    or any(a in ("-o", "--output") and b == "help" for a, b in pairwise(args))
                ):
                    sys.stdout.write("".join(m + "\n" for m in output.JOURNAL_MODES))
                    raise SystemExit(0)
                return super().parse_args(args, namespace)

        _PARSER_CLASS = Parser
    p = _PARSER_CLASS(prog=f"hutch {verb}", usage=f"hutch {verb} {usage}", description=description)
    for o in COMMON:
        kw: dict[str, Any] = {"dest": o.dest, "help": o.help if o.help is not None else argparse.SUPPRESS}
        if o.value:
            kw["type"] = o.convert
        else:
            kw["action"] = "store_true"
        p.add_argument(*o.names, **kw)
    return p


def _typed(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    import argparse

    def typed(text: str) -> Any:
        try:
            return convert(text)
        except BadValue as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    typed.__name__ = convert.__name__  # argparse names the type in its generic message
    return typed
