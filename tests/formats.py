"""Faithful copies of the downloads users turn into machines, each built around a real OS tree with the
tools that make the originals (GNU tar, sfdisk, mke2fs, mkfs.fat, skopeo, qemu-img), never by hand
where a tool exists:

- Ubuntu base (ubuntu-base-*-amd64.tar.gz): a gzip tar of the root, members `./bin`, `./etc`, ...;
- Debian genericcloud (debian-12-genericcloud-amd64.tar.xz): an xz tar holding one sparse `disk.raw`,
  a GPT disk with the root (ext4, the x86-64 root type) as partition 1, BIOS boot as 14, ESP as 15;
- Fedora Container Base (Fedora-Container-Base-Generic-*.oci.tar.xz): an xz-compressed OCI image
  archive (a tar of an OCI layout, as skopeo's oci-archive: writes);
- Arch Linux bootstrap (archlinux-bootstrap-x86_64.tar.zst): a zstd tar whose one top-level directory
  `root.x86_64/` holds the root;
- Arch Linux ARM (ArchLinuxARM-aarch64-latest.tar.gz): a gzip tar of an aarch64 root;
- a `docker save` archive (skopeo's docker-archive:), and an OCI layout with zstd layers.

The OCI layout itself is written here (blobs, manifest, config, index) and then read back by skopeo,
which refuses a layout that breaks the image spec: every other OCI format is skopeo's conversion of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
USR_X86_64 = "8484680C-9521-48C6-9C11-B0720656F69E"
HOME = "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"
GENERIC = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MIB = 1 << 20


def sh(*cmd: str | Path, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def tree_mib(tree: Path) -> int:
    out = sh("du", "-sm", "--apparent-size", tree).stdout.split()[0]
    return int(out)


def tarball(tree: Path, out: Path, compress: str | None = None, top: str = ".") -> Path:
    """A tar of TREE as its members `TOP/...` (GNU tar, numeric owners), compressed by COMPRESS."""
    flags = {None: [], "gzip": ["--gzip"], "xz": ["--xz"], "zstd": ["--zstd"]}[compress]
    # Member names only: symlink targets such as ../usr/lib/os-release stay as they are.
    transform = [] if top == "." else [f"--transform=s,^\\.,{top},S"]
    sh("tar", "-C", tree, "--numeric-owner", "--xattrs", *flags, *transform, "-cf", out, ".")
    return out


def ext4_into(disk: Path, tree: Path | None, offset: int, size: int) -> None:
    """An ext4 file system holding TREE, written into DISK at OFFSET (mke2fs -d, no mount)."""
    populate = ["-d", str(tree)] if tree is not None else []
    sh("mke2fs", "-q", "-F", "-t", "ext4", *populate, "-E", f"offset={offset}", disk, f"{size // 1024}k")


def gpt_disk(
    out: Path,
    parts: list[tuple[str, int, Path | bool, str]],
    *,
    size_mib: int | None = None,
) -> Path:
    """A GPT disk image by sfdisk: PARTS as (type GUID, size in MiB, content, label) from 1 MiB on, the
    last taking what remains; content is a tree for an ext4 file system holding it, True for an empty
    ext4, False for no file system at all."""
    total = size_mib or (sum(p[1] for p in parts) + 2)
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(total * MIB)
    script = ["label: gpt", "unit: sectors", "first-lba: 2048"]
    start = 2048
    for i, (ptype, mib, _, label) in enumerate(parts):
        size = "" if i == len(parts) - 1 else f", size={mib * 2048}"
        script.append(f"start={start}{size}, type={ptype}, name={label}")
        start += mib * 2048
    sh("sfdisk", "-q", out, input="\n".join(script).encode() + b"\n")
    table = json.loads(sh("sfdisk", "--json", out).stdout)["partitiontable"]["partitions"]
    for (_, _, content, _), p in zip(parts, table, strict=True):
        if content is not False:
            ext4_into(out, content if isinstance(content, Path) else None, p["start"] * 512, p["size"] * 512)
    return out


def debian_cloud(tree: Path, work: Path) -> Path:
    """debian-12-genericcloud-amd64.tar.xz: one sparse disk.raw, root as 1, BIOS boot 14, ESP 15."""
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "disk.raw"
    root_mib = tree_mib(tree) * 3 // 2 + 64
    total = root_mib + 128 + 4
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as f:
        f.truncate(total * MIB)
    # Debian's layout: ESP and BIOS boot first on disk, but numbered 15 and 14, root (1) after them.
    script = (
        "label: gpt\nunit: sectors\nfirst-lba: 2048\n"
        f'{disk}1 : start=264192, type={ROOT_X86_64}, name="root"\n'
        f"{disk}14 : start=2048, size=6144, type={BIOS_BOOT}\n"
        f"{disk}15 : start=8192, size=256000, type={ESP}\n"
    )
    sh("sfdisk", "-q", disk, input=script.encode())
    table = {
        p["node"]: p for p in json.loads(sh("sfdisk", "--json", disk).stdout)["partitiontable"]["partitions"]
    }
    root = table[f"{disk}1"]
    ext4_into(disk, tree, root["start"] * 512, root["size"] * 512)
    esp = table[f"{disk}15"]
    sh("mkfs.fat", "-F", "32", "--offset", str(esp["start"]), disk, str(esp["size"] // 2))
    out = work / "debian-12-genericcloud-amd64.tar.xz"
    sh("tar", "-C", work, "--sparse", "-I", "xz -T0 -1", "-cf", out, "disk.raw")
    disk.unlink()
    return out


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def oci_layout(
    layout: Path,
    layers: list[Path],
    *,
    config: dict[str, object] | None = None,
    arch: str = "amd64",
    tag: str = "latest",
) -> Path:
    """An OCI image layout at LAYOUT whose layers are the trees LAYERS (gzip tars, in order), its config
    carrying CONFIG (Env, Cmd, ...). Checked by skopeo before it is returned."""
    (layout / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    descs, diff_ids = [], []
    for tree in layers:
        plain = sh("tar", "-C", tree, "--numeric-owner", "-cf", "-", ".").stdout
        packed = sh("gzip", "-n", "-1", input=plain).stdout
        digest, size = _blob(layout, packed)
        descs.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}
        )
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
    cfg = {
        "architecture": arch,
        "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdigest, csize = _blob(layout, json.dumps(cfg).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cdigest,
            "size": csize,
        },
        "layers": descs,
    }
    mdigest, msize = _blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": tag},
                "platform": {"architecture": arch, "os": "linux"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    info = json.loads(sh("skopeo", "inspect", f"oci:{layout}:{tag}").stdout)
    assert len(info["Layers"]) == len(layers)
    return layout


def skopeo_copy(src: str, dst: str, *opts: str) -> None:
    sh("skopeo", "copy", "-q", *opts, src, dst)


def fedora_oci(layout: Path, work: Path) -> Path:
    """Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar.xz: an OCI archive, xz-compressed."""
    archive = work / "Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar"
    archive.unlink(missing_ok=True)
    skopeo_copy(f"oci:{layout}:latest", f"oci-archive:{archive}:latest")
    sh("xz", "-T0", "-1", "-f", archive)
    return archive.with_name(archive.name + ".xz")


def docker_save(layout: Path, out: Path) -> Path:
    out.unlink(missing_ok=True)
    skopeo_copy(f"oci:{layout}:latest", f"docker-archive:{out}:fedora:41")
    return out


def zstd_layout(layout: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    skopeo_copy(
        f"oci:{layout}:latest", f"oci:{out}:latest", "--dest-compress-format", "zstd", "--dest-compress"
    )
    return out


def whiteout_layers(work: Path) -> tuple[Path, Path]:
    """Two layers over an OS tree: the first adds files, the second removes one (.wh.), empties a
    directory of the first's files (.wh..wh..opq) and adds its own, and replaces a directory by a file."""
    one, two = work / "layer-one", work / "layer-two"
    for d in (one / "opt/dir", one / "srv/dir", one / "etc", two / "opt/dir", two / "srv", two / "etc"):
        d.mkdir(parents=True, exist_ok=True)
    (one / "etc/motd-gone").write_text("removed by the next layer\n")
    (one / "opt/dir/old").write_text("hidden by the opaque whiteout\n")
    (one / "srv/dir/inside").write_text("gone with its directory\n")
    (one / "opt/kept").write_text("kept\n")
    (two / "etc/.wh.motd-gone").write_text("")
    (two / "opt/dir/.wh..wh..opq").write_text("")
    (two / "opt/dir/new").write_text("from layer two\n")
    (two / "srv/dir").write_text("a file now\n")
    os.chmod(two / "srv/dir", 0o640)
    return one, two
