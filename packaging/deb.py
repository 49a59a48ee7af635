"""hutch's Debian package, built from its wheel with dpkg-deb alone (no debhelper: a fresh Debian 12 has
dpkg, and nothing here is compiled).

    python3 packaging/deb.py WHEEL OUTDIR      writes OUTDIR/hutch_VERSION_all.deb, prints its path

What goes where (Debian's places for a Python application on Debian's own python3):
    /usr/lib/python3/dist-packages/hutch/      the wheel's package, byte-compiled by postinst
    /usr/bin/hutch                             the wheel's front end (bin/hutch: -I -S, dist-packages)
    /usr/share/man/man1/hutch.1.gz, hutch-spawn.1.gz, man5/hutch.nspawn.5.gz   (hutch.manpages)
    /usr/share/bash-completion/completions/hutch, /usr/share/zsh/vendor-completions/_hutch
    /usr/lib/systemd/system/hutch@.service     the unit `hutch enable` links (hutch.machines.autostart)
    /usr/lib/systemd/system/hutch.service      -> /dev/null: under systemd the init script stays out
    /etc/init.d/hutch                          sysvinit and OpenRC: `hutch autostart`, poweroff at stop
The man pages, completion scripts and unit are made by the packaged code itself, run from the
staging tree, so the package says what its own hutch does.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE = "usr/lib/python3/dist-packages"
DEPENDS = "python3 (>= 3.11), python3-zstandard, python3-rich"
RECOMMENDS = "busybox-static, debootstrap, iproute2, nftables"

POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # Bytecode and the preload bundles (hutch/preload.py) now, not at each user's first run.
    python3 -m compileall -q /{site}/hutch >/dev/null
    python3 -I -m hutch.preload >/dev/null
    if [ -x /etc/init.d/hutch ] && command -v update-rc.d >/dev/null; then
        update-rc.d hutch defaults >/dev/null
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
fi
"""

PRERM = """#!/bin/sh
set -e
# What postinst made, which dpkg does not know about. Running machines go on: their supervisors
# have what they need loaded.
find /{site}/hutch -name __pycache__ -type d -prune -exec rm -rf {{}} +
"""

POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ] && command -v update-rc.d >/dev/null; then
    update-rc.d hutch remove >/dev/null
fi
"""

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hutch

Files: *
License: LGPL-2.1-or-later
 On Debian systems, the full text of the GNU Lesser General Public License version 2.1 can be found
 in /usr/share/common-licenses/LGPL-2.1.
"""


