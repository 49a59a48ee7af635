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
    Bind,
    Overlay,
    Settings,
    Tmpfs,
)

# Linux's signal numbers are fixed per architecture family; the `signal` module would import `enum`.
SIGNALS = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "ILL": 4,
    "TRAP": 5,
    "ABRT": 6,
    "BUS": 7,
    "FPE": 8,
    "KILL": 9,
    "USR1": 10,
    "SEGV": 11,
    "USR2": 12,
    "PIPE": 13,
    "ALRM": 14,
    "TERM": 15,
    "STKFLT": 16,
    "CHLD": 17,
    "CONT": 18,
    "STOP": 19,
    "TSTP": 20,
    "TTIN": 21,
    "TTOU": 22,
    "URG": 23,
    "XCPU": 24,
    "XFSZ": 25,
    "VTALRM": 26,
    "PROF": 27,
    "WINCH": 28,
    "IO": 29,
    "PWR": 30,
    "SYS": 31,
}
SIGRTMIN = 34  # glibc reserves 32 and 33 for itself
RANGE = 0x10000  # one container's UID range: 64K IDs
SIGRTMAX = 64


def parse_signal(text: str) -> int:
    """Accept 'SIGTERM', 'TERM', '15', 'SIGRTMIN+3', 'RTMAX-1', as systemd's signal_from_string()."""
    s = text.upper()
    if s.isdigit():
        n = int(s)
        if 1 <= n <= SIGRTMAX:
            return n
        raise UsageError(f"Invalid signal number: {text}")
    if s.startswith("SIG"):
        s = s[3:]
    if s in SIGNALS:
        return SIGNALS[s]
    for base, name in ((SIGRTMIN, "RTMIN"), (SIGRTMAX, "RTMAX")):
        if s == name:
            return base
        if (
            s.startswith(name)
            and len(s) > len(name) + 1
            and s[len(name)] in "+-"
            and s[len(name) + 1 :].isdigit()
        ):
            n = base + int(s[len(name) :])
            if SIGRTMIN <= n <= SIGRTMAX:
                return n
    raise UsageError(f"Unknown signal: {text}", "use a name like SIGTERM or SIGRTMIN+3, or a number")


def signal_name(sig: int) -> str:
    for name, n in SIGNALS.items():
        if n == sig:
            return "SIG" + name
    if SIGRTMIN <= sig <= SIGRTMAX:
        return "SIGRTMIN" if sig == SIGRTMIN else f"SIGRTMIN+{sig - SIGRTMIN}"
    return str(sig)


def parse_boolean(text: str, option: str) -> bool:
    t = text.lower()
    if t in ("1", "yes", "y", "true", "t", "on"):
        return True
    if t in ("0", "no", "n", "false", "f", "off"):
        return False
    raise UsageError(f"Failed to parse {option} argument: {text!r} is not a boolean")


def split_escaped(text: str) -> list[str]:
    """Split on ':' where '\\:' embeds a colon (and '\\\\' a backslash), as nspawn's extract_first_word()."""
    parts: list[str] = []
    cur: list[str] = []
    it = iter(text)
    for c in it:
        if c == "\\":
            nxt = next(it, "")
            cur.append(nxt)
        elif c == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _check_container_path(path: str, option: str) -> str:
    if not path.startswith("/"):
        raise UsageError(f"{option}: destination path must be absolute: {path!r}")
    if "/../" in path + "/" or "\0" in path:
        raise UsageError(f"{option}: destination path may not contain '..': {path!r}")
    return os.path.normpath(path) if path != "/" else "/"


def _host_source(path: str) -> tuple[str, bool]:
    """A source: '+rel' is inside the image, '' a temp dir, otherwise a host path (relative to cwd)."""
    if path.startswith("+"):
        return _check_container_path("/" + path[1:].lstrip("/"), "source"), True
    if path == "":
        return "", False
    return os.path.abspath(path), False


