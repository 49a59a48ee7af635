from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parent.parent
# HUTCH_TEST_BIN: another launcher (the systemd-host lane's VM runs the shared checkout through its own).
HUTCH = os.environ.get("HUTCH_TEST_BIN") or (
    str(REPO / ".venv" / "bin" / "hutch") if (REPO / ".venv/bin/hutch").exists() else "hutch"
)
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CACHE = Path(os.environ.get("HUTCH_TEST_CACHE", "/var/cache/hutch-test"))
# The network namespace the run started in, before any module entered one of its own (private_net):
# image builds reach the mirror through it.
HOST_NET = os.open("/proc/self/ns/net", os.O_RDONLY)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        part = Path(str(item.fspath)).parent.name
        if part in ("root", "boot", "vm"):
            item.add_marker(pytest.mark.root)
        if part == "boot":
            item.add_marker(pytest.mark.boot)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        if CI:
            pytest.fail("privileged test cannot run: not root (CI must run the suite as root)")
        pytest.skip("needs root (under CI=true this is a failure, not a skip)")


def _host_residue() -> dict[str, set[str]]:
    """What a run of hutch could leave on the host: mounts, machine cgroups, network links, nftables
    tables, hutch processes, temporary directories."""
    out: dict[str, set[str]] = {}
    with open("/proc/self/mountinfo") as f:
        out["mounts"] = {" ".join(ln.split()[3:5]) for ln in f}
    cgroups: set[str] = set()
    for top in Path("/sys/fs/cgroup").glob("*/machine.slice"):
        cgroups |= {str(p) for p in top.glob("machine-*")}
    out["cgroups"] = cgroups
    out["links"] = set(os.listdir("/sys/class/net"))
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    out["nftables"] = set(nft.stdout.splitlines())
    procs = set()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "/.venv/bin/hutch" in cmd or cmd.startswith("hutch "):
                procs.add(f"{d} {cmd[:120]}")
    out["processes"] = procs
    out["var-tmp"] = {e for e in os.listdir("/var/tmp") if e.startswith("hutch-")}
    return out


