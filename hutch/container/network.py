"""The machine's network: veth pairs, zones and bridges, interfaces moved in, addresses.

-n/--network-veth: a veth pair, ve-NAME on the host and host0 in the machine, with addresses. Upstream
creates the pair and leaves addressing to systemd-networkd on both sides, so on most hosts the machine
has no network (its issues #20055, #6546). hutch configures both ends over rtnetlink (hutch.linux.rtnl;
importing pyroute2 alone cost ~100 ms a start): each machine gets a /30 from a pool ($HUTCH_NET_POOL,
default 10.88.0.0/16) held by a kernel lock under $HUTCH_STATE_DIR/net, the host side .1, host0 .2
with a default route through .1; and the /64 of the same index from an IPv6 ULA pool
($HUTCH_NET6_POOL, default fd68:7574:6368::/48), ::1 and ::2 likewise. A zone (vz-ZONE) has a /24
and a /64, the bridge .1 and ::1. --network-bridge=BR puts vb-NAME on the host's own bridge BR and
leaves addressing to BR's network (DHCP, or the guest's configuration). The pair goes with the
machine's network namespace; the lock with the supervisor.
"""

from __future__ import annotations

import sys

from hutch.container.addr import Net, parse_address, parse_network
from hutch.container.userns import name_hash
from hutch.errors import SetupError
from hutch.linux import posixos as os
from hutch.linux.fsutil import release_lock_file, take_lock_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_POOL = "10.88.0.0/16"
DEFAULT_ZONE_POOL = "10.89.0.0/16"
DEFAULT_POOL6 = "fd68:7574:6368::/48"
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
        "container_ip6",
        "created",
        "external",
        "host_ip",
        "host_ip6",
        "ifname",
        "lock_fd",
        "lock_path",
        "mac",
        "prefix",
        "state_dir",
        "zone",
    )

    def __init__(
        self, ifname: str, host_ip: str, container_ip: str, prefix: int, lock_fd: int, lock_path: str = ""
    ) -> None:
        self.ifname = ifname
        self.host_ip = host_ip
        self.container_ip = container_ip
        self.prefix = prefix
        self.lock_fd = lock_fd
        self.lock_path = lock_path  # the file LOCK_FD locks, removed when we let go of it
        self.created = False  # only a pair we made is ours to delete
        self.zone = ""  # --network-zone: the host side is a port of the bridge vz-ZONE
        self.bridge = ""
        self.external = False  # --network-bridge: the host's bridge, not ours to make or remove
        self.state_dir = ""
        self.host_ip6 = ""  # the /64's ::1 (the zone's bridge's), and ours
        self.container_ip6 = ""
        self.mac = b""  # host0's, for the DHCP server (hutch.container.dhcp)

    def addresses(self) -> list[str]:
        return [a for a in (self.container_ip, self.container_ip6) if a]

    def release(self) -> None:
        if self.lock_fd >= 0:
            release_lock_file(self.lock_path, self.lock_fd)
            self.lock_fd = -1


def _try_lock(path: str) -> int:
    try:
        return take_lock_file(path)
    except BlockingIOError:
        return -1


def _pools() -> tuple[Net, Net, Net]:
    """The machines' IPv4 pool, the zones' IPv4 pool and the IPv6 pool, checked against each other."""
    found = []
    for var, default, version, largest in (
        ("HUTCH_NET_POOL", DEFAULT_POOL, 4, 30),
        ("HUTCH_ZONE_POOL", DEFAULT_ZONE_POOL, 4, 24),
        ("HUTCH_NET6_POOL", DEFAULT_POOL6, 6, 48),
    ):
        value = os.getenv(var) or default
        try:
            pool = parse_network(value)
        except ValueError as e:
            raise SetupError(f"Invalid address pool {var}={value}: {e}.") from None
        if pool.version != version or pool.prefix > largest:
            raise SetupError(
                f"Address pool {var}={value} does not fit.",
                f"use an IPv{version} network of /{largest} or larger",
            )
        found.append(pool)
    if found[0].overlaps(found[1]):
        raise SetupError(
            f"The address pools HUTCH_NET_POOL={found[0]} and HUTCH_ZONE_POOL={found[1]} overlap.",
            "give machines and zones separate networks",
        )
    return found[0], found[1], found[2]


def _subnet6(pool6: Net, index: int) -> Net:
    return Net(6, pool6.address + (index << 64), 64)


