"""The boot lane: the distributions users run today as guests. Debian bookworm (systemd 252, shadow's
login), trixie (257, util-linux login) and sid (the newest systemd Debian has), each debootstrapped once
and cached outside the checkout (conftest.debian_image). Each boots to `running` with and without a user
namespace; `hutch login` reaches a root shell 20 times in 20 through a real pty (util-linux login's
vhangup() once lost the prompt); unit credentials reach PID 1's view; each boot has its own boot ID;
--set-credential and --load-credential reach systemd and plain commands; poweroff and reboot work."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HUTCH, debian_image, run, wait_for

pytestmark = pytest.mark.usefixtures("private_net")

SUITES = ["bookworm", "trixie", "sid"]
# A veth needs a user namespace here (see prepare._network): the first mode has one, the second none.
MODES = {"userns": ["-U", "-n"], "no-userns": ["--private-users=no"]}
LOGINS = 20


@pytest.fixture(scope="module", params=SUITES)
def guest(request: pytest.FixtureRequest) -> Path:
    return debian_image(str(request.param))


def state(hutch_env: Path, name: str) -> str:
    try:
        return str(json.loads((hutch_env / "state/machines" / f"{name}.json").read_text())["state"])
    except (OSError, ValueError, KeyError):
        return ""


@pytest.fixture(params=list(MODES))
def booted(guest: Path, hutch_env: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The guest booted (systemd said READY=1), in the user-namespace mode of the parameter, with two
    credentials: one set, one loaded from a file."""
    name = guest.name
    run("import-fs", str(guest), name, check=True, timeout=300)
    (tmp_path / "cred").write_text("from a file\n")
    console = open(tmp_path / "console.log", "wb")  # noqa: SIM115  (closed below)
    p = subprocess.Popen(
        [HUTCH, "spawn", "-q", "-b", "-M", name, *MODES[request.param], "--console=read-only",
         "--set-credential=firstboot.timezone:Europe/Berlin", "--set-credential=hutch.set:one\\ntwo",
         f"--load-credential=hutch.loaded:{tmp_path / 'cred'}"],
        stdin=subprocess.DEVNULL, stdout=console, stderr=console,
    )  # fmt: skip
    try:
        wait_for(lambda: state(hutch_env, name) == "running" or p.poll() is not None, 120)
        assert p.poll() is None, (tmp_path / "console.log").read_text()[-3000:]
        yield name
    finally:
        if p.poll() is None:
            run("poweroff", "--wait", name, timeout=120)
        try:
            p.wait(30)
        finally:
            console.close()


def sh(name: str, script: str) -> str:
    return run("shell", name, "/bin/sh", "-c", script, check=True, timeout=60).stdout


def test_boots_to_running_with_no_failed_units(booted: str) -> None:
    assert sh(booted, "systemctl is-system-running --wait").strip() == "running"
    assert sh(booted, "systemctl --failed --no-legend --plain") == ""


def test_login_reaches_a_root_shell_every_time(booted: str) -> None:
    from ptydrive import PtySession

    for i in range(LOGINS):
        s = PtySession([HUTCH, "login", booted], env=dict(os.environ))
        try:
            s.expect(f"{booted} login: ", timeout=15)
            s.send("root\r")
            s.expect("# ", timeout=15)
            s.send("tty; exit\r")
            assert s.wait(20) == 0, i
        except TimeoutError:
            raise AssertionError(f"login {i + 1} of {LOGINS}: {s.text()[-500:]!r}") from None
        finally:
            s.close()
        assert "/dev/pts/" in s.text()


def test_unit_credentials_reach_pid1(booted: str) -> None:
    """systemd 257 mounts a ramfs on /run/credentials/UNIT from the unit's own namespace: with a
    shared tree it shows in PID 1's (agetty failed with "failed to open credentials directory")."""
    mounts = sh(booted, "cat /proc/1/mountinfo")
    assert "shared:" in mounts.splitlines()[0]
    version = int(sh(booted, "systemctl --version").split()[1])
    if version >= 257:  # 252 sets its units' credentials up in PID 1's namespace: nothing to see
        assert " /run/credentials/" in mounts, mounts
    journal = sh(booted, "journalctl -b --no-pager -o cat")
    assert "credentials directory" not in journal.lower(), journal[-2000:]


