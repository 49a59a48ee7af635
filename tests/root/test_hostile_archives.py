"""Hostile tarballs, one class of security.md §3 each: every test asserts the refusal (or the stripped
result) and that nothing outside the image store changed and nothing half-made is left in it."""

from __future__ import annotations

import io
import lzma
import os
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import run, tree_snapshot

Member = tuple[tarfile.TarInfo, bytes | None]


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> Member:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = int(kw.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644))  # type: ignore[call-overload]
    ti.mtime = 1_700_000_000
    for k, v in kw.items():
        setattr(ti, k, v)
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
        return ti, data
    return ti, None


def f(name: str, data: bytes = b"x\n", **kw: object) -> Member:
    return _entry(name, tarfile.REGTYPE, data, **kw)


def d(name: str, **kw: object) -> Member:
    return _entry(name, tarfile.DIRTYPE, **kw)


def sym(name: str, target: str) -> Member:
    return _entry(name, tarfile.SYMTYPE, linkname=target)


def hard(name: str, target: str) -> Member:
    return _entry(name, tarfile.LNKTYPE, linkname=target)


OS_TREE = [d("."), d("etc"), f("etc/os-release", b"ID=hostile\n"), d("usr"), d("usr/bin")]


def tar_bytes(members: list[Member], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_body(members: list[Member]) -> bytes:
    """The members without the end-of-archive blocks, to append hand-made members to."""
    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT)  # noqa: SIM115 (never closed: no end)
    for ti, data in members:
        t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()[: t.offset]


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """Canaries next to the store: a hostile archive must leave them exactly as they are."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "target").write_text("canary\n")
    (o / "dir").mkdir()
    before = tree_snapshot(o)
    yield o
    assert tree_snapshot(o) == before, "an import changed files outside the store"


def do_import(
    tmp_path: Path, data: bytes, name: str = "img", *opts: str
) -> subprocess.CompletedProcess[str]:
    archive = tmp_path / "archive.tar"
    archive.write_bytes(data)
    return run("import-tar", *opts, str(archive), name)


def store_entries(hutch_env: Path) -> list[str]:
    return sorted(e for e in os.listdir(hutch_env / "images") if not e.endswith(".lck"))


def refused(r: subprocess.CompletedProcess[str], hutch_env: Path, *words: str) -> None:
    assert r.returncode != 0, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one clear line
    for w in words:
        assert w in lines[0], lines[0]
    assert store_entries(hutch_env) == [], "a refused import left something in the store"


def test_dotdot_traversal(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    for name in ("../outside/target", "etc/../../outside/new", "usr/bin/../../../../outside/dir/x"):
        r = do_import(tmp_path, tar_bytes([*OS_TREE, f(name, b"pwned\n")]))
        refused(r, hutch_env, "points outside the image with '..'")


def test_absolute_names_are_stripped(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    target = str(outside / "abs-new")
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f(target, b"inside\n")]))
    assert r.returncode == 0, r.stderr
    assert "leading '/' stripped from 1 names" in r.stderr
    assert (hutch_env / "images/img" / target.lstrip("/")).read_text() == "inside\n"


@pytest.mark.parametrize(
    "members",
    [
        [sym("link", "/OUTSIDE"), f("link/evil")],  # symlink, then write through it
        [sym("link", "../../../../../../../../OUTSIDE"), f("link/evil")],
        [d("sub"), sym("sub", "/OUTSIDE"), f("sub/evil")],  # a directory swapped for a symlink
        [sym("a", "b"), sym("b", "/OUTSIDE/dir"), f("a/evil")],  # a chain
        [f("file"), f("file/evil")],  # a file where a directory should be
    ],
    ids=["symlink-abs", "symlink-rel", "swap-dir", "chain", "file-as-dir"],
)
def test_write_through_symlink(
    tmp_path: Path, hutch_env: Path, outside: Path, members: list[Member]
) -> None:
    fixed = []
    for ti, data in members:
        ti.linkname = ti.linkname.replace("/OUTSIDE", str(outside))
        fixed.append((ti, data))
    r = do_import(tmp_path, tar_bytes([*OS_TREE, *fixed]))
    refused(r, hutch_env, "which is a symlink or a file, not a directory")


def test_same_name_file_replaces_symlink(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    """A symlink, then a file of the same name: the file replaces the link and never writes through it."""
    members = [
        *OS_TREE,
        sym("etc/passwd", str(outside / "target")),
        f("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
    ]
    r = do_import(tmp_path, tar_bytes(members))
    assert r.returncode == 0, r.stderr
    p = hutch_env / "images/img/etc/passwd"
    assert not p.is_symlink() and p.read_text().startswith("root:")


def test_hardlink_escapes(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    r = do_import(tmp_path, tar_bytes([*OS_TREE, hard("h", "../outside/target")]))
    refused(r, hutch_env, "'..'")
    # An absolute target is looked up inside the image, where it does not exist.
    r = do_import(tmp_path, tar_bytes([*OS_TREE, hard("h", str(outside / "target"))]))
    refused(r, hutch_env, "does not contain")
    # Through a symlink that leads out.
    r = do_import(tmp_path, tar_bytes([*OS_TREE, sym("l", str(outside)), hard("h", "l/target")]))
    refused(r, hutch_env, "not a directory")
    r = do_import(tmp_path, tar_bytes([*OS_TREE, hard("h", "etc")]))
    refused(r, hutch_env, "hard link to a directory")


def test_hardlink_to_symlink_links_the_symlink(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    members = [*OS_TREE, sym("s", str(outside / "target")), hard("h", "s"), f("h", b"overwrite\n")]
    r = do_import(tmp_path, tar_bytes(members))
    assert r.returncode == 0, r.stderr
    img = hutch_env / "images/img"
    assert os.readlink(img / "s") == str(outside / "target")
    assert (img / "h").read_text() == "overwrite\n"


@pytest.mark.parametrize(
    "name", [".", "./", "", "/", "//."], ids=["dot", "dot-slash", "empty", "slash", "slashdot"]
)
def test_names_that_mean_the_root(tmp_path: Path, hutch_env: Path, outside: Path, name: str) -> None:
    r = do_import(tmp_path, tar_bytes([*OS_TREE, sym(name, str(outside))]))
    refused(r, hutch_env, "replace the image's root")


def test_trailing_slash_file(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f("etc/motd/", b"hi\n")]))
    assert r.returncode == 0, r.stderr
    assert (hutch_env / "images/img/etc/motd").read_text() == "hi\n"


def test_two_step_symlink_then_write(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    """GNU tar's CVE-2025-45582: a first archive plants a symlink, a second writes through it."""
    r = do_import(tmp_path, tar_bytes([*OS_TREE, sym("x", str(outside))]))
    assert r.returncode == 0, r.stderr
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f("x/target", b"pwned\n")]), "img", "--force")
    assert r.returncode == 0, r.stderr  # a fresh tree each time: x is a plain directory now
    assert (hutch_env / "images/img/x/target").read_text() == "pwned\n"


