"""Booting the busybox image with its own init: login on the console, poweroff and reboot from inside."""

from __future__ import annotations

from pathlib import Path

from conftest import HUTCH
from ptydrive import PtySession


def login(s: PtySession) -> None:
    s.expect("login: ", timeout=20)
    s.send("root\r")
    s.expect("$ ", timeout=10)


def test_boot_poweroff(busybox: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-b", "-D", str(busybox)])
    try:
        login(s)
        s.send("echo pid1=$(cat /proc/1/comm) me=$(id -u)\r")
        s.expect("pid1=init me=0")
        s.send("poweroff\r")
        assert s.wait(timeout=20) == 0
        assert "Container bb has been shut down." in s.text()
    finally:
        s.close()


def test_boot_reboot_restarts(busybox: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-b", "-D", str(busybox)])
    try:
        login(s)
        s.send("touch /root/was-here; reboot\r")
        s.expect("is being rebooted", timeout=20)
        login(s)  # a second boot: the login prompt comes back
        s.send("ls /root\r")
        s.expect("was-here")
        s.send("poweroff\r")
        assert s.wait(timeout=20) == 0
    finally:
        s.close()


def test_sigterm_to_hutch_stops_booted_container(busybox: Path) -> None:
    import signal
    import time

    # busybox init halts on SIGUSR1 (SIGRTMIN+3, the default, means nothing to it): the kernel then
    # reports halt as SIGINT, so hutch exits 0.
    s = PtySession([HUTCH, "spawn", "-b", "--kill-signal=SIGUSR1", "-D", str(busybox)])
    try:
        s.expect("login: ", timeout=20)
        time.sleep(0.2)
        s.proc.send_signal(signal.SIGTERM)
        assert s.wait(timeout=20) == 0
    finally:
        s.close()


def test_ephemeral_changes_survive_reboot_but_not_exit(busybox: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-b", "-x", "-D", str(busybox)])
    try:
        login(s)
        s.send("touch /root/eph-mark; reboot\r")
        s.expect("is being rebooted", timeout=20)
        login(s)
        s.send("ls /root\r")
        s.expect("eph-mark")
        s.send("poweroff\r")
        assert s.wait(timeout=20) == 0
    finally:
        s.close()
    assert not (busybox / "root/eph-mark").exists()


def test_second_sigterm_kills(busybox: Path) -> None:
    import signal
    import time

    # busybox init takes SIGHUP (it rereads /etc/inittab) and keeps running: the first SIGTERM asks
    # politely, the second kills.
    s = PtySession([HUTCH, "spawn", "-b", "--kill-signal=SIGHUP", "-D", str(busybox)])
    try:
        s.expect("login: ", timeout=20)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert s.proc.poll() is None
        s.proc.send_signal(signal.SIGTERM)
        rc = s.wait(timeout=10)
        assert rc == 1 and "terminated by signal SIGKILL" in s.text()
    finally:
        s.close()


def test_sigterm_kills_an_init_that_would_drop_its_kill_signal(busybox: Path) -> None:
    import signal

    # SIGRTMIN+3, -b's kill signal, means nothing to busybox init, and PID 1 of a PID namespace is never
    # sent a signal it does not take: asking would wait for nothing (for systemd's stop of the
    # machine's scope, 90 s), so the first SIGTERM kills.
    s = PtySession([HUTCH, "spawn", "-b", "-D", str(busybox)])
    try:
        s.expect("login: ", timeout=20)
        s.proc.send_signal(signal.SIGTERM)
        rc = s.wait(timeout=10)
        assert rc == 1 and "terminated by signal SIGKILL" in s.text()
    finally:
        s.close()
