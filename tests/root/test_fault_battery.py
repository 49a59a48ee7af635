"""The fault battery: every verb fed malformed values, hostile archives for every xattr namespace,
SIGKILL at seeded random points of the image operations, tampered state, special files as inputs and
outputs. Each case: a non-zero exit with one clear line (never a traceback: conftest.run checks), and
nothing changed in the store, the state directory or the host. Designed from the classes of fault, not
from one list of reports: names, numbers, time spans, sizes, paths, environment, files that are not
what they claim, and processes that die at any moment."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CI, HUTCH, run, tree_snapshot

SEED = int(os.environ.get("HUTCH_FAULT_SEED", "1312"))
TRIALS = 3 if CI else 2

BAD_NAMES = ["", ".", "..", ".#x", "a/b", "x\x01y", "x" * 300, "a\nb", "\x1b[31m"]
BAD_SECONDS = ["nan", "-1", "0", "abc", "1e999", ""]
VERBS_ON_A_MACHINE = ["status", "show", "poweroff", "reboot", "terminate", "kill", "login", "cgls", "shell"]
VERBS_ON_AN_IMAGE = ["image-status", "show-image", "remove", "read-only", "cat", "edit"]


def state(hutch_env: Path) -> dict[str, tuple[object, ...]]:
    """Everything hutch keeps: the store (with its hidden entries) and the state directory."""
    out = {f"images/{k}": v for k, v in tree_snapshot(hutch_env / "images").items()}
    # The state directory's subdirectories are made on first use: only files count there.
    out.update(
        {f"state/{k}": v for k, v in tree_snapshot(hutch_env / "state").items() if not stat.S_ISDIR(v[0])}  # type: ignore[arg-type]
    )
    out.update({f"settings/{k}": v for k, v in tree_snapshot(hutch_env / "settings").items()})
    return out


def refused(args: list[str], hutch_env: Path, *, inside: bool | str = False, **kw: object) -> str:
    """INSIDE: a failure after the tree was set up (one only the container's PID 1 can see, say a
    working directory of the image): nspawn's own files in the image (etc/localtime, ...) may be made.
    A string names the image, else it is bb."""
    before = state(hutch_env)
    r = run(*args, **kw)  # type: ignore[arg-type]
    assert r.returncode != 0, (args, r.stdout, r.stderr)
    # spawn's banner comes first, as upstream's does.
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("Spawning container ")]
    assert len(lines) == 1, (args, r.stderr)
    assert lines[0].startswith("hutch"), lines[0]
    assert lines[0].isprintable(), lines[0]  # control characters escaped, never raw
    after = state(hutch_env)
    if inside:
        image = inside if isinstance(inside, str) else "bb"
        before, after = (
            {k: v for k, v in d.items() if not k.startswith(f"images/{image}/")} for d in (before, after)
        )
    assert after == before, args
    return lines[0]


def _cases() -> list[list[str]]:
    cases: list[list[str]] = []
    for name in BAD_NAMES:
        # An empty name is the host for shell, as machinectl's `shell ''` and `shell root@` are.
        verbs = [v for v in VERBS_ON_A_MACHINE if v != "shell" or name]
        cases += [[v, name] for v in verbs + VERBS_ON_AN_IMAGE + ["start"]]
        cases += [["clone", "bb", name], ["rename", "bb", name]]
        if name:  # no name: import-fs takes the directory's
            cases.append(["import-fs", "/usr/share/doc", name])
        cases += [["spawn", "-M", name, "/bin/true"], ["bootstrap", "busybox", name]]
    for t in BAD_SECONDS:
        cases += [["poweroff", "--wait", f"--timeout={t}", "bb"], ["start", f"--timeout={t}", "bb"]]
        cases += [["top", "-d", t, "-n", "1"]]
    for prop in (
        "MemoryMax=99999999999999999999999T", "MemoryMax=nan", "MemoryMax=-1", "MemoryMax=1e999",
        "MemoryMax=12Q", "CPUQuota=inf%", "CPUQuota=nan%", "CPUQuota=-5%", "CPUWeight=0",
        "CPUWeight=99999", "TasksMax=0", "TasksMax=x", "TasksMax=nan%", "AllowedCPUs=3-1", "Nope=1", "=",
    ):  # fmt: skip
        cases += [["start", f"--property={prop}", "bb"], ["set-property", "nosuch", prop]]
    for opt in (
        "--bind=", "--bind=::", "--tmpfs=", "--tmpfs=/x:mode=zz", "--port=8080:", "--port=99999",
        "--port=tcp:1:2:3", "--capability=CAP_NOPE", "--drop-capability=1000", "--rlimit=NOPE=1",
        "--rlimit=RLIMIT_NOFILE=abc", "--private-users=abc", "--private-users=1:0", "--kill-signal=SIGNOPE",
        "--uuid=zz", "--machine=a/b", "--hostname=" + "x" * 300, "--setenv=", "--setenv==1",
        "--chdir=relative", "--volatile=sometimes", "--link-journal=nope", "--resolv-conf=nope",
        "--timezone=nope", "--console=nope", "--network-veth-extra=", "--overlay=/x", "--personality=nope",
        "--oom-score-adjust=99999", "--cpu-affinity=z", "--property=Nope=1", "--system-call-filter=@nope",
        "--settings=perhaps", "--register=maybe", "--notify-ready=perhaps", "--pivot-root=",
        "--set-credential=x", "--set-credential=:v", "--set-credential=a/b:v", "--set-credential=..:v",
        "--set-credential=x\x01:v", "--set-credential=x:\\q", "--set-credential=x:\\",
        "--set-credential=x:\\xZZ",
        "--set-credential=x:\\ud800", "--set-credential=" + "x" * 256 + ":v", "--load-credential=x",
        "--load-credential=x:/nonexistent", "--load-credential=x:/dev/zero", "--load-credential=x:/tmp",
        "--load-credential=x:nocredential", "--load-credential=x:a:b",
    ):  # fmt: skip
        cases.append(["spawn", "-M", "bb", opt, "/bin/true"])
    cases += [
        ["spawn", "-M", "bb", ""],
        ["spawn", "-M", "bb", "--set-credential=x:1", "--set-credential=x:2", "/bin/true"],
        # More than systemd's 1 MiB in all, in arguments the kernel takes (each below 128 KiB).
        [
            "spawn",
            "-M",
            "bb",
            *(f"--set-credential=c{i}:" + "y" * (100 << 10) for i in range(11)),
            "/bin/true",
        ],
        ["spawn", "-M", "bb", "--chdir=/\udcff", "/bin/true"],
        ["pull-tar", "--verify=no", "http://[::1"],
        ["pull-tar", "--verify=no", "http://h:x/a.tar"],
        ["pull-tar", "--verify=maybe", "http://h/a.tar"],
        ["pull-tar", "file:///etc/passwd"],
        ["import-tar", "/dev/zero", "z"],
        ["import-tar", "/nonexistent", "z"],
        ["import-tar", "/etc", "z"],
        ["import-tar", "/etc/hostname", "z"],
        ["export-tar", "bb", "/nonexistent/dir/x.tar"],
        ["export-tar", "bb", "/tmp"],
        ["export-tar", "bb", "x.tar", "--format=lz4"],
        ["cat", "/bin/sh"],
        ["cat", "/dev/zero"],
        ["cat", "/nonexistent/x.nspawn"],
        ["clone", "nosuch", "x"],
        ["rename", "nosuch", "x"],
        ["read-only", "bb", "perhaps"],
        ["kill", "-s", "SIGNOPE", "bb"],
        ["kill", "--kill-whom=nobody", "bb"],
        ["shell", "-E", "NOEQUALS", "bb"],
        ["bind", "bb", "relative", "/x"],
        ["copy-to", "bb", "/nonexistent", "/x"],
        ["nosuchverb"],
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("args", CASES, ids=[repr(" ".join(c))[1:-1][:60] for c in CASES])
def test_malformed_values(busybox: Path, hutch_env: Path, args: list[str]) -> None:
    if args[0] == "export-tar" and args[2] == "x.tar":
        args = [*args[:2], str(hutch_env / "x.tar"), *args[3:]]
    inside = any(a.startswith("--chdir=/") for a in args)
    refused(args, hutch_env, inside=inside, timeout=30, env=dict(os.environ, EDITOR="/bin/false"))


@pytest.mark.parametrize(
    "var,value,args",
    [
        ("HUTCH_IMAGE_PATH", ":", ["bootstrap", "busybox", "x"]),
        ("HUTCH_IMAGE_PATH", ":", ["import-fs", "/usr/share/doc", "x"]),
        ("HUTCH_CGROUP_GC_AGE", "abc", ["list"]),
        ("HUTCH_CGROUP_GC_AGE", "nan", ["list"]),
        ("HUTCH_READY_FD", "garbage", ["spawn", "-M", "bb", "/bin/true"]),
        ("HUTCH_READY_FD", "999", ["spawn", "-M", "bb", "/bin/true"]),
        ("HUTCH_NET_POOL", "garbage", ["spawn", "-M", "bb", "-n", "/bin/true"]),
        ("HUTCH_NET_POOL", "10.0.0.0/31", ["spawn", "-M", "bb", "-n", "/bin/true"]),
        ("HUTCH_ZONE_POOL", "x", ["spawn", "-M", "bb", "--network-zone=z", "/bin/true"]),
    ],
)
def test_malformed_environment(
    busybox: Path, hutch_env: Path, var: str, value: str, args: list[str]
) -> None:
    refused(args, hutch_env, env=dict(os.environ, **{var: value}), timeout=30)


# Archives ---------------------------------------------------------------------------------------------


def _pax_tar(xattrs: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in (".", "etc", "usr"):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            if name == ".":
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
            t.addfile(ti)
        ti = tarfile.TarInfo("etc/os-release")
        data = b"ID=battery\n"
        ti.size = len(data)
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


V2CAP = bytes.fromhex("0100000200002000000000000000000000000000").decode("utf-8", "surrogateescape")
V3CAP = bytes.fromhex("0100000300002000000000000000000000000000" + "00000000").decode(
    "utf-8", "surrogateescape"
)


@pytest.mark.parametrize(
    "xattrs",
    [
        {"user.hutch.lower": "/etc"},
        {"user.hutch.lower": "\udcff\udcfe"},
        {"user.hutch.other": "x"},
        {"trusted.overlay.opaque": "y"},
        {"trusted.overlay.redirect": "/etc"},
        {"trusted.hutch.lower": "/etc"},
        {"security.capability": V2CAP},
        {"security.capability": V3CAP},
        {"security.capability": "garbage"},
        {"security.selinux": "system_u:object_r:shadow_t:s0"},
        {"security.ima": "x"},
        {"system.nfs4_acl": "x"},
        {"system.posix_acl_access": "garbage"},
        {"user.crtime_usec": "\udcff"},
        {"bogus.namespace": "x"},
        {"": "x"},
    ],
)
def test_archives_for_every_xattr_namespace(tmp_path: Path, hutch_env: Path, xattrs: dict[str, str]) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(_pax_tar(xattrs))
    r = run("import-tar", str(archive), "img")
    img = hutch_env / "images/img"
    if r.returncode != 0:  # a refusal: one line, nothing kept
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not img.exists()
        assert not [e for e in os.listdir(hutch_env / "images") if e.startswith(".#")]
        return
    kept = set(os.listxattr(img)) | set(os.listxattr(img / "etc/os-release"))
    assert not {k for k in kept if k.startswith(("user.hutch.", "trusted.", "security."))}, kept
    # Every image verb still works on it, and it is a plain directory image.
    listed = json.loads(run("list-images", "-o", "json", check=True).stdout)
    assert [(i["name"], i["type"]) for i in listed] == [("img", "directory")]
    for verb in ("image-status", "show-image"):
        run(verb, "img", check=True)
    run("clean", check=True)
    run("remove", "img", check=True)
    assert os.listdir(hutch_env / "images") == []


# SIGKILL at random points ------------------------------------------------------------------------------


def _big_archive(tmp_path: Path) -> Path:
    """An OS tree with enough files that a kill lands in the middle of any operation on it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in (".", "etc", "usr", "usr/share"):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        for i in range(3000):
            ti = tarfile.TarInfo(f"usr/share/f{i}")
            data = os.urandom(2048)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("etc/os-release")
        ti.size = 11
        t.addfile(ti, io.BytesIO(b"ID=killed\n\n"))
    p = tmp_path / "big.tar"
    p.write_bytes(buf.getvalue())
    return p