def allocate_zone(name: str, zone: str, state_dir: str) -> Link:
    """A member address in ZONE's /24 ($HUTCH_ZONE_POOL, default 10.89.0.0/16, the /24 chosen from the
    zone's name) and /64: the bridge vz-ZONE has .1 and ::1, members .2 to .254 and ::2 to ::fe, each
    held by a kernel lock."""
    _, pool, pool6 = _pools()
    index = name_hash(zone) % (1 << (24 - pool.prefix))
    net = Net(4, pool.address + index * 256, 24)
    d = os.path.join(state_dir, "net")
    os.makedirs(d, 0o700, exist_ok=True)
    start = name_hash(name) % 253
    for i in range(253):
        host = 2 + (start + i) % 253
        path = os.path.join(d, f"zone-{zone}-{host}.lock")
        fd = _try_lock(path)
        if fd >= 0:
            link = Link(
                host_ifname(name, "vb-"),
                net.host(1),
                net.host(host),
                24,
                fd,
                path,
            )
            link.zone = zone
            link.bridge = f"vz-{zone}"
            link.state_dir = state_dir
            net6 = _subnet6(pool6, 0x8000 + index % 0x8000)  # zones: the pool's upper half
            link.host_ip6 = net6.host(1)
            link.container_ip6 = net6.host(host)
            return link
    raise SetupError(f"Network zone {zone} is full (253 machines).")


def _zone_mutex(state_dir: str, zone: str) -> tuple[str, int]:
    path = os.path.join(state_dir, "net", f"zone-{zone}.mutex")
    return path, take_lock_file(path, blocking=True)


def allocate(name: str, state_dir: str) -> Link:
    """A free /30 from the pool, chosen from the machine's name where free, held by a kernel lock, and
    the /64 of the same index. Subnets holding an address the host already has are passed over."""
    pool, _, pool6 = _pools()
    taken = _host_addresses()
    subnets = 1 << (30 - pool.prefix)
    d = os.path.join(state_dir, "net")
    os.makedirs(d, 0o700, exist_ok=True)
    h = name_hash(name)
    for i in range(min(subnets, 256)):
        index = (h + i) % subnets
        net = Net(4, pool.address + index * 4, 30)
        if any(net.contains(a) for a in taken):
            continue
        path = os.path.join(d, f"{net.host(0)}.lock")
        fd = _try_lock(path)
        if fd < 0:
            continue
        link = Link(host_ifname(name), net.host(1), net.host(2), 30, fd, path)
        net6 = _subnet6(pool6, index % 0x8000)
        link.host_ip6 = net6.host(1)
        link.container_ip6 = net6.host(2)
        return link
    raise SetupError(
        f"No free subnet in the address pool {pool}.", "stop a machine, or set a larger HUTCH_NET_POOL"
    )


def _host_addresses() -> list[int]:
    """The IPv4 addresses of this network namespace's interfaces (the kernel's local routes)."""
    found = []
    try:
        with open("/proc/net/fib_trie") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    from itertools import pairwise

    for prev, line in pairwise(lines):
        if line.strip() == "/32 host LOCAL" and "|--" in prev:
            version, value = parse_address(prev.split("|--", 1)[1].strip())
            if version == 4:
                found.append(value)
    return found


def allocate_bridge(name: str, bridge: str) -> Link:
    """--network-bridge=BR: vb-NAME on the host's bridge BR, addressed by BR's network."""
    from hutch.linux import rtnl

    if not rtnl.index(bridge):
        raise SetupError(
            f"Network bridge {bridge} does not exist.", "create it first, or use --network-zone="
        )
    link = Link(host_ifname(name, "vb-"), "", "", 0, -1)
    link.bridge = bridge
    link.external = True
    return link


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
            if link.external:
                nl.set_master(idx, rtnl.index(link.bridge))
            elif link.zone:
                _join_bridge(nl, link, idx)
            else:
                nl.add_address(idx, link.host_ip, link.prefix)
                nl.add_address(idx, link.host_ip6, 64)
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
            nl.add_address(br, link.host_ip6, 64)
            nl.set_up(br)
        nl.set_master(idx, br)
    finally:
        release_lock_file(*mutex)


def _other_members(state_dir: str, zone: str, mine: str = "") -> bool:
    """Whether a machine holds an address in the zone, other than our MINE (its kernel lock; sysfs
    would show the bridges of the namespace that mounted it, not ours)."""
    d = os.path.join(state_dir, "net")
    for entry in os.listdir(d):
        if entry.startswith(f"zone-{zone}-") and entry.endswith(".lock") and entry != mine:
            fd = _try_lock(os.path.join(d, entry))
            if fd < 0:
                return True
            release_lock_file(os.path.join(d, entry), fd)  # a member killed before it could
    return False


