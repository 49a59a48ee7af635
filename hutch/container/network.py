"""-n/--network-veth: a veth pair, ve-NAME on the host and host0 in the machine, with addresses.

Upstream creates the pair and leaves addressing to systemd-networkd on both sides, so on most hosts the
machine has no network (its issues #20055, #6546). hutch configures both ends over netlink (pyroute2,
loaded only when -n is given): each machine gets a /30 from a pool ($HUTCH_NET_POOL, default
10.88.0.0/16) held by a kernel lock under $HUTCH_STATE_DIR/net, the host side .1, host0 .2 with a
default route through .1. The pair goes away with the machine's network namespace; the lock with the
supervisor.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os

from hutch.errors import SetupError

DEFAULT_POOL = "10.88.0.0/16"
IFNAMSIZ = 15


def host_ifname(name: str) -> str:
    """ve-NAME, shortened to the kernel's 15 characters with a hash of the full name, so two long names
    with a common prefix still get different interfaces."""
    full = f"ve-{name}"
    if len(full) <= IFNAMSIZ:
        return full
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"ve-{name[:7]}-{h & 0xFFFF:04x}"


class Link:
    __slots__ = ("container_ip", "created", "host_ip", "ifname", "lock_fd", "prefix")

    def __init__(self, ifname: str, host_ip: str, container_ip: str, prefix: int, lock_fd: int) -> None:
        self.ifname = ifname
        self.host_ip = host_ip
        self.container_ip = container_ip
        self.prefix = prefix
        self.lock_fd = lock_fd
        self.created = False  # only a pair we made is ours to delete

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def allocate(name: str, state_dir: str) -> Link:
    """A free /30 from the pool, chosen from the machine's name where free, held by a kernel lock."""
    try:
        pool = ipaddress.ip_network(os.environ.get("HUTCH_NET_POOL") or DEFAULT_POOL)
    except ValueError as e:
        raise SetupError(f"Invalid address pool HUTCH_NET_POOL: {e}.") from None
    if pool.version != 4 or pool.prefixlen > 30:
        raise SetupError(f"Address pool {pool} is too small.", "use an IPv4 network of /30 or larger")
    subnets = 1 << (30 - pool.prefixlen)
    d = os.path.join(state_dir, "net")
    os.makedirs(d, 0o700, exist_ok=True)
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    for i in range(min(subnets, 256)):
        index = (h + i) % subnets
        net = ipaddress.ip_network((int(pool.network_address) + index * 4, 30))
        fd = os.open(
            os.path.join(d, f"{net.network_address}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        hosts = list(net.hosts())
        return Link(host_ifname(name), str(hosts[0]), str(hosts[1]), 30, fd)
    raise SetupError(
        f"No free subnet in the address pool {pool}.", "stop a machine, or set a larger HUTCH_NET_POOL"
    )


def setup_host(link: Link, pid1: int) -> None:
    """In the host's network namespace: the pair, its peer moved into PID 1's namespace as host0."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ip:
        if ip.link_lookup(ifname=link.ifname):
            raise SetupError(
                f"Network interface {link.ifname} already exists.",
                "another machine's name shortens to the same interface name; pick another name",
            )
        try:
            ip.link("add", ifname=link.ifname, kind="veth", peer={"ifname": "host0", "net_ns_pid": pid1})
            link.created = True
            idx = ip.link_lookup(ifname=link.ifname)[0]
            ip.addr("add", index=idx, address=link.host_ip, prefixlen=link.prefix)
            ip.link("set", index=idx, state="up")
        except NetlinkError as e:
            raise SetupError(f"Failed to set up {link.ifname}: {e.args[-1] if e.args else e}.") from None


def setup_inside(link: Link) -> None:
    """In the machine's network namespace: lo and host0 up, host0's address, the default route."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
            idx = ip.link_lookup(ifname="host0")[0]
            ip.addr("add", index=idx, address=link.container_ip, prefixlen=link.prefix)
            ip.link("set", index=idx, state="up")
            ip.route("add", dst="0.0.0.0/0", gateway=link.host_ip)
    except (NetlinkError, IndexError) as e:
        raise SetupError(f"Failed to configure host0 in the machine: {e}.") from None


def teardown(link: Link) -> None:
    """Delete the pair now: the kernel would too, but only once the machine's network namespace is
    freed, asynchronously, and a restart of the machine must find the name free."""
    if not link.created:
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    link.created = False
    try:
        with IPRoute() as ip:
            found = ip.link_lookup(ifname=link.ifname)
            if found:
                ip.link("del", index=found[0])
    except NetlinkError:
        pass
