"""Compressed streams: the format detected from the content (never the file name), decompression that
yields bounded chunks whatever the ratio (a 2 MB gzip can hold 2 GiB of zeros), integrity checked to
the end (a bad CRC or a truncated stream is an error, not a shorter archive), and the compressors
export uses. zstandard is imported only when a zstd stream is seen or written.
"""

from __future__ import annotations

from typing import Any, Protocol

from hutch.errors import ImageError

CHUNK = 1 << 20
FORMATS = ("uncompressed", "gzip", "xz", "bzip2", "zstd")
SUFFIXES = {
    ".tar": "uncompressed",
    ".tar.gz": "gzip",
    ".tgz": "gzip",
    ".tar.xz": "xz",
    ".txz": "xz",
    ".tar.bz2": "bzip2",
    ".tbz2": "bzip2",
    ".tbz": "bzip2",
    ".tar.zst": "zstd",
    ".tzst": "zstd",
}
# xz and zstd decoders allocate what the stream's header asks for: cap it, as `xz --memlimit` does.
XZ_MEMLIMIT = 1 << 30
ZSTD_MAX_WINDOW = 1 << 30


class CorruptData(Exception):
    """A decompressor refused the data."""


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def detect(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "uncompressed"


def format_from_name(name: str) -> str | None:
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


class Peeked:
    """A reader with its first bytes already read (to detect the format) put back in front."""

    def __init__(self, head: bytes, rest: Reader) -> None:
        self.head = head
        self.rest = rest

    def read(self, n: int = -1, /) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                out, self.head = self.head, b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.rest.read(n)


class _Concatenated:
    """bzip2 and xz: one decompressor per stream, streams back to back (pbzip2, pixz write several)."""

    def __init__(self, src: Reader, factory: Any, what: str) -> None:
        self.src = src
        self.factory = factory
        self.what = what
        self.dec = factory()
        self.pending = b""
        self.started = False

    def read(self, n: int = -1, /) -> bytes:
        n = CHUNK if n < 0 else n
        while True:
            if self.dec.eof:
                rest = self.dec.unused_data or self.src.read(CHUNK)
                if not rest:
                    return b""
                self.dec = self.factory()
                self.pending = rest
            if self.dec.needs_input:
                data = self.pending or self.src.read(CHUNK)
                self.pending = b""
                if not data:
                    raise EOFError(f"{self.what} stream ended before its end-of-stream marker")
            else:
                data = b""
            try:
                out: bytes = self.dec.decompress(data, n)
            except (OSError, ValueError) as e:  # bz2 reports bad data as OSError
                raise CorruptData(str(e)) from e
            if out:
                return out


def decompressor(fmt: str, src: Reader) -> Reader:
    if fmt == "uncompressed":
        return src
    if fmt == "gzip":
        import gzip

        # GzipFile checks each member's CRC and length and accepts concatenated members and zero padding.
        reader: Reader = gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[call-overload]
        return reader
    if fmt == "bzip2":
        import bz2

        return _Concatenated(src, bz2.BZ2Decompressor, "bzip2")
    if fmt == "xz":
        import lzma

        return _Concatenated(src, lambda: lzma.LZMADecompressor(memlimit=XZ_MEMLIMIT), "xz")
    if fmt == "zstd":
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        return _ZstdReader(dctx.decompressobj, src)
    raise ImageError(f"Unknown compression format '{fmt}'.", "use one of: " + ", ".join(FORMATS))


class _ZstdReader(_Concatenated):
    """zstandard's decompressobj has no output bound: feed it small slices of input, so one call
    cannot expand into gigabytes (zstd reaches ~32000:1 on zeros), and insist on a complete last frame."""

    FEED = 2048  # zeros expand ~32000:1: at most ~64 MiB out per call

    def __init__(self, factory: Any, src: Reader) -> None:
        super().__init__(src, factory, "zstd")
        self.buffer = b""
        self.start = 0  # how much of self.buffer has been returned: slicing it anew each read is O(n^2)
        self.pos = 0  # how much of self.pending has been fed

    def read(self, n: int = -1, /) -> bytes:
        if self.start >= len(self.buffer):
            self.buffer, self.start = b"", 0
        while not self.buffer:
            if self.dec.eof:  # a frame ended: the next one, if any, starts in what is left
                self.pending, self.pos = self.dec.unused_data + self.pending[self.pos :], 0
                if not self.pending:
                    self.pending = self.src.read(CHUNK)
                    if not self.pending:
                        return b""
                self.dec = self.factory()
                continue
            if self.pos >= len(self.pending):
                self.pending, self.pos = self.src.read(CHUNK), 0
                if not self.pending:
                    raise EOFError("zstd stream ended before the end of its last frame")
            feed = self.pending[self.pos : self.pos + self.FEED]
            self.pos += len(feed)
            self.buffer = self.dec.decompress(feed)
        if self.start == 0 and (n < 0 or n >= len(self.buffer)):
            out, self.buffer = self.buffer, b""
            return out
        end = len(self.buffer) if n < 0 else self.start + n
        out = self.buffer[self.start : end]
        self.start += len(out)
        return out


def opened(raw: Reader, what: str, hint: str) -> tuple[str, Reader]:
    """RAW's format, told by its first bytes, and a reader of its decompressed data; WHAT (its name in
    messages) empty is refused, with HINT."""
    head = b""
    while len(head) < 6:
        more = raw.read(6 - len(head))
        if not more:
            break
        head += more
    if not head:
        raise ImageError(f"{what} is empty.", hint)
    fmt = detect(head)
    return fmt, decompressor(fmt, Peeked(head, raw))


def decode_errors() -> tuple[type[BaseException], ...]:
    """What a corrupt stream raises, whichever module read it."""
    import gzip
    import lzma
    import zlib

    errors: list[type[BaseException]] = [CorruptData, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class Compressor:
    """A file-like sink that compresses into OUT (an object with write())."""

    def __init__(self, fmt: str, out: Writer) -> None:
        self.out = out
        self.fmt = fmt
        self.comp: Any = None
        if fmt == "gzip":
            import zlib

            self.comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        elif fmt == "bzip2":
            import bz2

            self.comp = bz2.BZ2Compressor(9)
        elif fmt == "xz":
            import lzma

            self.comp = lzma.LZMACompressor(preset=6)
        elif fmt == "zstd":
            import zstandard

            self.comp = zstandard.ZstdCompressor(level=3, write_checksum=True).compressobj()
        elif fmt != "uncompressed":
            raise ImageError(f"Unknown compression format '{fmt}'.", "use one of: " + ", ".join(FORMATS))

    def write(self, data: bytes, /) -> int:
        if self.comp is None:
            self.out.write(data)
        else:
            out = self.comp.compress(data)
            if out:
                self.out.write(out)
        return len(data)

    def close(self) -> None:
        if self.comp is not None:
            tail = self.comp.flush()
            if tail:
                self.out.write(tail)
