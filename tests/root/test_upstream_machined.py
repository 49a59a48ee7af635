"""systemd's own machinectl tests, ported: test/units/TEST-13-NSPAWN.machined.sh, as of systemd main in
2026 (the file that follows v258), up to its varlinkctl part. Each section is upstream's shell, run by
bash with `set -eux` and hutch linked as `machinectl`; the machines are upstream's: container0..4 (the
dummy init, which exits at once) and long-running (a bash init with upstream's signal traps).

Where the port must differ, it says so at the spot: /var/lib/machines is the module's image directory,
/etc/systemd/nspawn its settings directory, /etc/systemd/system its unit directory, /tmp and /var/tmp
its temp directory; the host user testuser comes from a passwd file bound over /etc/passwd in a mount
namespace of the command's own.

Changed on purpose (issue 17): `enable` links hutch@NAME.service (hutch's unit, which runs hutch)
into machines.target.wants, where upstream links systemd-nspawn@NAME.service.

In the systemd-host lane only (they need systemd as PID 1 and machined, issue 18): the varlinkctl
section (io.systemd.Machine, io.systemd.MachineImage), and `systemctl edit` of the service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream13 import dummy_container, tmpfs, with_host_users

from conftest import HUTCH, debian_image

pytestmark = pytest.mark.usefixtures("private_net")

LONG_RUNNING_INIT = r"""#!/usr/bin/env bash

set -x

PID=0

trap 'touch /terminate; kill 0' RTMIN+3
trap 'touch /poweroff' RTMIN+4
trap 'touch /reboot' INT
trap 'touch /trap' TRAP
trap 'exit 0' TERM
trap 'kill $PID' EXIT

# We need to wait for the sleep process asynchronously in order to allow
# bash to process signals
sleep infinity &

# notify that the process is ready
touch /ready

PID=$!
while :; do
    wait || :
done
"""


class Env:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.machines = base / "machines"  # /var/lib/machines
        self.etc_nspawn = base / "etc-nspawn"  # /etc/systemd/nspawn
        self.tmp = base / "tmp"  # /tmp and /var/tmp
        self.bin = base / "bin"
        dirs = (self.machines, self.etc_nspawn, base / "run-nspawn", self.tmp, self.bin)
        for d in (*dirs, base / "state", base / "log", base / "cache", base / "config", base / "units"):
            d.mkdir(parents=True, exist_ok=True)
        (self.bin / "machinectl").symlink_to(HUTCH)
        self.env = dict(
            os.environ,
            PATH=f"{self.bin}:{os.environ['PATH']}",
            PAGER="",
            HUTCH_IMAGE_PATH=str(self.machines),
            HUTCH_SETTINGS_PATH=f"{self.etc_nspawn}:{base / 'run-nspawn'}",
            HUTCH_STATE_DIR=str(base / "state"),
            HUTCH_LOG_DIR=str(base / "log"),
            HUTCH_CACHE_DIR=str(base / "cache"),
            HUTCH_CONFIG_DIR=str(base / "config"),
            HUTCH_SYSTEMD_UNIT_DIR=str(base / "units"),
            M=str(self.machines),
            T=str(self.tmp),
            U=str(base / "units"),
            N=str(self.etc_nspawn),
        )

    def sh(self, script: str, prefix: list[str] | None = None, timeout: int = 300) -> str:
        """SCRIPT under bash -eux -o pipefail, as upstream runs it; its output, or the test fails."""
        r = subprocess.run(
            [*(prefix or []), "bash", "-euxo", "pipefail", "-c", LONG_RUNNING_START + script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-3000:]
        return r.stdout


# upstream's long_running_machine_start(), less its `systemctl stop` of the unit (there is none).
LONG_RUNNING_START = """
long_running_machine_start() {
    machinectl status long-running &>/dev/null && return 0 || true
    rm -f $M/long-running/ready
    machinectl start long-running
    # !!!! DO NOT REMOVE THIS TEST
    # The test makes sure that the long-running's init script has enough time to start and
    # registered signal traps
    timeout 30 bash -c "until test -e $M/long-running/ready; do sleep .5; done"
}
"""


@pytest.fixture(scope="module")
def m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("machined"))
    with tmpfs(env.machines):
        yield from _machines(env)


def _machines(env: Env) -> Iterator[Env]:
    template = debian_image()
    for i in range(5):
        dummy_container(template, env.machines / f"container{i}", dummy_init=True)
    lr = dummy_container(template, env.machines / "long-running", dummy_init=True)
    lr.chmod(0o755)
    (lr / "usr/sbin/init").write_text(LONG_RUNNING_INIT)
    lr.chmod(0o555)
    env.sh('for i in {0..4}; do machinectl start "container$i"; done; long_running_machine_start')
    yield env
    subprocess.run(
        [
            "bash",
            "-c",
            "machinectl status long-running &>/dev/null && machinectl kill --signal=KILL long-running",
        ],
        env=env.env,
        capture_output=True,
    )
    subprocess.run([HUTCH, "terminate", "--wait", "long-running"], env=env.env, capture_output=True)
    for p in env.machines.iterdir():
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(env.base, ignore_errors=True)


def test_list_status_show(m: Env) -> None:
    m.sh("""
