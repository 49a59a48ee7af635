"""Side-by-side benchmarks for disk images and OCI images, runs interleaved, medians compared:

  R1  spawn -i DISK /bin/true (GPT, ext4 root)    vs systemd-nspawn -D TREE /bin/true   goal: <= 1.0x
      (the same tree as a directory; systemd-nspawn 252 refuses -i without udev, so its directory
      start is the fastest thing upstream offers here; hutch's own -D start is shown beside it)
  R2  start + poweroff --wait of NAME.raw (systemd boots to READY=1)   vs the same as a directory image
  O1  import-fs of an OCI layout (the Debian tree as one gzip layer, two small layers with whiteouts)
      vs GNU tar -xzf of the same layer blobs in order             goal: throughput >= 1.0x GNU tar
      (tar --recursive-unlink, so a layer may replace a directory; tar applies no whiteouts and checks
      no digests, which hutch does)
  O2  the same with zstd layers                       vs GNU tar --zstd -xf               goal: >= 1.0x

Usage: bench/diskimages.py [--runs N] [--debian DIR]   (as root, from the repository's environment)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
HUTCH = str(REPO / ".venv/bin/hutch")
NSPAWN = ["systemd-nspawn", "--keep-unit", "--register=no", "-q"]


def main() -> int:
    from formats import ESP, ROOT_X86_64, gpt_disk, oci_layout, tree_mib, whiteout_layers, zstd_layout
    from images import compare, report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--debian", type=Path, default=None)
    ap.add_argument("--dir", default="/var/tmp")
    ns = ap.parse_args()
    cache = Path(os.environ.get("HUTCH_TEST_CACHE", "/var/cache/hutch-test"))
    debian = ns.debian or next(iter(sorted(cache.glob("debian-*/deb"))), None)
    if debian is None:
        print("bench: no Debian tree; pass --debian or run the test suite once", file=sys.stderr)
        return 2
    print(f"disk and OCI images, {time.strftime('%Y-%m-%d %H:%M')}, {os.uname().release}, in {ns.dir}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="hutch-bench-", dir=ns.dir) as t:
        tmp = Path(t)
        store = tmp / "store"
        store.mkdir()
        env = dict(
            os.environ,
            HUTCH_IMAGE_PATH=str(store),
            HUTCH_STATE_DIR=str(tmp / "state"),
            HUTCH_LOG_DIR=str(tmp / "log"),
        )
        disk = gpt_disk(
            store / "disk.raw",
            [(ESP, 8, False, "esp"), (ROOT_X86_64, tree_mib(debian) * 3 // 2 + 64, debian, "root")],
        )
        subprocess.run([HUTCH, "import-fs", "-q", str(debian), "dir"], env=env, check=True)
        none = lambda: None  # noqa: E731
        times = compare(
            ns.runs * 3,
            {
                "hutch -i": (none, [HUTCH, "spawn", "-q", "-i", str(disk), "/bin/true"]),
                "hutch -D": (none, [HUTCH, "spawn", "-q", "-D", str(store / "dir"), "/bin/true"]),
                "nspawn -D": (none, [*NSPAWN, "-D", str(store / "dir"), "/bin/true"]),
            },
            env,
        )
        ok &= report("R1: start a disk image, /bin/true", times, "hutch -i", "nspawn -D", "<= 1.0") <= 1.0

        def boot(name: str) -> list[str]:
            return ["sh", "-c", f"{HUTCH} start -q {name} && {HUTCH} poweroff -q --wait {name}"]

        times = compare(ns.runs, {"raw": (none, boot("disk")), "directory": (none, boot("dir"))}, env)
        report("R2: start (to READY=1) and poweroff --wait", times, "raw", "directory", "(shown)")
        subprocess.run([HUTCH, "remove", "-q", "disk", "dir"], env=env, check=True)

        one, two = whiteout_layers(tmp / "layers")
        layout = oci_layout(tmp / "layout", [debian, one, two])
        zstd = zstd_layout(layout, tmp / "layout-zstd")
        out = tmp / "tar-out"

        def fresh() -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()

        def no_image() -> None:
            subprocess.run([HUTCH, "remove", "-q", "oci"], env=env, capture_output=True)

        for title, lay, flag in (("O1: gzip layers", layout, "-z"), ("O2: zstd layers", zstd, "--zstd")):
            index = json.loads((lay / "index.json").read_text())
            mpath = lay / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
            blobs = [
                lay / "blobs/sha256" / d["digest"].split(":")[1]
                for d in json.loads(mpath.read_text())["layers"]
            ]
            tar_x = " && ".join(
                f"tar --numeric-owner -p --xattrs --xattrs-include='*' --recursive-unlink {flag} "
                f"-C {out} -xf {b}"
                for b in blobs
            )
            size = sum(b.stat().st_size for b in blobs)
            times = compare(
                ns.runs,
                {
                    "hutch": (no_image, [HUTCH, "import-fs", "-q", str(lay), "oci"]),
                    "gnu-tar": (fresh, ["sh", "-c", tar_x]),
                },
                env,
            )
            ratio = report(
                f"{title} ({len(blobs)} layers, {size / 1e6:.0f} MB)",
                times,
                "hutch",
                "gnu-tar",
                "<= 1.0 (throughput >= 1.0x GNU tar)",
            )
            print(f"  throughput hutch/gnu-tar: {1 / ratio:.2f}x")
            ok &= ratio <= 1.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
