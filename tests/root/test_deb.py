"""The Debian package (issue 19): built by packaging/deb.py from a wheel of this checkout, its contents
read back with dpkg-deb, then installed with apt into a fresh Debian 12 (the suite's bookworm image, an
ephemeral copy) the way a user does: `apt install ./hutch_X_all.deb`, Debian's python3, python3-rich
and python3-zstandard pulled in as dependencies; there `hutch bootstrap busybox bb && hutch start bb`
must work, the sysvinit script must start and stop enabled machines, and removal leaves nothing.

apt in the container reads the host's package lists and sources (both Debian 12) and keeps what it
downloads in the test cache, so only the first run fetches packages. The machine started inside gets
a network namespace of its own (unshare -n): no interface lands on the host."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CACHE, REPO, run

APT_ARCHIVES = CACHE / "apt-archives"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("deb")
    src = d / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info"))
    subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "--no-deps", "-w", str(d / "dist"), str(src)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (d / "dist").glob("hutch-*.whl")
    r = subprocess.run(
        ["/usr/bin/python3", str(src / "packaging/deb.py"), str(wheel), str(d / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    shutil.rmtree(src)
    (pkg,) = (d / "out").glob("*.deb")
    yield pkg


def _field(info: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(f" {name}:"))


def test_package_metadata_and_files(deb: Path, tmp_path: Path) -> None:
    from hutch import __version__

    assert deb.name == f"hutch_{__version__}_all.deb"
    info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True).stdout
    assert _field(info, "Package") == "hutch" and _field(info, "Architecture") == "all"
    assert _field(info, "Version") == __version__
    depends = [d.split()[0] for d in _field(info, "Depends").split(",")]
    assert depends == ["python3", "python3-zstandard", "python3-rich"]
    root = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for f in (
        "usr/bin/hutch", "usr/lib/python3/dist-packages/hutch/cli/__init__.py",
        "usr/share/man/man1/hutch.1.gz", "usr/share/man/man1/hutch-spawn.1.gz",
        "usr/share/man/man5/hutch.nspawn.5.gz", "usr/share/bash-completion/completions/hutch",
        "usr/share/zsh/vendor-completions/_hutch", "usr/lib/systemd/system/hutch@.service",
        "etc/init.d/hutch", "usr/share/doc/hutch/copyright",
    ):  # fmt: skip
        assert (root / f).is_file(), f
    # Under systemd the init script is masked; the template unit runs the packaged front end.
    assert (root / "usr/lib/systemd/system/hutch.service").readlink() == Path("/dev/null")
    unit = (root / "usr/lib/systemd/system/hutch@.service").read_text()
    assert "ExecStart=/usr/bin/hutch spawn --quiet --keep-unit --boot" in unit, unit
    assert "RequiresMountsFor=/var/lib/machines/%i" in unit and "Delegate=yes" in unit
    # The man pages are the packaged --help, rendered clean by groff.
    page = gzip.decompress((root / "usr/share/man/man1/hutch.1.gz").read_bytes())
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert b"list\\-images" in page  # roff escapes its hyphens
    # Nothing names the checkout or the build's temporary directories; no bytecode is shipped.
    found = subprocess.run(["grep", "-rlF", str(REPO), str(root)], capture_output=True, text=True)
    assert found.stdout == ""
    assert not list(root.rglob("__pycache__"))
    assert (root / "usr/bin/hutch").read_text().startswith("#!/usr/bin/python3 -ISXfrozen_modules=on\n")


def test_bad_wheel_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    import zipfile

    bogus = tmp_path / "hutch-0-py3-none-any.whl"
    with zipfile.ZipFile(bogus, "w") as z:
        z.writestr("other/__init__.py", "")
    out = tmp_path / "out"
    argv = ["/usr/bin/python3", str(REPO / "packaging/deb.py"), str(bogus), str(out)]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "not hutch's wheel" in r.stderr, r.stderr
    assert not out.exists() or list(out.iterdir()) == []


INSIDE = r"""
set -u
export DEBIAN_FRONTEND=noninteractive
say() { echo "$1=$2"; }
apt-get install -y -q /tmp/{deb} > /tmp/apt.log 2>&1
say apt "$?"
say python "$(readlink -f /usr/bin/python3)"
say version "$(hutch --version)"
say bundle "$(ls /usr/lib/python3/dist-packages/hutch/__pycache__ | grep -c '^preload-.*bin$')"
say rc_link "$(ls /etc/rc2.d | grep -c 'S[0-9]*hutch')"
unshare -n sh -c '
    ip link set lo up
    hutch bootstrap busybox bb >/dev/null 2>&1; echo "bootstrap=$?"
    hutch start bb >/dev/null 2>&1; echo "start=$?"
    echo "shell=$(hutch shell bb /bin/echo inside 2>&1)"
    echo "list=$(hutch list --no-legend | cut -d" " -f1)"
    hutch poweroff --wait bb >/dev/null 2>&1; echo "poweroff=$?"
    hutch enable bb >/dev/null 2>&1; echo "enable=$?"
    /etc/init.d/hutch start >/dev/null 2>&1; echo "init_start=$?"
    echo "init_list=$(hutch list --no-legend | cut -d" " -f1)"
    /etc/init.d/hutch stop >/dev/null 2>&1; echo "init_stop=$?"
    echo "init_after=$(hutch list --no-legend | wc -l)"
