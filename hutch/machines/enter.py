"""`hutch shell` and `hutch login`: a process inside a running machine, with the machine's confinement.

Entering goes through a pidfd of the machine's leader (setns() with every namespace at once), never
through a PID that could have been reused. The process is cloned straight into the leader's cgroup,
gets the container's capability bounding set and seccomp filter (derived from the machine's own spawn
arguments, kept in the registry), a login environment, and exits with the command's status.

Whenever any of stdin, stdout and stderr is a terminal it gets a new pty from the container's own
devpts in their place, which we relay: a host terminal fd never enters a machine (TIOCSTI would type
into it, a hangup would reach it). Ansible calls `shell` with only stdin on a terminal: then stdout
and stderr stay the pipes they are, kept apart. The command dies with its client, off a terminal too:
the helper that waits for it kills its process group when the client is gone.

Order matters: everything the child needs is imported before setns() (the host's standard library is
out of reach afterwards), the child drops every other file descriptor and makes itself non-dumpable
before it enters, so nothing of the host can be taken from it by the container's root.
"""

from __future__ import annotations

from hutch.errors import MachineError
from hutch.linux import posixos as os
from hutch.linux.sig import SIGHUP, SIGINT, SIGQUIT, SIGTERM
from hutch.machines import control
from hutch.paths import Paths
from hutch.settings.values import SIGRTMIN

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~5 ms to import: not at run time
    from typing import Any

_NS = (
    ("user", 0x10000000),
    ("mnt", 0x00020000),
    ("pid", 0x20000000),
    ("uts", 0x04000000),
    ("ipc", 0x08000000),
    ("net", 0x40000000),
    ("cgroup", 0x02000000),
)


