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

Spawn a command or OS in a lightweight container (systemd-nspawn's options and exit codes). Long
options may be abbreviated, as getopt_long allows.

  -h --help                 Show this help
     --version              Show hutch's version
  -q --quiet                Do not show status information
     --debug                Print the mount plan before running it; tracebacks on errors
     --settings=MODE        Read .nspawn files: yes (default), no, override, trusted
Image:
  -D --directory=PATH       Root directory for the container
     --template=PATH        Initialize the root directory from a template directory if missing
  -i --image=PATH           A disk image (GPT, MBR or a bare file system) as the root
  -x --ephemeral            Run on a throw-away overlay of the image (the image stays unchanged)
  -M --machine=NAME         Machine name; without -D, the image of that name in the image path
     --read-only            Mount the root directory read-only
     --volatile[=MODE]      A throw-away root: no, yes (tmpfs root + image's /usr),
                            state (tmpfs /var), overlay
     --pivot-root=PATH[:PATH]  That directory of the image as /, the old root at the second PATH
     --root-hash= --root-hash-sig= --verity-data= --oci-bundle=  Refused: not supported
Execution:
  -a --as-pid2              Run a minimal init as PID 1 and the command as PID 2
  -b --boot                 Boot the OS tree: exec the first of /usr/lib/systemd/systemd,
                            /lib/systemd/systemd, /sbin/init
     --chdir=PATH           Working directory in the container
  -E --setenv=NAME[=VALUE]  Set an environment variable (NAME alone copies the host's)
  -u --user=USER            Run the command as USER (from the container's /etc/passwd)
     --kill-signal=SIGNAL   Signal for PID 1 when hutch gets SIGTERM/SIGINT
                            (default: SIGRTMIN+3 with --boot, else SIGKILL; a PID 1 that
                            would drop it, as busybox init drops SIGRTMIN+3, is killed)
     --notify-ready=BOOL    Yes: up means READY=1 on /run/host/notify; no: up once PID 1 runs
                            (default: READY=1 from a systemd init only)
     --suppress-sync=BOOL   Make sync(2), fsync(2) and kin return at once, doing nothing
     --personality=ARCH     What uname -m says inside: x86 or x86-64
     --cpu-affinity=CPUS    The CPUs the container runs on: 0,2-3
System identity:
     --hostname=NAME        Hostname (default: the machine name)
     --uuid=UUID            Machine UUID ($container_uuid)
Resources:
     --rlimit=NAME=SOFT[:HARD]  Resource limit for the payload
     --oom-score-adjust=VALUE   OOM score adjustment (-1000..1000)
     --property=KEY=VALUE       Limit of the machine's cgroup: MemoryMax=, MemoryHigh=,
                                MemorySwapMax=, CPUQuota=, CPUWeight=, AllowedCPUs=,
                                TasksMax=, IOWeight= (systemd's value syntax)
  -S --slice=SLICE              The slice of the machine's scope (systemd hosts; else only
                                machine.slice)
     --register=BOOL            Register with systemd-machined where it runs (default: yes)
     --keep-unit                Use the calling service's cgroup instead of a new scope
Security (all on by default):
  -U                        User namespace with a picked UID range, idmapped image (the default)
     --private-users=MODE   A user namespace: pick (default), yes, identity,
                            no (no security boundary), BASE[:RANGE]
     --private-users-ownership=MODE
                            Image files' owners: auto (default), map (idmapped mounts), chown, off
     --private-users-chown  Same as --private-users-ownership=chown
     --capability=CAP,...   Keep these capabilities too (or 'all')
     --drop-capability=CAP,...  Drop these from nspawn's default bounding set
     --ambient-capability=CAP,...  Ambient capabilities for the payload
     --no-new-privileges=BOOL  Set PR_SET_NO_NEW_PRIVS
     --system-call-filter=[~]NAME|@GROUP ...
                            Allow (or with ~ deny) system calls in the seccomp filter
  -Z --selinux-context=LABEL  -L --selinux-apifs-context=LABEL  Accepted where SELinux is off
Networking:
     --private-network      Only a loopback device in the container
  -n --network-veth         A veth pair, ve-NAME and host0, with addresses and a route
     --network-zone=NAME    A veth whose host side joins the bridge vz-NAME
     --network-bridge=BR    A veth whose host side (vb-NAME) joins the host's bridge BR
     --network-interface=IF[:NAME]  Move the host's interface IF in (back when it stops)
     --network-macvlan=IF[:NAME]  A macvlan on IF inside, mv-IF by default
     --network-ipvlan=IF[:NAME]   An ipvlan on IF inside, iv-IF by default
     --network-veth-extra=HOSTIF[:NAME]  An extra veth pair, no addresses
     --network-namespace-path=PATH  Join that network namespace instead
  -p --port=[tcp:|udp:]HOST[:CONTAINER]  Forward a host port to the machine (also from localhost)
     --network-masquerade   NAT the machine's outbound traffic (nftables; hutch's own option)
Mounts:
     --bind=PATH[:PATH[:OPTS]]     Bind mount from the host ('+PATH': inside the image; empty
                                   source: a temporary directory). OPTS: rbind, norbind, idmap,
                                   noidmap, rootidmap (owner as root), owneridmap (owner as --user)
     --bind-ro=PATH[:PATH[:OPTS]]  Same, read-only
     --tmpfs=PATH[:OPTIONS]        Mount a tmpfs
     --overlay=PATH[:PATH...]:PATH     Overlay of host directories; the last is the destination
     --overlay-ro=PATH[:PATH...]:PATH  Same, read-only
     --inaccessible=PATH           Over-mount a path with an inaccessible node
     --bind-user=NAME              A host user inside (UID 60514+), home at /run/host/home/NAME
     --bind-user-shell=BOOL|PATH   Their shell in the user record: theirs, none, or PATH
Integration:
     --resolv-conf=MODE     Its /etc/resolv.conf: off, copy-host, copy-static, copy-uplink,
                            copy-stub, replace-*, bind-*, delete, auto (default)
     --timezone=MODE        Its /etc/localtime: off, copy, bind, symlink, delete, auto (default)
  -j --link-journal=MODE    The journal: no, host, try-host, guest, try-guest (-j),
                            auto (default: no link)
     --set-credential=ID:VALUE  --load-credential=ID:PATH  Credentials in /run/host/credentials
Input/Output:
     --console=MODE         The console: interactive (default on a terminal), read-only (default
                            otherwise), passive, pipe, autopipe
  -P --pipe                 Same as --console=pipe
     --no-pager  --no-ask-password  Accepted; nothing to do (systemd-nspawn's, for its own output)
Environment: SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes|network, SYSTEMD_NSPAWN_CHECK_OS_RELEASE=0,
SYSTEMD_LOG_TARGET=journal (status lines off), as systemd-nspawn reads them.
Press Ctrl-] three times within a second to kill an interactive container.
"""


def run(args: list[str]) -> int:
    from hutch.container import launch, locate, prepare
    from hutch.paths import Paths
    from hutch.settings.cmdline import HelpRequested, ListRequested, parse

    try:
        # Parsing stops at the command: only a --help before it is ours, a command's own reaches it.
        settings = parse(args)
    except ListRequested as e:  # --capability=help and the like
        sys.stdout.write("".join(v + "\n" for v in e.values))
        return 0
    except HelpRequested as e:
        if str(e) == "version":
            from hutch import __version__

            print(f"hutch {__version__}")
        else:
            sys.stdout.write(HELP)
        return 0
    if os.geteuid() != 0:
        from hutch.errors import SetupError

        raise SetupError("Need to be root.", "run hutch spawn as root, e.g. with sudo")
    paths = Paths.from_env()
    if settings.settings_mode != "no":
        settings = _with_settings_file(settings, paths, locate.find_image)
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