def test_path_max_realpath_confusion(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    """The CVE-2025-4517 shape: long names and symlink chains that push realpath() past PATH_MAX,
    then a link out. Nothing here resolves paths, so it fails where the walk meets the first symlink."""
    comp = "d" * 247
    members: list[Member] = [*OS_TREE]
    path = ""
    for i in range(16):
        path = f"{path}{comp}/" if path else f"{comp}/"
        members.append(d(path.rstrip("/")))
        members.append(sym(f"l{i}", path.rstrip("/")))
    members.append(sym("escape", "l15/" + "../" * 17 + str(outside).lstrip("/")))
    members.append(f("escape/target", b"pwned\n"))
    r = do_import(tmp_path, tar_bytes(members, tarfile.PAX_FORMAT))
    refused(r, hutch_env)
    assert "symlink" in r.stderr or "longer than" in r.stderr


def test_device_nodes_are_dropped(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    members = [
        *OS_TREE,
        d("dev"),
        _entry("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o666),
        _entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666),
        _entry("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
    ]
    r = do_import(tmp_path, tar_bytes(members))
    assert r.returncode == 0, r.stderr
    assert "2 device nodes skipped" in r.stderr
    dev = hutch_env / "images/img/dev"
    assert sorted(os.listdir(dev)) == ["fifo"] and stat.S_ISFIFO(os.lstat(dev / "fifo").st_mode)


def test_setuid_modes_and_caps(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    v2cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep, v2
    ping = f("usr/bin/ping", b"\x7fELF", mode=0o755)
    ping[0].pax_headers = {
        "SCHILY.xattr.security.capability": v2cap.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0",
    }
    members = [
        d(".", mode=0o6777),
        *OS_TREE[1:],
        f("usr/bin/su", b"su", mode=0o4755),
        f("usr/bin/evil", b"evil", mode=0o6777),
        ping,
    ]
    r = do_import(tmp_path, tar_bytes(members, tarfile.PAX_FORMAT))
    assert r.returncode == 0, r.stderr
    img = hutch_env / "images/img"
    assert stat.S_IMODE(os.stat(img).st_mode) == 0o755  # the root: never world-writable or setuid
    assert stat.S_IMODE(os.stat(img / "usr/bin/su").st_mode) == 0o4755  # an OS needs its setuid tools
    assert stat.S_IMODE(os.stat(img / "usr/bin/evil").st_mode) == 0o777  # but not writable ones
    # Stored unshifted, a v2 capability would be effective for the host's root user namespace.
    assert os.listxattr(img / "usr/bin/ping") == []
    assert "2 extended attributes dropped" in r.stderr
    assert "file capabilities dropped from 1 files" in r.stderr
    # Whatever an image holds, no host user can reach it: the store is root-only.
    assert stat.S_IMODE(os.stat(hutch_env / "images").st_mode) == 0o700


def test_numeric_owners_not_names(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    members = [
        *OS_TREE,
        f("a", uid=1234, gid=4321, uname="root", gname="root"),
        f("b", uid=0, gid=0, uname="nobody", gname="nogroup"),
    ]
    r = do_import(tmp_path, tar_bytes(members))
    assert r.returncode == 0, r.stderr
    img = hutch_env / "images/img"
    assert (os.stat(img / "a").st_uid, os.stat(img / "a").st_gid) == (1234, 4321)
    assert (os.stat(img / "b").st_uid, os.stat(img / "b").st_gid) == (0, 0)


def _bomb(size: int, compress: Callable[[bytes], bytes], flush: Callable[[], bytes]) -> bytes:
    header = tarfile.TarInfo("etc/zeros")
    header.size = size
    out = [compress(tar_body(OS_TREE)), compress(header.tobuf(tarfile.GNU_FORMAT))]
    chunk = bytes(16 << 20)
    for _ in range(size // len(chunk)):
        out.append(compress(chunk))
    out.append(compress(bytes(1024)))
    out.append(flush())
    return b"".join(out)


@pytest.fixture
def small_store(hutch_env: Path) -> Iterator[Path]:
    store = hutch_env / "images"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(store)], check=True)
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=True)


def test_gzip_bomb(tmp_path: Path, hutch_env: Path, outside: Path, small_store: Path) -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = _bomb(1 << 30, c.compress, c.flush)
    assert len(data) < 2 << 20  # a thousand to one
    r = do_import(tmp_path, data)
    refused(r, hutch_env, "etc/zeros", "bytes free")


def test_xz_bomb(tmp_path: Path, hutch_env: Path, outside: Path, small_store: Path) -> None:
    c = lzma.LZMACompressor(preset=0)
    data = _bomb(256 << 20, c.compress, c.flush)
    r = do_import(tmp_path, data)
    refused(r, hutch_env, "etc/zeros", "bytes free")


def _gnu_sparse(name: str, real_size: int, data: bytes) -> bytes:
    """An old-GNU sparse member ('S'): DATA stored once, placed at the end of REAL_SIZE bytes."""
    h = bytearray(512)
    h[0 : len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % len(data)
    h[136:148] = b"%011o\0" % 1_700_000_000
    h[156:157] = b"S"
    h[257:265] = b"ustar  \0"
    num = tarfile.itn  # base-256 where octal does not fit, as GNU tar writes it
    h[386:398] = num(real_size - len(data), 12, tarfile.GNU_FORMAT)  # sparse[0].offset
    h[398:410] = num(len(data), 12, tarfile.GNU_FORMAT)  # sparse[0].numbytes
    h[483:495] = num(real_size, 12, tarfile.GNU_FORMAT)  # realsize
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + data + bytes(-len(data) % 512)


def test_huge_sparse_member(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    body = tar_body(OS_TREE) + _gnu_sparse("etc/sparse", 1 << 40, b"end" * 100) + bytes(1024)
    r = do_import(tmp_path, body)
    refused(r, hutch_env, "etc/sparse", "bytes free")
    # A sparse file of a sane size keeps its holes.
    body = tar_body(OS_TREE) + _gnu_sparse("etc/sparse", 64 << 20, b"e" * 512) + bytes(1024)
    r = do_import(tmp_path, body)
    assert r.returncode == 0, r.stderr
    p = hutch_env / "images/img/etc/sparse"
    assert p.stat().st_size == 64 << 20 and p.stat().st_blocks * 512 < 1 << 20
    with open(p, "rb") as fh:
        fh.seek((64 << 20) - 512)
        assert fh.read() == b"e" * 512


def test_many_files(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    members = [*OS_TREE] + [d(f"many/{i // 1000}") for i in range(0, 100_000, 1000)]
    members += [f(f"many/{i // 1000}/{i}", b"") for i in range(100_000)]
    r = do_import(tmp_path, tar_bytes(members))
    assert r.returncode == 0, r.stderr
    assert sum(len(os.listdir(p)) for p in (hutch_env / "images/img/many").iterdir()) == 100_000
    r = run("remove", "img")
    assert r.returncode == 0 and store_entries(hutch_env) == []


def test_deep_nesting(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    deep = "/".join(["a"] * 1500)
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f(deep + "/file")], tarfile.PAX_FORMAT))
    refused(r, hutch_env, "levels deep")
    ok = "/".join(["a"] * 120)
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f(ok + "/file")], tarfile.PAX_FORMAT))
    assert r.returncode == 0, r.stderr
    run("remove", "img", check=True)  # removal walks it without recursion
    assert store_entries(hutch_env) == []


def test_name_and_path_limits(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f("n" * 256)], tarfile.PAX_FORMAT))
    refused(r, hutch_env, "longer than 255 bytes")
    long_path = "/".join(["p" * 200] * 21)
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f(long_path)], tarfile.PAX_FORMAT))
    refused(r, hutch_env, "longer than 4096 bytes")
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f("n" * 255)], tarfile.PAX_FORMAT))
    assert r.returncode == 0, r.stderr


