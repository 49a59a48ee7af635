"""Machine-manager benchmarks:

  M1  memory of the process that supervises a running busybox machine: hutch's supervisor against
      systemd-nspawn's (RSS and PSS)                                   goal: <= 1.0x nspawn
  M2  `hutch list` with 100 running busybox machines                  goal: <= 50 ms
  M3  start-to-ready of a busybox machine (`hutch start`, which returns once PID 1 runs)

Usage: bench/machines.py [--machines N] [--runs N]   (as root, from the repository's environment)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUTCH = str(REPO / ".venv/bin/hutch")


def mem(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/smaps_rollup") as f:
        pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return rss / 1024, pss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", type=int, default=100)
    ap.add_argument("--runs", type=int, default=10)
    ns = ap.parse_args()
    ok = True
    print(f"hutch machine manager, {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}")
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as t:
        tmp = Path(t)
        env = dict(
            os.environ,
            HUTCH_IMAGE_PATH=str(tmp / "images"),
            HUTCH_STATE_DIR=str(tmp / "state"),
            HUTCH_LOG_DIR=str(tmp / "log"),
            HUTCH_CONFIG_DIR=str(tmp / "config"),
            HUTCH_SETTINGS_PATH=str(tmp / "settings"),
        )

        def hutch(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([HUTCH, *args], env=env, check=True, capture_output=True, text=True)

        def entry(name: str) -> dict[str, object]:
            return dict(json.loads((tmp / "state/machines" / f"{name}.json").read_text()))

        hutch("bootstrap", "busybox", "bb", "-q")

        # M3: start-to-ready, then M1 on the last one.
        times = []
        for _ in range(ns.runs):
            t0 = time.perf_counter()
            hutch("start", "bb")
            times.append((time.perf_counter() - t0) * 1000)
            if _ < ns.runs - 1:
                hutch("terminate", "--wait", "bb")
        print(f"\nM3: hutch start of a busybox machine, {ns.runs} runs (ms)")
        print(f"  min {min(times):.1f}  median {statistics.median(times):.1f}  max {max(times):.1f}")
        time.sleep(1)
        h_rss, h_pss = mem(int(entry("bb")["supervisor"]))  # type: ignore[call-overload]
        hutch("terminate", "--wait", "bb")
        copy = tmp / "nspawn-bb"
        shutil.copytree(tmp / "images/bb", copy, symlinks=True)
        p = subprocess.Popen(
            ["systemd-nspawn", "--keep-unit", "--register=no", "-q", "-b", "-D", str(copy),
             "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2)
        n_rss, n_pss = mem(p.pid)
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        print("\nM1: memory of the supervising process, one busybox machine booted (MiB)")
        print(f"  hutch   RSS {h_rss:5.1f}  PSS {h_pss:5.1f}")
        print(f"  nspawn  RSS {n_rss:5.1f}  PSS {n_pss:5.1f}")
        print(f"  ratio hutch/nspawn: RSS {h_rss / n_rss:.2f}  PSS {h_pss / n_pss:.2f}   goal <= 1.0")
        ok &= h_rss <= n_rss

        # M2: list with many machines.
        hutch("read-only", "bb")
        names = [f"m{i:03d}" for i in range(ns.machines)]
        for name in names:
            hutch("clone", "--thin", "bb", name)
        t0 = time.perf_counter()
        for name in names:
            hutch("start", name)
        started = time.perf_counter() - t0
        pss = [mem(int(entry(n)["supervisor"]))[1] for n in names]  # type: ignore[call-overload]
        try:
            out = subprocess.run(
                ["hyperfine", "-N", "--warmup", "3", "--runs", "30", "--export-json", str(tmp / "h.json"),
                 f"{HUTCH} list --no-legend"],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            del out
            ts = [x * 1000 for x in json.loads((tmp / "h.json").read_text())["results"][0]["times"]]
            listed = hutch("list", "--no-legend").stdout.count("\n")
            print(f"\nM2: hutch list with {listed} running machines (ms, 30 runs)")
            print(f"  min {min(ts):.1f}  median {statistics.median(ts):.1f}  max {max(ts):.1f}   goal <= 50")
            print(f"  ({ns.machines} machines started in {started:.1f} s; supervisor PSS with "
                  f"{ns.machines} running: median {statistics.median(pss):.1f} MiB)")  # fmt: skip
            ok &= statistics.median(ts) <= 50
        finally:
            for name in names:
                subprocess.run([HUTCH, "terminate", "--wait", name], env=env, capture_output=True)
                subprocess.run([HUTCH, "remove", name], env=env, capture_output=True)
            subprocess.run([HUTCH, "remove", "bb"], env=env, capture_output=True)  # immutable otherwise
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
