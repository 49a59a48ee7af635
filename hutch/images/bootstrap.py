"""Building new images: a busybox tree from the host's static busybox, and Debian with debootstrap.

Both build under a hidden name next to the target and rename() it into place, so an interrupted build
never leaves something that looks like an image.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys

from hutch.errors import ImageError, SetupError
from hutch.settings.values import valid_machine_name

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
DEBIAN_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# busybox init: a getty on the console; `poweroff` (SIGUSR2 to init) and `reboot` (SIGTERM) end in
# reboot(2), which the kernel turns into SIGINT/SIGHUP for the supervisor to see.
INITTAB = """\
::sysinit:/bin/hostname -F /etc/hostname
::respawn:/sbin/getty -L 38400 console vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
"""


def is_static_elf(path: str) -> bool:
    """True if PATH is an ELF executable without a program interpreter (PT_INTERP)."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return False
            endian = "<" if hdr[5] == 1 else ">"
            (phoff,) = struct.unpack_from(endian + "Q", hdr, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", hdr, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:
            return False
    return True


def find_static_busybox() -> str:
    for cand in BUSYBOX_CANDIDATES:
        if os.path.isfile(cand) and is_static_elf(cand):
            return cand
    raise SetupError(
        "No static busybox found on the host (looked in " + ", ".join(BUSYBOX_CANDIDATES) + ").",
        "install it: apt-get install busybox-static",
    )


def check_new_image(name: str, image_dir: str) -> str:
    if not valid_machine_name(name):
        raise ImageError(
            f"Invalid image name: {name!r}", "use letters, digits, '-', '_' and '.', at most 64 characters"
        )
    target = os.path.join(image_dir, name)
    if os.path.lexists(target):
        raise ImageError(
            f"Image '{name}' already exists at {target}.", "remove it first or pick another name"
        )
    os.makedirs(image_dir, mode=0o700, exist_ok=True)
    return target


def _temp_for(target: str, what: str) -> str:
    parent, base = os.path.split(target)
    return os.path.join(parent, f".#{base}.{what}-{os.urandom(4).hex()}")


def _write(root: str, rel: str, text: str, mode: int = 0o644) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def bootstrap_busybox(name: str, image_dir: str, busybox: str | None = None) -> str:
    target = check_new_image(name, image_dir)
    bb = busybox or find_static_busybox()
    tmp = _temp_for(target, "bootstrap")
    try:
        os.mkdir(tmp, 0o755)
        for d in (
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "etc",
            "root",
            "tmp",
            "proc",
            "sys",
            "dev",
            "run",
            "var/log",
            "home",
        ):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        os.chmod(os.path.join(tmp, "tmp"), 0o1777)
        os.chmod(os.path.join(tmp, "root"), 0o700)
        shutil.copy2(bb, os.path.join(tmp, "bin/busybox"))
        os.chmod(os.path.join(tmp, "bin/busybox"), 0o755)
        listing = subprocess.run([bb, "--list-full"], capture_output=True, text=True)
        applets = listing.stdout.split()
        if listing.returncode != 0 or "bin/sh" not in applets:
            raise ImageError(
                f"{bb} is not a busybox binary: '{bb} --list-full' lists no applets.",
                "install busybox-static, or pass --busybox=PATH to one",
            )
        for rel in applets:
            link = os.path.join(tmp, rel)
            if rel == "bin/busybox" or os.path.lexists(link):
                continue
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink("/bin/busybox", link)
        version = subprocess.run([bb], capture_output=True, text=True).stdout.split("\n", 1)[0]
        ver = version.split()[1].lstrip("v") if version.startswith("BusyBox v") else "unknown"
        os_release = (
            f'NAME="BusyBox"\nID=busybox\nVERSION_ID={ver}\nPRETTY_NAME="BusyBox {ver} (hutch)"\n'
            'HOME_URL="https://busybox.net/"\n'
        )
        _write(tmp, "usr/lib/os-release", os_release)
        os.symlink("../usr/lib/os-release", os.path.join(tmp, "etc/os-release"))
        _write(tmp, "etc/passwd", "root::0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        _write(tmp, "etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
        _write(tmp, "etc/shadow", "root::19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o600)
        _write(tmp, "etc/hostname", name + "\n")
        _write(tmp, "etc/machine-id", "")
        _write(tmp, "etc/inittab", INITTAB)
        _write(tmp, "etc/profile", 'export PS1="$USER@\\h:\\w\\$ "\n')
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# Debian's architecture names -> qemu-user's, for those this host does not run natively.
QEMU_ARCH = {
    "arm64": "aarch64", "armhf": "arm", "armel": "arm", "ppc64el": "ppc64le", "s390x": "s390x",
    "riscv64": "riscv64", "mips64el": "mips64el", "loong64": "loongarch64", "amd64": "x86_64",
    "i386": "i386",
}  # fmt: skip


def host_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el"}.get(machine, machine)


def check_arch(arch: str) -> None:
    """A foreign ARCH needs a binfmt_misc handler (debootstrap's second stage runs its programs, and
    so does every start of the image)."""
    if arch not in QEMU_ARCH:
        raise SetupError(f"Unknown architecture '{arch}'.", "one of " + ", ".join(sorted(QEMU_ARCH)))
    native = {host_arch()} | ({"i386"} if host_arch() == "amd64" else set())
    if arch in native:
        return
    handler = f"/proc/sys/fs/binfmt_misc/qemu-{QEMU_ARCH[arch]}"
    try:
        with open(handler) as f:
            enabled = f.readline().strip() == "enabled"
    except OSError:
        enabled = False
    if not enabled:
        raise SetupError(
            f"No binfmt_misc handler for {arch} programs ({handler}).",
            "apt-get install qemu-user-static binfmt-support",
        )


def bootstrap_debian(
    name: str,
    image_dir: str,
    suite: str = "bookworm",
    mirror: str = DEFAULT_MIRROR,
    quiet: bool = False,
    arch: str | None = None,
) -> str:
    target = check_new_image(name, image_dir)
    if shutil.which("debootstrap") is None:
        raise SetupError("debootstrap is not installed.", "install it: apt-get install debootstrap")
    if arch:
        check_arch(arch)
    tmp = _temp_for(target, "bootstrap")
    try:
        cmd = [
            "debootstrap",
            *([f"--arch={arch}"] if arch else []),
            "--variant=minbase",
            "--include=" + ",".join(DEBIAN_PACKAGES),
            suite,
            tmp,
            mirror,
        ]
        r = subprocess.run(
            cmd, stdout=subprocess.DEVNULL if quiet else sys.stderr, stderr=subprocess.PIPE, text=True
        )
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise SetupError(
                f"debootstrap of {suite} from {mirror} failed: {last}",
                "check the mirror URL and the network",
            )
        finalize_debian(tmp, name)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def finalize_debian(root: str, name: str) -> None:
    """First-boot state: an empty machine-id, a hostname, a root login without password on the console."""
    _write(root, "etc/machine-id", "")
    _write(root, "etc/hostname", name + "\n")
    shadow = os.path.join(root, "etc/shadow")
    with open(shadow) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        f2 = line.split(":")
        if f2[0] == "root" and len(f2) > 1:
            f2[1] = ""
        out.append(":".join(f2))
    _write(root, "etc/shadow", "\n".join(out) + "\n", 0o640)
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        p = os.path.join(root, d)
        for entry in os.listdir(p) if os.path.isdir(p) else []:
            full = os.path.join(p, entry)
            if os.path.isfile(full) and not entry.startswith("lock"):
                os.unlink(full)
