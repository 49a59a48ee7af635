"""Capabilities: names, the bounding set, capset(2) and ambient capabilities."""

from __future__ import annotations

import errno

from hutch.linux import libc

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
NUMBERS = {name: i for i, name in enumerate(NAMES)}

# systemd-nspawn's arg_caps_retain (shared/reference/security.md §1).
NSPAWN_DEFAULT = frozenset(NUMBERS[n] for n in (
    "AUDIT_CONTROL", "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID",
    "IPC_OWNER", "KILL", "LEASE", "LINUX_IMMUTABLE", "MKNOD", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_NICE",
    "SYS_PTRACE", "SYS_RESOURCE", "SYS_TTY_CONFIG",
))  # fmt: skip
ALL = frozenset(range(len(NAMES)))

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_NR_CAPSET = {"x86_64": 126, "aarch64": 91}
_NR_CAPGET = {"x86_64": 125, "aarch64": 90}


def parse(text: str) -> set[int]:
    """'CAP_NET_ADMIN,sys_time' or 'all' -> capability numbers. Raises ValueError naming the bad entry."""
    out: set[int] = set()
    for item in text.split(","):
        name = item.strip().upper()
        if not name:
            continue
        if name == "ALL":
            out |= ALL
            continue
        if name.startswith("CAP_"):
            name = name[4:]
        if name not in NUMBERS:
            raise ValueError(item.strip())
        out.add(NUMBERS[name])
    return out


def name(cap: int) -> str:
    return "CAP_" + NAMES[cap] if 0 <= cap < len(NAMES) else str(cap)


def retained(add: set[int], drop: set[int], private_network: bool) -> frozenset[int]:
    keep = set(NSPAWN_DEFAULT) | add
    if private_network:
        keep.add(NUMBERS["NET_ADMIN"])
    return frozenset(keep - drop)


def supported() -> int:
    """How many capabilities this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read()) + 1
    except (OSError, ValueError):
        pass
    n = 0  # PR_CAPBSET_READ fails past the last one
    while n < 64:
        try:
            libc.prctl(PR_CAPBSET_READ, n)
        except OSError:
            break
        n += 1
    return n


def _mask(caps: frozenset[int] | set[int]) -> tuple[int, int]:
    bits = 0
    for c in caps:
        bits |= 1 << c
    return bits & 0xFFFFFFFF, bits >> 32


def drop_bounding(keep: frozenset[int]) -> None:
    """Remove every capability not in KEEP from the bounding set (needs CAP_SETPCAP: do it before
    changing to a non-root user)."""
    # Up to the first the kernel does not know (EINVAL) rather than reading cap_last_cap: PID 1 runs
    # this, and /proc's file would cost it more than the one failed prctl.
    for cap in range(64):
        if cap in keep:
            continue
        try:
            libc.prctl(PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            return


def set_caps(permitted: frozenset[int], inheritable: frozenset[int] = frozenset()) -> None:
    """capset(2): PERMITTED becomes the permitted and effective sets."""
    from hutch.linux import posixos as os

    p_lo, p_hi = _mask(permitted)
    i_lo, i_hi = _mask(inheritable)
    header = _LINUX_CAPABILITY_VERSION_3.to_bytes(4, "little") + (0).to_bytes(4, "little")
    data = b"".join(v.to_bytes(4, "little") for v in (p_lo, p_lo, i_lo, p_hi, p_hi, i_hi))
    libc.check_syscall(
        _NR_CAPSET.get(os.uname().machine, 126), header, data, what="Failed to set capabilities"
    )


def raise_ambient(ambient: frozenset[int]) -> None:
    for cap in sorted(ambient):
        libc.prctl5(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def current(which: str = "CapBnd", pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(which + ":"):
                return int(line.split()[1], 16)
    raise LookupError(which)


def setfsid_keeping_caps(fsid: int) -> None:
    """setfsid(FSID) with every permitted capability still effective: changing the file-system UID
    from 0 drops CAP_DAC_OVERRIDE and its kin (a 0555 directory would refuse us). setfsid(0, 0) later
    gives them back by itself."""
    libc.setfsid(fsid, fsid)
    permitted = _permitted()
    set_caps(frozenset(c for c in range(64) if permitted >> c & 1))


def _permitted() -> int:
    """This thread's permitted set, by capget(2): /proc may be another PID namespace's by now (a
    process that joined a machine's mount namespace)."""
    from hutch.linux import posixos as os
    from hutch.linux.libc import c_char

    header = _LINUX_CAPABILITY_VERSION_3.to_bytes(4, "little") + (0).to_bytes(4, "little")
    data = (c_char * 24)()
    libc.check_syscall(
        _NR_CAPGET.get(os.uname().machine, 125), header, data, what="Failed to read capabilities"
    )
    raw = bytes(data)
    lo, hi = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[16:20], "little")
    return lo | hi << 32
