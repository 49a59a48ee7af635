"""OCI images and `docker save` archives, imported as directory images.

An OCI image layout (oci-layout, index.json, blobs/ALGO/HEX; a directory, or a tar of one as skopeo's
`oci-archive:` and Fedora's .oci.tar.xz are) or a `docker save` archive (manifest.json naming a config
and layer tars) becomes one tree: the manifest for this host's architecture is picked from the index,
and its layers are applied in order by the confined extractor in layer mode (whiteouts `.wh.NAME` and
`.wh..wh..opq` honoured; every rule of the tar importer holds for each layer). Nothing is trusted that
a digest does not vouch for: each manifest and config is checked against the digest that names it
before it is parsed, each layer against its digest as it streams (compressed) and against the
config's diff_ids (uncompressed). A mismatch refuses the import; the half-built tree is discarded.

The config's Env, Entrypoint/Cmd, WorkingDir and User are kept in the image's `oci` record (see
records.py) and used when the image is spawned without a command and without -b, as nspawn's
--oci-bundle uses a bundle's process settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from typing import Any

from hutch.errors import ImageError

MAX_JSON = 4 << 20
MAX_NESTING = 4
MAX_LAYERS = 256
_ALGOS = {"sha256": 64, "sha512": 128}
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)


class Layer:
    def __init__(self, path: str, digest: str | None, size: int | None, diff_id: str | None) -> None:
        self.path = path  # the blob's file
        self.digest = digest  # of the file as stored (None: a docker save layer, checked by diff_id)
        self.size = size
        self.diff_id = diff_id  # of the uncompressed tar


class Image:
    def __init__(self, config: dict[str, Any], layers: list[Layer]) -> None:
        self.config = config
        self.layers = layers
        for i, layer in enumerate(layers):  # every blob there before any is applied
            os.close(_open_blob(layer.path, f"layer {i + 1}"))

    def size(self) -> int:
        return sum(os.stat(layer.path).st_size for layer in self.layers)


def host_goarch() -> str:
    return _GOARCH.get(os.uname().machine, os.uname().machine)


def kind(root: str) -> str:
    """'oci' for an OCI image layout, 'docker' for a docker save archive, else ''."""

    def is_file(name: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(os.path.join(root, name)).st_mode)
        except OSError:
            return False

    if is_file("oci-layout") and is_file("index.json"):
        return "oci"
    if is_file("manifest.json"):
        return "docker"
    return ""


def split_digest(digest: object, what: str) -> tuple[str, str]:
    if not isinstance(digest, str):
        raise ImageError(f"The OCI image's {what} has no digest.")
    algo, _, hexpart = digest.partition(":")
    if _ALGOS.get(algo) != len(hexpart) or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"The OCI image's {what} has an invalid digest '{digest[:100]}'.")
    return algo, hexpart


def _inside(root: str, rel: object, what: str) -> str:
    """ROOT/REL for a path from the archive's JSON: relative, no '..', not through a symlink."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/") or "\0" in rel:
        raise ImageError(f"The image's {what} names an invalid path {str(rel)[:100]!r}.")
    path = os.path.join(root, rel)
    parent = root
    for part in rel.split("/")[:-1]:
        parent = os.path.join(parent, part)
        if not stat.S_ISDIR(os.lstat(parent).st_mode):
            raise ImageError(f"The image's {what} path {rel!r} goes through something not a directory.")
    return path


