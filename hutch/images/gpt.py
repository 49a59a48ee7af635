"""Reading a disk image's partition table and finding its partitions as the Discoverable Partitions
Specification (uapi-group.org/specifications/specs/discoverable_partitions_specification) says.

Pure parsing of bytes read from the file: every number in the table is checked before it is used
(signature, both CRCs, the entry array and every partition inside the file and the usable range, no
two partitions overlapping), because the table comes from a download and the kernel will be told to
read the partitions it names.
"""

from __future__ import annotations

import struct
from binascii import crc32

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_ENTRIES = 1024  # the specification's minimum array holds 128; nothing real needs more than this
_HEADER = struct.Struct("<8sIII4xQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")

# Partition types, by role and architecture (the specification's table).
ROOT = {
    "x86-64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    "x86": "44479540-f297-41b2-9af7-d131d5f0458a",
    "arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae",
    "arm": "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
    "riscv64": "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
    "ppc64-le": "c31c45e6-3f39-412e-80fb-4809c4980599",
    "s390x": "5eead9a9-fe09-4a1e-a1d7-520d00531306",
}
USR = {
    "x86-64": "8484680c-9521-48c6-9c11-b0720656f69e",
    "x86": "75250d76-8cc6-458e-bd66-bd47cc81a812",
    "arm64": "b0e01050-ee5f-4390-949a-9101b17104e9",
    "arm": "7d0359a3-02b3-4f0a-865c-654403e70625",
    "riscv64": "beaec34b-8442-439b-a40b-984381ed097d",
    "ppc64-le": "ee2b9983-21e8-4153-86d9-b6901a54d1ce",
    "s390x": "8a4f5770-50aa-4ed3-874a-99b710db6fea",
}
# Where the partitions that are not root or /usr go in the container.
MOUNTED = {
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "home",
    "3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "srv",
    "4d21b016-b534-45c2-a9fb-5c16e091fd2d": "var",
    "7ec6f557-3bc5-4aca-b293-16ef5df639d1": "var/tmp",
}
GENERIC_LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
FLAG_NO_AUTO = 1 << 63
FLAG_READ_ONLY = 1 << 60
_MACHINES = {
    "x86_64": "x86-64",
    "i686": "x86",
    "i386": "x86",
    "aarch64": "arm64",
    "armv7l": "arm",
    "riscv64": "riscv64",
    "ppc64le": "ppc64-le",
    "s390x": "s390x",
}
_SECONDARY = {"x86-64": "x86", "arm64": "arm"}


class TableError(Exception):
    """The table is malformed or hostile; the message says how."""


class Partition:
    def __init__(
        self, number: int, type_uuid: str, uuid: str, start: int, size: int, flags: int, label: str
    ):
        self.number = number
        self.type_uuid = type_uuid
        self.uuid = uuid
        self.start = start  # bytes from the start of the disk
        self.size = size
        self.flags = flags
        self.label = label

    def __repr__(self) -> str:
        return f"Partition({self.number}, {self.type_uuid}, {self.label!r}, {self.start}+{self.size})"


def guid(raw: bytes) -> str:
    """A GUID as text: its first three fields are stored little-endian."""
    a, b, c = struct.unpack_from("<IHH", raw)
    rest = raw[8:].hex()
    return f"{a:08x}-{b:04x}-{c:04x}-{rest[:4]}-{rest[4:]}"


def host_arch() -> str:
    return _MACHINES.get(__import__("posix").uname().machine, "")


def read_table(read_at: Callable[[int, int], bytes], disk_size: int) -> list[Partition] | None:
    """The GPT's partitions (used entries only), or None if the disk has no GPT. READ_AT(offset, n)
    reads the disk."""
    for sector in (512, 4096):
        head = read_at(sector, sector)
        if head[:8] == b"EFI PART":
            return _parse(head, sector, read_at, disk_size)
    return None


def _parse(
    head: bytes, sector: int, read_at: Callable[[int, int], bytes], disk_size: int
) -> list[Partition]:
    if len(head) < _HEADER.size:
        raise TableError("its GPT header is cut short")
    (_, _, hsize, hcrc, current, _, first_usable, last_usable, _, entries_lba, count, esize, ecrc) = (
        _HEADER.unpack_from(head)
    )
    if not _HEADER.size <= hsize <= sector:
        raise TableError(f"its GPT header has an invalid size ({hsize})")
    if crc32(head[:16] + b"\0\0\0\0" + head[20:hsize]) != hcrc:
        raise TableError("its GPT header's checksum does not match")
    if current != 1:
        raise TableError("its GPT header is not the primary one")
    if count > MAX_ENTRIES or esize < _ENTRY.size or esize % 8 or esize > 4096:
        raise TableError(f"its GPT has an implausible entry array ({count} entries of {esize} bytes)")
    array_end = (entries_lba * sector) + count * esize
    if entries_lba < 2 or array_end > disk_size:
        raise TableError("its GPT's entry array lies outside the file")
    if not 2 <= first_usable <= last_usable or (last_usable + 1) * sector > disk_size:
        raise TableError("its GPT's usable range lies outside the file (a truncated image?)")
    data = read_at(entries_lba * sector, count * esize)
    if len(data) != count * esize:
        raise TableError("its GPT's entry array is cut short")
    if crc32(data) != ecrc:
        raise TableError("its GPT's entry array checksum does not match")
    parts: list[Partition] = []
    for i in range(count):
        tguid, pguid, first, last, flags, name = _ENTRY.unpack_from(data, i * esize)
        if tguid == b"\0" * 16:
            continue
        if not first_usable <= first <= last <= last_usable:
            raise TableError(f"its partition {i + 1} lies outside the disk's usable range")
        label = name.decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(
            Partition(
                i + 1, guid(tguid), guid(pguid), first * sector, (last - first + 1) * sector, flags, label
            )
        )
    ordered = sorted(parts, key=lambda p: p.start)
    for i in range(1, len(ordered)):
        a, b = ordered[i - 1], ordered[i]
        if b.start < a.start + a.size:
            raise TableError(f"its partitions {a.number} and {b.number} overlap")
    return parts


