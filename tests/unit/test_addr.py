"""hutch.container.addr against the standard library's ipaddress, which it stands in for on -n's path."""

from __future__ import annotations

import ipaddress

import pytest

from hutch.container import addr


@pytest.mark.parametrize(
    "text", ["10.88.0.0/16", "10.0.0.0/31", "fd68:7574:6368::/48", "0.0.0.0/0", "192.0.2.7/32", "::/0"]
)
def test_networks_match_ipaddress(text: str) -> None:
    ours, ref = addr.parse_network(text), ipaddress.ip_network(text)
    assert (ours.version, ours.address, ours.prefix) == (
        ref.version,
        int(ref.network_address),
        ref.prefixlen,
    )
    assert str(ours) == str(ref) and ours.size() == ref.num_addresses
    assert ours.host(1) == str(ref.network_address + 1)


def test_bad_networks_are_refused() -> None:
    for bad in ("nonsense", "10.0.0.0/33", "10.0.0.1/24", "fd00::1/64", "10.0.0.0/x", "", "1.2.3/8"):
        with pytest.raises(ValueError):
            addr.parse_network(bad)
    assert str(addr.parse_network("10.0.0.5/30", strict=False)) == "10.0.0.4/30"


def test_overlaps_contains_loopback() -> None:
    a, b = addr.parse_network("10.89.0.0/16"), addr.parse_network("10.89.128.0/17")
    assert a.overlaps(b) and b.overlaps(a)
    assert not a.overlaps(addr.parse_network("10.88.0.0/16"))
    assert not a.overlaps(addr.parse_network("fd00::/8"))
    assert a.contains(addr.parse_address("10.89.255.255")[1]) and not a.contains(
        addr.parse_address("10.90.0.0")[1]
    )
    assert addr.is_loopback("127.0.0.53") and addr.is_loopback("::1")
    assert not addr.is_loopback("192.0.2.53") and not addr.is_loopback("fe80::1")
