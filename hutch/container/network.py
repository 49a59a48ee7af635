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
from typing import Any

from hutch.container.userns import name_hash
from hutch.errors import SetupError

DEFAULT_POOL = "10.88.0.0/16"
IFNAMSIZ = 15


def host_ifname(name: str, prefix: str = "ve-") -> str:
    """ve-NAME (vb-NAME in a zone), shortened to the kernel's 15 characters with a hash of the full
    name, so two long names with a common prefix still get different interfaces."""
    full = f"{prefix}{name}"
    if len(full) <= IFNAMSIZ:
        return full
    return f"{prefix}{name[:7]}-{name_hash(name) & 0xFFFF:04x}"


class Link:
    __slots__ = (
        "bridge",
        "container_ip",
        "created",
        "host_ip",
        "ifname",
        "lock_fd",
        "prefix",
        "state_dir",
        "zone",
    )

    def __init__(self, ifname: str, host_ip: str, container_ip: str, prefix: int, lock_fd: int) -> None:
        self.ifname = ifname
        self.host_ip = host_ip
        self.container_ip = container_ip
        self.prefix = prefix
        self.lock_fd = lock_fd
        self.created = False  # only a pair we made is ours to delete
        self.zone = ""  # --network-zone: the host side is a port of the bridge vz-ZONE
        self.bridge = ""
        self.state_dir = ""

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _try_lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    return fd


def allocate_zone(name: str, zone: str, state_dir: str) -> Link:
    """A member address in ZONE's /24 ($HUTCH_ZONE_POOL, default 10.89.0.0/16, the /24 chosen from the
    zone's name): the bridge vz-ZONE has .1, members .2 to .254, each held by a kernel lock."""
    try:
        pool = ipaddress.ip_network(os.environ.get("HUTCH_ZONE_POOL") or "10.89.0.0/16")
    except ValueError as e:
        raise SetupError(f"Invalid address pool HUTCH_ZONE_POOL: {e}.") from None
    if pool.version != 4 or pool.prefixlen > 24:
        raise SetupError(f"Zone pool {pool} is too small.", "use an IPv4 network of /24 or larger")
    index = name_hash(zone) % (1 << (24 - pool.prefixlen))
    net = ipaddress.ip_network((int(pool.network_address) + index * 256, 24))
    d = os.path.join(state_dir, "net")
    os.makedirs(d, 0o700, exist_ok=True)
    start = name_hash(name) % 253
    for i in range(253):
        host = 2 + (start + i) % 253
        fd = _try_lock(os.path.join(d, f"zone-{zone}-{host}.lock"))
        if fd >= 0:
            link = Link(
                host_ifname(name, "vb-"),
                str(net.network_address + 1),
                str(net.network_address + host),
                24,
                fd,
            )
            link.zone = zone
            link.bridge = f"vz-{zone}"
            link.state_dir = state_dir
            return link
    raise SetupError(f"Network zone {zone} is full (253 machines).")


def _zone_mutex(state_dir: str, zone: str) -> int:
    fd = os.open(
        os.path.join(state_dir, "net", f"zone-{zone}.mutex"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


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
    h = name_hash(name)
    for i in range(min(subnets, 256)):
        index = (h + i) % subnets
        net = ipaddress.ip_network((int(pool.network_address) + index * 4, 30))
        fd = _try_lock(os.path.join(d, f"{net.network_address}.lock"))
        if fd < 0:
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
            if link.zone:
                _join_bridge(nl, link, idx)
            else:
                nl.add_address(idx, link.host_ip, link.prefix)
            nl.set_up(idx)
    except OSError as e:
        raise SetupError(f"Failed to set up {link.ifname}: {e.strerror or e}.") from None


def _join_bridge(nl: Any, link: Link, idx: int) -> None:
    """The zone's bridge, made (with the zone's .1) by its first member, and our port on it."""
    from hutch.linux import rtnl

    mutex = _zone_mutex(link.state_dir, link.zone)
    try:
        br = rtnl.index(link.bridge)
        if not br:
            nl.add_bridge(link.bridge)
            br = rtnl.index(link.bridge)
            nl.add_address(br, link.host_ip, link.prefix)
            nl.set_up(br)
        nl.set_master(idx, br)
    finally:
        os.close(mutex)


def _other_members(link: Link) -> bool:
    """Whether another machine holds an address in the zone (its kernel lock; sysfs would show the
    bridges of the namespace that mounted it, not ours)."""
    d = os.path.join(link.state_dir, "net")
    mine = f"zone-{link.zone}-{link.container_ip.rsplit('.', 1)[1]}.lock"
    for entry in os.listdir(d):
        if entry.startswith(f"zone-{link.zone}-") and entry.endswith(".lock") and entry != mine:
            fd = _try_lock(os.path.join(d, entry))
            if fd < 0:
                return True
            os.close(fd)
    return False


def leave_zone(link: Link) -> None:
    """At stop: our port off the bridge now, and the bridge gone with its last member."""
    from hutch.linux import rtnl

    mutex = _zone_mutex(link.state_dir, link.zone)
    try:
        with rtnl.Netlink() as nl:
            idx = rtnl.index(link.ifname)
            if idx and link.created:
                nl.delete(idx)
            link.created = False
            br = rtnl.index(link.bridge)
            if br and not _other_members(link):
                nl.delete(br)
    except OSError:
        pass
    finally:
        os.close(mutex)


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
    if link.zone:
        leave_zone(link)
        return
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


def _nft(script: str) -> None:
    import subprocess

    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "nft failed"
        raise SetupError(
            f"Failed to set up masquerading: {why}.",
            "is nftables installed (apt-get install nftables)?",
        )


def masquerade(link: Link, name: str) -> None:
    """Outbound traffic from the machine's subnet leaves with the host's address (nftables), and the
    host forwards IPv4, as networkd's IPMasquerade= does."""
    import shutil

    if shutil.which("nft") is None:
        raise SetupError("--network-masquerade needs nftables.", "apt-get install nftables")
    net = ipaddress.ip_network(f"{link.container_ip}/{link.prefix}", strict=False)
    _nft(
        "table inet hutch {\n chain postrouting {\n  type nat hook postrouting priority srcnat;\n }\n}\n"
        f'add rule inet hutch postrouting ip saddr {net} oifname != "{link.bridge or link.ifname}" '
        f'masquerade comment "hutch:{name}"\n'
    )
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")


def unmasquerade(name: str) -> None:
    import subprocess

    r = subprocess.run(
        ["nft", "-a", "list", "chain", "inet", "hutch", "postrouting"], capture_output=True, text=True
    )
    for line in r.stdout.splitlines():
        if f'comment "hutch:{name}"' in line and "# handle " in line:
            handle = line.rsplit("# handle ", 1)[1].strip()
            subprocess.run(
                ["nft", "delete", "rule", "inet", "hutch", "postrouting", "handle", handle],
                capture_output=True,
            )
