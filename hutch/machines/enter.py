"""`hutch shell` and `hutch login`: a process inside a running machine, with the machine's confinement.

Entering goes through a pidfd of the machine's leader (setns() with every namespace at once), never
through a PID that could have been reused. The process is cloned straight into the leader's cgroup,
gets the container's capability bounding set and seccomp filter (derived from the machine's own spawn
arguments, kept in the registry), a login environment, and exits with the command's status.

On a terminal it gets a new pty from the container's own devpts, which we relay, so TIOCSTI or a hung
up terminal stay inside; otherwise it inherits our stdin, stdout and stderr, kept apart.

Order matters: everything the child needs is imported before setns() (the host's standard library is
out of reach afterwards), the child drops every other file descriptor and makes itself non-dumpable
before it enters, so nothing of the host can be taken from it by the container's root.
"""

from __future__ import annotations

import os
from typing import Any

from hutch.errors import MachineError
from hutch.machines import control
from hutch.paths import Paths

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
    if os.environ.get("HUTCH_SECCOMP", "1") != "0":
        allow = list(entry.get("syscall_allow") or [])
        deny = list(entry.get("syscall_deny") or [])
        prog = security.program(keep, allow, deny, paths.cache_dir)
    return keep, prog


def _leader_cgroup(entry: dict[str, Any]) -> int:
    """An fd of the leader's cgroup directory on the host (-1 without one), for CLONE_INTO_CGROUP."""
    base = entry.get("cgroup") or ""
    if not base:
        return -1
    try:
        with open(f"/proc/{entry['leader']}/cgroup") as f:
            rel = next((ln.split(":", 2)[2].strip() for ln in f if ln.startswith("0::")), "")
    except OSError:
        rel = ""
    # The leader's path from the host's view, under the machine's cgroup; else the machine's own.
    mount = base[: base.find("/machine.slice/")] if "/machine.slice/" in base else ""
    path = mount + rel if mount and rel.startswith(base[len(mount) :]) else base
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
    tty = login or (os.isatty(0) and os.isatty(1))
    env = {
        "PATH": payload.DEFAULT_PATH,
        "container": "hutch",
        "TERM": os.environ.get("TERM", "vt220") if tty else "dumb",
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
    flags = _ns_flags(int(entry["leader"]))
    v1 = _v1_cgroups(entry)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for path in v1:  # the limits' v1 hierarchies, which CLONE_INTO_CGROUP does not cover
                with open(f"{path}/cgroup.procs", "w") as f:
                    f.write("0")
            _child(
                pidfd,
                flags,
                cg,
                slave,
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
    if slave >= 0:
        os.close(slave)
    saved = None
    try:
        if master >= 0:
            import termios
            import tty as _tty

            if os.isatty(0):
                try:
                    saved = termios.tcgetattr(0)
                    _tty.setraw(0)
                except termios.error:
                    saved = None
                console.copy_winsize(0, master)
            _relay(master)
        _, status = os.waitpid(pid, 0)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if master >= 0:
            os.close(master)
    return os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status)


def _relay(master: int) -> None:
    """Terminal <-> pty until the pty hangs up: the last holder of its slave, the command, is gone."""
    import select

    from hutch.container import console

    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(0, select.POLLIN)
    while True:
        for fd, ev in poller.poll():
            if fd == master:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                console.write_all(1, data)
            elif fd == 0:
                data = os.read(0, 4096) if ev & select.POLLIN else b""
                if not data:
                    poller.unregister(0)
                    continue
                console.write_all(master, data)


def _child(
    pidfd: int, flags: int, cg: int, slave: int, master: int, user: str, command: list[str] | None,
    env: dict[str, str], keep: frozenset[int], prog: bytes | None, login: bool,
    payload: Any, caps: Any, seccomp: Any, libc: Any, sig: Any,
) -> None:  # fmt: skip
    """In the host's namespaces: enter the machine's, then clone the process that becomes the command."""
    libc.prctl(libc.PR_SET_PDEATHSIG, 9)
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    if master >= 0:
        os.close(master)
    from hutch.linux.fsutil import close_other_fds

    close_other_fds({pidfd, cg, slave} - {-1})
    # All at once: user, mount (root and cwd become the container's), PID (for our children), UTS,
    # IPC, network, cgroup.
    libc.setns(pidfd, flags)
    os.close(pidfd)
    try:
        pid, child_pidfd = libc.clone3_fork(0, cg)
    except OSError:
        pid, child_pidfd = libc.clone3_fork(0)
    if pid == 0:
        _grandchild(slave, user, command, env, keep, prog, login, payload, caps, seccomp, libc, sig)
    os.close(child_pidfd)
    if slave >= 0:
        os.close(slave)
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

            fcntl.ioctl(slave, payload.TIOCSCTTY, 0)
            for n in (0, 1, 2):
                os.dup2(slave, n)
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
