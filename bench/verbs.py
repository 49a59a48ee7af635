"""The control plane against its floors, side by side in one run (issue 19), through an installed hutch:

  V1  shell NAME /bin/true            against nsenter -t LEADER -a /bin/true     goal: <= 5x
  V2  list, one machine running       against python3 -I -S -c pass              goal: <= 2x
  V3  status NAME, one machine        against python3 -I -S -c pass              goal: <= 2x
  V4  list, 100 machines running      (and show NAME), absolute
  V5  shell into a machine with a v1 limit (MemoryMax: a cgroup v1 write joins the memory hierarchy)

Usage: bench/verbs.py [--hutch PATH] [--runs N] [--machines N]
PATH defaults to the installed front end (/opt/hutch/bin/hutch, ./setup.sh install), else the
development launcher. As root; machines go in a temporary image store and state directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import hyperfine

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"  # the interpreter the installed hutch runs on; never a pyenv shim


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(times[a]) / statistics.median(times[b])


def line(times: dict[str, list[float]], name: str) -> str:
    ts = times[name]
    return f"  {name:<22} median {statistics.median(ts):7.2f} ms   min {min(ts):7.2f}   ({len(ts)} runs)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    installed = "/opt/hutch/bin/hutch"
    default = installed if os.access(installed, os.X_OK) else str(REPO / ".venv/bin/hutch")
    ap.add_argument("--hutch", default=default)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--machines", type=int, default=100)
    a = ap.parse_args()
    hutch = a.hutch
    tmp = Path(tempfile.mkdtemp(prefix="hutch-bench-verbs-"))
    env = {"HUTCH_IMAGE_PATH": f"{tmp}/images", "HUTCH_STATE_DIR": f"{tmp}/state",
           "HUTCH_LOG_DIR": f"{tmp}/log", "HUTCH_CACHE_DIR": f"{tmp}/cache",
           "HUTCH_SETTINGS_PATH": f"{tmp}/settings", "HUTCH_CONFIG_DIR": f"{tmp}/config"}  # fmt: skip
    os.environ.update(env)
    started: list[str] = []

    def h(*args: str) -> str:
        return subprocess.run([hutch, *args], check=True, capture_output=True, text=True).stdout

    try:
        h("bootstrap", "busybox", "bb", "-q")
        h("clone", "bb", "base")  # for V4's thin clones, while bb is not running
        h("read-only", "base")
        h("start", "bb")
        started.append("bb")
        h("clone", "--thin", "base", "lim")
        h("start", "lim", "--property=MemoryMax=256M")
        started.append("lim")
        leader = h("show", "bb", "-p", "Leader", "--value").strip()
        print(f"hutch: {hutch}")
        t = hyperfine(
            {
                "shell": f"{hutch} shell bb /bin/true",
                "shell (v1 limit)": f"{hutch} shell lim /bin/true",
                "nsenter": f"nsenter -t {leader} -a /bin/true",
                "list": f"{hutch} list",
                "status": f"{hutch} status bb",
                "show": f"{hutch} show bb",
                "python3 -I -S": f"{PYTHON} -I -S -c pass",
            },
            a.runs,
        )
        for name in t:
            print(line(t, name))
        goals = (("shell", "nsenter", 5.0), ("list", "python3 -I -S", 2.0), ("status", "python3 -I -S", 2.0))
        ok = True
        for x, base, goal in goals:
            r = ratio(t, x, base)
            ok &= r <= goal
            print(f"  {x}/{base}: {r:.2f}x   goal <= {goal}x   {'MET' if r <= goal else 'NOT MET'}")
        print(f"  a v1 cgroup write on entering: {ratio(t, 'shell (v1 limit)', 'shell'):.2f}x shell's time")
        for i in range(2, a.machines):
            h("clone", "--thin", "base", f"m{i}")
            h("start", f"m{i}")
            started.append(f"m{i}")
        t = hyperfine({f"list ({a.machines})": f"{hutch} list"}, max(10, a.runs // 5))
        print(line(t, f"list ({a.machines})"))
        return 0 if ok else 1
    finally:
        for name in started:
            subprocess.run([hutch, "terminate", name], capture_output=True)
        for name in started:
            subprocess.run([hutch, "poweroff", "--wait", name], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
