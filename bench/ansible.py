"""Ansible through hutch, side by side with Ansible on the host, runs interleaved, medians compared:

  A1  `ansible MACHINE -m ping` through tests/ansible's connection plugin (machinectl shell, copy-to,
      copy-from; hutch linked as machinectl) into a booted machine
      vs `ansible localhost -c local -m ping`                                       goal: <= 1.3x

The machine is the test suite's cached python guest (bookworm with python3); run the suite's
tests/root/test_dropin.py once to build it, and the Ansible venv with it.

Usage: bench/ansible.py [--runs N]   (as root, from the repository's environment)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUTCH = str(REPO / ".venv/bin/hutch")


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ns = ap.parse_args()
    cache = Path(os.environ.get("HUTCH_TEST_CACHE", "/var/cache/hutch-test"))
    venv = next(iter(sorted(cache.glob("ansible-*/bin/ansible"))), None)
    guest = next(iter(sorted(cache.glob("guest-python-*/pyguest"))), None)
    if venv is None or guest is None:
        print(
            "bench: no cached Ansible venv or python guest; run tests/root/test_dropin.py once",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as t:
        tmp = Path(t)
        bindir = tmp / "bin"
        bindir.mkdir()
        (bindir / "machinectl").symlink_to(HUTCH)
        env = dict(
            os.environ,
            PATH=f"{bindir}:{venv.parent}:{os.environ['PATH']}",
            HUTCH_IMAGE_PATH=str(tmp / "images"),
            HUTCH_STATE_DIR=str(tmp / "state"),
            HUTCH_LOG_DIR=str(tmp / "log"),
            ANSIBLE_HOME=str(tmp / "ansible"),
            ANSIBLE_CONNECTION_PLUGINS=str(REPO / "tests/ansible/connection_plugins"),
            ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
            ANSIBLE_HOST_KEY_CHECKING="0",
        )
        subprocess.run([HUTCH, "import-fs", "-q", str(guest), "pyguest"], env=env, check=True)
        subprocess.run([HUTCH, "start", "-q", "pyguest"], env=env, check=True)
        try:
            cases = {
                "hutch": [str(venv), "pyguest", "-i", "pyguest,", "-c", "machinectl_shell", "-m", "ping"],
                "local": [str(venv), "localhost", "-i", "localhost,", "-c", "local", "-m", "ping"],
            }
            for argv in cases.values():
                timed(argv, env)  # warm the page cache and Ansible's own caches
            times: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(ns.runs):
                for name, argv in cases.items():
                    times[name].append(timed(argv, env))
        finally:
            subprocess.run([HUTCH, "poweroff", "-q", "--wait", "pyguest"], env=env)
    print(f"Ansible ping, {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}")
    print(f"  {'connection':<10} {'min':>9} {'median':>9} {'max':>9}   (ms, {ns.runs} runs)")
    for name, ts in times.items():
        print(f"  {name:<10} {min(ts):9.1f} {statistics.median(ts):9.1f} {max(ts):9.1f}")
    ratio = statistics.median(times["hutch"]) / statistics.median(times["local"])
    print(f"  A1 ratio hutch/local (medians): {ratio:.3f}   goal: <= 1.3")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
