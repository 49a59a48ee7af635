"""What hutch records about an image, kept in a root-owned file beside it, never on it.

A record `.#NAME.KIND` lives in the image's own store directory, which neither an imported archive
(extracted inside NAME) nor a container (which never sees the store) can reach; xattrs on NAME could be
written by both (hutch 0.1 kept a thin clone's source in user.hutch.lower, which an archive's `.` entry
could set). A record is trusted only if it is a regular file owned by the user hutch runs as, writable
by no one else, and if it names NAME's inode: one left by a crash never applies to a new image that
later takes the name.

Kinds: `thin` (a thin clone's source, see thin.py) and `oci` (an OCI image's config, see oci.py).
Format: the inode number on the first line, then the payload as raw bytes to the end of the file.
"""

from __future__ import annotations

from hutch.linux import posixos as os

MAX_RECORD = 1 << 20
KINDS = ("thin", "oci")
SUFFIXES = tuple("." + k for k in KINDS)
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, 0o100000, 0o040000


def record_path(image_path: str, kind: str) -> str:
    parent, base = os.path.split(image_path.rstrip("/"))
    return os.path.join(parent, f".#{base}.{kind}")


def is_record(entry: str) -> bool:
    return entry.startswith(".#") and entry.endswith(SUFFIXES)


def read(image_path: str, image_ino: int, kind: str) -> bytes | None:
    """The payload of IMAGE_PATH's record of KIND (IMAGE_INO is the image's inode), or None where
    there is no trustworthy one."""
    try:
        fd = os.open(
            record_path(image_path, kind), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        )
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
        raw = b""
        while len(raw) <= MAX_RECORD:
            more = os.read(fd, MAX_RECORD + 1 - len(raw))
            if not more:
                break
            raw += more
    except OSError:
        return None
    finally:
        os.close(fd)
    ino, sep, payload = raw.partition(b"\n")
    if not sep or not ino.isdigit() or int(ino) != image_ino:
        return None
    return payload


def write(image_path: str, image_ino: int, kind: str, payload: bytes) -> None:
    """Record PAYLOAD for the (maybe not yet renamed) image that will be IMAGE_PATH, atomically. The
    temporary file is .#NAME.KIND-XXXXXXXX, which the next operation on NAME reaps if a crash leaves it."""
    from hutch.linux.fsutil import write_atomic

    final = record_path(image_path, kind)
    write_atomic(final, b"%d\n" % image_ino + payload, 0o600, f"{final}-{os.urandom(4).hex()}")


def remove(image_path: str, kinds: tuple[str, ...] = KINDS) -> None:
    for kind in kinds:
        try:
            os.unlink(record_path(image_path, kind))
        except FileNotFoundError:
            pass


def move(old_path: str, new_path: str) -> None:
    """After a rename: the records name the inode, which a rename keeps."""
    for kind in KINDS:
        try:
            os.rename(record_path(old_path, kind), record_path(new_path, kind))
        except FileNotFoundError:
            pass


def is_stale(store_dir: str, entry: str) -> bool:
    """A record whose image is gone, or is another directory now."""
    base, _, kind = entry[2:].rpartition(".")
    image = os.path.join(store_dir, base)
    try:
        st = os.stat(image)
    except OSError:
        return True
    return st.st_mode & _S_IFMT != _S_IFDIR or read(image, st.st_ino, kind) is None
