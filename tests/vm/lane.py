"""The systemd-host lane (issue 18): a Debian trixie virtual machine with systemd as PID 1 and the pure
cgroup v2 hierarchy most users have, booted by QEMU with the checkout shared in over virtio-9p.

- The image is built once by debootstrap (systemd, dbus, udev, python3, systemd-container and the
  distribution's kernel and initrd) and cached outside the checkout, keyed by this file's hash.
- Each boot runs one shell script from the shared directory (a oneshot unit after multi-user.target),
  writes its output and exit status there, and powers off: one boot holds a whole batch of checks.
- /dev/kvm exists on this machine but its KVM fails ("KVM internal error", and -cpu host's MSR
  setup asserts), so QEMU emulates (TCG): about 75 s a boot here. KVM is used where it works.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

CACHE = Path("/var/cache/hutch-test")
SUITE = "trixie"
PACKAGES = "systemd,systemd-sysv,dbus,udev,linux-image-amd64,python3,iproute2,systemd-container,kmod"

RUN_UNIT = """[Unit]
Description=Run the host's script from the shared directory, then power off
After=multi-user.target
RequiresMountsFor=/mnt/host /mnt/checkout

[Service]
Type=oneshot
ExecStart=/bin/sh -c '/bin/sh /mnt/host/run.sh > /mnt/host/out.txt 2>&1; echo $? > /mnt/host/rc.txt'
ExecStartPost=/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
"""


def _key() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def image(mirror: str = "http://deb.debian.org/debian") -> Path:
    """The cached VM directory (rootfs.img, vmlinuz, initrd.img), built if this key has none."""
    d = CACHE / f"vm-{SUITE}-{_key()}"
    if (d / "rootfs.img").exists():
        return d
    for old in CACHE.glob(f"vm-{SUITE}-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = CACHE / f".vm-{SUITE}-{_key()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    root = tmp / "root"
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root), mirror],
            check=True,
            capture_output=True,
        )
        (root / "etc/hostname").write_text("hutch-vm\n")
        (root / "etc/systemd/system/vm-run.service").write_text(RUN_UNIT)
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "vm-run.service").symlink_to("/etc/systemd/system/vm-run.service")
        for mnt in ("mnt/host", "mnt/checkout"):
            (root / mnt).mkdir(parents=True, exist_ok=True)
        with open(root / "etc/fstab", "a") as f:
            f.write("host /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144 0 0\n")
            f.write("checkout /mnt/checkout 9p trans=virtio,version=9p2000.L,msize=262144,ro 0 0\n")
        boot = root / "boot"
        shutil.copy(next(boot.glob("vmlinuz-*")), tmp / "vmlinuz")
        shutil.copy(next(boot.glob("initrd.img-*")), tmp / "initrd.img")
        subprocess.run(
            ["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(tmp / "rootfs.img"), "3G"],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(root)
        tmp.rename(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing in the cache
        raise
    return d


def boot(vm: Path, share: Path, checkout: Path, script: str, timeout: int = 900) -> tuple[int, str]:
    """Boot a copy-on-write overlay of the VM's disk with SHARE at /mnt/host and CHECKOUT read-only at
    /mnt/checkout, run SCRIPT there, and return its exit status and output. The cached disk is never
    written."""
    for f in ("out.txt", "rc.txt"):
        (share / f).unlink(missing_ok=True)
    (share / "run.sh").write_text(script)
    disk = share / ".disk.qcow2"
    disk.unlink(missing_ok=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(vm / "rootfs.img"), str(disk)],
        check=True,
    )
    try:
        r = subprocess.run(
            [
                "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2",
                "-m", "2048", "-nographic", "-no-reboot",
                "-kernel", str(vm / "vmlinuz"), "-initrd", str(vm / "initrd.img"),
                "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0",
                "-drive", f"file={disk},format=qcow2,if=virtio",
                "-virtfs", f"local,path={share},mount_tag=host,security_model=passthrough,id=host",
                "-virtfs", f"local,path={checkout},mount_tag=checkout,security_model=none,readonly=on,id=co",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        disk.unlink(missing_ok=True)
    rc_file = share / "rc.txt"
    if not rc_file.exists():
        raise AssertionError(f"the VM ran nothing (qemu status {r.returncode}):\n{r.stdout[-3000:]}")
    return int(rc_file.read_text().strip() or 1), (share / "out.txt").read_text()
