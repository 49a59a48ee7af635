"""Each --console mode, driven through a real pseudo-terminal as a user would."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import HUTCH, run, spawn
from ptydrive import PtySession


def test_interactive_console_forwards_both_ways(busybox: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-D", str(busybox), "/bin/sh"], rows=33, cols=101)
    try:
        s.expect("Press Ctrl-] three times within 1s to kill container.")
        s.expect("# ")
        s.send("tty; stty size; echo $((6*7))\r")
        s.expect("42")
        text = s.text()
        assert "/dev/console" in text  # the payload's terminal is the container's console pty
        assert "33 101" in text  # the window size was passed on
        s.send("exit 3\r")
        assert s.wait() == 3
    finally:
        s.close()


def test_window_size_changes_follow(busybox: Path) -> None:
    import fcntl
    import signal
    import struct
    import termios

    s = PtySession([HUTCH, "spawn", "-q", "-D", str(busybox), "/bin/sh"], rows=24, cols=80)
    try:
        s.send("echo started\r")
        s.expect("started")
        fcntl.ioctl(s.master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        s.proc.send_signal(signal.SIGWINCH)  # the kernel sends it to the foreground group; be explicit
        time.sleep(0.3)
        s.send("stty size\r")
        s.expect("50 132")
        s.send("exit\r")
        assert s.wait() == 0
    finally:
        s.close()


def test_ctrl_bracket_three_times_kills(busybox: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-D", str(busybox), "/bin/sleep", "1000"])
    try:
        s.expect("Press Ctrl-]")
        time.sleep(0.3)
        t = time.monotonic()
        s.send(b"\x1d\x1d\x1d")
        rc = s.wait(timeout=10)
        assert rc != 0 and time.monotonic() - t < 5
        assert "terminated by Ctrl-]" in s.text()
    finally:
        s.close()


def test_ctrl_bracket_slowly_does_not_kill(busybox: Path) -> None:
    s = PtySession([HUTCH, "spawn", "-q", "-D", str(busybox), "/bin/sh"])
    try:
        s.send("echo up\r")
        s.expect("up")
        for _ in range(3):
            s.send(b"\x1d")
            time.sleep(0.6)
        s.send("\recho still-here\r")
        s.expect("still-here")
        s.send("exit\r")
        assert s.wait() == 0
    finally:
        s.close()


def test_read_only_console_shows_output_ignores_input(busybox: Path) -> None:
    # Not on a terminal, read-only is the default: output through the pty, no input.
    r = subprocess.run(
        [
            HUTCH,
            "spawn",
            "-q",
            "-D",
            str(busybox),
            "/bin/sh",
            "-c",
            "tty; read -t 1 x; echo read=$?; echo err >&2",
        ],
        input="typed\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = r.stdout.replace("\r", "")
    assert "/dev/console" in out and "read=1" in out and "err" in out  # stderr shares the console
    assert r.stderr == ""
    s = PtySession(
        [
            HUTCH,
            "spawn",
            "-q",
            "--console=read-only",
            "-D",
            str(busybox),
            "/bin/sh",
            "-c",
            "read -t 2 x; echo read=$?",
        ]
    )
    try:
        s.send("typed\r")
        assert s.wait() == 0
        assert "read=1" in s.text()
    finally:
        s.close()


def test_passive_console_forwards_nothing(busybox: Path) -> None:
    r = spawn(
        busybox,
        "/bin/sh",
        "-c",
        "echo invisible; test -c /dev/console && exit 5",
        opts=("--console=passive",),
    )
    assert r.returncode == 5 and "invisible" not in r.stdout


def test_pipe_console_keeps_stdio_apart(busybox: Path) -> None:
    r = subprocess.run(
        [
            HUTCH,
            "spawn",
            "-q",
            "--console=pipe",
            "-D",
            str(busybox),
            "/bin/sh",
            "-c",
            "read x; echo got=$x; echo oops >&2; test -e /dev/console || echo no-console",
        ],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout == "got=hello\nno-console\n" and r.stderr == "oops\n"
    r2 = subprocess.run(
        [HUTCH, "spawn", "-q", "-P", "-D", str(busybox), "/bin/cat"],
        input="x" * 200000,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert len(r2.stdout) == 200000


def test_autopipe(busybox: Path) -> None:
    r = spawn(
        busybox,
        "/bin/sh",
        "-c",
        "test -e /dev/console && echo console || echo pipe",
        opts=("--console=autopipe",),
    )
    assert r.stdout.strip() == "pipe"
    s = PtySession([HUTCH, "spawn", "-q", "--console=autopipe", "-D", str(busybox), "/bin/sh", "-c", "tty"])
    try:
        assert s.wait() == 0
        assert "/dev/console" in s.text()
    finally:
        s.close()


def test_passive_and_pipe_on_a_terminal(busybox: Path) -> None:
    s = PtySession(
        [
            HUTCH,
            "spawn",
            "-q",
            "--console=passive",
            "-D",
            str(busybox),
            "/bin/sh",
            "-c",
            "echo invisible-text; exit 4",
        ]
    )
    try:
        assert s.wait() == 4
        assert "invisible-text" not in s.text()
    finally:
        s.close()
    s = PtySession(
        [
            HUTCH,
            "spawn",
            "-q",
            "--console=pipe",
            "-D",
            str(busybox),
            "/bin/sh",
            "-c",
            "test -t 0 && echo stdin-is-terminal; test -e /dev/console || echo no-console; read x; "
            "echo got-$x",
        ]
    )
    try:
        s.expect("no-console")
        s.send("abc\r")
        s.expect("got-abc")
        assert s.wait() == 0
        assert "stdin-is-terminal" in s.text()
    finally:
        s.close()


def test_console_pipe_with_boot_says_where_the_output_went(
    busybox: Path, hutch_env: Path, tmp_path: Path
) -> None:
    """systemd writes its boot status to /dev/console, which --console=pipe does not make (upstream
    neither): one line says so, instead of a silent boot that looks like a hang."""
    tree = tmp_path / "noinit"  # no init at all: the run ends at once, after the warning
    for d in ("usr", "etc"):
        (tree / d).mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=noinit\n")
    r = run("spawn", "-D", str(tree), "--console=pipe", "-b", "--register=no", timeout=30)
    assert r.returncode != 0 and "Failed to find an init" in r.stderr, r.stderr
    assert "--console=pipe gives the booted init no /dev/console" in r.stderr, r.stderr
    assert "--console=read-only shows them" in r.stderr
    r = run("spawn", "-q", "-M", "bb", "--console=pipe", "/bin/true", check=True)
    assert "/dev/console" not in r.stderr
