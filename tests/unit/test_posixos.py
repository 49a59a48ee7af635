"""hutch.linux.posixos stands in for os on spawn's start-up path: its Python parts must give what
os and posixpath give, for every input shape hutch can pass them."""

from __future__ import annotations

import itertools
import os
import posixpath
from pathlib import Path

import pytest

from hutch.linux import posixos

PIECES = ["", ".", "..", "a", "b.c", "/", "//", "///"]
PATHS = sorted({"".join(p) for n in range(5) for p in itertools.product(PIECES, repeat=n)})


@pytest.mark.parametrize("fn", ["normpath", "dirname", "basename", "split", "abspath"])
def test_path_functions_match_posixpath(fn: str) -> None:
    ours, theirs = getattr(posixos.path, fn), getattr(posixpath, fn)
    wrong = [(p, ours(p), theirs(p)) for p in PATHS if ours(p) != theirs(p)]
    assert not wrong, wrong[:5]


def test_join_matches_posixpath() -> None:
    sample = PATHS[::60]
    wrong = [
        (a, b, c)
        for a, b, c in itertools.product(sample, repeat=3)
        if posixos.path.join(a, b, c) != posixpath.join(a, b, c)
    ]
    assert not wrong, wrong[:5]


def test_file_tests_and_realpath(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    (tmp_path / "to-d").symlink_to("d")
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "loop").symlink_to("loop")
    names = ["d", "f", "to-d", "dangling", "loop", "missing", "to-d/../f", "d/./", "missing/x", ""]
    for name in names:
        p = str(tmp_path / name)
        for fn in ("exists", "lexists", "isdir", "isfile"):
            assert getattr(posixos.path, fn)(p) == getattr(posixpath, fn)(p), (fn, name)
        assert posixos.path.realpath(p) == posixpath.realpath(p), name
    assert posixos.path.isdir("bad\0path") is False


def test_makedirs(tmp_path: Path) -> None:
    deep = str(tmp_path / "a" / "b" / "c")
    posixos.makedirs(deep, 0o700)
    assert os.stat(deep).st_mode & 0o777 == 0o700
    posixos.makedirs(deep, exist_ok=True)
    with pytest.raises(FileExistsError):
        posixos.makedirs(deep)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        posixos.makedirs(str(tmp_path / "file"), exist_ok=True)
    with pytest.raises(NotADirectoryError):
        posixos.makedirs(str(tmp_path / "file" / "sub"), exist_ok=True)


def test_walk_matches_os_walk(tmp_path: Path) -> None:
    for d in ("a/b/c", "a/d", "e"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "a/f").write_text("")
    (tmp_path / "link").symlink_to("a")
    for topdown in (True, False):
        ours = [(t, sorted(d), sorted(f)) for t, d, f in posixos.walk(str(tmp_path), topdown)]
        theirs = [(t, sorted(d), sorted(f)) for t, d, f in os.walk(str(tmp_path), topdown=topdown)]
        assert sorted(ours) == sorted(theirs)
        # Children before parents bottom-up, parents first top-down: what rmdir and pruning rely on.
        order = [t for t, _, _ in ours]
        assert order.index(str(tmp_path / "a")) < order.index(str(tmp_path / "a/b")) or not topdown
        assert order.index(str(tmp_path / "a/b")) < order.index(str(tmp_path / "a")) or topdown
    assert list(posixos.walk(str(tmp_path / "missing"))) == []


def test_getenv_reads_what_os_environ_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_TEST_GETENV", "v\udcff")
    assert posixos.getenv("HUTCH_TEST_GETENV") == "v\udcff"
    monkeypatch.delenv("HUTCH_TEST_GETENV")
    assert posixos.getenv("HUTCH_TEST_GETENV") is None
    assert not hasattr(posixos, "environ")  # bytes-keyed in posix: a str lookup would miss silently
