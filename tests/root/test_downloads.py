"""The downloads the project's documents tell users to make, as faithful copies (tests/formats.py) of
each format around a real Debian tree: every one becomes a machine through import-tar, and through
pull-tar from an HTTP server with SHA256SUMS, that runs `. /etc/os-release; uname -m` and boots to
`running`; the aarch64 one through qemu-user-static. The copies are built once and cached outside the
checkout, keyed by the hash of their builder and of the Debian image's."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from formats import debian_cloud, docker_save, fedora_oci, oci_layout, skopeo_copy, tarball, zstd_layout

from conftest import CACHE, REPO, _debian_key, debian_image, run

pytestmark = pytest.mark.usefixtures("private_net")

# name -> (file, the machine's uname -m, the image type import-tar makes)
FORMATS = {
    "ubuntu-base": ("ubuntu-base-24.04-base-amd64.tar.gz", "x86_64", "directory"),
    "debian-genericcloud": ("debian-12-genericcloud-amd64.tar.xz", "x86_64", "raw"),
    "fedora-container-base": (
        "Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar.xz",
        "x86_64",
        "directory",
    ),
    "archlinux-bootstrap": ("archlinux-bootstrap-x86_64.tar.zst", "x86_64", "directory"),
    "archlinuxarm": ("ArchLinuxARM-aarch64-latest.tar.gz", "aarch64", "directory"),
    "docker-save": ("fedora-docker-save.tar", "x86_64", "directory"),
    "oci-zstd-layers": ("fedora-zstd.oci.tar", "x86_64", "directory"),
}


def _build(d: Path) -> None:
    tree, arm = debian_image(), debian_image("trixie", "arm64")
    work = d / "work"
    work.mkdir()
    tarball(tree, d / FORMATS["ubuntu-base"][0], "gzip")
    shutil.move(debian_cloud(tree, work / "cloud"), d / FORMATS["debian-genericcloud"][0])
    layout = oci_layout(work / "layout", [tree], config={"Cmd": ["/bin/bash"], "Env": ["container=oci"]})
    shutil.move(fedora_oci(layout, work), d / FORMATS["fedora-container-base"][0])
    tarball(tree, d / FORMATS["archlinux-bootstrap"][0], "zstd", top="root.x86_64")
    tarball(arm, d / FORMATS["archlinuxarm"][0], "gzip")
    docker_save(layout, d / FORMATS["docker-save"][0])
    skopeo_copy(
        f"oci:{zstd_layout(layout, work / 'zstd')}:latest",
        f"oci-archive:{d / FORMATS['oci-zstd-layers'][0]}",
    )
    shutil.rmtree(work)
    sums = "".join(
        f"{hashlib.sha256((d / f).read_bytes()).hexdigest()}  {f}\n" for f, _, _ in FORMATS.values()
    )
    (d / "SHA256SUMS").write_text(sums)


@pytest.fixture(scope="module")
def downloads() -> Path:
    key = hashlib.sha256((REPO / "tests/formats.py").read_bytes() + _debian_key().encode()).hexdigest()[:16]
    d = CACHE / f"downloads-{key}"
    if not (d / "SHA256SUMS").exists():
        for old in CACHE.glob("downloads-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = CACHE / f".downloads-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing in the cache
            raise
        tmp.rename(d)
    return d


@pytest.fixture(scope="module")
def server(downloads: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    def handler(*a: object, **kw: object) -> Quiet:
        return Quiet(*a, directory=str(downloads), **kw)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def identity(name: str) -> list[str]:
    r = run("spawn", "-q", "-M", name, "/bin/sh", "-c", ". /etc/os-release; echo $ID; uname -m", timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_download_becomes_a_machine(fmt: str, downloads: Path, server: str, hutch_env: Path) -> None:
    file, machine, kind = FORMATS[fmt]
    r = run("import-tar", str(downloads / file), "imported", timeout=600)
    assert r.returncode == 0, r.stderr
    r = run("pull-tar", f"{server}/{file}", "pulled", timeout=600)
    assert r.returncode == 0, r.stderr
    listed = {i["name"]: i["type"] for i in json.loads(run("list-images", "-o", "json", check=True).stdout)}
    assert listed == {"imported": kind, "pulled": kind}
    for name in ("imported", "pulled"):
        assert identity(name) == ["debian", machine]
    emulated = machine != "x86_64"
    run("start", "--timeout=300", "imported", check=True, timeout=320)
    try:
        r = run("shell", "imported", "systemctl", "is-system-running", "--wait", timeout=300)
        # Under emulation a unit may fail (degraded); booted is what counts there.
        assert r.stdout.strip() in (("running", "degraded") if emulated else ("running",)), (
            r.stdout + r.stderr
        )
    finally:
        run("poweroff", "--wait", "--timeout=120", "imported", timeout=130)
    run("remove", "imported", "pulled", check=True)
