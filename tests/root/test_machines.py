"""The machine manager on real machines: start, list, status, show, poweroff, reboot, terminate, kill;
supervisors and PID 1s killed, concurrent starts, bad input."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run, wait_for

pytestmark = pytest.mark.usefixtures("private_net")


def machines() -> list[dict[str, object]]:
    return list(json.loads(run("list", "-o", "json", check=True).stdout))


def names() -> list[str]:
    return [str(m["machine"]) for m in machines()]


def entry(hutch_env: Path, name: str) -> dict[str, object]:
    return dict(json.loads((hutch_env / "state/machines" / f"{name}.json").read_text()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(autouse=True)
def stop_all(hutch_env: Path) -> Iterator[None]:
    """Whatever a test leaves running in its own state directory is terminated afterwards."""
    yield
    for n in names():
        run("terminate", "--wait", n)


def test_start_list_status_show_poweroff(busybox: Path, hutch_env: Path) -> None:
    r = run("start", "bb")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("Started machine 'bb' (leader ")
    (m,) = machines()
    addresses = m.pop("addresses")
    assert m == {
        "machine": "bb",
        "class": "container",
        "service": "hutch",
        "os": "busybox",
        "version": "1.35.0",
    }
    # As machinectl's JSON: the addresses are one string, one per line.
    assert isinstance(addresses, str) and len(addresses.split("\n")) == 2 and addresses.startswith("10.88.")
    assert addresses.split("\n")[1].startswith("fd68:7574:6368:")
    r = run("list", check=True)
    assert r.stdout.splitlines()[0].split() == ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES"]
    assert r.stdout.splitlines()[-1] == "1 machines listed."
    assert run("list", "-a", "--no-legend", check=True).stdout.split()[0] == ".host"
    e = entry(hutch_env, "bb")
    leader = int(e["leader"])  # type: ignore[call-overload]
    assert alive(leader) and e["state"] == "running"
    r = run("status", "bb", check=True)
    assert f"Leader: {leader} (init)" in r.stdout and "OS: BusyBox" in r.stdout
    assert "getty" in r.stdout  # the cgroup's process tree
    assert "UID Shift: " in r.stdout
    r = run("show", "bb", "-p", "Leader", "--value", check=True)
    assert r.stdout.strip() == str(leader)
    props = dict(line.split("=", 1) for line in run("show", "bb", check=True).stdout.splitlines())
    assert props["Name"] == "bb" and props["Class"] == "container" and props["RootDirectory"] == str(busybox)
    r = run("start", "bb")
    assert r.returncode != 0 and "Machine 'bb' is already running" in r.stderr
    cgroup = str(e["cgroup"])
    r = run("poweroff", "--wait", "bb", check=True)
    assert names() == [] and not alive(leader)
    assert not os.path.exists(cgroup)  # the supervisor removed the machine's cgroup
    assert not (hutch_env / "state/machines/bb.json").exists()
    log = (hutch_env / "log/bb.log").read_text()
    assert "The system is going down NOW!" in log  # busybox init got its poweroff signal (SIGUSR2)


def test_reboot_comes_back(busybox: Path, hutch_env: Path) -> None:
    run("start", "bb", check=True)
    e = entry(hutch_env, "bb")
    first, sup = int(e["leader"]), int(e["supervisor"])  # type: ignore[call-overload]
    run("reboot", "bb", check=True)
    wait_for(lambda: "bb" in names() and int(entry(hutch_env, "bb")["leader"]) != first)  # type: ignore[call-overload]
    assert names() == ["bb"]
    e = entry(hutch_env, "bb")
    assert int(e["supervisor"]) == sup and alive(int(e["leader"]))  # type: ignore[call-overload]
    wait_for(lambda: "monitor.main(a)" in supervisor_cmdline(sup))  # slim again after the reboot
    log = hutch_env / "log/bb.log"
    assert "Requesting system reboot" in log.read_text()
    # The console of the new boot reaches the log too.
    wait_for(lambda: log.read_text().split("Requesting system reboot")[1].count("bb login:") == 1)
    run("terminate", "--wait", "bb", check=True)
    wait_for(lambda: not alive(sup))


def test_reboot_wait_and_a_poweroff_racing_a_reboot(busybox: Path, hutch_env: Path) -> None:
    """reboot --wait returns once the machine runs again; poweroff --wait sent while a reboot is under
    way (busybox init takes a second to go) powers off the machine that comes back."""
    run("start", "bb", check=True)
    first = int(entry(hutch_env, "bb")["leader"])  # type: ignore[call-overload]
    r = run("reboot", "--wait", "--timeout=30", "bb")
    assert r.returncode == 0, r.stderr
    e = entry(hutch_env, "bb")
    second = int(e["leader"])  # type: ignore[call-overload]
    assert second != first and e["state"] == "running" and alive(second)
    run("reboot", "bb", check=True)  # the old init is still shutting down when poweroff comes
    r = run("poweroff", "--wait", "--timeout=30", "bb")
    assert r.returncode == 0, r.stderr
    assert names() == [] and not alive(second)
    log = (hutch_env / "log/bb.log").read_text()
    assert "Requesting system poweroff" in log


def supervisor_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_detached_supervisor_hands_over_to_the_slim_monitor(busybox: Path, hutch_env: Path) -> None:
    """Once up, a started machine's supervisor exec()s into hutch.container.monitor: same PID, lock,
    console and signals; when PID 1 exits it exec()s back and tears the machine down."""
    # busybox init powers off on SIGUSR2; the default for a boot is systemd's SIGRTMIN+3.
    (hutch_env / "settings/bb.nspawn").write_text("[Exec]\nKillSignal=SIGUSR2\n")
    run("start", "bb", check=True)
    e = entry(hutch_env, "bb")
    sup, leader = int(e["supervisor"]), int(e["leader"])  # type: ignore[call-overload]
    cgroup = str(e["cgroup"])
    wait_for(lambda: "monitor.main(a)" in supervisor_cmdline(sup))
    assert "handoff.resume" not in supervisor_cmdline(sup)
    # The registry lock went through the exec: a second start is still refused.
    r = run("start", "bb")
    assert r.returncode != 0 and "already running" in r.stderr
    # The console still reaches the log.
    run("shell", "bb", "/bin/sh", "-c", "echo console-marker-42 > /dev/console", check=True)
    wait_for(lambda: "console-marker-42" in (hutch_env / "log/bb.log").read_text())
    # SIGTERM to the supervisor is passed on as the machine's kill signal, as before the handover.
    os.kill(sup, signal.SIGTERM)
    wait_for(lambda: not alive(sup))
    assert not alive(leader) and names() == []
    log = (hutch_env / "log/bb.log").read_text()
    assert "The system is going down NOW!" in log
    assert not os.path.exists(cgroup) and not (hutch_env / "state/machines/bb.json").exists()
    links = ["ip", "-o", "link"]  # this test's network namespace (sysfs would show the real host's)
    wait_for(lambda: "ve-bb" not in subprocess.run(links, capture_output=True, text=True).stdout)


def test_terminate_and_kill(busybox: Path, hutch_env: Path) -> None:
    from hutch.machines.control import TERMINATE_GRACE

    run("start", "bb", check=True)
    leader = int(entry(hutch_env, "bb")["leader"])  # type: ignore[call-overload]
    t = time.monotonic()
    r = run("terminate", "--wait", "bb")  # one call is enough
    assert r.returncode == 0, r.stderr
    assert names() == [] and not alive(leader)
    # A booted machine's kill signal is SIGRTMIN+3, which busybox init does not catch, and PID 1 of a
    # PID namespace is never sent a signal it does not catch: no grace to wait out.
    assert time.monotonic() - t < TERMINATE_GRACE
    # One that catches it gets it, and its grace: busybox init's SIGUSR2 is poweroff.
    (hutch_env / "settings/bb.nspawn").write_text("[Exec]\nKillSignal=SIGUSR2\n")
    run("start", "bb", check=True)
    run("terminate", "--wait", "bb", check=True)
    assert "The system is going down NOW!" in (hutch_env / "log/bb.log").read_text()
    (hutch_env / "settings/bb.nspawn").unlink()
    run("start", "bb", check=True)
    run("kill", "-s", "USR1", "--kill-whom=all", "bb", check=True)  # busybox init ignores it
    assert names() == ["bb"]
    leader = int(entry(hutch_env, "bb")["leader"])  # type: ignore[call-overload]
    run("kill", "--kill-whom=leader", "-s", "SIGKILL", "bb", check=True)
    wait_for(lambda: names() == [])
    assert not alive(leader)


def test_sigterm_to_every_process_stops_the_machine(busybox: Path, hutch_env: Path) -> None:
    """As systemd stops a machine's scope (machinectl terminate, systemctl stop): SIGTERM to every
    process in it at once. busybox init takes SIGTERM as reboot; the machine stops, and stays stopped."""
    from hutch.machines.control import cgroup_pids

    run("start", "bb", check=True)
    e = entry(hutch_env, "bb")
    sup, leader = int(e["supervisor"]), int(e["leader"])  # type: ignore[call-overload]
    for pid in [sup, *cgroup_pids(e)]:  # type: ignore[arg-type]
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(sup), 10)
    assert not alive(leader) and names() == []


def test_sigkill_supervisor_or_pid1(busybox: Path, hutch_env: Path) -> None:
    for victim in ("supervisor", "leader"):
        run("start", "bb", check=True)
        e = entry(hutch_env, "bb")
        pids = [int(e["supervisor"]), int(e["leader"])]  # type: ignore[call-overload]
        cgroup = str(e["cgroup"])
        os.kill(int(e[victim]), signal.SIGKILL)  # type: ignore[call-overload]
        wait_for(lambda: not any(alive(p) for p in pids))  # noqa: B023
        # The registry entry of a supervisor killed outright is stale: the next command drops it.
        assert names() == []
        assert not (hutch_env / "state/machines/bb.json").exists()
        # No cgroup left behind either: the supervisor removes it, or the next reader for a dead one.
        wait_for(lambda: not os.path.exists(cgroup))  # noqa: B023
        # Whatever way it died, it starts again.
        run("start", "bb", check=True)
        run("terminate", "--wait", "bb", check=True)


def test_concurrent_starts(busybox: Path, hutch_env: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: run("start", "bb"), range(20)))
    ok = [r for r in results if r.returncode == 0]
    assert len(ok) == 1, [r.stderr for r in results]
    for r in results:
        if r.returncode != 0:
            assert "already running" in r.stderr or "busy" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) >= 1
    assert names() == ["bb"]


def test_running_machines_image_cannot_change(busybox: Path, hutch_env: Path) -> None:
    run("start", "bb", check=True)
    for verb in (("remove", "bb"), ("rename", "bb", "other"), ("read-only", "bb")):
        r = run(*verb)
        assert r.returncode != 0 and "in use by a running container" in r.stderr, r.stderr
    assert names() == ["bb"] and busybox.is_dir()


def test_bad_input(busybox: Path, hutch_env: Path) -> None:
    for verb in ("status", "show", "poweroff", "reboot", "terminate", "kill"):
        r = run(verb, "nosuch")
        assert r.returncode != 0 and "No machine 'nosuch' known" in r.stderr, (verb, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    for bad in ("a/b", "x" * 65, "..", "a b", "a..b"):
        r = run("start", "--", bad)
        assert r.returncode != 0 and ("Invalid machine name" in r.stderr), (bad, r.stderr)
    r = run("start", "noimage")
    assert r.returncode != 0 and "No image 'noimage'" in r.stderr
    run("start", "bb", check=True)
    r = run("kill", "-s", "SIGBOGUS", "bb")
    assert r.returncode != 0 and "Unknown signal 'SIGBOGUS'" in r.stderr
    assert names() == ["bb"]


def test_failed_start_reports_why(busybox: Path, hutch_env: Path) -> None:
    for init in ("sbin/init", "bin/init"):
        p = busybox / init
        if p.exists() or p.is_symlink():
            p.unlink()
    (busybox / "sbin/init").write_text("#!/bin/sh\necho 'init: cannot mount /oops' >&2\nexit 3\n")
    (busybox / "sbin/init").chmod(0o755)
    r = run("start", "bb")
    assert r.returncode != 0
    assert r.stderr.startswith("hutch start: Failed to start machine 'bb'"), r.stderr
    assert "init: cannot mount /oops" in r.stderr  # the console's last lines
    assert names() == []


def test_debian_machine_reports_ready_and_powers_off(debian: Path, hutch_env: Path) -> None:
    r = run("import-fs", str(debian), "deb")
    assert r.returncode == 0, r.stderr
    start = time.monotonic()
    r = run("start", "--property=MemoryMax=1G", "--property=TasksMax=2000", "deb", timeout=120)
    assert r.returncode == 0, r.stderr
    # systemd said READY=1 on /run/host/notify: it has finished booting.
    assert entry(hutch_env, "deb")["state"] == "running"
    (m,) = machines()
    assert m["os"] == "debian" and m["version"] == "12"
    leader = int(entry(hutch_env, "deb")["leader"])  # type: ignore[call-overload]
    with open(f"/proc/{leader}/comm") as f:
        assert f.read().strip() == "systemd"
    assert time.monotonic() - start < 60
    r = run("shell", "deb", "systemctl", "is-system-running")
    assert r.stdout.strip() in ("running", "degraded"), r.stdout + r.stderr
    # A guest that runs systemd-networkd (DHCP on host0, its 80-container-host0.network) keeps the
    # address hutch gave it: hutch's DHCP server answers with that one.
    addr = str(m["addresses"]).split("\n")[0]
    run("shell", "deb", "systemctl", "start", "systemd-networkd", check=True)

    def leased() -> bool:
        out = run("shell", "deb", "networkctl", "status", "host0", "--no-pager").stdout
        return f"{addr} (DHCP4" in out

    wait_for(leased, timeout=30)
    assert subprocess.run(["busybox", "ping", "-c1", "-W2", addr], capture_output=True).returncode == 0
    r = run("shell", "deb", "/bin/sh", "-c", "echo out; echo err >&2; exit 42")
    assert (r.returncode, r.stdout, r.stderr) == (42, "out\n", "err\n")
    # Under limits, systemd still manages a tree of its own, and sees only that one.
    r = run("shell", "deb", "systemd-cgls", "--no-pager")
    assert "init.scope" in r.stdout and "machine.slice" not in r.stdout, r.stdout + r.stderr
    r = run("logs", "--journal", "-n", "5", "deb")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    r = run("poweroff", "--wait", "--timeout=60", "deb", timeout=90)  # SIGRTMIN+4: a clean shutdown
    assert r.returncode == 0, r.stderr
    assert names() == []
    assert "Reached target" in (hutch_env / "log/deb.log").read_text()


def test_shell_exit_codes_streams_and_confinement(busybox: Path, hutch_env: Path) -> None:
    run("start", "bb", check=True)
    for code in (0, 1, 42):
        r = run("shell", "bb", "/bin/sh", "-c", f"echo out; echo err >&2; exit {code}")
        assert (r.returncode, r.stdout, r.stderr) == (code, "out\n", "err\n")  # stderr kept apart
    r = run("shell", "bb", "cat", input="from stdin\n")
    assert r.returncode == 0 and r.stdout == "from stdin\n"
    r = run("shell", "bb", "/bin/sh", "-c", 'printf "%s|" "$@"', "sh", "-E", "X=1")
    assert r.stdout == "-E|X=1|"  # options after the command are the command's
    r = run(
        "shell", "-E", "GREETING=hi", "bb", "/bin/sh", "-c", "id -u; echo $HOME $USER $container $GREETING"
    )
    assert r.stdout == "0\n/root root hutch hi\n", r.stderr
    r = run("shell", "nobody@bb", "id", "-un")
    assert r.stdout == "nobody\n", r.stderr
    r = run("shell", "--uid=nobody", "bb", "id", "-un")
    assert r.stdout == "nobody\n", r.stderr
    r = run("shell", "bb", "nonexistent-command")
    assert r.returncode == 127 and "Failed to execute nonexistent-command" in r.stderr
    # The same confinement as the container's own processes: bounding set, seccomp, cgroup, namespaces.
    script = "grep -E '^(CapBnd|Seccomp):' /proc/$1/status; tail -1 /proc/$1/cgroup; "
    script += "readlink /proc/$1/ns/pid"
    mine = run("shell", "bb", "/bin/sh", "-c", script, "sh", "self", check=True).stdout
    pid1 = run("shell", "bb", "/bin/sh", "-c", script, "sh", "1", check=True).stdout
    assert mine == pid1 and "Seccomp:\t2" in mine
    r = run("shell", "bb", "/bin/sh", "-c", "echo $$")
    assert int(r.stdout) > 1  # a process of the machine's PID namespace


def test_login_through_a_pty(busybox: Path, hutch_env: Path) -> None:
    from conftest import HUTCH
    from ptydrive import PtySession

    run("start", "bb", check=True)
    s = PtySession([HUTCH, "login", "bb"], env=dict(os.environ))
    try:
        s.expect("bb login: ", timeout=15)
        s.send("root\r")
        s.expect("$ ", timeout=15)
        s.send("id; tty\r")
        out = s.expect("$ ", timeout=15)
        assert "uid=0 " in out and "/dev/pts/" in out
        s.send("exit\r")
        assert s.wait(20) == 0
    finally:
        s.close()
    assert "Connection to machine bb terminated." in s.text()
    r = run("login", "bb")  # not a terminal
    assert r.returncode != 0 and "needs a terminal" in r.stderr


def test_shell_dies_with_the_machine(busybox: Path, hutch_env: Path) -> None:
    import subprocess

    from conftest import HUTCH

    run("start", "bb", check=True)
    p = subprocess.Popen(
        [HUTCH, "shell", "bb", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def entered() -> bool:  # the command runs in the machine (not a fixed sleep: the VM lane is slow)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0060\x00":
                    return True
            except OSError:
                continue
        return False

    wait_for(entered, 30)
    run("terminate", "--wait", "bb", check=True)
    assert p.wait(timeout=10) == 137  # SIGKILL, with the machine's PID namespace
    r = run("shell", "bb", "true")
    assert r.returncode != 0 and "No machine 'bb' known" in r.stderr
    r = run("shell", "-E", "NOEQUALS", "bb", "true")
    assert r.returncode != 0


def test_bind_and_copy_both_ways(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    run("start", "bb", check=True)
    src = tmp_path / "share"
    (src / "sub").mkdir(parents=True)
    (src / "sub/f").write_text("host file\n")
    os.chown(src / "sub/f", 1000, 1000)
    r = run("bind", "bb", str(src), "/mnt/share")
    assert r.returncode != 0 and "--mkdir creates it" in r.stderr
    run("bind", "--mkdir", "--read-only", "bb", str(src), "/mnt/share", check=True)
    r = run(
        "shell",
        "bb",
        "/bin/sh",
        "-c",
        "cat /mnt/share/sub/f; stat -c %u /mnt/share/sub/f; touch /mnt/share/x",
    )
    assert r.stdout == "host file\n1000\n"  # the real owner, through an idmapped mount (upstream: refused)
    assert "Read-only file system" in r.stderr
    run("bind", "--mkdir", "bb", str(src), "/mnt/rw", check=True)
    run("shell", "bb", "/bin/sh", "-c", "echo from guest > /mnt/rw/new", check=True)
    assert (src / "new").read_text() == "from guest\n"
    (src / "new").unlink()

    # copy-to: files and trees, owned by the container's root; --force to replace.
    run("copy-to", "bb", str(src / "sub/f"), "/root/f", check=True)
    r = run("copy-to", "bb", str(src / "sub/f"), "/root/f")
    assert r.returncode != 0 and "already exists; --force replaces it" in r.stderr
    run("copy-to", "--force", "bb", str(src), "/root/tree", check=True)
    r = run(
        "shell",
        "bb",
        "/bin/sh",
        "-c",
        "cat /root/f /root/tree/sub/f; stat -c %u /root/tree/sub/f",
        check=True,
    )
    assert r.stdout == "host file\nhost file\n0\n"
    assert (busybox / "root/tree/sub/f").stat().st_uid == 0  # on disk: the image's own root

    # copy-from: a file and a tree.
    run("shell", "bb", "/bin/sh", "-c", "mkdir -p /srv/d; echo guest > /srv/d/g", check=True)
    run("copy-from", "bb", "/srv/d", str(tmp_path / "out"), check=True)
    assert (tmp_path / "out/g").read_text() == "guest\n"
    r = run("copy-from", "bb", "/nonexistent", str(tmp_path / "x"))
    assert r.returncode != 0 and "No such file or directory" in r.stderr


def test_symlinks_planted_in_the_guest_stay_in_the_guest(
    busybox: Path, hutch_env: Path, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    canary.write_text("host secret\n")
    run("start", "bb", check=True)
    run("shell", "bb", "/bin/sh", "-c",
        f"echo guest secret > /etc/secret; ln -s {canary} /tmp/to-host; ln -s /etc/secret /tmp/to-guest; "
        f"ln -s ../../../../../../{canary} /tmp/relative; mkdir /tmp/d; ln -s {tmp_path} /tmp/d/up",
        check=True)  # fmt: skip
    # copy-from follows a guest symlink only within the guest's root.
    r = run("copy-from", "bb", "/tmp/to-guest", str(tmp_path / "got"))
    assert r.returncode == 0 and (tmp_path / "got").read_text() == "guest secret\n"
    for link in ("/tmp/to-host", "/tmp/relative"):
        r = run("copy-from", "bb", link, str(tmp_path / "leak"))
        assert r.returncode != 0 and not (tmp_path / "leak").exists(), r.stderr
    # copy-to through a guest symlink lands in the guest, never on the host.
    (tmp_path / "payload").write_text("overwrite\n")
    r = run("copy-to", "--force", "bb", str(tmp_path / "payload"), "/tmp/to-host")
    run("copy-to", "--force", "bb", str(tmp_path / "payload"), "/tmp/d/up/canary")
    assert canary.read_text() == "host secret\n"
    # bind onto a guest symlink mounts inside the guest.
    run("bind", "--mkdir", "bb", str(tmp_path / "payload"), "/tmp/to-host")
    assert canary.read_text() == "host secret\n"


def test_logs_and_cgls(busybox: Path, hutch_env: Path) -> None:
    run("start", "bb", check=True)
    r = run("logs", "bb", check=True)
    assert "-- hutch start bb at " in r.stdout and "bb login:" in r.stdout
    r = run("logs", "-n", "1", "bb", check=True)
    assert len(r.stdout.splitlines()) == 1
    r = run("cgls", check=True)
    assert r.stdout.startswith("bb: ") and "init" in r.stdout and "getty" in r.stdout
    r = run("logs", "nolog")
    assert r.returncode != 0 and "No console log for machine 'nolog'" in r.stderr


def test_enable_autostart_disable(busybox: Path, hutch_env: Path) -> None:
    r = run("enable", "bb", check=True)
    assert (hutch_env / "config/autostart/bb").exists()
    unit = (hutch_env / "units/hutch@.service").read_text()
    assert (
        "ExecStart=" in unit
        and "spawn --quiet --keep-unit --boot -U --settings=override --machine=%i" in unit
    )
    assert os.readlink(hutch_env / "units/machines.target.wants/hutch@bb.service") == "../hutch@.service"
    assert "Created " in r.stderr
    r = run("autostart", check=True)
    assert "Started machine 'bb'" in r.stderr and names() == ["bb"]
    r = run("autostart", check=True)  # again: nothing to do
    assert "already running" in r.stderr
    run("disable", "--now", "bb", check=True)
    assert names() == [] and not (hutch_env / "config/autostart/bb").exists()
    assert not (hutch_env / "units/machines.target.wants/hutch@bb.service").exists()
    run("enable", "--now", "bb", check=True)
    assert names() == ["bb"]
    r = run("enable", "nosuch")
    assert r.returncode != 0 and "No image 'nosuch'" in r.stderr


def test_supervisor_and_payload_split(busybox: Path, hutch_env: Path) -> None:
    run("start", "bb", check=True)
    e = entry(hutch_env, "bb")
    scope = str(e["scope"])
    with open(f"/proc/{e['supervisor']}/cgroup") as f:
        assert f.read().strip().splitlines()[-1].endswith("/machine.slice/machine-bb.scope/supervisor")
    with open(f"/proc/{e['leader']}/cgroup") as f:
        assert f.read().strip().splitlines()[-1].endswith("/machine.slice/machine-bb.scope/payload")
    assert str(e["cgroup"]) == scope + "/payload"
    run("poweroff", "--wait", "bb", check=True)
    wait_for(lambda: not os.path.exists(scope), 5)  # where systemd is PID 1, systemd removes its scope


def test_cgroups_of_killed_unregistered_machines_are_collected(busybox: Path, hutch_env: Path) -> None:
    import glob
    import subprocess

    from conftest import HUTCH

    p = subprocess.Popen(
        [HUTCH, "spawn", "-q", "-x", "--register=no", "-D", str(busybox), "/bin/sleep", "30"]
    )
    from hutch.linux import cgroups

    pattern = f"{cgroups.unified_root()}/machine.slice/machine-bb*.scope"  # bb-N, or systemd's bb\x2dN
    try:
        wait_for(lambda: glob.glob(pattern))
        (scope,) = glob.glob(pattern)
        time.sleep(0.3)
    finally:
        p.kill()  # SIGKILL: the supervisor cannot clean up; its container dies with it (PDEATHSIG)
        p.wait()

    def emptied() -> bool:
        try:
            return "populated 0" in Path(scope, "cgroup.events").read_text()
        except FileNotFoundError:  # where systemd is PID 1, systemd collects its scope once empty
            return True

    wait_for(emptied)
    r = run("list", env=dict(os.environ, HUTCH_CGROUP_GC_AGE="0"))
    assert r.returncode == 0
    wait_for(lambda: not os.path.exists(scope), 5)


def test_analyze_a_machine_without_systemd(busybox: Path, hutch_env: Path) -> None:
    """For other inits, the start-up time hutch measured; the unit views need systemd."""
    run("start", "bb", check=True)
    r = run("analyze", "bb", check=True)
    assert r.stdout.startswith("Startup finished in ") and "until PID 1 ran" in r.stdout, r.stdout
    for verb in ("blame", "critical-chain"):
        r = run("analyze", "bb", verb)
        assert r.returncode != 0 and "rather than systemd" in r.stderr, r.stderr
    r = run("analyze", "bb", "nope")
    assert r.returncode != 0 and "invalid choice" in r.stderr
    r = run("analyze", "nosuch")
    assert r.returncode != 0 and "No machine 'nosuch'" in r.stderr


HEAVY = ("argparse", "re", "json", "typing", "enum", "gettext", "socket", "subprocess", "collections")


def test_the_polled_verbs_load_no_heavy_module(busybox: Path, hutch_env: Path) -> None:
    """list, status, show, shell, kill and poweroff, run for real against a running machine, import none
    of argparse, re, json, typing, enum, gettext, socket, subprocess, collections (each 1-13 ms a call,
    on verbs clients run many times a task: hutch.cli.options), and none of hutch's modules but
    through their preload bundles (hutch.preload)."""
    from conftest import HUTCH

    shebang = Path(HUTCH).read_text().split("\n", 1)[0]
    interp, _, flags = shebang.removeprefix("#!").partition(" ")
    run("start", "bb", check=True)
    try:
        for args in (
            ["list"], ["status", "bb"], ["show", "bb"], ["show", "bb", "-p", "Leader", "--value"],
            ["shell", "bb", "/bin/true"], ["kill", "-s", "SIGWINCH", "bb"], ["poweroff", "--wait", "bb"],
        ):  # fmt: skip
            r = subprocess.run(
                [interp, "-X", "importtime", *flags.split(), HUTCH, *args], capture_output=True, text=True
            )
            assert r.returncode == 0, (args, r.stderr[-2000:])
            loaded = {
                ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")
            }
            assert not loaded & set(HEAVY), (args, sorted(loaded & set(HEAVY)))
            # Each of these verbs has a preload bundle (hutch.preload.ENTRIES): a hutch module the
            # import system loads was missed there, and costs its ~60 us search on every call.
            late = {m for m in loaded if m.startswith("hutch.") and m != "hutch.preload"}
            assert not late, (args, sorted(late))
    finally:
        run("terminate", "--wait", "bb")