'
apt-get remove -y -q hutch >/dev/null 2>&1
say remove "$?"
say left "$(ls /usr/lib/python3/dist-packages/hutch 2>&1 | grep -c 'No such')"
say command_left "$(command -v hutch | wc -l)"
"""


def test_apt_installs_it_on_debian_12_and_it_runs(deb: Path, debian: Path, hutch_env: Path) -> None:
    APT_ARCHIVES.joinpath("partial").mkdir(parents=True, exist_ok=True)
    if not list(Path("/var/lib/apt/lists").glob("*_Packages*")):
        pytest.fail("this host has no apt package lists: run apt-get update (setup.sh does)")
    binds = [
        "--bind-ro=/var/lib/apt/lists", f"--bind={APT_ARCHIVES}:/var/cache/apt/archives",
        f"--bind-ro={deb}:/tmp/{deb.name}", "--bind-ro=/etc/apt/sources.list.d",
    ]  # fmt: skip
    if Path("/etc/apt/sources.list").exists():
        binds.append("--bind-ro=/etc/apt/sources.list")
    # The host's network, for apt's first download; full privileges, for the hutch inside.
    r = run(
        "spawn", "-q", "-x", "-D", str(debian), "--private-users=no", "--capability=all", *binds,
        "/bin/sh", "-c", INSIDE.replace("{deb}", deb.name), timeout=600,
    )  # fmt: skip
    out = r.stdout
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert r.returncode == 0 and facts.get("apt") == "0", out + r.stderr
    assert facts["python"].startswith("/usr/bin/python3."), out  # Debian's own interpreter
    from hutch import __version__

    assert facts["version"] == f"hutch {__version__}", out
    from hutch.preload import ENTRIES

    assert facts["bundle"] == str(len(ENTRIES)) and facts["rc_link"] == "1", out  # postinst's work
    assert facts["bootstrap"] == "0" and facts["start"] == "0" and facts["shell"] == "inside", out
    assert facts["list"] == "bb" and facts["poweroff"] == "0", out
    # sysvinit's script: the enabled machine starts, and stop powers every machine off.
    assert facts["enable"] == "0" and facts["init_start"] == "0" and facts["init_list"] == "bb", out
    assert facts["init_stop"] == "0" and facts["init_after"] == "0", out
    assert facts["remove"] == "0" and facts["left"] == "1" and facts["command_left"] == "0", out
