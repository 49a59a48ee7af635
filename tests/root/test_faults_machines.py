"""The fault battery, machines: hostile callers of shell, clients killed mid-command, damaged registry
entries, bad values for every machine verb. Each case checks one clear line, a non-zero exit, and that
nothing changed or was left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HUTCH, run, wait_for

pytestmark = pytest.mark.usefixtures("private_net")


def names() -> list[str]:
    return [str(m["machine"]) for m in json.loads(run("list", "-o", "json", check=True).stdout)]


@pytest.fixture(autouse=True)
def stop_all(hutch_env: Path) -> Iterator[None]:
    yield
    for n in names():
        run("terminate", "--wait", n)


def one_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode != 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def pids_in_pidns(leader: int) -> list[int]:
    ns = os.stat(f"/proc/{leader}/ns/pid").st_ino
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/pid").st_ino == ns:
                    out.append(int(d))
            except OSError:
                continue
    return out


def leader_of(hutch_env: Path, name: str) -> int:
    return int(json.loads((hutch_env / "state/machines" / f"{name}.json").read_text())["leader"])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def find_inside(hutch_env: Path, name: str, needle: str) -> list[int]:
    return [p for p in pids_in_pidns(leader_of(hutch_env, name)) if needle in cmdline(p)]


def test_a_host_terminal_never_enters_a_machine(busybox: Path, hutch_env: Path) -> None:
    """Ansible runs `shell` with only stdin on a terminal: the machine's command must get a pty of its
    own there (TIOCSTI into the host terminal otherwise), and the pipes stay pipes."""
    run("start", "bb", check=True)
    master, slave = os.openpty()
    host_pty = os.fstat(slave)
    try:
        for stdin, stdout, stderr in (
            (slave, subprocess.PIPE, subprocess.PIPE),  # only stdin: Ansible's case
            (subprocess.DEVNULL, slave, subprocess.PIPE),
            (subprocess.DEVNULL, subprocess.PIPE, slave),
        ):
            p = subprocess.Popen(
                [HUTCH, "shell", "bb", "/bin/sh", "-c", "echo out; echo err >&2; exec sleep 30"],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            try:
                # The sleep itself, once sh has written and exec()ed it (sh's own argv names it too).
                def sleeping() -> list[int]:
                    return [p for p in find_inside(hutch_env, "bb", "sleep 30") if cmdline(p) == "sleep 30 "]

                wait_for(sleeping, 10)
                (pid,) = sleeping()
                for n in (0, 1, 2):
                    st = os.stat(f"/proc/{pid}/fd/{n}")
                    assert (st.st_dev, st.st_ino) != (host_pty.st_dev, host_pty.st_ino), n
                # Where the caller had a terminal, the command has the machine's own pty.
                tty_fds = [n for n, f in enumerate((stdin, stdout, stderr)) if f == slave]
                for n in tty_fds:
                    assert os.readlink(f"/proc/{pid}/fd/{n}").startswith("/dev/pts/")
            finally:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(10)
            if stdin == slave:
                assert p.stdout is not None and p.stderr is not None
                assert p.stdout.read() == b"out\n" and p.stderr.read() == b"err\n"  # kept apart
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("command", [["/bin/sleep", "300"], ["/bin/sh", "-c", "sleep 300; echo done"]])
def test_the_command_dies_with_its_client(busybox: Path, hutch_env: Path, command: list[str]) -> None:
    """SIGKILL of the client (off a terminal) takes the command and its process group with it, and
    frees the caller's stdout."""
    run("start", "bb", check=True)
    p = subprocess.Popen([HUTCH, "shell", "bb", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: find_inside(hutch_env, "bb", "sleep 300"), 10)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    wait_for(lambda: not find_inside(hutch_env, "bb", "sleep 300"), 5)
    assert p.stdout is not None
    assert p.stdout.read() == b""  # EOF: nothing inside holds the caller's stdout any more
    # SIGTERM and SIGINT of the client reach the command too.
    for signum in (signal.SIGTERM, signal.SIGINT):
        p = subprocess.Popen(
            [HUTCH, "shell", "bb", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        wait_for(lambda: find_inside(hutch_env, "bb", "sleep 300"), 10)
        time.sleep(0.2)
        os.kill(p.pid, signum)
        p.wait(10)
        wait_for(lambda: not find_inside(hutch_env, "bb", "sleep 300"), 5)
