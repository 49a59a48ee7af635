"""Progress bars on a terminal (bytes, rate, ETA), nothing on a pipe, and Ctrl-C on a terminal."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from conftest import HUTCH, run
from ptydrive import PtySession


def _big_image(busybox: Path) -> None:
    with open(busybox / "blob", "wb") as f:
        f.write(os.urandom(1 << 20) * 300)


def test_progress_on_a_terminal_only(busybox: Path, tmp_path: Path, hutch_env: Path) -> None:
    _big_image(busybox)
    archive = tmp_path / "bb.tar"
    r = run("export-tar", "bb", str(archive), check=True)
    assert r.stderr.count("\n") == 1  # a pipe: no bar, one line
    # A slow reader (a FIFO fed by us) keeps the import going long enough for several redraws.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as w, open(archive, "rb") as src:
            while chunk := src.read(8 << 20):
                w.write(chunk)
                time.sleep(0.05)

    t = threading.Thread(target=feed)
    t.start()
    s = PtySession([HUTCH, "import-tar", str(fifo), "tty"], env=dict(os.environ, TERM="xterm"), cols=120)
    try:
        assert s.wait(60) == 0, s.text()
    finally:
        s.close()
        t.join()
    out = s.text()
    assert "Importing tty" in out and "MB/s" in out and "MB" in out, out[-2000:]
    assert "Imported image 'tty'" in out
    s = PtySession([HUTCH, "clone", "bb", "copy"], env=dict(os.environ, TERM="xterm"), cols=120)
    try:
        assert s.wait(60) == 0, s.text()
    finally:
        s.close()
    assert "Cloned image 'bb' to 'copy'" in s.text()


def test_ctrl_c_cancels_cleanly(busybox: Path, tmp_path: Path, hutch_env: Path) -> None:
    _big_image(busybox)
    archive = tmp_path / "bb.tar"
    run("export-tar", "bb", str(archive), check=True)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        try:
            with open(fifo, "wb") as w, open(archive, "rb") as src:
                w.write(src.read(64 << 20))
                stop.wait(30)
        except BrokenPipeError:
            pass

    t = threading.Thread(target=feed)
    t.start()
    s = PtySession([HUTCH, "import-tar", str(fifo), "cancelled"], env=dict(os.environ, TERM="xterm"))
    try:
        s.expect("Importing cancelled")
        s.send("\x03")  # Ctrl-C: SIGINT to the foreground process group
        assert s.wait(30) == 130, s.text()
    finally:
        stop.set()
        s.close()
        t.join()
    assert "interrupted" in s.text()
    images = json.loads(run("list-images", "-o", "json", "-a", check=True).stdout)
    assert [i["name"] for i in images] == [".host", "bb"]
    assert [
        e for e in os.listdir(hutch_env / "images") if e.startswith(".#") and not e.endswith(".lck")
    ] == []
