"""hutch bootstrap: the images it builds, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run


def hidden(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".#")]


def test_busybox_image_layout(hutch_env: Path) -> None:
    r = run("bootstrap", "busybox", "b1")
    assert r.returncode == 0, r.stderr
    img = hutch_env / "images" / "b1"
    assert (img / "bin/busybox").is_file() and (img / "sbin/init").is_symlink()
    assert len(list((img / "bin").iterdir())) > 50
    assert "root::0:0" in (img / "etc/passwd").read_text()
    assert "ID=busybox" in (img / "usr/lib/os-release").read_text()
    assert (img / "etc/hostname").read_text() == "b1\n"
    assert "getty" in (img / "etc/inittab").read_text()
    assert hidden(hutch_env / "images") == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "-x", ".hidden", "x" * 65, "bad name"])
def test_invalid_names(hutch_env: Path, name: str) -> None:
    r = run("bootstrap", "busybox", name)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list((hutch_env / "images").iterdir()) == []


def test_existing_image_is_not_touched(hutch_env: Path) -> None:
    assert run("bootstrap", "busybox", "b1").returncode == 0
    marker = hutch_env / "images/b1/etc/marker"
    marker.write_text("mine")
    r = run("bootstrap", "busybox", "b1")
    assert r.returncode != 0 and "already exists" in r.stderr
    assert marker.read_text() == "mine"


def test_missing_or_dynamic_busybox(hutch_env: Path) -> None:
    r = run("bootstrap", "busybox", "b2", "--busybox", "/bin/ls")
    # /bin/ls is not busybox: the applet listing fails and nothing is left behind
    assert r.returncode != 0 and "is not a busybox binary" in r.stderr
    assert not (hutch_env / "images/b2").exists() and hidden(hutch_env / "images") == []


def test_unknown_kind_and_missing_name() -> None:
    for argv in (["bootstrap", "fedora", "x"], ["bootstrap", "busybox"], ["bootstrap"]):
        r = run(*argv)
        assert r.returncode != 0 and r.stderr.strip()


def test_debian_unreachable_mirror_leaves_nothing(hutch_env: Path) -> None:
    # Port 9 (discard) on loopback: the connection is refused at once.
    r = run("bootstrap", "debian", "d1", "-q", "--mirror", "http://127.0.0.1:9/debian", timeout=120)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "debootstrap" in r.stderr
    assert list((hutch_env / "images").iterdir()) == []
