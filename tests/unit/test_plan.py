"""The mount plan is what the options say: masks, read-only kernel interfaces, user-namespace shifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.container import prepare
from hutch.paths import Paths
from hutch.settings.cmdline import parse


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    for d in ("usr/lib", "etc", "bin"):
        (img / d).mkdir(parents=True)
    (img / "usr/lib/os-release").write_text("ID=test\n")
    return img


_PREPARED: list[prepare.Prepared] = []


@pytest.fixture(autouse=True)
def _give_back() -> object:
    """What prepare() took (the image's lock, a UID range) is given back, as the supervisor would."""
    yield
    while _PREPARED:
        prepare.cleanup(_PREPARED.pop())


def plan_for(image: Path, hutch_env: Path, *argv: str) -> prepare.Prepared:
    prep = prepare.prepare(parse(["-q", "-D", str(image), *argv, "/bin/true"]), Paths.from_env())
    _PREPARED.append(prep)
    return prep


def describe(prep: prepare.Prepared) -> list[str]:
    return [op.describe() for op in prep.outer_ops + prep.inner_ops]


def test_masks_and_read_only_kernel_interfaces(image: Path, hutch_env: Path) -> None:
    d = describe(plan_for(image, hutch_env))
    for name in prepare.PROC_MASKED:
        assert f"mask /proc/{name}" in d
    assert prepare.PROC_MASKED == ("kallsyms", "kcore", "keys", "sysrq-trigger", "timer_list")
    assert any(x.startswith("mount bind +proc/sys on /proc/sys") and x.endswith("then ro") for x in d)
    assert any(x.startswith("mount sysfs on /sys (ro,") for x in d)
    for name in prepare.PROC_READ_ONLY:
        assert any(x.startswith(f"mount bind +proc/{name} on /proc/{name}") for x in d)
    assert not any("/proc/sys/net" in x for x in d)  # writable only with a private network


def test_private_network_makes_net_sysctls_writable(image: Path, hutch_env: Path) -> None:
    assert "bind /proc/sys/net writable" in describe(plan_for(image, hutch_env, "--private-network"))


def test_user_namespace_shifts_owned_file_systems(image: Path, hutch_env: Path) -> None:
    prep = plan_for(image, hutch_env)
    assert prep.uid_range is not None and prep.ownership == "map"
    base = prep.uid_range.base
    d = describe(prep)
    assert any(x.startswith("mount tmpfs on /run ") and f"uid={base},gid={base}" in x for x in d)
    assert any(x.startswith("mount devpts") and f"gid={base + 5}" in x for x in d)
    from hutch.container.prepare import cleanup

    cleanup(prep)  # releases the image lock and the UID range
    prep_no = plan_for(image, hutch_env, "--private-users=no")
    assert prep_no.uid_range is None
    assert not any("uid=" in x for x in describe(prep_no))


def test_security_defaults(image: Path, hutch_env: Path) -> None:
    prep = plan_for(image, hutch_env)
    assert prep.seccomp and len(prep.seccomp) % 8 == 0
    from hutch.linux import caps

    assert caps.NUMBERS["SYS_MODULE"] not in prep.keep_caps and caps.NUMBERS["SYS_ADMIN"] in prep.keep_caps
