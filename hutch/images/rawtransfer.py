"""Disk images in and out of the store: import-raw, export-raw, pull-raw, and the tarball that holds one
disk image (a distribution's cloud download: Debian's genericcloud .tar.xz is one sparse disk.raw).

The data is decompressed here (the format from its content) and written sparsely: blocks of zeros
become holes, so an image's free space costs nothing. What arrives is checked before it gets a name:
a partition table that rawimage accepts, a root partition holding a file system (by its superblock's
magic, without mounting it: the kernel's file-system code is not shown a download before a user asks
to run it). qcow2 is converted by qemu-img where it exists; a qcow2 file that names a backing file or
an external data file (paths on this host, which would be read into the image) is refused first.
"""

from __future__ import annotations

import os
import stat
import struct

from hutch.errors import ImageError
from hutch.images import names, rawimage, store
from hutch.images.compress import CHUNK, Reader
from hutch.images.store import Image
from hutch.images.transfer import FdWriter, NewImage, open_input, open_output
from hutch.images.unpack import Counted, FdReader
from hutch.paths import Paths

MAX_SIZE = 1 << 40  # a disk image's size as stored (its holes included)
_BLOCK = 65536
_ZERO = bytes(_BLOCK)
QCOW2_MAGIC = b"QFI\xfb"
RAW_SUFFIXES = {".xz": "xz", ".gz": "gzip", ".bz2": "bzip2", ".zst": "zstd"}


def write_sparse(src: Reader, fd: int, what: str) -> int:
    """Copy SRC into the new file FD, leaving holes for zero blocks. Returns the size."""
    from hutch.errors import io_hint
    from hutch.images import compress

    total = 0
    errors = compress.decode_errors()
    while True:
        try:
            buf = src.read(CHUNK)
        except errors as e:
            raise ImageError(
                f"Corrupt or truncated compressed data in {what}: {e}.", "download or copy the file again"
            ) from None
        if not buf:
            break
        if total + len(buf) > MAX_SIZE:
            raise ImageError(f"{what} unpacks to more than {MAX_SIZE >> 40} TiB.", "is it a disk image?")
        view = memoryview(buf)
        for off in range(0, len(buf), _BLOCK):
            block = view[off : off + _BLOCK]
            if block != _ZERO[: len(block)]:
                try:
                    os.pwrite(fd, block, total + off)
                except OSError as e:
                    raise ImageError(f"Failed to write the image: {e.strerror}.", io_hint(e.errno)) from None
        total += len(buf)
    os.ftruncate(fd, total)
    return total


def decompressed(raw: Reader, what: str) -> Reader:
    from hutch.images import compress

    return compress.opened(raw, what, "is it a disk image?")[1]


def finish(new: NewImage, what: str, shown: str = "") -> None:
    """Make the written file NEW.temp a checked raw image (qcow2 converted first). SHOWN names it in
    messages (the file WHAT names, by default)."""
    with open(new.temp, "rb") as f:
        head = f.read(512)
    if head[:4] == QCOW2_MAGIC:
        _convert_qcow2(new, head, what)
    shown = shown or "the file"
    if new.paths.image_class != "machine":
        # A confext, sysext or portable image is systemd's to check (a DDI, often verity-signed);
        # hutch only keeps it.
        os.chmod(new.temp, 0o644)
        return
    try:
        rawimage.check(new.temp, shown)
    except ImageError as e:
        msg = e.message
        prefix = f"Refusing disk image {shown}: "
        if msg.startswith(prefix):
            msg = f"{shown} is not a usable disk image: {msg[len(prefix) :]}"
        raise ImageError(f"Refusing to import {what}: {msg[0].lower()}{msg[1:]}", e.hint) from None
    os.chmod(new.temp, 0o644)


def _convert_qcow2(new: NewImage, head: bytes, what: str) -> None:
    import shutil
    import subprocess

    backing = struct.unpack_from(">Q", head, 8)[0]
    version = struct.unpack_from(">I", head, 4)[0]
    incompatible = struct.unpack_from(">Q", head, 72)[0] if version >= 3 else 0
    if backing:
        raise ImageError(
            f"Refusing to import {what}: the qcow2 image names a backing file.",
            "a backing file is a path on this host; convert it yourself with 'qemu-img convert'",
        )
    if incompatible & 4:
        raise ImageError(f"Refusing to import {what}: the qcow2 image keeps its data in an external file.")
    tool = shutil.which("qemu-img")
    if tool is None:
        raise ImageError(
            f"{what} is a qcow2 image, and qemu-img is not installed to convert it.",
            "install qemu-utils, or convert it to raw elsewhere",
        )
    out = os.path.join(os.path.dirname(new.temp), names.temp_name(new.name, "qcow2"))
    try:
        r = subprocess.run(
            [tool, "convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "64k", new.temp, out],
            capture_output=True,
            text=True,
            timeout=3600,
            stdin=subprocess.DEVNULL,
        )
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or ["failed"])[-1]
            raise ImageError(f"Failed to convert the qcow2 image {what}: {msg}")
        os.replace(out, new.temp)
    finally:
        if os.path.lexists(out):
            os.unlink(out)