long_running_machine_start

machinectl
machinectl --no-pager --help
machinectl --version
machinectl list
machinectl list --no-legend --no-ask-password

machinectl status long-running long-running long-running
machinectl status --full long-running
machinectl status --quiet --lines=1 long-running
machinectl status --lines=0 --max-addresses=0 long-running
machinectl status --machine=testuser@.host long-running
machinectl status --output=help long-running
while read -r output; do
    machinectl status --output="$output" long-running
done < <(machinectl --output=help)

machinectl show
machinectl show --all
machinectl show --all --machine=root@
machinectl show --all --machine=testuser@
[[ "$(machinectl show --property=PoolPath --value)" == "$M" ]]
machinectl show long-running
machinectl show long-running long-running long-running --all
[[ "$(machinectl show --property=RootDirectory --value long-running)" == "$M/long-running" ]]
""")


def test_enable_disable(m: Env) -> None:
    # Changed on purpose: hutch's unit is hutch@.service.
    m.sh("""
machinectl enable long-running
test -L $U/machines.target.wants/hutch@long-running.service
machinectl enable long-running long-running long-running container1
machinectl disable long-running
test ! -L $U/machines.target.wants/hutch@long-running.service
machinectl disable long-running long-running long-running container1
""")


def test_shell_as_host_user(m: Env) -> None:
    passwd, group = m.tmp / "passwd", m.tmp / "group"
    home = m.tmp / "home-testuser"
    home.mkdir(exist_ok=True)
    os.chown(home, 4010, 4010)
    passwd.write_text(Path("/etc/passwd").read_text() + f"testuser:x:4010:4010::{home}:/bin/bash\n")
    group.write_text(Path("/etc/group").read_text() + "testuser:x:4010:\n")
    m.sh(
        """
[[ "$(TERM=dumb machinectl shell testuser@ /usr/bin/bash -c 'echo -ne $FOO')" == "" ]]
[[ "$(TERM=dumb machinectl shell --setenv=FOO=bar testuser@ /usr/bin/bash -c 'echo -ne $FOO')" == "bar" ]]
""",
        prefix=with_host_users(passwd, group),
    )


def test_poweroff_reboot_terminate_kill(m: Env) -> None:
    m.sh("""
long_running_machine_start
[[ "$(machinectl show --property=State --value long-running)" == "running" ]]
# Equivalent to machinectl kill --signal=SIGRTMIN+4 --kill-whom=leader
rm -f $M/long-running/poweroff
machinectl poweroff long-running
timeout 30 bash -c "until test -e $M/long-running/poweroff; do sleep .5; done"
# Equivalent to machinectl kill --signal=SIGINT --kill-whom=leader
rm -f $M/long-running/reboot
machinectl reboot long-running
timeout 30 bash -c "until test -e $M/long-running/reboot; do sleep .5; done"
# Test for 'machinectl terminate'
rm -f $M/long-running/terminate
machinectl terminate long-running
timeout 30 bash -c "until test -e $M/long-running/terminate; do sleep .5; done"
timeout 30 bash -c "while machinectl status long-running &>/dev/null; do sleep .5; done"
# Restart container
long_running_machine_start
# Test for 'machinectl kill'
rm -f $M/long-running/trap
machinectl kill --signal=SIGTRAP --kill-whom=leader long-running
timeout 30 bash -c "until test -e $M/long-running/trap; do sleep .5; done"
# Multiple machines at once
machinectl poweroff long-running long-running long-running
machinectl reboot long-running long-running long-running
machinectl kill --signal=SIGTRAP --kill-whom=leader long-running long-running long-running
# All used signals should've been caught by a handler
[[ "$(machinectl show --property=State --value long-running)" == "running" ]]
""")


def test_copy(m: Env) -> None:
    m.sh("""
long_running_machine_start
cp /etc/machine-id $T/foo
machinectl copy-to long-running $T/foo /root/foo
test -f $M/long-running/root/foo
machinectl copy-from long-running /root/foo $T/bar
diff $T/foo $T/bar
rm -f $T/{foo,bar}
""")


def test_images(m: Env) -> None:
    m.sh("""
