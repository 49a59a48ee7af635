"""Every escape class of security.md section 2, probed from inside real containers in each mode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import spawn

# Every check the audit makes; a run must report each one, so a probe that silently stops is caught.
CHECKS = {
    "userns_root_is_not_host_root", "pidns_private", "fd_leak", "cwd_inside", "foreign_process_fs_access",
    "core_pattern_not_writable", "modprobe_not_writable", "sysrq-trigger_not_writable",
    "uevent_helper_not_writable", "panic_on_oom_not_writable", "sys_read_only", "kallsyms_masked",
    "kcore_masked", "cgroup_host_tree_not_visible", "no_host_devices", "mknod_devices_unusable",
    "kernel_log_not_readable", "finit_module_blocked", "settimeofday_blocked", "swapon_blocked",
    "keyctl_blocked", "bpf_blocked", "iopl_blocked", "open_by_handle_at_blocked", "chroot_escape_blocked",
    "reboot_cannot_reach_host", "host_network_not_controllable", "no_host_runtime_sockets",
    "tty_not_host_terminal", "umount_kallsyms", "umount_keys", "umount_timer_list", "umount_sys",
    "umount_sysrq-trigger", "remount_proc_sys_rw", "after_umount_core_pattern_not_writable",
    "after_umount_modprobe_not_writable", "after_umount_sysrq-trigger_not_writable",
    "after_umount_uevent_helper_not_writable", "after_umount_panic_on_oom_not_writable",
    "new_procfs_core_pattern", "new_procfs_sysrq", "new_sysfs_uevent_helper", "cgroup_release_agent",
    "readonly_root_enforced", "nested_core_pattern_not_writable", "nested_modprobe_not_writable",
    "nested_sysrq-trigger_not_writable", "nested_uevent_helper_not_writable",
    "nested_panic_on_oom_not_writable",
}  # fmt: skip

# Without a user namespace the container's root is the host's root: these probes fail, as they do for
# systemd-nspawn without -U (security.md's calibration). Asserted exactly, so a regression shows.
FAILS_WITHOUT_USERNS = {
    "userns_root_is_not_host_root", "host_network_not_controllable", "umount_kallsyms", "umount_keys",
    "umount_timer_list", "umount_sys", "after_umount_core_pattern_not_writable",
    "after_umount_panic_on_oom_not_writable", "new_procfs_core_pattern",
}  # fmt: skip


def run_audit(image: Path, audit: Path, *opts: str) -> tuple[set[str], set[str]]:
    (image / "audit").touch()  # the mount point must exist in a read-only image
    r = spawn(image, "/audit", opts=(f"--bind-ro={audit}:/audit", *opts))
    assert r.returncode == 0, r.stderr
    passed, failed = set(), set()
    for line in r.stdout.replace("\r", "").splitlines():
        verdict, _, rest = line.partition(" ")
        name = rest.split(":")[0]
        (passed if verdict == "PASS" else failed).add(name)
    assert passed | failed == CHECKS, (
        f"missing: {CHECKS - passed - failed}, unexpected: {(passed | failed) - CHECKS}"
    )
    return passed, failed


@pytest.mark.parametrize(
    "opts",
    [
        (),
        ("-U",),
        ("-U", "--private-users-ownership=map"),
        ("-U", "--private-users-ownership=off"),
        ("--private-network",),
        ("--read-only",),
        ("-x",),
    ],
    ids=["default", "U", "U-map", "U-off", "private-network", "read-only", "ephemeral"],
)
def test_every_probe_holds(busybox: Path, audit: Path, opts: tuple[str, ...]) -> None:
    _, failed = run_audit(busybox, audit, *opts)
    assert failed == set(), f"escapes: {sorted(failed)}"


def test_every_probe_holds_with_chown(busybox: Path, audit: Path) -> None:
    _, failed = run_audit(busybox, audit, "-U", "--private-users-ownership=chown")
    assert failed == set()


def test_private_users_no_fails_exactly_the_known_set(busybox: Path, audit: Path) -> None:
    _, failed = run_audit(busybox, audit, "--private-users=no")
    assert failed == FAILS_WITHOUT_USERNS


def test_identity_mapping_shares_root(busybox: Path, audit: Path) -> None:
    _, failed = run_audit(busybox, audit, "--private-users=identity")
    assert failed == {"userns_root_is_not_host_root"}


def test_readonly_root_cannot_be_remounted(busybox: Path, audit: Path) -> None:
    (busybox / ".hutch-ro").write_text("")  # tells the audit the root is meant to be read-only
    passed, failed = run_audit(busybox, audit, "--read-only")
    assert "readonly_root_enforced" in passed and not failed
    subprocess.run(["rm", "-f", str(busybox / ".hutch-ro")], check=True)


def test_device_cgroup_without_userns(busybox: Path) -> None:
    """On a v1 devices host, --private-users=no still cannot use devices it creates (nspawn's
    DevicePolicy=closed); the pseudo devices keep working."""
    script = (
        "mknod /dev/vcsx c 7 0 2>/dev/null && echo made; mknod /dev/nullx c 1 3 && echo hi > /dev/nullx "
        "&& echo null-ok; cat /sys/fs/cgroup/devices.list 2>/dev/null | head -1"
    )
    r = spawn(busybox, "/bin/sh", "-c", script, opts=("-P", "--private-users=no"))
    assert "made" not in r.stdout and "null-ok" in r.stdout
