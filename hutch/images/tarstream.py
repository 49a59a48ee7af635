"""A lean, streaming tar reader: ustar, GNU (long names, old sparse) and PAX (per-file and global
records, xattrs, exact mtimes, sparse 0.0/0.1/1.0), everything GNU tar and bsdtar write.

It only parses; it never touches the file system. tarfile parses the same formats but spends ~60 µs per
header on it, which made extraction three times slower than GNU tar on a Debian tree; this parses a
header in a few microseconds. Every header's checksum is verified, and a malformed one is an error,
never skipped.
"""

from __future__ import annotations

import errno
import os

BLOCK = 512
_ZERO = bytes(BLOCK)
MAX_META = 8 << 20  # long names and PAX records: a larger one is an attack on memory, not metadata

REG, HARD, SYM, CHR, BLK, DIR, FIFO = "0", "1", "2", "3", "4", "5", "6"


class TarError(Exception):
    pass


class Member:
    __slots__ = (
        "data_size", "devmajor", "devminor", "gid", "linkname", "mode", "mtime_ns", "name", "size",
        "sparse", "type", "uid", "xattrs",
    )  # fmt: skip

    def __init__(self) -> None:
        self.name = ""
        self.type = REG
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.size = 0  # the file's size (a sparse file's apparent size)
        self.data_size = 0  # what the archive stores for it
        self.mtime_ns = 0
        self.linkname = ""
        self.devmajor = 0
        self.devminor = 0
        self.xattrs: list[tuple[str, bytes]] = []
        self.sparse: list[tuple[int, int]] | None = None