def _run_packaged(site: Path, code: str) -> str:
    """CODE run by Debian's interpreter on the staged package alone (writing no bytecode into it),
    with none of this machine's HUTCH_* settings (the unit names the default image directory)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    code = f"import sys; sys.path.insert(0, {str(site)!r}); {code}"
    argv = ["/usr/bin/python3", "-I", "-S", "-B", "-c", code]
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def _write(root: Path, rel: str, data: str | bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def direct_shebang(front_end: bytes, python: str) -> bytes:
    """The front end with PYTHON in its first line instead of /bin/sh (which is there for a wheel
    installed where no one knows the interpreter's path yet); the rest is unchanged."""
    first, nl, rest = front_end.partition(b"\n")
    if first != b"#!/bin/sh" or not rest.startswith(b"''':'"):
        raise SystemExit("deb.py: the wheel's front end is not hutch's (bin/hutch)")
    return f"#!{python} -ISXfrozen_modules=on".encode() + nl + rest


def _unpack_wheel(wheel: Path, root: Path) -> str:
    """The wheel's package into dist-packages and its front end into /usr/bin; returns the version."""
    version = ""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if info.is_dir():
                continue
            data = z.read(info)
            if name.startswith("hutch/"):
                _write(root, f"{SITE}/{name}", data)
            elif name.endswith(".data/scripts/hutch"):
                # Debian's interpreter has one path: started by the kernel with the flags the sh
                # line would pass, without a shell's start first.
                _write(root, "usr/bin/hutch", direct_shebang(data, "/usr/bin/python3"), 0o755)
            elif name.endswith(".dist-info/METADATA"):
                # importlib.metadata finds it; no RECORD, so pip knows the files are not its own.
                _write(root, f"{SITE}/{name}", data)
                version = next(
                    line.split(":", 1)[1].strip()
                    for line in data.decode().splitlines()
                    if line.startswith("Version:")
                )
    if not version or not (root / "usr/bin/hutch").exists():
        raise SystemExit(f"deb.py: {wheel} is not hutch's wheel (no version or no front end)")
    _write(root, f"{SITE}/hutch-{version}.dist-info/INSTALLER", "debian\n")
    return version


def _docs(root: Path) -> None:
    site = root / SITE
    with tempfile.TemporaryDirectory() as man:
        _run_packaged(site, f"from hutch.manpages import main; main([{man!r}])")
        for page in sorted(Path(man).glob("man*/*")):
            # mtime 0 in the gzip header: the same sources make the same package.
            packed = gzip.compress(page.read_bytes(), 9, mtime=0)
            _write(root, f"usr/share/man/{page.parent.name}/{page.name}.gz", packed)
    bash = _run_packaged(site, "from hutch.completion import main; main(['bash'])")
    zsh = _run_packaged(site, "from hutch.completion import main; main(['zsh'])")
    _write(root, "usr/share/bash-completion/completions/hutch", bash)
    _write(root, "usr/share/zsh/vendor-completions/_hutch", zsh)
    _write(root, "usr/share/doc/hutch/copyright", COPYRIGHT)


def _services(root: Path) -> None:
    unit = _run_packaged(
        root / SITE,
        "from hutch.machines.autostart import unit_text; from hutch.paths import Paths; "
        "print(unit_text(Paths.from_env(), '/usr/bin/hutch'), end='')",
    )
    _write(root, "usr/lib/systemd/system/hutch@.service", unit)
    (root / "usr/lib/systemd/system/hutch.service").symlink_to("/dev/null")
    _write(root, "etc/init.d/hutch", (HERE / "hutch.init").read_text(), 0o755)


def _control(root: Path, version: str) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    size_kib = sum((p.stat().st_size + 1023) // 1024 for p in files)
    control = (
        f"Package: hutch\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: hutch developers <hutch@localhost>\n"
        f"Installed-Size: {size_kib}\nDepends: {DEPENDS}\nRecommends: {RECOMMENDS}\nSection: admin\n"
        "Priority: optional\nHomepage: https://github.com/hutch/hutch\n"
        "Description: systemd-nspawn and machinectl for any Linux host\n"
        " Lightweight OS containers: run a command in a distribution tree or boot its init, then manage\n"
        " the running machines and the image store, with systemd-nspawn's options and machinectl's verbs,\n"
        " where systemd is PID 1 and where it is not.\n"
    )
    md5 = "".join(
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n"
        for p in files
        if not str(p.relative_to(root)).startswith("etc/")
    )
    _write(root, "DEBIAN/control", control)
    _write(root, "DEBIAN/md5sums", md5)
    _write(root, "DEBIAN/conffiles", "/etc/init.d/hutch\n")
    for name, text in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
        _write(root, f"DEBIAN/{name}", text.format(site=SITE), 0o755)


def build(wheel: Path, outdir: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir(mode=0o755)
        version = _unpack_wheel(wheel, root)
        _docs(root)
        _services(root)
        for d in sorted(p for p in root.rglob("*") if p.is_dir()):
            d.chmod(0o755)
        _control(root, version)
        outdir.mkdir(parents=True, exist_ok=True)
        out = outdir / f"hutch_{version}_all.deb"
        tmp_out = outdir / f".{out.name}.tmp"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(tmp_out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.replace(tmp_out, out)  # never a half-written package under the final name
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: deb.py WHEEL OUTDIR", file=sys.stderr)
        return 2
    if shutil.which("dpkg-deb") is None:
        print("deb.py: dpkg-deb not found (Debian's dpkg package builds .deb files)", file=sys.stderr)
        return 1
    print(build(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