def test_set_and_load_credential(booted: str) -> None:
    # systemd imports what nspawn's interface passes as system credentials.
    listed = sh(booted, "systemd-creds --system list --no-legend")
    for cred in ("firstboot.timezone", "hutch.set", "hutch.loaded"):
        assert cred in listed, listed
    assert sh(booted, "systemd-creds --system cat hutch.set") == "one\ntwo"
    assert sh(booted, "systemd-creds --system cat hutch.loaded") == "from a file\n"
    assert sh(booted, "tr '\\0' '\\n' < /proc/1/environ | grep ^CREDENTIALS_DIRECTORY=") == (
        "CREDENTIALS_DIRECTORY=/run/host/credentials\n"
    )
    # Readable by the container's root only, and read-only.
    out = sh(booted, "stat -c '%a %u' /run/host/credentials /run/host/credentials/hutch.set")
    assert out == "700 0\n400 0\n"
    r = run("shell", booted, "/bin/sh", "-c", "echo x > /run/host/credentials/new")
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_boot_ids_and_reboot(booted: str, hutch_env: Path) -> None:
    """A boot ID of its own at each boot (the host's mixed every boot in `journalctl -b`)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        host = f.read()
    first = sh(booted, "cat /proc/sys/kernel/random/boot_id")
    assert first != host and len(first) == 37
    r = run("shell", booted, "/bin/sh", "-c", "echo x > /proc/sys/kernel/random/boot_id")
    assert r.returncode != 0
    leader = json.loads((hutch_env / "state/machines" / f"{booted}.json").read_text())["leader"]
    run("reboot", "--wait", booted, check=True, timeout=120)
    again = json.loads((hutch_env / "state/machines" / f"{booted}.json").read_text())
    assert again["leader"] != leader
    wait_for(lambda: state(hutch_env, booted) == "running", 120)
    second = sh(booted, "cat /proc/sys/kernel/random/boot_id")
    assert second not in (first, host)
    assert sh(booted, "systemctl is-system-running --wait").strip() == "running"
    t = time.monotonic()
    run("poweroff", "--wait", booted, check=True, timeout=120)
    assert time.monotonic() - t < 30


def test_names_resolve_at_once(booted: str, hutch_env: Path, request: pytest.FixtureRequest) -> None:
    """With a veth, the machine's nameserver is hutch's forwarder: its own hostname and the host's
    machines (NAME.machine) resolve to their addresses, each within a second. Without one, it has the
    host's resolv.conf; a lookup of its hostname must not stall there either (a nameserver that
    nobody answers costs 5-10 s)."""
    veth = "-n" in MODES[request.node.callspec.params["booted"]]
    addresses = json.loads((hutch_env / "state/machines" / f"{booted}.json").read_text())["addresses"]
    for name in (booted, f"{booted}.machine"):
        t = time.monotonic()
        r = run("shell", booted, "getent", "ahosts", name, timeout=60)
        assert time.monotonic() - t < 1.0, (name, r.stdout)
        if veth:
            assert r.returncode == 0 and r.stdout.split()[0] in addresses, (name, r.stdout)


def test_analyze(booted: str) -> None:
    """`hutch analyze NAME VERB` is `systemd-analyze -M NAME VERB`: run in the machine."""
    r = run("analyze", booted, check=True, timeout=60)
    assert r.stdout.startswith("Startup finished in ") and "(userspace)" in r.stdout, r.stdout
    r = run("analyze", booted, "blame", check=True, timeout=60)
    assert "systemd-journald.service" in r.stdout, r.stdout
    r = run("analyze", booted, "critical-chain", check=True, timeout=60)
    assert "multi-user.target" in r.stdout, r.stdout


def test_the_guests_own_networkd_keeps_the_listed_addresses(
    booted: str, hutch_env: Path, request: pytest.FixtureRequest
) -> None:
    """networkd 257 and newer flush the addresses hutch gave host0 when they take it over: IPv4 comes
    back from hutch's DHCP server, IPv6 from its router advertisements (Managed) and DHCPv6."""
    if "-n" not in MODES[request.node.callspec.params["booted"]]:
        return  # no veth, no host0: the host's network (asserted by the other mode)
    v4, v6 = json.loads((hutch_env / "state/machines" / f"{booted}.json").read_text())["addresses"]
    sh(booted, "systemctl start systemd-networkd")

    def configured() -> bool:
        out = sh(booted, "networkctl status host0 --no-pager; ip -6 route; ip -6 addr show host0")
        v6_line = next((ln for ln in out.splitlines() if f"inet6 {v6}/" in ln), "tentative")
        leased = f"{v4} (DHCP4" in out or f"{v4} (DHCPv4" in out  # 252 says DHCP4
        return leased and "tentative" not in v6_line and "proto ra" in out

    wait_for(configured, 30)
    for address in (v4, v6):
        r = subprocess.run(["busybox", "ping", "-c1", "-W2", address], capture_output=True, text=True)
        assert r.returncode == 0, (address, r.stdout)
    listed = json.loads(run("list", "-o", "json", check=True).stdout)
    assert [m["addresses"] for m in listed if m["machine"] == booted] == [f"{v4}\n{v6}"]


