"""The only module that forks a container, and the supervisor that runs it.

Two processes: the supervisor (host namespaces; owns the console, waits for PID 1, handles reboot,
cleans up) and the container's PID 1, created by clone3() already in its namespaces and its cgroup;
what PID 1 runs from there to the payload's execve is hutch.container.pid1.

With a user namespace (the default), the supervisor builds the tree itself in a mount namespace of
its own (M1), then steps back into the host's (see _build_userns). PID 1, in a new user namespace,
copies M1 into a mount namespace its user namespace owns: the copied mounts are locked, so the /proc
masks cannot be unmounted. The supervisor opens the console pty itself.
  1. PID 1 waits on a 'go' pipe until the tree is complete and M1 pivoted into the container's root;
  2. PID 1 writes "E <message>" on the status pipe if it fails before execve; EOF means it exec'd.

Without one (--private-users=no), PID 1 builds the tree in its own mount namespace, as before:
  1. PID 1 writes "C <ptmx-fd>" once the console exists (-1 without one), or "E <message>" on failure;
  2. the supervisor copies the pty master out of PID 1 (pidfd_getfd) and closes the ack pipe;
  3. PID 1 waits for that EOF before closing its descriptors and calling execve;
  4. PID 1 writes "E <message>" if it fails before execve; EOF on the status pipe means it exec'd.
"""

from __future__ import annotations

import gc
import select
import sys
import time

from hutch.container import cgroup_setup, console, pid1, plan, prepare, rootfs, status
from hutch.container.prepare import Prepared
from hutch.errors import SetupError
from hutch.linux import libc, sig
from hutch.linux import posixos as os
from hutch.settings.values import signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

REBOOT = -1
# The supervisor's memory counts against the machine's MemoryMax= where systemd runs it (the scope holds
# it beside the payload), and its Python heap outweighs a guest's small processes: the kernel's OOM
# killer chose it over the guest's biggest, and the whole machine went with it (seen in the VM lane, a
# 64M dd in a 32M machine). So it is exempt; PID 1 starts with the value we were started with.
OOM_EXEMPT = "-1000"


def _set_oom_score_adj(value: str) -> bool:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(value)
        return True
    except OSError:  # no CAP_SYS_RESOURCE (a host that is itself a container): the kernel's default
        return False


def _chown_instead(prep: Prepared) -> bool:
    """Ownership 'auto' where the image cannot be idmapped: its files shifted instead. Only on a file
    system that has no idmapped mounts: an EINVAL of any other cause is reported as it is, and the
    image left as it was."""
    from hutch.container import userns

    assert prep.uid_range is not None
    if not userns.lacks_idmap(prep.tree):
        return False
    userns.chown_image(prep.tree, prep.uid_range.base)
    prep.ownership = "chown"
    return True


