"""The detached supervisor's handover to the slim monitor and back (see hutch.container.monitor).

`to_monitor` exec()s the full supervisor into the monitor once its machine is up: the Supervisor,
pickled, waits in a memfd; every descriptor stays open across the exec. `resume` is what the monitor
exec()s back into when PID 1 has exited: it unpickles the Supervisor and finishes the run as
Supervisor.loop would have. Not on `hutch spawn`'s start-up path: imported at the handover.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]
import os
import sys

from hutch.errors import HutchError
from hutch.linux import libc, sig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hutch.container.launch import Supervisor
    from hutch.container.prepare import Prepared


def to_monitor(sup: Supervisor) -> None:
    """Exec into hutch.container.monitor for the rest of this run: same PID, children and
    descriptors. Returns only if that could not be done; SUP then goes on supervising."""
    import _socket
    import copyreg
    import pickle
    import socket

    from hutch.container import monitor

    copyreg.pickle(socket.socket, _reduce_socket)
    copyreg.pickle(_socket.socket, _reduce_socket)  # the DHCP server's, made without `socket`
    try:
        state = os.memfd_create("hutch-supervisor", 0)
    except OSError:
        return
    try:
        os.write(state, pickle.dumps(sup, pickle.HIGHEST_PROTOCOL))  # a memfd takes it whole
        os.lseek(state, 0, os.SEEK_SET)
        args = {
            "pid1": sup.pid1,
            "master": sup.handoff[0],
            "notify": sup.prep.notify_fd,
            "dhcp": _lease_args(sup.prep),
            "dns": _dns_args(sup.prep),
            "router6": _router6_args(sup.prep),
            "kill_signal": sup.prep.kill_signal,
            "kill_sent": sup.kill_sent,
            "log": {
                "path": sup.out.path,
                "fd": sup.out.fd,
                "cap": sup.out.cap,
                "size": sup.out.size,
            },
            "resume": {"state": state},
            "path": [p for p in sys.path if p],
        }
        sys.stdout.flush()
        sys.stderr.flush()
        _keep_fds_across_exec(True)
        argv = monitor.interpreter_argv(monitor.MONITOR_CODE, args)
        _signal.pthread_sigmask(_signal.SIG_BLOCK, monitor.HANDLED)
        os.execv(argv[0], argv)
    except (OSError, pickle.PicklingError, TypeError, AttributeError, ValueError) as e:
        # The machine must not pay for a failed optimisation: this process goes on supervising it.
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, monitor.HANDLED)
        _keep_fds_across_exec(False)
        print(f"hutch: Failed to start the slim supervisor, staying as we are: {e}", file=sys.stderr)
    os.close(state)


def _router6_args(prep: Prepared) -> dict[str, Any] | None:
    r = prep.router6
    if r is None:
        return None
    return {
        "ra": r.ra.fileno(),
        "dhcp": r.dhcp.fileno(),
        "ifindex": r.ifindex,
        "address": r.address,
        "mac": r.mac,
        "duid": r.server_duid,
    }


def _dns_args(prep: Prepared) -> dict[str, Any] | None:
    fw = prep.dns_forwarder
    if fw is None:
        return None
    return {
        "listen": fw.listen.fileno(),
        "upstream": fw.upstream.fileno(),
        "servers": fw.servers,
        "state_dir": fw.state_dir,
    }


def _lease_args(prep: Prepared) -> dict[str, Any] | None:
    if prep.dhcp_sock is None:
        return None
    lease = prep.lease
    return {
        "fd": prep.dhcp_sock.fileno(),
        "mac": lease.mac,
        "address": lease.address,
        "server": lease.server,
        "prefix": lease.prefix,
        "dns": lease.dns,
    }


def _reduce_socket(sock: Any) -> tuple[Any, tuple[int, int, int, int]]:
    return _socket_from_fd, (int(sock.family), int(sock.type), sock.proto, sock.fileno())


def _socket_from_fd(family: int, type_: int, proto: int, fd: int) -> Any:
    import socket

    return socket.socket(family, type_, proto, fd)  # either kind comes back as socket.socket


def _keep_fds_across_exec(keep: bool) -> None:
    """The supervisor's descriptors, the registry lock among them, outlive its exec()s into the monitor
    and back; everything it opens is O_CLOEXEC otherwise."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, keep)
            except OSError:
                pass  # the directory listdir read


def resume(a: dict[str, Any]) -> None:
    """The full supervisor again, exec'd by the monitor once PID 1 has exited: finish that run (reboot,
    or tear down) as Supervisor.loop would have."""
    import pickle

    from hutch.container import monitor

    with os.fdopen(a["state"], "rb") as f:
        sup: Supervisor = pickle.load(f)
    _keep_fds_across_exec(False)
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    monitor.name_self()
    sup.status = a["status"]
    sup.kill_sent = a["kill_sent"]
    sup.out.fd = a["log_fd"]
    sup.out.size = a["log_size"]
    sig.set_wakeup_fd(sup.wake_w)
    for signo in (sig.SIGCHLD, sig.SIGTERM, sig.SIGINT, sig.SIGWINCH, sig.SIGHUP):
        sig.signal(signo, sup._on_signal)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, monitor.HANDLED)
    try:
        rc = sup.loop(resumed=True)
    except HutchError as e:
        from hutch.cli import fail

        rc = fail("hutch spawn", e)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
