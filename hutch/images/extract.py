"""Tar extraction that a hostile archive cannot steer outside its root (security.md §3).

tarstream only parses; every file is created by this module from its parent's directory fd:
- each path component is opened with O_NOFOLLOW|O_DIRECTORY from the one before it, so a symlink (or
  a file) where a directory should be stops the import instead of redirecting it;
- `..` anywhere in a name is refused, a leading `/` is stripped (as GNU tar does), and a member that
  names the root itself may only be a directory;
- a file is created with O_CREAT|O_EXCL; an existing entry of that name is unlinked first, never
  opened and truncated, so an earlier member cannot turn a later write into a write elsewhere;
- hard link targets are resolved inside the root the same way, and never through a symlink;
- owners are the archive's numeric ids (never names looked up on the host); device nodes are not
  created (the container gets its /dev at start); setuid/setgid bits are dropped from files others
  can write; only user.* (but hutch's own user.hutch.*) and POSIX ACL xattrs are kept. File
  capabilities (security.capability) are dropped: images are stored unshifted, so a v2 capability
  (or a v3 one with root id 0, the same thing to the kernel) would be effective for the host's root
  user namespace, which no archive may grant; inside a machine, setcap writes them anew;
- depth, name length, path length and member size are limited before anything is written, and the
  stream is read to its end so the caller can check the compression's integrity.

It runs in a confined child process (see unpack.py); it raises HostileArchive for what it refuses.
"""

from __future__ import annotations

import errno
import os
import stat

from hutch.errors import ImageError
from hutch.images import tarstream
from hutch.images.tarstream import Member, TarError, TarReader

MAX_DEPTH = 128  # systemd caps tree depth for copies and removal at the same value
PATH_MAX = 4096
NAME_MAX = 255
MAX_XATTR_VALUE = 64 * 1024
MAX_PADDING = 16 << 20  # GNU tar pads to 10 KiB records; the largest blocking factor it takes is 32 MiB/2
KEPT_XATTRS = ("user.", "system.posix_acl_access", "system.posix_acl_default")
OWN_XATTRS = ("user.hutch.",)  # what hutch 0.1 read as its own metadata: never from an archive
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FD_CACHE = 256


class HostileArchive(ImageError):
    """The archive tries something no honest OS tarball does; nothing of it is kept."""


def shown(name: str) -> str:
    """A member name fit for one line of output: control characters and bad bytes escaped."""
    text = repr(name)[1:-1]
    return text if len(text) <= 200 else text[:200] + "..."


class Stats:
    def __init__(self) -> None:
        self.members = 0
        self.bytes = 0
        self.devices = 0
        self.setuid_stripped = 0
        self.xattrs_dropped = 0
        self.caps_dropped = 0
        self.absolute = 0

    def as_dict(self) -> dict[str, int]:
        keys = (
            "members",
            "bytes",
            "devices",
            "setuid_stripped",
            "xattrs_dropped",
            "caps_dropped",
            "absolute",
        )
        return {k: getattr(self, k) for k in keys}


def split_name(name: str, stats: Stats | None = None) -> list[str]:
    if name.startswith("/") and stats is not None:
        stats.absolute += 1
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileArchive(f"Archive member '{shown(name)}' points outside the image with '..'.")
    if len(parts) > MAX_DEPTH:
        raise HostileArchive(
            f"Archive member '{shown(name)}' is nested {len(parts)} levels deep (limit {MAX_DEPTH})."
        )
    # A character is at most 4 bytes: only long names need encoding to be measured.
    for p in parts:
        if len(p) * 4 > NAME_MAX and len(os.fsencode(p)) > NAME_MAX:
            raise HostileArchive(f"Archive member '{shown(name)}' has a name longer than {NAME_MAX} bytes.")
    if len(name) * 4 >= PATH_MAX and len(os.fsencode("/".join(parts))) >= PATH_MAX:
        raise HostileArchive(f"Archive member '{shown(name)}' has a path longer than {PATH_MAX} bytes.")
    return parts


