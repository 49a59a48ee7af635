"""What the container's PID 1 runs, from its clone (hutch.container.launch) to the payload's execve:
the IDs and capabilities it keeps, the tree it builds or copies, the console it takes, and then the
payload, as the user the settings name. It runs in the container's namespaces, in a process of its own
the supervisor waits for; anything it reports before its execve goes through the status pipe
(hutch.container.status).
"""

from __future__ import annotations

from hutch.container import cgroup_setup, console, payload, plan, status
from hutch.container.prepare import Prepared
from hutch.errors import SetupError
from hutch.linux import caps, cgroups, libc, seccomp, sig
from hutch.linux import posixos as os


def _start() -> None:
    """The supervisor's signal handling stops here: its handlers and wakeup pipe are no use to PID 1,
    and a payload must start with the default dispositions."""
    sig.set_wakeup_fd(-1)
    sig.reset(sig.SIGCHLD, sig.SIGTERM, sig.SIGINT, sig.SIGWINCH, sig.SIGHUP)


def preload_modules(prep: Prepared) -> None:
    """Modules needed after pivot_root, imported now: the host's Python is not visible there."""
    if prep.settings.as_pid2:
        from hutch.container import stub_init  # noqa: F401
    if prep.settings.private_network:
        import _socket  # noqa: F401  (payload.loopback_up)


def container_child(prep: Prepared, status_w: int, ack_r: int, unshare_flags: int) -> None:
    """--private-users=no: PID 1 of a new PID namespace, in new mount, UTS, IPC [, net] namespaces, or,
    with UNSHARE_FLAGS (a fork, not a clone3), it creates those here and joins its cgroup the slow
    way. It builds its own tree, tells the supervisor its console, waits for the ack and execs."""
    _start()
    libc.prctl(libc.PR_SET_PDEATHSIG, sig.SIGKILL)
    if unshare_flags:
        libc.unshare(unshare_flags)
        if prep.cgroup:
            cgroup_setup.join(prep)
    if prep.devices_cgroup:
        cgroups.join_thread(prep.devices_cgroup)  # v1, and we are one thread: no grace period
    if prep.netns_fd >= 0:
        libc.setns(prep.netns_fd, libc.CLONE_NEWNET)  # --network-namespace-path, before sysfs is mounted
    libc.sethostname(prep.hostname)
    ctx = plan.Context(prep.root)
    plan.execute(prep.outer_ops, ctx)
    master = _open_console(prep, ctx, status_w)
    plan.execute(prep.inner_ops, ctx)
    preload_modules(prep)
    if prep.cgroup:
        # Now, inside its cgroup, PID 1 gets a cgroup namespace rooted there.
        libc.unshare(libc.CLONE_NEWCGROUP)
        cgroup_setup.mount_inside(ctx)
    plan.PivotRoot().execute(ctx)
    os.close(ctx.root_fd)
    # The bounding set only limits later execve()s: what PID 1 does before its own keeps every capability.
    caps.drop_bounding(prep.keep_caps)
    _run_payload(prep, status_w, ack_r, master)


def _open_console(prep: Prepared, ctx: plan.Context, status_w: int) -> int:
    """The console, its master's fd number told to the supervisor, which copies it out (pidfd_getfd),
    and so the notify socket's (-1: none). PID 1's own copy of that closes at its exec."""
    master = console.mount_console(ctx, prep.console)
    os.write(status_w, f"C {master} {ctx.notify_fd}\n".encode())
    return master


