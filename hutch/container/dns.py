"""A DNS forwarder for one machine, on the host side of its veth (or its zone's bridge).

The machine's resolv.conf (and its DHCP lease) name the host's address on that link. Queries for the
names of the host's running machines (`NAME` or `NAME.machine`) are answered from hutch's registry,
so machines on a zone reach each other by name and a machine resolves its own hostname at once; the
rest go to the host's own nameservers from the host's network namespace (a loopback stub such as
systemd-resolved's 127.0.0.53 included), so DNS works without the host forwarding IP for the machine.
Upstream leaves this to systemd-resolved and networkd on the host; here the machine's supervisor (and
the slim monitor after it) keeps the two sockets in its poll loop, as it does the DHCP server's.

Only what a stub resolver sends is handled: one question per query, over UDP. A truncated answer
passes through with its TC bit; the client's retry over TCP then fails, as it would with no server.
Loaded at the first query.
"""

from __future__ import annotations

import _socket
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PORT = 53
A, AAAA, IN = 1, 28, 1
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
TTL = 5  # machines come and go: a resolver must not keep an answer long
PENDING_MAX = 256
PENDING_AGE = 10.0  # seconds a forwarded query waits for its answer
SO_REUSEPORT, IP_FREEBIND = 15, 15


class Forwarder:
    __slots__ = ("counter", "listen", "pending", "servers", "state_dir", "upstream")

    def __init__(self, listen: Any, upstream: Any, servers: list[str], state_dir: str) -> None:
        self.listen = listen
        self.upstream = upstream
        self.servers = servers  # as the upstream socket sends to them: IPv6, IPv4 ones mapped
        self.state_dir = state_dir
        self.pending: dict[int, tuple[Any, bytes, float]] = {}  # new ID -> (client, its ID, when)
        self.counter = 0


def open_sockets(address: str, servers: list[str]) -> tuple[Any, Any]:
    """The socket the machine sends to (ADDRESS:53 on the host side: every member of a zone binds
    it, and any of them may answer) and the one that talks to SERVERS."""
    listen = _socket.socket(
        _socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
    )
    try:
        listen.setsockopt(_socket.SOL_SOCKET, SO_REUSEPORT, 1)
        listen.setsockopt(_socket.IPPROTO_IP, IP_FREEBIND, 1)
        listen.bind((address, PORT))
        upstream = _socket.socket(
            _socket.AF_INET6, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
        )
    except BaseException:
        listen.close()
        raise
    upstream.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
    return listen, upstream


def upstream_servers(resolv_conf: str) -> list[str]:
    """The nameservers of the host's resolv.conf text, as an IPv6 socket addresses them."""
    out = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if words[:1] != ["nameserver"] or len(words) < 2:
            continue
        server = words[1].split("%")[0]
        for family in (_socket.AF_INET, _socket.AF_INET6):
            try:
                _socket.inet_pton(family, server)
            except OSError:
                continue
            out.append(f"::ffff:{server}" if family == _socket.AF_INET else server)
            break
    return out


