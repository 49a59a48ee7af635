"""What a machine's link gets from the host side while it runs: the DHCPv4 server (dhcp.py), the DNS
forwarder (dns.py), router advertisements and DHCPv6 (dhcp6.py). hutch configures host0 itself; these
answer a guest that runs its own network stack, and its resolver. Each is opened per boot by the
supervisor, polled in its loop (and, after the handover, by the slim monitor, which takes their
descriptors through handoff.py), and closed with the boot. One that cannot be opened costs a warning
line, never the machine. Loaded only for machines with a veth."""

from __future__ import annotations

import sys

from hutch.container.prepare import Prepared

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def open_all(prep: Prepared) -> None:
    link = prep.link
    if link is None:
        return
    ifname = link.bridge or link.ifname
    if not link.external and link.mac:
        from hutch.container import dhcp

        prep.lease = dhcp.Lease(link.mac, link.container_ip, link.host_ip, link.prefix, prep.dns)
        try:
            prep.dhcp_sock = dhcp.open_socket(ifname)
        except OSError as e:
            # hutch configured host0 already: only a guest's own DHCP client misses this.
            print(f"hutch: No DHCP server on {ifname}: {e.strerror}", file=sys.stderr)
    if prep.dns_upstream is not None:
        from hutch.container import dns

        try:
            listen, upstream = dns.open_sockets(link.host_ip, prep.dns_upstream)
            prep.dns_forwarder = dns.Forwarder(listen, upstream, prep.dns_upstream, prep.state_dir)
        except OSError as e:
            print(f"hutch: No DNS forwarder on {link.host_ip}: {e.strerror}", file=sys.stderr)
    if not link.external and link.mac and link.container_ip6:
        from hutch.container import dhcp6

        try:
            ra, sock6, ifindex = dhcp6.open_sockets(ifname)
            prep.router6 = dhcp6.Router(
                ra, sock6, ifindex, link.container_ip6, link.mac, dhcp6.duid(prep.uuid)
            )
            dhcp6.advertise(prep.router6)
        except OSError as e:
            print(f"hutch: No IPv6 router on {ifname}: {e.strerror}", file=sys.stderr)


def handlers(prep: Prepared) -> dict[int, Callable[[], None]]:
    """Each open service's descriptors, with what to call when one is readable."""
    out: dict[int, Callable[[], None]] = {}
    if prep.dhcp_sock is not None:
        from hutch.container import dhcp

        sock, lease = prep.dhcp_sock, prep.lease
        out[sock.fileno()] = lambda: dhcp.answer(sock, lease)
    fw = prep.dns_forwarder
    if fw is not None:
        from hutch.container import dns

        out[fw.listen.fileno()] = lambda: dns.on_query(fw)
        out[fw.upstream.fileno()] = lambda: dns.on_answer(fw)
    r6 = prep.router6
    if r6 is not None:
        from hutch.container import dhcp6

        out[r6.ra.fileno()] = lambda: dhcp6.on_ra_sock(r6)
        out[r6.dhcp.fileno()] = lambda: dhcp6.on_dhcp_sock(r6)
    return out


def close_all(prep: Prepared) -> None:
    if prep.dhcp_sock is not None:
        prep.dhcp_sock.close()
        prep.dhcp_sock = None
    if prep.dns_forwarder is not None:
        prep.dns_forwarder.listen.close()
        prep.dns_forwarder.upstream.close()
        prep.dns_forwarder = None
    if prep.router6 is not None:
        prep.router6.ra.close()
        prep.router6.dhcp.close()
        prep.router6 = None