def userns_child(prep: Prepared, status_w: int, go_r: int) -> None:
    """In: PID 1 of new user, PID, UTS, IPC [, net] namespaces; still in the supervisor's mount
    namespace M1 until it says go (by then pivoted into the container's root): then a copy of M1 of
    its own, its cgroup namespace, and the payload."""
    _start()
    libc.prctl(libc.PR_SET_PDEATHSIG, sig.SIGKILL)
    # While the supervisor builds the tree, what needs only our ID maps ("m"): it runs on the other
    # CPU then, instead of after "g", when the start waits for nothing else.
    if os.read(go_r, 1) != b"m":
        os._exit(1)  # the supervisor failed and reports why
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # Changing IDs made us non-dumpable, which hands our /proc/self files to the host's root: the
    # container's root could not even set its own oom_score_adj. Inside its namespace it owns itself.
    libc.prctl(libc.PR_SET_DUMPABLE, 1)
    libc.prctl(libc.PR_SET_PDEATHSIG, sig.SIGKILL)  # cleared by the ID change
    libc.sethostname(prep.hostname)
    caps.drop_bounding(prep.keep_caps)  # as in container_child, now rather than after the go
    if os.read(go_r, 1) != b"g":
        os._exit(1)
    os.close(go_r)
    libc.unshare(libc.CLONE_NEWNS | (libc.CLONE_NEWCGROUP if prep.cgroup else 0))
    os.chdir("/")
    # The copy made every mount private (its peers in M1 are gone with M1): shared again, for the
    # reason plan.PivotRoot gives.
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_SHARED)
    if prep.cgroup:
        ctx = plan.Context("/")
        ctx.open_root()
        cgroup_setup.mount_inside(ctx)
        os.close(ctx.root_fd)
    _run_payload(prep, status_w, -1, -1)


def _run_payload(prep: Prepared, status_w: int, ack_r: int, master: int) -> None:
    """Inside the container root: wait for the supervisor to take the console, then become the payload."""
    s = prep.settings
    if ack_r >= 0:
        while os.read(ack_r, 64):
            pass
        os.close(ack_r)
    if master >= 0:
        os.close(master)
    payload.setup_console(prep.console, s.boot)
    if s.private_network:
        payload.loopback_up()
    payload.apply_limits(s.rlimits, s.oom_score_adjust)
    if s.personality is not None or s.cpu_affinity:
        payload.apply_process(s.personality, s.cpu_affinity)
    env = dict(prep.env)
    user = payload.user_from_container(s.user) if s.user else None
    # The login shell only matters when there is no command and no init to run.
    shell = user.shell if user else (None if s.command or s.boot else payload.root_shell())
    if s.chdir:
        try:
            os.chdir(s.chdir)
        except OSError as e:
            raise SetupError(
                f"Failed to change to specified working directory {s.chdir}: {e.strerror}"
            ) from e
    # With --as-pid2 the stub init stays root; its child becomes the user.
    _become(prep, None if s.as_pid2 else user, env)
    sig.reset(sig.SIGPIPE, sig.SIGXFSZ)  # Python ignores these; an exec'd payload must not inherit that
    payload.close_fds(status_w)
    if s.as_pid2:
        from hutch.container import stub_init

        def child() -> None:
            try:
                sig.reset(sig.SIGTERM, sig.SIGINT, sig.SIGHUP, sig.SIGUSR1, sig.SIGUSR2, sig.SIGWINCH)
                if user:
                    payload.switch_user(user, env)
                payload.exec_payload(False, s.command, env, shell)
            except BaseException as e:
                status.report(status_w, e)
            os._exit(stub_init.EXIT_EXCEPTION)

        os._exit(stub_init.run(child))
    payload.exec_payload(s.boot, s.command, env, shell)


def _become(prep: Prepared, user: payload.User | None, env: dict[str, str]) -> None:
    """Drop privileges for the payload, its bounding set already dropped (nspawn's default list, edited
    by --capability/--drop-capability): the user, then ambient capabilities and no_new_privs."""
    s = prep.settings
    keep = prep.keep_caps
    if prep.seccomp:
        # Before dropping capabilities: loading a filter needs CAP_SYS_ADMIN (or no_new_privs).
        seccomp.load(prep.seccomp)
    ambient = frozenset(s.ambient_capabilities) & keep
    if user is not None and user.uid != 0:
        if ambient:
            libc.prctl(caps.PR_SET_KEEPCAPS, 1)  # let the permitted set survive setuid()
        payload.switch_user(user, env)
        caps.set_caps(ambient, ambient)
    else:
        if user is not None:
            payload.switch_user(user, env)
        caps.set_caps(keep, keep)  # as nspawn: root's inheritable set is the kept set too
    caps.raise_ambient(ambient)
    if s.no_new_privileges:
        libc.prctl(caps.PR_SET_NO_NEW_PRIVS, 1)
    # A credential change clears the parent-death signal; set it again.
    libc.prctl(libc.PR_SET_PDEATHSIG, sig.SIGKILL)
