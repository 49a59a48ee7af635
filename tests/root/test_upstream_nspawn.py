"""systemd's own nspawn tests, ported: test/units/TEST-13-NSPAWN.nspawn.sh, testcase_sanity, as of
systemd main in 2026 (the file that follows v258). Every command line is upstream's, run through
hutch linked as `systemd-nspawn`; every expectation is upstream's. The dummy container (upstream's
util.sh create_dummy_container: an OS tree with bash and coreutils, its root directory mode 0555) is
the cached Debian tree, copied. The other test cases of the file are in test_upstream_nspawn_cases.py.

Changed on purpose: none in this section.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream13 import dummy_container, tmpfs

from conftest import HUTCH, debian_image

pytestmark = pytest.mark.usefixtures("private_net")


@pytest.fixture
def nspawn(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    (d / "systemd-nspawn").symlink_to(HUTCH)
    return d / "systemd-nspawn"


@pytest.fixture(scope="module")
def template() -> Path:
    """The cached Debian tree: only ever read (copied, or a --template=) by these tests."""
    return debian_image()


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with tmpfs(tmp_path_factory.mktemp("roots")) as d:
        yield d


@pytest.fixture
def root(template: Path, roots: Path) -> Iterator[Path]:
    r = dummy_container(template, roots / "TEST-13-NSPAWN.sanity")  # mode 0555, as upstream's
    yield r
    r.chmod(0o755)
    shutil.rmtree(r, ignore_errors=True)


def ok(nspawn: Path, *args: str) -> None:
    r = subprocess.run(
        [str(nspawn), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 0, f"{args}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"


def fails(nspawn: Path, *args: str) -> None:
    r = subprocess.run(
        [str(nspawn), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert r.returncode != 0, (args, r.stdout[-1500:])
    assert "Traceback" not in r.stderr


def test_help_and_version(nspawn: Path) -> None:
    ok(nspawn, "--help", "--no-pager")
    ok(nspawn, "--version")


def test_template_ephemeral_read_only(nspawn: Path, template: Path, roots: Path) -> None:
    root = roots / "TEST-13-NSPAWN.sanity.t"
    fails(nspawn, f"--directory={root}", "bash", "-xec", "echo hello")
    ok(nspawn, f"--directory={root}", f"--template={template}", "bash", "-xec", "echo hello")
    ok(nspawn, f"--directory={root}", "bash", "-xec", "echo hello; touch /initialized")
    assert (root / "initialized").exists()
    ok(nspawn, f"--directory={root}", f"--template={template}", "bash", "-xec", "echo hello")
    assert (root / "initialized").exists()
    ok(nspawn, f"--directory={root}", "--ephemeral", "bash", "-xec", "touch /ephemeral")
    assert not (root / "ephemeral").exists()
    fails(nspawn, f"--directory={root}", "--read-only", "bash", "-xec", "touch /nope")
    assert not (root / "nope").exists()


def test_image(nspawn: Path, template: Path, tmp_path: Path) -> None:
    image = tmp_path / "TEST-13-NSPAWN.image.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(template), str(image), "512M"], check=True)
    ok(nspawn, f"--image={image}", "bash", "-xec", "echo hello")


@pytest.mark.parametrize("userns", [[], ["-U"]], ids=["", "-U"])
def test_volatile(nspawn: Path, root: Path, userns: list[str]) -> None:
    (root / "usr/has-usr").touch()
    for volatile in ("--volatile", "--volatile=yes"):
        ok(
            nspawn,
            f"--directory={root}",
            volatile,
            *userns,
            "bash",
            "-xec",
            "test -e /usr/has-usr; touch /usr/read-only && exit 1; touch /nope",
        )
        assert not (root / "nope").exists() and not (root / "usr/read-only").exists()
    ok(
        nspawn,
        f"--directory={root}",
        "--volatile=state",
        *userns,
        "bash",
        "-xec",
        "test -e /usr/has-usr; mountpoint /var; touch /read-only && exit 1; touch /var/nope",
    )
    assert not (root / "read-only").exists() and not (root / "var/nope").exists()
    ok(
        nspawn,
        f"--directory={root}",
        "--volatile=overlay",
        *userns,
        "bash",
        "-xec",
        "test -e /usr/has-usr; touch /nope; touch /var/also-nope; touch /usr/nope-too",
    )
    assert not (root / "nope").exists() and not (root / "var/also-nope").exists()
    assert not (root / "usr/nope-too").exists()


def test_machine_hostname_uuid_as_pid2(nspawn: Path, root: Path) -> None:
    ok(
        nspawn,
        f"--directory={root}",
        "--machine=foo-bar.baz",
        "bash",
        "-xec",
        "[[ $(hostname) == foo-bar.baz ]]",
    )
    ok(
        nspawn,
        f"--directory={root}",
        "--hostname=hello.world.tld",
        "bash",
        "-xec",
        "[[ $(hostname) == hello.world.tld ]]",
    )
    ok(
        nspawn,
        f"--directory={root}",
        "--machine=foo-bar.baz",
        "--hostname=hello.world.tld",
        "bash",
        "-xec",
        "[[ $(hostname) == hello.world.tld ]]",
    )
    (root / "etc/machine-id").unlink(missing_ok=True)
    uuid = "deadbeef-dead-dead-beef-000000000000"
    ok(nspawn, f"--directory={root}", f"--uuid={uuid}", "bash", "-xec", f"[[ $container_uuid == {uuid} ]]")
    ok(nspawn, f"--directory={root}", "bash", "-xec", "[[ $$ -eq 1 ]]")
    ok(nspawn, f"--directory={root}", "--as-pid2", "bash", "-xec", "[[ $$ -eq 2 ]]")


def test_user(nspawn: Path, root: Path) -> None:
    subprocess.run(
        ["useradd", f"--root={root}", "--uid", "1000", "--user-group", "--create-home", "testuser"],
        check=True,
    )
    ok(nspawn, f"--directory={root}", "bash", "-xec", "[[ $USER == root ]]")
    ok(nspawn, f"--directory={root}", "--user=testuser", "bash", "-xec", "[[ $USER == testuser ]]")


def test_settings_files(nspawn: Path, root: Path, hutch_env: Path) -> None:
    # Upstream writes /run/systemd/nspawn/foo-bar.nspawn; hutch's trusted directory is the test's own.
    (hutch_env / "settings/foo-bar.nspawn").write_text(
        "[Exec]\nMachineID=deadbeef-dead-dead-beef-111111111111"
    )
    uuid = "deadbeef-dead-dead-beef-000000000000"
    base = [f"--directory={root}", "--machine=foo-bar"]
    ok(
        nspawn,
        *base,
        "--settings=yes",
        "bash",
        "-xec",
        "[[ $container_uuid == deadbeef-dead-dead-beef-111111111111 ]]",
    )
    ok(nspawn, *base, f"--uuid={uuid}", "--settings=yes", "bash", "-xec", f"[[ $container_uuid == {uuid} ]]")
    ok(
        nspawn,
        *base,
        f"--uuid={uuid}",
        "--settings=override",
        "bash",
        "-xec",
        "[[ $container_uuid == deadbeef-dead-dead-beef-111111111111 ]]",
    )
    ok(
        nspawn,
        *base,
        f"--uuid={uuid}",
        "--settings=trusted",
        "bash",
        "-xec",
        f"[[ $container_uuid == {uuid} ]]",
    )


def test_mounts(nspawn: Path, root: Path, tmp_path: Path) -> None:
    tmpdir = tmp_path / "mounts"
    for d in ("1", "2", "3"):
        (tmpdir / d).mkdir(parents=True)
    for f in ("1/one", "2/two", "3/three", "foo"):
        (tmpdir / f).touch()
    r = f"--directory={root}"
    ok(
        nspawn,
        r,
        f"--bind={tmpdir}:/foo",
        f"--bind={tmpdir}:/also-foo:noidmap,norbind",
        "bash",
        "-xec",
        "test -e /foo/foo; touch /foo/bar; test -e /also-foo/bar",
    )
    assert (tmpdir / "bar").exists()
    # --bind= recursive
    (tmpdir / "bar").unlink()
    subprocess.run(["mount", "--bind", str(tmpdir / "1"), str(tmpdir / "2")], check=True)
    try:
        ok(
            nspawn,
            r,
            f"--bind={tmpdir}:/foo",
            f"--bind={tmpdir}:/also-foo:noidmap,norbind",
            "bash",
            "-xec",
            "test -e /foo/2/one; ! test -e /foo/2/two; test -e /also-foo/2/two; ! test -e /also-foo/2/one; "
            "test -e /foo/foo; touch /foo/bar; test -e /also-foo/bar",
        )
    finally:
        subprocess.run(["umount", str(tmpdir / "2")], check=True)
    assert (tmpdir / "bar").exists()
    ok(
        nspawn,
        r,
        f"--bind-ro={tmpdir}:/foo",
        f"--bind-ro={tmpdir}:/bar:noidmap,norbind",
        "bash",
        "-xec",
        "test -e /foo/foo; touch /foo/baz && exit 1; touch /bar && exit 1; true",
    )
    ok(nspawn, r, "--inaccessible=/var", "bash", "-xec", "touch /var/foo && exit 1; true")
    ok(nspawn, r, "--tmpfs=/var:rw,nosuid,noexec", "bash", "-xec", "touch /var/nope")
    assert not (root / "var/nope").exists()


def test_overlay_mounts(nspawn: Path, root: Path, tmp_path: Path) -> None:
    tmpdir = tmp_path / "mounts"
    for d in ("1", "2", "3"):
        (tmpdir / d).mkdir(parents=True)
    for f in ("1/one", "2/two", "3/three"):
        (tmpdir / f).touch()
    r = f"--directory={root}"
    ok(
        nspawn,
        r,
        f"--overlay={tmpdir}/1:{tmpdir}/2:{tmpdir}/3:/var",
        "bash",
        "-xec",
        "test -e /var/one; test -e /var/two; test -e /var/three; touch /var/foo",
    )
    assert (tmpdir / "3/foo").exists()
    ok(
        nspawn,
        r,
        f"--overlay-ro={tmpdir}/1:{tmpdir}/2:{tmpdir}/3:/var",
        "bash",
        "-xec",
        "test -e /var/one; test -e /var/two; test -e /var/three; touch /var/nope && exit 1; true",
    )
    assert not (tmpdir / "3/nope").exists()


def test_ports(nspawn: Path, root: Path) -> None:
    r = ["--network-veth", f"--directory={root}"]
    for ports in (
        ["--port=80", "--port=90"],
        ["--port=80:8080"],
        ["--port=tcp:80"],
        ["--port=tcp:80:8080"],
        ["--port=udp:80"],
        ["--port=udp:80:8080", "--port=tcp:80:8080"],
    ):
        ok(nspawn, *r, *ports, "true")
    for bad in (
        "--port=",
        "--port=-1",
        "--port=:",
        "--port=icmp:80:8080",
        "--port=tcp::8080",
        "--port=8080:",
    ):
        fails(nspawn, *r, bad, "true")
    ok(
        nspawn,
        f"--directory={root}",
        "--network-veth",
        "--port=6667",
        "--port=80:8080",
        "--port=udp:53",
        "--port=tcp:22:2222",
        "bash",
        "-xec",
        "ip addr add dev host0 10.0.0.10/24; ip a; ip addr del dev host0 10.0.0.10/24",
    )


def test_credentials(nspawn: Path, root: Path, tmp_path: Path) -> None:
    (tmp_path / "cred.path").write_text("foo bar\n")
    check = (
        '[[ "$(</run/host/credentials/cred.path)" == "foo bar" ]]; '
        '[[ "$(</run/host/credentials/cred.set)" == "hello world" ]]'
    )
    creds = [
        f"--load-credential=cred.path:{tmp_path / 'cred.path'}",
        "--set-credential=cred.set:hello world",
    ]
    ok(nspawn, f"--directory={root}", *creds, "bash", "-xec", check)
    subprocess.run(
        ["useradd", f"--root={root}", "--uid", "1000", "--user-group", "--create-home", "testuser"],
        check=True,
    )
    ok(
        nspawn,
        f"--directory={root}",
        "--user=testuser",
        "--no-new-privileges=yes",
        *creds,
        "bash",
        "-xec",
        check,
    )


def test_suppress_sync(nspawn: Path, root: Path) -> None:
    ok(nspawn, f"--directory={root}", "--suppress-sync=yes", "bash", "-xec", "echo hello")
    # hutch's own check that it means something: fsync() on no file at all succeeds (perl-base
    # makes the raw call; 74 is x86_64's fsync), where without it the kernel says EBADF.
    probe = "perl -e 'exit(syscall(74, 999) == 0 ? 0 : 1)'"
    ok(nspawn, f"--directory={root}", "--suppress-sync=yes", "bash", "-xec", probe)
    fails(nspawn, f"--directory={root}", "bash", "-xec", probe)


def test_assorted(nspawn: Path, root: Path) -> None:
    ok(nspawn, "--capability=help")
    ok(nspawn, f"--directory={root}", "--capability=all", "bash", "-xec", "echo hello")
    ok(nspawn, "--resolv-conf=help")
    ok(nspawn, "--timezone=help")


INVALID = [
    "bind",
    "bind-ro",
    "bind-user",
    "chdir",
    "console",
    "inaccessible",
    "kill-signal",
    "link-journal",
    "load-credential",
    "network-interface",
    "network-macvlan",
    "network-ipvlan",
    "network-veth-extra",
    "network-bridge",
    "network-zone",
    "no-new-privileges",
    "oom-score-adjust",
    "overlay",
    "overlay-ro",
    "personality",
    "pivot-root",
    "port",
    "private-users",
    "private-users-ownership",
    "register",
    "resolv-conf",
    "rlimit",
    "root-hash",
    "root-hash-sig",
    "set-credential",
    "settings",
    "suppress-sync",
    "timezone",
    "tmpfs",
    "uuid",
]


@pytest.mark.parametrize("opt", INVALID)
def test_invalid_arguments(nspawn: Path, opt: str) -> None:
    fails(nspawn, f"--{opt}")
    if opt != "network-zone":
        fails(nspawn, f"--{opt}=''")
        fails(nspawn, f"--{opt}=%$š")


def test_invalid_volatile_and_rlimit(nspawn: Path) -> None:
    fails(nspawn, "--volatile=")
    fails(nspawn, "--volatile=-1")
    fails(nspawn, "--rlimit==")