def test_a_foreign_architecture_guest(hutch_env: Path) -> None:
    """An arm64 Debian through qemu-user-static's binfmt_misc handler: it boots, and poweroff and
    reboot reach its emulated systemd (qemu-user renumbers real-time signals: hutch.container.emulation)."""
    assert Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text().startswith("enabled")
    image = debian_image("trixie", "arm64")
    run("import-fs", str(image), "arm", check=True, timeout=300)
    run("start", "--timeout=300", "arm", check=True, timeout=320)
    try:
        assert sh("arm", "uname -m") == "aarch64\n"
        # Under emulation a unit or two may fail (degraded); booted is what counts here.
        r = run("shell", "arm", "systemctl", "is-system-running", "--wait", timeout=300)
        assert r.stdout.strip() in ("running", "degraded"), r.stdout + r.stderr
        leader = json.loads((hutch_env / "state/machines/arm.json").read_text())["leader"]
        run("reboot", "--wait", "--timeout=300", "arm", check=True, timeout=320)
        assert json.loads((hutch_env / "state/machines/arm.json").read_text())["leader"] != leader
        t = time.monotonic()
        run("poweroff", "--wait", "--timeout=120", "arm", check=True, timeout=130)
        assert time.monotonic() - t < 60
    finally:
        run("terminate", "--wait", "arm")


def test_a_program_of_no_known_architecture(hutch_env: Path, tmp_path: Path) -> None:
    """No binfmt_misc handler for it (an ELF header for the VAX): one line with the hint that names
    qemu-user-static and binfmt-support."""
    root = tmp_path / "foreign"
    for d in ("bin", "etc", "usr"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=foreign\n")
    elf = bytearray(64)
    elf[:7] = b"\x7fELF\x02\x01\x01"
    elf[16:20] = (2).to_bytes(2, "little") + (75).to_bytes(2, "little")  # ET_EXEC, EM_VAX
    (root / "bin/prog").write_bytes(bytes(elf))
    (root / "bin/prog").chmod(0o755)
    r = run("spawn", "-q", "-D", str(root), "/bin/prog")
    assert r.returncode != 0
    (line,) = r.stderr.strip().splitlines()
    assert "Failed to execute /bin/prog: Exec format error" in line, line
    assert "qemu-user-static binfmt-support" in line, line
