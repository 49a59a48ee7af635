"""-p/--port=[tcp:]HOST[:CONTAINER]: TCP forwarding from the host to the machine's address.

Upstream forwards with DNAT rules, which do not see connections to the host's own localhost (its issue
#6106). hutch listens itself, on [::]:HOST, dual-stack, so IPv4 and IPv6, other hosts and the host's
localhost all reach it, and relays each connection to the machine's host0 address. The listening
sockets are bound before the machine starts (a port in use is an error, not a half-started machine);
the relay runs in a process of its own that dies with the supervisor, which closes the ports.
"""

from __future__ import annotations

import os

from hutch.errors import SetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket


def listen(ports: list[tuple[str, int, int]]) -> list[tuple[socket.socket, int]]:
    import errno
    import socket

    out: list[tuple[socket.socket, int]] = []
    try:
        for _proto, host, inner in ports:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("::", host))
            except OSError as e:
                s.close()
                if e.errno == errno.EADDRINUSE:
                    raise SetupError(
                        f"Port {host} is already in use on the host.", "choose another with -p"
                    ) from None
                raise SetupError(f"Failed to listen on port {host}: {e.strerror}.") from None
            s.listen(64)
            out.append((s, inner))
    except BaseException:
        for s, _ in out:
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


def _serve(listeners: list[tuple[socket.socket, int]], address: str) -> None:
    import select
    import socket
    import threading

    by_fd = {s.fileno(): (s, inner) for s, inner in listeners}
    while True:
        ready, _, _ = select.select(list(by_fd), [], [])
        for fd in ready:
            lsock, inner = by_fd[fd]
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            try:
                up = socket.create_connection((address, inner), timeout=10)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, up), daemon=True).start()


def start_relay(listeners: list[tuple[socket.socket, int]], address: str) -> int:
    """Fork the relay process; returns its PID. It dies with the supervisor (PDEATHSIG)."""
    from hutch.linux import libc

    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(libc.PR_SET_PDEATHSIG, 9)
            from hutch.linux.fsutil import close_other_fds

            close_other_fds({s.fileno() for s, _ in listeners})
            _serve(listeners, address)
        finally:
            os._exit(0)
    for s, _ in listeners:
        s.close()
    return pid
