"""User namespaces: the range each machine gets, ownership modes, idmapped binds, bad ranges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import running, spawn
from hutch.container import userns


def uid_map(image: Path, *opts: str) -> tuple[int, int, int]:
    r = spawn(image, "/bin/cat", "/proc/self/uid_map", opts=("-P", *opts))
    assert r.returncode == 0, r.stderr
    inside, outside, count = (int(x) for x in r.stdout.split())
    return inside, outside, count


def test_default_is_a_picked_range(busybox: Path) -> None:
    inside, base, count = uid_map(busybox)
    assert inside == 0 and count == 65536 and base % 65536 == 0
    assert userns.PICK_MIN <= base < userns.PICK_MAX
    assert uid_map(busybox)[1] == base  # the same machine name gets the same range again


def test_two_machines_never_share_a_range(busybox: Path, hutch_env: Path) -> None:
    with running(busybox, "-x", "-M", "bb") as p:
        first = Path(f"/proc/{_child_of(p.pid)}/uid_map").read_text().split()[1]
        second = uid_map(busybox, "-x", "-M", "bb")[1]
        assert int(first) != second


def _child_of(pid: int) -> int:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(kids[0])


def test_fixed_range_and_its_errors(busybox: Path) -> None:
    assert uid_map(busybox, "--private-users=1048576:65536")[1] == 1048576
    for bad, why in (
        ("0:65536", "overlaps the host's own users"),
        ("100:10", "overlaps the host's own users"),
        ("4294967000:65536", "outside the 32-bit"),
        ("x", "Invalid --private-users"),
    ):
        r = spawn(busybox, "/bin/true", opts=(f"--private-users={bad}",))
        assert r.returncode == 1 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_overlapping_range_is_refused(busybox: Path) -> None:
    with running(busybox, "-x", "--private-users=2097152:131072"):
        r = spawn(busybox, "/bin/true", opts=("-x", "--private-users=2162688:65536"))
        assert r.returncode == 1 and "overlaps one held by" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_map_leaves_the_image_untouched(busybox: Path) -> None:
    before = os.stat(busybox / "etc/passwd")
    r = spawn(
        busybox,
        "/bin/sh",
        "-c",
        "stat -c '%u:%g' /etc/passwd; touch /root/new; stat -c %u /root/new",
        opts=("-P", "-U"),
    )
    assert r.stdout.split() == ["0:0", "0"]
    after = os.stat(busybox / "etc/passwd")
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid) == (0, 0)
    assert os.stat(busybox / "root/new").st_uid == 0  # created by the container's root, stored as 0


def test_chown_shifts_the_image_once(busybox: Path) -> None:
    r = spawn(
        busybox, "/bin/stat", "-c", "%u", "/etc/passwd", opts=("-P", "-U", "--private-users-ownership=chown")
    )
    assert r.stdout.strip() == "0"
    base = os.stat(busybox).st_uid
    assert base >= userns.PICK_MIN and base % 65536 == 0 and os.stat(busybox / "etc/passwd").st_uid == base
    assert (busybox / "bin/ls").is_symlink() and os.lstat(busybox / "bin/ls").st_uid == base
    # A second start reuses the range the image is owned by.
    assert uid_map(busybox, "-U", "--private-users-ownership=chown")[1] == base


def test_image_owned_by_a_held_range(busybox: Path) -> None:
    spawn(busybox, "/bin/true", opts=("-U", "--private-users-ownership=chown"))
    base = os.stat(busybox).st_uid
    with running(busybox, "-x", f"--private-users={base}:65536", "-M", "other"):
        # --read-only shares the image lock with the -x run; the range the image is owned by is still held.
        r = spawn(busybox, "/bin/true", opts=("--read-only", "-U", "--private-users-ownership=chown"))
        assert r.returncode == 1 and "which other-" in r.stderr and "holds" in r.stderr, r.stderr


def test_binds_show_host_owners(busybox: Path, tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    os.chown(src / "f", 1234, 1234)
    r = spawn(busybox, "/bin/stat", "-c", "%u:%g", "/data/f", opts=("-P", f"--bind={src}:/data"))
    assert r.stdout.strip() == "1234:1234"  # upstream shows nobody (its issue #5900)


def test_no_userns_warns(busybox: Path) -> None:
    from conftest import run

    r = run("spawn", "-P", "--private-users=no", "-D", str(busybox), "/bin/true")
    assert r.returncode == 0 and "no security boundary" in r.stderr


def test_auto_ownership_chowns_where_idmapped_mounts_are_refused(busybox: Path, tmp_path: Path) -> None:
    """An image on overlayfs (a machine in a container's ephemeral root, say) cannot be idmapped: auto
    shifts its files instead, as upstream's auto does; an explicit map fails, in one line."""
    import subprocess

    for d in ("upper", "work", "root"):
        (tmp_path / d).mkdir()
    root = tmp_path / "root"
    opts = f"lowerdir={busybox},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)], check=True)
    try:
        r = spawn(root, "/bin/sh", "-c", "stat -c %u /etc/passwd; touch /root/new", opts=("-P", "-U"))
        assert r.returncode == 0 and r.stdout.split() == ["0"], r.stderr
        base = os.stat(root).st_uid
        assert base >= userns.PICK_MIN and os.stat(root / "etc/passwd").st_uid == base
        assert os.stat(root / "root/new").st_uid == base
        r = spawn(root, "/bin/true", opts=("-U", "--private-users-ownership=map"))
        assert r.returncode == 1 and "idmapped mount" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_the_hosts_root_is_never_chowned() -> None:
    """The last guard of chown_tree: a tree that is the host's / (through any path to it) is refused
    before anything is changed, whatever led there."""
    from hutch.errors import SetupError

    before = os.stat("/tmp")
    for tree in ("/", "/tmp/..", "/proc/self/root"):
        with pytest.raises(SetupError, match="host's root directory"):
            userns.chown_image(tree, 0x10000 * 7)
    assert os.stat("/tmp").st_uid == before.st_uid and os.stat("/").st_uid == 0
