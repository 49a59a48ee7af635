"""The DHCP server's answers, packet by packet (the live exchange with udhcpc is in tests/root)."""

from __future__ import annotations

import socket
import struct

from hutch.container import dhcp

MAC = bytes.fromhex("02aabbccddee")
LEASE = dhcp.Lease(MAC, "10.88.1.2", "10.88.1.1", 30, ["192.0.2.53"])


def request(kind: int, mac: bytes = MAC, extra: bytes = b"", ciaddr: str = "0.0.0.0") -> bytes:
    head = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x1234, 0, 0x8000) + socket.inet_aton(ciaddr) + b"\0" * 12
    head += mac + b"\0" * 10 + b"\0" * 192
    return head + dhcp.MAGIC + bytes((53, 1, kind)) + extra + b"\xff"


def options(packet: bytes) -> dict[int, bytes]:
    return dhcp._options(packet[240:])


def test_discover_gets_the_machines_address_router_and_dns() -> None:
    out = dhcp.reply(request(dhcp.DISCOVER), LEASE)
    assert out is not None and out[0] == 2 and out[4:8] == struct.pack("!I", 0x1234)
    assert socket.inet_ntoa(out[16:20]) == "10.88.1.2" and out[28:34] == MAC
    o = options(out)
    assert o[53] == bytes((dhcp.OFFER,)) and socket.inet_ntoa(o[54]) == "10.88.1.1"
    assert socket.inet_ntoa(o[1]) == "255.255.255.252" and socket.inet_ntoa(o[3]) == "10.88.1.1"
    assert socket.inet_ntoa(o[6]) == "192.0.2.53" and struct.unpack("!I", o[51])[0] == dhcp.LEASE
    assert len(out) >= 300


def test_request_is_acked_for_our_address_and_refused_for_another() -> None:
    ours = bytes((50, 4)) + socket.inet_aton("10.88.1.2")
    out = dhcp.reply(request(dhcp.REQUEST, extra=ours), LEASE)
    assert out is not None and options(out)[53] == bytes((dhcp.ACK,))
    other = bytes((50, 4)) + socket.inet_aton("10.88.1.6")
    out = dhcp.reply(request(dhcp.REQUEST, extra=other), LEASE)
    assert out is not None and options(out)[53] == bytes((dhcp.NAK,)) and out[16:20] == b"\0" * 4
    # Renewing: no option 50, the address in ciaddr.
    out = dhcp.reply(request(dhcp.REQUEST, ciaddr="10.88.1.2"), LEASE)
    assert out is not None and options(out)[53] == bytes((dhcp.ACK,))


def test_not_ours_to_answer() -> None:
    assert dhcp.reply(request(dhcp.DISCOVER, mac=bytes(6)), LEASE) is None  # another zone member
    other_server = bytes((54, 4)) + socket.inet_aton("10.88.9.1")
    assert dhcp.reply(request(dhcp.REQUEST, extra=other_server), LEASE) is None
    assert dhcp.reply(request(dhcp.RELEASE), LEASE) is None
    for junk in (b"", b"\x01" * 100, request(dhcp.DISCOVER)[:239], b"\x02" + request(dhcp.DISCOVER)[1:]):
        assert dhcp.reply(junk, LEASE) is None
    # An option running past the end of the packet is read as far as it goes, never past it.
    truncated = request(dhcp.DISCOVER)[:240] + bytes((53, 200, dhcp.DISCOVER))
    out = dhcp.reply(truncated, LEASE)
    assert out is not None and options(out)[53] == bytes((dhcp.OFFER,))
    assert dhcp.reply(request(dhcp.DISCOVER)[:240] + bytes((53,)), LEASE) is None  # no length byte
