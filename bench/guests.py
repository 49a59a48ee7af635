"""Current distributions as guests, side by side with systemd-nspawn where it can boot them:

  G1  boot to the console's login prompt, each of Debian bookworm (systemd 252), trixie (257), sid
  G2  power off from there: SIGTERM to the tool (both send the init SIGRTMIN+3), until the tool exits

Both boot the same cached tree (tests/conftest.debian_image) through a tmpfs overlay (--volatile=overlay)
so no run changes it, without a user namespace (nspawn 252 cannot boot a guest with -U here) and on
the host's network. nspawn 252 boots trixie (with errors about the cgroup v1 links it makes) but not
sid, whose systemd refuses the hybrid cgroup tree nspawn 252 mounts ("unsupported legacy cgroup
hierarchy"; hutch gives every guest a cgroup2 subtree), so sid's row has hutch only. Runs alternate.

Usage: bench/guests.py [--runs N]   (as root, in a private mount namespace, from the repository)
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUTCH = str(REPO / ".venv/bin/hutch")
sys.path.insert(0, str(REPO / "tests"))


def boot(argv: list[str], timeout: float = 120) -> tuple[float, float]:
    """(seconds to 'login: ' on the console, seconds from SIGTERM to the tool's exit)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    seen = b""
    try:
        while b"login: " not in seen:
            left = timeout - (time.monotonic() - t0)
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                raise TimeoutError(f"{argv[0]}: no login prompt: {seen[-500:]!r}")
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{argv[0]} exited: {seen[-1000:]!r}")
            seen = seen[-4096:] + chunk
        booted = time.monotonic() - t0
        t1 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        while os.read(p.stdout.fileno(), 65536):
            pass
        p.wait(60)
        return booted, time.monotonic() - t1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ns = ap.parse_args()
    from conftest import debian_image

    rows = []
    for suite in ("bookworm", "trixie", "sid"):
        tree = str(debian_image(suite))
        common = ["-b", "-D", tree, "--volatile=overlay", "--console=read-only", "-M", f"bench-{suite}"]
        tools = {"hutch": [HUTCH, "spawn", "-q", "--private-users=no", *common]}
        if suite != "sid":
            tools["nspawn"] = ["systemd-nspawn", "-q", "--keep-unit", "--register=no", *common]
        times: dict[str, list[tuple[float, float]]] = {t: [] for t in tools}
        for _ in range(ns.runs):
            for tool, argv in tools.items():
                times[tool].append(boot(argv))
        for tool, samples in times.items():
            b = statistics.median(s[0] for s in samples)
            o = statistics.median(s[1] for s in samples)
            rows.append((suite, tool, b, o))
            print(
                f"{suite:9} {tool:7} boot to login {b * 1000:7.0f} ms   poweroff {o * 1000:6.0f} ms",
                flush=True,
            )
    base = {r[0]: r for r in rows if r[1] == "nspawn"}
    for suite, tool, b, o in rows:
        if tool == "hutch" and suite in base:
            print(f"{suite}: hutch/nspawn boot {b / base[suite][2]:.3f}, poweroff {o / base[suite][3]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
