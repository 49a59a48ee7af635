"""Making new images atomically: import-tar, import-fs, pull-tar, clone; and export-tar.

Every new image is built under a hidden name next to its target (.#NAME.import-XXXX), made read-only
if asked, and renamed into place only when complete, under the image name's lock. A crash or SIGKILL
leaves only the hidden directory, which the next operation on that name (or `clean`) removes; nothing
half-made ever carries the image's name.

Tar data goes through hutch.images.unpack: decompressed there and extracted by a confined child.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from typing import Any

from hutch.errors import ImageError
from hutch.images import download, names, records, store, thin
from hutch.images.compress import Reader
from hutch.images.store import Image
from hutch.images.unpack import Counted, FdReader, extract_stream
from hutch.linux import libc
from hutch.linux.fsutil import gc_lock_files, is_immutable, rm_rf
from hutch.paths import Paths


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def looks_like_os_tree(path: str) -> bool:
    """An os-release file where systemd looks for one (not following symlinked directories)."""
    for d, f in (("etc", "os-release"), ("usr/lib", "os-release")):
        parts = d.split("/")
        dirs_real = all(_is_dir(os.path.join(path, *parts[: i + 1])) for i in range(len(parts)))
        if dirs_real and os.path.lexists(os.path.join(path, d, f)):
            return True
    return _is_dir(os.path.join(path, "usr"))


def _unwrap(temp: str, name: str) -> str:
    """A tarball that wraps the OS tree in one top-level directory: that directory becomes the image,
    as importd's import_mangle_os_tree() does."""
    if looks_like_os_tree(temp):
        return temp
    entries = os.listdir(temp)
    if len(entries) != 1 or not _is_dir(os.path.join(temp, entries[0])):
        return temp
    inner = os.path.join(temp, entries[0])
    if not looks_like_os_tree(inner):
        return temp
    moved = os.path.join(os.path.dirname(temp), names.temp_name(name, "unwrap"))
    os.rename(inner, moved)
    os.rmdir(temp)
    return moved


