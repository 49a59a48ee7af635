"""`hutch spawn` argv -> Settings, with systemd-nspawn's option names and getopt_long's rules.

Parsed by hand: argparse costs ~7 ms to import and spawn's whole start-up budget is ~15 ms.
Like nspawn (getopt "+..."), parsing stops at the first non-option: the rest is the command.
"""

from __future__ import annotations

from hutch.errors import UsageError
from hutch.linux import posixos as os
from hutch.settings.model import (
    CONSOLE_MODES,
    RESOLV_CONF_MODES,
    TIMEZONE_MODES,
    VOLATILE_MODES,
    Settings,
)
from hutch.settings.values import (
    check_container_path,
    parse_bind,
    parse_boolean,
    parse_cpu_set,
    parse_overlay,
    parse_private_users,
    parse_rlimit,
    parse_signal,
    parse_tmpfs,
    parse_uuid,
    split_escaped,
    valid_ifname,
    valid_machine_name,
    valid_user_name,
)


class ListRequested(Exception):
    """OPTION=help: the values the option takes, which the front end prints instead of running."""

    def __init__(self, values: list[str]) -> None:
        super().__init__("\n".join(values))
        self.values = values


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value == "help" and option in ("--resolv-conf", "--timezone"):
        raise ListRequested(list(choices))
    if value not in choices:
        raise UsageError(f"Invalid {option}= argument: {value!r}", "one of: " + ", ".join(choices))
    return value


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    _Handler = Callable[[Settings, str], None]


def _set(attr: str, conv: Callable[[str], object] = str) -> _Handler:
    def h(s: Settings, v: str) -> None:
        setattr(s, attr, conv(v))

    return h


def _flag(attr: str, value: object = True) -> _Handler:
    def h(s: Settings, v: str) -> None:
        setattr(s, attr, value)

    return h


def _bool(attr: str, option: str) -> _Handler:
    def h(s: Settings, v: str) -> None:
        setattr(s, attr, parse_boolean(v, option))

    return h


def _machine(s: Settings, v: str) -> None:
    if not valid_machine_name(v):
        raise UsageError(
            f"Invalid machine name: {v!r}", "use letters, digits, '-', '_' and '.', at most 64 characters"
        )
    s.machine = v


def _hostname(s: Settings, v: str) -> None:
    if not valid_machine_name(v):
        raise UsageError(f"Invalid hostname: {v!r}")
    s.hostname = v


def _chdir(s: Settings, v: str) -> None:
    if not v.startswith("/"):
        raise UsageError(f"--chdir= must be an absolute path: {v!r}")
    s.chdir = v


def _setenv(s: Settings, v: str) -> None:
    name, eq, _ = v.partition("=")
    if (
        not name
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isalnum() or c == "_" for c in name)
    ):
        raise UsageError(f"Invalid environment variable assignment: {v!r}", "expected NAME=VALUE or NAME")
    if not eq:
        host = os.getenv(name)
        if host is None:
            return  # nspawn: NAME alone copies the host's value, and is dropped when unset
        v = f"{name}={host}"
    s.setenv.append(v)


def _user(s: Settings, v: str) -> None:
    if not v or "/" in v or ":" in v:
        raise UsageError(f"Invalid user name: {v!r}")
    s.user = v


def _oom(s: Settings, v: str) -> None:
    try:
        n = int(v)
    except ValueError:
        n = 9999
    if not -1000 <= n <= 1000:
        raise UsageError(
            f"Invalid --oom-score-adjust= value: {v!r}", "expected an integer from -1000 to 1000"
        )
    s.oom_score_adjust = n


def _set_credential(s: Settings, v: str) -> None:
    from hutch.settings import credentials

    credentials.set_credential(s.credentials, v)


def _load_credential(s: Settings, v: str) -> None:
    from hutch.settings import credentials

    credentials.load_credential(s.credentials, v)


def _kill_signal(s: Settings, v: str) -> None:
    s.kill_signal = parse_signal(v)


def _rlimit(s: Settings, v: str) -> None:
    res, lim = parse_rlimit(v)
    s.rlimits[res] = lim


def _directory(s: Settings, v: str) -> None:
    s.directory = os.path.abspath(v) if v else v


def _image(s: Settings, v: str) -> None:
    s.image = os.path.abspath(v) if v else v


def _template(s: Settings, v: str) -> None:
    s.template = os.path.abspath(v)


