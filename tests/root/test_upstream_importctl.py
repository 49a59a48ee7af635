"""systemd's own importctl tests, ported: test/units/TEST-13-NSPAWN.importctl.sh, as of systemd main in
2026 (the file that follows v258), up to its varlinkctl part. Upstream's shell, run by bash with
`set -eux` and hutch linked as `importctl`.

Where the port must differ: /var/lib/confexts is the test's directory ($HUTCH_CONFEXT_PATH; upstream
mounts a tmpfs over the real one), /var/tmp the test's temp directory.

In the systemd-host lane only (issue 18): the io.systemd.Import varlink calls and the
systemd.pull= kernel command line generator (import0.service), which need systemd-importd and PID 1.
TEST-13-NSPAWN.machinectl.sh, the older copy of machined.sh, is covered by test_upstream_machined.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import HUTCH


def test_importctl(tmp_path: Path, hutch_env: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "importctl").symlink_to(HUTCH)
    confexts = tmp_path / "confexts"
    vartmp = tmp_path / "var-tmp"
    vartmp.mkdir()
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        PAGER="",
        HUTCH_CONFEXT_PATH=str(confexts),
        C=str(confexts),
        V=str(vartmp),
    )
    script = """
importctl
importctl --no-pager --help
importctl --version
importctl list-transfers
importctl list-transfers --no-legend --no-ask-password
importctl list-transfers -j
importctl list-images
importctl list-images --no-legend --no-ask-password
importctl list-images -j

(! importctl cancel-transfer 4711)

dd if=/dev/urandom of=$V/importtest bs=4096 count=10

importctl import-raw --class=confext $V/importtest
cmp $V/importtest $C/importtest.raw
importctl export-raw --class=confext importtest $V/importtest2
cmp $V/importtest $V/importtest2

(! importctl pull-raw --class=confext file://$V/importtest)
importctl pull-raw --verify=no --class=confext file://$V/importtest importtest3
cmp $V/importtest $C/importtest3.raw

tar czf $V/importtest.tar.gz -C $V importtest

importctl import-tar --class=confext $V/importtest.tar.gz importtest4
cmp $V/importtest $C/importtest4/importtest

importctl export-tar --class=confext importtest4 $V/importtest2.tar.gz
importctl import-tar --class=confext $V/importtest2.tar.gz importtest5
cmp $V/importtest $C/importtest5/importtest

importctl import-fs --class=confext $C/importtest5 importtest6
cmp $V/importtest $C/importtest6/importtest

(! importctl pull-tar --class=confext file://$V/importtest.tar.gz importtest7)
importctl pull-tar --class=confext --verify=no file://$V/importtest.tar.gz importtest7
cmp $V/importtest $C/importtest7/importtest

importctl list-images
importctl list-images -j
"""
    r = subprocess.run(
        ["bash", "-euxo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-3000:]
    # hutch's own: the machine store saw none of it, and a confext is no machine to start.
    assert not any((hutch_env / "images").iterdir())
    bad = subprocess.run([HUTCH, "start", "importtest4"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "No image 'importtest4'" in bad.stderr
