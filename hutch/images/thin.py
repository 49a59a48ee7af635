"""Where a thin clone's source is recorded: a root-owned file beside the image, never on it.

A thin image NAME is a directory holding an overlay's upper/ and work/, over a read-only source image.
hutch 0.1 named the source in the xattr user.hutch.lower on NAME, which an imported archive's `.`
entry and a container's root (NAME is the root of a directory image's container) can both write: an
archive could turn itself into an overlay over any host directory. The record is now `.#NAME.thin` in
the image's own store directory, which neither an archive (extracted inside NAME) nor a container
(which never sees the store) can reach. It is trusted only if it is a regular file owned by the user
hutch runs as, writable by no one else, and if it names NAME's inode: a record left by a crash never
applies to a new image that later takes the name. The legacy xattr is ignored.

Format: the inode number on the first line, then the source's path as raw bytes (a path may hold a
newline; it ends at the end of the file).
"""

from __future__ import annotations

from hutch.linux import posixos as os

MAX_RECORD = 8192
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, 0o100000, 0o040000


def record_path(image_path: str) -> str:
    parent, base = os.path.split(image_path.rstrip("/"))
    return os.path.join(parent, f".#{base}.thin")


def is_record(entry: str) -> bool:
    return entry.startswith(".#") and entry.endswith(".thin")


def read(image_path: str, image_ino: int) -> str | None:
    """The source path of the thin image at IMAGE_PATH (whose directory has inode IMAGE_INO), or None
    where there is no trustworthy record: then IMAGE_PATH is a plain directory image."""
    try:
        fd = os.open(record_path(image_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            st.st_mode & _S_IFMT != _S_IFREG
            or st.st_uid != os.geteuid()
            or st.st_mode & 0o022
            or st.st_size > MAX_RECORD
        ):
            return None
        raw = os.read(fd, MAX_RECORD + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    ino, sep, lower = raw.partition(b"\n")
    if not sep or not ino.isdigit() or int(ino) != image_ino or not lower.startswith(b"/") or b"\0" in lower:
        return None
    return os.fsdecode(lower)


def write(image_path: str, image_ino: int, lower: str) -> None:
    """Record LOWER as the source of the (not yet renamed) image that will be IMAGE_PATH, atomically.
    The temporary file is .#NAME.thin-XXXXXXXX, which the next operation on NAME reaps if a crash
    leaves it."""
    from hutch.linux.fsutil import write_atomic

    final = record_path(image_path)
    write_atomic(final, b"%d\n" % image_ino + os.fsencode(lower), 0o600, f"{final}-{os.urandom(4).hex()}")


def remove(image_path: str) -> None:
    try:
        os.unlink(record_path(image_path))
    except FileNotFoundError:
        pass


def move(old_path: str, new_path: str) -> None:
    try:
        os.rename(record_path(old_path), record_path(new_path))
    except FileNotFoundError:
        pass


def is_stale(store_dir: str, entry: str) -> bool:
    """A record whose image is gone, or is another directory now."""
    base = entry[2:-5]
    image = os.path.join(store_dir, base)
    try:
        st = os.stat(image)
    except OSError:
        return True
    return st.st_mode & _S_IFMT != _S_IFDIR or read(image, st.st_ino) is None
