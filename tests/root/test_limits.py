"""Resource limits on this hybrid host's v1 controllers, for real: the OOM killer acts inside the machine
only, TasksMax stops fork, CPUQuota caps CPU use, set-property changes a running machine, nothing is
left behind; bad values are refused."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.usefixtures("private_net")

SCOPES = "/sys/fs/cgroup/*/machine.slice/machine-{}.scope"


def spawn(image: Path, *props: str, script: str) -> tuple[int, str, str]:
    r = run("spawn", "-q", "-D", str(image), *(f"--property={p}" for p in props), "/bin/sh", "-c", script)
    return r.returncode, r.stdout, r.stderr


def test_memory_max_kills_inside_only(busybox: Path) -> None:
    rc, out, _ = spawn(
        busybox, "MemoryMax=32M", script="dd if=/dev/zero of=/dev/null bs=64M count=1; echo rc=$?"
    )
    assert rc == 0 and "rc=137" in out  # dd was OOM-killed; the machine's shell carried on
    _rc, out, _ = spawn(
        busybox, "MemoryMax=128M", script="dd if=/dev/zero of=/dev/null bs=64M count=1; echo rc=$?"
    )
    assert "rc=0" in out


def test_tasks_max_stops_fork(busybox: Path) -> None:
    _rc, out, _ = spawn(
        busybox, "TasksMax=4", script="for i in 1 2 3 4 5 6; do sleep 1 & done; wait; echo done"
    )
    assert "can't fork" in out


def test_cpu_quota(busybox: Path) -> None:
    script = 'timeout 2 sh -c "while :; do :; done"; times'
    _rc, out, _ = spawn(busybox, "CPUQuota=20%", script=script)
    user = float(out.strip().splitlines()[-1].split()[0].replace("m", " ").split()[1].rstrip("s"))
    assert 0.2 <= user <= 0.7, out  # 20% of 2 s, give or take the scheduler


def test_set_property_on_a_running_machine(busybox: Path, hutch_env: Path) -> None:
    run("start", "--property=MemoryMax=256M", "bb", check=True)
    try:
        r = run("set-property", "bb", "TasksMax=6")  # init, getty, the shell and its parent: 2 left
        assert r.returncode == 0, r.stderr
        r = run("shell", "bb", "/bin/sh", "-c", "for i in 1 2 3 4 5; do sleep 1 & done; wait; echo done")
        assert "can't fork" in r.stdout + r.stderr
        r = run("set-property", "bb", "TasksMax=100", "MemoryMax=4K")
        assert r.returncode != 0 and "below the machine's current memory use" in r.stderr
        r = run("status", "bb", check=True)
        assert "MemoryMax=256M" in r.stdout and "TasksMax=6" in r.stdout and "Usage: memory" in r.stdout
        r = run("top", "-o", "json", check=True)
        (row,) = json.loads(r.stdout)
        assert row["machine"] == "bb" and row["tasks"] >= 2 and row["memory"] > 0
        r = run("top", "-n", "1", "-d", "0.2", check=True)
        assert r.stdout.splitlines()[0].split() == ["MACHINE", "%CPU", "MEMORY", "TASKS", "IO"]
    finally:
        run("terminate", "--wait", "bb")
    assert glob.glob(SCOPES.format("bb")) == []


def test_start_stop_cycles_leave_no_cgroup(busybox: Path, hutch_env: Path) -> None:
    props = ("--property=MemoryMax=64M", "--property=TasksMax=50", "--property=CPUWeight=50")
    for i in range(100):
        if i % 2:
            run("start", *props, "bb", check=True)
            run("terminate", "--wait", "bb", check=True)
        else:
            rc, _, err = spawn(busybox, "MemoryMax=64M", "TasksMax=50", "CPUWeight=50", script="true")
            assert rc == 0, err
    assert glob.glob(SCOPES.format("bb")) == []


def test_bad_properties(busybox: Path) -> None:
    cases = {
        "Bogus=1": "Unknown property 'Bogus'",
        "MemoryMax=lots": "Invalid MemoryMax= value 'lots'",
        "MemoryMax": "Invalid property 'MemoryMax'",
        "CPUQuota=fast": "Invalid CPUQuota= value 'fast'",
        "CPUWeight=0": "Invalid CPUWeight= value '0'",
        "AllowedCPUs=3-1": "Invalid AllowedCPUs= value '3-1'",
        "TasksMax=-5": "Invalid TasksMax= value '-5'",
        "MemoryMax=150%": "percentage out of range",
    }
    rc, _, _ = spawn(busybox, "IOWeight=500", script="true")  # BFQ here: a weight it can apply
    assert rc == 0
    for prop, msg in cases.items():
        rc, _, err = spawn(busybox, prop, script="true")
        assert rc != 0 and msg in err and len(err.strip().splitlines()) == 1, (prop, err)
    r = run("set-property", "nosuch", "TasksMax=5")
    assert r.returncode != 0 and "No machine 'nosuch' known" in r.stderr
    assert glob.glob(SCOPES.format("bb")) == []
