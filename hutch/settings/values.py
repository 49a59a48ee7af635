"""systemd's value syntaxes, as systemd-nspawn's parsers read them: signals, booleans, colon lists with
escapes, UUIDs, machine, interface and user names, --bind/--tmpfs/--overlay specifications, resource
limits, CPU sets, --private-users ranges. Pure functions; the option table is hutch.settings.cmdline."""

from __future__ import annotations

from hutch.errors import UsageError
from hutch.linux import posixos as os
from hutch.settings.model import Bind, Overlay, Tmpfs

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


def check_container_path(path: str, option: str) -> str:
    if not path.startswith("/"):
        raise UsageError(f"{option}: destination path must be absolute: {path!r}")
    if "/../" in path + "/" or "\0" in path:
        raise UsageError(f"{option}: destination path may not contain '..': {path!r}")
    return os.path.normpath(path) if path != "/" else "/"


def host_source(path: str) -> tuple[str, bool]:
    """A source: '+rel' is inside the image, '' a temp dir, otherwise a host path (relative to cwd)."""
    if path.startswith("+"):
        return check_container_path("/" + path[1:].lstrip("/"), "source"), True
    if path == "":
        return "", False
    return os.path.abspath(path), False


def parse_bind(spec: str, read_only: bool) -> Bind:
    option = "--bind-ro" if read_only else "--bind"
    parts = split_escaped(spec)
    if len(parts) > 3:
        raise UsageError(f"Invalid {option}= specification: {spec!r}", "expected SRC[:DST[:OPTIONS]]")
    src, is_rel = host_source(parts[0])
    if len(parts) == 1 and src == "":
        raise UsageError(
            f"Invalid {option}= specification: {spec!r}", "a temporary source needs a destination"
        )
    dst = parts[1] if len(parts) > 1 else (parts[0][1:] if is_rel else src)
    if dst == "":
        raise UsageError(f"Invalid {option}= specification: {spec!r}", "empty destination")
    dst = check_container_path(dst if is_rel or len(parts) > 1 else src, option)
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
    dst = check_container_path(path, "--tmpfs")
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
        p, rel = host_source(low)
        resolved.append(("+" + p) if rel else p)
    up, uprel = host_source(upper)
    return Overlay(
        resolved,
        ("+" + up) if uprel else up,
        check_container_path(dest.lstrip("+") if dest.startswith("+") else dest, option),
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


def valid_ifname(name: str) -> bool:
    """The kernel's rule (dev_valid_name): 1-15 bytes, not . or .., no '/', ':' or whitespace."""
    return (
        0 < len(name.encode()) <= 15
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in name)
    )


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


def valid_user_name(name: str) -> bool:
    """systemd's strict rule (valid_user_group_name): [a-zA-Z_][a-zA-Z0-9_-]*, at most 31 bytes."""
    return (
        0 < len(name) <= 31
        and (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    )
