"""The Debian image boots with systemd as PID 1 to multi-user.target; root logs in on the console."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import HUTCH, spawn
from ptydrive import PtySession


def test_debian_boots_systemd_and_root_logs_in(debian: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-x", "-b", "-D", str(debian)], rows=40, cols=200)
    try:
        s.expect("Reached target", timeout=60)
        s.expect(" login: ", timeout=60)
        s.send("root\r")
        s.expect("# ", timeout=20)
        s.send("systemctl is-system-running --wait; echo state-$((1+1))done\r")
        s.expect("\n", timeout=10)  # the echo of the command line
        before = s.expect("state-2done", timeout=60)
        state = before.strip().splitlines()[-1].strip()
        if state != "running":
            s.send("systemctl --failed --no-legend --plain; echo failed-$((1+1))done\r")
            failed = s.expect("failed-2done", timeout=20)
            assert state == "degraded", f"state {state!r}"
            print(f"degraded; failed units:\n{failed}")
        s.send("echo comm=$(cat /proc/1/comm) id=$(id -u) mu=$(systemctl is-active multi-user.target)\r")
        s.expect("comm=systemd id=0 mu=active")
        s.send("poweroff\r")
        assert s.wait(timeout=60) == 0
        assert re.search(r"Container deb-[0-9a-f]+ has been shut down", s.text())
    finally:
        s.close()


def test_debian_image_untouched_by_ephemeral_boot(debian: Path) -> None:
    assert (debian / "etc/machine-id").read_text() == ""
    r = spawn(
        debian,
        "/bin/sh",
        "-c",
        "cat /etc/os-release | head -1; ls /usr/lib/systemd/systemd",
        opts=("-x", "-P"),
    )
    assert r.returncode == 0 and "Debian" in r.stdout
