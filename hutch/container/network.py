"""-n/--network-veth: a veth pair, ve-NAME on the host and host0 in the machine, with addresses.

Upstream creates the pair and leaves addressing to systemd-networkd on both sides, so on most hosts the
machine has no network (its issues #20055, #6546). hutch configures both ends over rtnetlink
(hutch.linux.rtnl; importing pyroute2 alone cost ~100 ms a start): each machine gets a /30 from a pool
($HUTCH_NET_POOL, default 10.88.0.0/16) held by a kernel lock under $HUTCH_STATE_DIR/net, the host side
.1, host0 .2 with a default route through .1. The pair goes with the machine's network namespace;
the lock with the supervisor.
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
    import time

    from hutch.linux import rtnl

    # The pair of this machine's previous run may still be going with its namespace: give it a moment.
    deadline = time.monotonic() + 1.0
    while rtnl.index(link.ifname) and time.monotonic() < deadline:
        time.sleep(0.01)
    if rtnl.index(link.ifname):
        raise SetupError(
            f"Network interface {link.ifname} already exists.",
            "another machine's name shortens to the same interface name; pick another name",
        )
    try:
        with rtnl.Netlink() as nl:
            nl.add_veth(link.ifname, "host0", pid1)
            link.created = True
            idx = rtnl.index(link.ifname)
            nl.add_address(idx, link.host_ip, link.prefix)
            nl.set_up(idx)
    except OSError as e:
        raise SetupError(f"Failed to set up {link.ifname}: {e.strerror or e}.") from None


def setup_inside(link: Link) -> None:
    """In the machine's network namespace: lo and host0 up, host0's address, the default route."""
    from hutch.linux import rtnl

    try:
        with rtnl.Netlink() as nl:
            nl.set_up(rtnl.index("lo"))
            idx = rtnl.index("host0")
            nl.add_address(idx, link.container_ip, link.prefix)
            nl.set_up(idx)
            nl.add_default_route(link.host_ip)
    except OSError as e:
        raise SetupError(f"Failed to configure host0 in the machine: {e.strerror or e}.") from None


def teardown(link: Link) -> None:
    """Delete the pair now, for a reboot: the kernel would too, but only once the machine's network
    namespace is freed, asynchronously."""
    if not link.created:
        return
    from hutch.linux import rtnl

    link.created = False
    idx = rtnl.index(link.ifname)
    if idx:
        try:
            with rtnl.Netlink() as nl:
                nl.delete(idx)
        except OSError:
            pass
