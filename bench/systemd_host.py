"""hutch beside systemd-nspawn 257 and machinectl on a systemd host: the systemd-host lane's VM
(tests/vm/lane.py: Debian trixie, systemd as PID 1, pure cgroup v2), the same bookworm guest with
systemd in its /var/lib/machines/deb, runs interleaved:

  S1  start to ready: `hutch start deb` against `machinectl start deb` plus
      `systemctl -M deb is-system-running --wait` (machinectl returns once the unit is started)
  S2  `hutch shell deb /bin/true` against `machinectl shell deb /bin/true`
  S3  `hutch poweroff --wait deb` against `machinectl poweroff deb` until machined forgets it
  S4  `hutch spawn -M bb /bin/true` against `systemd-nspawn -q -D /var/lib/machines/bb /bin/true`

This host's KVM fails, so QEMU emulates the CPU (TCG): everything is slower than on hardware, and an
interpreter's work more than C's (python3 -I -S -c pass is printed for scale).

Usage: bench/systemd_host.py [--runs N] [--kernel 6.12|6.1]   (as root, from the repository)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests/vm"))

SCRIPT = r"""
export TMPDIR=/var/tmp SYSTEMD_PAGER=
ms() { echo $(($(date +%s%N) / 1000000)); }
hutch bootstrap busybox bb >/dev/null 2>&1
hutch spawn -q -M bb /bin/true; systemd-nspawn -q -D /var/lib/machines/bb /bin/true  # warm caches
for i in $(seq 3); do t=$(ms); python3 -I -S -c pass; echo "python $(($(ms) - t))"; done
for i in $(seq RUNS); do
    t=$(ms); hutch start deb >/dev/null 2>&1; echo "S1 hutch $(($(ms) - t))"
    t=$(ms); hutch shell deb /bin/true; echo "S2 hutch $(($(ms) - t))"
    t=$(ms); hutch poweroff --wait deb >/dev/null 2>&1; echo "S3 hutch $(($(ms) - t))"
    t=$(ms); timeout 120 machinectl start deb
    timeout 120 systemctl -M deb is-system-running --wait >/dev/null 2>&1
    echo "S1 nspawn $(($(ms) - t))"
    systemctl status systemd-nspawn@deb.service --no-pager 2>&1 | head -5
    t=$(ms); timeout 60 machinectl shell deb /bin/true >/dev/null 2>&1; echo "S2 nspawn $(($(ms) - t))"
    t=$(ms); machinectl poweroff deb
    for j in $(seq 1200); do machinectl show deb >/dev/null 2>&1 || break; sleep 0.05; done
    echo "S3 nspawn $(($(ms) - t))"
    t=$(ms); hutch spawn -q -M bb /bin/true; echo "S4 hutch $(($(ms) - t))"
    t=$(ms); systemd-nspawn -q -D /var/lib/machines/bb /bin/true; echo "S4 nspawn $(($(ms) - t))"
done
"""

NAMES = {
    "S1": "start to ready (`start deb`)",
    "S2": "`shell deb /bin/true`",
    "S3": "`poweroff deb`, until gone",
    "S4": "`spawn -M bb /bin/true`",
}


def main() -> int:
    from conftest import debian_image
    from lane import boot, image, kernel

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kernel", default="6.12")
    args = ap.parse_args()
    vm = image(debian_image())
    with tempfile.TemporaryDirectory() as share:
        rc, out = boot(
            vm, Path(share), REPO, SCRIPT.replace("RUNS", str(args.runs)), kernel(vm, args.kernel)
        )
    times: dict[tuple[str, str], list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            times.setdefault((parts[0], parts[1]), []).append(int(parts[2]))
        elif len(parts) == 2 and parts[0] == "python" and parts[1].isdigit():
            times.setdefault(("python", ""), []).append(int(parts[1]))
    if rc != 0 or not times:
        print(out)
        return 1
    print(f"python3 -I -S -c pass: {statistics.median(times[('python', '')]):.0f} ms (for scale)")
    print("| benchmark | hutch median | nspawn/machinectl median | ratio |")
    print("|---|---:|---:|---:|")
    for key, name in NAMES.items():
        h, n = times.get((key, "hutch")), times.get((key, "nspawn"))
        if h and n:
            mh, mn = statistics.median(h), statistics.median(n)
            print(f"| {key} {name} ({len(h)} runs) | {mh:.0f} ms | {mn:.0f} ms | **{mh / mn:.2f}** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