def _xattrs(m: Member, stats: Stats) -> list[tuple[str, bytes]]:
    out = []
    for name, raw in m.xattrs:
        if name.startswith(KEPT_XATTRS) and not name.startswith(OWN_XATTRS) and len(raw) <= MAX_XATTR_VALUE:
            out.append((name, raw))
        elif name == "security.capability":
            stats.caps_dropped += 1
        else:
            stats.xattrs_dropped += 1
    return out


def _safe_mode(mode: int, is_dir: bool, stats: Stats) -> int:
    mode = stat.S_IMODE(mode)
    if not is_dir and mode & (stat.S_ISUID | stat.S_ISGID) and mode & 0o022:
        stats.setuid_stripped += 1
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    return mode


def _check_id(value: int, what: str, name: str) -> int:
    if not 0 <= value < 0xFFFFFFFF:
        raise HostileArchive(f"Archive member '{shown(name)}' has an invalid {what} {value}.")
    return value


class Extractor:
    def __init__(self, root_fd: int, max_member: int, layer: bool = False) -> None:
        self.root = root_fd
        self.max_member = max_member
        # An OCI layer over the layers before it: whiteouts remove what those made, and an entry of
        # this layer may replace a whole directory of theirs. What this layer made is never removed.
        self.layer = layer
        self.made: set[tuple[str, ...]] = set()
        self.stats = Stats()
        self.cache: dict[tuple[str, ...], int] = {}
        # Directory metadata is applied last, deepest first: files written into a directory change
        # its mtime, and a read-only mode must not stop the members after it.
        self.dirs: dict[tuple[str, ...], Member] = {}

    def close(self) -> None:
        for fd in self.cache.values():
            os.close(fd)
        self.cache.clear()

    def dir_fd(self, parts: tuple[str, ...], member: str) -> int:
        """The directory PARTS below the root, made where missing, never through a symlink."""
        if not parts:
            return self.root
        fd = self.cache.get(parts)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], member)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise HostileArchive(
                    f"Archive member '{shown(member)}' goes through '{shown('/'.join(parts))}', "
                    "which is a symlink or a file, not a directory."
                ) from None
            raise
        if len(self.cache) >= _FD_CACHE:
            for key in list(self.cache)[: _FD_CACHE // 2]:
                os.close(self.cache.pop(key))
        self.cache[parts] = fd
        return fd

    def _clear_name(self, dfd: int, parts: list[str], member: str) -> None:
        """Make room for a new entry: a later member replaces an earlier one, as tar does."""
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if self.layer and tuple(parts) not in self.made:
                self._remove_lower(dfd, tuple(parts))
                return
            try:
                os.rmdir(name, dir_fd=dfd)
            except OSError as e:
                raise HostileArchive(
                    f"Archive member '{shown(member)}' would replace a directory that is not empty."
                ) from e
            self.close()  # a cached fd may name the directory just removed
            self.dirs.pop(tuple(parts), None)
        else:
            os.unlink(name, dir_fd=dfd)

    def _remove_lower(self, dfd: int, parts: tuple[str, ...]) -> None:
        """Remove PARTS (below the open directory DFD), which a lower layer made, with all below it."""
        from hutch.linux.fsutil import rm_rf

        rm_rf(f"/proc/self/fd/{dfd}/{parts[-1]}")  # by the directory's fd: never through a symlink
        for key in [k for k in self.cache if k[: len(parts)] == parts]:
            os.close(self.cache.pop(key))  # fds of directories that are gone
        for key in [k for k in self.dirs if k[: len(parts)] == parts]:
            del self.dirs[key]

    def _whiteout(self, parts: list[str], member: str) -> None:
        """`.wh.NAME` removes NAME of the lower layers; `.wh..wh..opq` empties its directory of them."""
        dparts = tuple(parts[:-1])
        dfd = self.dir_fd(dparts, member)
        if parts[-1] == ".wh..wh..opq":
            for entry in os.listdir(dfd):
                if dparts + (entry,) not in self.made:
                    self._remove_lower(dfd, dparts + (entry,))
            return
        target = parts[-1][4:]
        if target in ("", ".", "..") or target.startswith(".wh."):
            raise HostileArchive(f"Layer member '{shown(member)}' is a whiteout of no valid name.")
        if dparts + (target,) in self.made:
            return  # the spec's whiteouts hide lower layers only
        try:
            os.stat(target, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        self._remove_lower(dfd, dparts + (target,))

    def member(self, tar: TarReader, m: Member) -> None:
        self.stats.members += 1
        try:
            if self.layer:
                parts = split_name(m.name)
                if parts and parts[-1].startswith(".wh."):
                    self._whiteout(parts, m.name)
                    return
                self._member(tar, m)
                self.made.add(tuple(parts))
                return
            self._member(tar, m)
        except OSError as e:
            raise ImageError(f"Failed to extract '{shown(m.name)}': {e.strerror or e}.") from e

    def _create(self, dfd: int, parts: list[str], member: str, mode: int) -> int:
        """A new regular file; an entry of that name an earlier member made is removed first, never
        opened and truncated."""
        try:
            return os.open(parts[-1], _NEW_FILE, mode, dir_fd=dfd)
        except FileExistsError:
            self._clear_name(dfd, parts, member)
            return os.open(parts[-1], _NEW_FILE, mode, dir_fd=dfd)

    def _member(self, tar: TarReader, m: Member) -> None:
        parts = split_name(m.name, self.stats)
        uid = _check_id(m.uid, "owner", m.name)
        gid = _check_id(m.gid, "group", m.name)
        kind = m.type
        if not parts:
            if kind != tarstream.DIR:
                raise HostileArchive(f"Archive member '{shown(m.name)}' would replace the image's root.")
            self.dirs[()] = m
            return
        if kind in (tarstream.CHR, tarstream.BLK):
            self.stats.devices += 1
            return
        if kind not in (tarstream.DIR, tarstream.SYM, tarstream.HARD, tarstream.FIFO, tarstream.REG, "7"):
            self.stats.devices += 1  # an unknown type: its data is skipped, nothing is made
            return
        if m.size > self.max_member:
            raise HostileArchive(
                f"Archive member '{shown(m.name)}' is {m.size} bytes, more than the {self.max_member} "
                "bytes free in the image directory."
            )
        dfd = self.dir_fd(tuple(parts[:-1]), m.name)
        name = parts[-1]
        if kind == tarstream.DIR:
            try:
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=dfd)
                    os.mkdir(name, 0o700, dir_fd=dfd)
            self.dirs[tuple(parts)] = m
            return
        if kind in (tarstream.REG, "7"):
            mode = _safe_mode(m.mode, False, self.stats)
            # Created with its final permission bits (the umask is 0 here): chown and chmod are needed
            # only for other owners and for setuid bits, which chown would clear.
            fd = self._create(dfd, parts, m.name, mode & 0o777)
            try:
                self._data(tar, m, fd)
                if uid or gid:
                    os.fchown(fd, uid, gid)
                if mode & 0o7000:
                    os.fchmod(fd, mode)
                for key, value in _xattrs(m, self.stats):
                    os.setxattr(fd, key, value)
                os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
            finally:
                os.close(fd)
            return
        if kind == tarstream.SYM:
            try:
                os.symlink(m.linkname, name, dir_fd=dfd)
            except FileExistsError:
                self._clear_name(dfd, parts, m.name)
                os.symlink(m.linkname, name, dir_fd=dfd)
        elif kind == tarstream.HARD:
            tparts = split_name(m.linkname)
            if not tparts:
                raise HostileArchive(f"Archive member '{shown(m.name)}' is a hard link to the image's root.")
            tdfd = self.dir_fd(tuple(tparts[:-1]), m.name)
            try:
                tst = os.stat(tparts[-1], dir_fd=tdfd, follow_symlinks=False)
            except FileNotFoundError:
                raise HostileArchive(
                    f"Archive member '{shown(m.name)}' is a hard link to '{shown(m.linkname)}', which the "
                    "archive does not contain before it."
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise HostileArchive(f"Archive member '{shown(m.name)}' is a hard link to a directory.")
            if tparts == parts:
                return
            self._clear_name(dfd, parts, m.name)
            os.link(tparts[-1], name, src_dir_fd=tdfd, dst_dir_fd=dfd, follow_symlinks=False)
            return  # a hard link shares its target's owner, mode and times
        else:  # FIFO
            self._clear_name(dfd, parts, m.name)
            os.mkfifo(name, _safe_mode(m.mode, False, self.stats) & 0o777, dir_fd=dfd)
        if uid or gid:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        if kind == tarstream.FIFO and m.mode & 0o7000:
            os.chmod(name, _safe_mode(m.mode, False, self.stats), dir_fd=dfd)
        os.utime(name, ns=(m.mtime_ns, m.mtime_ns), dir_fd=dfd, follow_symlinks=False)

    def _data(self, tar: TarReader, m: Member, fd: int) -> None:
        # A sparse member is written block by block at its offsets: the holes stay holes.
        blocks = m.sparse if m.sparse is not None else [(0, m.size)]
        for offset, size in blocks:
            if offset < 0 or size < 0 or offset + size > m.size:
                raise HostileArchive(f"Archive member '{shown(m.name)}' has a malformed sparse map.")
            done = 0
            while done < size:
                done += tar.copy_data(fd, size - done, offset + done)
            self.stats.bytes += size
        if m.sparse is not None:
            os.ftruncate(fd, m.size)

    def finish(self) -> None:
        self.close()
        for parts in sorted(self.dirs, key=len, reverse=True):
            m = self.dirs[parts]
            fd = self.dir_fd(parts, m.name) if parts else self.root
            os.fchown(fd, _check_id(m.uid, "owner", m.name), _check_id(m.gid, "group", m.name))
            mode = _safe_mode(m.mode, True, self.stats)
            if not parts:
                # The image's root: never world-writable or setuid, whatever the archive says.
                mode &= 0o755
            os.fchmod(fd, mode)
            for key, value in _xattrs(m, self.stats):
                os.setxattr(fd, key, value)
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
        self.close()


def extract(stream: object, root_fd: int, max_member: int, layer: bool = False) -> Stats:
    """Extract the plain tar STREAM (an object with read()) below ROOT_FD; read it to its end. LAYER:
    it is an OCI layer, applied over what ROOT_FD holds (whiteouts honoured)."""
    ex = Extractor(root_fd, max_member, layer)
    old_umask = os.umask(0)
    try:
        tar = TarReader(stream)
        while True:
            m = tar.next()
            if m is None:
                break
            ex.member(tar, m)
        # After the end-of-archive blocks only padding may follow: not a second archive, not garbage,
        # and not without end (/dev/zero reads as an empty archive followed by endless padding).
        padding = 0
        while True:
            rest = stream.read(1 << 20)  # type: ignore[attr-defined]
            if not rest:
                break
            padding += len(rest)
            if padding > MAX_PADDING:
                raise ImageError(
                    f"Malformed tar archive: more than {MAX_PADDING >> 20} MiB of padding after the "
                    "end-of-archive marker.",
                    "is it a tar file, and not a device or a disk image?",
                )
            if rest.count(0) != len(rest):
                raise ImageError(
                    "Malformed tar archive: data after the end-of-archive marker.",
                    "concatenated archives are not supported; extract and re-create it as one",
                )
        ex.finish()
    except TarError as e:
        raise ImageError(
            f"Malformed tar archive: {e}.", "is it a tar file? (plain, gzip, xz, bzip2 or zstd)"
        ) from e
    finally:
        os.umask(old_umask)
        ex.close()
    return ex.stats