def leave_zone(link: Link, delete_port: bool = False) -> None:
    """At stop: the bridge gone with its last member. Our port goes with the machine's namespace, or
    now (DELETE_PORT) for a reboot, which makes it again."""
    from hutch.linux import rtnl

    mutex = _zone_mutex(link.state_dir, link.zone)
    try:
        with rtnl.Netlink() as nl:
            idx = rtnl.index(link.ifname)
            if idx and link.created and delete_port:
                nl.delete(idx)
            link.created = False
            br = rtnl.index(link.bridge)
            mine = f"zone-{link.zone}-{link.container_ip.rsplit('.', 1)[1]}.lock"
            if br and not _other_members(link.state_dir, link.zone, mine):
                nl.delete(br)
    except OSError:
        pass
    finally:
        release_lock_file(*mutex)


def gc_zone(state_dir: str, zone: str) -> None:
    """Remove ZONE's bridge if no machine holds an address in it: the last member's supervisor was
    killed before it could (called when its registry entry is found stale)."""
    from hutch.linux import rtnl

    if not os.path.isdir(os.path.join(state_dir, "net")):
        return
    mutex = _zone_mutex(state_dir, zone)
    try:
        br = rtnl.index(f"vz-{zone}")
        if br and not _other_members(state_dir, zone):
            with rtnl.Netlink() as nl:
                nl.delete(br)
    except OSError:
        pass
    finally:
        release_lock_file(*mutex)


def setup_inside(link: Link) -> None:
    """In the machine's network namespace: lo and host0 up, host0's address, the default route."""
    from hutch.linux import rtnl

    try:
        with rtnl.Netlink() as nl:
            nl.set_up(rtnl.index("lo"))
            idx = rtnl.index("host0")
            link.mac = rtnl.hwaddr("host0")
            if not link.external:
                nl.add_address(idx, link.container_ip, link.prefix)
                nl.add_address(idx, link.container_ip6, 64)
            nl.set_up(idx)
            if not link.external:
                nl.add_default_route(link.host_ip)
                nl.add_default_route(link.host_ip6)
    except OSError as e:
        raise SetupError(f"Failed to configure host0 in the machine: {e.strerror or e}.") from None


def teardown(link: Link) -> None:
    """Delete the pair now, for a reboot: the kernel would too, but only once the machine's network
    namespace is freed, asynchronously."""
    if link.zone:
        leave_zone(link, delete_port=True)
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
    net = parse_network(f"{link.container_ip}/{link.prefix}", strict=False)
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


class Extra:
    """--network-interface, --network-veth-extra, --network-macvlan and --network-ipvlan: what else goes
    into the machine's namespace. The supervisor holds that namespace (netns_fd) so that, once PID 1 is
    gone, the interfaces can still be moved back: the kernel would return a physical one by itself but
    destroy a virtual one. A moved interface keeps its host name as an alternative name inside, as
    upstream's do; a host altname that the new name takes is given back afterwards."""

    __slots__ = ("freed_altnames", "interfaces", "ipvlan", "macvlan", "moved", "netns_fd", "veth_extra")

    def __init__(
        self,
        interfaces: list[tuple[str, str]],
        veth_extra: list[tuple[str, str]],
        macvlan: list[tuple[str, str]] | None = None,
        ipvlan: list[tuple[str, str]] | None = None,
    ) -> None:
        self.interfaces = interfaces
        self.veth_extra = veth_extra
        self.macvlan = macvlan or []
        self.ipvlan = ipvlan or []
        self.moved: list[tuple[str, str]] = []
        self.freed_altnames: list[tuple[str, str]] = []  # (host name, its altname that went inside)
        self.netns_fd = -1


def check_extra(
    interfaces: list[tuple[str, str]],
    veth_extra: list[tuple[str, str]],
    macvlan: list[tuple[str, str]] | None = None,
    ipvlan: list[tuple[str, str]] | None = None,
) -> Extra:
    """Refuse before anything is made: an interface that is not there, a name twice, or an extra
    pair's host name already taken."""
    from hutch.linux import rtnl

    macvlan, ipvlan = macvlan or [], ipvlan or []
    inner = [i for _, i in interfaces + veth_extra + macvlan + ipvlan]
    for n in ("host0", *inner):
        if inner.count(n) > 1:
            raise SetupError(f"Network interface name {n} is given twice inside the machine.")
    seen: list[str] = []
    for outer, _ in interfaces:
        if outer in seen:
            raise SetupError(f"Network interface {outer} is given twice.")
        seen.append(outer)
    for outer, _ in interfaces + macvlan + ipvlan:
        if not rtnl.index(outer):
            raise SetupError(f"Network interface {outer} does not exist.", "see 'ip link'")
    for outer, _ in veth_extra:
        if rtnl.index(outer):
            raise SetupError(
                f"Network interface {outer} already exists.", "pick another name for the extra pair"
            )
    return Extra(interfaces, veth_extra, macvlan, ipvlan)


