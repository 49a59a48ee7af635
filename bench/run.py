"""Side-by-side benchmarks: hutch against systemd-nspawn (and bwrap for P1), in one run, as ratios.

  P1  spawn -D busybox /bin/true                       goal: median <= 0.3x nspawn
  P2  boot Debian with systemd to multi-user.target    goal: median <= 1.0x nspawn
  P3  -x (ephemeral) start on the Debian tree, /bin/true  goal: median <= 0.03x nspawn

Usage: bench/run.py [p1|p2|p3|all] [--runs N] [--debian DIR]
Run as root, from the repository's virtual environment (./setup.sh install). Absolute times move with
the machine's load; the ratios, measured in one interleaved run, are what the goals are about.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUTCH = str(REPO / ".venv/bin/hutch")
NSPAWN = ["systemd-nspawn", "--keep-unit", "--register=no"]


def hyperfine(commands: dict[str, str], runs: int, warmup: int = 3) -> dict[str, list[float]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = [
            "hyperfine",
            "-N",
            "--style",
            "none",
            "--warmup",
            str(warmup),
            "--runs",
            str(runs),
            "--export-json",
            out.name,
        ]
        for name, cmd in commands.items():
            argv += ["-n", name, cmd]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        with open(out.name) as f:
            data = json.load(f)
    return {r["command"]: [t * 1000 for t in r["times"]] for r in data["results"]}


def report(
    title: str, times: dict[str, list[float]], base: str, goal: float, subject: str = "hutch"
) -> bool:
    print(f"\n{title}")
    print(f"  {'command':<12} {'min':>9} {'median':>9} {'max':>9}   (ms, {len(times[base])} runs)")
    for name, ts in times.items():
        print(f"  {name:<12} {min(ts):9.2f} {statistics.median(ts):9.2f} {max(ts):9.2f}")
    ratio = statistics.median(times[subject]) / statistics.median(times[base])
    ok = ratio <= goal
    print(f"  ratio {subject}/{base} (medians): {ratio:.3f}   goal <= {goal}   {'MET' if ok else 'NOT MET'}")
    return ok


def busybox_image(tmp: Path) -> Path:
    env = dict(os.environ, HUTCH_IMAGE_PATH=str(tmp))
    subprocess.run([HUTCH, "bootstrap", "busybox", "bb", "-q"], env=env, check=True)
    return tmp / "bb"


def p1(tmp: Path, runs: int) -> bool:
    bb = busybox_image(tmp)
    times = hyperfine(
        {
            "hutch": f"{HUTCH} spawn -q --register=no -D {bb} /bin/true",
            "nspawn": " ".join([*NSPAWN, "-q", "-D", str(bb), "/bin/true"]),
            # Like for like: both with a user namespace, both without (hutch's default has one).
            "hutch-noU": f"{HUTCH} spawn -q --register=no --private-users=no -D {bb} /bin/true",
            "nspawn-U": " ".join([*NSPAWN, "-q", "-U", "-D", str(bb), "/bin/true"]),
            "bwrap": f"bwrap --bind {bb} / --proc /proc --dev /dev --unshare-pid --unshare-ipc "
            "--unshare-uts --unshare-net /bin/true",
        },
        runs,
    )
    ok = report("P1: start a container that runs /bin/true (busybox image)", times, "nspawn", 0.3)
    for a, b in (("hutch", "nspawn-U"), ("hutch-noU", "nspawn")):
        r = statistics.median(times[a]) / statistics.median(times[b])
        print(f"  like for like: {a}/{b} = {r:.3f}")
    return ok


def _boot_once(argv: list[str], timeout: float = 60) -> float:
    """Seconds from exec to the console line 'Reached target ... Multi-User System', then power off."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    buf = b""
    reached = None
    try:
        while reached is None and time.monotonic() - t0 < timeout:
            r, _, _ = select.select([p.stdout], [], [], 1)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                if b"Multi-User System" in buf and b"Reached target" in buf:
                    reached = time.monotonic() - t0
        if reached is None:
            raise RuntimeError(f"{argv[0]}: no multi-user.target; console tail:\n{buf[-2000:].decode()}")
        pid1 = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        for pid in pid1:
            os.kill(int(pid), 34 + 4)  # SIGRTMIN+4: poweroff
        while p.poll() is None:
            if select.select([p.stdout], [], [], 1)[0]:
                os.read(p.stdout.fileno(), 65536)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return reached


def p2(tmp: Path, runs: int, debian: Path) -> bool:
    # Both boot a throw-away overlay of one tree, so the image stays pristine and the runs are alike.
    upper = tmp / "ov"
    times: dict[str, list[float]] = {"hutch": [], "nspawn": []}
    for _ in range(runs):
        times["hutch"].append(
            1000
            * _boot_once(
                [HUTCH, "spawn", "-q", "-b", "--volatile=overlay", "--console=read-only", "-D", str(debian)]
            )
        )
        times["nspawn"].append(
            1000
            * _boot_once(
                [*NSPAWN, "-q", "-b", "--volatile=overlay", "--console=read-only", "-D", str(debian)]
            )
        )
    shutil.rmtree(upper, ignore_errors=True)
    return report("P2: boot Debian (systemd) to multi-user.target, --volatile=overlay", times, "nspawn", 1.0)


def p3(tmp: Path, runs: int, debian: Path) -> bool:
    times = hyperfine(
        {
            "hutch": f"{HUTCH} spawn -q -x -D {debian} /bin/true",
            "nspawn": " ".join([*NSPAWN, "-q", "-x", "-D", str(debian), "/bin/true"]),
        },
        runs,
        warmup=1,
    )
    return report("P3: ephemeral (-x) start on the Debian tree, /bin/true", times, "nspawn", 0.03)


def default_debian() -> Path | None:
    cache = Path(os.environ.get("HUTCH_TEST_CACHE", "/var/cache/hutch-test"))
    found = sorted(cache.glob("debian-*/deb"))
    return found[-1] if found else None


def main() -> int:
    global HUTCH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=["p1", "p2", "p3", "all"])
    ap.add_argument("--runs", type=int, default=0, help="runs per command (default: 100 P1, 10 P2, 5 P3)")
    ap.add_argument("--debian", type=Path, default=None, help="Debian tree (default: the test cache)")
    ap.add_argument(
        "--hutch",
        default=HUTCH,
        help="the hutch to run (default: the checkout's; /opt/hutch/bin/hutch: the wheel's)",
    )
    ns = ap.parse_args()
    HUTCH = ns.hutch
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    debian = ns.debian or default_debian()
    # A bundle left stale by an edit would measure the slow way of loading spawn's modules.
    subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "hutch.preload"], check=True, stdout=subprocess.DEVNULL
    )
    ok = True
    print(
        f"hutch vs systemd-nspawn, {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}, "
        f"{os.cpu_count()} CPUs, {HUTCH}"
    )
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as t:
        tmp = Path(t)
        if ns.which in ("p1", "all"):
            ok &= p1(tmp, ns.runs or 100)
        if ns.which in ("p2", "p3", "all") and debian is None:
            print("bench: no Debian tree; pass --debian or run the test suite once to build the cache")
            return 2
        if ns.which in ("p2", "all"):
            assert debian is not None
            ok &= p2(tmp, ns.runs or 10, debian)
        if ns.which in ("p3", "all"):
            assert debian is not None
            ok &= p3(tmp, ns.runs or 5, debian)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
