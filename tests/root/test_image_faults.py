"""pull-tar against an HTTP server on loopback, image operations killed halfway, concurrent imports,
and bad input: each leaves the store as it was, or with a hidden leftover the next operation reaps."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HUTCH, run, wait_for

# ---------------------------------------------------------------- helpers


def listed(*opts: str) -> list[str]:
    return [i["name"] for i in json.loads(run("list-images", "-o", "json", *opts, check=True).stdout)]


def leftovers(hutch_env: Path) -> list[str]:
    return [e for e in os.listdir(hutch_env / "images") if e.startswith(".#") and not e.endswith(".lck")]


@pytest.fixture
def archive(busybox: Path, tmp_path: Path) -> Path:
    a = tmp_path / "serve/bb.tar.gz"
    a.parent.mkdir()
    run("export-tar", "bb", str(a), check=True)
    return a


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()  # noqa: RUF012

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.lstrip("/") in self.truncate:
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(archive: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the archive's directory, stopped after the test."""

    def handler(*a: object, **kw: object) -> _Handler:
        return _Handler(*a, directory=str(archive.parent), **kw)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.truncate = set()
        httpd.shutdown()
        httpd.server_close()


def write_sums(archive: Path, digest: str | None = None) -> None:
    digest = digest or hashlib.sha256(archive.read_bytes()).hexdigest()
    (archive.parent / "SHA256SUMS").write_text(f"{digest} *{archive.name}\n{'0' * 64}  other.tar\n")


# ---------------------------------------------------------------- pull-tar


def test_pull_with_checksum(server: str, archive: Path, hutch_env: Path) -> None:
    run("remove", "bb", check=True)
    write_sums(archive)
    r = run("pull-tar", f"{server}/bb.tar.gz")
    assert r.returncode == 0, r.stderr
    assert listed() == ["bb"]  # the name comes from the file name
    assert r.stderr.strip().splitlines() == [f"Imported image 'bb' at {hutch_env / 'images/bb'}."]  # no bar
    r = run("spawn", "-q", "-M", "bb", "/bin/true")
    assert r.returncode == 0, r.stderr


def test_pull_refuses_wrong_or_missing_checksum(server: str, archive: Path, hutch_env: Path) -> None:
    url = f"{server}/bb.tar.gz"
    r = run("pull-tar", url, "p")
    assert r.returncode != 0 and "SHA256SUMS" in r.stderr and "--verify=no" in r.stderr
    write_sums(archive, "ab" * 32)
    r = run("pull-tar", url, "p")
    assert r.returncode != 0 and "does not match SHA256SUMS" in r.stderr
    (archive.parent / "SHA256SUMS").write_text("0" * 64 + "  other.tar\n")
    r = run("pull-tar", url, "p")
    assert r.returncode != 0 and "lists no checksum for bb.tar.gz" in r.stderr
    assert listed() == ["bb"] and leftovers(hutch_env) == []
    r = run("pull-tar", "--verify=no", url, "p")
    assert r.returncode == 0, r.stderr
    r = run("pull-tar", "--verify=signature", url, "q")
    assert r.returncode != 0 and "Unsupported --verify=signature" in r.stderr


def test_pull_truncated_and_missing(server: str, archive: Path, hutch_env: Path) -> None:
    write_sums(archive)
    _Handler.truncate = {"bb.tar.gz"}
    r = run("pull-tar", f"{server}/bb.tar.gz", "p")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert any(w in r.stderr for w in ("truncated", "IncompleteRead")), r.stderr
    r = run("pull-tar", f"{server}/nosuch.tar.gz", "p", "--verify=no")
    assert r.returncode != 0 and "HTTP 404" in r.stderr
    for bad in ("ftp://example.org/x.tar", "not a url", "http://"):
        r = run("pull-tar", bad, "p")
        assert r.returncode != 0 and "Invalid URL" in r.stderr
    assert listed() == ["bb"] and leftovers(hutch_env) == []


# ---------------------------------------------------------------- killed halfway


