"""Command-line front end: `hutch VERB ...`. Each verb's module is imported only when that verb runs,
so `hutch spawn` pays for nothing else (argparse alone costs ~7 ms)."""

from __future__ import annotations

import sys

from hutch.errors import HutchError
from hutch.linux import posixos as os
from hutch.text import cescape

USAGE = """\
hutch VERB [OPTIONS...] [ARGS...]

systemd-nspawn and machinectl for any Linux host: run a command or boot an OS tree in a container,
manage the running machines and the image store. 'hutch VERB --help' shows a verb's options.

Containers:
  spawn [OPTIONS] [COMMAND...]   Run a command or boot an OS tree in a container
                                 (systemd-nspawn's options; 'hutch spawn --help')
Machines:
  start NAME...                  Boot machines in the background (user namespace, veth; --property)
  list [-a]                      Running machines (-o json, --no-legend)
  status NAME...                 A machine's state, leader, processes and last console lines
  show [NAME...]                 A machine's properties as Key=Value (-p PROP, --value)
  poweroff NAME...               Power off with the signal the guest's init understands (--wait)
  reboot NAME...                 Reboot (SIGINT to the guest's init)
  terminate NAME...              Kill at once (--wait)
  kill NAME... [-s SIG]          Signal the leader or every process (--kill-whom=leader|all)
  shell [USER@]NAME [CMD...]     Run a command or a login shell in a machine (-E, --uid); its status
  login NAME                     Log in on a new pty in the machine, whatever its init
  logs NAME [-f] [-n N]          The machine's console output (--journal: the guest's journal)
  cgls [NAME...]                 The machines' cgroup process trees
  analyze NAME [time|blame|critical-chain]
                                 How its boot went (systemd-analyze inside)
  bind NAME SRC [DST]            Mount a host path into a running machine (--read-only, --mkdir)
  copy-to NAME SRC [DST]         Copy a host file or tree into a machine (--force)
  copy-from NAME SRC [DST]       Copy a file or tree out of a machine (--force)
  enable|disable [--now] NAME...
                                 Start at boot, or not (a systemd unit, or 'hutch autostart')
  autostart                      Start every enabled machine (for OpenRC, sysvinit, rc.local)
  set-property NAME KEY=VALUE...
                                 Change a running machine's limits (MemoryMax, TasksMax, ...)
  top [-o json]                  CPU, memory, tasks and IO per machine, as systemd-cgtop
Images:
  list-images [-a]               Images along the image path (-o json, --no-legend)
  image-status [NAME...]         An image's properties, for people
  show-image [NAME...]           An image's properties as Key=Value (-p PROP, --value)
  clone SRC DST                  Copy an image (--read-only; --thin: an overlay over read-only SRC)
  rename OLD NEW                 Rename an image and its .nspawn files
  remove NAME...                 Remove images (refused while in use)
  read-only NAME [BOOL]          Mark an image read-only, or writable again with 'no'
  clean [--all]                  Remove hidden images (--all: every image) and interrupted leftovers
  cat NAME|FILE                  Show an image's .nspawn settings file
  edit NAME|FILE                 Edit an image's .nspawn settings file with $EDITOR
  import-tar FILE|- [NAME]       Import a tarball of an OS tree, a disk image, an OCI image or a
                                 docker save archive, maybe compressed (--read-only, --force)
  import-fs DIR [NAME]           Copy a directory tree in as an image (--read-only, --force)
  export-tar NAME [FILE|-]       Write an image as a tarball (--format=gzip|xz|bzip2|zstd|...)
  pull-tar URL [NAME]            Download and import a tarball (--verify=checksum|no)
  import-raw FILE|- [NAME]       Import a disk image (raw or qcow2, maybe compressed) as NAME.raw
  export-raw NAME [FILE|-]       Write a disk image out (--format=uncompressed|gzip|xz|bzip2|zstd)
  pull-raw URL [NAME]            Download and import a disk image (--verify=checksum|no)
  pull-oci REF [NAME]            Download an image from a container registry ([REGISTRY/]REPO[:TAG])
  set-limit [NAME] BYTES         Refused: quotas need btrfs subvolumes, which hutch's images are not
  list-transfers                 The imports and pulls that are running
  cancel-transfer ID...          Interrupt a running import or pull (it removes what it made)
  bootstrap busybox NAME         Build a bootable busybox image from the host's static busybox
  bootstrap debian NAME          Debootstrap a Debian image with systemd [--suite S] [--mirror URL]

Options:
  -h --help                      Show this help
     --version                   Show the version

Images live in $HUTCH_IMAGE_PATH (default /var/lib/machines:...); see README.md.
"""

VERBS = {
    "spawn": "hutch.cli.spawn",
    "bootstrap": "hutch.cli.bootstrap",
    "start": "hutch.cli.machines:start",
    "list": "hutch.cli.listing:list_machines",
    "status": "hutch.cli.status:status",
    "show": "hutch.cli.status:show",
    "poweroff": "hutch.cli.stopping:poweroff",
    "stop": "hutch.cli.stopping:poweroff",
    "reboot": "hutch.cli.stopping:reboot",
    "restart": "hutch.cli.stopping:reboot",
    "terminate": "hutch.cli.stopping:terminate",
    "kill": "hutch.cli.stopping:kill",
    "shell": "hutch.cli.shell:shell",
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


# The verbs that start often and own nothing an exit handler would clean (no temporary directories, no
# threads): spawn, and those real clients call many times a task.
_LEAVE_AT_ONCE = ("spawn", "shell", "list", "status", "show", "poweroff", "reboot", "terminate", "kill")


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
    if verb in _LEAVE_AT_ONCE:
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
        if verb in _LEAVE_AT_ONCE:
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
