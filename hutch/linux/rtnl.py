"""The few rtnetlink requests a veth pair needs, hand-encoded on an AF_NETLINK socket.

pyroute2 does this and far more, but importing it takes ~100 ms, which made `-n` cost 127 ms per start
where systemd-nspawn's costs 7 ms. Each request here is sent with NLM_F_ACK and fails with OSError
(the kernel's errno) if the kernel refuses it.
"""

from __future__ import annotations

import _socket
import struct

from hutch.linux import posixos as os

AF_NETLINK = 16
NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
RTM_NEWLINKPROP, RTM_DELLINKPROP = 108, 109
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 1, 4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_PID, IFLA_NET_NS_FD = 3, 5, 10, 18, 19, 28
IFLA_PROP_LIST, IFLA_ALT_IFNAME, NLA_F_NESTED = 52, 53, 0x8000
MACVLAN_MODE_BRIDGE, IPVLAN_MODE_L2 = 4, 0
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
IFF_UP = 1
AF_INET, AF_INET6 = 2, 10
IFA_F_NODAD = 0x02  # usable at once: no duplicate address detection on a link only we are on


def _attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", 0, 0, index, flags, change)


def index(name: str) -> int:
    """The interface's index in the current network namespace; 0 if there is none."""
    try:
        return int(_socket.if_nametoindex(name))
    except OSError:
        return 0


def hwaddr(name: str) -> bytes:
    """The interface's MAC address (SIOCGIFHWADDR)."""
    import fcntl

    s = _socket.socket(AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        raw = fcntl.ioctl(s.fileno(), 0x8927, struct.pack("256s", name.encode()))
    finally:
        s.close()
    return bytes(raw[18:24])


class Netlink:
    def __init__(self) -> None:
        self.sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        self.seq += 1
        msg = (
            struct.pack("=IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0)
            + body
        )
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_ERROR and seq == self.seq:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    if err:
                        raise OSError(-err, f"{what}: {os.strerror(-err)}")
                    return
                off += max(length, 16) + (-length % 4)

    def add_veth(self, name: str, peer: str, peer_netns_pid: int) -> None:
        peer_info = (
            _ifinfo()
            + _attr(IFLA_IFNAME, peer.encode() + b"\0")
            + _attr(IFLA_NET_NS_PID, struct.pack("=I", peer_netns_pid))
        )
        linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = _ifinfo() + _attr(IFLA_IFNAME, name.encode() + b"\0") + _attr(IFLA_LINKINFO, linkinfo)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"Failed to create {name}")

    def set_up(self, ifindex: int) -> None:
        self.request(RTM_NEWLINK, 0, _ifinfo(ifindex, IFF_UP, IFF_UP), "Failed to bring an interface up")

    def delete(self, ifindex: int) -> None:
        self.request(RTM_DELLINK, 0, _ifinfo(ifindex), "Failed to delete an interface")

    def add_address(self, ifindex: int, address: str, prefixlen: int) -> None:
        family = AF_INET6 if ":" in address else AF_INET
        raw = _socket.inet_pton(family, address)
        flags = IFA_F_NODAD if family == AF_INET6 else 0
        body = struct.pack("=BBBBI", family, prefixlen, flags, 0, ifindex)
        body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"Failed to add {address}/{prefixlen}")

    def add_default_route(self, gateway: str) -> None:
        family = AF_INET6 if ":" in gateway else AF_INET
        # family, dst_len, src_len, tos, table main, protocol boot, scope universe, type unicast, flags
        body = struct.pack("=BBBBBBBBI", family, 0, 0, 0, 254, 3, 0, 1, 0)
        body += _attr(RTA_GATEWAY, _socket.inet_pton(family, gateway))
        self.request(
            RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"Failed to add a default route via {gateway}"
        )

    def move(self, ifindex: int, name: str, *, netns_pid: int = 0, netns_fd: int = -1) -> None:
        """Move the interface into another network namespace (a process's, or one held by an fd),
        renamed to NAME there."""
        target = (
            _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
            if netns_fd >= 0
            else _attr(IFLA_NET_NS_PID, struct.pack("=I", netns_pid))
        )
        body = _ifinfo(ifindex) + target + _attr(IFLA_IFNAME, name.encode() + b"\0")
        self.request(RTM_NEWLINK, 0, body, f"Failed to move network interface {name}")

    def add_bridge(self, name: str) -> None:
        body = (
            _ifinfo()
            + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"bridge"))
        )
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"Failed to create bridge {name}")

    def set_master(self, ifindex: int, master: int) -> None:
        body = _ifinfo(ifindex) + _attr(IFLA_MASTER, struct.pack("=I", master))
        self.request(RTM_NEWLINK, 0, body, "Failed to attach an interface to its bridge")

    def add_on(self, kind: str, name: str, parent: int, netns_pid: int) -> None:
        """A macvlan (bridge mode) or ipvlan (L2) named NAME on the host's interface PARENT, made
        straight in PID NETNS_PID's network namespace."""
        if kind == "macvlan":
            data = _attr(1, struct.pack("=I", MACVLAN_MODE_BRIDGE))  # IFLA_MACVLAN_MODE
        else:
            data = _attr(1, struct.pack("=H", IPVLAN_MODE_L2))  # IFLA_IPVLAN_MODE
        linkinfo = _attr(IFLA_INFO_KIND, kind.encode()) + _attr(IFLA_INFO_DATA, data)
        body = (
            _ifinfo()
            + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_LINK, struct.pack("=I", parent))
            + _attr(IFLA_NET_NS_PID, struct.pack("=I", netns_pid))
            + _attr(IFLA_LINKINFO, linkinfo)
        )
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"Failed to create {kind} {name}")

    def altname(self, ifindex: int, name: str, add: bool) -> None:
        """Add or remove NAME as an alternative name of the interface."""
        props = _attr(IFLA_PROP_LIST | NLA_F_NESTED, _attr(IFLA_ALT_IFNAME, name.encode() + b"\0"))
        kind, flags = (RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL) if add else (RTM_DELLINKPROP, 0)
        self.request(kind, flags, _ifinfo(ifindex) + props, f"Failed to change the alternative name {name}")
