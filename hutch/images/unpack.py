"""A tar stream unpacked into a new image's directory: its compression detected and decoded here, its
members extracted by a child process confined as importd confines tar (no network: a new network
namespace; a bounding set cut to the file-owning capabilities; no new privileges, no more processes,
a memory cap, and death with its parent), which reports back in one line of JSON. What the child
refuses is hutch.images.extract's to say."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from hutch.errors import HutchError, ImageError
from hutch.images.compress import CHUNK, Reader
from hutch.linux import libc

# The extractor keeps only what creating files with their owners, modes and capabilities needs.
_EXTRACT_CAPS = frozenset((0, 1, 2, 3, 4, 31))  # CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID SETFCAP
_EXTRACT_MEMORY = 2 << 30


class Counted:
    """The raw input: counted for the progress bar and hashed for --verify=checksum."""

    def __init__(self, src: Reader, progress: Callable[[int], None] | None, hasher: Any = None) -> None:
        self.src = src
        self.progress = progress
        self.hasher = hasher
        self.total = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self.src.read(CHUNK if n < 0 else n)
        if data:
            self.total += len(data)
            if self.hasher is not None:
                self.hasher.update(data)
            if self.progress is not None:
                self.progress(len(data))
        return data


class FdReader:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, n: int = -1, /) -> bytes:
        return os.read(self.fd, CHUNK if n < 0 else n)


def _confine(keep: set[int]) -> None:
    import resource

    from hutch.linux import caps

    libc.prctl(libc.PR_SET_PDEATHSIG, 9)
    libc.unshare(libc.CLONE_NEWNET | libc.CLONE_NEWIPC)
    from hutch.linux.fsutil import close_other_fds

    close_other_fds(keep)
    resource.setrlimit(resource.RLIMIT_AS, (_EXTRACT_MEMORY, _EXTRACT_MEMORY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    caps.drop_bounding(_EXTRACT_CAPS)
    caps.set_caps(_EXTRACT_CAPS)
    libc.prctl(caps.PR_SET_NO_NEW_PRIVS, 1)


def _extract_child(root_fd: int, max_member: int, layer: bool = False) -> tuple[int, int, int]:
    """Fork the confined extractor reading plain tar from a pipe. Returns (pid, the pipe's write end,
    the read end of its one-line JSON report)."""
    data_r, data_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        import fcntl

        fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        msg: dict[str, Any]
        try:
            os.close(data_w)
            os.close(report_r)
            _confine({data_r, report_w, root_fd})
            from hutch.images.extract import extract
            from hutch.images.tarstream import FdStream

            stats = extract(FdStream(data_r), root_fd, max_member, layer)
            msg = {"ok": stats.as_dict()}
            code = 0
        except HutchError as e:
            msg = {"error": e.message, "hint": e.hint}
        except MemoryError:
            msg = {"error": "The archive needs more memory than an import may use (a header bomb?)."}
        except KeyboardInterrupt:
            msg = {"error": "Interrupted."}
        except BaseException as e:
            msg = {"error": f"Extraction failed: {e}"}
        try:
            os.write(report_w, json.dumps(msg).encode())
        finally:
            os._exit(code)
    os.close(data_r)
    os.close(report_w)
    return pid, data_w, report_r


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def extract_stream(
    raw: Reader, what: str, temp: str, *, layer: bool = False, plain_hasher: Any = None
) -> dict[str, int]:
    """Detect the compression of RAW, decompress it here and extract it into TEMP in the child. LAYER:
    it is an OCI layer over what TEMP holds. PLAIN_HASHER is fed the uncompressed tar."""
    from hutch.images import compress

    fmt, plain = compress.opened(raw, what, "is it a tar archive?")
    reader = _not_a_disk(plain, what, layer)
    vfs = os.statvfs(temp)
    root_fd = os.open(temp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        pid, data_w, report_r = _extract_child(root_fd, vfs.f_bavail * vfs.f_frsize, layer)
    finally:
        os.close(root_fd)
    errors = compress.decode_errors()
    try:
        try:
            while True:
                buf = reader.read(CHUNK)
                if not buf:
                    break
                if plain_hasher is not None:
                    plain_hasher.update(buf)
                view = memoryview(buf)
                while view:
                    view = view[os.write(data_w, view) :]
        except BrokenPipeError:
            pass  # the extractor stopped: its report says why
        except errors as e:
            _kill(pid)
            raise ImageError(
                f"Corrupt or truncated {fmt} data in {what}: {e}.", "download or copy the file again"
            ) from e
        finally:
            os.close(data_w)
        with os.fdopen(report_r, "rb") as f:
            report_r = -1
            text = f.read()
        _, status = os.waitpid(pid, 0)
        pid = -1
        try:
            msg = json.loads(text) if text else {}
        except ValueError:
            msg = {}
        if "ok" in msg:
            return dict(msg["ok"])
        if "error" in msg:
            raise ImageError(f"Failed to import {what}: {msg['error'].rstrip('.')}.", msg.get("hint"))
        raise ImageError(f"Failed to import {what}: the extractor died ({_describe(status)}).")
    finally:
        if report_r >= 0:
            os.close(report_r)
        if pid > 0:
            _kill(pid)


def _not_a_disk(reader: Reader, what: str, layer: bool) -> Reader:
    """Refuse a disk image given as a tarball (a tar's first header has no partition table's or
    superblock's magic where those lie), naming the verb that takes it."""
    from hutch.images import compress, rawimage

    head = b""
    errors = compress.decode_errors()
    try:
        while len(head) < rawimage.HEAD:
            more = reader.read(rawimage.HEAD - len(head))
            if not more:
                break
            head += more
    except errors:
        pass  # the extraction reads on and reports the corruption
    if head[257:262] != b"ustar" and (rawimage.looks_like_disk(head) or head[:4] == b"QFI\xfb"):
        if layer:
            raise ImageError(f"{what} is a disk image, not a tar layer.")
        raise ImageError(f"{what} is a disk image, not a tar archive.", "import it with 'hutch import-raw'")
    return compress.Peeked(head, reader)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
