"""The image verbs on real images: list-images, image-status, show-image, clone (full and thin),
rename, remove, read-only, clean, cat/edit, import-tar/-fs, export-tar, and spawn on the results."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HUTCH, run, running, tree_snapshot

COMPRESSIONS = ("tar", "tar.gz", "tar.xz", "tar.bz2", "tar.zst")


def images(*opts: str) -> list[dict[str, object]]:
    r = run("list-images", "-o", "json", *opts, check=True)
    return list(json.loads(r.stdout))


def names(*opts: str) -> list[str]:
    return [str(i["name"]) for i in images(*opts)]


def decorate(bb: Path) -> None:
    """What a round trip must keep beyond plain files: setuid, xattrs, a file capability, hard links,
    a FIFO, owners other than root, an empty directory and a sparse file."""
    p = bb / "usr/bin/suid-tool"
    p.write_bytes(b"#!/bin/sh\necho ok\n")
    os.chown(p, 0, 0)
    os.chmod(p, 0o4755)
    os.setxattr(p, "user.origin", b"hutch-test")
    os.setxattr(bb / "etc", "user.dir", b"\x00\xffbinary")
    os.setxattr(
        bb / "bin/busybox", "security.capability", bytes.fromhex("0100000200200000000000000000000000000000")
    )
    os.link(p, bb / "usr/bin/suid-tool-link")
    os.mkfifo(bb / "run-fifo")
    (bb / "home/user").mkdir(parents=True)
    os.chown(bb / "home/user", 1000, 1000)
    (bb / "home/user/file").write_text("mine\n")
    os.chown(bb / "home/user/file", 1000, 100)
    (bb / "empty-dir").mkdir()
    with open(bb / "sparse", "wb") as f:
        f.seek(50 << 20)
        f.write(b"end")


def test_list_images_empty_and_hidden(hutch_env: Path) -> None:
    r = run("list-images", check=True)
    assert r.stdout.strip() == "No images."
    assert run("list-images", "--no-legend", check=True).stdout == ""
    r = run("list-images", "-a", "-o", "json", check=True)
    host = json.loads(r.stdout)
    assert [i["name"] for i in host] == [".host"] and host[0]["ro"] is True


def test_list_status_show(busybox: Path, hutch_env: Path) -> None:
    (hutch_env / "images/.hidden").mkdir()
    (hutch_env / "images/.#bb.import-0123").mkdir()  # a temporary: never an image
    r = run("list-images", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"]
    assert lines[1].split()[:4] == ["bb", "directory", "no", "n/a"]
    assert lines[-1] == "1 images listed."
    assert run("list-images", "--no-legend", check=True).stdout.split()[0] == "bb"
    assert names() == ["bb"]
    assert names("-a") == [".hidden", ".host", "bb"]
    (entry,) = images()
    assert set(entry) == {"name", "type", "ro", "usage", "created", "modified"}
    assert isinstance(entry["created"], int) and entry["created"] > 1_600_000_000_000_000

    r = run("image-status", "bb", check=True)
    assert r.stdout.startswith("bb\n")
    assert f"Path: {busybox}" in r.stdout and "RO: writable" in r.stdout and "OS: BusyBox" in r.stdout
    assert "Usage: " in r.stdout

    r = run("show-image", "bb", check=True)
    props = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert props["Name"] == "bb" and props["Type"] == "directory" and props["ReadOnly"] == "no"
    assert props["Path"] == str(busybox) and int(props["Usage"]) > 1_000_000
    r = run("show-image", "bb", "-p", "Name,ReadOnly", "--value", check=True)
    assert r.stdout.splitlines() == ["bb", "no"]
    r = run("show-image", "bb", "-P", "Type", check=True)
    assert r.stdout == "directory\n"
    r = run("show-image", check=True)
    assert f"PoolPath={hutch_env / 'images'}" in r.stdout


def test_clone_copies_everything_and_settings(busybox: Path, hutch_env: Path) -> None:
    decorate(busybox)
    (hutch_env / "settings/bb.nspawn").write_text("[Exec]\nBoot=no\n")
    (hutch_env / "images/bb.nspawn").write_text("[Exec]\nHostname=x\n")
    run("clone", "bb", "copy", check=True)
    assert tree_snapshot(busybox) == tree_snapshot(hutch_env / "images/copy")
    assert (hutch_env / "settings/copy.nspawn").read_text() == "[Exec]\nBoot=no\n"
    assert (hutch_env / "images/copy.nspawn").read_text() == "[Exec]\nHostname=x\n"
    assert os.stat(hutch_env / "images/copy/sparse").st_blocks * 512 < 1 << 20  # holes stay holes
    run("clone", "--read-only", "bb", "ro-copy", check=True)
    ro = {i["name"]: i["ro"] for i in images()}
    assert ro == {"bb": False, "copy": False, "ro-copy": True}
    r = run("spawn", "-q", "-M", "copy", "/usr/bin/suid-tool")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert stat.S_IMODE(os.stat(hutch_env / "images").st_mode) == 0o700  # the store is root-only


def test_read_only_mark_is_honoured_by_spawn(busybox: Path) -> None:
    run("read-only", "bb", check=True)
    assert images()[0]["ro"] is True
    r = run("spawn", "-q", "-M", "bb", "/bin/touch", "/x")
    assert r.returncode != 0 and "Read-only file system" in r.stdout + r.stderr
    run("read-only", "bb", "no", check=True)
    assert images()[0]["ro"] is False
    assert run("spawn", "-q", "-M", "bb", "/bin/touch", "/x").returncode == 0
    r = run("read-only", "bb", "maybe")
    assert r.returncode != 0 and "Failed to parse read-only boolean" in r.stderr


def test_thin_clone(busybox: Path, hutch_env: Path) -> None:
    r = run("clone", "--thin", "bb", "thin")
    assert r.returncode != 0 and "read-only source" in r.stderr and "hutch read-only bb" in r.stderr
    run("read-only", "bb", check=True)
    start = time.monotonic()
    run("clone", "--thin", "bb", "thin", check=True)
    assert time.monotonic() - start < 2
    assert {i["name"]: i["type"] for i in images()} == {"bb": "directory", "thin": "thin"}
    r = run(
        "spawn",
        "-q",
        "-M",
        "thin",
        "/bin/sh",
        "-c",
        "echo new > /etc/new; chown 7:8 /etc/new; rm /etc/hostname",
    )
    assert r.returncode == 0, r.stderr
    upper = hutch_env / "images/thin/upper"
    assert (upper / "etc/new").read_text() == "new\n"
    assert (os.stat(upper / "etc/new").st_uid, os.stat(upper / "etc/new").st_gid) == (7, 8)  # not shifted
    assert (busybox / "etc/hostname").exists() and not (busybox / "etc/new").exists()
    r = run("spawn", "-q", "-M", "thin", "/bin/sh", "-c", "cat /etc/new; test -e /etc/hostname || echo gone")
    assert r.stdout == "new\ngone\n"
    props = dict(line.split("=", 1) for line in run("show-image", "thin", check=True).stdout.splitlines())
    assert props["Type"] == "thin" and props["Source"] == str(busybox)
    # The source must stay as the clone saw it.
    for verb in (("remove", "bb"), ("read-only", "bb", "no"), ("rename", "bb", "bb2")):
        r = run(*verb)
        assert r.returncode != 0 and "thin clones: thin" in r.stderr, verb
    r = run("spawn", "-q", "-x", "-M", "thin", "/bin/true")
    assert r.returncode != 0 and "thin clone" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run("clone", "thin", "thin2")  # a copy of a thin image is another thin image
    assert r.returncode == 0, r.stderr
    assert (hutch_env / "images/thin2/upper/etc/new").read_text() == "new\n"
    run("remove", "thin", "thin2", check=True)
    run("read-only", "bb", "no", check=True)


def test_rename_and_remove_follow_settings(busybox: Path, hutch_env: Path) -> None:
    (hutch_env / "settings/bb.nspawn").write_text("[Exec]\n")
    run("read-only", "bb", check=True)
    run("rename", "bb", "renamed", check=True)
    assert names() == ["renamed"] and images()[0]["ro"] is True
    assert (hutch_env / "settings/renamed.nspawn").exists() and not (
        hutch_env / "settings/bb.nspawn"
    ).exists()
    run("remove", "renamed", check=True)
    assert names() == [] and not (hutch_env / "settings/renamed.nspawn").exists()
    assert sorted(os.listdir(hutch_env / "images")) == []


def test_busy_image_cannot_be_changed(busybox: Path, hutch_env: Path) -> None:
    with running(busybox, "-M", "bb"):
        for verb in (("remove", "bb"), ("rename", "bb", "x"), ("read-only", "bb")):
            r = run(*verb)
            assert r.returncode != 0 and "in use by a running container" in r.stderr, (verb, r.stderr)
        # A read-only use of the source is fine for a clone; the running writer is not.
        r = run("clone", "bb", "copy")
        assert r.returncode != 0 and "in use" in r.stderr
    assert names() == ["bb"]
    run("clone", "bb", "copy", check=True)


def test_clean(busybox: Path, hutch_env: Path) -> None:
    run("clone", "bb", ".hidden", check=True)
    leftover = hutch_env / "images/.#bb.import-deadbeef0000"
    (leftover / "usr").mkdir(parents=True)
    r = run("clean", check=True)
    assert (
        "Removed image '.hidden'." in r.stderr and "Removed leftover .#bb.import-deadbeef0000." in r.stderr
    )
    assert names("-a") == [".host", "bb"] and not leftover.exists()
    run("clean", "--all", check=True)
    assert names("-a") == [".host"]


def test_cat_and_edit(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    r = run("cat", "bb")
    assert r.returncode != 0 and "No settings file for 'bb'" in r.stderr
    editor = tmp_path / "editor"
    editor.write_text("#!/bin/sh\nprintf '[Exec]\\nBoot=yes\\n' > \"$1\"\n")
    editor.chmod(0o755)
    env = dict(os.environ, EDITOR=str(editor))
    r = run("edit", "bb", env=env)
    assert r.returncode == 0, r.stderr
    assert (hutch_env / "settings/bb.nspawn").read_text() == "[Exec]\nBoot=yes\n"
    r = run("cat", "bb", check=True)
    assert r.stdout == f"# {hutch_env / 'settings/bb.nspawn'}\n[Exec]\nBoot=yes\n"
    # A malformed file is refused, naming the file and line as spawn would, and the old one kept: bad
    # syntax, and a value spawn's option parser refuses.
    target = hutch_env / "settings/bb.nspawn"
    for text, msg in (("not a setting", ":1: Missing '='"), ("[Exec]\\nKillSignal=SIGNOPE", ":2:")):
        editor.write_text(f"#!/bin/sh\nprintf '{text}\\n' > \"$1\"\n")
        r = run("edit", "bb", env=env)
        assert r.returncode != 0 and f"{target}{msg}" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert target.read_text() == "[Exec]\nBoot=yes\n"
        assert not list(target.parent.glob(".#*"))  # no temporary file left
    assert run("edit", "nosuch", env=env).returncode != 0


@pytest.mark.parametrize("suffix", COMPRESSIONS)
def test_export_import_round_trip(busybox: Path, hutch_env: Path, tmp_path: Path, suffix: str) -> None:
    decorate(busybox)
    archive = tmp_path / f"bb.{suffix}"
    run("export-tar", "bb", str(archive), check=True)
    magic = archive.read_bytes()[:6]
    expected = {
        "tar": None,
        "tar.gz": b"\x1f\x8b",
        "tar.xz": b"\xfd7zXZ",
        "tar.bz2": b"BZh",
        "tar.zst": b"\x28\xb5\x2f\xfd",
    }
    if expected[suffix]:
        assert magic.startswith(expected[suffix])  # type: ignore[arg-type]
    # The name says nothing: the format is read from the content.
    plain = tmp_path / "archive.bin"
    archive.rename(plain)
    r = run("import-tar", str(plain), "copy")
    assert r.returncode == 0, r.stderr
    copy = hutch_env / "images/copy"
    want = tree_snapshot(busybox)
    got = tree_snapshot(copy)
    assert want.keys() == got.keys()
    # Exported as they are; the importer drops file capabilities (an archive may not grant the host's
    # root user namespace anything), and says so.
    assert os.getxattr(busybox / "bin/busybox", "security.capability")[:4] == bytes.fromhex("01000002")
    assert "security.capability" not in os.listxattr(copy / "bin/busybox")
    assert "file capabilities dropped from 1 files" in r.stderr
    want["bin/busybox"] = got["bin/busybox"]
    assert want == got
    r = run("spawn", "-q", "-M", "copy", "/bin/sh", "-c", "/usr/bin/suid-tool; cat /home/user/file")
    assert r.stdout == "ok\nmine\n", r.stderr


def test_export_to_stdout_and_format_option(busybox: Path, tmp_path: Path, hutch_env: Path) -> None:
    out = tmp_path / "x.tar.zst"
    with open(out, "wb") as f:
        r = subprocess.run(
            [HUTCH, "export-tar", "bb", "-", "--format=zstd"], stdout=f, stderr=subprocess.PIPE
        )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    with open(out, "rb") as f:
        r = subprocess.run([HUTCH, "import-tar", "-", "fromstdin"], stdin=f, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fromstdin" in names()
    r = run("import-tar", "-")
    assert r.returncode != 0 and "name is needed" in r.stderr


def test_import_name_from_file_and_unwrap(busybox: Path, tmp_path: Path, hutch_env: Path) -> None:
    # A distro tarball that wraps the tree in one top-level directory, as Ubuntu base or Fedora do.
    wrapped = tmp_path / "ubuntu-base-24.04.tar.gz"
    subprocess.run(["tar", "-C", str(busybox.parent), "-czf", str(wrapped), "bb"], check=True)
    r = run("import-tar", str(wrapped))
    assert r.returncode == 0, r.stderr
    img = hutch_env / "images/ubuntu-base-24.04"
    assert (img / "etc/os-release").exists() and not (img / "bb").exists()
    r = run("import-tar", str(wrapped))
    assert r.returncode != 0 and "already exists" in r.stderr and "--force" in r.stderr
    r = run("import-tar", "--force", "--read-only", str(wrapped))
    assert r.returncode == 0, r.stderr
    assert {i["name"]: i["ro"] for i in images()}["ubuntu-base-24.04"] is True
    assert not [e for e in os.listdir(hutch_env / "images") if e.startswith(".#") and not e.endswith(".lck")]


def test_import_fs(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    decorate(busybox)
    r = run("import-fs", str(busybox), "fscopy", "--read-only")
    assert r.returncode == 0, r.stderr
    assert tree_snapshot(busybox) == tree_snapshot(hutch_env / "images/fscopy")
    assert {i["name"]: i["ro"] for i in images()}["fscopy"] is True
    r = run("import-fs", str(tmp_path / "nope"), "x")
    assert r.returncode != 0 and "is not a directory" in r.stderr
