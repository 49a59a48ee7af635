"""Loop devices through /dev/loop-control, with no udev: one device per partition, by offset and size.

A device is configured in one LOOP_CONFIGURE call (Linux 5.8), so it is never seen half set up, and
with LO_FLAGS_AUTOCLEAR: the kernel detaches it when its last opener goes. The caller mounts it and
then closes its fd, so the mount is what holds the device, and a crash (or the end of the mount)
frees it; nothing needs cleaning up. Partitions get a device each (offset and size limit) instead of
LO_FLAGS_PARTSCAN, whose /dev/loopNpM nodes appear only after the kernel's uevent (and udev, where
/dev is not devtmpfs) has run.
"""

from __future__ import annotations

import errno
import fcntl
import struct

from hutch.linux import posixos as os

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
# struct loop_config: fd, block_size, then struct loop_info64 (five u64, four u32, names and key of
# 64+64+32 bytes, two u64), then eight reserved u64.
_INFO64 = "=QQQQQIIII64s64s32s2Q"
_CONFIG = "=II" + _INFO64[1:] + "8Q"
_ATTEMPTS = 16


def attach(
    fd: int, offset: int = 0, size: int = 0, read_only: bool = False, name: str = ""
) -> tuple[int, str]:
    """A loop device over the open file FD (SIZE bytes from OFFSET; 0 for all of it). Returns an open
    fd of the device and its path; the device goes away when the last fd of it (or its mount) does."""
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    config = struct.pack(
        _CONFIG,
        fd,
        0,
        0,
        0,
        0,
        offset,
        size,
        0,
        0,
        0,
        flags,
        os.fsencode(name)[:63],
        b"",
        b"",
        0,
        0,
        *([0] * 8),
    )
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(_ATTEMPTS):
            number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{number}"
            try:
                dev = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
            except FileNotFoundError:
                # devtmpfs creates the node from the kernel's event; a moment late at most.
                import time

                time.sleep(0.01)
                continue
            try:
                fcntl.ioctl(dev, LOOP_CONFIGURE, config)
                return dev, path
            except OSError as e:
                os.close(dev)
                if e.errno != errno.EBUSY:  # another process took this free device first
                    raise OSError(
                        e.errno, f"Failed to configure {path}: {os.strerror(e.errno or 0)}", path
                    ) from e
        raise OSError(errno.EBUSY, "Failed to find a free loop device: every one was taken while trying")
    finally:
        os.close(ctl)
