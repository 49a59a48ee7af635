"""Bad input gets one clear line, a non-zero exit, and leaves nothing mounted or half-made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import mounts, run


def one_line_error(r: object, *needles: str) -> None:
    rc, err = r.returncode, r.stderr  # type: ignore[attr-defined]
    assert rc != 0
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("hutch spawn: ")
    for n in needles:
        assert n in lines[0], lines[0]


def leftovers() -> list[str]:
    return sorted(str(p) for p in Path("/var/tmp").glob("hutch-*"))


@pytest.fixture
def guard():  # type: ignore[no-untyped-def]
    before = (mounts(), leftovers())
    yield
    assert (mounts(), leftovers()) == before


def test_missing_directory(guard: None, tmp_path: Path) -> None:
    one_line_error(run("spawn", "-D", str(tmp_path / "nope"), "/bin/true"), "doesn't exist")


def test_directory_is_a_file(guard: None, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run("spawn", "-D", str(f), "/bin/true"), "not a directory")


def test_boot_without_os_release(guard: None, busybox: Path) -> None:
    (busybox / "etc/os-release").unlink()
    (busybox / "usr/lib/os-release").unlink()
    one_line_error(run("spawn", "-b", "-D", str(busybox)), "os-release", "Refusing")


def test_not_an_os_tree(guard: None, tmp_path: Path) -> None:
    one_line_error(run("spawn", "-D", str(tmp_path), "/bin/true"), "/usr/ directory is missing")


@pytest.mark.parametrize(
    "opt",
    [
        "--bind=/a:/b:/c:/d",
        "--bind=/x:relative",
        "--bind=/a:/b:wrongopt",
        "--tmpfs=relative",
        "--tmpfs=/",
        "--overlay=/only",
        "--overlay=::/x",
        "--bind-ro=",
        "--inaccessible=rel",
    ],
)
def test_malformed_mount_specs(guard: None, busybox: Path, opt: str) -> None:
    one_line_error(run("spawn", "-D", str(busybox), opt, "/bin/true"))


def test_bind_source_missing(guard: None, busybox: Path) -> None:
    one_line_error(
        run("spawn", "-D", str(busybox), "--bind=/does/not/exist:/x", "/bin/true"), "/does/not/exist"
    )


def test_unknown_user(guard: None, busybox: Path) -> None:
    one_line_error(run("spawn", "-D", str(busybox), "-u", "ghost", "/bin/true"), "ghost")


def test_boot_and_as_pid2(guard: None, busybox: Path) -> None:
    one_line_error(run("spawn", "-b", "-a", "-D", str(busybox)), "--boot and --as-pid2 may not be combined")


@pytest.mark.parametrize("opt", ["--frobnicate", "-Z", "--console=fancy", "--directory"])
def test_unknown_or_incomplete_options(guard: None, opt: str) -> None:
    one_line_error(run("spawn", opt))


def test_root_directory_refused(guard: None) -> None:
    r = run("spawn", "-D", "/", "/bin/true")
    assert r.returncode != 0


def test_busy_image(guard: None, busybox: Path) -> None:
    import subprocess
    import time

    from conftest import HUTCH

    # A writable container holds the image exclusively; -x and --read-only share it, as upstream.
    p = subprocess.Popen([HUTCH, "spawn", "-q", "-P", "-D", str(busybox), "/bin/sleep", "30"])
    try:
        time.sleep(0.5)
        one_line_error(run("spawn", "-D", str(busybox), "/bin/true"), "busy")
        one_line_error(run("spawn", "-x", "-D", str(busybox), "/bin/true"), "busy")
    finally:
        p.kill()
        p.wait()
    p = subprocess.Popen([HUTCH, "spawn", "-q", "-P", "-x", "-D", str(busybox), "/bin/sleep", "30"])
    try:
        time.sleep(0.5)
        r = run("spawn", "-q", "-P", "--read-only", "-D", str(busybox), "/bin/true")
        assert r.returncode == 0, r.stderr
        one_line_error(run("spawn", "-D", str(busybox), "/bin/true"), "busy")
    finally:
        p.kill()
        p.wait()


def test_no_fd_or_temp_leaks_after_failure(guard: None, busybox: Path) -> None:
    r = run("spawn", "-D", str(busybox), "--bind=:/scratch", "/no/such/cmd")
    assert r.returncode == 1 and "Failed to execute /no/such/cmd" in r.stderr
    assert not [
        p for p in busybox.parent.iterdir() if p.name.startswith(".#bb.") and not p.name.endswith(".lck")
    ]
    assert os.path.isdir(busybox)


def test_not_root(guard: None, busybox: Path) -> None:
    import subprocess

    from conftest import HUTCH

    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            HUTCH,
            "spawn",
            "-D",
            str(busybox),
            "/bin/true",
        ],
        capture_output=True,
        text=True,
    )
    one_line_error(r, "Need to be root")


@pytest.mark.parametrize(
    ("opt", "needle"),
    [
        ("--slice=web.slice", "slices are systemd's, and systemd is not PID 1 here"),
        ("--slice=web", "Invalid slice name"),
    ],
)
def test_slices_where_systemd_is_not_pid1(guard: None, busybox: Path, opt: str, needle: str) -> None:
    """-S places the scope in a systemd slice; without systemd there is none but hutch's machine.slice."""
    one_line_error(run("spawn", "-q", "-D", str(busybox), opt, "/bin/true"), needle)
    assert run("spawn", "-q", "-D", str(busybox), "--slice=machine.slice", "/bin/true").returncode == 0
