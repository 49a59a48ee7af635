"""-p/--port=[tcp:|udp:]HOST[:CONTAINER]: forwarding from the host to the machine's address.

Upstream forwards with DNAT rules, which do not see connections to the host's own localhost (its issue
#6106). hutch listens itself, on [::]:HOST, dual-stack, so IPv4 and IPv6, other hosts and the host's
localhost all reach it, and relays each TCP connection, or each UDP peer's datagrams (a session per
peer address, dropped after UDP_IDLE seconds without traffic, like conntrack's), to the machine's host0
address. The sockets are bound before the machine starts (a port in use is an error, not a
half-started machine) and kept by the supervisor until it ends, so a reboot keeps them; the relay runs
in a process of its own that dies with the supervisor.
"""

from __future__ import annotations

from hutch.errors import SetupError
from hutch.linux import posixos as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any


Listener = tuple["socket.socket", int, str]  # the host's socket, the container's port, tcp or udp


def listen(ports: list[tuple[str, int, int]]) -> list[Listener]:
    import errno
    import socket

    out: list[Listener] = []
    try:
        for proto, host, inner in ports:
            kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
            s = socket.socket(socket.AF_INET6, kind | socket.SOCK_CLOEXEC)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if proto == "tcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("::", host))
            except OSError as e:
                s.close()
                if e.errno == errno.EADDRINUSE:
                    raise SetupError(
                        f"Port {proto}:{host} is already in use on the host.", "choose another with -p"
                    ) from None
                raise SetupError(f"Failed to listen on port {proto}:{host}: {e.strerror}.") from None
            if proto == "tcp":
                s.listen(64)
            out.append((s, inner, proto))
    except BaseException:
        for s, _, _ in out:
            s.close()
        raise
    return out


def _pump(a: socket.socket, b: socket.socket) -> None:
    import select

    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [])
            for s in ready:
                data = s.recv(65536)
                other = b if s is a else a
                if not data:
                    try:
                        other.shutdown(1)  # SHUT_WR: pass the half-close on
                    except OSError:
                        pass
                    socks.remove(s)
                    if not socks:
                        return
                    continue
                other.sendall(data)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


UDP_IDLE = 60.0


def _serve(listeners: list[Listener], address: str) -> None:
    import select
    import socket
    import threading
    import time

    by_fd = {s.fileno(): (s, inner, proto) for s, inner, proto in listeners}
    # UDP: one connected socket towards the machine per peer, so replies find their way back.
    sessions: dict[tuple[int, tuple[Any, ...]], socket.socket] = {}
    back: dict[int, tuple[socket.socket, tuple[Any, ...], socket.socket]] = {}
    last: dict[int, float] = {}
    while True:
        ready, _, _ = select.select([*by_fd, *back], [], [], UDP_IDLE / 4)
        now = time.monotonic()
        for fd in ready:
            if fd in back:
                lsock, peer, up = back[fd]
                try:
                    lsock.sendto(up.recv(65536), peer)
                except OSError:
                    pass
                last[fd] = now
                continue
            lsock, inner, proto = by_fd[fd]
            if proto == "udp":
                try:
                    data, peer = lsock.recvfrom(65536)
                except OSError:
                    continue
                session = sessions.get((fd, peer))
                if session is None:
                    try:
                        session = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                        session.connect((address, inner))
                    except OSError:
                        continue
                    sessions[(fd, peer)] = session
                    back[session.fileno()] = (lsock, peer, session)
                up = session
                try:
                    up.send(data)
                except OSError:
                    pass
                last[up.fileno()] = now
                continue
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            try:
                conn_up = socket.create_connection((address, inner), timeout=10)
                conn_up.settimeout(None)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, conn_up), daemon=True).start()
        for ufd, seen in list(last.items()):
            if now - seen > UDP_IDLE:
                lsock, peer, up = back.pop(ufd)
                del sessions[(lsock.fileno(), peer)]
                del last[ufd]
                up.close()


def start_relay(listeners: list[Listener], address: str) -> int:
    """Fork the relay process; returns its PID. It dies with the supervisor (PDEATHSIG), which keeps
    the listening sockets for the next run."""
    from hutch.linux import libc

    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(libc.PR_SET_PDEATHSIG, 9)
            from hutch.linux.fsutil import close_other_fds

            close_other_fds({s.fileno() for s, _, _ in listeners})
            _serve(listeners, address)
        finally:
            os._exit(0)
    return pid
