"""The seccomp program, checked by running it in a small BPF interpreter: every system call's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.container import security
from hutch.linux import caps, seccomp
from hutch.linux import syscalls_x86_64 as table
from hutch.linux.seccomp_groups import FilterError, expand, parse_filter

ALLOW, EPERM, ENOSYS, EAFNOSUPPORT = "allow", 1, 38, 97


def run_bpf(prog: bytes, nr: int, arch: int = table.AUDIT_ARCH, args: tuple[int, ...] = ()) -> object:
    data = nr.to_bytes(4, "little") + arch.to_bytes(4, "little") + bytes(8)
    data += b"".join(a.to_bytes(8, "little") for a in (list(args) + [0] * 6)[:6])
    insns = [
        (
            int.from_bytes(prog[i : i + 2], "little"),
            prog[i + 2],
            prog[i + 3],
            int.from_bytes(prog[i + 4 : i + 8], "little"),
        )
        for i in range(0, len(prog), 8)
    ]
    pc, acc = 0, 0
    for _ in range(10000):
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = int.from_bytes(data[k : k + 4], "little")
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x35:
            pc += jt if acc >= k else jf
        elif code == 0x05:
            pc += k
        elif code == 0x06:
            return ALLOW if k == seccomp.RET_ALLOW else k & 0xFFFF
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1
    raise AssertionError("no return")


@pytest.fixture(scope="module")
def default_prog() -> bytes:
    return security.build(caps.NSPAWN_DEFAULT, [], [])


def test_every_syscall_gets_the_right_verdict(default_prog: bytes) -> None:
    allowed = security.allowed_names(caps.NSPAWN_DEFAULT, [], [])
    for name, nr in table.NUMBERS.items():
        want = ALLOW if name in allowed else EPERM
        assert run_bpf(default_prog, nr) == want, name
    for nr in (max(table.NUMBERS.values()) + 1, 600, 1000, 0x3FFFFFFF):
        assert run_bpf(default_prog, nr) == ENOSYS


def test_upstream_exclusions(default_prog: bytes) -> None:
    for name in (
        "keyctl",
        "add_key",
        "request_key",
        "swapon",
        "bpf",
        "kexec_load",
        "kexec_file_load",
        "open_by_handle_at",
        "perf_event_open",
        "quotactl",
        "fanotify_init",
        "init_module",
        "settimeofday",
        "iopl",
        "ioperm",
        "mlock",
        "modify_ldt",
        "pkey_alloc",
        "uselib",
    ):
        assert run_bpf(default_prog, table.NUMBERS[name]) == EPERM, name
    for name in ("read", "execve", "mount", "clone3", "pivot_root", "reboot", "chown", "socket", "ioctl"):
        assert run_bpf(default_prog, table.NUMBERS[name]) == ALLOW, name


def test_other_abis_are_refused(default_prog: bytes) -> None:
    assert run_bpf(default_prog, 20, arch=0x40000003) == ENOSYS  # i386
    assert run_bpf(default_prog, table.X32_BIT | 39) == ENOSYS  # x32


def test_netlink_audit_socket(default_prog: bytes) -> None:
    sock = table.NUMBERS["socket"]
    assert run_bpf(default_prog, sock, args=(16, 3, 9)) == EAFNOSUPPORT
    assert run_bpf(default_prog, sock, args=(16, 3, 0)) == ALLOW
    assert run_bpf(default_prog, sock, args=(2, 1, 9)) == ALLOW


def test_capabilities_open_their_groups() -> None:
    keep = caps.NSPAWN_DEFAULT | {caps.NUMBERS["SYS_TIME"], caps.NUMBERS["IPC_LOCK"]}
    prog = security.build(frozenset(keep), [], [])
    assert run_bpf(prog, table.NUMBERS["settimeofday"]) == ALLOW
    assert run_bpf(prog, table.NUMBERS["mlockall"]) == ALLOW
    no_ptrace = security.build(caps.NSPAWN_DEFAULT - {caps.NUMBERS["SYS_PTRACE"]}, [], [])
    assert run_bpf(no_ptrace, table.NUMBERS["ptrace"]) == EPERM


def test_system_call_filter_edits() -> None:
    add, remove = parse_filter("keyctl @swap")
    assert (add, remove) == (["keyctl", "@swap"], [])
    prog = security.build(caps.NSPAWN_DEFAULT, add, [])
    assert (
        run_bpf(prog, table.NUMBERS["keyctl"]) == ALLOW and run_bpf(prog, table.NUMBERS["swapoff"]) == ALLOW
    )
    add, remove = parse_filter("~@network-io mkdir")
    prog = security.build(caps.NSPAWN_DEFAULT, [], remove)
    assert (
        run_bpf(prog, table.NUMBERS["connect"]) == EPERM and run_bpf(prog, table.NUMBERS["mkdir"]) == EPERM
    )
    for bad in ("nosuchcall", "@nosuchgroup", "~read bogus"):
        with pytest.raises(FilterError):
            parse_filter(bad)
    assert "io_uring_setup" in expand("@aio")


def test_cache_is_keyed_by_policy(tmp_path: Path) -> None:
    a = security.program(caps.NSPAWN_DEFAULT, [], [], str(tmp_path))
    files = sorted(p.name for p in (tmp_path / "seccomp").iterdir())
    assert len(files) == 1 and security.COMPILER_VERSION in files[0]
    assert security.program(caps.NSPAWN_DEFAULT, [], [], str(tmp_path)) == a  # a hit, same bytes
    b = security.program(caps.NSPAWN_DEFAULT, ["keyctl"], [], str(tmp_path))  # policy changed: rebuilt
    assert b != a and len(list((tmp_path / "seccomp").iterdir())) == 2
    # A corrupt cache entry is rebuilt, not loaded.
    (tmp_path / "seccomp" / files[0]).write_bytes(b"junk")
    assert security.program(caps.NSPAWN_DEFAULT, [], [], str(tmp_path)) == a
