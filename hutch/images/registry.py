"""pull-oci: an image from an OCI distribution registry (the Docker registry API), as importctl's
pull-oci does.

REF is [REGISTRY/]REPOSITORY[:TAG|@DIGEST], as docker and importctl take it: a first component with
a '.' or ':' (or `localhost`) names the registry, else it is Docker Hub (`library/` before a bare
name). https is used, except for a registry on a loopback address (as docker treats those as
insecure registries) or where REF starts with http://. Anonymous access follows the registry's bearer
challenge once (WWW-Authenticate: Bearer realm=...,service=...,scope=...); a second challenge is
refused, as upstream does.

Every byte is checked against the digest that names it: a manifest fetched by tag against the
digest of its bytes as written into the local layout, by digest against that digest; the config and
each layer as they stream to disk. The downloaded blobs form an OCI layout in the import's own
hidden directory, which transfer.commit_oci turns into the image exactly as it does an archive's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from hutch.errors import ImageError
from hutch.images import names, oci
from hutch.images.store import Image
from hutch.paths import Paths

DOCKER_HUB = "registry-1.docker.io"
MAX_MANIFEST = 4 << 20
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ACCEPT = ", ".join((*oci.MANIFEST_TYPES, *oci.INDEX_TYPES))
_CHUNK = 1 << 20


class Ref:
    def __init__(self, scheme: str, registry: str, repository: str, reference: str) -> None:
        self.scheme = scheme
        self.registry = registry
        self.repository = repository
        self.reference = reference  # a tag, or a digest

    def __str__(self) -> str:
        sep = "@" if ":" in self.reference else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_ref(text: str) -> Ref:
    hint = "a reference is [REGISTRY/]REPOSITORY[:TAG|@DIGEST], like registry.fedoraproject.org/fedora:41"
    scheme = ""
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            scheme, text = prefix[:-3], text[len(prefix) :]
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
        if "/" not in path:
            path = "library/" + path
    repository, at, digest = path.partition("@")
    if at:
        oci.split_digest(digest, "reference")
        reference = digest
    else:
        head, colon, tag = repository.rpartition(":")
        if colon and "/" not in tag:
            repository, reference = head, tag
        else:
            reference = "latest"
        if not _TAG.match(reference):
            raise ImageError(f"Invalid tag '{reference}' in '{text}'.", hint)
    if not _REPO.match(repository) or not registry:
        raise ImageError(f"Invalid image reference '{text}'.", hint)
    host = registry.rpartition(":")[0] if registry.count(":") == 1 else registry
    if not scheme:
        scheme = (
            "http" if host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.") else "https"
        )
    return Ref(scheme, registry, repository, reference)


def _header_params(value: str) -> dict[str, str]:
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', value)}


class Client:
    def __init__(self, ref: Ref) -> None:
        self.ref = ref
        self.base = f"{ref.scheme}://{ref.registry}/v2/{ref.repository}"
        self.token: str | None = None
        self.challenged = False

    def get(self, path: str, accept: str | None = None) -> Any:
        """The response to GET PATH (below the repository), answering one bearer challenge."""
        import http.client
        import urllib.error
        import urllib.request

        url = f"{self.base}/{path}"
        while True:
            req = urllib.request.Request(url)
            if accept:
                req.add_header("Accept", accept)
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                return urllib.request.urlopen(req, timeout=60)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "") if e.headers else ""
                e.close()
                if e.code == 401 and challenge.lower().startswith("bearer ") and not self.challenged:
                    self.challenged = True
                    self.token = self._fetch_token(_header_params(challenge[7:]))
                    continue
                raise ImageError(
                    f"Failed to pull {self.ref}: {_status(e.code, path)}.", _status_hint(e.code)
                ) from None
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
                from hutch.images.download import why

                raise ImageError(
                    f"Failed to pull {self.ref}: {why(e)}.", "is the registry reachable?"
                ) from None

    def _fetch_token(self, params: dict[str, str]) -> str:
        import urllib.error
        import urllib.parse
        import urllib.request

        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise ImageError(f"Failed to pull {self.ref}: the registry's bearer challenge names no realm.")
        query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                doc = json.loads(r.read(1 << 20))
        except urllib.error.HTTPError as e:
            raise ImageError(
                f"Failed to pull {self.ref}: the token service answered HTTP {e.code}.",
                "the repository may need credentials, which pull-oci does not send",
            ) from None
        except (OSError, ValueError) as e:
            raise ImageError(f"Failed to pull {self.ref}: failed to get a bearer token: {e}.") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise ImageError(f"Failed to pull {self.ref}: the token service gave no token.")
        return token

    def manifest(self, reference: str) -> tuple[bytes, str]:
        with self.get(f"manifests/{reference}", ACCEPT) as r:
            data = r.read(MAX_MANIFEST + 1)
            media = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        if len(data) > MAX_MANIFEST:
            raise ImageError(
                f"Failed to pull {self.ref}: its manifest is larger than {MAX_MANIFEST >> 20} MiB."
            )
        return data, media


def _status(code: int, path: str) -> str:
    what = "manifest" if path.startswith("manifests/") else "blob"
    texts = {401: "authentication required", 403: "access denied", 404: f"{what} unknown (HTTP 404)"}
    return texts.get(code, f"HTTP {code}") if code != 404 else texts[404]


def _status_hint(code: int) -> str | None:
    if code in (401, 403):
        return "the repository may need credentials, which pull-oci does not send"
    if code == 404:
        return "check the repository name and tag"
    if code >= 500:
        return "the registry failed; try again later"
    return None


def pull_oci(
    text: str,
    name: str | None,
    paths: Paths,
    *,
    read_only: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> tuple[Image, dict[str, int]]:
    from hutch.images import transfer
    from hutch.images.progress import Progress

    ref = parse_ref(text)
    name = name or ref.repository.rsplit("/", 1)[-1]
    names.check_image_name(name)
    client = Client(ref)
    with transfer.NewImage(name, paths, force=force, what="pull", transfer=("pull-oci", text)) as new:
        layout = new.make_dir()
        os.makedirs(os.path.join(layout, "blobs", "sha256"), 0o700)
        data, media = client.manifest(ref.reference)
        digest = ref.reference if ":" in ref.reference else "sha256:" + hashlib.sha256(data).hexdigest()
        oci.check_data(data, digest, "manifest")
        doc = _json(data, ref)
        if media in oci.INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            _store(layout, data)  # kept, as an archive's index would be, though only its pick is used
            desc = oci.pick_manifest(doc.get("manifests"), "image index")
            digest = str(desc.get("digest"))
            data, media = client.manifest(digest)
            oci.check_data(data, digest, "manifest")
            doc = _json(data, ref)
        _store(layout, data)
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump(
                {
                    "schemaVersion": 2,
                    "manifests": [{"mediaType": media, "digest": digest, "size": len(data)}],
                },
                f,
            )
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        descs = [doc.get("config"), *(doc.get("layers") or [])]
        if not all(isinstance(d, dict) for d in descs) or len(descs) > oci.MAX_LAYERS + 1:
            raise ImageError(f"Failed to pull {ref}: its manifest is malformed.")
        total = sum(
            d.get("size") or 0 for d in descs if isinstance(d, dict) and isinstance(d.get("size"), int)
        )
        with Progress(f"Downloading {name}", total, progress) as bar:
            for i, d in enumerate(descs):
                _fetch_blob(client, d, layout, "config" if i == 0 else f"layer {i}", bar)
        return transfer.commit_oci(new, layout, read_only, progress)


def _json(data: bytes, ref: Ref) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ImageError(f"Failed to pull {ref}: its manifest is not a JSON object.")
    return doc


def _store(layout: str, data: bytes) -> None:
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", hexd), "wb") as f:
        f.write(data)


def _fetch_blob(client: Client, desc: dict[str, Any], layout: str, what: str, bar: Any) -> None:
    """Download the blob DESC names into the layout, refusing it unless its size and digest match."""
    from hutch.errors import io_hint

    algo, hexd = oci.split_digest(desc.get("digest"), what)
    size = desc.get("size")
    if not isinstance(size, int) or size < 0:
        raise ImageError(f"Failed to pull {client.ref}: the {what}'s descriptor has no valid size.")
    d = os.path.join(layout, "blobs", algo)
    os.makedirs(d, 0o700, exist_ok=True)
    path = os.path.join(d, hexd)
    if os.path.exists(path):
        return  # the same blob twice: already checked
    hasher = hashlib.new(algo)
    got = 0
    with client.get(f"blobs/{desc['digest']}") as r, open(path, "wb") as f:
        try:
            while chunk := r.read(_CHUNK):
                got += len(chunk)
                if got > size:
                    raise ImageError(
                        f"Failed to pull {client.ref}: its {what} is larger than its descriptor says."
                    )
                hasher.update(chunk)
                f.write(chunk)
                bar(len(chunk))
        except OSError as e:
            if e.errno is not None:
                raise ImageError(f"Failed to write the {what}: {e.strerror}.", io_hint(e.errno)) from None
            raise ImageError(
                f"Failed to pull {client.ref}: the download of its {what} failed: {e}.", "try again"
            ) from None
    if got != size:
        raise ImageError(
            f"Failed to pull {client.ref}: its {what} is truncated: {got} of {size} bytes.", "try again"
        )
    if hasher.hexdigest() != hexd:
        raise ImageError(
            f"Failed to pull {client.ref}: its {what} does not match its digest {desc['digest']}.",
            "the registry's data is corrupt or was tampered with; nothing was imported",
        )