def parse_bind(spec: str, read_only: bool) -> Bind:
    option = "--bind-ro" if read_only else "--bind"
    parts = split_escaped(spec)
    if len(parts) > 3:
        raise UsageError(f"Invalid {option}= specification: {spec!r}", "expected SRC[:DST[:OPTIONS]]")
    src, is_rel = _host_source(parts[0])
    if len(parts) == 1 and src == "":
        raise UsageError(
            f"Invalid {option}= specification: {spec!r}", "a temporary source needs a destination"
        )
    dst = parts[1] if len(parts) > 1 else (parts[0][1:] if is_rel else src)
    if dst == "":
        raise UsageError(f"Invalid {option}= specification: {spec!r}", "empty destination")
    dst = _check_container_path(dst if is_rel or len(parts) > 1 else src, option)
    recursive = True
    idmap = ""
    if len(parts) == 3:
        for opt in parts[2].split(","):
            if opt == "rbind":
                recursive = True
            elif opt == "norbind":
                recursive = False
            elif opt in ("noidmap", "idmap", "rootidmap", "owneridmap"):
                idmap = opt
            else:
                raise UsageError(
                    f"Invalid {option}= mount option {opt!r} in {spec!r}",
                    "known options: rbind, norbind, idmap, noidmap, rootidmap, owneridmap",
                )
    if idmap in ("rootidmap", "owneridmap") and is_rel:
        raise UsageError(f"{option}={spec}: {idmap} maps a host directory's owner, not one in the image")
    return Bind(src, dst, read_only=read_only, recursive=recursive, image_relative=is_rel, idmap=idmap)


def parse_tmpfs(spec: str) -> Tmpfs:
    parts = split_escaped(spec)
    path = parts[0]
    opts = ":".join(parts[1:]) if len(parts) > 1 else "mode=0755"
    if not path:
        raise UsageError(f"Invalid --tmpfs= specification: {spec!r}", "expected PATH[:OPTIONS]")
    dst = _check_container_path(path, "--tmpfs")
    if dst == "/":
        raise UsageError("--tmpfs= cannot replace the root directory", "use --volatile=yes instead")
    for opt in opts.split(","):
        # tmpfs's own numbers, checked here: the kernel's EINVAL would come after the mount point
        # was made in the image.
        key, _, value = opt.partition("=")
        if key == "mode" and not (value and all(c in "01234567" for c in value) and len(value) <= 4):
            raise UsageError(f"Invalid --tmpfs= mode {value!r}", "an octal mode, like mode=0755")
        if key in ("uid", "gid", "nr_inodes") and not value.isdigit():
            raise UsageError(f"Invalid --tmpfs= {key}= {value!r}", "a number")
    return Tmpfs(dst, opts)


def parse_overlay(spec: str, read_only: bool) -> Overlay:
    option = "--overlay-ro" if read_only else "--overlay"
    parts = split_escaped(spec)
    if len(parts) < 2:
        raise UsageError(f"Invalid {option}= specification: {spec!r}", "at least two paths are required")
    if len(parts) == 2:
        # Two paths: the second is both the top layer (on the host) and the destination.
        lowers = [parts[0]]
        upper = parts[1]
        dest = parts[1]
    else:
        lowers = parts[:-2]
        upper = parts[-2]
        dest = parts[-1]
    resolved = []
    for low in lowers:
        if low == "":
            raise UsageError(
                f"Invalid {option}= specification: {spec!r}", "only the upper layer may be empty"
            )
        p, rel = _host_source(low)
        resolved.append(("+" + p) if rel else p)
    up, uprel = _host_source(upper)
    return Overlay(
        resolved,
        ("+" + up) if uprel else up,
        _check_container_path(dest.lstrip("+") if dest.startswith("+") else dest, option),
        read_only,
    )


# Linux's limits that Python's resource module has no name for (setrlimit() takes the number).
_RLIMITS_PYTHON_LACKS = {"RLIMIT_LOCKS": 10}