def _volatile(s: Settings, v: str) -> None:
    if v.lower() in ("1", "true", "on", "y"):
        v = "yes"
    elif v.lower() in ("0", "false", "off", "n"):
        v = "no"
    s.volatile = _choice(v, VOLATILE_MODES, "--volatile")


def _console(s: Settings, v: str) -> None:
    s.console = _choice(v, CONSOLE_MODES, "--console")


def _uuid(s: Settings, v: str) -> None:
    s.uuid = parse_uuid(v)


def _network_veth(s: Settings, v: str) -> None:
    s.network_veth = True
    s.private_network = True


def _network_zone(s: Settings, v: str) -> None:
    if not v:
        s.network_zone = ""  # an empty Zone= resets, as upstream's does
        return
    if len(v) > 12 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in v):
        raise UsageError(
            f"Invalid network zone name: {v!r}",
            "letters, digits, '-' and '_', at most 12 (vz-NAME fits IFNAMSIZ)",
        )
    s.network_zone = v
    s.network_veth = True
    s.private_network = True


def _port(s: Settings, v: str) -> None:
    proto, sep, rest = v.partition(":")
    if sep and proto in ("tcp", "udp"):
        spec = rest
    else:
        proto, spec = "tcp", v
    host, colon, inner = spec.partition(":")
    if colon and not inner:
        raise UsageError(f"Invalid --port={v}", "a ':' must be followed by the container's port")
    inner = inner or host
    if not (host.isdigit() and inner.isdigit() and 0 < int(host) < 65536 and 0 < int(inner) < 65536):
        raise UsageError(f"Invalid --port={v}", "use [tcp:|udp:]HOSTPORT[:CONTAINERPORT], ports 1-65535")
    s.ports.append((proto, int(host), int(inner)))


def _ifname_pair(option: str, v: str, prefix: str = "") -> tuple[str, str]:
    """IF[:NAME]. Without NAME the inner name is IF, or PREFIX+IF cut to fit IFNAMSIZ."""
    outer, _, inner = v.partition(":")
    if not inner:
        inner = (prefix + outer)[:15] if valid_ifname(outer) else outer
    for n in (outer, inner):
        if not valid_ifname(n):
            raise UsageError(
                f"Invalid network interface name in {option}={v}", "1-15 characters, no '/', ':' or spaces"
            )
    return outer, inner


def _network_bridge(s: Settings, v: str) -> None:
    if not valid_ifname(v):
        raise UsageError(
            f"Invalid bridge name in --network-bridge={v}", "1-15 characters, no '/', ':' or spaces"
        )
    s.network_bridge = v
    s.network_veth = True
    s.private_network = True


def _link(attr: str, option: str, prefix: str = "") -> _Handler:
    """IF[:NAME] options that put a link into the machine's own network namespace."""

    def h(s: Settings, v: str) -> None:
        getattr(s, attr).append(_ifname_pair(option, v, prefix))
        s.private_network = True

    return h


def _network_namespace_path(s: Settings, v: str) -> None:
    if not v.startswith("/"):
        raise UsageError(f"--network-namespace-path={v} is not an absolute path")
    s.network_namespace_path = v


def _property(s: Settings, v: str) -> None:
    from hutch.container.limits import parse as parse_property

    parse_property(v)  # refused here, before anything starts
    s.properties.append(v)


def _settings(s: Settings, v: str) -> None:
    if v.lower() not in ("override", "trusted"):
        parse_boolean(v, "--settings")
    s.settings_mode = v.lower()


def _caps(attr: str, option: str) -> _Handler:
    def h(s: Settings, v: str) -> None:
        from hutch.linux import caps

        if v == "help":
            raise ListRequested(["cap_" + n.lower() for n in caps.NAMES])
        try:
            getattr(s, attr).update(caps.parse(v))
        except ValueError as e:
            raise UsageError(
                f"Failed to parse {option}= argument: unknown capability {e}",
                "names as in capabilities(7), e.g. CAP_NET_ADMIN, or 'all'",
            ) from None

    return h


def _syscall_filter(s: Settings, v: str) -> None:
    from hutch.linux.seccomp_groups import FilterError, parse_filter

    try:
        add, remove = parse_filter(v)
    except FilterError as e:
        raise UsageError(
            f"Failed to parse --system-call-filter= argument: unknown system call or group {e}",
            "names as in syscalls(2), groups as in 'systemd-analyze syscall-filter'",
        ) from None
    s.syscall_allow += add
    s.syscall_deny += remove


