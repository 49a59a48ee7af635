""".nspawn settings files: found where systemd-nspawn looks, trusted or not by location, merged with the
command line as upstream merges them, malformed ones refused with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.usefixtures("private_net")


def spawn_sh(*opts: str, script: str) -> str:
    r = run("spawn", "-q", "-M", "bb", *opts, "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_trusted_file_applies(busybox: Path, hutch_env: Path) -> None:
    (hutch_env / "settings/bb.nspawn").write_text(
        "# comment\n[Exec]\nEnvironment=FROM_FILE=1\nHostname=filehost\nCapability=CAP_NET_ADMIN\n"
        "[Files]\nTemporaryFileSystem=/scratch\n"
    )
    out = spawn_sh(
        script="echo $FROM_FILE; hostname; grep CapBnd /proc/self/status; mount | grep -c ' /scratch '"
    )
    lines = out.split()
    assert lines[0] == "1" and lines[1] == "filehost"
    assert int(lines[3], 16) >> 12 & 1  # CAP_NET_ADMIN, granted by a trusted file
    assert lines[4] == "1"
    # The command line wins over the file...
    assert spawn_sh("--hostname=cmdline", script="hostname").strip() == "cmdline"
    # ...unless --settings=override; and --settings=no ignores the file.
    assert spawn_sh("--hostname=cmdline", "--settings=override", script="hostname").strip() == "filehost"
    assert spawn_sh("--settings=no", script="echo ${FROM_FILE:-unset}").strip() == "unset"


def test_untrusted_file_cannot_widen(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    secret = tmp_path / "hostsecret"
    secret.mkdir()
    (secret / "s").write_text("host\n")
    (hutch_env / "images/bb.nspawn").write_text(
        f"[Exec]\nEnvironment=FROM_FILE=1\nCapability=CAP_SYS_MODULE\nPrivateUsers=no\n"
        f"SystemCallFilter=@raw-io\nLimitNOFILE=4096\n[Files]\nBind={secret}:/mnt/secret\n"
    )
    script = "echo $FROM_FILE; grep CapBnd /proc/self/status; cat /mnt/secret/s; cat /proc/self/uid_map"
    r = run("spawn", "-q", "-M", "bb", "/bin/sh", "-c", script)
    assert r.returncode == 0
    lines = r.stdout.split()
    assert lines[0] == "1"  # harmless keys still apply
    assert not int(lines[2], 16) >> 16 & 1  # no CAP_SYS_MODULE
    assert "host" not in r.stdout  # no bind of a host path
    assert r.stdout.split("\n")[-2].split()[1] != "0"  # still in a user namespace
    for key in ("Capability", "PrivateUsers", "SystemCallFilter", "LimitNOFILE", "Bind"):
        assert f"Ignoring {key}=, file {hutch_env / 'images/bb.nspawn'} is not trusted" in r.stderr
    # --settings=trusted trusts it, as upstream.
    r = run("spawn", "-q", "-M", "bb", "--settings=trusted", "/bin/cat", "/mnt/secret/s")
    assert r.stdout.strip() == "host", r.stderr


def test_malformed_files_name_file_and_line(busybox: Path, hutch_env: Path) -> None:
    f = hutch_env / "settings/bb.nspawn"
    cases = {
        "[Exec]\nBoot=maybe\n": ":2: Failed to parse boolean value 'maybe'",
        "Boot=yes\n": ":1: Assignment outside of a section",
        "[Exec]\nnonsense\n": ":2: Missing '='",
        "[Exec]\nKillSignal=SIGBOGUS\n": ":2: KillSignal=SIGBOGUS",
        "[Exec\n": ":1: Invalid section header",
        "[Files]\nVolatile=sometimes\n": ":2: Volatile=sometimes",
    }
    for text, expected in cases.items():
        f.write_text(text)
        r = run("spawn", "-q", "-M", "bb", "/bin/true")
        assert r.returncode != 0, text
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{f}{expected}" in lines[0], (text, r.stderr)
    f.write_text("[Exec]\nNoSuchKey=1\n[Weird]\nX=1\n")
    r = run("spawn", "-q", "-M", "bb", "/bin/true")
    assert (
        r.returncode == 0 and "Unknown key 'NoSuchKey'" in r.stderr and "Unknown section 'Weird'" in r.stderr
    )


def test_started_machine_uses_its_file_over_defaults(busybox: Path, hutch_env: Path) -> None:
    (hutch_env / "settings/bb.nspawn").write_text("[Exec]\nHostname=fromfile\nDropCapability=CAP_CHOWN\n")
    run("start", "bb", check=True)
    try:
        r = run("shell", "bb", "/bin/sh", "-c", "grep CapBnd /proc/self/status", check=True)
        assert not int(r.stdout.split()[1], 16) & 1  # the shell gets the machine's own bounding set
        entry = json.loads((hutch_env / "state/machines/bb.json").read_text())
        # (busybox init then sets the hostname from /etc/hostname itself)
        assert entry["hostname"] == "fromfile" and not entry["keep_caps"] & 1
    finally:
        run("terminate", "--wait", "bb")


def test_credentials_from_settings_files(busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    """SetCredential= and LoadCredential= ([Exec]); an untrusted file may set a credential but not
    load one: that would read any host file into the machine."""
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    show = "cat /run/host/credentials/*; echo $CREDENTIALS_DIRECTORY"
    trusted = hutch_env / "settings/bb.nspawn"
    trusted.write_text(f"[Exec]\nSetCredential=greeting:hello\\tthere\nLoadCredential=s:{secret}\n")
    r = run("spawn", "-q", "-M", "bb", "/bin/sh", "-c", show, check=True)
    assert r.stdout == "hello\tthere" + "host secret\n" + "/run/host/credentials\n"
    # On the command line they replace the file's, as any setting does with --settings=override.
    r = run("spawn", "-q", "-M", "bb", "--settings=override", "--set-credential=a:b", "/bin/sh", "-c", show)
    assert r.stdout.startswith("hello\tthere"), r.stdout
    r = run("spawn", "-q", "-M", "bb", "--set-credential=a:b", "/bin/sh", "-c", show, check=True)
    assert r.stdout == "b/run/host/credentials\n"
    trusted.unlink()
    untrusted = hutch_env / "images/bb.nspawn"
    untrusted.write_text(f"[Exec]\nSetCredential=greeting:hi\nLoadCredential=s:{secret}\n")
    r = run("spawn", "-q", "-M", "bb", "/bin/sh", "-c", show, check=True)
    assert r.stdout == "hi/run/host/credentials\n"
    assert f"Ignoring LoadCredential=, file {untrusted} is not trusted" in r.stderr
    # Bad values name the file and line.
    untrusted.write_text("[Exec]\nSetCredential=a/b:x\n")
    r = run("spawn", "-q", "-M", "bb", "/bin/true")
    assert (
        r.returncode != 0 and f"{untrusted}:2: SetCredential=a/b:x: Credential name is not valid" in r.stderr
    )