def setup_extra(extra: Extra, pid1: int) -> None:
    """In the host's namespace: move the interfaces into PID 1's, renamed; make the extra pairs and
    the macvlan and ipvlan links; then, inside, the host names as alternative names."""
    from hutch.linux import rtnl

    extra.netns_fd = os.open(f"/proc/{pid1}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with rtnl.Netlink() as nl:
            for outer, inner in extra.interfaces:
                idx = rtnl.index(outer)
                if inner != outer and rtnl.index(inner) == idx:
                    # The new name is one of the interface's altnames: it cannot also be its name.
                    nl.altname(idx, inner, add=False)
                    extra.freed_altnames.append((outer, inner))
                nl.move(idx, inner, netns_pid=pid1)
                extra.moved.append((outer, inner))
            for outer, inner in extra.veth_extra:
                nl.add_veth(outer, inner, pid1)
                nl.set_up(rtnl.index(outer))
            for kind, links in (("macvlan", extra.macvlan), ("ipvlan", extra.ipvlan)):
                for outer, inner in links:
                    nl.add_on(kind, inner, rtnl.index(outer), pid1)
        renamed = [(o, i) for o, i in extra.moved if o != i]

        def keep_host_names(nl: Any, host: int) -> None:
            for outer, inner in renamed:
                _try_altname(nl, inner, outer, True)

        if renamed:
            _in_netns(extra.netns_fd, keep_host_names)
    except OSError as e:
        hint = "this kernel lacks that link type's driver" if e.errno == 95 else None  # EOPNOTSUPP
        what = e.strerror or e
        raise SetupError(f"Failed to set up the machine's network interfaces: {what}.", hint) from None


def _try_altname(nl: Any, name: str, alt: str, add: bool) -> None:
    from hutch.linux import rtnl

    try:
        nl.altname(rtnl.index(name), alt, add)
    except OSError as e:
        print(f"hutch: {name}: {e.strerror}", file=sys.stderr)


def _in_netns(netns_fd: int, body: Any) -> Any:
    """BODY(netlink, host) with a netlink socket and interface lookups in the namespace NETNS_FD; HOST
    is an fd of the namespace we came from (a target to move links back to)."""
    from hutch.linux import libc, rtnl

    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(netns_fd, libc.CLONE_NEWNET)
        try:
            with rtnl.Netlink() as nl:
                return body(nl, host)
        finally:
            libc.setns(host, libc.CLONE_NEWNET)
    finally:
        os.close(host)


def teardown_extra(extra: Extra) -> None:
    """Once PID 1 is gone: the moved interfaces back to the host under their own names. Extra pairs
    and links go with the namespace, which we let go of last."""
    if extra.netns_fd < 0:
        return
    from hutch.linux import rtnl

    def move_back(nl: Any, host: int) -> None:
        for outer, inner in extra.moved:
            idx = rtnl.index(inner)
            if not idx:
                continue
            try:
                if outer != inner:
                    try:
                        nl.altname(idx, outer, add=False)  # or the old name is taken
                    except OSError:
                        pass
                nl.move(idx, outer, netns_fd=host)
            except OSError as e:
                print(f"hutch: Failed to move {outer} back to the host: {e.strerror}", file=sys.stderr)

    if extra.moved:
        _in_netns(extra.netns_fd, move_back)
        if extra.freed_altnames:
            with rtnl.Netlink() as hnl:
                for outer, alt in extra.freed_altnames:
                    _try_altname(hnl, outer, alt, True)
        extra.moved = []
        extra.freed_altnames = []
    os.close(extra.netns_fd)
    extra.netns_fd = -1


def setup_inside_of(link: Link, pid1: int) -> None:
    """setup_inside() from the host's side, in PID1's network namespace: for a machine without a user
    namespace, whose PID 1 builds its own tree."""
    fd = os.open(f"/proc/{pid1}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _in_netns(fd, lambda nl, host: setup_inside(link))
    finally:
        os.close(fd)


def open_netns(path: str) -> int:
    """--network-namespace-path: an fd of that network namespace, checked to be one."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError(f"Failed to open network namespace {path}: {e.strerror}.") from None
    try:
        kind = fcntl.ioctl(fd, 0xB703)  # NS_GET_NSTYPE
    except OSError:
        kind = 0
    if kind != 0x40000000:  # CLONE_NEWNET
        os.close(fd)
        raise SetupError(f"{path} is not a network namespace.", "give a file like /run/netns/NAME")
    return fd