def _private_users(s: Settings, v: str) -> None:
    parse_private_users(v)  # validate now; prepare() acts on it
    s.private_users = v


def _ownership(s: Settings, v: str) -> None:
    s.private_users_ownership = _choice(v, ("off", "chown", "map", "auto"), "--private-users-ownership")


def _userns_pick(s: Settings, v: str) -> None:
    """-U: --private-users=pick --private-users-ownership=auto."""
    s.private_users = "pick"
    s.private_users_ownership = "auto"


def _cpu_affinity(s: Settings, v: str) -> None:
    s.cpu_affinity = parse_cpu_set(v, "--cpu-affinity=") or None


# --personality: what uname -m reports inside. Only the host's own and, on 64-bit x86, 32-bit x86.
PERSONALITIES = ("x86", "x86-64")


def _personality(s: Settings, v: str) -> None:
    s.personality = _choice(v, PERSONALITIES, "--personality")


LINK_JOURNAL_MODES = ("no", "host", "try-host", "guest", "try-guest", "auto")


def _link_journal(s: Settings, v: str) -> None:
    s.link_journal = _choice(v, LINK_JOURNAL_MODES, "--link-journal")


def _bind_user(s: Settings, v: str) -> None:
    if not v:
        s.bind_users = []  # an empty assignment resets the list, as in the settings file
        return
    if not valid_user_name(v):
        raise UsageError(f"Invalid user name to bind: {v!r}", "a user name of the host, like alice")
    if v not in s.bind_users:
        s.bind_users.append(v)


def _bind_user_shell(s: Settings, v: str) -> None:
    if v.startswith("/"):
        s.bind_user_shell = check_container_path(v, "--bind-user-shell")
        return
    try:
        s.bind_user_shell = parse_boolean(v, "--bind-user-shell")
    except UsageError:
        raise UsageError(
            f"Invalid --bind-user-shell= argument: {v!r}", "a boolean, or the absolute path of a shell"
        ) from None


def _pivot_root(s: Settings, v: str) -> None:
    parts = split_escaped(v)
    if len(parts) > 2 or not parts[0]:
        raise UsageError(f"Invalid --pivot-root= argument: {v!r}", "expected PATH[:PATH]")
    new = check_container_path(parts[0], "--pivot-root")
    old = check_container_path(parts[1], "--pivot-root") if len(parts) == 2 else ""
    s.pivot_root = (new, old)


def _slice(s: Settings, v: str) -> None:
    ok = v.endswith(".slice") and len(v) > 6 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in v)
    if not ok:
        raise UsageError(f"Invalid slice name: {v!r}", "a unit name ending in .slice")
    s.slice = v  # honoured where systemd is PID 1; refused at start elsewhere (hutch.container.cgroup_setup)


def _keep_unit(s: Settings, v: str) -> None:
    s.keep_unit = True


def _selinux(attr: str, option: str) -> _Handler:
    def h(s: Settings, v: str) -> None:
        if not v or v.count(":") < 2 or any(c.isspace() for c in v):
            raise UsageError(f"Invalid {option}= label: {v!r}", "an SELinux context, like u:r:t:s0")
        setattr(s, attr, v)

    return h


class HelpRequested(Exception):
    """--help or --version among the options: the front end prints that instead of running."""


def _help(s: Settings, v: str) -> None:
    raise HelpRequested("help")


def _version(s: Settings, v: str) -> None:
    raise HelpRequested("version")


def _unsupported(option: str, hint: str) -> _Handler:
    def h(s: Settings, v: str) -> None:
        raise UsageError(f"{option} is not supported by hutch.", hint)

    return h


_VERITY = "hutch checks no dm-verity signatures: run an image without them, or use systemd-nspawn"


def _ignore(s: Settings, v: str) -> None:
    """Options that only concern systemd's service manager; accepted so command lines carry over."""