def _num(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, GNU's encoding for what octal cannot hold
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else n
    try:  # the common shape: octal digits, then NULs or spaces
        return int(field.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        pass
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"invalid number {field!r} in a header") from None


def _str(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _mtime_ns(text: bytes) -> int:
    sec, _, frac = text.partition(b".")
    whole = int(sec)
    ns = int((frac + b"000000000")[:9]) if frac else 0
    return whole * 1_000_000_000 + (-ns if sec.startswith(b"-") else ns)


class FdStream:
    """A buffered reader over a file descriptor that can also hand data on without copying it through
    Python: splice(2) moves a large member's bytes from the pipe straight into its file."""

    BUFSIZE = 1 << 18

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.pos = 0
        self.can_splice = True

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            n = self.BUFSIZE
        if self.pos < len(self.buf):
            out = self.buf[self.pos : self.pos + n]
            self.pos += len(out)
            return out
        if n >= self.BUFSIZE:
            return os.read(self.fd, n)
        self.buf = os.read(self.fd, self.BUFSIZE)
        self.pos = min(n, len(self.buf))
        return self.buf[: self.pos]

    def copy_to(self, out: int, n: int, offset: int) -> int:
        """Up to N bytes into OUT at OFFSET; 0 at the end of the stream."""
        if self.pos < len(self.buf):
            data = self.read(n)
            return os.pwrite(out, data, offset) if data else 0
        if self.can_splice and n >= 4096:
            try:
                return os.splice(self.fd, out, n, offset_dst=offset)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                self.can_splice = False  # neither end a pipe, or a file system without splice
        data = self.read(min(n, 1 << 20))
        view = memoryview(data)
        while view:
            view = view[os.pwrite(out, view, offset + len(data) - len(view)) :]
        return len(data)


class TarReader:
    """Iterate over the members of a plain tar stream (an object with read()). After each member,
    copy its data with copy_data() (or not: next() skips what is left)."""

    def __init__(self, stream: object) -> None:
        self.f = stream
        self.left = 0  # data bytes of the current member not read yet
        self.pad = 0
        self.global_pax: dict[str, bytes] = {}

    def _exact(self, n: int) -> bytes:
        data: bytes = self.f.read(n)  # type: ignore[attr-defined]
        if len(data) == n:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            more: bytes = self.f.read(n - got)  # type: ignore[attr-defined]
            if not more:
                raise TarError("unexpected end of data: the archive is truncated")
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self._exact(min(n, 1 << 20))
            n -= len(chunk)

    def copy_data(self, out: int, n: int, offset: int) -> int:
        """Up to N bytes of the current member's data into the file OUT at OFFSET."""
        n = min(n, self.left)
        if n <= 0:
            return 0
        copy = getattr(self.f, "copy_to", None)
        if copy is not None:
            moved = int(copy(out, n, offset))
        else:
            data = self.f.read(n)  # type: ignore[attr-defined]
            moved = len(data)
            view = memoryview(data)
            while view:
                view = view[os.pwrite(out, view, offset + moved - len(view)) :]
        if moved <= 0:
            raise TarError("unexpected end of data: the archive is truncated")
        self.left -= moved
        return moved

    def _meta(self, size: int) -> bytes:
        if size > MAX_META:
            raise TarError(f"a {size}-byte metadata record (long name or PAX header)")
        data = self._exact(size)
        self._skip(-size % BLOCK)
        return data

    def next(self) -> Member | None:
        self._skip(self.left + self.pad)
        self.left = self.pad = 0
        pax: dict[str, bytes] = {}
        pax_sparse: list[int] = []
        longname = longlink = None
        while True:
            hdr = self.f.read(BLOCK)  # type: ignore[attr-defined]
            if len(hdr) < BLOCK:
                if not hdr:
                    return None  # no end marker: tolerated, as tar does
                hdr += self._exact(BLOCK - len(hdr))
            if hdr == _ZERO:
                return None
            stored = _num(hdr[148:156])
            plain = sum(hdr) - sum(hdr[148:156]) + 256
            if stored != plain:
                # Some old tars summed signed chars.
                high = sum(1 for b in hdr[:148] + hdr[156:] if b > 127)
                if stored != plain - 256 * high:
                    raise TarError("a header's checksum does not match (a corrupt or non-tar file)")
            kind = chr(hdr[156]) if hdr[156] else REG
            size = _num(hdr[124:136])
            if size < 0:
                raise TarError("a negative size in a header")
            if kind in "xg":
                records = self._pax(self._meta(size), pax_sparse)
                (pax if kind == "x" else self.global_pax).update(records)
                continue
            if kind == "L":
                longname = _str(self._meta(size))
                continue
            if kind == "K":
                longlink = _str(self._meta(size))
                continue
            return self._member(hdr, kind, size, {**self.global_pax, **pax}, pax_sparse, longname, longlink)

    def _pax(self, data: bytes, sparse: list[int]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        pos = 0
        while pos < len(data):
            sp = data.find(b" ", pos)
            if sp < 0:
                if data[pos:].strip(b"\0"):
                    raise TarError("a malformed PAX record")
                break
            try:
                length = int(data[pos:sp])
            except ValueError:
                raise TarError("a malformed PAX record length") from None
            end = pos + length
            if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
                raise TarError("a malformed PAX record")
            key, eq, value = data[sp + 1 : end - 1].partition(b"=")
            if not eq:
                raise TarError("a PAX record without '='")
            name = key.decode("utf-8", "surrogateescape")
            if name in ("GNU.sparse.offset", "GNU.sparse.numbytes"):  # sparse 0.0: repeated keys
                sparse.append(int(value))
            out[name] = value
            pos = end
        return out

    def _member(
        self, hdr: bytes, kind: str, size: int, pax: dict[str, bytes], pax_sparse: list[int],
        longname: bytes | None, longlink: bytes | None,
    ) -> Member:  # fmt: skip
        m = Member()
        name = _str(hdr[0:100])
        if hdr[257:263] == b"ustar\0":  # POSIX ustar: a prefix field holds the leading directories
            prefix = _str(hdr[345:500])
            if prefix:
                name = prefix + b"/" + name
        name = longname if longname is not None else name
        link = longlink if longlink is not None else _str(hdr[157:257])
        m.type = kind
        m.mode = _num(hdr[100:108]) & 0o7777
        m.uid = _num(hdr[108:116])
        m.gid = _num(hdr[116:124])
        m.mtime_ns = _num(hdr[136:148]) * 1_000_000_000
        if kind in (CHR, BLK):
            m.devmajor = _num(hdr[329:337])
            m.devminor = _num(hdr[337:345])
        m.size = m.data_size = size
        try:
            if "path" in pax:
                name = pax["path"]
            if "linkpath" in pax:
                link = pax["linkpath"]
            if "size" in pax:
                m.size = m.data_size = int(pax["size"])
            if "uid" in pax:
                m.uid = int(pax["uid"])
            if "gid" in pax:
                m.gid = int(pax["gid"])
            if "mtime" in pax:
                m.mtime_ns = _mtime_ns(pax["mtime"])
        except ValueError:
            raise TarError("a malformed number in a PAX record") from None
        for key, value in pax.items():
            if key.startswith("SCHILY.xattr."):
                m.xattrs.append((key[13:], value))
            elif key.startswith("LIBARCHIVE.xattr."):
                import base64
                from urllib.parse import unquote

                try:
                    m.xattrs.append((unquote(key[17:]), base64.b64decode(value + b"=" * (-len(value) % 4))))
                except ValueError:
                    raise TarError("a malformed LIBARCHIVE.xattr record") from None
        if kind in (HARD, SYM, CHR, BLK, DIR, FIFO):
            m.size = m.data_size = 0  # only regular (and unknown) members carry data, as tarfile reads it
        if kind == "S":
            m.type = REG
            self._old_gnu_sparse(hdr, m)
        elif "GNU.sparse.major" in pax or "GNU.sparse.map" in pax or pax_sparse:
            self._pax_sparse(pax, pax_sparse, m)
            if "GNU.sparse.name" in pax:
                name = pax["GNU.sparse.name"]
        m.name = os.fsdecode(name)
        m.linkname = os.fsdecode(link)
        self.left = m.data_size
        self.pad = -m.data_size % BLOCK
        return m

    def _old_gnu_sparse(self, hdr: bytes, m: Member) -> None:
        entries = []

        def take(block: bytes, start: int, count: int) -> None:
            for i in range(count):
                off = start + i * 24
                offset, numbytes = _num(block[off : off + 12]), _num(block[off + 12 : off + 24])
                if offset or numbytes:
                    entries.append((offset, numbytes))

        take(hdr, 386, 4)
        extended = hdr[482]
        while extended:
            ext = self._exact(BLOCK)
            take(ext, 0, 21)
            extended = ext[504]
        m.sparse = entries
        m.size = _num(hdr[483:495])

    def _pax_sparse(self, pax: dict[str, bytes], pax_sparse: list[int], m: Member) -> None:
        try:
            if pax.get("GNU.sparse.major") == b"1":  # 1.0: the map leads the data, in decimal lines
                numbers: list[int] = []
                text = b""
                used = 0
                while True:
                    block = self._exact(BLOCK)
                    used += BLOCK
                    text += block
                    lines = text.split(b"\n")
                    if lines and lines[0]:
                        want = 1 + 2 * int(lines[0])
                        if len(lines) - 1 >= want:
                            numbers = [int(x) for x in lines[:want]]
                            break
                    if used > MAX_META:
                        raise TarError("an oversized sparse map")
                m.data_size -= used
                flat = numbers[1:]
                m.size = int(pax.get("GNU.sparse.realsize", b"0"))
            else:
                if "GNU.sparse.map" in pax:  # 0.1
                    flat = [int(x) for x in pax["GNU.sparse.map"].split(b",") if x]
                else:  # 0.0
                    flat = pax_sparse
                m.size = int(pax.get("GNU.sparse.size", pax.get("GNU.sparse.realsize", b"0")))
        except ValueError:
            raise TarError("a malformed sparse map") from None
        if len(flat) % 2 or m.data_size < 0:
            raise TarError("a malformed sparse map")
        m.sparse = list(zip(flat[0::2], flat[1::2], strict=True))
        m.type = REG
