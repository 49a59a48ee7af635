"""A DHCPv4 server for one machine, on the host side of its veth (or its zone's bridge).

hutch configures host0 itself, but a guest that runs its own DHCP client (udhcpc, dhclient, networkd's
80-container-host0.network) asks for an address, and without an answer it may drop the one it has.
Upstream relies on systemd-networkd on the host for this. Here the machine's supervisor (and the slim
monitor after it, hutch.container.monitor) keeps a socket on that interface in its poll loop and
answers DISCOVER and REQUEST from the machine's host0 (by its MAC: a zone's bridge carries every
member's requests) with the address hutch gave it, its router and the nameservers of its resolv.conf.
Leases need no state: the address is the machine's for as long as it runs. (A helper process per
machine cost ~3 ms a start for the fork alone.)
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
LEASE = 86400
SO_BINDTODEVICE = 25


class Lease:
    __slots__ = ("address", "dns", "mac", "prefix", "server")

    def __init__(self, mac: bytes, address: str, server: str, prefix: int, dns: list[str]) -> None:
        self.mac = mac
        self.address = address
        self.server = server
        self.prefix = prefix
        self.dns = dns


def _options(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        n = data[i + 1]
        out[code] = data[i + 2 : i + 2 + n]
        i += 2 + n
    return out


def reply(packet: bytes, lease: Lease) -> bytes | None:
    """The answer to one BOOTP request from the machine, or None when it is not ours to answer."""
    import _socket

    if len(packet) < 240 or packet[0] != 1 or packet[236:240] != MAGIC:
        return None
    hlen = packet[2]
    if packet[28 : 28 + hlen] != lease.mac:
        return None
    opts = _options(packet[240:])
    kind = opts.get(53, b"\0")[0]
    ours = _socket.inet_aton(lease.address)
    if kind == DISCOVER:
        answer = OFFER
    elif kind == REQUEST:
        wanted = opts.get(50) or packet[12:16]  # the requested address, or ciaddr when renewing
        server_id = opts.get(54)
        if server_id is not None and server_id != _socket.inet_aton(lease.server):
            return None  # the client chose another server's offer
        answer = ACK if wanted == ours else NAK
    elif kind == INFORM:
        answer = ACK
    else:
        return None  # RELEASE, DECLINE: nothing to keep
    mask = (0xFFFFFFFF << (32 - lease.prefix)) & 0xFFFFFFFF
    server = _socket.inet_aton(lease.server)
    out = bytearray(packet[:236])
    out[0] = 2  # BOOTREPLY
    out[3] = 0  # hops
    out[12:16] = packet[12:16] if kind == INFORM else b"\0\0\0\0"  # ciaddr
    out[16:20] = b"\0\0\0\0" if answer == NAK or kind == INFORM else ours  # yiaddr
    out[20:24] = server  # siaddr
    out += MAGIC
    out += bytes((53, 1, answer, 54, 4)) + server
    if answer != NAK:
        if kind != INFORM:
            out += bytes((51, 4)) + struct.pack("!I", LEASE)
        out += bytes((1, 4)) + struct.pack("!I", mask)
        out += bytes((3, 4)) + server
        if lease.dns:
            raw = b"".join(_socket.inet_aton(d) for d in lease.dns)
            out += bytes((6, len(raw))) + raw
    out += b"\xff"
    out += b"\0" * max(0, 300 - len(out))  # BOOTP's minimum size; some clients insist
    return bytes(out)


def open_socket(ifname: str) -> _socket.socket:
    import _socket  # `socket` wraps it in IntEnums: ~2 ms of a start

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)  # zone members' servers share :67
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_BROADCAST, 1)
        s.setsockopt(_socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        s.bind(("0.0.0.0", 67))
    except OSError:
        s.close()
        raise
    return s


def answer(sock: _socket.socket, lease: Lease) -> None:
    """Read one request from SOCK (readable) and answer it if it is the machine's."""
    try:
        packet = sock.recv(4096)
    except OSError:
        return
    out = reply(packet, lease)
    if out is not None:
        try:
            sock.sendto(out, ("255.255.255.255", 68))
        except OSError:
            pass