def _ns_flags(leader: int) -> int:
    """The namespaces the leader does not share with us (setns() refuses to 'enter' our own user
    namespace, which a --private-users=no machine shares)."""
    flags = 0
    for name, flag in _NS:
        try:
            if os.stat(f"/proc/{leader}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                flags |= flag
        except FileNotFoundError:
            continue
    return flags


def _confinement(entry: dict[str, Any], paths: Paths) -> tuple[frozenset[int], bytes | None]:
    """The capabilities and seccomp program the machine's payload got, as its supervisor recorded them."""
    from hutch.container import security

    mask = int(entry.get("keep_caps") or 0)
    keep = frozenset(c for c in range(64) if mask >> c & 1)
    prog = None
    nosync = bool(entry.get("suppress_sync"))
    if (os.getenv("HUTCH_SECCOMP") or "1") != "0" or nosync:
        allow = list(entry.get("syscall_allow") or [])
        deny = list(entry.get("syscall_deny") or [])
        prog = security.program(keep, allow, deny, paths.cache_dir, nosync)
    return keep, prog


def _leader_cgroup(entry: dict[str, Any]) -> int:
    """An fd of the leader's cgroup directory on the host (-1 without one), for CLONE_INTO_CGROUP."""
    base = entry.get("cgroup") or ""
    if not base:
        return -1
    from hutch.linux import cgroups

    rel = cgroups.path_of(int(entry["leader"])) or ""
    # The leader's path from the host's view (a systemd guest moved it to init.scope), if it is under
    # the machine's cgroup; else the machine's own.
    mount = cgroups.unified_root(os.getenv("HUTCH_CGROUP_ROOT") or cgroups.CGROUP_ROOT) or ""
    path = mount + rel if mount and rel and (mount + rel).startswith(base) else base
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


def _v1_cgroups(entry: dict[str, Any]) -> list[str]:
    """The machine's directories in v1 hierarchies (a hybrid host with limits), to join as well."""
    base = entry.get("cgroup") or ""
    if "/unified/machine.slice/" not in base:
        return []
    from hutch.linux import cgroups

    root, _, rel = base.partition("/unified/")
    return cgroups.v1_scopes(root, rel.removesuffix("/payload"))


def _open_pty(leader: int) -> tuple[int, int]:
    """A new pty from the container's devpts, found from the leader's root without leaving it."""
    from hutch.container import console

    root = os.open(f"/proc/{leader}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return console.open_console_pty(root)
    finally:
        os.close(root)


def run(
    name: str,
    paths: Paths,
    *,
    user: str = "root",
    command: list[str] | None = None,
    setenv: list[str] | None = None,
    login: bool = False,
) -> int:
    from hutch.container import console, payload
    from hutch.linux import caps, libc, seccomp, sig

    entry = control.get(name, paths)
    keep, prog = _confinement(entry, paths)
    on_pty = (0, 1, 2) if login else tuple(n for n in (0, 1, 2) if os.isatty(n))
    tty = bool(on_pty)
    env = {
        "PATH": payload.DEFAULT_PATH,
        "container": "hutch",
        "TERM": os.getenv("TERM") or "vt220" if tty else "dumb",
    }
    for item in setenv or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise MachineError(f"Invalid environment assignment '{item}'.", "use -E NAME=VALUE")
        env[key] = value
    pidfd = control._leader_pidfd(entry, paths)
    cg = _leader_cgroup(entry)
    master = slave = -1
    if tty:
        master, slave = _open_pty(int(entry["leader"]))
        if not {1, 2} & set(on_pty):
            _no_echo(slave)  # nobody would see the echo: it must not land in a pipe's data
    flags = _ns_flags(int(entry["leader"]))
    v1 = _v1_cgroups(entry)
    client = os.getpid()
    if cg < 0 and entry.get("cgroup"):
        raise MachineError(
            f"Cannot enter machine '{name}': its cgroup {entry['cgroup']} cannot be opened.",
            f"the machine may be stopping; see 'hutch status {name}'",
        )
    # Into the machine's cgroup from the host's side: from inside its user and cgroup namespaces the
    # kernel refuses a move out of a cgroup those do not contain (ENOENT), and a command left in the
    # caller's cgroup would escape the machine's limits.
    try:
        pid, helper_pidfd = libc.clone3_fork(0, cg) if cg >= 0 else (os.fork(), -1)
    except OSError as e:
        os.close(pidfd)
        os.close(cg)
        raise MachineError(
            f"Cannot enter machine '{name}': joining its cgroup failed: {e.strerror}.",
            f"see 'hutch status {name}'",
        ) from None
    if pid == 0:
        code = 1
        try:
            # The limits' v1 hierarchies, which CLONE_INTO_CGROUP does not cover. Through `tasks`, as
            # this one thread (a forked child has no other): moving a whole process (cgroup.procs,
            # or any PID but 0) takes the kernel's threadgroup lock, which waits for an RCU grace
            # period: 4.5-16 ms after an idle moment here, ~0.4 ms this way (bench/verbs.py V5).
            for path in v1:
                with open(f"{path}/tasks", "w") as f:
                    f.write("0")
            _child(
                client,
                pidfd,
                flags,
                cg,
                slave,
                on_pty,
                master,
                user,
                command,
                env,
                keep,
                prog,
                login,
                payload,
                caps,
                seccomp,
                libc,
                sig,
            )
        except BaseException as e:
            msg = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
            os.write(2, f"hutch shell: {msg}\n".encode(errors="replace"))
            code = 1
        os._exit(code)
    os.close(pidfd)
    if cg >= 0:
        os.close(cg)
    if helper_pidfd >= 0:
        os.close(helper_pidfd)
    # The slave stays open here until the end: util-linux login closes its fds, calls vhangup() and
    # reopens the tty, and in that window, with no slave open, reads of the master fail with EIO.
    saved = None
    try:
        if master >= 0:
            import termios
            import tty as _tty

            if 0 in on_pty:
                try:
                    saved = termios.tcgetattr(0)
                    _tty.setraw(0)
                except termios.error:
                    saved = None
            console.copy_winsize(on_pty[0], master)
            _relay(master, 0 if 0 in on_pty else -1, 1 if login or 1 in on_pty else 2, pid)
        _, status = os.waitpid(pid, 0)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    return os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status)


def _no_echo(fd: int) -> None:
    import termios

    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _relay(master: int, src: int, dst: int, helper: int) -> None:
    """Terminal SRC (-1: none) -> pty -> DST until HELPER (the process that waits for the command)
    exits, then what the command wrote last. Not until the pty hangs up: a vhangup() inside (login's)
    is no end, and a background process that keeps the slave open does not hold the caller."""
    import select

    from hutch.container import console

    done = os.pidfd_open(helper)
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(done, select.POLLIN)
    if src >= 0:
        poller.register(src, select.POLLIN)

    def out(data: bytes) -> None:
        nonlocal dst
        try:
            console.write_all(dst, data)
        except OSError:
            dst = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)  # a reader gone: drain

    try:
        while True:
            for fd, ev in poller.poll():
                if fd == done:
                    os.set_blocking(master, False)
                    while True:
                        try:
                            data = os.read(master, 65536)
                        except OSError:  # EAGAIN: all read; EIO: nobody else has the slave
                            return
                        if not data:
                            return
                        out(data)
                elif fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if data:
                        out(data)
                    else:  # cannot happen while we hold a slave, but must not spin if it does
                        poller.unregister(master)
                else:
                    data = os.read(src, 4096) if ev & select.POLLIN else b""
                    if not data:
                        poller.unregister(src)
                        continue
                    console.write_all(master, data)
    finally:
        os.close(done)


