"""Shell completion for bash and zsh, written from the tables the command line is parsed with (the
verbs of hutch.cli.VERBS, spawn's options in hutch.settings.cmdline.LONG and SHORT, every other
verb's parser as its --help prints it): verbs, options, and the names of running machines or of
images, asked of hutch itself when completing.

`python -m hutch.completion bash|zsh` prints the script.
"""

from __future__ import annotations

import sys

# Which verbs take a running machine's name, and which an image's.
MACHINE_VERBS = ("status", "show", "poweroff", "stop", "reboot", "restart", "terminate", "kill", "shell",
                 "login", "logs", "cgls", "analyze", "bind", "copy-to", "copy-from",
                 "set-property")  # fmt: skip
IMAGE_VERBS = ("start", "enable", "disable", "image-status", "show-image", "clone", "rename", "remove",
               "read-only", "export-tar", "export-raw", "cat", "edit")  # fmt: skip


def _words() -> tuple[str, str]:
    from hutch.cli import VERBS
    from hutch.settings.cmdline import LONG, SHORT

    internal = {"userns-pick"}  # -U's handler, no option of its own
    takes = {o for o, (arg, _opt, _h) in LONG.items() if arg}
    spawn = [f"--{o}=" if o in takes else f"--{o}" for o in sorted(LONG) if o not in internal]
    spawn += [f"-{s}" for s in sorted(SHORT)]
    return " ".join(VERBS), " ".join(spawn)


def verb_options() -> dict[str, str]:
    """Each verb's options but spawn's, as its --help lists them: the long form (with '=' where it
    takes a value), else the short one."""
    import argparse

    from hutch.cli import options

    out = {}
    for verb, parser in options.verb_parsers().items():
        names = []
        for a in parser._actions:
            if a.help == argparse.SUPPRESS or not a.option_strings:
                continue
            long = [o for o in a.option_strings if o.startswith("--")]
            names.append(long[0] + ("=" if a.nargs != 0 else "") if long else a.option_strings[0])
        out[verb] = " ".join(names)
    return out


def verb_kinds() -> dict[str, str]:
    """The verbs whose first argument is a subcommand (bootstrap busybox|debian), and those."""
    from hutch.cli import options

    out = {}
    for verb, parser in options.verb_parsers().items():
        for a in parser._actions:
            if getattr(a, "_name_parser_map", None):
                out[verb] = " ".join(a.choices)
    return out


def bash() -> str:
    verbs, spawn = _words()
    opts = "\n".join(f'    {v}) opts="{o}" ;;' for v, o in verb_options().items())
    kinds = "\n".join(f'    {v}) kinds="{k}" ;;' for v, k in verb_kinds().items())
    return f"""# bash completion for hutch (written by hutch.completion)
_hutch() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} verb=${{COMP_WORDS[1]}} opts= kinds=
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{verbs}" -- "$cur"))
        return
    fi
    case $verb in
{opts}
    esac
    if [ -n "$opts" ] && [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        [[ ${{COMPREPLY[0]}} == *= ]] && compopt -o nospace
        return
    fi
    case $verb in
{kinds}
    esac
    if [ -n "$kinds" ] && [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "$kinds" -- "$cur"))
        return
    fi
    case $verb in
    spawn)
        case $cur in
        -*) COMPREPLY=($(compgen -W "{spawn}" -- "$cur"))
            [[ ${{COMPREPLY[0]}} == *= ]] && compopt -o nospace ;;
        *) COMPREPLY=($(compgen -f -- "$cur")) ;;
        esac ;;
    {"|".join(MACHINE_VERBS)})
        COMPREPLY=($(compgen -W "$(hutch list --no-legend 2>/dev/null | cut -d' ' -f1)" -- "$cur")) ;;
    {"|".join(IMAGE_VERBS)})
        COMPREPLY=($(compgen -W "$(hutch list-images --no-legend 2>/dev/null | cut -d' ' -f1)" -- "$cur")) ;;
    *) COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
}}
complete -F _hutch hutch
"""


def zsh() -> str:
    verbs, spawn = _words()
    opts = "\n".join(f"    {v}) opts=({o}) ;;" for v, o in verb_options().items())
    kinds = "\n".join(f"    {v}) kinds=({k}) ;;" for v, k in verb_kinds().items())
    return f"""#compdef hutch
# zsh completion for hutch (written by hutch.completion)
_hutch() {{
    local -a opts kinds
    if (( CURRENT == 2 )); then
        compadd -- {verbs}
        return
    fi
    case $words[2] in
{opts}
    esac
    if (( $#opts )) && [[ $PREFIX == -* ]]; then
        compadd -S '' -- $opts
        return
    fi
    case $words[2] in
{kinds}
    esac
    if (( $#kinds )) && (( CURRENT == 3 )); then
        compadd -- $kinds
        return
    fi
    case $words[2] in
    spawn)
        if [[ $PREFIX == -* ]]; then compadd -S '' -- {spawn}; else _files; fi ;;
    {"|".join(MACHINE_VERBS)})
        compadd -- ${{(f)"$(hutch list --no-legend 2>/dev/null | cut -d' ' -f1)"}} ;;
    {"|".join(IMAGE_VERBS)})
        compadd -- ${{(f)"$(hutch list-images --no-legend 2>/dev/null | cut -d' ' -f1)"}} ;;
    *) _files ;;
    esac
}}
_hutch "$@"
"""


def main(argv: list[str]) -> int:
    if argv not in (["bash"], ["zsh"]):
        print("usage: python -m hutch.completion bash|zsh", file=sys.stderr)
        return 2
    sys.stdout.write(bash() if argv == ["bash"] else zsh())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
