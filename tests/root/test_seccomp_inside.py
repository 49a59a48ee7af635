"""The seccomp filter as the payload meets it: probed from inside real containers."""

from __future__ import annotations

from pathlib import Path

from conftest import spawn
from hutch.linux import syscalls_x86_64 as table


def probes(image: Path, probe: Path, checks: list[str], *opts: str) -> list[str]:
    script = "; ".join(f"/probe {c}" for c in checks)
    r = spawn(image, "/bin/sh", "-c", script, opts=("-P", f"--bind-ro={probe}:/probe", *opts))
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


N = table.NUMBERS


def test_filter_is_loaded(busybox: Path) -> None:
    r = spawn(busybox, "/bin/grep", "Seccomp", "/proc/self/status", opts=("-P",))
    assert "Seccomp:\t2" in r.stdout


def test_verdicts_from_inside(busybox: Path, probe: Path) -> None:
    out = probes(
        busybox,
        probe,
        [
            f"sys {N['getpid']}",
            f"sys {N['keyctl']}",
            f"sys {N['swapon']}",
            f"sys {N['bpf']}",
            f"sys {N['open_by_handle_at']}",
            f"sys {N['kexec_load']}",
            "sys 1000",
            f"sys {N['socket']} 16 3 9",
            "i386 20",
            f"sys {table.X32_BIT | N['getpid']}",
            "adjtimex",
        ],
    )
    assert out[0].startswith("ok ")
    assert out[1:6] == ["errno 1"] * 5  # known but not allowed: EPERM
    assert out[6] == "errno 38"  # unknown: ENOSYS
    assert out[7] == "errno 97"  # NETLINK_AUDIT: EAFNOSUPPORT
    assert out[8:10] == ["errno 38", "errno 38"]  # i386 and x32 ABIs
    assert out[10] == "errno 1"  # @clock needs CAP_SYS_TIME


def test_capability_opens_group(busybox: Path, probe: Path) -> None:
    # adjtimex with modes=0 only reads; allowed once CAP_SYS_TIME is kept.
    assert probes(busybox, probe, ["adjtimex"], "--capability=CAP_SYS_TIME")[0].startswith("ok ")


def test_system_call_filter_option(busybox: Path, probe: Path) -> None:
    out = probes(
        busybox,
        probe,
        [f"sys {N['keyctl']} 0 -4", f"sys {N['mkdir']} 0 0"],
        "--system-call-filter=keyctl",
        "--system-call-filter=~mkdir",
    )
    assert out[0] != "errno 1"  # now reaches the kernel (which answers for itself)
    assert out[1] == "errno 1"


def test_bad_filter_names(busybox: Path) -> None:
    for bad in ("frobnicate", "@nonsense"):
        r = spawn(busybox, "/bin/true", opts=(f"--system-call-filter={bad}",))
        assert r.returncode == 1 and bad in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_seccomp_can_be_disabled_for_debugging(busybox: Path) -> None:
    import os

    r = spawn(
        busybox,
        "/bin/grep",
        "Seccomp:",
        "/proc/self/status",
        opts=("-P",),
        env=dict(os.environ, HUTCH_SECCOMP="0"),
    )
    assert "Seccomp:\t0" in r.stdout
