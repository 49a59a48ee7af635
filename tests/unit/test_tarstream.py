"""The tar reader against what GNU tar writes (every format and sparse version), name rules,
compression detection and the output formats."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from hutch.cli import output
from hutch.images import compress, names
from hutch.images.extract import extract
from hutch.images.tarstream import FdStream, TarError, TarReader


def _members(data: bytes) -> list[tuple[str, str, int, int, list[tuple[int, int]] | None]]:
    r = TarReader(io.BytesIO(data))
    out = []
    while (m := r.next()) is not None:
        out.append((m.name, m.type, m.size, m.mtime_ns, m.sparse))
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / ("d" * 120) / ("e" * 120)).mkdir(parents=True)  # a path too long for the ustar name field
    (src / ("d" * 120) / ("e" * 120) / "file").write_text("long path\n")
    with open(src / "sparse", "wb") as f:
        f.seek(3 << 20)
        f.write(b"middle")
        f.seek(8 << 20)
        f.write(b"end")
    os.symlink("x" * 150, src / "longlink")
    os.utime(src / "sparse", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    return src


@pytest.mark.parametrize(
    "opts",
    [
        ["--format=gnu", "--sparse"],
        ["--format=posix", "--sparse", "--sparse-version=0.0"],
        ["--format=posix", "--sparse", "--sparse-version=0.1"],
        ["--format=posix", "--sparse", "--sparse-version=1.0"],
        ["--format=ustar"],
    ],
    ids=["gnu", "pax-sparse-0.0", "pax-sparse-0.1", "pax-sparse-1.0", "ustar"],
)
def test_gnu_tar_formats(tree: Path, tmp_path: Path, opts: list[str]) -> None:
    args = ["tar", *opts, "-C", str(tree), "-cf", "-", "."]
    r = subprocess.run(args, capture_output=True)
    ustar = opts == ["--format=ustar"]
    # ustar cannot hold the long names: GNU tar says so and leaves them out.
    assert (r.returncode != 0) is ustar, r.stderr
    members = {m[0]: m for m in _members(r.stdout)}
    assert (f"./{'d' * 120}/{'e' * 120}/file" in members) is not ustar
    sparse = members["./sparse"]
    assert sparse[2] == (8 << 20) + 3
    if "--sparse" in opts:
        assert sparse[4] is not None and len(sparse[4]) >= 2
    if "--format=posix" in opts:
        assert sparse[3] == 1_700_000_000_123_456_789  # PAX mtimes are exact
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stats = extract(io.BytesIO(r.stdout), fd, 1 << 40)
    finally:
        os.close(fd)
    data = (out / "sparse").read_bytes()
    assert (
        data[3 << 20 : (3 << 20) + 6] == b"middle"
        and data.endswith(b"end")
        and data.count(0) == len(data) - 9
    )
    if "--sparse" in opts:
        assert (out / "sparse").stat().st_blocks * 512 < 1 << 20
    if not ustar:
        assert (out / ("d" * 120) / ("e" * 120) / "file").read_text() == "long path\n"
    assert stats.members == len(members)


def test_fd_stream_splices_from_a_pipe(tree: Path, tmp_path: Path) -> None:
    p = subprocess.Popen(["tar", "--format=posix", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
    assert p.stdout is not None
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        extract(FdStream(p.stdout.fileno()), fd, 1 << 40)
    finally:
        os.close(fd)
    assert p.wait() == 0
    assert (out / "sparse").read_bytes()[-3:] == b"end"


def test_reader_refuses_malformed_headers() -> None:
    good = subprocess.run(["tar", "-cf", "-", "-C", "/etc", "hostname"], capture_output=True).stdout
    bad = bytearray(good)
    bad[0] ^= 1
    with pytest.raises(TarError, match="checksum"):
        _members(bytes(bad))
    with pytest.raises(TarError, match="truncated"):
        _members(good[:700])
    pax = b"30 path=../../etc/passwd\n" + b"x" * 10  # a record whose length is wrong
    with pytest.raises(TarError):
        TarReader(io.BytesIO(b""))._pax(pax, [])


@pytest.mark.parametrize(
    ("name", "ok"),
    [("deb", True), (".hidden", True), ("a.b-c_d", True), ("ünïcödé", True), ("x" * 255, True),
     ("", False), (".", False), ("..", False), ("a/b", False), (".#tmp", False), ("t\tab", False),
     ("x" * 256, False), ("bad\udcff", False), ("del\x7f", False)],
)  # fmt: skip
def test_image_names(name: str, ok: bool) -> None:
    assert names.valid_image_name(name) is ok


def test_names_from_files() -> None:
    assert names.image_name_from_path("/x/ubuntu-base-24.04-amd64.tar.gz") == "ubuntu-base-24.04-amd64"
    assert names.image_name_from_path("arch.tar.zst") == "arch"
    assert names.image_name_from_path("disk.raw") == "disk"
    assert names.image_name_from_path("/srv/tree/") == "tree"


def test_compression_detection_and_suffixes() -> None:
    assert compress.detect(b"\x1f\x8b\x08") == "gzip"
    assert compress.detect(b"BZh91AY") == "bzip2"
    assert compress.detect(b"\xfd7zXZ\x00") == "xz"
    assert compress.detect(b"\x28\xb5\x2f\xfd") == "zstd"
    assert compress.detect(b"./\x00\x00") == "uncompressed"
    assert compress.format_from_name("a.tar.zst") == "zstd" and compress.format_from_name("a.tgz") == "gzip"
    assert compress.format_from_name("a.zip") is None


def test_output_formats() -> None:
    assert output.size(None) == "n/a" and output.size(512) == "512B" and output.size(1536) == "1.5K"
    assert output.size(162 << 20) == "162.0M"
    assert output.timestamp(None) == "n/a"
    assert output.timespan_ago(1).endswith(" ago")
    buf = io.StringIO()
    output.table(["NAME", "TYPE"], [["a", "directory"]], legend=True, noun="image", out=buf)
    assert buf.getvalue() == "NAME TYPE\na    directory\n\n1 images listed.\n"


def test_raw_image_names_follow_importctl() -> None:
    assert names.raw_name_from_path("/x/debian-12-nocloud-amd64.raw.xz") == "debian-12-nocloud-amd64"
    assert names.raw_name_from_path("Fedora-Cloud-Base-41.qcow2") == "Fedora-Cloud-Base-41"
    assert names.raw_name_from_path("disk.img.zst") == "disk"
    assert names.import_name("/x/arch.tar.zst", None) == "arch"
    assert names.import_name("/x/a.raw.gz", None, raw=True) == "a"
