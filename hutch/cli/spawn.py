"""`hutch spawn`: systemd-nspawn's command line."""

from __future__ import annotations

import sys

from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hutch.paths import Paths
    from hutch.settings.model import Settings

HELP = """\
hutch spawn [OPTIONS...] [COMMAND [ARGS...]]
hutch spawn --boot [OPTIONS...] [INIT-ARGS...]

Spawn a command or OS in a lightweight container (systemd-nspawn's options and exit codes).

  -h --help                 Show this help
  -q --quiet                Do not show status information
     --debug                Print the mount plan before running it; tracebacks on errors
     --settings=BOOLEAN     Accepted for compatibility (.nspawn files come later)
Image:
  -D --directory=PATH       Root directory for the container
     --template=PATH        Initialize the root directory from a template directory if missing
  -x --ephemeral            Run on a throw-away overlay of the image (the image stays unchanged)
  -M --machine=NAME         Machine name; without -D, the image of that name in the image path
     --read-only            Mount the root directory read-only
     --volatile[=MODE]      no, yes (tmpfs root + image's /usr), state (tmpfs /var), overlay
Execution:
  -a --as-pid2              Run a minimal init as PID 1 and the command as PID 2
  -b --boot                 Boot the OS tree: exec the first of /usr/lib/systemd/systemd,
                            /lib/systemd/systemd, /sbin/init
     --chdir=PATH           Working directory in the container
  -E --setenv=NAME[=VALUE]  Set an environment variable (NAME alone copies the host's)
  -u --user=USER            Run the command as USER (from the container's /etc/passwd)
     --kill-signal=SIGNAL   Signal for PID 1 when hutch gets SIGTERM/SIGINT
                            (default: SIGRTMIN+3 with --boot, else SIGKILL)
System identity:
     --hostname=NAME        Hostname (default: the machine name)
     --uuid=UUID            Machine UUID ($container_uuid)
Resources:
     --rlimit=NAME=SOFT[:HARD]  Resource limit for the payload
     --oom-score-adjust=VALUE   OOM score adjustment (-1000..1000)
     --property=KEY=VALUE       Limit of the machine's cgroup: MemoryMax=, MemoryHigh=,
                                MemorySwapMax=, CPUQuota=, CPUWeight=, AllowedCPUs=,
                                TasksMax=, IOWeight= (systemd's value syntax)
Security (all on by default):
  -U                        User namespace with a picked UID range, idmapped image (the default)
     --private-users=MODE   pick (default), yes, identity, no (no security boundary), BASE[:RANGE]
     --private-users-ownership=MODE  auto (default), map (idmapped mounts), chown, off
     --capability=CAP,...   Keep these capabilities too (or 'all')
     --drop-capability=CAP,...  Drop these from nspawn's default bounding set
     --ambient-capability=CAP,...  Ambient capabilities for the payload
     --no-new-privileges=BOOL  Set PR_SET_NO_NEW_PRIVS
     --system-call-filter=[~]NAME|@GROUP ...  Allow (or with ~ deny) system calls in the seccomp filter
Networking:
     --private-network      Only a loopback device in the container
  -n --network-veth         A veth pair, ve-NAME and host0, with addresses and a route
     --network-zone=NAME    A veth whose host side joins the bridge vz-NAME
     --network-bridge=BR    A veth whose host side (vb-NAME) joins the host's bridge BR
     --network-interface=IF[:NAME]  Move the host's interface IF in (back when it stops)
     --network-veth-extra=HOSTIF[:NAME]  An extra veth pair, no addresses
     --network-namespace-path=PATH  Join that network namespace instead
  -p --port=[tcp:|udp:]HOST[:CONTAINER]  Forward a host port to the machine (also from localhost)
     --network-masquerade   NAT the machine's outbound traffic (nftables; hutch's own option)
Mounts:
     --bind=PATH[:PATH[:OPTS]]     Bind mount from the host ('+PATH': inside the image;
                                   empty source: a temporary directory). OPTS: rbind, norbind
     --bind-ro=PATH[:PATH[:OPTS]]  Same, read-only
     --tmpfs=PATH[:OPTIONS]        Mount a tmpfs
     --overlay=PATH[:PATH...]:PATH     Overlay of host directories; the last is the destination
     --overlay-ro=PATH[:PATH...]:PATH  Same, read-only
     --inaccessible=PATH           Over-mount a path with an inaccessible node
Integration:
     --resolv-conf=MODE     off, copy-host, copy-static, copy-uplink, copy-stub, replace-*, bind-*,
                            delete, auto (default)
     --timezone=MODE        off, copy, bind, symlink, delete, auto (default)
Input/Output:
     --console=MODE         interactive (default on a terminal), read-only (default otherwise),
                            passive, pipe, autopipe
  -P --pipe                 Same as --console=pipe
Press Ctrl-] three times within a second to kill an interactive container.
"""


def run(args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        # Only options before the command count; a command's own --help must reach it.
        from hutch.settings.cmdline import parse

        try:
            head = parse([a for a in args if a not in ("-h", "--help")]).command
        except Exception:
            head = []
        if not head:
            sys.stdout.write(HELP)
            return 0
    from hutch.container import launch, prepare
    from hutch.paths import Paths
    from hutch.settings.cmdline import ListRequested, parse

    try:
        settings = parse(args)
    except ListRequested as e:  # --capability=help and the like
        sys.stdout.write("".join(v + "\n" for v in e.values))
        return 0
    if os.geteuid() != 0:
        from hutch.errors import SetupError

        raise SetupError("Need to be root.", "run hutch spawn as root, e.g. with sudo")
    paths = Paths.from_env()
    if settings.settings_mode != "no":
        settings = _with_settings_file(settings, paths, prepare.find_image)
    prep = prepare.prepare(settings, paths)
    return launch.run(prep)


def _with_settings_file(
    s: Settings, paths: Paths, find_image: Callable[[str, Paths], str | None]
) -> Settings:
    """NAME.nspawn merged in, if there is one: trusted in the settings directories, untrusted next to
    the image (see hutch.settings.nspawnfile, imported only when a file exists)."""
    name = s.machine or (os.path.basename(os.path.realpath(s.directory)) if s.directory else "")
    if not name:
        return s
    image = s.directory or find_image(name, paths)
    beside = (os.path.dirname(os.path.abspath(image).rstrip("/")),) if image else ()
    for path, trusted in paths.settings_files(name, beside):
        if os.path.isfile(path):
            from hutch.settings import nspawnfile

            return nspawnfile.merge(s, path, trusted)
    return s
