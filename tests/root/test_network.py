"""-n/--network-veth in a network namespace of the test's own, which plays the host: addresses on both
ends, ping and TCP both ways, list shows the address, nothing left after 50 cycles, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HUTCH, run, wait_for

pytestmark = pytest.mark.usefixtures("private_net")


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_veth_addresses_ping_and_tcp(busybox: Path, hutch_env: Path) -> None:
    r = run("start", "bb", check=True)
    try:
        (m,) = json.loads(run("list", "-o", "json", check=True).stdout)
        addr = m["addresses"].split("\n")[0]  # machinectl's JSON: one string, a line each
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
    wait_for(lambda: "ve-bb" not in links())


def test_cycles_leave_no_interface(busybox: Path) -> None:
    """50 start/stop cycles: veths with masquerading, port forwards and DHCP servers, and zone members.
    Nothing of them may be left: interface, bridge, address, nftables rule, port or helper process."""
    import socket

    for i in range(50):
        if i % 2:
            args = ["--network-zone=cz"]
        else:
            args = ["-n", "--network-masquerade", "-p", "9100:80", "-p", "udp:9100:53"]
        r = run("spawn", "-q", *args, "--read-only", "-D", str(busybox), "/bin/true")
        assert r.returncode == 0, r.stderr
    wait_for(lambda: not any(f" {p}-" in links() for p in ("ve", "vb", "vz")))
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.88." not in addrs and "10.89." not in addrs and "fd68:" not in addrs
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert "hutch:" not in rules and "masquerade" not in rules
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET6, kind) as sk:
            sk.bind(("::", 9100))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(busybox) not in ps  # no supervisor, relay or DHCP server left


def test_long_names_and_bad_input(busybox: Path, hutch_env: Path) -> None:
    import os

    from hutch.container.network import host_ifname

    a, b = host_ifname("averylongmachinename-1"), host_ifname("averylongmachinename-2")
    assert len(a) == len(b) == 15 and a != b
    # A veth without a user namespace, as upstream has it (TEST-13's settings test): host0 configured.
    r = run(
        "spawn", "-q", "-n", "--private-users=no", "-D", str(busybox), "ip", "-4", "addr", "show", "host0"
    )
    assert r.returncode == 0 and "inet " in r.stdout, r.stderr
    r = run(
        "spawn",
        "-q",
        "-n",
        "-D",
        str(busybox),
        "/bin/true",
        env=dict(os.environ, HUTCH_NET_POOL="10.0.0.0/31"),
    )
    assert r.returncode != 0 and "does not fit" in r.stderr
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
    # The bridge goes with the last member; the ports with their machines' namespaces, which the kernel
    # frees asynchronously (~0.5 s here).
    wait_for(lambda: "vz-z1" not in links() and " vb-" not in links())
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
        assert r.returncode != 0 and "Port tcp:8080 is already in use" in r.stderr
    finally:
        p.wait(timeout=20)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 8080), timeout=1)  # closed with the machine
    for bad, msg in (("-p", "99999"), ("--port=sctp:53", "Invalid --port"), ("--port=x", "Invalid --port")):
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


def leader_of(hutch_env: Path, name: str) -> int:
    f = hutch_env / "state/machines" / f"{name}.json"
    wait_for(lambda: f.exists() and json.loads(f.read_text()).get("leader"))
    return int(json.loads(f.read_text())["leader"])


def test_ipv6_both_ways_and_dns_inside(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    import os
    import socket

    # The host's resolver configuration, as the test has it: the machine is given hutch's forwarder on
    # the host side of its veth instead, with the host file's search list.
    host_resolv = tmp_path / "resolv.conf"
    host_resolv.write_text(
        "search example.test\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\n"
    )
    env = dict(os.environ, HUTCH_HOST_RESOLV_CONF=str(host_resolv))
    r = run("start", "bb", env=env, check=True)
    try:
        (m,) = json.loads(run("list", "-o", "json", check=True).stdout)
        v4, v6 = m["addresses"].split("\n")
        assert v4.startswith("10.88.") and v6.startswith("fd68:7574:6368:") and v6.endswith("::2")
        gw6 = v6[: -len("2")] + "1"
        r = run("shell", "bb", "/bin/sh", "-c", f"cat /etc/resolv.conf; ip -6 route; ping6 -c1 -W2 {gw6}")
        assert r.returncode == 0, r.stdout + r.stderr
        gw4 = v4.rsplit(".", 1)[0] + "." + str(int(v4.rsplit(".", 1)[1]) - 1)
        assert f"nameserver {gw4}\n" in r.stdout and "search example.test" in r.stdout
        assert "192.0.2.53" not in r.stdout and "127.0.0.53" not in r.stdout
        assert f"default via {gw6} dev host0" in r.stdout
        assert (
            subprocess.run(["busybox", "ping", "-6", "-c1", "-W2", v6], capture_output=True).returncode == 0
        )
        # TCP over IPv6, host -> machine.
        listener = subprocess.Popen([HUTCH, "shell", "bb", "/bin/sh", "-c", "echo hello-v6 | nc -l -p 7006"])
        try:
            got = b""
            for _ in range(100):
                try:
                    with socket.create_connection((v6, 7006), timeout=2) as c:
                        got = c.recv(100)
                    break
                except OSError:
                    subprocess.run(["sleep", "0.05"])
            assert got == b"hello-v6\n"
        finally:
            listener.wait(timeout=10)
        assert v6 in run("status", "bb", check=True).stdout
    finally:
        run("terminate", "--wait", "bb")
    addrs = ["ip", "-6", "-o", "addr"]
    wait_for(lambda: "fd68:7574:6368" not in subprocess.run(addrs, capture_output=True, text=True).stdout)


def test_udp_and_tcp_forwards_from_localhost_and_a_second_namespace(busybox: Path, hutch_env: Path) -> None:
    """UDP and TCP forwards, reached from the host's localhost and from another namespace joined to the
    host by a veth with addresses the test assigns (198.51.100.0/24)."""
    import socket

    argv = [HUTCH, "spawn", "-q", "-M", "fw", "-n", "-p", "udp:5300:5301", "-p", "8090:7001", "--read-only"]
    machine = subprocess.Popen([*argv, "-D", str(busybox), "/bin/sh", "-c", "sleep 30"])
    peer = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    echo = None
    try:
        leader = leader_of(hutch_env, "fw")
        # Servers in the machine's network namespace: a UDP echo on 5301, a TCP greeter on 7001.
        server = (
            "import socket, threading\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 5301))\n"
            "t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "t.bind(('0.0.0.0', 7001)); t.listen(8)\n"
            "def tcp():\n"
            "    while True:\n"
            "        c, a = t.accept(); c.sendall(b'hello-tcp'); c.close()\n"
            "threading.Thread(target=tcp, daemon=True).start()\n"
            "while True:\n"
            "    d, a = u.recvfrom(100); u.sendto(b'echo:' + d, a)\n"
        )
        echo = subprocess.Popen(["nsenter", f"--net=/proc/{leader}/ns/net", sys.executable, "-c", server])
        ns = f"/proc/{peer.pid}/ns/net"
        host_side = f"ip link add to-peer type veth peer name from-host netns {ns} && "
        host_side += "ip addr add 198.51.100.1/24 dev to-peer && ip link set to-peer up"
        subprocess.run(["sh", "-c", host_side], check=True)
        peer_side = (
            "ip addr add 198.51.100.2/24 dev from-host && ip link set from-host up && ip link set lo up"
        )
        subprocess.run(["nsenter", f"--net={ns}", "sh", "-c", peer_side], check=True)

        def udp(host: str) -> bytes:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            for _ in range(100):
                with socket.socket(family, socket.SOCK_DGRAM) as u:
                    u.settimeout(0.2)
                    u.sendto(b"ping", (host, 5300))
                    try:
                        return u.recv(100)
                    except OSError:
                        continue
            return b""

        assert udp("127.0.0.1") == b"echo:ping"
        assert udp("::1") == b"echo:ping"
        probe = (
            "import socket, sys\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)\n"
            "u.sendto(b'far', ('198.51.100.1', 5300)); d = u.recv(100)\n"
            "c = socket.create_connection(('198.51.100.1', 8090), timeout=2)\n"
            "print(d.decode(), c.recv(100).decode())\n"
        )
        r = subprocess.run(
            ["nsenter", f"--net={ns}", sys.executable, "-c", probe], capture_output=True, text=True
        )
        assert r.stdout.split() == ["echo:far", "hello-tcp"], r.stderr
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        machine.terminate()
        machine.wait(timeout=20)
        peer.kill()
        peer.wait()
        subprocess.run(["ip", "link", "del", "to-peer"], capture_output=True)

    # Both ports are the host's again, once the relay has followed its supervisor.
    def free() -> bool:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
                u.bind(("::", 5300))
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
                t.bind(("::", 8090))
        except OSError:
            return False
        return True

    wait_for(free, timeout=5)


def test_bridge_interface_veth_extra(busybox: Path, hutch_env: Path) -> None:
    """--network-bridge on the test's own bridge, a dummy interface moved in and back, an extra pair."""
    sh = ["sh", "-c"]
    setup = "ip link add br-t type bridge && ip addr add 10.77.0.1/24 dev br-t && ip link set br-t up && "
    setup += "ip link add dm-t type veth peer name dm-peer"
    subprocess.run([*sh, setup], check=True)
    try:
        script = (
            "ip addr add 10.77.0.2/24 dev host0 && ping -c1 -W2 10.77.0.1 && "
            "ip -o link show eth9 && ip -o link show vx-in && ip -o addr show host0"
        )
        r = run("spawn", "-q", "-M", "bm", "--network-bridge=br-t", "--network-interface=dm-t:eth9",
                "--network-veth-extra=vx-host:vx-in", "--read-only", "-D", str(busybox),
                "/bin/sh", "-c", f"{script}; sleep 1")  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 packets received" in r.stdout and "eth9" in r.stdout and "vx-in" in r.stdout
        # No address from hutch on a bridge it does not own: only the one the guest set.
        assert "10.88." not in r.stdout
        assert "dm-t" in links()  # moved back, under its own name
        wait_for(lambda: "vb-bm" not in links() and "vx-host" not in links())  # with the namespace
        assert "br-t" in links()  # the host's bridge is the host's
    finally:
        subprocess.run([*sh, "ip link del br-t; ip link del dm-t"], capture_output=True)