def test_sigkill_during_import_then_retry(archive: Path, hutch_env: Path) -> None:
    data = archive.read_bytes()
    p = subprocess.Popen([HUTCH, "import-tar", "-", "imp"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin
    p.stdin.write(data[: len(data) // 2])
    p.stdin.flush()
    wait_for(lambda: leftovers(hutch_env))
    time.sleep(0.2)
    p.kill()  # SIGKILL, by PID: the extractor child dies with it (PDEATHSIG)
    p.wait()
    p.stdin.close()
    assert "imp" not in listed("-a")
    assert leftovers(hutch_env)  # hidden, never under the name
    r = run("import-tar", str(archive), "imp")
    assert r.returncode == 0, r.stderr
    assert listed() == ["bb", "imp"] and leftovers(hutch_env) == []  # the retry reaped the leftover


def test_sigint_during_import_cleans_up(archive: Path, hutch_env: Path) -> None:
    data = archive.read_bytes()
    p = subprocess.Popen([HUTCH, "import-tar", "-", "imp"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin and p.stderr
    p.stdin.write(data[: len(data) // 2])
    p.stdin.flush()
    wait_for(lambda: leftovers(hutch_env))
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=20) == 130
    assert p.stderr.read().decode().strip() == "hutch import-tar: interrupted"
    p.stdin.close()
    assert listed() == ["bb"] and leftovers(hutch_env) == []


def test_concurrent_imports_of_one_name(archive: Path, hutch_env: Path) -> None:
    data = archive.read_bytes()
    p = subprocess.Popen([HUTCH, "import-tar", "-", "imp"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin
    p.stdin.write(data[:1000])
    p.stdin.flush()
    wait_for(lambda: leftovers(hutch_env))
    r = run("import-tar", str(archive), "imp")
    assert r.returncode != 0 and "Image 'imp' is busy" in r.stderr
    r = run("clone", "bb", "imp")
    assert r.returncode != 0 and "is busy" in r.stderr
    p.stdin.write(data[1000:])
    p.stdin.close()
    assert p.wait(timeout=30) == 0
    assert listed() == ["bb", "imp"]
    r = run("import-tar", str(archive), "imp")
    assert r.returncode != 0 and "already exists" in r.stderr


def test_sigkill_during_clone_then_retry(busybox: Path, hutch_env: Path) -> None:
    with open(busybox / "big", "wb") as f:
        f.write(os.urandom(1 << 20) * 384)
    p = subprocess.Popen([HUTCH, "clone", "bb", "copy"], stderr=subprocess.PIPE)
    wait_for(lambda: leftovers(hutch_env))
    time.sleep(0.05)
    p.kill()
    p.wait()
    assert "copy" not in listed("-a")
    r = run("clone", "bb", "copy")
    assert r.returncode == 0, r.stderr
    assert listed() == ["bb", "copy"] and leftovers(hutch_env) == []
    assert (hutch_env / "images/copy/big").stat().st_size == 384 << 20


def test_sigkill_during_remove(busybox: Path, hutch_env: Path) -> None:
    many = busybox / "many"
    for i in range(40):
        (many / str(i)).mkdir(parents=True)
        for j in range(1000):
            (many / str(i) / str(j)).touch()
    p = subprocess.Popen([HUTCH, "remove", "bb"], stderr=subprocess.PIPE)
    wait_for(lambda: not (hutch_env / "images/bb").exists())  # renamed out of sight first
    p.kill()
    p.wait()
    assert listed("-a") == [".host"]
    r = run("remove", "bb")
    assert r.returncode != 0 and "No image 'bb'" in r.stderr
    if leftovers(hutch_env):  # killed mid-deletion: `clean` finishes the job
        r = run("clean", check=True)
        assert "Removed leftover .#bb.remove-" in r.stderr
    assert leftovers(hutch_env) == []


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".#x", "x\ny", "t\tab", "n" * 256, ""])
def test_invalid_image_names(busybox: Path, archive: Path, name: str) -> None:
    for verb in (("import-tar", str(archive), name), ("clone", "bb", name), ("rename", "bb", name)):
        r = run(*verb)
        assert r.returncode != 0, verb
        assert len(r.stderr.strip().splitlines()) == 1 and "Invalid image name" in r.stderr, r.stderr
    assert listed() == ["bb"]


def test_missing_files_and_images(busybox: Path, tmp_path: Path) -> None:
    r = run("import-tar", str(tmp_path / "nope.tar"))
    assert r.returncode != 0 and "Failed to open" in r.stderr and "No such file or directory" in r.stderr
    r = run("import-tar", str(tmp_path))
    assert r.returncode != 0 and "is a directory" in r.stderr and "import-fs" in r.stderr
    (tmp_path / "empty.tar").write_bytes(b"")
    r = run("import-tar", str(tmp_path / "empty.tar"))
    assert r.returncode != 0 and "is empty" in r.stderr
    for verb in (
        ("clone", "nosuch", "x"),
        ("remove", "nosuch"),
        ("show-image", "nosuch"),
        ("image-status", "nosuch"),
        ("export-tar", "nosuch", str(tmp_path / "x.tar")),
        ("rename", "nosuch", "x"),
        ("read-only", "nosuch"),
    ):
        r = run(*verb)
        assert r.returncode != 0 and "No image 'nosuch'" in r.stderr, (verb, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    r = run("export-tar", "bb", str(tmp_path / "no/such/dir/x.tar"))
    assert r.returncode != 0 and "Failed to create" in r.stderr
    r = run("export-tar", "bb", str(tmp_path / "x.tar"), "--format=lz4")
    assert r.returncode != 0 and "invalid choice" in r.stderr
    r = run("remove", ".host")
    assert r.returncode != 0 and ".host" in r.stderr
    assert listed() == ["bb"]


def test_full_disk(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    src = tmp_path / "big"
    (src / "etc").mkdir(parents=True)
    (src / "etc/os-release").write_text("ID=big\n")
    for i in range(40):
        (src / f"blob{i}").write_bytes(os.urandom(1 << 20))
    tarball = tmp_path / "big.tar.zst"
    r = run("import-fs", str(src), "big", check=True)
    r = run("export-tar", "big", str(tarball), check=True)
    run("remove", "big", check=True)
    store = hutch_env / "images"
    # The store on a 16 MiB tmpfs, holding a small image that must survive.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(store)], check=True)
    try:
        small = src / "small"
        small.mkdir()
        (small / "usr").mkdir()
        (small / "usr/keep").write_text("keep\n")
        run("import-fs", str(small), "small", check=True)
        for verb in (
            ("import-tar", str(tarball), "big"),
            ("import-fs", str(src), "big2"),
            ("clone", "small", "x"),
        ):
            if verb[0] == "clone":
                (store / "small/usr/blob").write_bytes(os.urandom(9 << 20))
            r = run(*verb)
            assert r.returncode != 0, verb
            assert len(r.stderr.strip().splitlines()) == 1 and "No space left on device" in r.stderr, (
                r.stderr
            )
            assert listed() == ["small"] and leftovers(hutch_env) == []
        assert (store / "small/usr/keep").read_text() == "keep\n"
    finally:
        subprocess.run(["umount", "-l", str(store)], check=True)
