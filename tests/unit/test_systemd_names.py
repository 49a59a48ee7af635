"""Pieces of the systemd-host support that hold without systemd: the kernel floor, systemd's unit-name
escaping (as `systemd-escape` prints it), the unit a cgroup path belongs to. The VM lane
(tests/vm/test_systemd_host.py) shows the rest against systemd itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hutch.container import systemd
from hutch.container.prepare import check_kernel
from hutch.errors import SetupError


@pytest.mark.parametrize("release", ["6.1.0-28-amd64", "6.12.48+deb13-amd64", "6.18.0", "7.0-rc1"])
def test_supported_kernels_pass(release: str) -> None:
    check_kernel(release)


@pytest.mark.parametrize("release", ["5.15.0-91-generic", "6.0.19", "4.19.0-26-amd64", "garbage"])
def test_older_kernels_are_refused_in_one_line(release: str) -> None:
    with pytest.raises(SetupError) as e:
        check_kernel(release)
    assert "Linux 6.1 or newer" in str(e.value) and release in str(e.value) and "\n" not in str(e.value)


NAMES = ["bb", "my-box", "a.b", "x_y", "-lead", ".dot", "ümlaut", "a b"]


@pytest.mark.parametrize("name", NAMES)
def test_unit_escape_matches_systemd_escape(name: str) -> None:
    tool = shutil.which("systemd-escape")
    if tool is None:
        pytest.fail("systemd-escape is missing (apt-get install systemd)")
    want = subprocess.run([tool, "--", name], capture_output=True, text=True, check=True).stdout.strip()
    assert systemd.unit_escape(name) == want


def test_unit_of_a_cgroup_path() -> None:
    assert systemd.unit_of("/machine.slice/machine-bb.scope") == "machine-bb.scope"
    assert systemd.unit_of("/system.slice/hutch@bb.service") == "hutch@bb.service"
    assert systemd.unit_of("/machine.slice/machine-bb.scope/supervisor") == "machine-bb.scope"
    assert systemd.unit_of("/") == ""
