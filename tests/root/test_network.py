"""-n/--network-veth in a network namespace of the test's own, which plays the host: addresses on both
ends, ping and TCP both ways, list shows the address, nothing left after 50 cycles, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HUTCH, run

pytestmark = pytest.mark.usefixtures("private_net")


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_veth_addresses_ping_and_tcp(busybox: Path, hutch_env: Path) -> None:
    r = run("start", "bb", check=True)
    try:
        (m,) = json.loads(run("list", "-o", "json", check=True).stdout)
        (addr,) = m["addresses"]
        assert addr.startswith("10.88.")
        assert "ve-bb" in links()
        host = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "ve-bb"], capture_output=True, text=True
        ).stdout
        gateway = host.split()[3].split("/")[0]
        # machine -> host
        r = run("shell", "bb", "/bin/sh", "-c", f"ip -4 -o addr show host0; ping -c1 -W2 {gateway}")
        assert r.returncode == 0 and addr in r.stdout, r.stdout + r.stderr
        # host -> machine: TCP to a listener in the machine
        listener = subprocess.Popen(
            [HUTCH, "shell", "bb", "/bin/sh", "-c", "echo hello-from-bb | nc -l -p 7000"]
        )
        try:
            for _ in range(50):
                c = subprocess.run(
                    ["busybox", "nc", "-w", "2", addr, "7000"], capture_output=True, text=True
                )
                if "hello-from-bb" in c.stdout:
                    break
                subprocess.run(["sleep", "0.1"])
            assert "hello-from-bb" in c.stdout
        finally:
            listener.wait(timeout=10)
        assert subprocess.run(["busybox", "ping", "-c1", "-W2", addr], capture_output=True).returncode == 0
        r = run("status", "bb", check=True)
        assert "Iface: ve-bb" in r.stdout and f"Address: {addr}" in r.stdout
    finally:
        run("terminate", "--wait", "bb")
    assert "ve-bb" not in links()


def test_cycles_leave_no_interface(busybox: Path) -> None:
    for _ in range(50):
        r = run("spawn", "-q", "-n", "-D", str(busybox), "/bin/true")
        assert r.returncode == 0, r.stderr
    assert " ve-" not in links()
    assert "10.88." not in subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout


def test_long_names_and_bad_input(busybox: Path, hutch_env: Path) -> None:
    import os

    from hutch.container.network import host_ifname

    a, b = host_ifname("averylongmachinename-1"), host_ifname("averylongmachinename-2")
    assert len(a) == len(b) == 15 and a != b
    r = run("spawn", "-q", "-n", "--private-users=no", "-D", str(busybox), "/bin/true")
    assert r.returncode != 0 and "needs a user namespace" in r.stderr
    r = run(
        "spawn",
        "-q",
        "-n",
        "-D",
        str(busybox),
        "/bin/true",
        env=dict(os.environ, HUTCH_NET_POOL="10.0.0.0/31"),
    )
    assert r.returncode != 0 and "too small" in r.stderr
    r = run(
        "spawn", "-q", "-n", "-D", str(busybox), "/bin/true", env=dict(os.environ, HUTCH_NET_POOL="nonsense")
    )
    assert r.returncode != 0 and "Invalid address pool" in r.stderr
    # An interface of that name already there (another machine's, shortened the same way): refused.
    subprocess.run(["ip", "link", "add", "ve-bb", "type", "veth", "peer", "name", "ve-bb-peer"], check=True)
    try:
        r = run("spawn", "-q", "-n", "-M", "bb", "-D", str(busybox), "/bin/true")
        assert r.returncode != 0 and "ve-bb already exists" in r.stderr
    finally:
        subprocess.run(["ip", "link", "del", "ve-bb"], check=True)
    assert " ve-" not in links()


def test_zone_members_reach_each_other(busybox: Path, hutch_env: Path) -> None:
    argv = [HUTCH, "spawn", "-q", "-M", "za", "--network-zone=z1", "--read-only", "-D", str(busybox)]
    a = subprocess.Popen(
        [*argv, "/bin/sh", "-c", "ip -4 -o addr show host0; sleep 5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert a.stdout is not None
        addr_a = a.stdout.readline().split()[3].split("/")[0]
        assert addr_a.startswith("10.89.")
        r = run("spawn", "-q", "-M", "zb", "--network-zone=z1", "--read-only", "-D", str(busybox),
                "/bin/sh", "-c", f"ping -c1 -W2 {addr_a}")  # fmt: skip
        assert r.returncode == 0 and "1 packets received" in r.stdout, r.stdout + r.stderr
        assert "vz-z1" in links() and "vb-za" in links()  # the bridge stays for the remaining member
    finally:
        a.terminate()  # SIGTERM: the supervisor stops its machine and leaves the zone
        a.wait()
    for _ in range(100):
        if "vz-z1" not in links():
            break
        subprocess.run(["sleep", "0.05"])
    assert "vz-z1" not in links() and " vb-" not in links()  # gone with the last member
    r = run("spawn", "-q", "--network-zone=this-is-too-long", "-D", str(busybox), "/bin/true")
    assert r.returncode != 0 and "Invalid network zone name" in r.stderr


def test_port_forward_from_localhost_v4_and_v6(busybox: Path, hutch_env: Path) -> None:
    import socket

    argv = [HUTCH, "spawn", "-q", "-n", "-p", "8080:7000", "--read-only", "-D", str(busybox)]
    script = "for i in 1 2; do echo hello-port | nc -l -p 7000; done; sleep 2"
    p = subprocess.Popen([*argv, "/bin/sh", "-c", script])
    try:
        for host in ("127.0.0.1", "::1"):  # the host's own localhost: upstream's DNAT misses it (#6106)
            got = b""
            for _ in range(100):
                try:
                    with socket.create_connection((host, 8080), timeout=2) as c:
                        got = c.recv(100)
                    if got:
                        break
                except OSError:
                    pass
                subprocess.run(["sleep", "0.05"])
            assert got == b"hello-port\n", host
        # A port in use: refused before anything starts.
        r = run(
            "spawn", "-q", "-n", "-p", "8080", "-M", "other", "--read-only", "-D", str(busybox), "/bin/true"
        )
        assert r.returncode != 0 and "Port 8080 is already in use" in r.stderr
    finally:
        p.wait(timeout=20)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 8080), timeout=1)  # closed with the machine
    for bad, msg in (("-p", "99999"), ("--port=udp:53", "only tcp"), ("--port=x", "Invalid --port")):
        r = run("spawn", "-q", "-n", bad, "-D", str(busybox), "/bin/true")
        assert r.returncode != 0 and (msg in r.stderr or "Invalid" in r.stderr), r.stderr
    r = run("spawn", "-q", "-p", "8081", "-D", str(busybox), "/bin/true")
    assert r.returncode != 0 and "--port needs a veth" in r.stderr


def test_masquerade_to_a_third_namespace(busybox: Path, tmp_path: Path) -> None:
    """This test's namespace plays the host; a third one, joined to it by a veth with addresses we
    assign, plays the outside world and reports whom it sees connecting."""
    outside = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        subprocess.run(["sleep", "0.2"])
        ns = f"/proc/{outside.pid}/ns/net"
        sh = ["sh", "-c"]
        host_side = f"ip link add to-out type veth peer name from-host netns {ns} && "
        host_side += "ip addr add 192.0.2.1/24 dev to-out && ip link set to-out up"
        subprocess.run([*sh, host_side], check=True)
        subprocess.run(["nsenter", f"--net={ns}", *sh, "ip addr add 192.0.2.2/24 dev from-host && "
                        "ip link set from-host up && ip link set lo up"], check=True)  # fmt: skip
        server = (
            "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('0.0.0.0', 9000)); s.listen(1); s.settimeout(10); c, a = s.accept(); print(a[0])"
        )
        listener = subprocess.Popen(["nsenter", f"--net={ns}", sys.executable, "-c", server],
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
        subprocess.run(["sleep", "0.3"])
        r = run("spawn", "-q", "-n", "--network-masquerade", "--read-only", "-D", str(busybox),
                "/bin/sh", "-c", "echo hi | nc -w 2 192.0.2.2 9000")  # fmt: skip
        assert r.returncode == 0, r.stderr
        out, _ = listener.communicate(timeout=15)
        assert out.strip() == "192.0.2.1"  # the machine's 10.88.x.x left as the host's address
        rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        assert "masquerade" not in rules  # removed with the machine
    finally:
        outside.kill()
        outside.wait()
    r = run("spawn", "-q", "--network-masquerade", "-D", str(busybox), "/bin/true")
    assert r.returncode != 0 and "needs a veth" in r.stderr
