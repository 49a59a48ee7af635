"""hutch as a user installs it: the wheel, built from this checkout, in a fresh virtual environment
outside it, run from / (issue 19). Nothing installed may name the checkout, and the front end
(bin/hutch) builds spawn's preload bundle at the first run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, assert_no_traceback

pytestmark = pytest.mark.usefixtures("private_net")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("install")
    # pip builds it as for any user: in an isolated environment, from a copy of the source tree.
    src = d / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info"))
    pip = ["pip", "--disable-pip-version-check", "-q"]
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", *pip[:1], "wheel", *pip[1:], "--no-deps", "-w",
                    str(d / "dist"), str(src)], check=True, timeout=300)  # fmt: skip
    (wheel,) = (d / "dist").glob("hutch-*-py3-none-any.whl")
    shutil.rmtree(src)
    env = d / "env"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(env)], check=True, timeout=120)
    subprocess.run([str(env / "bin/pip"), "install", *pip[1:], str(wheel)], check=True, timeout=300)
    yield env


def hutch(env: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(env / "bin/hutch"), *args], cwd="/", capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert_no_traceback(args, r.stdout + r.stderr)
    return r


def test_the_wheel_runs_from_anywhere(installed: Path, busybox: Path) -> None:
    site = next(installed.glob("lib/python3*/site-packages"))
    bundle = site / "hutch/__pycache__"
    assert not list(bundle.glob("preload-spawn.*")), "a wheel ships no bundle: it is built for this host"
    r = hutch(installed, "spawn", "-q", "-M", "bb", "/bin/echo", "spawned")
    assert r.returncode == 0 and r.stdout == "spawned\n", r.stderr
    # The first run wrote spawn's bundle, recording the installed sources.
    (made,) = bundle.glob("preload-spawn.*.bin")
    assert str(site).encode() in made.read_bytes() and str(REPO).encode() not in made.read_bytes()
    r = hutch(installed, "start", "bb")
    assert r.returncode == 0, r.stderr
    try:
        r = hutch(installed, "shell", "bb", "/bin/echo", "inside")
        assert r.returncode == 0 and "inside" in r.stdout, r.stderr
        r = hutch(installed, "list", "--no-legend")
        assert r.stdout.split()[:3] == ["bb", "container", "hutch"], r.stdout
    finally:
        r = hutch(installed, "poweroff", "--wait", "bb")
    assert r.returncode == 0, r.stderr
    assert hutch(installed, "list", "--no-legend").stdout == ""
    # As installed through a link (/usr/local/bin/hutch, or machinectl's name).
    link = installed.parent / "machinectl"
    link.symlink_to(installed / "bin/hutch")
    r = subprocess.run([link, "list", "--no-legend"], cwd="/", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stderr


def test_nothing_installed_names_the_checkout(installed: Path) -> None:
    found = subprocess.run(["grep", "-rlF", str(REPO), str(installed)], capture_output=True, text=True)
    assert found.stdout == "", found.stdout
    front = (installed / "bin/hutch").read_text()
    assert front.startswith("#!/bin/sh\n") and os.access(installed / "bin/hutch", os.X_OK)