def parse_rlimit(spec: str) -> tuple[int, tuple[int, int]]:
    import resource  # imported here, once: also what payload.apply_limits() uses inside the container

    name, eq, value = spec.partition("=")
    if not eq:
        raise UsageError(f"Invalid --rlimit= specification: {spec!r}", "expected RLIMIT_NAME=SOFT[:HARD]")
    key = name.upper()
    if not key.startswith("RLIMIT_"):
        key = "RLIMIT_" + key
    res = getattr(resource, key, _RLIMITS_PYTHON_LACKS.get(key))
    if not isinstance(res, int):
        raise UsageError(f"Unknown resource limit: {name}", "e.g. RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CORE")

    def num(v: str) -> int:
        if v in ("infinity", "unlimited"):
            return resource.RLIM_INFINITY
        if not v.isdigit():
            raise UsageError(f"Invalid --rlimit= value {v!r} in {spec!r}")
        return int(v)

    soft, _, hard = value.partition(":")
    s = num(soft)
    h = num(hard) if hard else s
    if h != resource.RLIM_INFINITY and (s == resource.RLIM_INFINITY or s > h):
        raise UsageError(f"Invalid --rlimit= {spec!r}: soft limit exceeds hard limit")
    return res, (s, h)


def valid_machine_name(name: str) -> bool:
    """Hostname rules, as machined's: dot-separated labels of [A-Za-z0-9_-], at most 64 characters."""
    if not name or len(name) > 64 or name.startswith(".") or name.endswith(".") or ".." in name:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)


def parse_uuid(text: str) -> str:
    h = text.replace("-", "").lower()
    if len(h) != 32 or any(c not in "0123456789abcdef" for c in h) or h == "0" * 32:
        raise UsageError(f"Invalid UUID: {text}", "expected 32 hex digits, optionally with dashes")
    return h


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


def valid_ifname(name: str) -> bool:
    """The kernel's rule (dev_valid_name): 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    return (
        0 < len(name.encode()) <= 15
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in name)
    )


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


def _network_interface(s: Settings, v: str) -> None:
    s.network_interfaces.append(_ifname_pair("--network-interface", v))
    s.private_network = True


def _network_veth_extra(s: Settings, v: str) -> None:
    s.network_veth_extra.append(_ifname_pair("--network-veth-extra", v))
    s.private_network = True


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


def parse_private_users(value: str) -> tuple[str, int, int]:
    """--private-users=: ('no'|'pick'|'identity'|'fixed', base, count)."""
    v = value.lower()
    if v in ("no", "false", "0", "off", "n"):
        return "no", 0, 0
    if v in ("yes", "true", "1", "on", "y", "pick"):
        return "pick", 0, RANGE
    if v == "identity":
        return "identity", 0, RANGE
    base_s, _, count_s = value.partition(":")
    if not base_s.isdigit() or (count_s and not count_s.isdigit()):
        raise UsageError(
            f"Invalid --private-users= value: {value!r}", "use no, yes, pick, identity or BASE[:RANGE]"
        )
    base, count = int(base_s), int(count_s) if count_s else RANGE
    if count <= 0 or base + count > 0xFFFFFFFF:
        raise UsageError(
            f"Invalid --private-users= range {value!r}: outside the 32-bit ID space",
            "the range must be non-empty and end below 4294967295",
        )
    if base < RANGE:
        raise UsageError(
            f"Invalid --private-users= range {value!r}: it overlaps the host's own users",
            "use a base of 65536 or more, or 'identity' on purpose",
        )
    return "fixed", base, count


def _private_users(s: Settings, v: str) -> None:
    parse_private_users(v)  # validate now; prepare() acts on it
    s.private_users = v


def _ownership(s: Settings, v: str) -> None:
    s.private_users_ownership = _choice(v, ("off", "chown", "map", "auto"), "--private-users-ownership")


def _userns_pick(s: Settings, v: str) -> None:
    """-U: --private-users=pick --private-users-ownership=auto."""
    s.private_users = "pick"
    s.private_users_ownership = "auto"


def parse_cpu_set(text: str, option: str) -> list[int]:
    """'0,2-5 7': CPU numbers, as systemd's parse_cpu_set() reads them (commas or spaces, ranges)."""
    cpus: set[int] = set()
    for word in text.replace(",", " ").split():
        lo, dash, hi = word.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise UsageError(f"Failed to parse {option} argument: {text!r}", "CPU numbers or ranges: 0,2-5")
        a, b = int(lo), int(hi) if dash else int(lo)
        if a > b or b >= 8192:
            raise UsageError(f"Invalid CPU range {word!r} in {option}={text}")
        cpus.update(range(a, b + 1))
    return sorted(cpus)


