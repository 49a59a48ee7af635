"""Where a thin clone's source is recorded: the `thin` record beside the image (see records.py).

A thin image NAME is a directory holding an overlay's upper/ and work/, over a read-only source image
whose absolute path is the record's payload (a path may hold a newline; it ends at the end of the
file). The legacy xattr user.hutch.lower of hutch 0.1 is ignored.
"""

from __future__ import annotations

from hutch.images import records
from hutch.linux import posixos as os


def read(image_path: str, image_ino: int) -> str | None:
    """The source path of the thin image at IMAGE_PATH (whose directory has inode IMAGE_INO), or None
    where there is no trustworthy record: then IMAGE_PATH is a plain directory image."""
    lower = records.read(image_path, image_ino, "thin")
    if lower is None or not lower.startswith(b"/") or b"\0" in lower:
        return None
    return os.fsdecode(lower)


def write(image_path: str, image_ino: int, lower: str) -> None:
    records.write(image_path, image_ino, "thin", os.fsencode(lower))