machinectl list-images
machinectl list-images --no-legend
machinectl image-status
machinectl image-status container1
machinectl image-status container1 container1 container{0..4}
machinectl show-image
machinectl show-image container1
machinectl show-image container1 container1 container{0..4}

machinectl clone container1 clone1
machinectl show-image clone1
machinectl rename clone1 clone2
(! machinectl show-image clone1)
machinectl show-image clone2
if lsattr -d $M >/dev/null; then
    [[ "$(machinectl show-image --property=ReadOnly --value clone2)" == no ]]
    machinectl read-only clone2 yes
    [[ "$(machinectl show-image --property=ReadOnly --value clone2)" == yes ]]
    machinectl read-only clone2 no
    [[ "$(machinectl show-image --property=ReadOnly --value clone2)" == no ]]
fi
machinectl remove clone2
for i in {0..4}; do
    machinectl clone container1 "clone$i"
done
machinectl remove clone{0..4}
for i in {0..4}; do
    machinectl clone container1 ".hidden$i"
done
machinectl list-images --all
test -d $M/.hidden1
machinectl clean
test ! -d $M/.hidden1
""")


def test_import_export(m: Env) -> None:
    m.sh("""
# Prepare a simple raw container
mkdir -p $T/mnt
truncate -s 256M $T/container.raw
mkfs.ext4 -q $T/container.raw
mount -o loop $T/container.raw $T/mnt
cp -r $M/container1/* $T/mnt
umount $T/mnt
# Try to import it, run it, export it, and re-import it
machinectl import-raw $T/container.raw container-raw
[[ "$(machinectl show-image --property=Type --value container-raw)" == "raw" ]]
machinectl start container-raw
machinectl export-raw container-raw $T/container-export.raw
machinectl import-raw $T/container-export.raw container-raw-reimport
[[ "$(machinectl show-image --property=Type --value container-raw-reimport)" == "raw" ]]
rm -f $T/container{,-export}.raw

# Prepare a simple tar.gz container
tar -pczf $T/container.tar.gz -C $M/container1 .
# Try to import it, run it, export it, and re-import it
machinectl import-tar $T/container.tar.gz container-tar
[[ "$(machinectl show-image --property=Type --value container-tar)" =~ directory|subvolume ]]
machinectl start container-tar
machinectl export-tar container-tar $T/container-export.tar.gz
machinectl import-tar $T/container-export.tar.gz container-tar-reimport
[[ "$(machinectl show-image --property=Type --value container-tar-reimport)" =~ directory|subvolume ]]
rm -f $T/container{,-export}.tar.gz

# Try to import a container directory & run it
cp -r $M/container1 $T/container.dir
machinectl import-fs $T/container.dir container-dir
[[ "$(machinectl show-image --property=Type --value container-dir)" =~ directory|subvolume ]]
machinectl start container-dir
rm -fr $T/container.dir

timeout 30 bash -c "until machinectl clean --all; do sleep .5; done"
""")


def test_cat_edit(m: Env) -> None:
    m.sh("""
NSPAWN_FRAGMENT="machinectl-test-$RANDOM.nspawn"
cat >"$M/$NSPAWN_FRAGMENT" <<EOF
[Exec]
Boot=true
EOF
machinectl cat "$NSPAWN_FRAGMENT"
EDITOR=true script -qec "machinectl edit $NSPAWN_FRAGMENT" /dev/null
test -f "$N/$NSPAWN_FRAGMENT"
diff "$M/$NSPAWN_FRAGMENT" "$N/$NSPAWN_FRAGMENT"

cat >$T/fragment.nspawn <<EOF
[Exec]
Boot=false
EOF
machinectl cat $T/fragment.nspawn
EDITOR="cp $T/fragment.nspawn" script -qec "machinectl edit $NSPAWN_FRAGMENT" /dev/null
diff $T/fragment.nspawn "$N/$NSPAWN_FRAGMENT"
rm -f "$N/$NSPAWN_FRAGMENT" "$M/$NSPAWN_FRAGMENT"
""")


def test_invalid_options(m: Env) -> None:
    m.sh("""
long_running_machine_start
for opt in format lines machine max-addresses output setenv verify; do
    (! machinectl status "--$opt=" long-running)
    (! machinectl status "--$opt=-1" long-running)
    (! machinectl status "--$opt=''" long-running)
done
(! machinectl show "")
(! machinectl enable)
(! machinectl enable "")
(! machinectl disable)
(! machinectl disable "")
(! machinectl read-only container1 "")
(! machinectl read-only container1 foo)
(! machinectl read-only container1 -- -1)
""")
