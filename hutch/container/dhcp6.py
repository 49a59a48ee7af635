"""IPv6 for a guest that runs its own network stack: router advertisements and a DHCPv6 server, on
the host side of the machine's veth (or its zone's bridge).

hutch gives host0 ::2 of the machine's /64 itself. networkd 257 and newer flush addresses they did not
make when they take host0 over (80-container-host0.network), so a guest that starts networkd lost the
address `hutch list` shows (252 kept it). Upstream has networkd on the host send RAs on its veths
(IPv6SendRA=). Here the supervisor (and the slim monitor after it) answers router solicitations with
an advertisement that makes the host the machine's default router, marks the /64 on-link and sets
the Managed flag, and answers the DHCPv6 client that flag starts with the same ::2: the guest's own
stack ends with the address hutch configured and `list` shows. No SLAAC (the A flag stays off):
that address would be one `list` does not know.

On a zone's bridge every member's server hears every member: each answers the client whose
link-local address is its own machine's EUI-64 one (networkd's default), and ignores the others.
Loaded when the machine starts with a veth; the monitor loads it at the first packet.
"""

from __future__ import annotations

import _socket
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ICMPV6, RS, RA = 58, 133, 134
ICMP6_FILTER = 1
IPV6_UNICAST_HOPS, IPV6_MULTICAST_IF, IPV6_MULTICAST_HOPS, IPV6_JOIN_GROUP = 16, 17, 18, 20
SO_BINDTODEVICE = 25
ROUTER_LIFETIME = 1800
# DHCPv6 (RFC 8415)
SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE, INFO = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    11,
)
CLIENTID, SERVERID, IA_NA, IAADDR, STATUS, RAPID_COMMIT = 1, 2, 3, 5, 13, 14
INFINITE = 0xFFFFFFFF


class Router:
    __slots__ = ("address", "dhcp", "ifindex", "mac", "prefix", "ra", "server_duid")

    def __init__(self, ra: Any, dhcp: Any, ifindex: int, address: str, mac: bytes, duid: bytes) -> None:
        self.ra = ra  # raw ICMPv6, router solicitations in, advertisements out
        self.dhcp = dhcp  # UDP [::]:547 on the link
        self.ifindex = ifindex
        self.address = address  # the machine's, ::2 of its /64
        self.mac = mac  # host0's
        self.server_duid = duid
        self.prefix = _socket.inet_pton(_socket.AF_INET6, address)[:8] + bytes(8)


def open_sockets(ifname: str) -> tuple[Any, Any, int]:
    """(the ICMPv6 socket, the DHCPv6 socket, the link's index) on IFNAME, the host side."""
    ifindex = _socket.if_nametoindex(ifname)
    ra = _socket.socket(
        _socket.AF_INET6, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK, ICMPV6
    )
    dhcp = None
    try:
        ra.setsockopt(_socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        # Only solicitations: every other ICMPv6 message of the link stays with the kernel.
        blocked = bytearray(b"\xff" * 32)
        blocked[RS >> 3] &= ~(1 << (RS & 7)) & 0xFF
        ra.setsockopt(ICMPV6, ICMP6_FILTER, bytes(blocked))
        ra.setsockopt(_socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)  # RFC 4861: hop limit 255
        ra.setsockopt(_socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, 255)
        ra.setsockopt(_socket.IPPROTO_IPV6, IPV6_MULTICAST_IF, ifindex)
        group = _socket.inet_pton(_socket.AF_INET6, "ff02::2")  # all routers
        ra.setsockopt(_socket.IPPROTO_IPV6, IPV6_JOIN_GROUP, group + struct.pack("@I", ifindex))
        dhcp = _socket.socket(
            _socket.AF_INET6, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
        )
        dhcp.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)  # zone members' share :547
        dhcp.setsockopt(_socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        dhcp.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
        group = _socket.inet_pton(_socket.AF_INET6, "ff02::1:2")  # all DHCP relay agents and servers
        dhcp.setsockopt(_socket.IPPROTO_IPV6, IPV6_JOIN_GROUP, group + struct.pack("@I", ifindex))
        dhcp.bind(("::", 547))
    except BaseException:
        ra.close()
        if dhcp is not None:
            dhcp.close()
        raise
    return ra, dhcp, ifindex


def _eui64_link_local(mac: bytes) -> bytes:
    return b"\xfe\x80" + bytes(6) + bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:6]