class NewImage:
    """The frame every image-making operation runs in: name checks, locks, a hidden build directory,
    and the final rename. Use as a context manager; call commit() when the tree is complete."""

    def __init__(
        self,
        name: str,
        paths: Paths,
        *,
        force: bool = False,
        what: str = "import",
        transfer: tuple[str, str] | None = None,
    ) -> None:
        self.name = names.check_image_name(name)
        if name == ".host":
            raise ImageError("The name '.host' is reserved for the host's own root.")
        self.paths = paths
        self.force = force
        self.what = what
        self.store_dir = ""
        self.temp = ""
        self.target = ""
        self.locks: list[store.Lock] = []
        self.replaced: Image | None = None
        self.transfer_of = transfer  # (verb, source): listed by list-transfers while it runs
        self.transfer: Any = None

    def __enter__(self) -> NewImage:
        self.store_dir = store.ensure_store(self.paths)
        self.locks.append(store.lock_name(self.name, self.paths))
        try:
            reap(self.store_dir, self.name, self.paths)
            existing = store.find(self.name, self.paths)
            if existing is not None:
                if not self.force:
                    raise ImageError(
                        f"Image '{self.name}' already exists at {existing.path}.",
                        "pick another name, or pass --force to replace it",
                    )
                if os.path.dirname(existing.path) != self.store_dir or existing.type == "raw":
                    raise ImageError(
                        f"Image '{self.name}' exists at {existing.path}, which --force does not replace.",
                        "remove it there first",
                    )
                check_removable(existing, self.paths)
                lock = store.lock_path(existing.path)
                if lock is not None:
                    self.locks.append(lock)
                self.replaced = existing
            self.target = os.path.join(self.store_dir, self.name)
            self.temp = os.path.join(self.store_dir, names.temp_name(self.name, self.what))
            if self.transfer_of is not None:
                from hutch.images.transfers import Transfer

                self.transfer = Transfer(self.paths, *self.transfer_of, self.name)
        except BaseException:
            self.release()
            raise
        return self

    def make_dir(self) -> str:
        os.mkdir(self.temp, 0o700)
        return self.temp

    def commit(
        self,
        *,
        read_only: bool = False,
        unwrap: bool = False,
        thin_lower: str | None = None,
        oci_config: bytes | None = None,
    ) -> Image:
        """Give the built tree its name. THIN_LOWER makes it a thin image over that source, OCI_CONFIG
        an OCI image with that config (see oci.py): each record is written first and names the tree's
        inode, so whichever of the two a crash leaves, the other never makes a wrong image."""
        if unwrap:
            self.temp = _unwrap(self.temp, self.name)
            _check_os_tree(self.temp, self.name, self.paths)
        store.set_crtime(self.temp, time.time_ns() // 1000)
        if thin_lower is not None:
            thin.write(self.target, os.stat(self.temp).st_ino, thin_lower)
        if oci_config is not None:
            records.write(self.target, os.stat(self.temp).st_ino, "oci", oci_config)
        # An immutable directory cannot be renamed: the read-only mark goes on after the rename, while
        # the image's path lock keeps containers off it until then.
        if self.replaced is None:
            lock = store.lock_path(self.target)
            if lock is not None:
                self.locks.append(lock)
        elif is_immutable(self.target):
            store.set_immutable(self.target, False)
        try:
            if self.replaced is not None:
                libc.rename2(self.temp, self.target, libc.RENAME_EXCHANGE)
                # The old tree now has the hidden name: remove it, nothing refers to it any more.
                rm_rf(self.temp)
            else:
                libc.rename2(self.temp, self.target, libc.RENAME_NOREPLACE)
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise ImageError(f"Image '{self.name}' appeared while it was being made.") from e
            raise
        self.temp = ""
        # Ones a crash left, or the replaced image's.
        records.remove(
            self.target, tuple(k for k, v in (("thin", thin_lower), ("oci", oci_config)) if v is None)
        )
        if read_only:
            if self.target.endswith(".raw"):
                os.chmod(self.target, os.stat(self.target).st_mode & 0o7555)
            else:
                store.set_immutable(self.target, True)
        return store.get(self.name, self.paths)

    def release(self) -> None:
        if self.transfer is not None:
            self.transfer.finish()
            self.transfer = None
        for lock in reversed(self.locks):
            lock.release()
        self.locks.clear()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self.temp:
                rm_rf(self.temp)
        finally:
            self.release()


def reap(store_dir: str, name: str, paths: Paths | None = None) -> list[str]:
    """Remove what an interrupted operation on NAME left behind. Only call with NAME's lock held: then
    no live operation owns any of it. A `remove` that was killed after hiding the image is finished
    too (with PATHS): its settings files go, so the next image of the name does not inherit them."""
    from hutch.images import settings_files

    removed: list[str] = []
    try:
        entries = os.listdir(store_dir)
    except OSError:
        return removed
    for entry in entries:
        if names.is_temp_of(entry, name):
            rm_rf(os.path.join(store_dir, entry))
            removed.append(entry)
    interrupted_remove = any(e.startswith(f".#{name}.remove-") for e in removed)
    if paths is not None and interrupted_remove and store.find(name, paths) is None:
        settings_files.remove_along(name, paths)
        records.remove(os.path.join(store_dir, name))
    return removed


def check_removable(img: Image, paths: Paths) -> None:
    if img.name == ".host":
        raise ImageError("The host's image '.host' cannot be changed or removed.")
    if img.path.startswith(store.ALWAYS_READ_ONLY):
        raise ImageError(f"Image '{img.name}' is in {os.path.dirname(img.path)}, which is read-only.")
    clones = store.thin_clones_of(img, paths)
    if clones:
        raise ImageError(
            f"Image '{img.name}' is the source of thin clones: {', '.join(c.name for c in clones)}.",
            "remove those first",
        )


def open_input(path: str) -> tuple[Reader, int | None, str]:
    if path == "-":
        return FdReader(0), None, "standard input"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"Failed to open {path}: {e.strerror}.") from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise ImageError(f"{path} is a directory.", "use 'hutch import-fs' for directory trees")
    return FdReader(fd), (st.st_size if stat.S_ISREG(st.st_mode) else None), path


