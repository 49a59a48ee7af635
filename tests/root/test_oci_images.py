"""OCI images and docker save archives: layers with whiteouts applied in order, every digest checked,
the config's process used, hostile layers held to the tar importer's rules, and pull-oci from a real
registry server (Debian's docker-registry, the distribution project's server) on 127.0.0.1 behind an
anonymous bearer-token front, as Docker Hub and most registries answer. The layouts are written by
tests/formats.py, read back by skopeo, and every other format is skopeo's conversion of them."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from formats import docker_save, fedora_oci, oci_layout, sh, skopeo_copy, whiteout_layers, zstd_layout

from conftest import run

CONFIG = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ['echo "$GREETING from $(pwd) as $(id -u)"'],
    "WorkingDir": "/opt",
    "User": "app",
}


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def store(hutch_env: Path) -> list[str]:
    return sorted(e for e in os.listdir(hutch_env / "images") if not e.endswith(".lck"))


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, busybox_template: Path) -> Path:
    """Three layers: a busybox OS tree, then two that add, remove and replace (formats.whiteout_layers);
    the second also adds the user the config runs as."""
    work = tmp_path_factory.mktemp("oci")
    one, two = whiteout_layers(work)
    (two / "etc/passwd").write_text(
        (busybox_template / "etc/passwd").read_text() + "app:x:1000:1000::/:/bin/sh\n"
    )
    return oci_layout(work / "layout", [busybox_template, one, two], config=CONFIG)


@pytest.fixture(scope="module")
def formats(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Each format as (verb, path)."""
    work = tmp_path_factory.mktemp("formats")
    oci_archive = work / "image.oci.tar"
    skopeo_copy(f"oci:{layout}:latest", f"oci-archive:{oci_archive}:latest")
    return {
        "layout directory": ("import-fs", layout),
        "oci-archive": ("import-tar", oci_archive),
        "Fedora .oci.tar.xz": ("import-tar", fedora_oci(layout, work)),
        "docker save": ("import-tar", docker_save(layout, work / "docker.tar")),
        "zstd layers": ("import-fs", zstd_layout(layout, work / "zstd")),
    }


def check_tree(root: Path) -> None:
    assert not (root / "etc/motd-gone").exists()
    assert sorted(os.listdir(root / "opt/dir")) == ["new"]
    assert (root / "opt/kept").read_text() == "kept\n"
    st = os.lstat(root / "srv/dir")
    assert (root / "srv/dir").is_file() and st.st_mode & 0o777 == 0o640
    assert (root / "bin/busybox").is_file()  # the first layer is there under the others


@pytest.mark.parametrize(
    "fmt", ["layout directory", "oci-archive", "Fedora .oci.tar.xz", "docker save", "zstd layers"]
)
def test_each_format_gives_the_layered_tree(
    fmt: str, formats: dict[str, tuple[str, Path]], hutch_env: Path
) -> None:
    verb, path = formats[fmt]
    r = run(verb, str(path), "img", timeout=120)
    assert r.returncode == 0, r.stderr
    check_tree(hutch_env / "images/img")
    # No command and no -b: the image's own process, with its Env, WorkingDir and User.
    r = run("spawn", "-q", "-M", "img")
    assert (r.returncode, r.stdout) == (0, "hello from /opt as 1000\n"), r.stderr
    assert store(hutch_env) == [".#img.oci", "img"]


def test_the_command_line_and_clones_keep_their_say(
    formats: dict[str, tuple[str, Path]], hutch_env: Path
) -> None:
    run("import-fs", str(formats["layout directory"][1]), "img", check=True, timeout=120)
    r = run("spawn", "-q", "-M", "img", "-u", "root", "--chdir=/", "-E", "GREETING=bye")
    assert r.stdout == "bye from / as 0\n", r.stderr
    assert run("spawn", "-q", "-M", "img", "/bin/echo", "mine").stdout == "mine\n"
    run("clone", "img", "copy", check=True)
    run("rename", "copy", "moved", check=True)
    assert run("spawn", "-q", "-M", "moved").stdout == "hello from /opt as 1000\n"
    run("remove", "moved", "img", check=True)
    assert store(hutch_env) == []


# ---------------------------------------------------------------- digests, missing blobs