def _kill_at(args: list[str], delay: float) -> int | None:
    p = subprocess.Popen([HUTCH, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    p.kill()
    p.wait(30)
    return p.returncode


def _store_is_whole(hutch_env: Path, names: set[str]) -> None:
    """After `clean`: only whole images of the expected names, no hidden entries, no lock files."""
    run("clean", check=True)
    store_dir = hutch_env / "images"
    entries = set(os.listdir(store_dir))
    records = {f".#{n}.thin" for n in names if (store_dir / n / "upper").is_dir()}
    assert not {e for e in entries - records if e.startswith(".#")}, entries
    entries -= records
    assert entries - {f"{n}.nspawn" for n in names} <= names, entries
    for n in entries & names:
        assert (store_dir / n / "etc/os-release").exists() or (store_dir / n / "upper").is_dir(), n
    for sub in ("locks", "uid-ranges", "net"):
        d = hutch_env / "state" / sub
        assert not d.exists() or os.listdir(d) == [], (sub, os.listdir(d))


@pytest.mark.parametrize("op", ["import-tar", "clone", "rename", "remove", "export-tar", "clone-thin"])
def test_sigkill_at_random_points(tmp_path: Path, hutch_env: Path, op: str) -> None:
    rng = random.Random(f"{SEED}-{op}")
    archive = _big_archive(tmp_path)
    run("import-tar", str(archive), "src", check=True)
    (hutch_env / "images/src.nspawn").write_text("[Exec]\nBoot=no\n")
    if op == "clone-thin":
        run("read-only", "src", check=True)
    for trial in range(TRIALS):
        delay = rng.uniform(0.05, 0.6)
        out = tmp_path / f"out{trial}.tar"
        args = {
            "import-tar": ["import-tar", str(archive), "new"],
            "clone": ["clone", "src", "new"],
            "clone-thin": ["clone", "--thin", "src", "new"],
            "rename": ["rename", "src", "new"],
            "remove": ["remove", "src"],
            "export-tar": ["export-tar", "src", str(out)],
        }[op]
        _kill_at(args, delay)
        _store_is_whole(hutch_env, {"src", "new"})
        # Whatever the kill left, the operation can be done (or undone) now.
        if op == "rename" and (hutch_env / "images/new").exists():
            run("rename", "new", "src", check=True)
            assert (hutch_env / "images/src.nspawn").exists()  # the settings file moved with it
        elif op == "remove":
            if not (hutch_env / "images/src").exists():
                assert not (hutch_env / "images/src.nspawn").exists()  # never inherited
                run("import-tar", str(archive), "src", check=True)
                (hutch_env / "images/src.nspawn").write_text("[Exec]\nBoot=no\n")
        elif op == "export-tar":
            run("export-tar", "src", str(out), check=True)  # removes what the killed one left
            assert not [e for e in os.listdir(tmp_path) if e.startswith(".#")]
        elif op != "rename":
            if (hutch_env / "images/new").exists():
                run("remove", "new", check=True)
            run(*args, check=True)
            run("remove", "new", check=True)
    _store_is_whole(hutch_env, {"src"})


def test_sigkill_of_spawn_with_temporary_directories(busybox: Path, hutch_env: Path) -> None:
    """--bind=:DIR and --overlay=+ make directories in /var/tmp: a SIGKILLed run's go with the next."""

    def ours() -> set[str]:
        return {e for e in os.listdir("/var/tmp") if e.startswith(("hutch-bind-", "hutch-overlay-"))}

    before = ours()
    for opts in (["--bind=:/scratch"], ["--overlay=+/usr::/usr"]):
        p = subprocess.Popen(
            [HUTCH, "spawn", "-q", "-P", "-M", "bb", *opts, "/bin/sleep", "30"], stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while not ours() - before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        time.sleep(0.3)  # PID 1 dies with its PID namespace's reaper... once the kernel gets to it
        assert ours() - before, "the run made no directory to leave behind"
        run("spawn", "-q", "-P", "-M", "bb", *opts, "/bin/true", check=True)
        assert ours() == before
    run("clean", check=True)


# Tampered state ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("private_net")
@pytest.mark.parametrize(
    "content",
    ["{}", "[]", "null", '"x"', "{", "\xff", '{"name": "bb"}', '{"name": "bb", "leader": "1"}',
     '{"name": "bb", "leader": true, "supervisor": 1, "root": "/", "since": 0, "state": "running"}',
     '{"name": "other", "leader": 1, "supervisor": 1, "root": "/", "since": 0, "state": "running"}',
     '{"name": "bb", "leader": 1, "supervisor": 1, "root": "/", "since": 0, "state": "x", "ports": [1]}'],
)  # fmt: skip
def test_tampered_registry(busybox: Path, hutch_env: Path, content: str) -> None:
    run("start", "bb", check=True)
    entry = hutch_env / "state/machines/bb.json"
    good = entry.read_bytes()
    try:
        entry.write_bytes(content.encode("utf-8", "surrogateescape"))
        for args in (["status", "bb"], ["show", "bb"], ["shell", "bb", "/bin/true"], ["poweroff", "bb"],
                     ["cgls", "bb"], ["top", "-n", "1", "-o", "json"], ["kill", "bb"]):  # fmt: skip
            r = run(*args, timeout=30)
            assert r.returncode != 0, (args, r.stdout)
            assert len(r.stderr.strip().splitlines()) == 1 and "damaged registry entry" in r.stderr, r.stderr
        r = run("list")
        assert r.returncode == 1 and "damaged registry entry" in r.stderr
    finally:
        entry.write_bytes(good)
    run("terminate", "--wait", "bb", check=True)
    # A dead machine's damaged entry: the next command removes it, lock file and all.
    (hutch_env / "state/machines").mkdir(exist_ok=True)
    entry.write_bytes(content.encode("utf-8", "surrogateescape"))
    (hutch_env / "state/machines/bb.lock").write_text("")
    r = run("list", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    assert os.listdir(hutch_env / "state/machines") == []


# Special files -----------------------------------------------------------------------------------------


def test_special_files_as_inputs_and_outputs(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    # export-tar onto a device node writes into it, never replaces it.
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    run("export-tar", "bb", str(null), check=True)
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    # ... onto a FIFO: its reader gets the whole archive.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = tmp_path / "from-fifo"
    reader = subprocess.Popen(["sh", "-c", f"cat {fifo} > {got}"])
    run("export-tar", "bb", str(fifo), check=True)
    reader.wait(30)
    data = got.read_bytes()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and len(data) > 100_000
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.getmember("./etc/os-release")
    # ... through a symlink: the link stays, its target gets the archive.
    target = tmp_path / "target.tar"
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    run("export-tar", "bb", str(link), check=True)
    assert link.is_symlink() and target.stat().st_size > 100_000
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".#")]


@pytest.fixture
def full(hutch_env: Path, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """The state, log and configuration directories and an output directory, each on a small tmpfs
    that full() fills to the last block (the store's own full disk: test_image_faults.test_full_disk)."""
    dirs = [hutch_env / d for d in ("state", "log", "config")] + [tmp_path / "out"]
    (tmp_path / "out").mkdir()
    for d in dirs:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(d)], check=True)

    def fill() -> None:
        for d in dirs:
            fd = os.open(d / "fill", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(fd, b"\0" * 512):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)

    try:
        yield fill
    finally:
        for d in dirs:
            for e in os.listdir(d):
                if e == "fill":
                    os.unlink(d / e)
        for m in names_running(hutch_env):  # the registry lives on one of these
            run("terminate", "--wait", m)
        for d in dirs:
            subprocess.run(["umount", "-l", str(d)], check=True)


@pytest.mark.usefixtures("private_net")
def test_a_full_file_system(
    busybox: Path, hutch_env: Path, tmp_path: Path, full: Callable[[], None]
) -> None:
    """Every write hutch makes outside the store, onto a full disk: one line that says what could not
    be written and what to do, nothing half-made, and a running machine keeps running."""
    run("clone", "bb", "bb2", check=True)
    run("start", "bb", check=True)
    full()
    for args, what in (
        (["start", "bb2"], "log/bb2.log"),
        (["spawn", "-q", "-M", "bb2", "--private-users=no", "/bin/true"], "state/machines/bb2.json"),
        (["spawn", "-q", "-M", "bb2", "-U", "/bin/true"], "state/uid-ranges/"),
        (["export-tar", "bb2", str(tmp_path / "out/bb.tar")], "out/bb.tar"),
        (["enable", "bb"], "config/autostart/bb"),
        (["set-property", "bb", "MemoryMax=100M"], "state/machines/bb.limits"),
    ):
        line = refused(args, hutch_env, inside="bb2" if args[0] == "spawn" else False)
        assert "No space left on device" in line and "Hint: free space on that file system" in line, line
        assert what in line, line  # what could not be written
    assert not [e for e in os.listdir(tmp_path / "out") if e != "fill"]
    assert "MemoryMax" not in run("status", "bb", check=True).stdout
    # The machine keeps running with its log full, and stops as usual.
    run("shell", "bb", "/bin/sh", "-c", "for i in $(seq 100); do echo lost > /dev/console; done", check=True)
    assert run("shell", "bb", "/bin/echo", "hi", check=True).stdout == "hi\n"
    run("poweroff", "--wait", "bb", check=True)
    assert names_running(hutch_env) == []


def names_running(hutch_env: Path) -> list[str]:
    return [str(m["machine"]) for m in json.loads(run("list", "-o", "json", check=True).stdout)]


def test_edit_saves_nothing_unless_asked(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    editor = tmp_path / "editor"
    editor.write_text("#!/bin/sh\nexit 0\n")  # saves nothing
    editor.chmod(0o755)
    env = dict(os.environ, EDITOR=str(editor))
    settings = hutch_env / "settings"
    os.rmdir(settings)
    r = run("edit", "bb", env=env)
    assert r.returncode == 0 and "Nothing saved" in r.stderr, r.stderr
    assert not settings.exists()  # not even the directory
    target = tmp_path / "sub/dir/x.nspawn"
    r = run("edit", str(target), env=env)
    assert r.returncode == 0 and not target.parent.parent.exists()
    # Settings files that are not text: one line naming the file and line.
    bad = tmp_path / "bad.nspawn"
    bad.write_bytes(b"[Exec]\nBoot=\xff\n")
    line = refused(["cat", str(bad)], hutch_env)
    assert f"{bad}:2" in line and "UTF-8" in line
    bad.write_bytes(b"[Exec]\nWorkingDirectory=/a\0b\n")
    (hutch_env / "images/bb.nspawn").write_bytes(bad.read_bytes())
    line = refused(["spawn", "-M", "bb", "/bin/true"], hutch_env)
    assert "bb.nspawn:2" in line and "NUL" in line


def _tar_of(tmp_path: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            if name.endswith("/"):
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    p = tmp_path / f"junk{len(list(tmp_path.glob('junk*')))}.tar"
    p.write_bytes(buf.getvalue())
    return p


def test_archives_that_hold_no_usable_image_are_refused(hutch_env: Path, tmp_path: Path) -> None:
    """A tarball is imported as what it holds (an OS tree, one disk image, an OCI layout, a docker save
    archive); one whose content is none of these, or a broken one of them, is refused at import,
    saying what is wrong, instead of becoming an image that fails at spawn. Detected by content."""
    gpt = bytearray(1 << 16)
    gpt[510:512] = b"\x55\xaa"
    gpt[512:520] = b"EFI PART"
    ext4 = bytearray(1 << 12)
    ext4[1080:1082] = b"\x53\xef"
    ext4[1024 + 4 : 1024 + 8] = (1 << 20).to_bytes(4, "little")  # a million 1 KiB blocks, in 4 KiB
    cases = {
        "disk.raw in the archive is not a usable disk image: its GPT header": {"disk.raw": bytes(gpt)},
        "the root partition of rootfs.img in the archive is cut short": {"rootfs.img": bytes(ext4)},
        "index.json lists no manifests": {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": b'{"manifests":[]}',
            "blobs/": b"",
            "blobs/sha256/": b"",
        },
        "manifest.json lists no image": {
            "manifest.json": b"[]",
            "repositories": b"{}",
            "0123/": b"",
            "0123/layer.tar": b"",
        },
        "The archive for 'junk' holds 2 entries (README, data)": {
            "README": b"hello\n",
            "data": os.urandom(100),
        },
    }
    for what, members in cases.items():
        archive = _tar_of(tmp_path, members)
        line = refused(["import-tar", str(archive), "junk"], hutch_env)
        assert what in line, line
        assert ".#" not in line  # no hidden name of the store in what the user reads
        assert not (hutch_env / "images/junk").exists() and not (hutch_env / "images/junk.raw").exists()
    # A disk image under a name that says otherwise is found by its content all the same.
    archive = _tar_of(tmp_path, {"rootfs.tar": bytes(gpt)})
    assert "rootfs.tar in the archive is not a usable disk image" in refused(
        ["import-tar", str(archive), "junk"], hutch_env
    )
    # And a disk image given to import-tar, not in a tarball, is named as one, with the verb to use.
    (tmp_path / "disk.img").write_bytes(bytes(gpt))
    line = refused(["import-tar", str(tmp_path / "disk.img"), "junk"], hutch_env)
    assert "is a disk image, not a tar archive" in line and "import-raw" in line