def _check_os_tree(root: str, name: str, paths: Paths) -> None:
    """An archive that unpacked into something that is no OS tree (no os-release, no /usr) is refused,
    saying what it holds, rather than imported as a machine that fails only at spawn: a distribution's
    cloud tarball holds one disk image, a registry's download an OCI layout. Extensions are no trees."""
    if paths.image_class != "machine" or any(
        os.path.lexists(os.path.join(root, p)) for p in ("etc/os-release", "usr/lib/os-release", "usr")
    ):
        return
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return
    what, hint = _what_it_holds(root, entries)
    raise ImageError(
        f"The archive for '{name}' holds {what}, not an OS tree (no /usr, no os-release).", hint
    )


def _what_it_holds(root: str, entries: list[str]) -> tuple[str, str]:
    """What an archive that is no OS tree, no disk image and no OCI image holds (those three are
    imported as what they are)."""
    from hutch.text import cescape

    shown = ", ".join(cescape(e) for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (
        f"{len(entries)} entries ({shown or 'nothing'})",
        "import-tar takes a tar of a root file system (with /usr and /etc/os-release), of one disk image, "
        "of an OCI image layout, or a docker save archive; import-raw takes a disk image",
    )


def import_tar(
    path: str,
    name: str | None,
    paths: Paths,
    *,
    read_only: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> tuple[Image, dict[str, int]]:
    from hutch.images.progress import Progress

    name = names.import_name(path, name)
    with NewImage(name, paths, force=force, transfer=("import-tar", path)) as new:
        raw, size, what = open_input(path)
        try:
            new.make_dir()
            with Progress(f"Importing {name}", size, progress) as bar:
                stats = extract_stream(Counted(raw, bar), what, new.temp)
        finally:
            if isinstance(raw, FdReader) and raw.fd != 0:
                os.close(raw.fd)
        return _commit_import(new, read_only, what, stats, progress)


def import_fs(
    path: str,
    name: str | None,
    paths: Paths,
    *,
    read_only: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> Image:
    from hutch.images import tree
    from hutch.images.progress import Progress

    if not _is_dir(path) and not os.path.isdir(path):
        raise ImageError(f"{path} is not a directory.", "import-fs copies a directory tree")
    from hutch.images import oci

    name = name or names.image_name_from_path(os.path.abspath(path))
    source = os.path.realpath(path)
    store_dir = os.path.realpath(paths.image_dir)
    if store_dir == source or store_dir.startswith(source.rstrip("/") + "/"):
        raise ImageError(
            f"{path} holds the image store {paths.image_dir}: its copy would contain itself.",
            "import a directory outside the store",
        )
    if oci.kind(path) and not looks_like_os_tree(path):  # an OCI image layout: its layers make the tree
        with NewImage(name, paths, force=force, transfer=("import-fs", path)) as new:
            return commit_oci(new, os.path.realpath(path), read_only, progress)[0]
    with (
        NewImage(name, paths, force=force, transfer=("import-fs", path)) as new,
        Progress(f"Copying {name}", None, progress) as bar,
    ):
        tree.copy_tree(os.path.realpath(path), new.temp, bar)
        return new.commit(read_only=read_only)


def clone(
    src_name: str, dst_name: str, paths: Paths, *, read_only: bool = False, progress: bool | None = None
) -> Image:
    from hutch.images import settings_files, tree
    from hutch.images.progress import Progress

    src = store.get(src_name, paths)
    if src.name == ".host":
        raise ImageError("Cloning the host's root ('.host') is not supported.")
    with NewImage(dst_name, paths, what="clone") as new:
        # A shared lock on the source: a container may run read-only on it, but no writer.
        src_lock = store.lock_path(src.path, exclusive=False)
        try:
            lower = None
            if src.type == "raw":
                _copy_raw(src.path, new.temp)
                new.target += ".raw"
            elif src.type == "thin":
                lower = _clone_thin_image(src, new.temp)
            else:
                with Progress(f"Cloning {src.name}", None, progress) as bar:
                    tree.copy_tree(src.path, new.temp, bar)
        finally:
            if src_lock is not None:
                src_lock.release()
        oci_config = records.read(src.path, os.stat(src.path).st_ino, "oci")
        img = new.commit(read_only=read_only, thin_lower=lower, oci_config=oci_config)
    settings_files.copy_along(src.name, dst_name, paths)
    return img


def _copy_raw(src: str, dst: str) -> None:
    from hutch.images.tree import _Copier

    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(sfd)
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _Copier(None).data(sfd, dfd, st)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _clone_thin_image(src: Image, dst: str) -> str:
    """A copy of a thin image is another thin image over the same source, with a copy of its upper.
    Returns the source, for the new image's record."""
    from hutch.images import tree

    lower = check_thin_source(src)
    os.mkdir(dst, 0o700)
    tree.copy_tree(os.path.join(src.path, "upper"), os.path.join(dst, "upper"))
    os.mkdir(os.path.join(dst, "work"), 0o700)
    st = os.stat(src.path)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    return lower


def check_thin_source(img: Image) -> str:
    """A thin image's source, which must still be a read-only image directory."""
    lower = img.lower or ""
    if not lower or not os.path.isdir(lower):
        raise ImageError(
            f"Image '{img.name}' is a thin clone whose source {lower or '(unknown)'} is gone.",
            f"remove it with 'hutch remove {img.name}'",
        )
    return lower


def clone_thin(src_name: str, dst_name: str, paths: Paths) -> Image:
    """An O(1) clone: an overlay upper layer over SRC, which must be (and stays) read-only."""
    from hutch.images import settings_files

    src = store.get(src_name, paths)
    if src.type != "directory":
        raise ImageError(f"Image '{src.name}' is a {src.type} image; a thin clone needs a directory image.")
    if not src.read_only:
        raise ImageError(
            f"Image '{src.name}' is writable; a thin clone needs a read-only source.",
            f"make it read-only first: 'hutch read-only {src.name}'",
        )
    with NewImage(dst_name, paths, what="thin") as new:
        os.mkdir(new.temp, 0o700)
        os.mkdir(os.path.join(new.temp, "upper"), 0o755)
        os.mkdir(os.path.join(new.temp, "work"), 0o700)
        st = os.stat(src.path)
        os.chown(os.path.join(new.temp, "upper"), st.st_uid, st.st_gid)
        os.chmod(os.path.join(new.temp, "upper"), stat.S_IMODE(st.st_mode))
        img = new.commit(thin_lower=os.path.realpath(src.path))
    settings_files.copy_along(src.name, dst_name, paths)
    return img


def export_tar(
    name: str, path: str, paths: Paths, *, fmt: str | None = None, progress: bool | None = None
) -> dict[str, int]:
    from hutch.images import compress, export
    from hutch.images.progress import Progress

    img = store.get(name, paths)
    if img.type == "raw":
        raise ImageError(f"Image '{name}' is a raw disk image.", "export-tar exports directory images")
    if fmt is None:
        fmt = "uncompressed" if path == "-" else (compress.format_from_name(path) or "uncompressed")
    if fmt not in compress.FORMATS:
        raise ImageError(
            f"Unknown compression format '{fmt}'.", "use one of: " + ", ".join(compress.FORMATS)
        )
    lock = store.lock_path(img.path, exclusive=False) if img.name != ".host" else None
    tmp = ""
    try:
        out_fd, tmp, path = open_output(path)
        try:
            sink = compress.Compressor(fmt, FdWriter(out_fd, path))
            with Progress(f"Exporting {name}", None, progress) as bar:
                root = _root_of(img)
                stats = export.write_tar(root, sink, bar)
            sink.close()
            if tmp:
                os.fsync(out_fd)
        finally:
            if out_fd != 1:
                os.close(out_fd)
        if tmp:
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
            tmp = ""
        return stats
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if lock is not None:
            lock.release()


def open_output(path: str) -> tuple[int, str, str]:
    """Where export-tar writes: (fd, temporary name or "", final path). A regular file (or a new one)
    is written under a hidden name and renamed over the target when complete, through a symlink to
    where it points; anything else that exists (a device such as /dev/null, a FIFO, a socket's
    reader) is written into as tar does, never renamed over."""
    if path == "-":
        return 1, "", path
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ImageError(f"Failed to open {path}: {e.strerror}.") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path} is a directory.", "name the file to write, or '-' for standard output")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            return os.open(target, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY), "", target
        except OSError as e:
            raise ImageError(f"Failed to open {path}: {e.strerror}.") from None
    d, base = os.path.split(target)
    # What killed exports to this path left: files no live export holds the lock of.
    gc_lock_files(d, lambda e: e.startswith(f".#{base}.export-"))
    tmp = os.path.join(d, names.temp_name(base, "export"))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ImageError(f"Failed to create {path}: {e.strerror}.") from None
    fcntl.flock(fd, fcntl.LOCK_EX)  # while held, no other export takes this file for a leftover
    return fd, tmp, target


def _root_of(img: Image) -> str:
    if img.type == "thin":
        raise ImageError(
            f"Image '{img.name}' is a thin clone.",
            f"clone it to a full image first: 'hutch clone {img.name} NEW'",
        )
    return img.path


class FdWriter:
    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def write(self, data: bytes, /) -> int:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as e:  # a write's OSError names no file
            from hutch.errors import io_hint

            raise ImageError(f"Failed to write {self.path}: {e.strerror}.", io_hint(e.errno)) from None
        return len(data)


def pull_tar(
    url: str,
    name: str | None,
    paths: Paths,
    *,
    verify: str = "checksum",
    read_only: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> tuple[Image, dict[str, int]]:
    import hashlib

    from hutch.images.progress import Progress

    filename = download.check_url(url, verify, "pull-tar")
    if name is None:
        name = names.image_name_from_path(filename)
    names.check_image_name(name)
    expected = download.fetch_checksum(url, filename) if verify == "checksum" else None
    with NewImage(name, paths, force=force, what="pull", transfer=("pull-tar", url)) as new:
        with download.download(url) as resp:
            length = resp.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else None
            new.make_dir()
            hasher = hashlib.sha256()
            counted = Counted(resp, None, hasher)
            with Progress(f"Downloading {name}", size, progress) as bar:
                counted.progress = bar
                stats = download.guarded_download(url, lambda: extract_stream(counted, url, new.temp))
            if size is not None and counted.total != size:
                raise ImageError(
                    f"Download of {url} is truncated: {counted.total} of {size} bytes.", "try again"
                )
        download.check_digest(filename, hasher.hexdigest(), expected)
        return _commit_import(new, read_only, url, stats, progress)


def _commit_import(
    new: NewImage, read_only: bool, what: str, stats: dict[str, int], progress: bool | None = None
) -> tuple[Image, dict[str, int]]:
    """A tarball that held one disk image becomes a raw image, one that held an OCI image layout or a
    docker save archive the tree of its layers; any other is an OS tree or refused."""
    from hutch.images import oci, rawtransfer

    if rawtransfer.take_single_disk(new, what):
        return new.commit(read_only=read_only), stats
    if oci.kind(new.temp) and not looks_like_os_tree(new.temp):
        return commit_oci(new, new.temp, read_only, progress)
    return new.commit(read_only=read_only, unwrap=True), stats


def commit_oci(
    new: NewImage, layout: str, read_only: bool, progress: bool | None = None
) -> tuple[Image, dict[str, int]]:
    """Build the tree of the OCI image (or docker save archive) at LAYOUT and commit it as NEW. A
    LAYOUT that is NEW's own build directory (an unpacked archive) is removed once used."""
    from hutch.images import oci
    from hutch.images.progress import Progress

    image = oci.resolve(layout)
    rootfs = os.path.join(os.path.dirname(new.temp), names.temp_name(new.name, "rootfs"))
    os.mkdir(rootfs, 0o700)
    unpacked = new.temp if layout == new.temp else ""
    new.temp = rootfs  # from here, a failure removes the tree being built
    try:
        with Progress(f"Applying {len(image.layers)} layers", image.size(), progress) as bar:
            stats = oci.build(image, rootfs, bar)
    finally:
        if unpacked:
            rm_rf(unpacked)
    _check_os_tree(rootfs, new.name, new.paths)
    return new.commit(read_only=read_only, oci_config=oci.process_record(image.config)), stats