def test_hostile_member_and_file_names(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    weird = ["-rf", "new\nline", "tab\there", "esc\x1b[31mred", "bad-utf8-\udcff", "--force", "$(reboot)"]
    r = do_import(tmp_path, tar_bytes([*OS_TREE, *[f(n) for n in weird]], tarfile.PAX_FORMAT))
    assert r.returncode == 0, r.stderr
    got = set(os.listdir(os.fsencode(hutch_env / "images/img")))
    assert {os.fsencode(n) for n in weird} <= got
    # A refusal that names such a member stays on one line, escaped.
    run("remove", "img", check=True)
    r = do_import(tmp_path, tar_bytes([*OS_TREE, f("x\n\x1b[2J/../../evil")], tarfile.PAX_FORMAT))
    refused(r, hutch_env, "\\n", "\\x1b")
    # Hostile archive file names: never a shell, and the derived image name is checked.
    archive = tmp_path / "--force\n.tar"
    archive.write_bytes(tar_bytes(OS_TREE))
    r = run("import-tar", str(archive))
    refused(r, hutch_env, "Invalid image name")
    r = run("import-tar", str(archive), "fine")
    assert r.returncode == 0, r.stderr


def _corrupt_variants() -> dict[str, bytes]:
    import bz2

    import zstandard

    plain = tar_bytes([*OS_TREE, f("usr/bin/tool", os.urandom(200_000))])
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    gzd = gz.compress(plain) + gz.flush()
    xz = lzma.compress(plain)
    bz = bz2.compress(plain)
    zs = zstandard.ZstdCompressor(write_checksum=True).compress(plain)

    def flip(b: bytes, at: int) -> bytes:
        return b[:at] + bytes([b[at] ^ 0x55]) + b[at + 1 :]

    bad_header = bytearray(plain)
    bad_header[plain.index(b"usr/bin/tool") + 2] ^= 0xFF  # a header's name: its checksum no longer matches
    return {
        "gzip-crc": gzd[:-8] + bytes([gzd[-8] ^ 1]) + gzd[-7:],
        "gzip-truncated": gzd[: len(gzd) // 2],
        "gzip-garbage-after": gzd + b"GARBAGE!",
        "xz-truncated": xz[: len(xz) - 100],
        "xz-flipped": flip(xz, len(xz) // 2),
        "bzip2-truncated": bz[: len(bz) // 2],
        "bzip2-flipped": flip(bz, len(bz) // 2),
        "zstd-truncated": zs[: len(zs) - 50],
        "zstd-flipped": flip(zs, len(zs) // 2),
        "tar-bad-header": bytes(bad_header),
        "tar-garbage-after": plain + b"\x01" * 4096,
        "not-an-archive": b"Hello, this is just text.\n" * 100,
    }


@pytest.mark.parametrize("variant", list(_corrupt_variants()))
def test_corrupt_streams(tmp_path: Path, hutch_env: Path, outside: Path, variant: str) -> None:
    r = do_import(tmp_path, _corrupt_variants()[variant])
    refused(r, hutch_env)
    assert any(w in r.stderr for w in ("Corrupt", "Malformed", "truncated")), r.stderr


def test_tree_with_symlinks_to_the_host_at_runtime(tmp_path: Path, hutch_env: Path, outside: Path) -> None:
    """An OS tree whose config files and mount points are symlinks to host paths: importing keeps them
    as they are, and starting the container never writes through them."""
    import shutil

    busybox = shutil.which("busybox")
    assert busybox
    members = [
        *OS_TREE,
        f("usr/bin/busybox", Path(busybox).read_bytes(), mode=0o755),
        sym("usr/bin/sh", "busybox"),
        sym("usr/bin/cat", "busybox"),
        sym("bin", "usr/bin"),
        sym("etc/resolv.conf", str(outside / "target")),
        sym("etc/localtime", str(outside / "target")),
        sym("etc/hostname", str(outside / "target")),
        sym("tmp", str(outside / "dir")),
        sym("run", str(outside / "dir")),
    ]
    r = do_import(tmp_path, tar_bytes(members))
    assert r.returncode == 0, r.stderr
    r = run(
        "spawn",
        "-q",
        "-M",
        "img",
        "--resolv-conf=copy-host",
        "--timezone=copy",
        "/bin/cat",
        "/etc/os-release",
    )
    assert "ID=hostile" in r.stdout or r.returncode != 0, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 1


def test_settings_file_in_archive_is_not_a_settings_file(
    tmp_path: Path, hutch_env: Path, outside: Path
) -> None:
    members = [*OS_TREE, f("img.nspawn", b"[Exec]\nPrivateUsers=no\n"), f("../img.nspawn", b"[Exec]\n")]
    r = do_import(tmp_path, tar_bytes(members))
    refused(r, hutch_env, "'..'")
    r = do_import(tmp_path, tar_bytes(members[:-1]))
    assert r.returncode == 0, r.stderr
    assert not (hutch_env / "images/img.nspawn").exists()
    assert (hutch_env / "images/img/img.nspawn").exists()


def _images_json() -> dict[str, str]:
    import json

    r = run("list-images", "-o", "json", check=True)
    return {i["name"]: i["type"] for i in json.loads(r.stdout)}


@pytest.mark.parametrize("value", ["HOST", b"\xff\xfe/not-utf8"])
def test_hutch_metadata_in_an_archive_is_dropped(
    tmp_path: Path, hutch_env: Path, outside: Path, value: str | bytes
) -> None:
    """hutch 0.1 read a thin image's source from user.hutch.lower on the image: an archive whose `.`
    carried it (plus upper/ and work/) imported as an overlay over any host directory, and bytes that
    are not UTF-8 there broke every image verb."""
    raw = str(outside).encode() if value == "HOST" else value
    assert isinstance(raw, bytes)
    root = d(".")
    root[0].pax_headers = {
        "SCHILY.xattr.user.hutch.lower": raw.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.hutch.anything": "x",
        "SCHILY.xattr.user.keep": "kept",
    }
    members = [root, *OS_TREE[1:], d("upper"), f("upper/probe"), d("work")]
    r = do_import(tmp_path, tar_bytes(members, tarfile.PAX_FORMAT))
    assert r.returncode == 0, r.stderr
    img = hutch_env / "images/img"
    assert sorted(os.listxattr(img)) == ["user.crtime_usec", "user.keep"]  # crtime: systemd's, set by hutch
    assert "2 extended attributes dropped" in r.stderr
    assert _images_json() == {"img": "directory"}
    for verb in ("image-status", "show-image"):
        r = run(verb, "img")
        assert r.returncode == 0 and "Source" not in r.stdout, r.stdout + r.stderr
    assert run("remove", "img").returncode == 0
    assert store_entries(hutch_env) == []


def test_thin_record_only_from_hutch(hutch_env: Path, outside: Path) -> None:
    """A container's root can set any user.* xattr on its own root directory (a directory image's
    root is the image): that never makes it thin. The record beside the image counts only if hutch
    wrote it: owned by hutch's user, writable by no one else, naming the image's inode."""
    img = hutch_env / "images/img"
    (img / "upper").mkdir(parents=True)
    (img / "work").mkdir()
    os.setxattr(img, "user.hutch.lower", str(outside).encode())
    assert _images_json() == {"img": "directory"}
    record = hutch_env / "images/.#img.thin"
    good = b"%d\n%s" % (os.stat(img).st_ino, str(outside).encode())
    for content, uid, mode in (
        (b"%d\n%s" % (os.stat(img).st_ino + 1, str(outside).encode()), 0, 0o600),  # another inode
        (good, 65534, 0o600),  # not hutch's
        (good, 0, 0o666),  # writable by others
        (b"\xff\n\xfe", 0, 0o600),  # garbage
    ):
        record.write_bytes(content)
        os.chown(record, uid, uid)
        os.chmod(record, mode)
        assert _images_json() == {"img": "directory"}, (content, uid, mode)
    record.write_bytes(good)
    os.chown(record, 0, 0)
    os.chmod(record, 0o600)
    assert _images_json() == {"img": "thin"}
    # A thin image whose source is gone: clone refuses (and makes nothing), remove takes the record.
    record.write_bytes(b"%d\n%s" % (os.stat(img).st_ino, str(outside / "gone").encode()))
    r = run("clone", "img", "copy")
    assert r.returncode == 1 and "source" in r.stderr and "is gone" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _images_json() == {"img": "thin"}
    r = run("spawn", "-M", "img", "/bin/true")
    assert r.returncode != 0 and "is gone" in r.stderr, r.stderr
    assert run("remove", "img").returncode == 0
    assert not record.exists()
