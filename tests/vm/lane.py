"""The systemd-host lane (issue 18): a Debian trixie virtual machine with systemd as PID 1 and the pure
cgroup v2 hierarchy most users have, booted by QEMU with the checkout shared in over virtio-9p.

- The image is built once by debootstrap (systemd, dbus, udev, python3, systemd-container, pytest,
  busybox-static, trixie's 6.12 kernel and bookworm's 6.1 one) and cached outside the checkout,
  keyed by this file's hash and the guest tree's cache key. A bookworm guest with systemd (the
  suite's own Debian image) is in its /var/lib/machines/deb, and /usr/local/bin/hutch runs the
  shared checkout.
- Each boot runs one shell script from the shared directory (a oneshot unit after multi-user.target),
  writes its output and exit status there, and powers off: one boot holds a whole batch of checks.
- /dev/kvm exists on this machine but its KVM fails ("KVM internal error", and -cpu host's MSR
  setup asserts), so QEMU emulates (TCG): about 75 s a boot here. KVM is used where it works.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/hutch-test")
SUITE = "trixie"
PACKAGES = (
    "systemd,systemd-sysv,dbus,udev,libpam-systemd,linux-image-amd64,python3,iproute2,systemd-container,"
    "kmod,busybox-static,python3-pytest,python3-cffi-backend,python3-zstandard,python3-rich,procps,nftables"
)
# Debian 12's kernel too: the oldest kernel hutch supports, booted with the same userland.
OLD_KERNEL_SUITE = "bookworm"
# The checkout is read-only in the VM: bytecode goes to a cache of the VM's own, or every run would
# compile hutch from source (5.8 s for a spawn under TCG, measured).
LAUNCHER = """#!/usr/bin/python3 -IS
import sys
sys.pycache_prefix = "/var/cache/hutch-pyc"
sys.path.insert(0, "/mnt/checkout")
sys.path.append("/usr/lib/python3/dist-packages")
from hutch.cli import main
sys.exit(main())
"""

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


def _key(guest: Path) -> str:
    """What the image is built from: the builder's code and inputs, and the guest tree's cache path."""
    import inspect

    inputs = [inspect.getsource(image), inspect.getsource(_chroot), PACKAGES, OLD_KERNEL_SUITE, LAUNCHER]
    inputs += [RUN_UNIT, str(guest)]
    return hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]


def _chroot(root: Path, script: str) -> None:
    """SCRIPT in ROOT with /proc and /dev (a kernel's maintainer scripts want them), in a mount
    namespace of its own that takes those mounts away with it."""
    r = str(root)
    wrapper = f"mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && exec chroot {r} /bin/sh -ec"
    wrapper += ' "$0"'
    r2 = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, script],
        capture_output=True,
        text=True,
    )
    if r2.returncode != 0:
        raise AssertionError(f"in the VM's tree: {script}\n{r2.stdout[-2000:]}{r2.stderr[-2000:]}")


def image(guest: Path, mirror: str = "http://deb.debian.org/debian") -> Path:
    """The cached VM directory (rootfs.img, and vmlinuz-V, initrd.img-V for each kernel), built if this
    key has none. GUEST: a Debian tree with systemd, copied to the VM's /var/lib/machines/deb."""
    d = CACHE / f"vm-{SUITE}-{_key(guest)}"
    img = d / "rootfs.img"
    # A disk cut short (a full disk, an interrupted copy) is built again rather than booted.
    if img.exists() and img.stat().st_size >= 1 << 30 and list(d.glob("vmlinuz-*")):
        return d
    for old in CACHE.glob(f"vm-{SUITE}-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = CACHE / f".vm-{SUITE}-{_key(guest)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    root = tmp / "root"
    try:
        r = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root), mirror],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            log = root / "debootstrap/debootstrap.log"
            tail = log.read_text()[-3000:] if log.exists() else r.stderr[-3000:]
            raise AssertionError(f"debootstrap of the VM failed:\n{tail}")
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        (root / "etc/apt/sources.list.d/old.list").write_text(f"deb {mirror} {OLD_KERNEL_SUITE} main\n")
        _chroot(
            root,
            "apt-get -q update; v=$(apt-cache search --names-only '^linux-image-6[.]1[.]0-[0-9]+-amd64$'"
            " | cut -d' ' -f1 | sort -V | tail -1); test -n \"$v\";"
            " DEBIAN_FRONTEND=noninteractive apt-get -qy install --no-install-recommends $v; apt-get clean",
        )  # fmt: skip
        (root / "etc/apt/sources.list.d/old.list").unlink()
        (root / "etc/hostname").write_text("hutch-vm\n")
        (root / "usr/local/bin/hutch").write_text(LAUNCHER)
        (root / "usr/local/bin/hutch").chmod(0o755)
        subprocess.run(["cp", "-a", str(guest), str(root / "var/lib/machines/deb")], check=True)
        (root / "etc/systemd/system/vm-run.service").write_text(RUN_UNIT)
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "vm-run.service").symlink_to("/etc/systemd/system/vm-run.service")
        for mnt in ("mnt/host", "mnt/checkout"):
            (root / mnt).mkdir(parents=True, exist_ok=True)
        with open(root / "etc/fstab", "a") as f:
            f.write("host /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144 0 0\n")
            f.write("checkout /mnt/checkout 9p trans=virtio,version=9p2000.L,msize=262144,ro 0 0\n")
        for f in (root / "boot").glob("*"):
            if f.name.startswith(("vmlinuz-", "initrd.img-")):
                shutil.copy(f, tmp / f.name)
        subprocess.run(
            ["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(tmp / "rootfs.img"), "6G"],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(root)
        tmp.rename(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing in the cache
        raise
    return d


def kernel(vm: Path, version: str) -> str:
    """The full release of the VM's kernel whose release starts with VERSION (6.1, 6.12)."""
    for f in sorted(vm.glob(f"vmlinuz-{version}.*")):
        return f.name.removeprefix("vmlinuz-")
    raise AssertionError(f"no {version} kernel in {vm}")


def _oops(console: str) -> str:
    """The console from the kernel's first report of a fault on (or its last lines)."""
    marks = ("BUG:", "Oops:", "general protection", "invalid opcode", "Kernel panic")
    at = min((i for i in (console.find(m) for m in marks) if i >= 0), default=len(console))
    start = console.rfind("\n", 0, at) + 1
    return console[start : start + 4000] if at < len(console) else console[-3000:]


def boot(
    vm: Path, share: Path, checkout: Path, script: str, release: str, timeout: int = 1200, keep: bool = False
) -> tuple[int, str]:
    """Boot kernel RELEASE on a copy-on-write overlay of the VM's disk with SHARE at /mnt/host and
    CHECKOUT read-only at /mnt/checkout, run SCRIPT there, and return its exit status and output. The
    cached disk is never written; KEEP: the overlay stays for the next boot (a reboot), else it goes.

    A guest kernel that panics is booted once more from the same disk: the emulator, not hutch, has
    crashed guest kernels here (a CI run: get_page_from_freelist faulting one byte into a 5-byte NOP,
    a site the kernel rewrites live when a static key flips, as creating the first cpuset cgroup does;
    multi-threaded TCG is the likely culprit)."""
    disk = share / ".disk.qcow2"
    before = share / ".disk-before.qcow2"
    if disk.exists():  # a reboot: what the boot starts from, kept for a second try
        subprocess.run(["cp", "--sparse=always", str(disk), str(before)], check=True)
    try:
        for attempt in (1, 2):
            try:
                return _boot_once(vm, share, checkout, script, release, timeout)
            except GuestPanic as e:
                if attempt == 2:
                    raise AssertionError(f"the guest kernel panicked twice; the second time:\n{e}") from None
                print(f"the VM's kernel panicked; booting it again:\n{e}", file=sys.stderr)
                disk.unlink(missing_ok=True)
                if before.exists():
                    subprocess.run(["cp", "--sparse=always", str(before), str(disk)], check=True)
        raise AssertionError("unreachable")
    finally:
        before.unlink(missing_ok=True)
        if not keep:
            disk.unlink(missing_ok=True)


class GuestPanic(Exception):
    pass


def _boot_once(
    vm: Path, share: Path, checkout: Path, script: str, release: str, timeout: int
) -> tuple[int, str]:
    for f in ("out.txt", "rc.txt"):
        (share / f).unlink(missing_ok=True)
    (share / "run.sh").write_text(script)
    disk = share / ".disk.qcow2"
    if not disk.exists():
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(vm / "rootfs.img"),
                str(disk),
            ],
            check=True,
        )
    try:
        # panic=-1: a panicked guest reboots at once, and -no-reboot ends QEMU then.
        r = subprocess.run(
            [
                "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2",
                "-m", "2048", "-nographic", "-no-reboot",
                "-kernel", str(vm / f"vmlinuz-{release}"), "-initrd", str(vm / f"initrd.img-{release}"),
                "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 panic=-1",
                "-drive", f"file={disk},format=qcow2,if=virtio",
                "-virtfs", f"local,path={share},mount_tag=host,security_model=passthrough,id=host",
                "-virtfs", f"local,path={checkout},mount_tag=checkout,security_model=none,readonly=on,id=co",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:  # what the checks wrote so far, and the console's last lines
        done = (share / "out.txt").read_text() if (share / "out.txt").exists() else ""
        console = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        raise AssertionError(
            f"the VM timed out after {timeout} s:\n{done}\nconsole:\n{_oops(console)}"
        ) from None
    rc_file = share / "rc.txt"
    if not rc_file.exists():
        done = (share / "out.txt").read_text() if (share / "out.txt").exists() else ""
        if "Kernel panic" in r.stdout:
            raise GuestPanic(f"{done}\nconsole:\n{_oops(r.stdout)}")
        raise AssertionError(f"the VM ran nothing (qemu status {r.returncode}):\n{done}\n{r.stdout[-3000:]}")
    return int(rc_file.read_text().strip() or 1), (share / "out.txt").read_text()