def _copy(layout: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(layout, dst)
    return dst


def _manifest(layout: Path) -> tuple[dict[str, object], Path]:
    index = json.loads((layout / "index.json").read_text())
    path = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    return json.loads(path.read_text()), path


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs/sha256" / digest.split(":")[1]


def _tamper_layer(layout: Path) -> None:
    manifest, _ = _manifest(layout)
    layer = _blob(layout, manifest["layers"][1]["digest"])  # type: ignore[index]
    # Another valid layer under the first one's name: its digest is all that can tell.
    layer.write_bytes(
        sh("gzip", "-n", "-1", input=sh("tar", "-cf", "-", "-C", "/etc", "hostname").stdout).stdout
    )


def _tamper_config(layout: Path) -> None:
    manifest, _ = _manifest(layout)
    config = _blob(layout, manifest["config"]["digest"])  # type: ignore[index]
    config.write_text(config.read_text().replace("hello", "HELLO"))


def _tamper_manifest(layout: Path) -> None:
    _, path = _manifest(layout)
    path.write_text(path.read_text().replace('"schemaVersion": 2', '"schemaVersion":2'))


def _missing_blob(layout: Path) -> None:
    manifest, _ = _manifest(layout)
    _blob(layout, manifest["layers"][2]["digest"]).unlink()  # type: ignore[index]


def _forge(layout: Path, change_config: object, manifest: dict[str, object] | None = None) -> None:
    """A consistent forgery: the config changed by CHANGE_CONFIG(config), its new digest written into
    the manifest (MANIFEST, if given, else the layout's), and the manifest's into the index."""
    manifest = manifest or _manifest(layout)[0]
    cpath = _blob(layout, manifest["config"]["digest"])  # type: ignore[index]
    config = json.loads(cpath.read_text())
    change_config(config)  # type: ignore[operator]
    data = json.dumps(config).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    manifest["config"] = {**manifest["config"], "digest": f"sha256:{digest}", "size": len(data)}  # type: ignore[dict-item]
    mdata = json.dumps(manifest).encode()
    mdigest = hashlib.sha256(mdata).hexdigest()
    (layout / "blobs/sha256" / mdigest).write_bytes(mdata)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{mdigest}", size=len(mdata))
    (layout / "index.json").write_text(json.dumps(index))


def _wrong_diff_id(layout: Path) -> None:
    """A config whose diff_ids no longer describe the layers, everything else consistent."""
    _forge(layout, lambda c: c["rootfs"]["diff_ids"].__setitem__(1, "sha256:" + "0" * 64))


TAMPER = {
    "a layer": (_tamper_layer, "layer 2 does not match its digest"),
    "the config": (_tamper_config, "config does not match its digest"),
    "the manifest": (_tamper_manifest, "manifest does not match its digest"),
    "a missing blob": (_missing_blob, "layer 3 is missing from the archive"),
    "the config's diff_ids": (_wrong_diff_id, "unpacks to other content"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_what_a_digest_does_not_vouch_for_is_refused(
    case: str, layout: Path, hutch_env: Path, tmp_path: Path
) -> None:
    tamper, words = TAMPER[case]
    bad = _copy(layout, tmp_path)
    tamper(bad)
    line = one_line(run("import-fs", str(bad), "bad", timeout=120))
    assert words in line, line
    archive = tmp_path / "bad.tar"
    sh("tar", "-C", bad, "-cf", archive, ".")
    line = one_line(run("import-tar", str(archive), "bad", timeout=120))
    assert words in line, line
    assert store(hutch_env) == []


def test_an_index_for_another_architecture_names_what_it_has(
    layout: Path, hutch_env: Path, tmp_path: Path
) -> None:
    bad = _copy(layout, tmp_path)
    index = json.loads((bad / "index.json").read_text())
    index["manifests"][0]["platform"] = {"os": "linux", "architecture": "s390x"}
    (bad / "index.json").write_text(json.dumps(index))
    line = one_line(run("import-fs", str(bad), "bad"))
    assert "no manifest for linux/amd64" in line and "linux/s390x" in line
    assert store(hutch_env) == []


# ---------------------------------------------------------------- hostile layers


def _tar(members: list[tuple[str, str, str]]) -> bytes:
    """A tar (Python's tarfile: no honest tool writes these) of (type, name, content or link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data.encode()))
    return buf.getvalue()


def _layout_with_layer(tmp_path: Path, base: Path, layer: bytes) -> Path:
    """An OCI layout of the busybox tree and one hand-made layer, with correct digests throughout."""
    out = oci_layout(tmp_path / "hostile", [base])
    manifest, _ = _manifest(out)
    packed = sh("gzip", "-n", input=layer).stdout
    digest = hashlib.sha256(packed).hexdigest()
    (out / "blobs/sha256" / digest).write_bytes(packed)
    manifest["layers"].append(  # type: ignore[attr-defined]
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": f"sha256:{digest}",
            "size": len(packed),
        }
    )
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    _forge(out, lambda c: c["rootfs"]["diff_ids"].append(diff_id), manifest)
    return out


def test_hostile_layers_meet_every_rule_of_the_tar_importer(
    busybox_template: Path, hutch_env: Path, tmp_path: Path
) -> None:
    target = tmp_path / "host-target"
    target.mkdir()
    (target / "file").write_text("host\n")
    cases = {
        "a dot-dot name": ([("file", "../escape", "x")], "'..'"),
        "a write through a symlink": (
            [("sym", "etc/evil", str(target)), ("file", "etc/evil/file", "owned")],
            "symlink",
        ),
        "a whiteout through a symlink": (
            [("sym", "link", str(target)), ("file", "link/.wh.file", "")],
            "symlink",
        ),
        "a whiteout of no name": ([("file", "etc/.wh.", "")], "no valid name"),
        "a whiteout of dot-dot": ([("file", "etc/.wh...", "")], "no valid name"),
    }
    for case, (members, words) in cases.items():
        hostile = _layout_with_layer(tmp_path / case.replace(" ", "-"), busybox_template, _tar(members))
        line = one_line(run("import-fs", str(hostile), "hostile", timeout=120))
        assert words in line, (case, line)
        assert (target / "file").read_text() == "host\n" and sorted(os.listdir(target)) == ["file"]
        assert not (tmp_path / "escape").exists()
    assert store(hutch_env) == []


# ---------------------------------------------------------------- pull-oci from a registry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """docker-registry on 127.0.0.1 with the layout pushed to it as deb:latest (by skopeo)."""
    d = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (d / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n"
    )
    p = subprocess.Popen(
        ["docker-registry", "serve", str(d / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/v2/")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, "docker-registry did not start"
            time.sleep(0.1)
        skopeo_copy(
            f"oci:{layout}:latest", f"docker://127.0.0.1:{port}/deb:latest", "--dest-tls-verify=false"
        )
        yield port
    finally:
        p.kill()
        p.wait()


class _Front(http.server.BaseHTTPRequestHandler):
    """A registry's front door: /v2/ needs a bearer token, which /token hands out to anyone (Docker
    Hub's anonymous flow); MODE makes it misbehave."""

    upstream = 0
    mode = ""
    TOKEN = "an-anonymous-token"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if self.path.startswith("/token"):
            if self.mode == "token-401":
                return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
            assert "scope=repository%3Adeb%3Apull" in self.path or "scope=repository:deb:pull" in self.path
            return self._send(200, json.dumps({"token": self.TOKEN}).encode())
        if self.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            challenge = f'Bearer realm="http://{host}/token",service="test",scope="repository:deb:pull"'
            return self._send(401, b"{}", {"WWW-Authenticate": challenge})
        if self.mode == "500":
            return self._send(500, b"internal error")
        c = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=30)
        c.request("GET", self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
        r = c.getresponse()
        body = r.read()
        if self.mode == "corrupt-blob" and "/blobs/" in self.path and len(body) > 4096:
            body = body[:2048] + bytes([body[2048] ^ 1]) + body[2049:]
        keep = {k: v for k, v in r.getheaders() if k.lower() in ("content-type", "docker-content-digest")}
        self._send(r.status, body, keep)


@pytest.fixture
def front(registry: int) -> Iterator[int]:
    _Front.upstream = registry
    _Front.mode = ""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Front)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_pull_oci_from_a_registry(front: int, hutch_env: Path) -> None:
    r = run("pull-oci", f"127.0.0.1:{front}/deb:latest", timeout=120)
    assert r.returncode == 0, r.stderr
    assert store(hutch_env) == [".#deb.oci", "deb"]
    check_tree(hutch_env / "images/deb")
    assert run("spawn", "-q", "-M", "deb").stdout == "hello from /opt as 1000\n"


@pytest.mark.parametrize(
    ("mode", "ref", "words"),
    [
        ("", "nope:latest", "manifest unknown (HTTP 404)"),
        ("", "deb:no-such-tag", "manifest unknown (HTTP 404)"),
        ("token-401", "deb:latest", "token service answered HTTP 401"),
        ("500", "deb:latest", "HTTP 500"),
        ("corrupt-blob", "deb:latest", "does not match its digest"),
    ],
)
def test_a_registry_that_fails_leaves_nothing(
    mode: str, ref: str, words: str, front: int, hutch_env: Path
) -> None:
    _Front.mode = mode
    line = one_line(run("pull-oci", f"127.0.0.1:{front}/{ref}", "img", timeout=120))
    assert words in line, line
    assert store(hutch_env) == []


def test_bad_references_and_unreachable_registries(hutch_env: Path) -> None:
    for ref, words in (
        ("UPPER/case", "Invalid image reference"),
        ("deb:bad tag", "Invalid tag"),
        ("deb@sha256:1234", "invalid digest"),
        (f"127.0.0.1:{_free_port()}/deb", "is the registry reachable?"),
    ):
        assert words in one_line(run("pull-oci", ref, "img")), ref
    assert store(hutch_env) == []
