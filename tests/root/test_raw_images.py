"""Raw disk images: `spawn -i`, NAME.raw images in the store, import-raw/export-raw/pull-raw, hostile
partition tables. Disks are made by sfdisk and mke2fs (tests/formats.py); which partition is which is
checked against systemd-dissect, upstream's own reading of the Discoverable Partitions Specification
(systemd-nspawn 252 itself refuses -i on this host: "--image= requires access to the host's /run/
hierarchy, since we need access to udev"; hutch needs no udev)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from formats import ESP, GENERIC, HOME, ROOT_X86_64, USR_X86_64, debian_cloud, gpt_disk, sh, tree_mib

from conftest import HUTCH, debian_image, run, wait_for

pytestmark = pytest.mark.usefixtures("private_net")


@pytest.fixture(scope="module")
def debian_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT disk holding the cached Debian tree as its x86-64 root partition, plus an ESP."""
    tree = debian_image()
    out = tmp_path_factory.mktemp("disk") / "debian.raw"
    return gpt_disk(out, [(ESP, 8, False, "esp"), (ROOT_X86_64, tree_mib(tree) * 3 // 2 + 64, tree, "root")])


def copy(src: Path, dst: Path) -> Path:
    sh("cp", "--sparse=always", src, dst)
    return dst


def loops_of(path: Path) -> list[str]:
    """Loop devices whose backing file is PATH: none may outlive the run that made them."""
    out = []
    for d in Path("/sys/block").glob("loop*"):
        try:
            if (d / "loop/backing_file").read_text().strip() == str(path):
                out.append(d.name)
        except OSError:
            pass
    return out


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def images(hutch_env: Path) -> list[str]:
    return sorted(os.listdir(hutch_env / "images"))


# ---------------------------------------------------------------- spawn -i and the store


def test_spawn_image_runs_its_root_partition(debian_disk: Path, tmp_path: Path) -> None:
    disk = copy(debian_disk, tmp_path / "debian.raw")
    r = run(
        "spawn",
        "-q",
        "-i",
        str(disk),
        "/bin/sh",
        "-c",
        ". /etc/os-release; echo $ID; uname -m; findmnt -no FSTYPE,OPTIONS /; touch /written && echo rw",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[:3] == ["debian", "x86_64", "ext4"] and "nodev" in out[3] and out[4] == "rw"
    assert loops_of(disk) == []  # the loop device went with the run
    # The write reached the image: a second run sees it.
    assert run("spawn", "-q", "-i", str(disk), "ls", "/written").returncode == 0


def test_read_only_where_asked_or_where_the_file_is(debian_disk: Path, tmp_path: Path) -> None:
    disk = copy(debian_disk, tmp_path / "debian.raw")
    before = disk.stat().st_mtime_ns
    probe = "touch /x 2>&1; findmnt -no OPTIONS /"
    for opts in (["--read-only"], ["-x"]):
        r = run("spawn", "-q", *opts, "-i", str(disk), "/bin/sh", "-c", probe)
        assert r.returncode == 0, r.stderr
        if opts == ["-x"]:
            assert "Read-only" not in r.stdout  # the writes go to a tmpfs over the read-only partition
        else:
            assert "Read-only file system" in r.stdout and r.stdout.split()[-1].startswith("ro")
    disk.chmod(0o444)
    r = run("spawn", "-q", "-i", str(disk), "/bin/sh", "-c", probe)
    assert "Read-only file system" in r.stdout, r.stdout + r.stderr
    assert disk.stat().st_mtime_ns == before


def test_a_raw_image_in_the_store_boots_and_is_held_while_it_runs(
    debian_disk: Path, hutch_env: Path
) -> None:
    r = run("import-raw", str(debian_disk), "disk", timeout=120)
    assert r.returncode == 0, r.stderr
    listed = json.loads(run("list-images", "-o", "json", check=True).stdout)
    assert [(i["name"], i["type"]) for i in listed] == [("disk", "raw")]
    assert "Debian GNU/Linux 12" in run("image-status", "disk", check=True).stdout
    run("start", "disk", check=True, timeout=120)
    try:
        r = run(
            "shell",
            "disk",
            "/bin/sh",
            "-c",
            "systemctl is-system-running --wait; findmnt -no FSTYPE /",
            timeout=120,
        )
        assert r.stdout.split() == ["running", "ext4"], r.stdout + r.stderr
        assert "Debian GNU/Linux 12" in run("status", "disk", check=True).stdout
        for verb in (["remove", "disk"], ["rename", "disk", "other"], ["read-only", "disk"]):
            line = one_line(run(*verb))
            assert "in use by a running container" in line and "'disk'" in line, line
        line = one_line(run("spawn", "-q", "-M", "disk", "/bin/true"))
        assert "busy" in line
        assert images(hutch_env) == [".#disk.raw.lck", "disk.raw"]
    finally:
        run("poweroff", "--wait", "disk", timeout=120)
    assert loops_of(hutch_env / "images/disk.raw") == []
    run("read-only", "disk", check=True)
    r = run("spawn", "-q", "-M", "disk", "/bin/sh", "-c", "touch /x")
    assert "Read-only file system" in r.stdout + r.stderr
    run("clone", "disk", "copy", check=True, timeout=120)
    run("rename", "copy", "again", check=True)
    assert run("spawn", "-q", "-M", "again", "cat", "/etc/debian_version").stdout.startswith("12.")
    run("remove", "again", "disk", check=True)
    assert images(hutch_env) == []


@pytest.mark.parametrize("which", ["debian", "small"])
def test_export_raw_then_import_raw_gives_the_same_disk(
    which: str, debian_disk: Path, small_disk: Path, hutch_env: Path, tmp_path: Path
) -> None:
    disk = debian_disk if which == "debian" else small_disk
    run("import-raw", str(disk), "disk", check=True, timeout=120)
    # Every compression on the small disk; the big one plain and in zstd (xz takes a minute on it).
    suffixes = (
        (".raw", ".raw.zst") if which == "debian" else (".raw", ".raw.xz", ".raw.zst", ".raw.gz", ".raw.bz2")
    )
    for suffix in suffixes:
        out = tmp_path / f"out{suffix}"
        r = run("export-raw", "disk", str(out), timeout=300)
        assert r.returncode == 0, r.stderr
        kind = sh("file", "-b", out).stdout.decode()
        expect = {
            ".raw": "DOS/MBR boot sector",
            ".raw.xz": "XZ compressed",
            ".raw.zst": "Zstandard",
            ".raw.gz": "gzip compressed",
            ".raw.bz2": "bzip2 compressed",
        }[suffix]
        assert kind.startswith(expect), kind
        name = "back" + suffix.replace(".", "-")
        run("import-raw", str(out), name, check=True, timeout=300)
        back = hutch_env / f"images/{name}.raw"
        assert sh("cmp", disk, back).returncode == 0
        # Sparse: the disk's empty space costs nothing.
        assert back.stat().st_blocks * 512 < disk.stat().st_size
        run("remove", name, check=True)


def test_qcow2_is_converted_and_a_backing_file_refused(
    debian_disk: Path, hutch_env: Path, tmp_path: Path
) -> None:
    qcow = tmp_path / "debian.qcow2"
    sh("qemu-img", "convert", "-O", "qcow2", debian_disk, qcow)
    run("import-raw", str(qcow), check=True, timeout=300)
    assert run("spawn", "-q", "-M", "debian", "cat", "/etc/debian_version").stdout.startswith("12.")
    # A qcow2 file whose backing file is a path on this host: importing it would read that file.
    secret = tmp_path / "host-secret.raw"
    secret.write_bytes(b"secret" * 1000)
    sh("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", secret, tmp_path / "over.qcow2")
    line = one_line(run("import-raw", str(tmp_path / "over.qcow2"), "over"))
    assert "names a backing file" in line
    assert images(hutch_env) == ["debian.raw"]


# ---------------------------------------------------------------- discovery, against systemd-dissect


def _marked(base: Path, busybox_template: Path, label: str, full: bool) -> Path:
    tree = base / label
    if full:
        shutil.copytree(busybox_template, tree, symlinks=True)
    else:
        tree.mkdir()
    (tree / "marker").write_text(label + "\n")
    return tree


LAYOUTS = {
    # root, /usr and /home partitions and an ESP: each mounted where the specification says
    "root-usr-home": [
        (ESP, 4, False, "esp"),
        (ROOT_X86_64, 16, "root", "root"),
        (USR_X86_64, 8, "usr", "usr"),
        (HOME, 4, "home", "home"),
    ],
    # two roots: the one whose label has the higher version wins
    "versioned-roots": [
        (ROOT_X86_64, 16, "root-1.2", "root-1.2"),
        (ROOT_X86_64, 16, "root-1.10", "root-1.10"),
    ],
    # no root type at all: the one generic Linux partition is the root
    "generic": [(ESP, 4, False, "esp"), (GENERIC, 16, "data", "data")],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_partitions_are_found_as_systemd_dissect_finds_them(
    layout: str, busybox_template: Path, tmp_path: Path
) -> None:
    parts = []
    for ptype, mib, content, label in LAYOUTS[layout]:
        tree: Path | bool = False
        if isinstance(content, str):
            # The root partition holds the whole (busybox) tree; the others only their marker.
            is_root = ptype in (ROOT_X86_64, GENERIC)
            tree = _marked(tmp_path, busybox_template, content, full=is_root)
            if ptype == USR_X86_64:
                (tree / "lib").mkdir()
                (tree / "lib/os-release").write_text("ID=usr-partition\n")
        parts.append((ptype, mib, tree, label))
    disk = gpt_disk(tmp_path / f"{layout}.raw", parts)
    dissect = json.loads(sh("systemd-dissect", "--json=short", disk).stdout)
    # Partition numbers: systemd-dissect names a generic partition by number only, not by label.
    found = {m["designator"]: m["partno"] for m in dissect["mounts"]}
    number = {label: i + 1 for i, (_, _, _, label) in enumerate(LAYOUTS[layout])} | {"-": None}
    script = "cat /marker; for d in usr home; do cat /$d/marker 2>/dev/null || echo -; done"
    r = run("spawn", "-q", "-i", str(disk), "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    root, usr, home = r.stdout.split()
    assert number[root] == found["root"]
    assert number[usr] == found.get("usr") and number[home] == found.get("home")
    assert loops_of(disk) == []


def test_mbr_disks_and_bare_file_systems(busybox_template: Path, tmp_path: Path) -> None:
    mbr = tmp_path / "mbr.raw"
    with open(mbr, "wb") as f:
        f.truncate(40 << 20)
    sh("sfdisk", "-q", mbr, input=b"label: dos\nstart=2048, type=83\n")
    start = json.loads(sh("sfdisk", "--json", mbr).stdout)["partitiontable"]["partitions"][0]
    tree = _marked(tmp_path, busybox_template, "mbr-root", full=True)
    sh(
        "mke2fs",
        "-q",
        "-t",
        "ext4",
        "-d",
        tree,
        "-E",
        f"offset={start['start'] * 512}",
        mbr,
        f"{start['size'] // 2}k",
    )
    bare = tmp_path / "bare.ext4"
    (tree / "marker").write_text("bare\n")
    sh("mke2fs", "-q", "-t", "ext4", "-d", tree, bare, "40M")
    squash = tmp_path / "image.squashfs"
    (tree / "marker").write_text("squashfs\n")
    sh("mksquashfs", tree, squash, "-quiet", "-noappend")
    for disk, marker in ((mbr, "mbr-root"), (bare, "bare"), (squash, "squashfs")):
        r = run("spawn", "-q", "-i", str(disk), "cat", "/marker")
        assert (r.returncode, r.stdout) == (0, marker + "\n"), r.stderr


# ---------------------------------------------------------------- hostile and broken disks


def _rewrite(path: Path, patch: object) -> None:
    """Apply PATCH(header, entries) to the GPT of PATH and fix both CRCs, as a forger would."""
    with open(path, "r+b") as f:
        f.seek(512)
        header = bytearray(f.read(512))
        f.seek(1024)
        entries = bytearray(f.read(128 * 128))
        patch(header, entries)  # type: ignore[operator]
        struct.pack_into("<I", header, 88, zlib.crc32(entries))
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:92])))
        f.seek(512)
        f.write(header)
        f.seek(1024)
        f.write(entries)


def _entry(entries: bytearray, i: int, first: int | None = None, last: int | None = None) -> None:
    off = i * 128
    if first is not None:
        struct.pack_into("<Q", entries, off + 32, first)
    if last is not None:
        struct.pack_into("<Q", entries, off + 40, last)


HOSTILE = {
    "overlapping partitions": (
        lambda h, e: _entry(e, 1, first=struct.unpack_from("<Q", e, 40)[0] - 8),
        "overlap",
    ),
    "a partition beyond the file": (lambda h, e: _entry(e, 1, last=10 << 30), "outside"),
    "a usable range beyond the file": (
        lambda h, e: struct.pack_into("<Q", h, 48, 10 << 30),
        "outside the file",
    ),
    "an absurd entry count": (
        lambda h, e: struct.pack_into("<I", h, 80, 1 << 24),
        "implausible entry array",
    ),
}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory, busybox_template: Path) -> Path:
    d = tmp_path_factory.mktemp("small")
    return gpt_disk(d / "small.raw", [(ESP, 4, False, "esp"), (ROOT_X86_64, 16, busybox_template, "root")])


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_partition_tables_are_refused(
    case: str, small_disk: Path, hutch_env: Path, tmp_path: Path
) -> None:
    patch, words = HOSTILE[case]
    disk = copy(small_disk, tmp_path / "hostile.raw")
    _rewrite(disk, patch)
    for args in (["spawn", "-q", "-i", str(disk), "/bin/true"], ["import-raw", str(disk), "hostile"]):
        line = one_line(run(*args))
        assert words in line, line
    assert images(hutch_env) == [] and loops_of(disk) == []


def test_broken_disks_are_refused(small_disk: Path, hutch_env: Path, tmp_path: Path) -> None:
    cases = {}
    bad_crc = copy(small_disk, tmp_path / "crc.raw")
    with open(bad_crc, "r+b") as f:
        f.seek(1024 + 56)
        f.write(b"X")  # a byte of a partition name: the entry array's CRC no longer matches
    cases[bad_crc] = "checksum does not match"
    truncated = copy(small_disk, tmp_path / "truncated.raw")
    os.truncate(truncated, truncated.stat().st_size // 2)
    cases[truncated] = "truncated"
    not_fs = tmp_path / "nofs.raw"
    gpt_disk(not_fs, [(ROOT_X86_64, 8, False, "root")])
    cases[not_fs] = "holds no file system"
    esp_only = tmp_path / "esp.raw"
    gpt_disk(esp_only, [(ESP, 8, False, "esp")])
    cases[esp_only] = "no root partition"
    junk = tmp_path / "junk.raw"
    junk.write_bytes(os.urandom(1 << 20))
    cases[junk] = "neither a disk image"
    for disk, words in cases.items():
        for args in (["spawn", "-q", "-i", str(disk), "/bin/true"], ["import-raw", str(disk), "broken"]):
            line = one_line(run(*args))
            assert words in line, (disk.name, line)
    assert images(hutch_env) == []


def test_bad_input_to_the_raw_verbs(small_disk: Path, hutch_env: Path, tmp_path: Path) -> None:
    assert "doesn't exist" in one_line(run("spawn", "-q", "-i", str(tmp_path / "nope.raw"), "/bin/true"))
    assert "is a directory" in one_line(run("spawn", "-q", "-i", str(tmp_path), "/bin/true"))
    assert "either --directory= or --image=" in one_line(
        run("spawn", "-D", str(tmp_path), "-i", str(small_disk))
    )
    assert "Failed to open" in one_line(run("import-raw", str(tmp_path / "nope.raw")))
    assert "No image" in one_line(run("export-raw", "nope", str(tmp_path / "x.raw")))
    assert "holds the image store" in one_line(run("import-fs", str(tmp_path), "dir"))
    (tmp_path / "tree").mkdir()
    run("import-fs", str(tmp_path / "tree"), "dir", check=True)
    assert "export-tar" in one_line(run("export-raw", "dir", str(tmp_path / "x.raw")))
    assert "Invalid URL" in one_line(run("pull-raw", "ftp://x/y.raw"))
    truncated_xz = tmp_path / "cut.raw.xz"
    data = sh("xz", "-1", "-c", small_disk).stdout
    truncated_xz.write_bytes(data[: len(data) // 2])
    assert "Corrupt or truncated" in one_line(run("import-raw", str(truncated_xz), "cut"))
    assert images(hutch_env) == ["dir"] and not list(tmp_path.glob(".#*"))


# ---------------------------------------------------------------- the cloud tarball


def test_a_tarball_holding_one_disk_imports_as_a_raw_image(hutch_env: Path, tmp_path: Path) -> None:
    archive = debian_cloud(debian_image(), tmp_path / "cloud")
    r = run("import-tar", str(archive), timeout=300)
    assert r.returncode == 0, r.stderr
    listed = json.loads(run("list-images", "-o", "json", check=True).stdout)
    assert [(i["name"], i["type"]) for i in listed] == [("debian-12-genericcloud-amd64", "raw")]
    raw = hutch_env / "images/debian-12-genericcloud-amd64.raw"
    assert raw.stat().st_blocks * 512 < raw.stat().st_size  # the tar's sparse disk stayed sparse
    r = run(
        "spawn", "-q", "-M", "debian-12-genericcloud-amd64", "/bin/sh", "-c", ". /etc/os-release; echo $ID"
    )
    assert r.stdout == "debian\n", r.stderr


def test_a_supervisor_killed_mid_boot_leaves_no_loop_device(debian_disk: Path, hutch_env: Path) -> None:
    run("import-raw", str(debian_disk), "disk", check=True, timeout=120)
    p = subprocess.Popen(
        [HUTCH, "spawn", "-q", "-b", "-M", "disk", "--console=pipe"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (hutch_env / "state/machines/disk.json").exists(), 30)
        time.sleep(1)
        assert loops_of(hutch_env / "images/disk.raw")  # the boot holds its loop device
    finally:
        p.kill()
        p.wait()
    wait_for(lambda: not loops_of(hutch_env / "images/disk.raw"), 20)
    # And the image is free again: nothing of the killed run holds it.
    assert run("spawn", "-q", "-M", "disk", "/bin/true").returncode == 0