def _open_blob(path: str, what: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(
            f"The OCI image's {what} is missing from the archive ({os.path.basename(path)})."
        ) from None
    except OSError as e:
        raise ImageError(f"Failed to open the OCI image's {what}: {e.strerror}.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"The OCI image's {what} is not a regular file.")
    return fd


def read_json(path: str, what: str, digest: str | None = None, size: object = None) -> dict[str, Any]:
    """A JSON document from the archive, at most MAX_JSON bytes, checked against DIGEST (and SIZE)
    before it is parsed."""
    fd = _open_blob(path, what)
    try:
        data = os.read(fd, MAX_JSON + 1)
        while len(data) <= MAX_JSON:
            more = os.read(fd, MAX_JSON + 1 - len(data))
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    if len(data) > MAX_JSON:
        raise ImageError(f"The OCI image's {what} is larger than {MAX_JSON >> 20} MiB.")
    if digest is not None:
        check_data(data, digest, what)
    if isinstance(size, int) and size != len(data):
        raise ImageError(f"The OCI image's {what} is {len(data)} bytes; its descriptor says {size}.")
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise ImageError(f"The OCI image's {what} is not valid JSON: {e}.") from None
    if not isinstance(doc, dict):
        if isinstance(doc, list) and what == "manifest.json":
            return {"list": doc}
        raise ImageError(f"The OCI image's {what} is not a JSON object.")
    return doc


def check_data(data: bytes, digest: str, what: str) -> None:
    algo, want = split_digest(digest, what)
    got = hashlib.new(algo, data).hexdigest()
    if got != want:
        raise ImageError(
            f"The OCI image's {what} does not match its digest: got {algo}:{got}, expected {digest}.",
            "the archive is corrupt or was tampered with; nothing was imported",
        )


def pick_manifest(manifests: object, what: str) -> dict[str, Any]:
    """The index entry for this host: linux and its architecture; a lone entry without a platform."""
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"The OCI image's {what} lists no manifests.")
    entries = [m for m in manifests if isinstance(m, dict)]
    arch = host_goarch()
    usable = []
    for m in entries:
        platform = m.get("platform")
        if isinstance(platform, dict):
            if platform.get("os") == "linux" and platform.get("architecture") == arch:
                usable.append(m)
        elif len(entries) == 1:
            usable.append(m)
    if not usable:
        found = sorted(
            {
                f"{p.get('os')}/{p.get('architecture')}"
                for m in entries
                if isinstance(p := m.get("platform"), dict)
            }
        )
        raise ImageError(
            f"The OCI image has no manifest for linux/{arch}.",
            f"it has {', '.join(found) or 'none with a platform'}",
        )
    return dict(usable[0])


def resolve_layout(root: str) -> Image:
    """The image an OCI layout at ROOT holds for this host."""
    blobs = os.path.join(root, "blobs")

    def blob(desc: object, what: str) -> tuple[str, dict[str, Any]]:
        if not isinstance(desc, dict):
            raise ImageError(f"The OCI image's {what} descriptor is malformed.")
        algo, hexpart = split_digest(desc.get("digest"), what)
        return _inside(blobs, f"{algo}/{hexpart}", what), desc

    index = read_json(os.path.join(root, "index.json"), "index.json")
    desc = pick_manifest(index.get("manifests"), "index.json")
    for _ in range(MAX_NESTING):
        path, desc = blob(desc, "manifest")
        doc = read_json(path, "manifest", desc["digest"], desc.get("size"))
        media = doc.get("mediaType") or desc.get("mediaType")
        if media in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            desc = pick_manifest(doc.get("manifests"), "image index")
            continue
        return _from_manifest(doc, lambda d, w: blob(d, w)[0])
    raise ImageError(f"The OCI image's indexes nest more than {MAX_NESTING} deep.")


def _from_manifest(manifest: dict[str, Any], path_of: Callable[[object, str], str]) -> Image:
    config_desc = manifest.get("config")
    if not isinstance(config_desc, dict):
        raise ImageError("The OCI image's manifest names no config.")
    config = read_json(
        path_of(config_desc, "config"), "config", config_desc.get("digest"), config_desc.get("size")
    )
    descs = manifest.get("layers")
    if not isinstance(descs, list) or len(descs) > MAX_LAYERS:
        raise ImageError("The OCI image's manifest has no valid list of layers.")
    diff_ids = _diff_ids(config, len(descs))
    layers = []
    for i, d in enumerate(descs):
        what = f"layer {i + 1}"
        if not isinstance(d, dict):
            raise ImageError(f"The OCI image's {what} descriptor is malformed.")
        media = d.get("mediaType")
        if media not in LAYER_TYPES:
            raise ImageError(f"The OCI image's {what} has an unsupported media type {str(media)[:100]!r}.")
        size = d.get("size")
        layers.append(
            Layer(path_of(d, what), d.get("digest"), size if isinstance(size, int) else None, diff_ids[i])
        )
    return Image(config, layers)


def _diff_ids(config: dict[str, Any], count: int) -> list[str | None]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if ids is None:
        return [None] * count
    if not isinstance(ids, list) or len(ids) != count:
        raise ImageError(f"The OCI image's config lists {len(ids or [])} layer digests for {count} layers.")
    for d in ids:
        split_digest(d, "config's layer digest")
    return list(ids)


def resolve_docker(root: str) -> Image:
    """The image a `docker save` archive at ROOT holds (its first, for a save of several)."""
    doc = read_json(os.path.join(root, "manifest.json"), "manifest.json")
    entries = doc.get("list")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ImageError("The docker archive's manifest.json lists no image.")
    entry = entries[0]
    config_path = _inside(root, entry.get("Config"), "config")
    # docker save names the config by its digest (HEX.json, or blobs/sha256/HEX since Docker 25).
    base = os.path.basename(config_path).removesuffix(".json")
    digest = f"sha256:{base}" if len(base) == 64 else None
    config = read_json(config_path, "config", digest)
    paths = entry.get("Layers")
    if not isinstance(paths, list) or len(paths) > MAX_LAYERS:
        raise ImageError("The docker archive's manifest.json has no valid list of layers.")
    diff_ids = _diff_ids(config, len(paths))
    layers = []
    for i, rel in enumerate(paths):
        path = _inside(root, rel, f"layer {i + 1}")
        name = os.path.basename(path)
        layer_digest = f"sha256:{name}" if len(name) == 64 and "blobs" in str(rel).split("/") else None
        if diff_ids[i] is None and layer_digest is None:
            raise ImageError(f"The docker archive's layer {i + 1} has no digest to check it against.")
        layers.append(Layer(path, layer_digest, None, diff_ids[i]))
    return Image(config, layers)


def resolve(root: str) -> Image:
    return resolve_layout(root) if kind(root) == "oci" else resolve_docker(root)


def build(image: Image, rootfs: str, progress: Any = None) -> dict[str, int]:
    """Apply IMAGE's layers in order onto the empty directory ROOTFS. Returns the extractor's counts."""
    from hutch.images import unpack

    totals: dict[str, int] = {}
    for i, layer in enumerate(image.layers):
        what = f"layer {i + 1}"
        fd = _open_blob(layer.path, what)
        try:
            algo = split_digest(layer.digest, what)[0] if layer.digest else "sha256"
            hasher = hashlib.new(algo)
            plain = hashlib.new(split_digest(layer.diff_id, what)[0]) if layer.diff_id else None
            counted = unpack.Counted(unpack.FdReader(fd), progress, hasher)
            stats = unpack.extract_stream(
                counted, f"the OCI image's {what}", rootfs, layer=True, plain_hasher=plain
            )
        finally:
            os.close(fd)
        if layer.digest and f"{algo}:{hasher.hexdigest()}" != layer.digest:
            raise ImageError(
                f"The OCI image's {what} does not match its digest: got {algo}:{hasher.hexdigest()}, "
                f"expected {layer.digest}.",
                "the archive is corrupt or was tampered with; nothing was imported",
            )
        if layer.size is not None and counted.total != layer.size:
            raise ImageError(
                f"The OCI image's {what} is {counted.total} bytes; its descriptor says {layer.size}."
            )
        if plain is not None and layer.diff_id and f"{plain.name}:{plain.hexdigest()}" != layer.diff_id:
            raise ImageError(
                f"The OCI image's {what} unpacks to other content than its config's digest says.",
                "the archive is corrupt or was tampered with; nothing was imported",
            )
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    return totals


def process_record(config: dict[str, Any]) -> bytes:
    """What the spawn of an image with no command uses from its config, as the `oci` record."""
    c = config.get("config") if isinstance(config.get("config"), dict) else {}
    assert isinstance(c, dict)

    def strings(v: object) -> list[str]:
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []

    out = {
        "env": [e for e in strings(c.get("Env")) if "=" in e],
        "entrypoint": strings(c.get("Entrypoint")),
        "cmd": strings(c.get("Cmd")),
        "workdir": c.get("WorkingDir") if isinstance(c.get("WorkingDir"), str) else "",
        "user": c.get("User") if isinstance(c.get("User"), str) else "",
        "architecture": config.get("architecture") if isinstance(config.get("architecture"), str) else "",
    }
    return json.dumps(out, sort_keys=True).encode()


def parse_record(raw: bytes) -> dict[str, Any]:
    """The `oci` record's payload, with every field of the right type (an unreadable one: none)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}

    def strings(key: str) -> list[str]:
        v = doc.get(key)
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []

    def text(key: str) -> str:
        v = doc.get(key)
        return v if isinstance(v, str) else ""

    return {
        "env": strings("env"),
        "entrypoint": strings("entrypoint"),
        "cmd": strings("cmd"),
        "workdir": text("workdir"),
        "user": text("user"),
    }
