"""The library under the CLI: hutch.Image and hutch.Machine, in-process, on real images and machines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hutch
from hutch.errors import ImageError, MachineError

pytestmark = pytest.mark.usefixtures("private_net")


def test_images_and_machines_through_the_api(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    (img,) = hutch.Image.list()
    assert (img.name, img.type, img.read_only) == ("bb", "directory", False)
    img.export(str(tmp_path / "bb.tar.zst"))
    copy = hutch.Image.import_tar(str(tmp_path / "bb.tar.zst"), "copy", read_only=True)
    assert copy.read_only and copy.path == str(hutch_env / "images/copy")
    thin = copy.clone("thin", thin=True)
    assert thin.type == "thin" and thin.source == copy.path
    with pytest.raises(ImageError, match="source of thin clones"):
        copy.remove()
    assert sorted(i.name for i in hutch.Image.list()) == ["bb", "copy", "thin"]

    m = hutch.Machine.start("thin")
    try:
        assert [x.name for x in hutch.Machine.list()] == ["thin"] and m.running
        assert hutch.Machine.get("thin").leader == m.leader
        out = tmp_path / "out"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
        saved = os.dup(1)
        os.dup2(fd, 1)
        try:
            rc = m.shell(["/bin/sh", "-c", "echo $GREETING; exit 7"], env={"GREETING": "hello"})
        finally:
            os.dup2(saved, 1)
            os.close(fd)
            os.close(saved)
        assert rc == 7 and out.read_text() == "hello\n"
        (tmp_path / "f").write_text("via api\n")
        m.copy_to(str(tmp_path / "f"), "/root/f")
        m.copy_from("/root/f", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "via api\n"
    finally:
        m.terminate(wait=True)
    assert not m.running and hutch.Machine.list() == []
    with pytest.raises(MachineError, match="No machine 'thin' known"):
        hutch.Machine.get("thin")
    thin.remove()
    copy.set_read_only(False).rename("renamed")
    assert sorted(i.name for i in hutch.Image.list()) == ["bb", "renamed"]


def test_importing_hutch_stays_cheap() -> None:
    repo = str(Path(hutch.__file__).parent.parent)
    code = "import hutch; print(','.join(m for m in ('hutch.api', 'argparse', 'json') if m in sys.modules))"
    r = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {repo!r}); {code}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