@pytest.fixture(scope="session", autouse=True)
def _collect_cgroups(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests SIGKILL supervisors on purpose; the empty machine cgroups they leave go at the end (only
    empty ones: a cgroup with a process in it cannot be removed). Then the whole run is checked for
    residue on the host: anything new there fails the suite. Not by a run of the VM lane alone, which
    makes nothing on this host and runs beside the rest of the suite (./setup.sh test)."""
    if all(item.get_closest_marker("vm") for item in request.session.items):
        yield
        return
    before = _host_residue()
    yield
    sys.path.insert(0, str(REPO))
    from hutch.machines import registry

    registry.gc_cgroups(min_age=0)
    deadline = time.monotonic() + 10
    while True:  # processes a last test killed are reaped by the kernel a moment later
        after = _host_residue()
        left = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if left:
        raise AssertionError(f"the suite left residue on the host: {left}")
    if _STORE_RESIDUE:
        raise AssertionError("tests left lock, state or temporary files: " + "; ".join(_STORE_RESIDUE[:20]))


_STORE_RESIDUE: list[str] = []


def _store_residue(base: Path) -> list[str]:
    """Lock files and hidden temporaries in a test's store and state directory after it ended: a
    finished operation (even a failed one) removes its own; a killed one's are removed by 'clean'."""
    found = []
    images = base / "images"
    if images.is_dir():
        found += [
            f"images/{e}"
            for e in os.listdir(images)
            if e.startswith(".#") and not e.endswith((".thin", ".oci"))
        ]
    for sub in ("locks", "uid-ranges", "net", "machines"):
        d = base / "state" / sub
        if d.is_dir():
            found += [f"state/{sub}/{e}" for e in os.listdir(d)]
    return found


def _writable_again(top: Path, depth: int = 3) -> None:
    """Clear the immutable flag `hutch read-only` sets on image directories, down to DEPTH levels
    below TOP: pytest cannot delete an immutable tree, and each run used to leave ~2.5 GB behind."""
    sys.path.insert(0, str(REPO))
    from hutch.linux import fsutil

    level = [str(top)]
    for _ in range(depth + 1):
        below = []
        for d in level:
            try:
                fd = os.open(d, fsutil.DIR_FLAGS)
            except OSError:
                continue
            try:
                fsutil.set_immutable_fd(fd, False)
            except OSError:
                pass  # a file system without inode flags
            finally:
                os.close(fd)
            try:
                below += [e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
            except OSError:
                pass
        level = below


def _owners(tmp_path: Path) -> dict[str, tuple[int, int]]:
    """Owner and group of every directory from / down to TMP_PATH, and of /tmp's entries."""
    out = {}
    for d in [*tmp_path.parents, tmp_path, *Path("/tmp").iterdir()]:
        with contextlib.suppress(OSError):  # another process's entry, gone meanwhile
            st = d.lstat()
            out[str(d)] = (st.st_uid, st.st_gid)
    return out


@pytest.fixture(autouse=True)
def hutch_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """Every test gets its own image path, state, log and cache directories: never the host's."""
    base = tmp_path / "hutch"
    for d in ("images", "state", "log", "cache", "settings", "config"):
        (base / d).mkdir(parents=True)
    monkeypatch.setenv("HUTCH_IMAGE_PATH", str(base / "images"))
    monkeypatch.setenv("HUTCH_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("HUTCH_LOG_DIR", str(base / "log"))
    monkeypatch.setenv("HUTCH_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("HUTCH_SETTINGS_PATH", str(base / "settings"))
    monkeypatch.setenv("HUTCH_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("HUTCH_SYSTEMD_UNIT_DIR", str(base / "units"))
    owners = _owners(tmp_path)
    yield base
    after = _owners(tmp_path)
    if changed := {p: (o, after[p]) for p, o in owners.items() if after.get(p, o) != o}:
        # a chown that escaped the image it was meant for (one broke every later test's tmp_path)
        raise AssertionError(f"the test changed owners outside its images: {changed}")
    subprocess.run([HUTCH, "clean", "-q"], capture_output=True, timeout=60)  # what killed runs left
    left = _store_residue(base)
    if left:
        _STORE_RESIDUE.append(f"{request.node.nodeid}: {', '.join(left[:5])}")
    _writable_again(tmp_path)


def assert_no_traceback(args: tuple[str, ...] | list[str], output: str) -> None:
    """No run of hutch may show a Python traceback or hit the internal-error handler: every failure a
    user can cause is one clear line."""
    if (env_debug := os.environ.get("HUTCH_DEBUG")) and env_debug != "0":
        return
    for mark in ("Traceback (most recent call last)", ": internal error"):
        if mark in output:
            raise AssertionError(f"hutch {' '.join(args)} printed {mark!r}:\n{output[-3000:]}")


def run(
    *args: str,
    input: str | None = None,
    timeout: float = 60,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [HUTCH, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    assert_no_traceback(args, r.stdout + r.stderr)
    if r.returncode not in (0, 42) and os.environ.get("HUTCH_TEST_TRACE"):
        print("TRACE", args, r.returncode, r.stderr[-500:])
    if check and r.returncode != 0:
        raise AssertionError(f"hutch {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def spawn(
    image: Path | str, *cmd: str, opts: tuple[str, ...] = (), **kw: object
) -> subprocess.CompletedProcess[str]:
    return run("spawn", "-q", "-D", str(image), *opts, *cmd, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bbtemplate")
    env = dict(os.environ, HUTCH_IMAGE_PATH=str(d))
    r = subprocess.run([HUTCH, "bootstrap", "busybox", "bb"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d / "bb"


@pytest.fixture
def busybox(busybox_template: Path, hutch_env: Path) -> Path:
    """A fresh busybox image in this test's image directory (a copy: tests may change it)."""
    dst = hutch_env / "images" / "bb"
    subprocess.run(["cp", "-a", str(busybox_template), str(dst)], check=True)
    return dst


def _debian_key() -> str:
    src = (REPO / "hutch" / "images" / "bootstrap.py").read_bytes()
    return hashlib.sha256(src).hexdigest()[:16]


def debian_image(suite: str = "bookworm", arch: str | None = None) -> Path:
    """A Debian SUITE image (of ARCH, by default the host's), built once by `hutch bootstrap debian`
    and cached outside the checkout, keyed by the builder's hash. Tests import or boot it with -x so
    the cache stays pristine."""
    if arch:
        prefix, name = f"guest-{suite}-{arch}", f"{suite}-{arch}"
    elif suite == "bookworm":
        prefix, name = "debian", "deb"
    else:
        prefix, name = f"guest-{suite}", suite
    d = CACHE / f"{prefix}-{_debian_key()}"
    image = d / name
    if image.is_dir():
        return image
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{prefix}.lock", "w") as lock:  # one builder at a time: the VM lane may run beside
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image.is_dir():
            _build_debian(d, image, prefix, name, suite, arch)
    return image


def _build_debian(d: Path, image: Path, prefix: str, name: str, suite: str, arch: str | None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HUTCH_IMAGE_PATH=str(d))
    mirror = os.environ.get("HUTCH_TEST_MIRROR", "http://deb.debian.org/debian")
    # In the host's network namespace: a test module that needs the image may have entered one of
    # its own (private_net) before the first build, and debootstrap needs the mirror.
    r = subprocess.run(
        [
            "nsenter",
            f"--net=/proc/self/fd/{HOST_NET}",
            HUTCH,
            "bootstrap",
            "debian",
            name,
            "-q",
            "--suite",
            suite,
            "--mirror",
            mirror,
            *([f"--arch={arch}"] if arch else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=2400 if arch else 1200,
        pass_fds=(HOST_NET,),
    )
    assert r.returncode == 0, f"bootstrap debian --suite {suite} failed:\n{r.stderr[-3000:]}"
    for old in CACHE.glob(f"{prefix}-" + "?" * 16):  # not guest-trixie-arm64-* for guest-trixie
        if old != d:
            shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def debian() -> Iterator[Path]:
    """The Debian 12 (bookworm) image."""
    yield debian_image()


@pytest.fixture(scope="module")
def private_net(debian: Path) -> Iterator[None]:
    """`hutch start` makes a veth pair: a module that starts machines runs in a network namespace of
    its own, so no interface or address ever lands on the real host, and the test process returns to
    its own afterwards. (After the Debian image exists: building it needs the real network.)"""
    sys.path.insert(0, str(REPO))
    from hutch.linux import libc

    saved = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWNET)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        libc.setns(saved, libc.CLONE_NEWNET)
        os.close(saved)


def wait_for(cond: object, timeout: float = 20) -> None:
    """Poll COND (a callable) until it is true; fail the test after TIMEOUT seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting")


def mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _build_static(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """Build tests/probe/NAME.c as a static binary, to bind into containers (gcc and libc6-dev come from
    setup.sh)."""
    out = tmp_path_factory.mktemp(name) / name
    r = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(out), str(REPO / f"tests/probe/{name}.c")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"cannot build tests/probe/{name}.c:\n{r.stderr}"
    return out


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Single system calls, made from inside a container."""
    return _build_static(tmp_path_factory, "probe")


@pytest.fixture(scope="session")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The escape-class probes of security.md section 2, run inside containers."""
    return _build_static(tmp_path_factory, "audit")


@contextlib.contextmanager
def running(image: Path, *opts: str, seconds: int = 5) -> Iterator[subprocess.Popen[bytes]]:
    """A container that sleeps in the background while the block runs; killed (by PID) afterwards."""
    p = subprocess.Popen([HUTCH, "spawn", "-q", "-P", *opts, "-D", str(image), "/bin/sleep", str(seconds)])
    try:
        time.sleep(0.7)
        yield p
    finally:
        p.kill()
        p.wait()


def tree_snapshot(root: Path | str) -> dict[str, tuple[object, ...]]:
    """Everything an image copy must keep, per path: type and mode bits (setuid included), owners,
    size, mtime, symlink target, extended attributes, device number, and which paths share an inode.
    Directory sizes are left out: they depend on the file system's allocation, not on the tree."""
    import stat as st_

    out: dict[str, tuple[object, ...]] = {}
    first_of: dict[int, str] = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # the same walk order in both trees: hard link groups get the same first path
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            is_dir = st_.S_ISDIR(st.st_mode)
            try:
                xattrs = sorted(
                    (k, os.getxattr(p, k, follow_symlinks=False))
                    for k in os.listxattr(p, follow_symlinks=False)
                )
            except OSError:
                xattrs = []
            link = os.readlink(p) if st_.S_ISLNK(st.st_mode) else None
            group = first_of.setdefault(st.st_ino, rel) if st.st_nlink > 1 and not is_dir else None
            out[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                None if is_dir else st.st_size,
                st.st_mtime_ns,
                link,
                tuple(xattrs),
                group,
                st.st_rdev,
            )
    return out


# For probe scripts run in a fresh interpreter: records in `late` each module the import system still
# loads from source after this point (hutch.preload's tests: what its bundle did not cover).
LATE_IMPORT_HOOK = """
from importlib.machinery import SourceFileLoader
late = []
real = SourceFileLoader.exec_module
def exec_module(self, module):
    late.append(module.__name__)
    real(self, module)
SourceFileLoader.exec_module = exec_module
"""
