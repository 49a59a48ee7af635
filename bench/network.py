"""The extra start-up time of -n (a veth pair with addresses) over --private-network (loopback only),
for hutch and for systemd-nspawn, in one run, inside a network namespace of the bench's own (so no
interface ever appears on the real host):

  N1  spawn -D busybox /bin/true, --private-network against -n      (hutch and systemd-nspawn)
      each run after a 0.2 s pause (hyperfine --prepare): the start of one machine on a quiet kernel
  N2  the same back to back: each start also waits out the kernel's teardown of the previous run's
      network namespace (it holds the RTNL lock across RCU grace periods), which the faster tool
      meets more of

Usage: bench/network.py [--runs N]   (as root, from the repository's environment)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUTCH = str(REPO / ".venv/bin/hutch")
NSPAWN = "systemd-nspawn --keep-unit --register=no -q"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ns = ap.parse_args()
    if os.environ.get("HUTCH_BENCH_IN_NETNS") != "1":
        # Re-run ourselves in a fresh network namespace with loopback up.
        env = dict(os.environ, HUTCH_BENCH_IN_NETNS="1")
        script = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} --runs {ns.runs}"
        return subprocess.run(["unshare", "--net", "--", "sh", "-c", script], env=env).returncode
    print(f"-n start-up cost, {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}")
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as t:
        tmp = Path(t)
        env = dict(os.environ, HUTCH_IMAGE_PATH=str(tmp / "images"), HUTCH_STATE_DIR=str(tmp / "state"))
        subprocess.run([HUTCH, "bootstrap", "busybox", "bb", "-q"], env=env, check=True)
        bb = tmp / "images/bb"
        cmds = {
            "hutch-private": f"{HUTCH} spawn -q --register=no --private-network -D {bb} /bin/true",
            "hutch-veth": f"{HUTCH} spawn -q --register=no -n -D {bb} /bin/true",
            "nspawn-private": f"{NSPAWN} --private-network -D {bb} /bin/true",
            "nspawn-veth": f"{NSPAWN} -n -D {bb} /bin/true",
        }
        res: dict[str, dict[str, list[float]]] = {}
        for label, extra in (("N1", ["--prepare", "sleep 0.2"]), ("N2", [])):
            argv = ["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", str(ns.runs), *extra,
                    "--export-json", str(tmp / "h.json")]  # fmt: skip
            for name, cmd in cmds.items():
                argv += ["-n", name, cmd]
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            res[label] = {
                r["command"]: [x * 1000 for x in r["times"]]
                for r in json.loads((tmp / "h.json").read_text())["results"]
            }
    for label, how in (("N1", "after a pause"), ("N2", "back to back")):
        med = {k: statistics.median(v) for k, v in res[label].items()}
        print(f"\n{label}: spawn /bin/true, {how}, medians of {ns.runs} runs (ms)")
        for k, v in med.items():
            print(f"  {k:<15} {v:8.2f}")
        h, n = med["hutch-veth"] - med["hutch-private"], med["nspawn-veth"] - med["nspawn-private"]
        print(f"  extra for -n: hutch {h:.2f} ms, systemd-nspawn {n:.2f} ms")
    print("\n(nspawn's -n makes the pair and leaves it unconfigured; hutch's also addresses both ends,")
    print(" IPv4 and IPv6, and opens the DHCP server's socket)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
