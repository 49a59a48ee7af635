"""The systemd-host lane (issue 18), started: hutch's checkout in a Debian trixie VM where systemd is
PID 1 on the pure cgroup v2 hierarchy (tests/vm/lane.py). One boot runs the whole batch; each check
prints a line the test reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.vm

CHECKS = """
set -u
echo "pid1=$(cat /proc/1/comm)"
echo "cgroupfs=$(stat -fc %T /sys/fs/cgroup)"
echo "kernel=$(uname -r)"
cd /tmp && PYTHONPATH=/mnt/checkout python3 -m hutch --version && echo "hutch=ran"
"""


def test_the_lane_boots_systemd_on_cgroup_v2_and_runs_hutch(tmp_path: Path) -> None:
    from lane import boot, image

    rc, out = boot(image(), tmp_path, REPO, CHECKS)
    facts = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln and " " not in ln.split("=", 1)[0])
    assert rc == 0, out
    assert facts.get("pid1") == "systemd" and facts.get("cgroupfs") == "cgroup2fs", out
    assert facts.get("kernel", "").startswith("6.12"), out
    assert facts.get("hutch") == "ran", out
