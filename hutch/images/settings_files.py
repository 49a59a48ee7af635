"""An image's `.nspawn` settings files, where systemd keeps them: NAME.nspawn in each settings
directory ($HUTCH_SETTINGS_PATH: /etc/systemd/nspawn, /run/systemd/nspawn) and next to the image.
They follow the image: clone copies them, rename renames them, remove removes them."""

from __future__ import annotations

import os

from hutch.errors import ImageError
from hutch.linux.fsutil import write_atomic
from hutch.paths import Paths


def locations(name: str, paths: Paths) -> list[str]:
    """Every place NAME's settings file may be, in the order systemd-nspawn searches them."""
    return [path for path, _ in paths.settings_files(name)]


def existing(name: str, paths: Paths) -> list[str]:
    return [p for p in locations(name, paths) if os.path.isfile(p)]


def _atomic_copy(src: str, dst: str) -> None:
    with open(src, "rb") as f:
        data = f.read()
    write_atomic(dst, data)


def copy_along(src: str, dst: str, paths: Paths) -> list[str]:
    made = []
    for path in existing(src, paths):
        target = os.path.join(os.path.dirname(path), f"{dst}.nspawn")
        if not os.path.lexists(target):
            _atomic_copy(path, target)
            made.append(target)
    return made


def rename_along(old: str, new: str, paths: Paths) -> None:
    for path in existing(old, paths):
        target = os.path.join(os.path.dirname(path), f"{new}.nspawn")
        if os.path.lexists(target):
            raise ImageError(f"Settings file {target} already exists.", "remove it, or pick another name")
    for path in existing(old, paths):
        os.rename(path, os.path.join(os.path.dirname(path), f"{new}.nspawn"))


def remove_along(name: str, paths: Paths) -> None:
    for path in existing(name, paths):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
