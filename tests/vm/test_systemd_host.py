"""The systemd-host lane (issue 18): hutch's checkout in a Debian trixie VM where systemd 257 is PID 1 on
the pure cgroup v2 hierarchy (tests/vm/lane.py), on Debian 13's 6.12 kernel and Debian 12's 6.1. Each
boot runs one section of tests/vm/checks.sh, whose KEY=VALUE lines are checked here; systemd's own
tools (systemctl, systemd-cgls, machinectl, journalctl -M, systemd-analyze -M, systemd-run -M) are the
reference, and systemd-nspawn 257 runs the same steps beside hutch for the times in bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, debian_image

pytestmark = pytest.mark.vm

SCRIPT = "exec /bin/bash /mnt/checkout/tests/vm/checks.sh {section}\n"


def _facts(out: str) -> dict[str, str]:
    facts = {}
    for line in out.split("\n"):  # not splitlines(): a console's \r is no line break here
        key, eq, value = line.partition("=")
        if eq and key.replace("_", "").isalnum():
            facts[key] = value.rstrip("|\r")
    return facts


@pytest.fixture(scope="module")
def vm() -> Path:
    from lane import image

    return image(debian_image())


def _boot(vm: Path, share: Path, section: str, version: str, keep: bool = False) -> dict[str, str]:
    from lane import boot, kernel

    rc, out = boot(vm, share, REPO, SCRIPT.format(section=section), kernel(vm, version), keep=keep)
    facts = _facts(out)
    assert rc == 0 and facts.get("done") == section, out
    facts["_out"] = out
    return facts


def _check_spawns(f: dict[str, str]) -> None:
    out = f["_out"]
    assert f["bootstrap"] == "0", out
    assert f["spawn"] == "spawned", out
    assert f["spawn_cgroup"] == "0::/", out  # its own cgroup namespace, rooted at the payload
    oom = f["spawn_oom"].split("|")
    assert oom[0] == "0" and oom[-1] == "refused", out  # the value the checks run with, and no lower
    # Overlay roots and layers (detached clones as layers are refused before 6.15: the fallback).
    assert f["ephemeral"] == "ephemeral-ok" and f["ephemeral_left"] == "1", out
    assert f["volatile"] == "volatile-ok", out
    assert f["thin"] == "thin-ok" and f["thin_kept"] == "x", out
    assert f["overlay_opt"] == "lower|overlay-ok" and f["overlay_upper"] == "w", out
    # DevicePolicy=closed on the machine's scope: without a user namespace the container can make a
    # node for the host's disk, and cannot open it.
    assert "null-ok" in f["devpolicy"] and "disk-opened" not in f["devpolicy"], out
    assert "Operation not permitted" in f["devpolicy"], out


def _check_machine(f: dict[str, str]) -> None:
    out = f["_out"]
    assert f["start_rc"] == "0", out
    assert f["scope_active"] == "active" and f["scope_delegate"] == "yes", out
    assert f["scope_slice"] == "machine.slice" and f["list_units"] == "1", out
    assert f["cgls"] == "2", out  # supervisor and payload, as systemd-cgls shows the unit
    assert set(["cpuset", "cpu", "io", "memory", "pids"]) <= set(f["guest_controllers"].split()), out
    assert "bb/container/hutch" in f["machinectl_list"].split("|"), out
    assert "Unit: machine-bb.scope" in f["machinectl_status"] and "Leader:" in f["machinectl_status"], out
    assert f["machine_unit"] == "machine-bb.scope", out
    assert "/machine.slice/machine-bb.scope/payload" in f["shell_cgroup"], out  # hutch shell: inside
    assert f["poweroff_rc"] == "0" and f["scope_after"] != "active" and f["machined_after"] == "0", out


def _check_limits(f: dict[str, str]) -> None:
    out = f["_out"]
    assert f["limits_start"] == "0", out
    assert f["memory_max"] == str(32 << 20) and f["pids_max"] == "20", out
    assert f["cpu_max"] == "20000 100000" and f["unit_memory_max"] == str(32 << 20), out
    assert f["shell_dd"] not in ("", "0"), out  # a 64M buffer in a 32M machine: killed
    # dd, not the supervisor (counted in the scope's memory, and exempt): the machine runs on.
    assert f["oom_alive"] == "active" and f["oom_supervisor"] == "-1000" and f["oom_leader"] == "0", out
    assert int(f["shell_forks"] or 0) > 0, out  # 30 sleeps in a TasksMax=20 machine: refused forks
    assert int(f["cpu_throttled"]) > 0 and int(f["cpu_share_pct"]) <= 30, out  # CPUQuota=20%
    assert f["setprop_rc"] == "0" and f["memory_max_live"] == str(48 << 20), out
    assert f["unit_memory_max_live"] == str(48 << 20), out
    # systemd keeps the unit's limits when it rewrites machine.slice, on daemon-reload and after logind.
    assert f["reload_memory_max"] == str(48 << 20) and "memory" in f["reload_subtree"].split(), out
    assert f["reload_shell_dd"] not in ("", "0"), out
    assert f["logind_restart_status"] == "0" and f["logind_memory_max"] == str(48 << 20), out


def _check_systemd_guest(f: dict[str, str]) -> None:
    out = f["_out"]
    assert f["deb_start"] == "0", out
    assert f["is_system_running"] in ("running", "degraded"), out
    assert f["analyze"] == "1" and int(f["journal"]) > 0 and int(f["cgls_m"]) > 0, out
    assert f["systemd_run_m"] == "rc0" and f["machinectl_shell"] == "1", out
    assert set(["cpu", "memory", "pids"]) <= set(f["deb_guest_controllers"].split()), out


def _check_machined_verbs(f: dict[str, str]) -> None:
    out = f["_out"]
    # Registered over varlink (io.systemd.Machine.Register) where machined listens there, and over
    # D-Bus (RegisterMachineWithNetwork) where its socket is missing.
    assert f["varlink_socket"] == "yes" and f["varlink_unit"] == "machine-bb.scope", out
    assert f["dbus_start"] == "0" and f["dbus_unit"] == "machine-bb.scope", out
    # machinectl terminate: systemd stops the scope; hutch's registry and machined let the machine go.
    assert f["terminated_scope"] != "active" and f["terminated_hutch"] != "0", out
    assert f["terminated_machined"] == "0", out
    # The supervisor SIGKILLed: nothing of the machine is left anywhere, and it starts again.
    assert f["killed_scope"] != "active" and f["killed_hutch"] != "0" and f["killed_machined"] == "0", out
    assert f["restarted"] == "0", out
    # machinectl poweroff of a systemd guest: SIGRTMIN+4 to the leader, the guest's own poweroff.
    assert f["machinectl_poweroff"] != "0" and f["machinectl_poweroff_machined"] == "0", out


def _check_suite(f: dict[str, str]) -> None:
    assert f["pytest_rc"] == "0" and " passed" in f["pytest"], f["pytest"].replace("|", "\n")


def test_systemd_host_on_6_12_then_rebooted_into_6_1(vm: Path, tmp_path: Path) -> None:
    f = _boot(vm, tmp_path, "main", "6.12", keep=True)
    out = f["_out"]
    assert f["pid1"] == "systemd" and f["cgroupfs"] == "cgroup2fs", out
    assert f["kernel"].startswith("6.12."), out
    _check_spawns(f)
    _check_machine(f)
    _check_limits(f)
    assert f["session_start"] == "0" and f["session_survivor"] == "0", out  # outlives its login session
    assert f["session_scope"] == "active", out
    _check_systemd_guest(f)
    _check_suite(f)
    # hutch enable --now: hutch@.service (Type=notify, --keep-unit) started by systemctl, the machine in
    # the unit's own cgroup.
    assert f["enable_rc"] == "0" and f["unit_active"] == "active", out
    assert f["unit_machine"] == "hutch@bb.service" and int(f["unit_payload"]) > 0, out
    assert f["unit_in_slice"] == "machine.slice", out
    # The same disk rebooted, into Debian 12's kernel: the enabled machine is back, then the checks that
    # depend on the kernel run again.
    r = _boot(vm, tmp_path, "reboot-old", "6.1")
    out = r["_out"]
    assert r["rebooted_active"] == "active" and r["rebooted_hutch"] == "0", out
    assert r["rebooted_machined"] == "1", out
    assert r["unit_stop"] == "0" and r["unit_stopped_machine"] != "0", out
    assert r["kernel"].startswith("6.1.") and r["cgroupfs"] == "cgroup2fs", out
    _check_spawns(r)
    _check_machine(r)
    _check_limits(r)
    _check_systemd_guest(r)
    _check_machined_verbs(r)
    _check_suite(r)