# name -> (takes an argument, optional argument, handler)
LONG: dict[str, tuple[bool, bool, _Handler]] = {
    "directory": (True, False, _directory),
    "image": (True, False, _image),
    "machine": (True, False, _machine),
    "template": (True, False, _template),
    "ephemeral": (False, False, _flag("ephemeral")),
    "read-only": (False, False, _flag("read_only")),
    "volatile": (True, True, _volatile),
    "boot": (False, False, _flag("boot")),
    "as-pid2": (False, False, _flag("as_pid2")),
    "chdir": (True, False, _chdir),
    "setenv": (True, False, _setenv),
    "user": (True, False, _user),
    "kill-signal": (True, False, _kill_signal),
    "hostname": (True, False, _hostname),
    "uuid": (True, False, _uuid),
    "rlimit": (True, False, _rlimit),
    "oom-score-adjust": (True, False, _oom),
    "quiet": (False, False, _flag("quiet")),
    "debug": (False, False, _flag("debug")),
    "bind": (True, False, lambda s, v: s.binds.append(parse_bind(v, False))),
    "bind-ro": (True, False, lambda s, v: s.binds.append(parse_bind(v, True))),
    "tmpfs": (True, False, lambda s, v: s.tmpfs.append(parse_tmpfs(v))),
    "overlay": (True, False, lambda s, v: s.overlays.append(parse_overlay(v, False))),
    "overlay-ro": (True, False, lambda s, v: s.overlays.append(parse_overlay(v, True))),
    "inaccessible": (
        True,
        False,
        lambda s, v: s.inaccessible.append(check_container_path(v, "--inaccessible")),
    ),
    "resolv-conf": (
        True,
        False,
        lambda s, v: setattr(s, "resolv_conf", _choice(v, RESOLV_CONF_MODES, "--resolv-conf")),
    ),
    "timezone": (True, False, lambda s, v: setattr(s, "timezone", _choice(v, TIMEZONE_MODES, "--timezone"))),
    "private-network": (False, False, _flag("private_network")),
    "network-veth": (False, False, _network_veth),
    "network-zone": (True, False, _network_zone),
    "network-bridge": (True, False, _network_bridge),
    "network-interface": (True, False, _link("network_interfaces", "--network-interface")),
    "network-veth-extra": (True, False, _link("network_veth_extra", "--network-veth-extra")),
    "network-namespace-path": (True, False, _network_namespace_path),
    "port": (True, False, _port),
    "set-credential": (True, False, _set_credential),
    "load-credential": (True, False, _load_credential),
    "network-masquerade": (False, False, _flag("network_masquerade")),
    "console": (True, False, _console),
    "pipe": (False, False, _flag("console", "pipe")),
    "settings": (True, False, _settings),
    "capability": (True, False, _caps("capabilities", "--capability")),
    "drop-capability": (True, False, _caps("drop_capabilities", "--drop-capability")),
    "ambient-capability": (True, False, _caps("ambient_capabilities", "--ambient-capability")),
    "no-new-privileges": (True, False, _bool("no_new_privileges", "--no-new-privileges")),
    "system-call-filter": (True, False, _syscall_filter),
    "private-users": (True, True, _private_users),
    "private-users-ownership": (True, False, _ownership),
    "private-users-chown": (False, False, _flag("private_users_ownership", "chown")),
    "userns-pick": (False, False, _userns_pick),
    "register": (True, False, _bool("register", "--register")),
    "property": (True, False, _property),
    "keep-unit": (False, False, _keep_unit),
    "help": (False, False, _help),
    "version": (False, False, _version),
    "cpu-affinity": (True, False, _cpu_affinity),
    "personality": (True, False, _personality),
    "link-journal": (True, False, _link_journal),
    "notify-ready": (True, False, _bool("notify_ready", "--notify-ready")),
    "suppress-sync": (True, False, _bool("suppress_sync", "--suppress-sync")),
    "bind-user": (True, False, _bind_user),
    "bind-user-shell": (True, False, _bind_user_shell),
    "network-macvlan": (True, False, _link("network_macvlan", "--network-macvlan", "mv-")),
    "network-ipvlan": (True, False, _link("network_ipvlan", "--network-ipvlan", "iv-")),
    "pivot-root": (True, False, _pivot_root),
    "slice": (True, False, _slice),
    "selinux-context": (True, False, _selinux("selinux_context", "--selinux-context")),
    "selinux-apifs-context": (True, False, _selinux("selinux_apifs_context", "--selinux-apifs-context")),
    "root-hash": (True, False, _unsupported("--root-hash=", _VERITY)),
    "root-hash-sig": (True, False, _unsupported("--root-hash-sig=", _VERITY)),
    "verity-data": (True, False, _unsupported("--verity-data=", _VERITY)),
    "oci-bundle": (
        True,
        False,
        _unsupported("--oci-bundle=", "import the image with 'hutch import-tar' or 'hutch pull-oci'"),
    ),
    "no-pager": (False, False, _ignore),
    "no-ask-password": (False, False, _ignore),
}

