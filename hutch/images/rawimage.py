"""A raw disk image made ready for a container: its partitions found and mounted nowhere.

`spawn -i FILE` and a NAME.raw image in the store take a GPT disk (partitions found by type, see
gpt.py), an MBR disk with one Linux partition, or a bare file-system image. Each partition to use
gets a loop device over its byte range and a detached mount (fsopen/fsmount) with nodev: the fds
are held by the supervisor, so the mounts and loop devices vanish with it, whatever ends it, and no
mount ever appears in the host's namespace. The container's root is attached from them at each boot.
"""

from __future__ import annotations

import errno

from hutch.errors import ImageError
from hutch.images import gpt
from hutch.linux import libc, loop
from hutch.linux import posixos as os

HEAD = 70000  # every superblock magic fs_type() reads lies in this much
_MBR_LINUX = 0x83
_MBR_PROTECTIVE = 0xEE


class Mounted:
    """The detached mounts of one image: ROOT_FD and, by where they go, the others (usr first)."""

    def __init__(self, path: str, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self.root_fd = -1
        self.fstype = ""
        self.extra: list[tuple[str, int]] = []
        self.loops: list[str] = []  # the devices' names (loop7): each goes with its last mount

    @property
    def root(self) -> str:
        return f"/proc/self/fd/{self.root_fd}"

    def fds(self) -> list[int]:
        return [self.root_fd, *(fd for _, fd in self.extra)]

    def close(self) -> None:
        for fd in self.fds():
            if fd >= 0:
                os.close(fd)
        self.root_fd = -1
        self.extra = []

    def wait_released(self, timeout: float = 5.0) -> bool:
        """Wait until the loop devices are gone, once every mount of them is (the container's mount
        namespace is torn down a moment after its last process): until then a file system of the
        image may still be mounted, and another machine must not mount it for writing."""
        import time

        deadline = time.monotonic() + timeout
        for name in self.loops:
            while _backing_file(name) == self.path:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
        return True


def _backing_file(name: str) -> str:
    try:
        fd = os.open(f"/sys/block/{name}/loop/backing_file", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.read(fd, 8192).decode(errors="replace").rstrip("\n")
    except OSError:
        return ""
    finally:
        os.close(fd)


def writable_file(path: str) -> bool:
    """Whether the image file itself may be written: its mode grants it (`read-only` clears the
    write bits, as machinectl does) and it is not immutable."""
    from hutch.linux.fsutil import is_immutable

    st = os.stat(path)
    return bool(st.st_mode & 0o222) and not is_immutable(path)


def looks_like_disk(head: bytes) -> bool:
    """By content: a GPT or MBR disk, or a bare file system a root may be."""
    return (
        head[512:520] == b"EFI PART"
        or head[4096:4104] == b"EFI PART"
        or gpt.fs_type(head) in gpt.MOUNTABLE
        or (head[510:512] == b"\x55\xaa" and gpt.fs_type(head) != "vfat")
    )


def check(path: str, shown: str = "") -> list[tuple[str, str]]:
    """What open_image() would mount, as (where, file system), without mounting anything: the table
    is read and checked, and each partition's superblock looked at. SHOWN names PATH in messages."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        out = []
        for where, start, length, _ in _layout(fd, shown or path, os.fstat(fd).st_size):
            fstype = _fs_of(fd, start, length, shown or path, where)
            out.append((where, fstype))
        return out
    finally:
        os.close(fd)


def _fs_of(fd: int, start: int, length: int, path: str, where: str) -> str:
    head = os.pread(fd, min(HEAD, length), start)
    fstype = gpt.fs_type(head)
    what = "root partition" if where == "/" else f"/{where} partition"
    if fstype not in gpt.MOUNTABLE:
        raise ImageError(
            f"The {what} of {path} holds {fstype or 'no file system hutch can mount'}.",
            "a root is ext4, btrfs, XFS, squashfs or EROFS",
        )
    size = gpt.fs_size(head, fstype)
    if size > length:
        raise ImageError(
            f"The {what} of {path} is cut short: its {fstype} file system needs {size} bytes, it has "
            f"{length}.",
            "the image is truncated; download or copy it again",
        )
    return fstype


def open_image(path: str, read_only: bool) -> Mounted:
    """Mount PATH's partitions nowhere. READ_ONLY is forced where the file may not be written."""
    read_only = read_only or not writable_file(path)
    try:
        fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise ImageError(f"Failed to open image {path}: {e.strerror}.") from None
    img = Mounted(path, read_only)
    try:
        size = os.fstat(fd).st_size
        for where, start, length, ro in _layout(fd, path, size):
            fstype = _fs_of(fd, start, length, path, where)
            what = "root partition" if where == "/" else f"/{where} partition"
            mfd = _mount(fd, start, length, fstype, read_only or ro, path, what, img.loops)
            if where == "/":
                img.root_fd, img.fstype = mfd, fstype
            else:
                img.extra.append((where, mfd))
        return img
    except BaseException:
        img.close()
        raise
    finally:
        os.close(fd)


def _layout(fd: int, path: str, size: int) -> list[tuple[str, int, int, bool]]:
    """(where, offset, length, read-only by the table's flag) for each partition to mount."""

    def read_at(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    try:
        parts = gpt.read_table(read_at, size)
        if parts is None:
            return _mbr_or_bare(read_at(0, HEAD), path, size)
        layout = gpt.discover(parts)
    except gpt.TableError as e:
        raise ImageError(
            f"Refusing disk image {path}: {e}.", "the file is damaged or not a disk image"
        ) from None

    def entry(where: str, p: gpt.Partition) -> tuple[str, int, int, bool]:
        return where, p.start, p.size, bool(p.flags & gpt.FLAG_READ_ONLY)

    out = [entry("/", layout.root)]
    if layout.usr is not None:
        out.append(entry("usr", layout.usr))
    out += [entry(where, p) for where, p in layout.others]
    return out


def _mbr_or_bare(head: bytes, path: str, size: int) -> list[tuple[str, int, int, bool]]:
    if gpt.fs_type(head) in gpt.MOUNTABLE:
        return [("/", 0, size, False)]
    if head[510:512] == b"\x55\xaa":
        linux = []
        for i in range(4):
            entry = head[446 + 16 * i : 462 + 16 * i]
            kind = entry[4]
            start = int.from_bytes(entry[8:12], "little") * 512
            length = int.from_bytes(entry[12:16], "little") * 512
            if kind == _MBR_PROTECTIVE:
                raise ImageError(f"Refusing disk image {path}: it has a protective MBR but no valid GPT.")
            if kind == _MBR_LINUX and length:
                if start + length > size:
                    raise ImageError(
                        f"Refusing disk image {path}: its MBR partition {i + 1} lies outside the file."
                    )
                linux.append(("/", start, length, False))
        if len(linux) == 1:
            return linux
        raise ImageError(
            f"Refusing disk image {path}: its MBR has {len(linux)} Linux partitions; one is needed as root."
        )
    if size == 0:
        raise ImageError(f"{path[0].upper()}{path[1:]} is empty.")
    raise ImageError(
        f"{path[0].upper()}{path[1:]} is neither a disk image (no GPT or MBR) nor a file-system image.",
        "a raw image is a GPT disk, an MBR disk with one Linux partition, or an ext4, btrfs, XFS, "
        "squashfs or EROFS image",
    )


def _mount(
    fd: int, start: int, length: int, fstype: str, read_only: bool, path: str, what: str, loops: list[str]
) -> int:
    read_only = read_only or fstype in ("squashfs", "erofs")
    try:
        dev, node = loop.attach(fd, start, length, read_only, name=path[-63:])
    except OSError as e:
        raise ImageError(
            f"Failed to attach a loop device for {path}: {e.strerror or e}.",
            "the host needs /dev/loop-control (modprobe loop)",
        ) from None
    loops.append(node.rsplit("/", 1)[-1])
    try:
        attrs = libc.MOUNT_ATTR_NODEV | (libc.MOUNT_ATTR_RDONLY if read_only else 0)
        return libc.fsmount_detached(
            fstype, {"source": node}, mount_flags=attrs, flags=("ro",) if read_only else ()
        )
    except OSError as e:
        hint = "the partition's file system is damaged" if e.errno in (errno.EINVAL, errno.EUCLEAN) else None
        if e.errno == errno.ENODEV:
            hint = f"this kernel has no {fstype} driver"
        raise ImageError(f"Failed to mount the {what} of {path} ({fstype}): {e.strerror}.", hint) from None
    finally:
        os.close(dev)
