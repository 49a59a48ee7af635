"""The image store: images found along the image path, their properties, and the locks that keep two
operations (or an operation and a running container) off one image.

Kinds, as machinectl shows them: `directory` (an OS tree), `raw` (a NAME.raw disk image file) and
hutch's own `thin` (an overlay clone: NAME/upper and NAME/work over a read-only source image named by
a root-owned record beside NAME, see thin.py). `.host` is the host's own root, always read-only.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterator

from hutch.errors import ImageError
from hutch.images import osrelease, thin
from hutch.images.names import check_image_name
from hutch.linux import libc
from hutch.linux.fsutil import is_immutable, release_lock_file, set_immutable_fd, take_lock_file
from hutch.paths import Paths

CRTIME_XATTR = "user.crtime_usec"  # what systemd's image code writes and reads for directories
ALWAYS_READ_ONLY = ("/usr/", "/usr/lib/machines", "/usr/local/lib/machines")


class Image:
    __slots__ = ("crtime", "lower", "mtime", "name", "path", "read_only", "type", "usage")

    def __init__(self, name: str, path: str, type: str) -> None:
        self.name = name
        self.path = path
        self.type = type
        self.read_only = False
        self.crtime: int | None = None  # microseconds since the epoch, as systemd reports them
        self.mtime: int | None = None
        self.usage: int | None = None
        self.lower: str | None = None  # a thin image's source path

    @property
    def hidden(self) -> bool:
        return self.name.startswith(".")

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "ro": self.read_only,
            "usage": self.usage,
            "created": self.crtime,
            "modified": self.mtime,
        }


def set_immutable(path: str, on: bool) -> None:
    """chattr ±i on PATH itself: a directory image's read-only mark, as systemd sets it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        set_immutable_fd(fd, on)
    finally:
        os.close(fd)


def _usec(ns: int | None) -> int | None:
    return None if ns is None else ns // 1000


def _crtime(path: str) -> int | None:
    try:
        raw = os.getxattr(path, CRTIME_XATTR)
        if len(raw) == 8:
            return int(struct.unpack("<Q", raw)[0])
    except OSError:
        pass
    try:
        return _usec(libc.statx_btime_ns(path)) or None
    except OSError:
        return None


def set_crtime(path: str, usec: int) -> None:
    try:
        os.setxattr(path, CRTIME_XATTR, struct.pack("<Q", usec))
    except OSError:
        pass  # statx's btime serves where user xattrs do not


def _fs_read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _load(name: str, path: str, st: os.stat_result) -> Image | None:
    if stat.S_ISDIR(st.st_mode):
        lower = thin.read(path, st.st_ino)
        img = Image(name, path, "thin" if lower else "directory")
        img.lower = lower
        img.read_only = is_immutable(path) or _fs_read_only(path)
    elif stat.S_ISREG(st.st_mode) and path.endswith(".raw"):
        img = Image(name, path, "raw")
        img.read_only = not (st.st_mode & 0o222) or _fs_read_only(path)
        img.usage = st.st_blocks * 512
    else:
        return None
    if path.startswith(ALWAYS_READ_ONLY):
        img.read_only = True
    img.crtime = _crtime(path)
    img.mtime = _usec(st.st_mtime_ns)
    return img


def host_image() -> Image:
    img = Image(".host", "/", "directory")
    img.read_only = True
    st = os.stat("/")
    img.mtime = _usec(st.st_mtime_ns)
    img.crtime = _crtime("/")
    return img


def entries(paths: Paths) -> Iterator[tuple[str, str]]:
    """(directory, entry) for everything along the image path, in order, sorted within a directory."""
    for d in paths.image_path:
        try:
            listed = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue  # most of the default path does not exist on most hosts
        except OSError as e:
            # Never "No images." for a store that could not be read.
            raise ImageError(
                f"Failed to read image directory {d}: {e.strerror}.",
                "the image store is root's: run as root" if e.errno == errno.EACCES else None,
            ) from None
        for entry in listed:
            yield d, entry


def discover(paths: Paths, *, hidden: bool = False) -> list[Image]:
    """Every image along the image path, the first of a name winning, sorted by name. Temporary and
    lock files (.#...) are never images."""
    seen: dict[str, Image] = {}
    for d, entry in entries(paths):
        if entry.startswith(".#"):
            continue
        name = entry[:-4] if entry.endswith(".raw") else entry
        if name in seen or name == ".host":
            continue
        path = os.path.join(d, entry)
        try:
            st = os.stat(path)  # /run/machines holds symlinks to images: follow them
        except OSError:
            continue
        img = _load(name, path, st)
        if img is not None:
            seen[name] = img
    if hidden:
        seen.setdefault(".host", host_image())
    return sorted((i for i in seen.values() if hidden or not i.hidden), key=lambda i: i.name)