def _version_key(label: str) -> list[tuple[int, int | str]]:
    """Labels compared as versions (strverscmp in spirit): digit runs by value."""
    out: list[tuple[int, int | str]] = []
    run = ""
    for ch in label + "\0":
        if ch.isdigit():
            run += ch
            continue
        if run:
            out.append((1, int(run)))
            run = ""
        if ch != "\0":
            out.append((0, ch))
    return out


def _pick(parts: list[Partition], table: dict[str, str], arches: list[str]) -> Partition | None:
    for arch in arches:
        want = table.get(arch)
        found = [p for p in parts if p.type_uuid == want and not p.flags & FLAG_NO_AUTO]
        if found:
            return max(found, key=lambda p: _version_key(p.label))
    return None


class Layout:
    """What to mount from a GPT disk: the root, /usr if separate, and the other partitions by where
    they go."""

    def __init__(self, root: Partition, usr: Partition | None, others: list[tuple[str, Partition]]):
        self.root = root
        self.usr = usr
        self.others = others


def discover(parts: list[Partition]) -> Layout:
    """The partitions to mount: the root of the host's architecture (then its secondary one, then any
    other, which binfmt may run), else the one generic Linux partition, as nspawn does without a
    strict image policy."""
    native = host_arch()
    arches = [native, _SECONDARY.get(native, "")] + [a for a in ROOT if a != native]
    root = _pick(parts, ROOT, arches)
    if root is None:
        generic = [p for p in parts if p.type_uuid == GENERIC_LINUX and not p.flags & FLAG_NO_AUTO]
        if len(generic) > 1:
            raise TableError(
                f"it has no root partition, and {len(generic)} generic Linux partitions: which is root is "
                "not known"
            )
        if not generic:
            raise TableError("it has no root partition (no partition of a root type or generic Linux type)")
        root = generic[0]
    arch = next((a for a, t in ROOT.items() if t == root.type_uuid), native)
    usr = _pick(parts, USR, [arch])
    others: list[tuple[str, Partition]] = []
    for where in ("home", "srv", "var", "var/tmp"):
        found = [p for p in parts if MOUNTED.get(p.type_uuid) == where and not p.flags & FLAG_NO_AUTO]
        if found:
            others.append((where, found[0]))
    return Layout(root, usr, others)


def fs_type(head: bytes) -> str:
    """The file system whose superblock HEAD (the first 70000 bytes of a partition) holds, by magic
    number: the types a root may have, plus vfat and swap to name what a wrong partition holds."""
    if head[1080:1082] == b"\x53\xef":
        return "ext4"  # ext2 and ext3 mount through the ext4 driver
    if head[65600:65608] == b"_BHRfS_M":
        return "btrfs"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[:4] == b"hsqs":
        return "squashfs"
    if head[1024:1028] == b"\xe2\xe1\xf5\xe0":
        return "erofs"
    if head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if head[510:512] == b"\x55\xaa" and (head[82:87] == b"FAT32" or head[54:57] == b"FAT"):
        return "vfat"
    return ""


MOUNTABLE = ("ext4", "btrfs", "xfs", "squashfs", "erofs")


def fs_size(head: bytes, fstype: str) -> int:
    """The size the file system's superblock says it has (0 where not read): a partition smaller than
    that is a truncated image, which the kernel would refuse at mount, or worse, read past."""
    if fstype == "ext4" and len(head) >= 2048:
        blocks = struct.unpack_from("<I", head, 1024 + 4)[0]
        log = struct.unpack_from("<I", head, 1024 + 24)[0]
        if struct.unpack_from("<I", head, 1024 + 0x60)[0] & 0x80:  # INCOMPAT_64BIT: the high half too
            blocks |= struct.unpack_from("<I", head, 1024 + 0x150)[0] << 32
        return int(blocks << (10 + log)) if log < 7 else 1 << 62
    if fstype == "squashfs" and len(head) >= 48:
        return int(struct.unpack_from("<Q", head, 40)[0])  # bytes_used
    return 0