def _cpu_affinity(s: Settings, v: str) -> None:
    s.cpu_affinity = parse_cpu_set(v, "--cpu-affinity=") or None


# --personality: what uname -m reports inside. Only the host's own and, on 64-bit x86, 32-bit x86.
PERSONALITIES = ("x86", "x86-64")


def _personality(s: Settings, v: str) -> None:
    s.personality = _choice(v, PERSONALITIES, "--personality")


LINK_JOURNAL_MODES = ("no", "host", "try-host", "guest", "try-guest", "auto")


def _link_journal(s: Settings, v: str) -> None:
    s.link_journal = _choice(v, LINK_JOURNAL_MODES, "--link-journal")


def valid_user_name(name: str) -> bool:
    """systemd's strict rule (valid_user_group_name): [a-zA-Z_][a-zA-Z0-9_-]*, at most 31 bytes."""
    return (
        0 < len(name) <= 31
        and (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    )


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
        s.bind_user_shell = _check_container_path(v, "--bind-user-shell")
        return
    try:
        s.bind_user_shell = parse_boolean(v, "--bind-user-shell")
    except UsageError:
        raise UsageError(
            f"Invalid --bind-user-shell= argument: {v!r}", "a boolean, or the absolute path of a shell"
        ) from None


def _network_macvlan(s: Settings, v: str) -> None:
    s.network_macvlan.append(_ifname_pair("--network-macvlan", v, "mv-"))
    s.private_network = True


def _network_ipvlan(s: Settings, v: str) -> None:
    s.network_ipvlan.append(_ifname_pair("--network-ipvlan", v, "iv-"))
    s.private_network = True


def _pivot_root(s: Settings, v: str) -> None:
    parts = split_escaped(v)
    if len(parts) > 2 or not parts[0]:
        raise UsageError(f"Invalid --pivot-root= argument: {v!r}", "expected PATH[:PATH]")
    new = _check_container_path(parts[0], "--pivot-root")
    old = _check_container_path(parts[1], "--pivot-root") if len(parts) == 2 else ""
    s.pivot_root = (new, old)


def _slice(s: Settings, v: str) -> None:
    ok = v.endswith(".slice") and len(v) > 6 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in v)
    if not ok:
        raise UsageError(f"Invalid slice name: {v!r}", "a unit name ending in .slice")
    if v != "machine.slice":
        raise UsageError(
            f"--slice={v}: hutch places every machine in machine.slice.",
            "leave -S out; the systemd-hosts work (issue 18) brings other slices",
        )
    s.slice = v


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
        lambda s, v: s.inaccessible.append(_check_container_path(v, "--inaccessible")),
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
    "network-interface": (True, False, _network_interface),
    "network-veth-extra": (True, False, _network_veth_extra),
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
    "keep-unit": (False, False, _ignore),
    "help": (False, False, _help),
    "version": (False, False, _version),
    "cpu-affinity": (True, False, _cpu_affinity),
    "personality": (True, False, _personality),
    "link-journal": (True, False, _link_journal),
    "notify-ready": (True, False, _bool("notify_ready", "--notify-ready")),
    "suppress-sync": (True, False, _bool("suppress_sync", "--suppress-sync")),
    "bind-user": (True, False, _bind_user),
    "bind-user-shell": (True, False, _bind_user_shell),
    "network-macvlan": (True, False, _network_macvlan),
    "network-ipvlan": (True, False, _network_ipvlan),
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
