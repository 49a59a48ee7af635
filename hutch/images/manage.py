"""Changing images in place: remove, rename, read-only, clean. Each takes the image name's lock and the
image's path lock (held by a running container), so nothing changes under a running machine."""

from __future__ import annotations

import errno
import os

from hutch.errors import ImageError
from hutch.images import names, records, settings_files, store
from hutch.images.store import Image
from hutch.images.transfer import check_removable, reap
from hutch.linux import libc
from hutch.linux.fsutil import is_immutable, rm_rf
from hutch.paths import Paths


def remove(name: str, paths: Paths) -> Image:
    img = store.get(name, paths)
    check_removable(img, paths)
    name_lock, path_lock = store.lock_for_change(img, paths)
    try:
        # First out of sight under a hidden name, then deleted: a SIGKILL halfway leaves a hidden
        # leftover for the next operation or `clean`, never a half image under NAME.
        parent = os.path.dirname(img.path)
        hidden = os.path.join(parent, names.temp_name(img.name, "remove"))
        if img.type != "raw" and is_immutable(img.path):
            store.set_immutable(img.path, False)  # an immutable directory cannot be renamed
        try:
            os.rename(img.path, hidden)
        except OSError as e:
            raise ImageError(f"Failed to remove image '{name}': {e.strerror}.") from None
        records.remove(img.path)
        settings_files.remove_along(img.name, paths)
        rm_rf(hidden)
    finally:
        if path_lock is not None:
            path_lock.release()
        name_lock.release()
    return img


def rename(old: str, new: str, paths: Paths) -> Image:
    names.check_image_name(new)
    img = store.get(old, paths)
    if new == ".host" or img.name == ".host":
        raise ImageError("The name '.host' is reserved for the host's own root.")
    check_removable(img, paths)
    if store.find(new, paths) is not None:
        raise ImageError(f"Image '{new}' already exists.", "pick another name, or remove that image first")
    name_lock, path_lock = store.lock_for_change(img, paths)
    new_lock = None
    try:
        new_lock = store.lock_name(new, paths)
        target = os.path.join(os.path.dirname(img.path), new + (".raw" if img.type == "raw" else ""))
        immutable = img.type != "raw" and is_immutable(img.path)
        if immutable:
            store.set_immutable(img.path, False)  # an immutable directory cannot be renamed
        try:
            libc.rename2(img.path, target, libc.RENAME_NOREPLACE)
        except OSError as e:
            if immutable:
                store.set_immutable(img.path, True)
            if e.errno == errno.EEXIST:
                raise ImageError(f"Image '{new}' already exists at {target}.") from None
            raise ImageError(f"Failed to rename image '{old}': {e.strerror}.") from None
        records.move(img.path, target)
        if immutable:
            store.set_immutable(target, True)
        settings_files.rename_along(old, new, paths)
    finally:
        for lock in (new_lock, path_lock, name_lock):
            if lock is not None:
                lock.release()
    return store.get(new, paths)


def set_read_only(name: str, value: bool, paths: Paths) -> Image:
    img = store.get(name, paths)
    if img.name == ".host":
        raise ImageError("The host's image '.host' is always read-only.")
    if img.path.startswith(store.ALWAYS_READ_ONLY):
        raise ImageError(f"Image '{name}' is in {os.path.dirname(img.path)}, which is always read-only.")
    if not value:
        clones = store.thin_clones_of(img, paths)
        if clones:
            raise ImageError(
                f"Image '{name}' is the read-only source of thin clones: "
                f"{', '.join(c.name for c in clones)}.",
                "remove those first",
            )
    name_lock, path_lock = store.lock_for_change(img, paths)
    try:
        if img.type == "raw":
            mode = os.stat(img.path).st_mode & 0o7777
            os.chmod(img.path, (mode & ~0o222) if value else (mode | 0o200))
        else:
            try:
                store.set_immutable(img.path, value)
            except OSError as e:
                raise ImageError(
                    f"Failed to mark image '{name}' {'read-only' if value else 'writable'}: {e.strerror}.",
                    "the file system must support the immutable flag (chattr +i)",
                ) from None
    finally:
        if path_lock is not None:
            path_lock.release()
        name_lock.release()
    return store.get(name, paths)


def clean(paths: Paths, everything: bool = False) -> tuple[list[str], list[str]]:
    """Remove hidden images (all images with EVERYTHING) from the store, and what interrupted
    operations left behind. Returns (images removed, leftovers removed)."""
    removed: list[str] = []
    leftovers: list[str] = []
    for img in store.discover(paths, hidden=True):
        if img.name == ".host" or img.path.startswith(store.ALWAYS_READ_ONLY):
            continue
        if img.hidden or everything:
            try:
                remove(img.name, paths)
                removed.append(img.name)
            except ImageError:
                pass  # in use, or the source of thin clones: kept
    from hutch.linux.fsutil import gc_lock_files, gc_temp_dirs
    from hutch.machines import registry

    for d in paths.image_path:
        leftovers += gc_lock_files(d, lambda e: e.startswith(".#") and e.endswith(".lck"))
    registry.running(paths.state_dir, [])  # reaps the entries and lock files of dead supervisors
    leftovers += registry.gc_lock_files(paths.state_dir)
    for prefix in ("hutch-bind-", "hutch-overlay-"):  # spawn --bind=:DIR, --overlay=+...
        leftovers += gc_temp_dirs("/var/tmp", prefix)
    for d, entry in store.entries(paths):
        if records.is_record(entry) and records.is_stale(d, entry):
            try:
                os.unlink(os.path.join(d, entry))
                leftovers.append(entry)
            except OSError:
                pass
            continue
        if not entry.startswith(".#") or entry.endswith(".lck") or records.is_record(entry):
            continue
        name = entry[2:].rsplit(".", 1)[0]
        try:
            with store.lock_name(name, paths):
                leftovers += reap(d, name, paths)
        except (ImageError, OSError):
            continue
    return removed, leftovers