def import_raw(
    path: str,
    name: str | None,
    paths: Paths,
    *,
    read_only: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> Image:
    from hutch.images.progress import Progress

    name = names.import_name(path, name, raw=True)
    with NewImage(name, paths, force=force, transfer=("import-raw", path)) as new:
        raw, size, what = open_input(path)
        try:
            new.target += ".raw"
            fd = os.open(new.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                with Progress(f"Importing {name}", size, progress) as bar:
                    write_sparse(decompressed(Counted(raw, bar), what), fd, what)
            finally:
                os.close(fd)
        finally:
            if isinstance(raw, FdReader) and raw.fd != 0:
                os.close(raw.fd)
        finish(new, what)
        return new.commit(read_only=read_only)


def pull_raw(
    url: str,
    name: str | None,
    paths: Paths,
    *,
    verify: str = "checksum",
    read_only: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> Image:
    import hashlib

    from hutch.images import download
    from hutch.images.progress import Progress

    filename = download.check_url(url, verify, "pull-raw")
    name = name or names.raw_name_from_path(filename)
    names.check_image_name(name)
    expected = download.fetch_checksum(url, filename) if verify == "checksum" else None
    with NewImage(name, paths, force=force, what="pull", transfer=("pull-raw", url)) as new:
        new.target += ".raw"
        with download.download(url) as resp:
            length = resp.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else None
            hasher = hashlib.sha256()
            counted = Counted(resp, None, hasher)
            fd = os.open(new.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                with Progress(f"Downloading {name}", size, progress) as bar:
                    counted.progress = bar
                    download.guarded_download(url, lambda: write_sparse(decompressed(counted, url), fd, url))
            finally:
                os.close(fd)
            if size is not None and counted.total != size:
                raise ImageError(
                    f"Download of {url} is truncated: {counted.total} of {size} bytes.", "try again"
                )
        download.check_digest(filename, hasher.hexdigest(), expected)
        finish(new, url)
        return new.commit(read_only=read_only)


def export_raw(
    name: str, path: str, paths: Paths, *, fmt: str | None = None, progress: bool | None = None
) -> int:
    """Write NAME's disk image to PATH (compressed as FMT, else by PATH's suffix). Returns its size."""
    from hutch.images import compress
    from hutch.images.progress import Progress

    img = store.get(name, paths)
    if img.type != "raw":
        raise ImageError(
            f"Image '{img.name}' is a {img.type} image.", "export-raw exports disk images; use export-tar"
        )
    if fmt is None:
        fmt = next((f for s, f in RAW_SUFFIXES.items() if path.endswith(s)), "uncompressed")
    if fmt not in compress.FORMATS:
        raise ImageError(
            f"Unknown compression format '{fmt}'.", "use one of: " + ", ".join(compress.FORMATS)
        )
    # Shared: a machine may run on it read-only meanwhile, but none that writes.
    lock = store.lock_path(img.path, exclusive=False)
    tmp = ""
    try:
        src = os.open(img.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            size = os.fstat(src).st_size
            out_fd, tmp, path = open_output(path)
            try:
                with Progress(f"Exporting {img.name}", size, progress) as bar:
                    sparse = fmt == "uncompressed" and stat.S_ISREG(os.fstat(out_fd).st_mode)
                    if sparse:
                        write_sparse(Counted(FdReader(src), bar), out_fd, img.path)
                    else:
                        sink = compress.Compressor(fmt, FdWriter(out_fd, path))
                        while buf := os.read(src, CHUNK):
                            sink.write(buf)
                            bar(len(buf))
                        sink.close()
                if tmp:
                    os.fsync(out_fd)
            finally:
                if out_fd != 1:
                    os.close(out_fd)
        finally:
            os.close(src)
        if tmp:
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
            tmp = ""
        return size
    finally:
        if tmp and os.path.lexists(tmp):
            os.unlink(tmp)
        if lock is not None:
            lock.release()


def take_single_disk(new: NewImage, what: str) -> bool:
    """If the tree unpacked into NEW.temp is one disk image file and nothing else (a cloud tarball),
    make that file the new image, as NAME.raw. Returns whether it did."""
    try:
        entries = os.listdir(new.temp)
    except OSError:
        return False
    if len(entries) != 1:
        return False
    inner = os.path.join(new.temp, entries[0])
    st = os.lstat(inner)
    if not stat.S_ISREG(st.st_mode):
        return False
    with open(inner, "rb") as f:
        head = f.read(rawimage.HEAD)
    if not rawimage.looks_like_disk(head):
        return False
    moved = os.path.join(os.path.dirname(new.temp), names.temp_name(new.name, "disk"))
    os.rename(inner, moved)
    os.rmdir(new.temp)
    new.temp = moved
    new.target += ".raw"
    finish(new, what, f"{entries[0]} in the archive")
    return True
