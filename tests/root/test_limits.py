"""Resource limits for real, on this hybrid host's v1 controllers and, in the systemd-host lane's VM
(tests/vm), as a systemd unit's properties on pure cgroup v2: the OOM killer acts inside the machine
only, TasksMax stops fork, CPUQuota caps CPU use, set-property changes a running machine, nothing is
left behind; bad values are refused."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from conftest import run, wait_for

pytestmark = pytest.mark.usefixtures("private_net")


def scopes(name: str) -> list[str]:
    """The machine's cgroups: v1 hierarchies' and the unified one's."""
    return glob.glob(f"/sys/fs/cgroup/*/machine.slice/machine-{name}.scope") + glob.glob(
        f"/sys/fs/cgroup/machine.slice/machine-{name}.scope"
    )


def no_scopes_left(name: str) -> None:
    wait_for(lambda: scopes(name) == [], 5)  # where systemd is PID 1, systemd removes the unit's


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


def test_supervisor_exempt_from_the_oom_killer_guest_not(busybox: Path, hutch_env: Path) -> None:
    """The supervisor counts against the machine's MemoryMax where systemd runs it: the OOM killer must
    pick a guest process, never it (the VM lane saw it take a whole machine down). The guest starts
    with our own value and cannot exempt itself."""
    ours = Path("/proc/self/oom_score_adj").read_text().strip()
    # Without CAP_SYS_RESOURCE (this machine's root lacks it: a container itself) no process may lower
    # its value: the supervisor keeps ours, and the VM lane shows the exemption (tests/vm/checks.sh).
    cap_eff = int(Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0], 16)
    exempt = "-1000" if cap_eff >> 24 & 1 else ours
    run("start", "bb", check=True)
    try:
        leader = run("show", "bb", "-p", "Leader", "--value", check=True).stdout.strip()
        supervisor = Path(f"/proc/{leader}/status").read_text().split("PPid:")[1].split()[0]
        assert Path(f"/proc/{supervisor}/oom_score_adj").read_text().strip() == exempt
        assert Path(f"/proc/{leader}/oom_score_adj").read_text().strip() == ours
    finally:
        run("terminate", "--wait", "bb")
    no_scopes_left("bb")
    # PID 1 itself, and what it forks: our value, and no lower (the kernel's floor is the last value a
    # privileged writer set: the supervisor's own -1000 would have been it).
    script = "cat /proc/self/oom_score_adj; echo -1000 > /proc/self/oom_score_adj || echo refused; "
    script += "sh -c 'echo 500 > /proc/self/oom_score_adj && echo raised'"
    _rc, out, err = spawn(busybox, script=script)
    assert out.split()[0] == ours and "refused" in out and "raised" in out, out + err


def test_tasks_max_stops_fork(busybox: Path) -> None:
    _rc, out, _ = spawn(
        busybox, "TasksMax=4", script="for i in 1 2 3 4 5 6; do sleep 1 & done; wait; echo done"
    )
    assert "can't fork" in out


def test_cpu_quota(busybox: Path) -> None:
    script = 'timeout 2 sh -c "while :; do :; done"; times'
    _rc, out, _ = spawn(busybox, "CPUQuota=20%", script=script)
    # `times`: the children's user and system time, as 0m0.190s 0m0.040s.
    used = sum(float(f.split("m")[1].rstrip("s")) for f in out.strip().splitlines()[-1].split()[:2])
    assert 0.1 <= used <= 0.7, out  # 20% of 2 s, give or take the scheduler (and the VM lane's emulation)


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
    no_scopes_left("bb")


def test_start_stop_cycles_leave_no_cgroup(busybox: Path, hutch_env: Path) -> None:
    props = ("--property=MemoryMax=64M", "--property=TasksMax=50", "--property=CPUWeight=50")
    for i in range(100):
        if i % 2:
            run("start", *props, "bb", check=True)
            run("terminate", "--wait", "bb", check=True)
        else:
            rc, _, err = spawn(busybox, "MemoryMax=64M", "TasksMax=50", "CPUWeight=50", script="true")
            assert rc == 0, err
    no_scopes_left("bb")


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
    no_scopes_left("bb")
