"""What the ports of systemd's TEST-13-NSPAWN share: hutch linked as `systemd-nspawn`, upstream's
create_dummy_container (an OS tree, its root directory mode 0555) and its dummy init, and the two ways
upstream checks a command line: it must succeed, or it must fail (with one clear line, never a
traceback, hutch's own rule)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import HUTCH

# test/TEST-13-NSPAWN's template init: it greets, lists the links, and exits.
DUMMY_INIT = """#!/bin/bash
echo "Hello from dummy init, beautiful day, innit?"
ip link
"""


@contextmanager
def tmpfs(d: Path) -> Iterator[Path]:
    """A tmpfs on D while the block runs: the dummy containers are copies of a 162 MB tree, which
    costs ~4 s on this machine's disk and a tenth of that in memory. (The suite runs in a mount
    namespace of its own: a mount left behind dies with it.)"""
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "--lazy", str(d)], check=True)


def link_nspawn(d: Path) -> Path:
    d.mkdir(exist_ok=True)
    (d / "systemd-nspawn").symlink_to(HUTCH)
    return d / "systemd-nspawn"


def dummy_container(template: Path, root: Path, dummy_init: bool = False) -> Path:
    """create_dummy_container: TEMPLATE copied to ROOT, ROOT at mode 0555. With DUMMY_INIT the tree
    boots upstream's dummy init rather than systemd (the template upstream boots has no systemd)."""
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    if dummy_init:
        for p in ("usr/lib/systemd/systemd", "usr/sbin/init"):
            (root / p).unlink(missing_ok=True)
        (root / "usr/sbin/init").write_text(DUMMY_INIT)
        (root / "usr/sbin/init").chmod(0o755)
    root.chmod(0o555)
    return root


def run(nspawn: Path | list[str], *args: str, env: dict[str, str] | None = None, timeout: int = 120) -> str:
    cmd = [str(nspawn)] if isinstance(nspawn, Path) else list(nspawn)
    r = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
    )
    assert r.returncode == 0, f"{args}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


def run_fails(nspawn: Path | list[str], *args: str, env: dict[str, str] | None = None) -> str:
    cmd = [str(nspawn)] if isinstance(nspawn, Path) else list(nspawn)
    r = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env
    )
    assert r.returncode != 0, (args, r.stdout[-1500:])
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-1500:]
    return r.stderr


def with_host_users(passwd: Path, group: Path) -> list[str]:
    """A prefix that runs a command with PASSWD and GROUP as the host's /etc/passwd and /etc/group, in
    a mount namespace of its own: upstream's tests useradd on the host; these never touch its /etc."""
    script = 'mount --bind "$0" /etc/passwd && mount --bind "$1" /etc/group && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(passwd), str(group)]
