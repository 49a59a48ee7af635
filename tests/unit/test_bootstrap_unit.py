from __future__ import annotations

from pathlib import Path

import pytest

from hutch.errors import ImageError
from hutch.images import bootstrap


def test_static_elf_detection() -> None:
    assert bootstrap.is_static_elf("/bin/busybox")
    assert not bootstrap.is_static_elf("/bin/ls")  # dynamically linked
    assert not bootstrap.is_static_elf("/etc/passwd")


def test_new_image_name_checks(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    for bad in ("../x", "a/b", "", ".hidden.", "x" * 70):
        with pytest.raises(ImageError):
            bootstrap.check_new_image(bad, str(tmp_path))
    with pytest.raises(ImageError, match="already exists"):
        bootstrap.check_new_image("exists", str(tmp_path))


def test_finalize_debian(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/shadow").write_text("root:*:1:0:99999:7:::\ndaemon:*:1:0:99999:7:::\n")
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    bootstrap.finalize_debian(str(tmp_path), "deb")
    assert (tmp_path / "etc/machine-id").read_text() == ""
    assert (tmp_path / "etc/hostname").read_text() == "deb\n"
    assert (tmp_path / "etc/shadow").read_text().splitlines() == [
        "root::1:0:99999:7:::",
        "daemon:*:1:0:99999:7:::",
    ]