def find(name: str, paths: Paths) -> Image | None:
    if name == ".host":
        return host_image()
    check_image_name(name)
    for d in paths.image_path:
        for entry in (name, name + ".raw"):
            path = os.path.join(d, entry)
            try:
                st = os.stat(path)
            except OSError:
                continue
            img = _load(name, path, st)
            if img is not None:
                return img
    return None


def get(name: str, paths: Paths) -> Image:
    img = find(name, paths)
    if img is None:
        raise ImageError(
            f"No image '{name}' in {':'.join(paths.image_path)}.", "see 'hutch list-images --all'"
        )
    return img


def read_in_root(root: str, relpath: str, limit: int = 1 << 16) -> str | None:
    """A small file inside an image, resolved as if ROOT were / (a symlink planted in the image,
    say etc/os-release -> /etc/shadow, stays inside it); None where it cannot be read."""
    from hutch.container.rootfs import read_file_in_root

    try:
        return read_file_in_root(root, relpath, limit)
    except OSError:
        return None


def os_release(img: Image) -> dict[str, str]:
    root = img.lower if img.type == "thin" and img.lower else img.path
    if img.type == "raw":
        return _raw_os_release(img)
    return osrelease.of_tree(root)


def _raw_os_release(img: Image) -> dict[str, str]:
    """A disk image's os-release, from its partitions mounted read-only nowhere; nothing while a
    machine runs on it (a file system mounted for writing is not read from a second mount)."""
    from hutch.errors import ImageError
    from hutch.images import rawimage

    try:
        lock = lock_path(img.path, exclusive=False)
    except ImageError:
        return {}
    try:
        mounted = rawimage.open_image(img.path, read_only=True)
    except (ImageError, OSError):
        return {}
    finally:
        if lock is not None:
            lock.release()
    try:
        usr = next((f"/proc/self/fd/{fd}" for where, fd in mounted.extra if where == "usr"), "")
        text = (
            read_in_root(mounted.root, "etc/os-release")
            or read_in_root(usr or mounted.root, "lib/os-release" if usr else "usr/lib/os-release")
            or ""
        )
    finally:
        mounted.close()
    return osrelease.parse(text)


def thin_clones_of(img: Image, paths: Paths) -> list[Image]:
    real = os.path.realpath(img.path)
    return [i for i in discover(paths, hidden=True) if i.lower and os.path.realpath(i.lower) == real]


def ensure_store(paths: Paths) -> str:
    """The directory new images go to, created root-only (0700), as systemd creates /var/lib/machines:
    image trees hold setuid files and device-less copies of other systems' secrets."""
    d = paths.image_dir
    try:
        os.makedirs(d, 0o700, exist_ok=True)
        st = os.stat(d)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(d, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError as e:
        raise ImageError(f"Failed to create the image directory {d}: {e.strerror}.") from e
    return d


class Lock:
    """A kernel file lock (flock): released by the kernel when the holder dies, so never stale."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            release_lock_file(self.path, self.fd)  # removed by its last holder, as systemd's are
            self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _take(path: str, exclusive: bool, busy: str, hint: str | None) -> Lock:
    try:
        fd = take_lock_file(path, exclusive)
    except BlockingIOError:
        raise ImageError(busy, hint) from None
    return Lock(path, fd)


def lock_name(name: str, paths: Paths) -> Lock:
    """The name lock, whatever directory the image is in (upstream's image_name_lock()): two operations
    on one name never run at once."""
    d = os.path.join(paths.state_dir, "locks")
    os.makedirs(d, 0o700, exist_ok=True)
    return _take(
        os.path.join(d, f"name-{name}"),
        True,
        f"Image '{name}' is busy: another operation on it is in progress.",
        "wait for it to finish and try again",
    )


def lock_path(path: str, exclusive: bool = True) -> Lock | None:
    """The lock a running container holds on its image (.#NAME.lck next to it, as nspawn's
    image_path_lock()); None where the directory cannot hold one (read-only locations)."""
    parent, base = os.path.split(path.rstrip("/"))
    try:
        return _take(
            os.path.join(parent, f".#{base}.lck"),
            exclusive,
            f"Image '{base[:-4] if base.endswith('.raw') else base}' is in use by a running container.",
            "stop the machine first",
        )
    except OSError:
        return None


def lock_for_change(img: Image, paths: Paths) -> tuple[Lock, Lock | None]:
    """Both locks an operation that changes or removes IMG needs."""
    if img.name == ".host":
        raise ImageError("The host's image '.host' cannot be changed.")
    name_lock = lock_name(img.name, paths)
    try:
        return name_lock, lock_path(img.path)
    except BaseException:
        name_lock.release()
        raise
