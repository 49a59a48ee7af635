"""Limits: systemd's value syntax, and the cgroup v2 backend against a directory laid out like cgroupfs
(this host's cgroup2 has no controllers, so the v2 files are checked here; v1 is tested for real in
tests/root/test_limits.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.container import limits
from hutch.errors import SettingsError


def test_values() -> None:
    assert limits.parse("MemoryMax=512M") == ("MemoryMax", 512 << 20)
    assert limits.parse("MemoryMax=1.5G") == ("MemoryMax", int(1.5 * (1 << 30)))
    assert limits.parse("MemoryHigh=infinity") == ("MemoryHigh", limits.INFINITY)
    assert limits.parse("MemorySwapMax=0") == ("MemorySwapMax", 0)
    assert limits.parse("CPUQuota=150%") == ("CPUQuota", 150.0)
    assert limits.parse("CPUWeight=100") == ("CPUWeight", 100)
    assert limits.parse("AllowedCPUs=0-1,3") == ("AllowedCPUs", "0-1,3")
    assert limits.parse("TasksMax=infinity") == ("TasksMax", limits.INFINITY)
    _, value = limits.parse("MemoryMax=50%")
    assert isinstance(value, int) and value > 0
    for bad in ("Nope=1", "MemoryMax", "MemoryMax=-1", "CPUQuota=50", "CPUWeight=10001", "IOWeight=x",
                "AllowedCPUs=a", "TasksMax=0", "MemoryMax=0%"):  # fmt: skip
        with pytest.raises(SettingsError):
            limits.parse(bad)


def _fake_v2(tmp_path: Path, controllers: str) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_v2_backend_writes_what_systemd_writes(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path, "cpuset cpu io memory pids")
    b = limits.backend("web", str(root))
    assert isinstance(b, limits.V2)
    props = limits.parse_all(
        ["MemoryMax=512M", "MemoryHigh=256M", "MemorySwapMax=0", "CPUQuota=50%", "CPUWeight=200",
         "AllowedCPUs=0", "TasksMax=100", "IOWeight=300", "TasksMax=200"]
    )  # fmt: skip
    b.prepare(props)
    b.apply(props)
    scope = root / "machine.slice/machine-web.scope"
    got = {f.name: f.read_text() for f in scope.iterdir()}
    assert got == {
        "memory.max": str(512 << 20), "memory.high": str(256 << 20), "memory.swap.max": "0",
        "cpu.max": "50000 100000", "cpu.weight": "200", "cpuset.cpus": "0", "pids.max": "200",
        "io.weight": "default 300",
    }  # fmt: skip
    # Delegation: the controllers are enabled on the way down to the machine.
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +cpuset +io +memory +pids"
    assert (root / "machine.slice/cgroup.subtree_control").read_text() == "+cpu +cpuset +io +memory +pids"
    b.apply(limits.parse_all(["MemoryMax=infinity", "CPUQuota=infinity", "TasksMax=infinity"]))
    assert (scope / "memory.max").read_text() == "max" and (scope / "cpu.max").read_text() == "max 100000"
    assert (scope / "pids.max").read_text() == "max"
    (scope / "memory.current").write_text("1000000\n")
    (scope / "pids.current").write_text("7\n")
    (scope / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    (scope / "io.stat").write_text("8:0 rbytes=100 wbytes=50 rios=1 wios=1\n253:0 rbytes=10 wbytes=0\n")
    assert b.usage() == {"cpu_ns": 2_500_000, "memory": 1_000_000, "tasks": 7, "io_bytes": 160}
    with pytest.raises(SettingsError, match="below the machine's current memory use"):
        limits.check_usage({"MemoryMax": 1000}, b.usage())
    with pytest.raises(SettingsError, match="below the machine's current number of tasks"):
        limits.check_usage({"TasksMax": 3}, b.usage())


def test_v2_missing_controller_is_an_error(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path, "cpu pids")
    b = limits.backend("web", str(root))
    with pytest.raises(SettingsError, match="no memory controller"):
        b.prepare(limits.parse_all(["MemoryMax=1G"]))
