from __future__ import annotations

import os
from pathlib import Path

from hutch.linux.fsutil import rm_rf


def test_rm_rf_removes_tree_without_following_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    tree = tmp_path / "tree"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/f").write_text("x")
    (tree / "a/locked").mkdir()
    (tree / "a/locked/g").write_text("y")
    os.chmod(tree / "a/locked", 0)
    (tree / "link").symlink_to(outside)
    (tree / "a/flink").symlink_to(outside / "keep")
    rm_rf(str(tree))
    assert not tree.exists()
    assert (outside / "keep").read_text() == "k"
    rm_rf(str(tree))  # absent: nothing to do
    f = tmp_path / "file"
    f.write_text("z")
    rm_rf(str(f))
    assert not f.exists()


def test_libc_errors_are_raised() -> None:
    """Every wrapper must see libc's -1: an int read as long once hid umount2() failures."""
    import pytest

    from hutch.linux import libc

    with pytest.raises(OSError) as e:
        libc.umount("/nonexistent-hutch-test")
    assert e.value.errno in (2, 22, 1)
    with pytest.raises(OSError):
        libc.mount("none", "/nonexistent-hutch-test", "tmpfs")
    with pytest.raises(OSError):
        libc.setns(-1)
    with pytest.raises(OSError):
        libc.openat2(-1, "x", 0, 0)
