"""Seccomp BPF: compile an allow-list into a classic BPF program, cache it, load it.

No libseccomp: the program is small and regular. It checks the architecture, refuses the x32 ABI, makes
socket(AF_NETLINK, *, NETLINK_AUDIT) fail with EAFNOSUPPORT (audit userspace reads that as "no audit"),
then sorts the system call number through a binary decision tree over ranges of equal verdicts:
allowed, known but not allowed (EPERM), unknown to us (ENOSYS, so new calls look unimplemented and
programs fall back, as systemd does). Compiling costs ~1 ms of Python; the bytes are cached by policy.
"""

from __future__ import annotations

from hutch.linux import libc
from hutch.linux import posixos as os
from hutch.linux.fsutil import write_atomic

# struct seccomp_data: nr @0, arch @4, instruction_pointer @8, args @16 (8 bytes each, little endian)
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG2 = 0, 4, 16, 32
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JA = 0x05
_RET_K = 0x06
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
EPERM, ENOSYS, EAFNOSUPPORT = 1, 38, 97
AF_NETLINK, NETLINK_AUDIT = 16, 9
SECCOMP_SET_MODE_FILTER = 1
_NR_SECCOMP = {"x86_64": 317}

Insn = tuple[int, int, int, int]


def _i(code: int, k: int, jt: int = 0, jf: int = 0) -> Insn:
    return (code, jt, jf, k)


def _ranges(allowed: set[int], known: set[int], top: int, nop: frozenset[int]) -> list[tuple[int, int]]:
    """[(first_nr, verdict)] covering 0..top, merged where neighbours agree; past top is unknown.
    NOP calls return 0 without running (an "errno" of 0)."""
    out: list[tuple[int, int]] = []
    for nr in range(top + 2):
        v = RET_ALLOW if nr in allowed else RET_ERRNO | EPERM if nr in known else RET_ERRNO | ENOSYS
        if nr in nop and nr in allowed:
            v = RET_ERRNO
        if nr > top:
            v = RET_ERRNO | ENOSYS
        if not out or out[-1][1] != v:
            out.append((nr, v))
    return out


def _tree(ranges: list[tuple[int, int]]) -> list[Insn]:
    if len(ranges) == 1:
        return [_i(_RET_K, ranges[0][1])]
    mid = len(ranges) // 2
    left, right = _tree(ranges[:mid]), _tree(ranges[mid:])
    k = ranges[mid][0]
    if len(left) <= 255:
        return [_i(_JGE_K, k, len(left), 0), *left, *right]
    # Conditional jumps reach 255 instructions at most; hop over a long left branch with JA.
    return [_i(_JGE_K, k, 0, 1), _i(_JA, len(left)), *left, *right]


def compile_filter(
    allowed: set[int],
    known: set[int],
    audit_arch: int,
    x32_bit: int,
    socket_nr: int | None,
    nop: frozenset[int] = frozenset(),
) -> bytes:
    top = max(known | allowed)
    prog: list[Insn] = [
        _i(_LD_W_ABS, _OFF_ARCH),
        _i(_JEQ_K, audit_arch, 1, 0),
        _i(_RET_K, RET_ERRNO | ENOSYS),  # another ABI (i386): not supported under the filter
        _i(_LD_W_ABS, _OFF_NR),
        _i(_JGE_K, x32_bit, 0, 1),
        _i(_RET_K, RET_ERRNO | ENOSYS),
    ]
    if socket_nr is not None and socket_nr in allowed:
        prog += [
            _i(_JEQ_K, socket_nr, 0, 7),  # not socket(): straight to the tree
            _i(_LD_W_ABS, _OFF_ARG0),
            _i(_JEQ_K, AF_NETLINK, 0, 2),  # not AF_NETLINK: reload nr
            _i(_LD_W_ABS, _OFF_ARG2),
            _i(_JEQ_K, NETLINK_AUDIT, 2, 0),  # NETLINK_AUDIT: to the EAFNOSUPPORT return
            _i(_LD_W_ABS, _OFF_NR),
            _i(_JA, 1),
            _i(_RET_K, RET_ERRNO | EAFNOSUPPORT),
        ]
    prog += _tree(_ranges(allowed, known, top, nop))
    return b"".join(
        c.to_bytes(2, "little") + bytes((jt, jf)) + k.to_bytes(4, "little") for c, jt, jf, k in prog
    )


def load(program: bytes) -> None:
    """Install PROGRAM for this thread and its future children (needs CAP_SYS_ADMIN or no_new_privs)."""
    import _ctypes

    from hutch.linux.libc import c_char

    n = len(program) // 8
    buf = (c_char * len(program)).from_buffer_copy(program)
    fprog = n.to_bytes(2, "little") + b"\0" * 6 + _ctypes.addressof(buf).to_bytes(8, "little")
    nr = _NR_SECCOMP.get(os.uname().machine, 317)
    libc.check_syscall(nr, SECCOMP_SET_MODE_FILTER, 0, fprog, what="Failed to install the seccomp filter")


def cached(cache_dir: str, key: str, build: object) -> bytes:
    """The program stored under KEY in CACHE_DIR/seccomp, built by BUILD() and stored if missing."""
    path = os.path.join(cache_dir, "seccomp", key + ".bpf")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data and len(data) % 8 == 0:
            return data
    except OSError:
        pass
    data = build()  # type: ignore[operator]
    assert isinstance(data, bytes)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # Atomic: a concurrent start reads the old file or the whole new one; a full disk leaves none.
        write_atomic(path, data, sync=False)
    except OSError:
        pass  # a read-only cache only costs time
    return data
