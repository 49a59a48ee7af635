"""Command-line front end: `hutch VERB ...`. Each verb's module is imported only when that verb runs,
so `hutch spawn` pays for nothing else (argparse alone costs ~7 ms)."""

from __future__ import annotations

import sys

from hutch.errors import HutchError
from hutch.linux import posixos as os
from hutch.text import cescape

USAGE = """\
hutch: systemd-nspawn and machinectl for any Linux host.

Usage: hutch VERB [OPTIONS...] [ARGS...]

Containers:
  spawn [OPTIONS] [COMMAND...]   run a command or boot an OS tree in a container
                                 (systemd-nspawn's options; 'hutch spawn --help')
Machines:
  start NAME...                  boot machines in the background (user namespace, veth; --property)
  list [-a]                      running machines (-o json, --no-legend)
  status NAME...                 a machine's state, leader, processes and last console lines
  show [NAME...]                 a machine's properties as Key=Value (-p PROP, --value)
  poweroff NAME...               power off with the signal the guest's init understands (--wait)
  reboot NAME...                 reboot (SIGINT to the guest's init)
  terminate NAME...              kill at once (--wait)
  kill NAME... [-s SIG]          signal the leader or every process (--kill-whom=leader|all)
  shell [USER@]NAME [CMD...]     run a command or a login shell in a machine (-E, --uid); its status
  login NAME                     log in on a new pty in the machine, whatever its init
  logs NAME [-f] [-n N]          the machine's console output (--journal: the guest's journal)
  cgls [NAME...]                 the machines' cgroup process trees
  analyze NAME [time|blame|critical-chain]  how its boot went (systemd-analyze inside)
  bind NAME SRC [DST]            mount a host path into a running machine (--read-only, --mkdir)
  copy-to NAME SRC [DST]         copy a host file or tree into a machine (--force)
  copy-from NAME SRC [DST]       copy a file or tree out of a machine (--force)
  enable|disable [--now] NAME... start machines at boot (a systemd unit, or 'hutch autostart')
  autostart                      start every enabled machine (for OpenRC, sysvinit, rc.local)
  set-property NAME KEY=VALUE... change a running machine's limits (MemoryMax, TasksMax, CPUQuota, ...)
  top [-o json]                  CPU, memory, tasks and IO per machine, refreshing like systemd-cgtop
Images:
  list-images [-a]               images along the image path (-o json, --no-legend)
  image-status [NAME...]         an image's properties, for people
  show-image [NAME...]           an image's properties as Key=Value (-p PROP, --value)
  clone SRC DST                  copy an image (--read-only; --thin: O(1) overlay over a read-only SRC)
  rename OLD NEW                 rename an image and its .nspawn files
  remove NAME...                 remove images (refused while in use)
  read-only NAME [BOOL]          mark an image read-only, or writable again with 'no'
  clean [--all]                  remove hidden images (--all: every image) and interrupted leftovers
  cat NAME|FILE                  show an image's .nspawn settings file
  edit NAME|FILE                 edit an image's .nspawn settings file with $EDITOR
  import-tar FILE|- [NAME]       import a tarball of an OS tree, one disk image, an OCI image or a docker
                                 save archive: plain, gzip, xz, bzip2 or zstd (--read-only, --force)
  import-fs DIR [NAME]           copy a directory tree in as an image (--read-only, --force)
  export-tar NAME [FILE|-]       write an image as a tarball (--format=uncompressed|gzip|xz|bzip2|zstd)
  pull-tar URL [NAME]            download and import a tarball (--verify=checksum|no)
  import-raw FILE|- [NAME]       import a disk image (raw or qcow2, maybe compressed) as NAME.raw
  export-raw NAME [FILE|-]       write a disk image out (--format=uncompressed|gzip|xz|bzip2|zstd)
  pull-raw URL [NAME]            download and import a disk image (--verify=checksum|no)
  pull-oci REF [NAME]            download an image from a container registry ([REGISTRY/]REPO[:TAG])
  set-limit [NAME] BYTES         refused: quotas need btrfs subvolumes, which hutch's images are not
  list-transfers                 the imports and pulls that are running
  cancel-transfer ID...          interrupt a running import or pull (it removes what it made)
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
    "start": "hutch.cli.machines:start",
    "list": "hutch.cli.machines:list_machines",
    "status": "hutch.cli.machines:status",
    "show": "hutch.cli.machines:show",
    "poweroff": "hutch.cli.machines:poweroff",
    "stop": "hutch.cli.machines:poweroff",
    "reboot": "hutch.cli.machines:reboot",
    "restart": "hutch.cli.machines:reboot",
    "terminate": "hutch.cli.machines:terminate",
    "kill": "hutch.cli.machines:kill",
    "shell": "hutch.cli.machines:shell",
    "login": "hutch.cli.machines:login",
    "logs": "hutch.cli.machines:logs",
    "cgls": "hutch.cli.machines:cgls",
    "analyze": "hutch.cli.machines:analyze",
    "bind": "hutch.cli.machines:bind",
    "copy-to": "hutch.cli.machines:copy_to",
    "copy-from": "hutch.cli.machines:copy_from",
    "enable": "hutch.cli.machines:enable",
    "disable": "hutch.cli.machines:disable",
    "autostart": "hutch.cli.machines:autostart_",
    "set-property": "hutch.cli.machines:set_property",
    "top": "hutch.cli.machines:top",
    "list-images": "hutch.cli.images:list_images",
    "image-status": "hutch.cli.images:image_status",
    "show-image": "hutch.cli.images:show_image",
    "clone": "hutch.cli.images:clone",
    "rename": "hutch.cli.images:rename",
    "remove": "hutch.cli.images:remove",
    "read-only": "hutch.cli.images:read_only",
    "clean": "hutch.cli.images:clean",
    "cat": "hutch.cli.images:cat",
    "edit": "hutch.cli.images:edit",
    "import-tar": "hutch.cli.images:import_tar",
    "import-fs": "hutch.cli.images:import_fs",
    "export-tar": "hutch.cli.images:export_tar",
    "pull-tar": "hutch.cli.images:pull_tar",
    "import-raw": "hutch.cli.images:import_raw",
    "export-raw": "hutch.cli.images:export_raw",
    "pull-raw": "hutch.cli.images:pull_raw",
    "pull-oci": "hutch.cli.images:pull_oci",
    "list-transfers": "hutch.cli.images:list_transfers",
    "set-limit": "hutch.cli.machines:set_limit",
    "cancel-transfer": "hutch.cli.images:cancel_transfer",
}


def _sentence(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "?", "!", ":", ".)", "?)", "!)")) else text + "."


def fail(prog: str, e: HutchError) -> int:
    hint = ""
    if e.hint:
        h = e.hint.strip()
        hint = f" Hint: {_sentence(h[0].lower() + h[1:])}"
    print(f"{prog}: {cescape(_sentence(e.message))}{cescape(hint)}", file=sys.stderr)
    return e.exit_status


def _unexpected(verb: str, e: BaseException) -> int:
    """One line for a bug: what broke, in which verb, and where to send it. The traceback is kept
    for --debug (or HUTCH_DEBUG=1), never shown by default."""
    where = ""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
    what = cescape(f"{type(e).__name__}: {e}")[:300].rstrip(".")
    print(
        f"hutch {verb}: internal error{where}: {what}. Hint: this is a bug in hutch; rerun with "
        "HUTCH_DEBUG=1 for the traceback and report it with the command that caused it.",
        file=sys.stderr,
    )
    return 70  # EX_SOFTWARE


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[0].endswith(("/machinectl", "/systemd-nspawn", "/importctl")):
        # Linked under the name of a tool it replaces: that tool's command line (hutch.cli.dropin).
        from hutch.cli import dropin

        return dropin.main(sys.argv[0].rsplit("/", 1)[-1], sys.argv[1:])
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
    if verb == "spawn":
        # The collector would run a dozen times over the objects imports create, none of them garbage:
        # ~0.5 ms of a start. The supervisor turns it back on once the container runs.
        import gc

        gc.disable()
    # __import__ rather than importlib.import_module: the importlib package costs ~0.5 ms to load.
    module, _, func = module.partition(":")
    debug = "--debug" in args
    try:
        mod = __import__(module, fromlist=["run"])
        rc: int = getattr(mod, func or "run")(args[1:])
        if verb == "spawn":
            # Interpreter teardown costs ~1-2 ms and nothing is left to clean up: leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        return rc
    except HutchError as e:
        if debug or os.getenv("HUTCH_DEBUG"):
            import traceback

            traceback.print_exc()
        return fail(f"hutch {verb}", e)
    except BrokenPipeError:
        return 141  # a reader that went away (hutch list | head) is not an error worth a line
    except OSError as e:
        # Library code raises OSError with the path in its message; one line, no traceback.
        if debug or os.getenv("HUTCH_DEBUG"):
            import traceback

            traceback.print_exc()
        text = e.strerror or str(e)
        if e.filename and str(e.filename) not in text:
            text = f"{text}: {e.filename}"
        from hutch.errors import io_hint

        hint = io_hint(e.errno)
        text = f"{_sentence(text)} Hint: {_sentence(hint)}" if hint else text
        print(f"hutch {verb}: {cescape(text)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hutch {verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or os.getenv("HUTCH_DEBUG"):
            import traceback

            traceback.print_exc()
        return _unexpected(verb, e)
