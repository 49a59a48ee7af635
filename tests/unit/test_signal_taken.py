"""hutch.linux.sig.taken: whether a PID namespace's init would get a signal, read from /proc as the
kernel decides it (pid_namespaces(7)): caught, blocked, or waited for in sigtimedwait(2)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from hutch.linux import sig

CHILD = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *a: None)       # caught
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})   # blocked (as systemd blocks them)
print("ready", flush=True)
if sys.argv[1] == "wait":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    signal.sigtimedwait({signal.SIGUSR2}, 30)        # as busybox init waits for its signals
else:
    time.sleep(30)
"""


def _child(mode: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    time.sleep(0.2)  # into the wait
    return p


def test_caught_blocked_and_waited_for() -> None:
    p = _child("wait")
    try:
        assert sig.taken(p.pid, signal.SIGHUP) and sig.taken(p.pid, signal.SIGUSR1)
        assert sig.taken(p.pid, signal.SIGUSR2)  # out of SigBlk for the wait, and still taken
        assert not sig.taken(p.pid, signal.SIGRTMIN + 3) and not sig.taken(p.pid, signal.SIGWINCH)
    finally:
        p.kill()
        p.wait()


def test_not_waiting() -> None:
    p = _child("sleep")
    try:
        assert sig.taken(p.pid, signal.SIGUSR1) and not sig.taken(p.pid, signal.SIGUSR2)
    finally:
        p.kill()
        p.wait()


def test_in_doubt_yes() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    assert sig.taken(p.pid, signal.SIGRTMIN + 3)  # gone: nothing to read, so no shortcut taken
