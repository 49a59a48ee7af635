"""The fault battery, machines: hostile callers of shell, clients killed mid-command, damaged registry
entries, bad values for every machine verb. Each case checks one clear line, a non-zero exit, and that
nothing changed or was left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CI, HUTCH, run, wait_for

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


# SIGKILL at random points of the machine verbs ---------------------------------------------------------

SEED = int(os.environ.get("HUTCH_FAULT_SEED", "1312"))
TRIALS = 3 if CI else 2


def ours(hutch_env: Path) -> dict[int, str]:
    """hutch's processes started by this test (its state directory is in their environment): clients,
    supervisors, shell's helpers. A container's processes have an environment of their own."""
    key = f"HUTCH_STATE_DIR={hutch_env / 'state'}".encode()
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if key in f.read().split(b"\0"):
                        out[int(d)] = cmdline(int(d))
            except OSError:
                continue
    return out


def machine_cgroups(name: str) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/machine.slice/machine-{name}.scope")]


def supervisors(hutch_env: Path) -> list[int]:
    return [pid for pid, cmd in ours(hutch_env).items() if " spawn " in f" {cmd}" or "monitor" in cmd]


def _after_the_kill(hutch_env: Path, name: str = "bb") -> None:
    """Whatever the kill hit: `list` answers, a machine it shows can be used and stopped, and once it is
    stopped nothing of it is left (cgroups, processes, registry, locks, addresses, UID ranges)."""
    # A killed client's helpers (shell's, start's) die with it; a running machine's supervisor stays.
    # One the kill left starting (its client gone, its machine coming up all the same) holds the name's
    # lock before it writes an entry, and `list` shows no machine until it has: wait for that too.
    entry = hutch_env / "state/machines" / f"{name}.json"

    def settled() -> bool:
        sups = supervisors(hutch_env)
        return set(ours(hutch_env)) <= set(sups) and (not sups or entry.exists())

    wait_for(settled, 10)
    r = run("list", "-o", "json")
    assert r.returncode == 0, r.stderr
    if name in [m["machine"] for m in json.loads(r.stdout)]:
        run("shell", name, "/bin/true", check=True)
        run("poweroff", "--wait", name, check=True)
    else:
        # The 'list' that found the supervisor dead removed its machine's cgroups with its entry.
        assert machine_cgroups(name) == [], machine_cgroups(name)
    assert machine_cgroups(name) == []
    assert ours(hutch_env) == {}
    run("clean", check=True)
    for sub in ("machines", "locks", "uid-ranges", "net"):
        d = hutch_env / "state" / sub
        assert not d.exists() or os.listdir(d) == [], (sub, os.listdir(d))


@pytest.mark.parametrize("op", ["start", "supervisor", "poweroff", "shell"])
def test_sigkill_of_machine_verbs_at_random_points(busybox: Path, hutch_env: Path, op: str) -> None:
    """SIGKILL of `start`'s client or of the supervisor it makes, at a seeded random moment of the
    start; of a `poweroff --wait` client; of a `shell` client (its command dies with it)."""
    rng = random.Random(f"{SEED}-{op}")
    # How long the verb takes here, so that the kills spread over all of it.
    t0 = time.monotonic()
    run("start", "bb", check=True)
    t1 = time.monotonic()
    run("shell", "bb", "/bin/true", check=True)
    t2 = time.monotonic()
    run("poweroff", "--wait", "bb", check=True)
    span = {"shell": t2 - t1, "poweroff": time.monotonic() - t2}.get(op, t1 - t0)
    for _trial in range(TRIALS):
        delay = rng.uniform(0.0, 1.2 * span)
        if op in ("start", "supervisor"):
            p = subprocess.Popen([HUTCH, "start", "bb"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(delay)
            victims = [p.pid] if op == "start" else supervisors(hutch_env)
        else:
            run("start", "bb", check=True)
            cmd = ["poweroff", "--wait", "bb"] if op == "poweroff" else ["shell", "bb", "/bin/sleep", "30"]
            p = subprocess.Popen([HUTCH, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(delay)
            victims = [p.pid]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # done before the kill came
        p.wait(30)
        if op == "shell":
            wait_for(lambda: not find_inside(hutch_env, "bb", "sleep 30"), 5)
        _after_the_kill(hutch_env)
        run("start", "bb", check=True)  # and the machine starts again
        run("poweroff", "--wait", "bb", check=True)
        _after_the_kill(hutch_env)


def test_sigkill_of_a_systemd_guests_supervisor(debian: Path, hutch_env: Path) -> None:
    """systemd makes cgroups of its own in the machine's tree, and its processes take ~50 ms to leave
    once the supervisor is gone: the next `list` still removes the whole tree (it outlived `list` in 3
    of 14 trials once)."""
    rng = random.Random(f"{SEED}-systemd")
    run("import-fs", str(debian), "deb", check=True)
    limits = ["--property=MemoryMax=1G", "--property=TasksMax=2000"]  # v1 hierarchies too, here
    t0 = time.monotonic()
    run("start", *limits, "deb", check=True, timeout=120)
    span = time.monotonic() - t0
    run("poweroff", "--wait", "deb", check=True, timeout=60)
    for _trial in range(TRIALS):
        p = subprocess.Popen(
            [HUTCH, "start", *limits, "deb"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(lambda: supervisors(hutch_env), 10)
        time.sleep(rng.uniform(0.0, 1.5 * span))
        for pid in supervisors(hutch_env):
            os.kill(pid, signal.SIGKILL)
        p.wait(60)
        _after_the_kill(hutch_env, "deb")
