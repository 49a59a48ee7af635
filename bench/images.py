"""Side-by-side image-store benchmarks, runs interleaved, medians compared:

  I1  import-tar of the Debian tree as .tar.gz   vs GNU tar -x   goal: throughput >= 1.0x tar
  I2  import-tar of the Debian tree as .tar.zst  vs GNU tar -x   goal: throughput >= 1.0x tar
  C1  clone of the Debian image                  vs cp -a        goal: time <= 1.0x cp -a
  T1  clone --thin of a busybox and of the Debian image          goal: < 50 ms, whatever the size

GNU tar is run as importd runs it (numeric owners, permissions, xattrs), decompressing through its
usual helper process; both read the same archive, made once by GNU tar from the tree.

Usage: bench/images.py [--runs N] [--debian DIR]   (as root, from the repository's environment)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUTCH = str(REPO / ".venv/bin/hutch")


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def compare(
    runs: int, cases: dict[str, tuple[Callable[[], None], list[str]]], env: dict[str, str]
) -> dict[str, list[float]]:
    """Each case: (prepare, argv). Runs alternate between the cases; prepare is not timed."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, (prepare, argv) in cases.items():
            prepare()
            subprocess.run(["sync"], check=True)
            times[name].append(_timed(argv, env))
    return times


def report(title: str, times: dict[str, list[float]], subject: str, base: str, goal: str) -> float:
    print(f"\n{title}")
    print(f"  {'command':<10} {'min':>9} {'median':>9} {'max':>9}   (ms, {len(times[base])} runs)")
    for name, ts in times.items():
        print(f"  {name:<10} {min(ts):9.1f} {statistics.median(ts):9.1f} {max(ts):9.1f}")
    ratio = statistics.median(times[subject]) / statistics.median(times[base])
    print(f"  time ratio {subject}/{base} (medians): {ratio:.3f}   goal: {goal}")
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--debian", type=Path, default=None)
    ap.add_argument("--dir", default="/var/tmp", help="where the store lives (a tmpfs takes the disk out)")
    ns = ap.parse_args()
    cache = Path(os.environ.get("HUTCH_TEST_CACHE", "/var/cache/hutch-test"))
    debian = ns.debian or next(iter(sorted(cache.glob("debian-*/deb"))), None)
    if debian is None:
        print("bench: no Debian tree; pass --debian or run the test suite once", file=sys.stderr)
        return 2
    print(
        f"hutch image store vs GNU tar / cp, {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}, "
        f"store in {ns.dir}"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="hutch-bench-", dir=ns.dir) as t:
        tmp = Path(t)
        store = tmp / "store"
        env = dict(os.environ, HUTCH_IMAGE_PATH=str(store), HUTCH_STATE_DIR=str(tmp / "state"))
        out = tmp / "tar-out"

        def fresh_tar() -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()

        def no_image(name: str) -> Callable[[], None]:
            return lambda: subprocess.run([HUTCH, "remove", "-q", name], env=env, capture_output=True)

        tar_x = ["tar", "--numeric-owner", "-p", "--xattrs", "--xattrs-include=*", "-C", str(out)]
        for suffix, flag, title in ((".tar.gz", "-z", "I1"), (".tar.zst", "--zstd", "I2")):
            archive = tmp / f"deb{suffix}"
            subprocess.run(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    flag,
                    "-C",
                    str(debian),
                    "-cf",
                    str(archive),
                    ".",
                ],
                check=True,
            )
            size = archive.stat().st_size
            times = compare(
                ns.runs,
                {
                    "hutch": (no_image("deb"), [HUTCH, "import-tar", "-q", str(archive), "deb"]),
                    "gnu-tar": (fresh_tar, [*tar_x, flag, "-xf", str(archive)]),
                },
                env,
            )
            ratio = report(
                f"{title}: import {archive.name} ({size / 1e6:.0f} MB)",
                times,
                "hutch",
                "gnu-tar",
                "<= 1.0 (throughput >= 1.0x GNU tar)",
            )
            print(f"  throughput hutch/gnu-tar: {1 / ratio:.2f}x")
            ok &= ratio <= 1.0

        subprocess.run([HUTCH, "import-fs", "-q", str(debian), "src"], env=env, check=True)
        cp_out = tmp / "cp-out"
        times = compare(
            ns.runs,
            {
                "hutch": (no_image("dst"), [HUTCH, "clone", "-q", "src", "dst"]),
                "cp-a": (
                    lambda: shutil.rmtree(cp_out, ignore_errors=True),
                    ["cp", "-a", str(store / "src"), str(cp_out)],
                ),
            },
            env,
        )
        ok &= report("C1: clone the Debian image", times, "hutch", "cp-a", "<= 1.0") <= 1.0

        subprocess.run([HUTCH, "bootstrap", "busybox", "bb", "-q"], env=env, check=True)
        thin: dict[str, list[float]] = {"busybox": [], "debian": []}
        for src in ("bb", "src"):
            subprocess.run([HUTCH, "read-only", "-q", src], env=env, check=True)
        for i in range(ns.runs * 4):
            for label, src in (("busybox", "bb"), ("debian", "src")):
                thin[label].append(_timed([HUTCH, "clone", "-q", "--thin", src, f"thin-{label}-{i}"], env))
        print("\nT1: clone --thin (ms)")
        for label, ts in thin.items():
            print(
                f"  {label:<10} min {min(ts):7.1f}  median {statistics.median(ts):7.1f}  max {max(ts):7.1f}"
            )
            ok &= statistics.median(ts) < 50
        for label in thin:
            for i in range(ns.runs * 4):
                subprocess.run([HUTCH, "remove", "-q", f"thin-{label}-{i}"], env=env, check=True)
        for src in ("bb", "src"):
            subprocess.run([HUTCH, "read-only", "-q", src, "no"], env=env, check=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
