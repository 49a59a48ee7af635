"""Command-line front end: `hutch VERB ...`. Each verb's module is imported only when that verb runs,
so `hutch spawn` pays for nothing else (argparse alone costs ~7 ms)."""

from __future__ import annotations

import os
import sys

from hutch.errors import HutchError

USAGE = """\
hutch: systemd-nspawn and machinectl for any Linux host.

Usage: hutch VERB [OPTIONS...] [ARGS...]

Containers:
  spawn [OPTIONS] [COMMAND...]   run a command or boot an OS tree in a container
                                 (systemd-nspawn's options; 'hutch spawn --help')
Images:
  bootstrap busybox NAME         build a bootable busybox image from the host's static busybox
  bootstrap debian NAME          debootstrap a Debian image with systemd [--suite S] [--mirror URL]

Options:
  -h, --help                     show this help
  --version                      show the version

Images live in $HUTCH_IMAGE_PATH (default /var/lib/machines:...); see README.md.
"""

VERBS = {
    "spawn": "hutch.cli.spawn",
    "bootstrap": "hutch.cli.bootstrap",
}


def fail(prog: str, e: HutchError) -> int:
    hint = f" Hint: {e.hint[0].lower() + e.hint[1:]}." if e.hint else ""
    hint = hint.replace("..", ".")
    print(f"{prog}: {e.message}{hint}", file=sys.stderr)
    return e.exit_status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 1
    if args[0] == "--version":
        from hutch import __version__

        print(f"hutch {__version__}")
        return 0
    verb = args[0]
    module = VERBS.get(verb)
    if module is None:
        print(f"hutch: unknown verb '{verb}'. Hint: see 'hutch --help'.", file=sys.stderr)
        return 1
    # __import__ rather than importlib.import_module: the importlib package costs ~0.5 ms to load.
    mod = __import__(module, fromlist=["run"])
    debug = "--debug" in args
    try:
        rc: int = mod.run(args[1:])
        if verb == "spawn":
            # Interpreter teardown costs ~1-2 ms and nothing is left to clean up: leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        return rc
    except HutchError as e:
        if debug or os.environ.get("HUTCH_DEBUG"):
            import traceback

            traceback.print_exc()
        return fail(f"hutch {verb}", e)
    except KeyboardInterrupt:
        print(f"hutch {verb}: interrupted", file=sys.stderr)
        return 130
