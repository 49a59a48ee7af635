"""Image names: upstream's image_name_is_valid() rules, and the hidden names hutch builds under."""

from __future__ import annotations

import os

from hutch.errors import ImageError

NAME_MAX = 255


def valid_image_name(name: str) -> bool:
    """A valid file name (not empty, '.', '..', no '/', at most NAME_MAX bytes), valid UTF-8, no
    control characters, and not starting with '.#' (the prefix of temporary and lock files)."""
    if not name or name in (".", "..") or "/" in name:
        return False
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 argument
        return False
    if len(raw) > NAME_MAX:
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return False
    return not name.startswith(".#")


def check_image_name(name: str) -> str:
    if not valid_image_name(name):
        raise ImageError(
            f"Invalid image name {name!r}.",
            "a name is a file name: no '/', no control characters, not '.', '..' or '.#...', "
            "at most 255 bytes",
        )
    return name


def temp_name(name: str, what: str) -> str:
    """A hidden name next to the target: never listed as an image, reaped by `clean` and by the next
    operation on NAME once no process holds it."""
    return f".#{name}.{what}-{os.urandom(6).hex()}"


def is_temp_of(entry: str, name: str) -> bool:
    # Lock files and image records (.thin, .oci) belong to live images, not to interrupted operations.
    return entry.startswith(f".#{name}.") and not entry.endswith((".lck", ".thin", ".oci"))


def image_name_from_path(path: str) -> str:
    """The last component, without a '.raw' suffix and trailing slashes; tarball suffixes are dropped
    too, as importctl does when the name is derived from a file name."""
    base = os.path.basename(path.rstrip("/")) or path
    for suffix in (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tar.zst", ".tzst", ".tar"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    if base.endswith(".raw") and len(base) > 4:
        return base[:-4]
    return base


_COMPRESSION_SUFFIXES = (".xz", ".gz", ".bz2", ".zst")


def raw_name_from_path(path: str) -> str:
    """importctl's rule: the file name without compression and disk-image suffixes."""
    base = os.path.basename(path.rstrip("/")) or path
    for suffix in _COMPRESSION_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    for suffix in (".raw", ".qcow2", ".img"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def import_name(path: str, name: str | None, raw: bool = False) -> str:
    """The name an import of PATH makes: NAME, else the file's (as image_name_from_path, or with RAW
    raw_name_from_path derive it); standard input has none."""
    if name is None:
        if path == "-":
            raise ImageError("An image name is needed when importing from standard input.")
        name = raw_name_from_path(path) if raw else image_name_from_path(path)
    return check_image_name(name)