def advertisement(r: Router) -> bytes:
    """Default router for ROUTER_LIFETIME, the /64 on-link and no SLAAC, Managed: ask DHCPv6."""
    head = struct.pack("!BBHBBHII", RA, 0, 0, 64, 0x80, ROUTER_LIFETIME, 0, 0)
    prefix = struct.pack("!BBBBIII", 3, 4, 64, 0x80, INFINITE, INFINITE, 0) + r.prefix
    return head + prefix  # the kernel fills in the checksum of a raw ICMPv6 socket's messages


def advertise(r: Router) -> None:
    """One unsolicited advertisement (at start: a guest that solicited before we listened)."""
    try:
        r.ra.sendto(advertisement(r), ("ff02::1", 0, 0, r.ifindex))
    except OSError:
        pass


def on_ra_sock(r: Router) -> None:
    """A router solicitation: answered to all nodes, as routers do."""
    try:
        packet, source = r.ra.recvfrom(1500)
    except OSError:
        return
    if packet[:1] == bytes([RS]) and _ours(r, source):
        advertise(r)


def _ours(r: Router, source: Any) -> bool:
    """From our machine: its link-local address (EUI-64 of its MAC), or unspecified (a solicitation
    sent before it had one). On a veth of its own anything is ours; on a zone's bridge, not."""
    try:
        addr = _socket.inet_pton(_socket.AF_INET6, source[0].split("%")[0])
    except (OSError, IndexError, AttributeError):
        return False
    return addr in (_eui64_link_local(r.mac), bytes(16))


def _options(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i + 4 <= len(data):
        code, n = struct.unpack_from("!HH", data, i)
        out.append((code, data[i + 4 : i + 4 + n]))
        i += 4 + n
    return out


def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def reply(r: Router, packet: bytes) -> bytes | None:
    """The answer to one DHCPv6 message from the machine's client, or None if it is not ours."""
    if len(packet) < 4:
        return None
    kind, xid = packet[0], packet[1:4]
    opts = _options(packet[4:])
    client = next((d for c, d in opts if c == CLIENTID), None)
    server = next((d for c, d in opts if c == SERVERID), None)
    if client is None or (server is not None and server != r.server_duid):
        return None  # another server's exchange
    out = [_opt(CLIENTID, client), _opt(SERVERID, r.server_duid)]
    answer = REPLY
    if kind in (SOLICIT, REQUEST, RENEW, REBIND):
        if kind == SOLICIT:
            rapid = any(c == RAPID_COMMIT for c, _ in opts)
            answer = REPLY if rapid else ADVERTISE
            if rapid:
                out.append(_opt(RAPID_COMMIT, b""))
        addr = _socket.inet_pton(_socket.AF_INET6, r.address)
        for code, data in opts:
            if code == IA_NA and len(data) >= 12:
                iaaddr = _opt(IAADDR, addr + struct.pack("!II", INFINITE, INFINITE))
                out.append(_opt(IA_NA, data[:4] + struct.pack("!II", 0, 0) + iaaddr))
    elif kind in (CONFIRM, RELEASE, DECLINE, INFO):
        out.append(_opt(STATUS, b"\0\0"))  # Success: the address is the machine's while it runs
    else:
        return None
    return bytes([answer]) + xid + b"".join(out)


def on_dhcp_sock(r: Router) -> None:
    try:
        packet, source = r.dhcp.recvfrom(4096)
    except OSError:
        return
    if not _ours(r, source):
        return
    out = reply(r, packet)
    if out is not None:
        try:
            r.dhcp.sendto(out, (source[0], source[1], 0, r.ifindex))
        except OSError:
            pass


def duid(uuid_hex: str) -> bytes:
    """DUID-UUID (type 4) from the machine's UUID: stable across the machine's run."""
    return struct.pack("!H", 4) + bytes.fromhex(uuid_hex.replace("-", ""))[:16].ljust(16, b"\0")
