"""IP addresses and networks as integers: what -n needs of `ipaddress`, which imports `re` and
`functools` (~3 ms of a start, more than creating and addressing the veth pair)."""

from __future__ import annotations

import _socket


class Net:
    """An IPv4 or IPv6 network: its first address as an int, and its prefix length."""

    __slots__ = ("address", "prefix", "version")

    def __init__(self, version: int, address: int, prefix: int) -> None:
        self.version = version
        self.address = address
        self.prefix = prefix

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    def size(self) -> int:
        return 1 << (self.bits - self.prefix)

    def contains(self, address: int) -> bool:
        return self.address <= address < self.address + self.size()

    def overlaps(self, other: Net) -> bool:
        if self.version != other.version:
            return False
        return self.contains(other.address) or other.contains(self.address)

    def host(self, n: int) -> str:
        """The Nth address of the network, as text."""
        return to_text(self.version, self.address + n)

    def __str__(self) -> str:
        return f"{to_text(self.version, self.address)}/{self.prefix}"


def parse_address(text: str) -> tuple[int, int]:
    """(version, value) of an IPv4 or IPv6 address; ValueError if it is neither."""
    for version, family, size in ((4, _socket.AF_INET, 4), (6, _socket.AF_INET6, 16)):
        try:
            raw = _socket.inet_pton(family, text)
        except OSError:
            continue
        return version, int.from_bytes(raw[:size], "big")
    raise ValueError(f"{text!r} is not an IP address")


def parse_network(text: str, strict: bool = True) -> Net:
    """ADDRESS/PREFIX; with STRICT, host bits must be zero (as ipaddress.ip_network says)."""
    address, sep, length = text.partition("/")
    version, value = parse_address(address)
    bits = 32 if version == 4 else 128
    if not sep:
        prefix = bits
    elif length.isdigit() and int(length) <= bits:
        prefix = int(length)
    else:
        raise ValueError(f"{length!r} is not a valid prefix length")
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    if strict and value & ~mask:
        raise ValueError(f"{text} has host bits set")
    return Net(version, value & mask, prefix)


def to_text(version: int, value: int) -> str:
    if version == 4:
        return _socket.inet_ntop(_socket.AF_INET, value.to_bytes(4, "big"))
    return _socket.inet_ntop(_socket.AF_INET6, value.to_bytes(16, "big"))


def is_loopback(text: str) -> bool:
    version, value = parse_address(text)
    return value >> 24 == 127 if version == 4 else value == 1