def _question(packet: bytes) -> tuple[str, int, int, int] | None:
    """(name, type, class, end offset) of the query's one question, or None if it is not a query."""
    if len(packet) < 12:
        return None
    flags, qdcount = struct.unpack_from("!HH", packet, 2)
    if flags & 0x8000 or (flags >> 11) & 0xF != 0 or qdcount != 1:
        return None  # an answer, an opcode other than QUERY, or not one question
    labels = []
    i = 12
    while True:
        if i >= len(packet):
            return None
        n = packet[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(packet):
            return None  # no compression in a question
        labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if i + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack_from("!HH", packet, i)
    return ".".join(labels), qtype, qclass, i + 4


def _reply(packet: bytes, end: int, rcode: int, answers: list[tuple[int, bytes]]) -> bytes:
    flags = 0x8000 | 0x0400 | (struct.unpack_from("!H", packet, 2)[0] & 0x0100) | 0x0080 | rcode
    out = [packet[:2], struct.pack("!HHHHH", flags, 1, len(answers), 0, 0), packet[12:end]]
    for rtype, data in answers:
        out.append(struct.pack("!HHHIH", 0xC00C, rtype, IN, TTL, len(data)) + data)
    return b"".join(out)


def machine_addresses(state_dir: str, name: str) -> list[str] | None:
    """The addresses of the running machine NAME from the registry, None if there is none (or its
    entry is damaged). Loaded at the first machine-name query: the slim monitor pays only then."""
    from hutch.machines import registry
    from hutch.settings.values import valid_machine_name

    if not valid_machine_name(name):
        return None  # nothing to look up in the state directory
    try:
        # Only a held lock: load() would clean up after a dead supervisor, not the forwarder's job.
        entry = registry.load(state_dir, name) if registry.is_running(state_dir, name) else None
    except (registry.DamagedEntry, OSError):
        return None
    if entry is None:
        return None
    return [a for a in entry.get("addresses") or [] if isinstance(a, str)]


def _local(fw: Forwarder, packet: bytes, name: str, qtype: int, qclass: int, end: int) -> bytes | None:
    """The answer for one of the host's machines, or None when NAME is not one."""
    if name.endswith(".machine"):
        name = name[: -len(".machine")]
    elif "." in name:
        return None
    addresses = machine_addresses(fw.state_dir, name)
    if addresses is None:
        return None
    answers = []
    for a in addresses:
        family = _socket.AF_INET6 if ":" in a else _socket.AF_INET
        if qclass == IN and qtype == (AAAA if family == _socket.AF_INET6 else A):
            try:
                answers.append((qtype, _socket.inet_pton(family, a.split("/")[0])))
            except OSError:
                continue
    return _reply(packet, end, NOERROR, answers)


def on_query(fw: Forwarder) -> None:
    """One query from a machine: answered here, or sent on to a host nameserver."""
    import posix
    import time

    try:
        packet, client = fw.listen.recvfrom(4096)
    except OSError:
        return
    q = _question(packet)
    if q is None:
        return
    name, qtype, qclass, end = q
    if name.endswith(".machine") or "." not in name:
        answer = _local(fw, packet, name, qtype, qclass, end)
        if answer is not None or name.endswith(".machine"):
            _send(fw.listen, answer or _reply(packet, end, NXDOMAIN, []), client)
            return
    if not fw.servers:
        _send(fw.listen, _reply(packet, end, SERVFAIL, []), client)
        return
    now = time.monotonic()
    for key in [k for k, (_c, _i, t) in fw.pending.items() if now - t > PENDING_AGE]:
        del fw.pending[key]
    if len(fw.pending) >= PENDING_MAX:
        del fw.pending[next(iter(fw.pending))]  # the oldest
    while True:
        new_id = struct.unpack("!H", posix.urandom(2))[0]  # unguessable: answers are matched by it
        if new_id not in fw.pending:
            break
    fw.pending[new_id] = (client, packet[:2], now)
    # A client's retry of a query arrives as a new one: it goes to the next server.
    server = fw.servers[fw.counter % len(fw.servers)]
    fw.counter += 1
    _send(fw.upstream, struct.pack("!H", new_id) + packet[2:], (server, PORT))


def on_answer(fw: Forwarder) -> None:
    """One answer from a host nameserver, back to the machine that asked."""
    try:
        packet, source = fw.upstream.recvfrom(65535)
    except OSError:
        return
    if len(packet) < 12 or source[0] not in fw.servers or source[1] != PORT:
        return
    pending = fw.pending.pop(struct.unpack_from("!H", packet)[0], None)
    if pending is None:
        return
    client, old_id, _t = pending
    _send(fw.listen, old_id + packet[2:], client)


def _send(sock: Any, packet: bytes, address: Any) -> None:
    try:
        sock.sendto(packet, address)
    except OSError:
        pass  # a full buffer or an unreachable server: the client asks again
