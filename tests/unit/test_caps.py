from __future__ import annotations

import pytest

from hutch.linux import caps
from hutch.settings.cmdline import parse


def test_parse_names() -> None:
    assert caps.parse("CAP_NET_ADMIN,sys_time") == {12, 25}
    assert caps.parse("all") == set(caps.ALL)
    with pytest.raises(ValueError, match="CAP_FOO"):
        caps.parse("CAP_FOO")


def test_nspawn_default_mask() -> None:
    # systemd-nspawn 252's CapBnd on a host with every capability, read from a container.
    mask = sum(1 << c for c in caps.NSPAWN_DEFAULT)
    assert mask | (1 << 24) == 0xFCECAFFF | (1 << 24)
    net = caps.retained(set(), set(), private_network=True)
    assert sum(1 << c for c in net) == mask | (1 << caps.NUMBERS["NET_ADMIN"])


def test_add_and_drop() -> None:
    keep = caps.retained({caps.NUMBERS["SYS_TIME"]}, {caps.NUMBERS["SYS_ADMIN"]}, False)
    assert caps.NUMBERS["SYS_TIME"] in keep and caps.NUMBERS["SYS_ADMIN"] not in keep
    assert caps.NUMBERS["SYS_MODULE"] not in keep


def test_options() -> None:
    s = parse(
        [
            "--capability=CAP_SYS_TIME",
            "--drop-capability=mknod,CAP_CHOWN",
            "--no-new-privileges=yes",
            "--ambient-capability=CAP_NET_RAW",
        ]
    )
    assert s.capabilities == {25} and s.drop_capabilities == {27, 0} and s.no_new_privileges
    assert s.ambient_capabilities == {13}