_CLIENT_GONE = SIGRTMIN + 6  # the helper's parent-death signal, which nothing else sends
# What the helper passes on to the command's process group (the client gone: SIGKILL).
_HANDLED = (_CLIENT_GONE, SIGINT, SIGTERM, SIGHUP, SIGQUIT)


def _child(
    client: int, pidfd: int, flags: int, cg: int, slave: int, on_pty: tuple[int, ...], master: int,
    user: str, command: list[str] | None, env: dict[str, str], keep: frozenset[int], prog: bytes | None,
    login: bool, payload: Any, caps: Any, seccomp: Any, libc: Any, sig: Any,
) -> None:  # fmt: skip
    """In the host's namespaces: enter the machine's, then clone the process that becomes the command,
    and wait for it. When the client dies (SIGKILL included) the kernel signals this helper, which
    kills the command's process group, as a hangup of its terminal would."""
    group = [0]

    def forward(signum: int, frame: object) -> None:
        if group[0] > 0:
            try:
                os.killpg(group[0], sig.SIGKILL if signum == _CLIENT_GONE else signum)
            except OSError:
                pass
        if signum == _CLIENT_GONE:
            os._exit(128 + sig.SIGKILL)

    for signum in _HANDLED:
        sig.signal(signum, forward)
    libc.prctl(libc.PR_SET_PDEATHSIG, _CLIENT_GONE)
    if os.getppid() != client:
        os._exit(1)  # the client died before the signal was armed
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    if master >= 0:
        os.close(master)
    from hutch.linux.fsutil import close_other_fds

    # The host's terminal fds are replaced here, before anything of the machine is entered.
    null = os.open("/dev/null", os.O_RDWR)
    for n in on_pty:
        os.dup2(slave, n, inheritable=True)
    close_other_fds({pidfd, cg, slave, null} - {-1})
    # All at once: user, mount (root and cwd become the container's), PID (for our children), UTS,
    # IPC, network, cgroup.
    libc.setns(pidfd, flags)
    os.close(pidfd)
    pid, child_pidfd = libc.clone3_fork(0)  # in the machine's cgroup already, as we are
    if pid == 0:
        sig.reset(*_HANDLED)
        _grandchild(slave, user, command, env, keep, prog, login, payload, caps, seccomp, libc, sig)
    group[0] = pid  # the command calls setsid(): its PID names its process group
    os.close(child_pidfd)
    if slave >= 0:
        os.close(slave)
        for n in on_pty:  # the pty hangs up when the command's side is gone, not ours
            os.dup2(null, n)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def _grandchild(
    slave: int, user: str, command: list[str] | None, env: dict[str, str], keep: frozenset[int],
    prog: bytes | None, login: bool, payload: Any, caps: Any, seccomp: Any, libc: Any, sig: Any,
) -> None:  # fmt: skip
    try:
        # Host root has no ID in the machine's user namespace: become its root (the range's base).
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.setsid()
        if slave >= 0:
            import fcntl

            fcntl.ioctl(slave, payload.TIOCSCTTY, 0)  # already on the fds that were terminals
            if slave > 2:
                os.close(slave)
        u = payload.user_from_container(user)
        shell = u.shell or "/bin/sh"
        env.update(HOME=u.home, USER=u.name, LOGNAME=u.name, SHELL=shell)
        try:
            os.chdir(u.home)
        except OSError:
            os.chdir("/")
        if prog:
            seccomp.load(prog)
        caps.drop_bounding(keep)
        if u.uid != 0:
            payload.switch_user(u, env)
        else:
            caps.set_caps(keep)
        sig.reset(sig.SIGPIPE, sig.SIGXFSZ, sig.SIGINT, sig.SIGTERM, sig.SIGHUP)
        # Armed after the credential changes, which clear it: a helper killed outright takes the
        # command with it.
        libc.prctl(libc.PR_SET_PDEATHSIG, 9)
        payload.close_fds(2)
        if login:
            for path in ("/bin/login", "/usr/bin/login"):
                try:
                    os.execve(path, [path], env)
                except FileNotFoundError:
                    continue
            raise MachineError("No login program in the machine (looked for /bin/login, /usr/bin/login).")
        if command:
            payload._exec_path(command, env)
        os.execve(shell, ["-" + os.path.basename(shell)], env)
    except BaseException as e:
        msg = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
        os.write(2, f"hutch shell: {msg}\n".encode(errors="replace"))
        os._exit(127 if "execute" in str(msg) else 1)


def split_target(target: str) -> tuple[str, str]:
    """[USER@]NAME -> (user, name)."""
    user, at, name = target.rpartition("@")
    return (user if at and user else "root"), name
