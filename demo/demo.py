"""The demo: bootstrap a busybox image, run a command in it, boot it, use it, power it off; start it as
a machine, list it, shell into it, power it off; then the image store: export it as zstd, import it
back, list, thin-clone, run the clone.

Run by `./setup.sh demo`. Uses the real image store ($HUTCH_IMAGE_PATH, default /var/lib/machines) and
removes its images (hutch-demo*) at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from ptydrive import PtySession  # noqa: E402

# ./setup.sh demo runs the installed hutch; a development checkout its own launcher.
HUTCH = os.environ.get("HUTCH_BIN") or str(REPO / ".venv/bin/hutch")
NAME = "hutch-demo"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def sh(*argv: str) -> int:
    print("$ hutch " + " ".join(argv), flush=True)
    return subprocess.run([HUTCH, *argv]).returncode


def main() -> int:
    image_dir = (os.environ.get("HUTCH_IMAGE_PATH") or "/var/lib/machines").split(":")[0]
    image = Path(image_dir) / NAME
    if image.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(image)], check=True)
    try:
        step("1. Bootstrap a busybox image from the host's static busybox")
        if sh("bootstrap", "busybox", NAME) != 0:
            return 1

        step("2. Run a command in it: own user (private UID range), PID, mount, UTS, IPC, cgroup namespaces")
        sh(
            "spawn",
            "-q",
            "-M",
            NAME,
            "--console=pipe",
            "/bin/sh",
            "-c",
            'echo "I am PID $$ on $(hostname)"; . /etc/os-release; echo "OS: $PRETTY_NAME"; '
            'echo "uid_map (inside, host, count): $(cat /proc/self/uid_map)"; ls /dev',
        )

        step("3. Boot it: busybox init as PID 1, a getty on the console; log in and look around")
        print(f"$ hutch spawn -b -M {NAME}", flush=True)
        s = PtySession([HUTCH, "spawn", "-b", "-M", NAME], rows=30, cols=100)
        try:
            s.expect("login: ", timeout=30)
            s.send("root\r")
            s.expect("$ ", timeout=10)
            s.send("uname -sr; ps; mount | grep -E ' / | /proc | /sys '\r")
            s.expect("$ ", timeout=10)
            s.send("poweroff\r")
            rc = s.wait(timeout=30)
        finally:
            s.close()
        # busybox ash asks the terminal for the cursor position (ESC [6n); not worth showing.
        print(s.text().replace("\x1b[6n", "").rstrip())
        print(f"[hutch exited with status {rc}]")
        if rc != 0:
            return 1

        step("4. Ephemeral: changes land in a throw-away overlay; the image is untouched")
        sh("spawn", "-q", "-x", "-M", NAME, "-P", "/bin/sh", "-c", "rm -rf /etc /bin/ls; echo removed /etc")
        print(f"$ ls {image}/etc | head -3")
        subprocess.run(f"ls {image}/etc | head -3", shell=True)

        step("5. As a machine: start it in the background, list it, shell into it, power it off")
        if sh("start", NAME) != 0:
            return 1
        sh("list")
        rc = sh(
            "shell", NAME, "/bin/sh", "-c", 'echo "hello from $(hostname), PID $$ in the machine"; exit 3'
        )
        print(f"[hutch shell exited with {rc}: the command's own status]")
        # Its veth has addresses at both ends (IPv4 and IPv6) and a default route, with no networkd.
        net = "ip -o addr show host0 | awk '{print $4}'; "
        net += "ping -c1 -W2 $(ip route | awk '/default/{print $3}') | tail -2; "
        # Its nameserver is hutch's forwarder on the host side, which knows the host's machines.
        net += f"nslookup {NAME}.machine | tail -n +3"
        sh("shell", NAME, "/bin/sh", "-c", net)
        sh("analyze", NAME)
        sh("status", NAME, "-n", "0")
        if sh("poweroff", "--wait", NAME) != 0:
            return 1
        sh("list")

        step("6. The image store: export as zstd, import back (format read from the content), thin clone")
        with tempfile.TemporaryDirectory() as t:
            archive = f"{t}/{NAME}.tar.zst"
            if sh("export-tar", NAME, archive) != 0 or sh("import-tar", archive, f"{NAME}-copy") != 0:
                return 1
        sh("read-only", f"{NAME}-copy")
        if sh("clone", "--thin", f"{NAME}-copy", f"{NAME}-thin") != 0:
            return 1
        sh("list-images")
        sh(
            "spawn",
            "-q",
            "-M",
            f"{NAME}-thin",
            "-P",
            "/bin/sh",
            "-c",
            "echo hello > /etc/motd; echo wrote /etc/motd in the thin clone",
        )
        sh("image-status", f"{NAME}-thin")
        sh("remove", f"{NAME}-thin")
        sh("remove", f"{NAME}-copy")
        print("\nDone: the demo images are removed again.")
        return 0
    finally:
        subprocess.run([HUTCH, "terminate", "--wait", NAME], capture_output=True)
        for name in (f"{NAME}-thin", f"{NAME}-copy"):
            subprocess.run([HUTCH, "remove", "-q", name], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(image)])
        for p in image.parent.glob(f".#{NAME}*"):
            subprocess.run(["rm", "-rf", "--one-file-system", str(p)])


if __name__ == "__main__":
    sys.exit(main())