SHORT: dict[str, str] = {
    "D": "directory",
    "i": "image",
    "M": "machine",
    "x": "ephemeral",
    "b": "boot",
    "a": "as-pid2",
    "E": "setenv",
    "u": "user",
    "U": "userns-pick",
    "q": "quiet",
    "P": "pipe",
    "n": "network-veth",
    "p": "port",
    "j": "link-journal",
    "L": "selinux-apifs-context",
    "S": "slice",
    "Z": "selinux-context",
    "h": "help",
}
# -j takes no argument: it means --link-journal=try-guest.
SHORT_VALUE = {"j": "try-guest"}


def _long_name(name: str) -> str:
    """NAME, or the one long option it abbreviates, as getopt_long allows ('--direc' is --directory)."""
    if name in LONG:
        return name
    matches = [o for o in LONG if o.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"option '--{name}' is ambiguous; possibilities: " + " ".join("--" + m for m in sorted(matches))
        )
    raise UsageError(f"unrecognized option '--{name}'", "see 'hutch spawn --help'")


def parse(argv: list[str]) -> Settings:
    """Parse `hutch spawn` arguments. Raises UsageError with nspawn-like messages."""
    s = Settings()
    s.argv = list(argv)
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            name = _long_name(name)
            spec = LONG[name]
            takes, optional, handler = spec
            if takes:
                if not eq:
                    if optional:
                        value = "yes"
                    elif i + 1 < n:
                        i += 1
                        value = argv[i]
                    else:
                        raise UsageError(f"option '--{name}' requires an argument")
            elif eq:
                raise UsageError(f"option '--{name}' doesn't allow an argument")
            handler(s, value)
            i += 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                c = arg[j]
                long = SHORT.get(c)
                if long is None:
                    raise UsageError(f"invalid option -- '{c}'", "see 'hutch spawn --help'")
                takes, _, handler = LONG[long]
                if c in SHORT_VALUE:
                    handler(s, SHORT_VALUE[c])
                    j += 1
                    continue
                if takes:
                    if j + 1 < len(arg):
                        value = arg[j + 1 :]
                    elif i + 1 < n:
                        i += 1
                        value = argv[i]
                    else:
                        raise UsageError(f"option requires an argument -- '{c}'")
                    handler(s, value)
                    break
                handler(s, "")
                j += 1
            i += 1
            continue
        break
    s.command = argv[i:]
    verify(s)
    return s


def _own_links(s: Settings) -> bool:
    links = s.network_interfaces + s.network_veth_extra + s.network_macvlan + s.network_ipvlan
    return bool(s.network_veth or links)


def verify(s: Settings) -> None:
    """Cross-option rules, as nspawn's verify_arguments()."""
    if s.boot and s.as_pid2:
        raise UsageError("--boot and --as-pid2 may not be combined")
    if s.ephemeral and s.template:
        raise UsageError("--ephemeral and --template= may not be combined")
    if s.ephemeral and s.volatile != "no":
        raise UsageError("--ephemeral and --volatile= may not be combined")
    if s.directory == "":
        raise UsageError("--directory= may not be empty")
    if s.image == "":
        raise UsageError("--image= may not be empty")
    if s.directory and s.image:
        raise UsageError(
            "Please specify either --directory= or --image=, the combination of both is not supported."
        )
    if s.image and s.template:
        raise UsageError("--template= is not supported with --image=.")
    if s.image and s.volatile != "no":
        raise UsageError("Combining --volatile= with --image= is not supported.")
    if not s.quiet and (os.getenv("SYSTEMD_LOG_TARGET") or "") in ("journal", "kmsg", "syslog", "null"):
        # systemd's tools send their status lines to that target, not the console; hutch keeps only
        # its errors on stderr (there may be no journal to read them from).
        s.quiet = True
    if s.network_namespace_path and s.private_network and not _own_links(s):
        # Allowed with --private-network, as upstream: the namespace given is the private one.
        s.private_network = False
    if s.bind_users and s.private_users in ("no", "false", "0", "off", "n", "identity"):
        raise UsageError(
            "--bind-user= requires a user namespace with its own UID range.", "drop --private-users"
        )
    if s.command and not s.command[0]:
        raise UsageError("The command to run is empty ('').", "name a program, like /bin/sh")