def test_network_namespace_path(busybox: Path, hutch_env: Path) -> None:
    other = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        subprocess.run(["sleep", "0.2"])
        ns = f"/proc/{other.pid}/ns/net"
        subprocess.run(
            [
                "nsenter",
                f"--net={ns}",
                "ip",
                "link",
                "add",
                "only-there",
                "type",
                "veth",
                "peer",
                "name",
                "only-there2",
            ],
            check=True,
        )
        r = run("spawn", "-q", f"--network-namespace-path={ns}", "--read-only", "-D", str(busybox),
                "/bin/sh", "-c", "ip -o link")  # fmt: skip
        assert r.returncode == 0 and "only-there" in r.stdout, r.stdout + r.stderr
        r = run("spawn", "-q", f"--network-namespace-path={ns}", "-n", "-D", str(busybox), "/bin/true")
        assert r.returncode != 0 and "cannot be combined" in r.stderr
    finally:
        other.kill()
        other.wait()


def test_network_bad_input(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    import os

    before = links()
    cases = [
        (["--network-interface=nosuch0"], "Network interface nosuch0 does not exist"),
        (["--network-interface=lo:bad/name"], "Invalid network interface name"),
        (["--network-bridge=nosuchbr"], "Network bridge nosuchbr does not exist"),
        (["--network-bridge=br0", "--network-zone=z"], "mutually exclusive"),
        (["--network-namespace-path=relative"], "not an absolute path"),
        ([f"--network-namespace-path={tmp_path}"], "is not a network namespace"),
        (["--network-namespace-path=/nonexistent/ns"], "Failed to open network namespace"),
        (["--network-veth-extra=a:x", "--network-veth-extra=b:x"], "given twice"),
    ]
    for args, msg in cases:
        r = run("spawn", "-q", *args, "-D", str(busybox), "/bin/true")
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    pools = dict(os.environ, HUTCH_NET_POOL="10.89.0.0/16", HUTCH_ZONE_POOL="10.89.128.0/17")
    r = run("spawn", "-q", "-n", "-D", str(busybox), "/bin/true", env=pools)
    assert r.returncode != 0 and "overlap" in r.stderr
    assert links() == before  # nothing half-made
    # A pool subnet the host already uses is passed over.
    subprocess.run(
        ["sh", "-c", "ip link add used0 type veth peer name used1 && ip addr add 10.66.0.1/30 dev used0"],
        check=True,
    )
    try:
        small = dict(os.environ, HUTCH_NET_POOL="10.66.0.0/29")
        cmd = ["/bin/sh", "-c", "ip -4 -o addr show host0"]
        r = run("spawn", "-q", "-n", "--read-only", "-D", str(busybox), *cmd, env=small)
        assert r.returncode == 0 and "10.66.0.6/30" in r.stdout, r.stdout + r.stderr
    finally:
        subprocess.run(["ip", "link", "del", "used0"], check=True)


def test_zone_bridge_of_a_killed_last_member_is_collected(busybox: Path, hutch_env: Path) -> None:
    import os
    import signal

    (hutch_env / "settings/bb.nspawn").write_text("[Network]\nZone=zk\n")
    run("start", "bb", check=True)
    e = json.loads((hutch_env / "state/machines/bb.json").read_text())
    assert e["zone"] == "zk" and "vz-zk" in links() and "vb-bb" in links()
    os.kill(int(e["supervisor"]), signal.SIGKILL)  # no chance to leave the zone
    wait_for(lambda: "vb-bb" not in links())  # gone with the machine's namespace
    assert "vz-zk" in links()
    run("list", check=True)  # the next command finds the entry stale, and the zone empty
    assert "vz-zk" not in links()


def test_guest_dhcp_client_gets_the_machines_address(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    """A guest's own DHCP client (busybox udhcpc) is answered with the address hutch gave host0, its
    router and the nameservers of its resolv.conf; in a zone, each member gets its own."""
    import os

    script = busybox / "udhcpc.sh"
    script.write_text('#!/bin/sh\necho "$1 ip=$ip subnet=$subnet router=$router dns=$dns"\n')
    script.chmod(0o755)
    host_resolv = tmp_path / "resolv.conf"
    host_resolv.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.53\n")
    env = dict(os.environ, HUTCH_HOST_RESOLV_CONF=str(host_resolv))
    dhcp = "ip -4 -o addr show host0; udhcpc -i host0 -f -q -n -t 3 -s /udhcpc.sh"
    r = run("spawn", "-q", "-n", "-D", str(busybox), "/bin/sh", "-c", dhcp, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    configured = r.stdout.split()[3].split("/")[0]
    (bound,) = [line for line in r.stdout.splitlines() if line.startswith("bound ")]
    gw = configured.rsplit(".", 1)[0] + "." + str(int(configured.rsplit(".", 1)[1]) - 1)
    assert bound == f"bound ip={configured} subnet=255.255.255.252 router={gw} dns={gw}"  # the forwarder
    # Two zone members on one bridge: each server answers its own machine only.
    argv = [HUTCH, "spawn", "-q", "-M", "da", "--network-zone=zd", "--read-only", "-D", str(busybox)]
    a = subprocess.Popen([*argv, "/bin/sh", "-c", "sleep 6"])
    try:
        wait_for(lambda: "vb-da" in links())
        r = run("spawn", "-q", "-M", "db", "--network-zone=zd", "--read-only", "-D", str(busybox),
                "/bin/sh", "-c", dhcp, env=env)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        mine = r.stdout.split()[3].split("/")[0]
        (bound,) = [line for line in r.stdout.splitlines() if line.startswith("bound ")]
        assert bound.startswith(f"bound ip={mine} subnet=255.255.255.0 router=10.89.")
    finally:
        a.terminate()
        a.wait()


def test_network_keys_of_an_untrusted_settings_file_are_ignored(busybox: Path, hutch_env: Path) -> None:
    """A .nspawn file next to the image may ask for a veth or a zone, but not for the host's
    interfaces, bridges or ports."""
    (hutch_env / "images/bb.nspawn").write_text("[Network]\nInterface=lo\nBridge=br0\nPort=9177\nZone=uz\n")
    r = run("spawn", "-q", "-M", "bb", "--read-only", "/bin/sh", "-c", "ip -o link")
    assert r.returncode == 0, r.stderr
    for key in ("Interface", "Bridge", "Port"):
        assert f"Ignoring {key}=" in r.stderr
    assert "host0" in r.stdout and "Ignoring Zone=" not in r.stderr  # the zone was honoured
    (hutch_env / "settings/bb.nspawn").write_text("[Network]\nPort=notaport\n")  # trusted, but malformed
    r = run("spawn", "-q", "-M", "bb", "--read-only", "/bin/true")
    assert r.returncode != 0 and "bb.nspawn:2" in r.stderr and len(r.stderr.strip().splitlines()) == 1


FAKE_UPSTREAM = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    p, a = s.recvfrom(4096)
    end = 12
    while p[end]:
        end += 1 + p[end]
    end += 5
    qtype = struct.unpack_from("!H", p, end - 4)[0]
    known = p[12:end - 4] == b"\\x03www\\x07example\\x03org\\x00" and qtype == 1
    head = struct.pack("!HHHHH", 0x8180 if known else 0x8183, 1, 1 if known else 0, 0, 0)
    ans = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("192.0.2.7") if known else b""
    s.sendto(p[:2] + head + p[12:end] + ans, a)
"""


def test_dns_inside_through_the_forwarder(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    """The machine's nameserver is hutch's forwarder on the host side of its link: it answers the
    names of the host's machines (NAME, NAME.machine; a zone's members find each other) and forwards
    the rest to the host's nameservers, a loopback one included (the host's 127.0.0.1 here: a fake
    upstream the test runs in its own network namespace, which plays the host)."""
    import os
    import time

    upstream = subprocess.Popen([sys.executable, "-c", FAKE_UPSTREAM], stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None and upstream.stdout.readline() == "ready\n"
        host_resolv = tmp_path / "resolv.conf"
        host_resolv.write_text("nameserver 127.0.0.1\n")
        env = dict(os.environ, HUTCH_HOST_RESOLV_CONF=str(host_resolv))
        run("clone", "bb", "bb2", check=True)
        for name in ("bb", "bb2"):  # `start`: the slim monitor answers, after the supervisor
            run("start", "--property=TasksMax=100", name, env=env, check=True)
        machines = {m["machine"]: m for m in json.loads(run("list", "-o", "json", check=True).stdout)}
        addr2 = machines["bb2"]["addresses"].split("\n")[0]

        def lookup(name: str) -> str:
            t = time.monotonic()
            r = run("shell", "bb", "/bin/sh", "-c", f"nslookup {name}")
            assert time.monotonic() - t < 1.5, name  # a stall would be the resolver's 5 s timeout
            return r.stdout + r.stderr

        out = lookup("www.example.org")
        assert "192.0.2.7" in out, out
        assert "NXDOMAIN" in lookup("nosuch.example.org")
        out = lookup("bb2.machine")
        assert addr2 in out and machines["bb2"]["addresses"].split("\n")[1] in out, out
        assert "NXDOMAIN" in lookup("nosuch.machine")
        # (Reaching it is the host's business: it does not forward between veths, here or under nspawn.)
        run("poweroff", "--wait", "bb2", check=True)
        assert "NXDOMAIN" in lookup("bb2.machine")  # gone with its machine
    finally:
        for name in ("bb", "bb2"):
            run("terminate", "--wait", name)
        upstream.kill()
        upstream.wait()
    # A zone: members reach each other by their bare names.
    argv = [HUTCH, "spawn", "-q", "-M", "za", "--network-zone=zn", "--read-only", "-D", str(busybox)]
    a = subprocess.Popen([*argv, "/bin/sh", "-c", "sleep 8"], env=env)
    try:
        wait_for(lambda: "vb-za" in links())
        wait_for(lambda: "za" in run("list", check=True).stdout)
        r = run("spawn", "-q", "-M", "zb", "--network-zone=zn", "--read-only", "-D", str(busybox),
                "/bin/sh", "-c", "ping -c1 -W2 za", env=env)  # fmt: skip
        assert r.returncode == 0 and "1 packets received" in r.stdout, r.stdout + r.stderr
    finally:
        a.terminate()
        a.wait()
