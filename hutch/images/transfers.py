"""Running imports and pulls, for list-transfers and cancel-transfer (importd's transfers, without the
daemon): each is `STATE/transfers/ID.json`, beside `ID.lock`, which the importing process holds locked
for its life, as a machine's supervisor holds its registry lock. A transfer is live while its lock is
held; the kernel drops it when the process dies, so no entry is ever stale for long (the next listing
removes it). IDs are the lowest free number from 1, as importd hands them out.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from typing import Any

from hutch.errors import ImageError
from hutch.paths import Paths

MAX_ID = 1 << 16


class Transfer:
    def __init__(self, paths: Paths, kind: str, remote: str, local: str) -> None:
        d = os.path.join(paths.state_dir, "transfers")
        os.makedirs(d, 0o700, exist_ok=True)
        self.dir = d
        self.fd = -1
        for n in range(1, MAX_ID):
            lock = os.path.join(d, f"{n}.lock")
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # a listing removed the file between our open and our lock: another number
                os.close(fd)
                continue
            self.id, self.fd = n, fd
            break
        else:
            raise ImageError("Too many transfers are running.")
        entry = {"id": self.id, "type": kind, "remote": remote, "local": local, "pid": os.getpid(),
                 "started": time.time_ns() // 1000}  # fmt: skip
        from hutch.linux.fsutil import write_atomic

        write_atomic(self.path, json.dumps(entry).encode(), 0o600, sync=False)

    @property
    def path(self) -> str:
        return os.path.join(self.dir, f"{self.id}.json")

    def finish(self) -> None:
        if self.fd < 0:
            return
        for p in (self.path, os.path.join(self.dir, f"{self.id}.lock")):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = -1


def _live(d: str, n: int) -> bool:
    """Whether transfer N's process still holds its lock (else what it left is removed)."""
    lock = os.path.join(d, f"{n}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    for p in (os.path.join(d, f"{n}.json"), lock):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    return False


def running(paths: Paths) -> list[dict[str, Any]]:
    d = os.path.join(paths.state_dir, "transfers")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for n in sorted(int(e[:-5]) for e in names if e.endswith(".lock") and e[:-5].isdigit()):
        if not _live(d, n):
            continue
        try:
            with open(os.path.join(d, f"{n}.json")) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            continue  # being written
        if isinstance(entry, dict):
            out.append(entry)
    return out


def cancel(paths: Paths, ident: str) -> dict[str, Any]:
    """Interrupt a running transfer: SIGINT, so it removes what it made, as a ^C does."""
    if not ident.isdigit():
        raise ImageError(f"Invalid transfer ID '{ident}'.", "see 'list-transfers'")
    for entry in running(paths):
        if entry.get("id") == int(ident):
            try:
                os.kill(int(entry["pid"]), signal.SIGINT)
            except ProcessLookupError:
                pass
            return entry
    raise ImageError(f"No transfer with ID {ident}.", "see 'list-transfers'")
