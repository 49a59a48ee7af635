"""The last steps inside the container (after pivot_root): identity, limits, environment, exec.

Runs as the container's PID 1 (or, with --as-pid2, in the child the stub init forks).
"""

from __future__ import annotations

import fcntl

from hutch.container.console import TIOCSCTTY
from hutch.errors import SetupError
from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

INIT_CANDIDATES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init")


class User:
    __slots__ = ("gid", "groups", "home", "name", "shell", "uid")

    def __init__(self, name: str, uid: int, gid: int, home: str, shell: str, groups: list[int]) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell
        self.groups = groups


def parse_passwd(text: str, wanted: str) -> tuple[str, int, int, str, str] | None:
    for line in text.splitlines():
        f = line.split(":")
        if len(f) < 7 or not f[2].isdigit() or not f[3].isdigit():
            continue
        if f[0] == wanted or (wanted.isdigit() and f[2] == wanted):
            return f[0], int(f[2]), int(f[3]), f[5] or "/", f[6] or "/bin/sh"
    return None


def parse_groups(text: str, user: str) -> list[int]:
    out = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[2].isdigit() and user in f[3].split(","):
            out.append(int(f[2]))
    return out


def resolve_user(name: str, passwd: str | None, group: str | None) -> User:
    if passwd is None:
        raise SetupError(f"Failed to resolve user '{name}' in the container: it has no /etc/passwd")
    found = parse_passwd(passwd, name)
    if found is None:
        raise SetupError(
            f"Failed to resolve user '{name}' in the container: no such user",
            "the user must exist in the container's /etc/passwd",
        )
    uname, uid, gid, home, shell = found
    return User(uname, uid, gid, home, shell, parse_groups(group or "", uname))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 22)
    except OSError:
        return None


def setup_console(console: str, boot: bool = False) -> None:
    """Become a session leader with /dev/console (a pty slave) as stdio and, for a command, as controlling
    terminal. An init gets no controlling terminal: it hands the console to a getty, which could not take
    it from PID 1's session inside a user namespace (stealing a tty needs CAP_SYS_ADMIN on the host)."""
    os.setsid()
    if console == "pipe":
        return
    fd = os.open("/dev/console", os.O_RDWR | (os.O_NOCTTY if boot else 0))
    if not boot:
        fcntl.ioctl(fd, TIOCSCTTY, 0)
    for n in (0, 1, 2):
        os.dup2(fd, n)
    if fd > 2:
        os.close(fd)


def loopback_up() -> None:
    import _socket  # not `socket`: its IntEnums cost ~2 ms

    SIOCGIFFLAGS = 0x8913
    SIOCSIFFLAGS = 0x8914
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        ifr = bytearray(b"lo".ljust(40, b"\0"))
        fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifr)
        flags = int.from_bytes(ifr[16:18], "little") | 1  # IFF_UP
        ifr[16:18] = flags.to_bytes(2, "little")
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, ifr)
    finally:
        s.close()


_PER_LINUX, _PER_LINUX32 = 0x0000, 0x0008
_NR_PERSONALITY = 135  # x86_64, the only host --personality is accepted on (prepare checks)


def apply_process(personality: str | None, cpus: list[int] | None) -> None:
    """--personality and --cpu-affinity: inherited by every process the payload starts."""
    if personality is not None:
        from hutch.linux import libc

        value = _PER_LINUX32 if personality == "x86" else _PER_LINUX
        libc.check_syscall(_NR_PERSONALITY, value, what="Failed to set the personality")
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as e:
            raise SetupError(f"Failed to set the CPU affinity to {cpus}: {e.strerror}.") from None


def apply_limits(rlimits: dict[int, tuple[int, int]], oom: int | None) -> None:
    if oom is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(oom))
    if rlimits:
        import resource

        for res, lim in rlimits.items():
            try:
                resource.setrlimit(res, lim)
            except (ValueError, OSError) as e:
                raise _limit_error(resource, res, lim, e) from None


def _limit_error(resource: ModuleType, res: int, lim: tuple[int, int], e: Exception) -> SetupError:
    name = next((n for n in dir(resource) if n.startswith("RLIMIT_") and getattr(resource, n) == res), res)
    hard = resource.getrlimit(res)[1]
    hint = None
    if hard != resource.RLIM_INFINITY and (lim[1] > hard or lim[1] == resource.RLIM_INFINITY):
        hint = f"the hard limit is {hard}; raising it needs CAP_SYS_RESOURCE, which hutch does not hold here"
    return SetupError(f"Failed to set {name} to {lim[0]}:{lim[1]}: {e}.", hint)


def switch_user(user: User, env: dict[str, str]) -> None:
    os.setgroups(user.groups)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    env["HOME"] = user.home
    env["USER"] = user.name
    env["LOGNAME"] = user.name
    env["SHELL"] = user.shell


def close_fds(keep: int) -> None:
    """No descriptor of the host survives into the payload (keep is close-on-exec anyway)."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def _exec_path(command: list[str], env: dict[str, str]) -> None:
    """execvpe() without os.get_exec_path(), which imports `warnings`: after pivot_root the host's
    standard library is out of reach, so nothing may be imported here."""
    name = command[0]
    if "/" in name:
        candidates = [name]
    else:
        candidates = [f"{d or '.'}/{name}" for d in env.get("PATH", DEFAULT_PATH).split(":")]
    first: OSError | None = None
    for path in candidates:
        try:
            os.execve(path, command, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            first = first or e
        except OSError as e:
            if first is None or isinstance(first, (FileNotFoundError, NotADirectoryError)):
                first = e  # like execvp: a found but unrunnable file says more than "not found"
    if first is not None and first.errno == ENOEXEC:
        raise _foreign(name, first)
    err = first.strerror if first else "No such file or directory"
    raise SetupError(f"Failed to execute {name}: {err}")


ENOEXEC = 8


def _foreign(name: str, e: OSError) -> SetupError:
    """ENOEXEC: most often a program of another architecture, with no binfmt_misc handler for it."""
    return SetupError(
        f"Failed to execute {name}: {e.strerror}",
        "it is not a program for this machine's architecture, or not a program at all; a foreign "
        "image runs through qemu-user-static's binfmt_misc handlers: apt-get install qemu-user-static "
        "binfmt-support",
    )


def exec_payload(boot: bool, command: list[str], env: dict[str, str], shell: str | None) -> None:
    """execve the payload; returns only by raising SetupError."""
    if boot:
        for init in INIT_CANDIDATES:
            try:
                os.execve(init, [init, *command], env)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno == ENOEXEC:
                    raise _foreign(init, e) from e
                raise SetupError(f"Failed to execute {init}: {e.strerror}") from e
        raise SetupError(
            "Failed to find an init in the container: tried " + ", ".join(INIT_CANDIDATES),
            "is systemd or busybox installed in the image?",
        )
    if command:
        _exec_path(command, env)
    for sh in ([shell] if shell else []) + ["/bin/bash", "/bin/sh"]:
        try:
            os.execve(sh, ["-" + os.path.basename(sh)], env)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno == ENOEXEC:
                raise _foreign(sh, e) from e
            raise SetupError(f"Failed to execute {sh}: {e.strerror}") from e
    raise SetupError("Failed to execute a shell: none of /bin/bash, /bin/sh exists in the container")


def user_from_container(name: str) -> User:
    return resolve_user(name, _read("/etc/passwd"), _read("/etc/group"))


def root_shell() -> str | None:
    found = parse_passwd(_read("/etc/passwd") or "", "root")
    return found[4] if found else None