def _build_userns(prep: Prepared, status_w: int) -> tuple[int, int, int]:
    """The supervisor's part with a user namespace; returns (pid1, pidfd, console master or -1).

    We step into a new mount namespace (M1) of our own, build the container's tree there, /proc and its
    masks included, clone PID 1 into a new user namespace and pivot M1 into the container's root. PID 1
    then copies M1 into a mount namespace its user namespace owns: the kernel locks every copied mount,
    so the container cannot unmount a mask or remount /proc/sys read-write. We step back into the host's
    mount, IPC and network namespaces through fds kept from before, whatever happens.
    """
    s = prep.settings
    assert prep.uid_range is not None
    keep = {
        "mnt": os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC),
        "ipc": os.open("/proc/self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC),
        "net": os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC),
    }
    cwd = os.open(".", libc.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    cg_fd = os.open(prep.cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if prep.cgroup else -1
    pid = pidfd = master = -1
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWNS)
        # PID 1 shares M1 until we pivot it away from the host's files: it must inherit every module it
        # needs rather than load one later.
        pid1.preload_modules(prep)
        flags = libc.CLONE_NEWUSER | libc.CLONE_NEWPID | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC
        if s.private_network:
            flags |= libc.CLONE_NEWNET
        elif prep.netns_fd >= 0:
            # PID 1's user namespace could not join a namespace the host's owns: it inherits ours.
            libc.setns(prep.netns_fd, libc.CLONE_NEWNET)
        back = cgroup_setup.lend(prep)
        try:
            try:
                pid, pidfd = libc.clone3_fork(flags, cg_fd)
            except OSError:
                if cg_fd < 0:
                    raise
                pid, pidfd = libc.clone3_fork(flags)  # no CLONE_INTO_CGROUP here: PID 1 joins by itself
                if pid == 0:
                    cgroup_setup.join(prep)
        finally:
            if pid != 0:  # PID 1 keeps what it was born in (-1: no PID 1, give back too)
                cgroup_setup.give_back(prep, back)
        if pid == 0:
            try:
                os.close(go_w)
                pid1.userns_child(prep, status_w, go_r)
            except BaseException as e:
                status.report(status_w, e)
            os._exit(1)
        os.close(go_r)
        if prep.link is not None or prep.net_extra is not None:
            from hutch.container import network

            if prep.link is not None:
                network.setup_host(prep.link, pid)
            if prep.net_extra is not None:
                network.setup_extra(prep.net_extra, pid)
        for f in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{f}", "w") as m:
                m.write(prep.uid_range.map_line(gids=f == "gid_map"))
        os.write(go_w, b"m")
        ctx = plan.Context(prep.root)
        ctx.userns_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        ctx.idmap = prep.ownership == "map"
        if prep.chown_fallback:
            ctx.chown_instead = lambda: _chown_instead(prep)
        rootfs.OWNER = prep.uid_range.base
        try:
            plan.execute(prep.outer_ops, ctx)
            # mqueue and sysfs show the IPC and network namespaces of whoever mounts them: join the
            # container's for a moment; /proc takes the PID namespace as an option.
            libc.setns(pidfd, libc.CLONE_NEWIPC | (libc.CLONE_NEWNET if s.private_network else 0))
            if prep.link is not None:
                network.setup_inside(prep.link)
            ctx.pidns_fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            try:
                plan.execute(prep.inner_ops[:1], ctx)
            except OSError:
                _proc_by_helper(prep, ctx, pidfd)
            plan.execute(prep.inner_ops[1:], ctx)
            # devpts gives new slaves to the container's root (uid=): the pty is ours to open.
            master = console.mount_console(ctx, prep.console)
            prep.notify_fd = ctx.notify_fd
            plan.PivotRoot().execute(ctx)
        finally:
            rootfs.OWNER = None
            for fd in (ctx.userns_fd, ctx.pidns_fd, ctx.root_fd):
                if fd >= 0:
                    os.close(fd)
        os.write(go_w, b"g")
    except BaseException:
        if pid > 0:
            os.kill(pid, sig.SIGKILL)
            os.waitpid(pid, 0)
            os.close(pidfd)
        if master >= 0:
            os.close(master)
        raise
    finally:
        libc.setns(keep["mnt"], libc.CLONE_NEWNS)
        libc.setns(keep["ipc"], libc.CLONE_NEWIPC)
        libc.setns(keep["net"], libc.CLONE_NEWNET)
        os.fchdir(cwd)
        for fd in (*keep.values(), cwd, cg_fd, go_w):
            if fd >= 0:
                os.close(fd)
    return pid, pidfd, master


def _proc_by_helper(prep: Prepared, ctx: plan.Context, pidfd: int) -> None:
    """No pidns= for procfs (before Linux 6.15): a helper inside the PID namespace mounts /proc."""
    ctx.pidns_fd = -1
    r, w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:
        try:
            libc.setns(pidfd, libc.CLONE_NEWPID)
            inner = os.fork()  # setns(CLONE_NEWPID) only applies to children
            if inner == 0:
                try:
                    plan.execute(prep.inner_ops[:1], ctx)
                    os._exit(0)
                except BaseException as e:
                    status.report(w, e)
                    os._exit(1)
            os._exit(1 if os.waitpid(inner, 0)[1] else 0)
        except BaseException as e:
            status.report(w, e)
            os._exit(1)
    os.close(w)
    failed = os.waitpid(helper, 0)[1] != 0
    text = status.drain(r)
    os.close(r)
    if failed:
        raise status.error_from(text, "Failed to mount /proc")


def _namespace_flags(prep: Prepared) -> int:
    flags = libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWPID
    if prep.settings.private_network:
        flags |= libc.CLONE_NEWNET
    return flags


def _spawn(prep: Prepared, status_w: int, ack_r: int, close_in_child: tuple[int, ...]) -> tuple[int, int]:
    """Create PID 1; returns (pid, pidfd) in the supervisor and never returns in the child."""
    cg_fd = -1
    if prep.cgroup:
        cg_fd = os.open(prep.cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    back = cgroup_setup.lend(prep)
    pid = -1
    try:
        pid, pidfd = libc.clone3_fork(_namespace_flags(prep), cg_fd)
        cloned = True
    except OSError:
        # Kernels before 5.7 (no CLONE_INTO_CGROUP) or a seccomp filter hiding clone3: fork the classic way.
        libc.unshare(libc.CLONE_NEWPID)
        pid = os.fork()
        pidfd = os.pidfd_open(pid) if pid else -1
        cloned = False
    finally:
        if cg_fd >= 0:
            os.close(cg_fd)
        if pid != 0:  # PID 1 keeps what it was born in
            cgroup_setup.give_back(prep, back)
    if pid == 0:
        try:
            for fd in close_in_child:
                os.close(fd)
            pid1.container_child(
                prep, status_w, ack_r, 0 if cloned else _namespace_flags(prep) & ~libc.CLONE_NEWPID
            )
        except BaseException as e:
            status.report(status_w, e)
        os._exit(1)
    return pid, pidfd


def _ready_fd() -> int:
    """The pipe `hutch start` passed (-1: none); anything else is refused before a process starts."""
    value = os.getenv("HUTCH_READY_FD")
    if not value:
        return -1
    try:
        fd = int(value)
        if fd < 3:
            raise ValueError
        os.set_inheritable(fd, False)  # fails on a descriptor that is not open
    except (ValueError, OSError):
        raise SetupError(
            f"$HUTCH_READY_FD={value!r} is not an open file descriptor.",
            "it is set by 'hutch start' for its supervisor; unset it",
        ) from None
    return fd


class Supervisor:
    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        self.name = prep.name
        self.pid1 = -1
        self.status: int | None = None
        self.kill_sent = False
        self.pending: list[int] = []
        self.errors: list[str] = []
        self.saved_tty: list[Any] | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # `hutch start` waits on this pipe for "READY" (or EOF: failed); see hutch.machines.control.
        self.ready_fd = _ready_fd()
        self.claim: Any = None
        self.masqueraded = False
        self.machined = False  # registered with systemd-machined (hutch.container.systemd)
        self.notified = False  # READY=1 sent to the service manager that runs us
        self.since = time.time_ns() // 1000
        self.out: Any = None
        self.slim = False
        self.handoff = (-1, -1, -1, -1)  # PID 1's console master and slave, status pipe, pidfd
        self.oom_score_adj = ""  # what we were started with, while we are exempt

    def _on_signal(self, signo: int, _frame: object) -> None:
        self.pending.append(signo)

    def run(self) -> int:
        prep = self.prep
        s = prep.settings
        # Non-dumpable: no core dumps of our memory and no ptrace or /proc/PID/fd access for anyone but
        # the host's root, even from processes that end up with our UID.
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        with open("/proc/self/oom_score_adj") as f:
            started_with = f.read().strip()
        if _set_oom_score_adj(OOM_EXEMPT):
            self.oom_score_adj = started_with
        sig.set_wakeup_fd(self.wake_w)
        for signo in (sig.SIGCHLD, sig.SIGTERM, sig.SIGINT, sig.SIGWINCH, sig.SIGHUP):
            sig.signal(signo, self._on_signal)
        if not s.quiet:
            msg = f"Spawning container {self.name} on {prep.image}."
            if prep.console == "interactive":
                msg += "\nPress Ctrl-] three times within 1s to kill container."
            print(msg, file=sys.stderr, flush=True)
        if s.register:
            from hutch.machines import registry

            self.claim = registry.Claim(prep.state_dir, self.name)
        log = os.getenv("HUTCH_CONSOLE_LOG")
        if log:
            self.out = console.RotatingLog(log)
        return self.loop(resumed=False)

    def loop(self, resumed: bool) -> int:
        """Run the container until it exits for good, again after each reboot. RESUMED: PID 1 already
        ran and exited under hutch.container.monitor; finish that run."""
        prep = self.prep
        s = prep.settings
        try:
            while True:
                if not resumed:
                    cgroup_setup.create(prep)
                try:
                    rc = self._run_once(resumed)
                    resumed = False
                finally:
                    cgroup_setup.remove(prep)
                    if prep.net_extra is not None:
                        from hutch.container import network

                        network.teardown_extra(prep.net_extra)
                if rc != REBOOT:
                    return rc
                if prep.link is not None:
                    from hutch.container import network

                    # The next boot makes the pair again. At a final stop the kernel removes it with
                    # the machine's namespace instead: deleting it ourselves waits 15-35 ms for an
                    # RCU grace period, which was most of what -n cost a start-stop.
                    network.teardown(prep.link)
                if not s.quiet:
                    print(f"Container {self.name} is being rebooted.", file=sys.stderr, flush=True)
        finally:
            self._restore_tty()
            if self.ready_fd >= 0:
                os.close(self.ready_fd)
                self.ready_fd = -1
            # The name is given up last: whoever waits for the machine to stop (poweroff --wait) finds
            # its image, addresses and loop devices free again once it has.
            try:
                prepare.cleanup(prep)
            finally:
                if self.claim is not None:
                    self.claim.release()

    def _run_once(self, resumed: bool = False) -> int:
        prep = self.prep
        if not resumed:
            self.status = None
            self.kill_sent = False
            self.errors = []
            self.handoff = (-1, -1, -1, -1)
        try:
            if not resumed:
                self._start_once()
                master, _slave, status_r, _pidfd = self.handoff
                self._forward(master, status_r)
        finally:
            for f in (*self.handoff, prep.notify_fd):
                if f >= 0:
                    os.close(f)
            prep.notify_fd = -1
            if self.machined:
                from hutch.container import systemd

                systemd.unregister(self.name)
                self.machined = False
            if self.masqueraded:
                from hutch.container import network

                network.unmasquerade(self.name)
                self.masqueraded = False
            if prep.relay_pid > 0:
                try:
                    os.kill(prep.relay_pid, 9)
                except ProcessLookupError:
                    pass
                prep.relay_pid = -1
            if prep.dhcp_sock is not None or prep.dns_forwarder is not None or prep.router6 is not None:
                from hutch.container import linkservices

                linkservices.close_all(prep)
        return self._result()

    def _start_once(self) -> None:
        """Start PID 1; its descriptors go to self.handoff (master, slave, status_r, pidfd) as they
        open, for _run_once to close whatever happens."""
        prep = self.prep
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        self.handoff = (-1, -1, status_r, -1)
        # Written back by us, privileged, before PID 1 exists: the kernel lets an unprivileged process
        # lower its value only as far as the last one a privileged writer set, and a guest must not be
        # able to make itself exempt.
        if self.oom_score_adj:
            _set_oom_score_adj(self.oom_score_adj)
        try:
            if prep.uid_range is not None:
                try:
                    self.pid1, pidfd, master = _build_userns(prep, status_w)
                finally:
                    os.close(status_w)
            else:
                self.pid1, pidfd, master = self._start_plain(status_r, status_w)
        finally:
            if self.oom_score_adj:
                _set_oom_score_adj(OOM_EXEMPT)
        self.handoff = (master, -1, status_r, pidfd)
        if prep.settings.network_masquerade and prep.link is not None:
            from hutch.container import network

            network.masquerade(prep.link, self.name)
            self.masqueraded = True
        if prep.port_listeners:
            from hutch.container import ports

            prep.relay_pid = ports.start_relay(prep.port_listeners, prep.link.container_ip)
        if prep.link is not None:
            from hutch.container import linkservices

            linkservices.open_all(prep)
        self._register()
        # `hutch spawn` starts with the cyclic collector off (hutch.preload, hutch.cli.main); from here
        # on this process may supervise for months. What exists now (modules, the plan) lives as long
        # as it does: frozen, or the first collection after enable() walks all of it (~2 ms here,
        # between PID 1's start and its first forwarded byte).
        gc.freeze()
        gc.enable()
        if master >= 0:
            # Holding a slave ourselves keeps reads on the master from failing with EIO while PID 1
            # has not opened /dev/console yet.
            import fcntl

            slave = fcntl.ioctl(master, console.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            self.handoff = (master, slave, status_r, pidfd)

    def _register(self) -> None:
        prep = self.prep
        if prep.unit_cgroup is not None and prep.settings.register:
            from hutch.container import systemd

            ifindices = []
            if prep.link is not None:
                from hutch.linux import rtnl

                ifindices = [i for i in (rtnl.index(prep.link.ifname),) if i]
            self.machined = systemd.register(self.name, prep.uuid, self.pid1, prep.image, ifindices)
        if self.claim is not None:
            from hutch.container import record

            pending = self.ready_fd >= 0 or self.prep.wait_ready
            self.claim.write(**record.fields(self.prep, self.pid1, self.since, pending))

    def _ready(self) -> None:
        """The machine is up: a systemd PID 1 said READY=1, or any other PID 1 is running."""
        if self.ready_fd >= 0:
            try:
                os.write(self.ready_fd, b"READY\n")
            except OSError:
                pass  # `hutch start` gave up waiting
            os.close(self.ready_fd)
            self.ready_fd = -1
        if self.claim is not None and self.claim.fields.get("state") != "running":
            self.claim.write(state="running", ready=time.time_ns() // 1000)  # for `hutch analyze`
        if not self.notified and os.getenv("NOTIFY_SOCKET"):
            from hutch.container import systemd

            systemd.notify(b"READY=1\nSTATUS=Container running.")  # hutch@.service is Type=notify
            self.notified = True
        if self.claim is not None and self.out is not None:
            self.slim = True  # a long-lived, detached supervisor: _forward hands over to the monitor

    def _start_plain(self, status_r: int, status_w: int) -> tuple[int, int, int]:
        """Without a user namespace PID 1 builds its own tree and hands us the console's master."""
        ack_r, ack_w = os.pipe2(os.O_CLOEXEC)
        pid, pidfd = _spawn(self.prep, status_w, ack_r, (status_r, ack_w))
        self.pid1 = pid
        if self.prep.link is not None or self.prep.net_extra is not None:
            from hutch.container import network

            if self.prep.link is not None:
                network.setup_host(self.prep.link, pid)
                network.setup_inside_of(self.prep.link, pid)
            if self.prep.net_extra is not None:
                network.setup_extra(self.prep.net_extra, pid)
        os.close(status_w)
        os.close(ack_r)
        try:
            line = status.read_line(status_r)
            if not line.startswith("C "):
                self._reap_all(block_for=pid)
                self._fail_from(line + status.drain(status_r))
            fd, notify = (int(n) for n in line.split()[1:3])
            master = libc.pidfd_getfd(pidfd, fd) if fd >= 0 else -1
            if notify >= 0:
                self.prep.notify_fd = libc.pidfd_getfd(pidfd, notify)
        except BaseException:
            os.close(pidfd)
            raise
        finally:
            os.close(ack_w)
        return pid, pidfd, master

    def _fail_from(self, text: str) -> None:
        raise status.error_from(text)

    def _reap_all(self, block_for: int = -1) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block_for > 0 else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == block_for:
                block_for = -1
            if pid == self.pid1:
                self.status = status

    def _forward(self, master: int, status_r: int) -> None:
        mode = self.prep.console
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        poller.register(status_r, select.POLLIN)
        notify = self.prep.notify_fd
        if notify >= 0:
            poller.register(notify, select.POLLIN)
        services: dict[int, Callable[[], None]] = {}
        if self.prep.link is not None:
            from hutch.container import linkservices

            services = linkservices.handlers(self.prep)
        for fd in services:
            poller.register(fd, select.POLLIN)
        out = self.out.write if self.out is not None else (lambda data: console.write_all(1, data))
        interactive = mode == "interactive" and master >= 0
        if master >= 0 and mode in ("interactive", "read-only"):
            poller.register(master, select.POLLIN)
        if interactive:
            self.saved_tty = console.raw_tty(0)
            console.copy_winsize(0, master)
            poller.register(0, select.POLLIN)
        hot = console.Hotkey()
        status_open = True
        out_ok = True
        self._reap_all()
        while self.status is None:
            if self.slim and not status_open and not self.errors:
                from hutch.container import handoff

                self.slim = False
                handoff.to_monitor(self)  # returns only if the monitor could not be started
            for fd, _ev in poller.poll():
                if fd == self.wake_r:
                    self._handle_signals(master)
                elif fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if out_ok and data:
                        out_ok = out(data)
                elif fd == 0:
                    data = os.read(0, 4096)
                    if not data:
                        poller.unregister(0)
                        continue
                    if hot.feed(data, time.monotonic()):
                        print(f"\r\nContainer {self.name} terminated by Ctrl-].\r", file=sys.stderr)
                        self._kill(9)
                        continue
                    console.write_all(master, data)
                elif fd == status_r and status_open:
                    data = os.read(status_r, 4096)
                    if data:
                        self.errors.append(data.decode(errors="surrogateescape"))
                    else:
                        poller.unregister(status_r)
                        status_open = False
                        if not self.prep.wait_ready and not self.errors:
                            self._ready()  # PID 1 exec'd, and no READY=1 is awaited
                elif fd in services:
                    services[fd]()
                elif fd == notify:
                    try:
                        msg = os.read(notify, 4096)
                    except OSError:
                        msg = b""
                    if b"READY=1" in msg.split(b"\n"):
                        self._ready()
        if status_open:
            self.errors.append(status.drain(status_r))
        if master >= 0 and mode in ("interactive", "read-only") and out_ok:
            os.set_blocking(master, False)
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data or not out(data):
                    break

    def _handle_signals(self, master: int) -> None:
        try:
            while os.read(self.wake_r, 256):
                pass
        except BlockingIOError:
            pass
        pending, self.pending = self.pending, []
        for signo in pending:
            if signo == sig.SIGCHLD:
                self._reap_all()
            elif signo in (sig.SIGTERM, sig.SIGINT, sig.SIGHUP):
                # Again, or to an init that would drop its kill signal (busybox's and SIGRTMIN+3, when
                # systemd stops the machine's scope): kill it now rather than wait for someone to.
                if self.kill_sent or self.prep.kill_signal == sig.SIGKILL or not self._takes_kill_signal():
                    self._kill(sig.SIGKILL)
                else:
                    self._kill(self.prep.kill_signal)
                    self.kill_sent = True
            elif signo == sig.SIGWINCH and master >= 0:
                console.copy_winsize(0, master)

    def _host_signal(self, signo: int) -> int:
        if signo >= 32:  # as PID 1 knows it: an init under qemu-user numbers them otherwise
            from hutch.container import emulation

            return emulation.host_signal(self.pid1, signo)
        return signo

    def _takes_kill_signal(self) -> bool:
        if self.pid1 <= 0 or self.status is not None:
            return True
        return sig.taken(self.pid1, self._host_signal(self.prep.kill_signal))

    def _kill(self, signo: int) -> None:
        if self.pid1 > 0 and self.status is None:
            try:
                os.kill(self.pid1, self._host_signal(signo))
            except ProcessLookupError:
                pass

    def _restore_tty(self) -> None:
        if self.saved_tty is not None:
            console.restore_tty(0, self.saved_tty)
            self.saved_tty = None

    def _result(self) -> int:
        self._restore_tty()
        err = "".join(self.errors).strip()
        if err:
            self._fail_from(err)
        status = self.status if self.status is not None else 0
        quiet = self.prep.settings.quiet
        if os.WIFEXITED(status):
            rc = os.WEXITSTATUS(status)
            if not quiet:
                if rc == 0:
                    print(f"Container {self.name} exited successfully.", file=sys.stderr)
                else:
                    print(f"Container {self.name} failed with error code {rc}.", file=sys.stderr)
            return rc
        signo = os.WTERMSIG(status)
        # A PID namespace's init that calls reboot(2) is killed by the kernel: SIGINT for halt and
        # poweroff, SIGHUP for restart.
        if signo == sig.SIGINT:
            if not quiet:
                print(f"Container {self.name} has been shut down.", file=sys.stderr)
            return 0
        if signo == sig.SIGHUP:
            if not self.kill_sent:
                return REBOOT
            # Told to stop, and the init rebooted: systemd's stop of the scope sends every process
            # SIGTERM, which busybox init takes as reboot. The stop wins.
            if not quiet:
                print(f"Container {self.name} has been shut down.", file=sys.stderr)
            return 0
        if not quiet:
            print(f"Container {self.name} terminated by signal {signal_name(signo)}.", file=sys.stderr)
        return 1


def run(prep: Prepared) -> int:
    if prep.settings.debug:
        ops = prep.outer_ops + prep.inner_ops + [plan.PivotRoot()]
        print("Mount plan:\n" + plan.describe(ops), file=sys.stderr, flush=True)
    try:
        sup = Supervisor(prep)
    except BaseException:
        prepare.cleanup(prep)
        raise
    return sup.run()
