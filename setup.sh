#!/bin/bash
# hutch's one set-up script, for a fresh Debian 12 machine, as root.
#   ./setup.sh install   Debian packages, a virtual environment in .venv, the `hutch` launcher
#   ./setup.sh demo      install, then bootstrap a busybox image, boot it, run commands, power it off
#   ./setup.sh test      install, then mypy, ruff and the whole test suite (in a private mount namespace)
#   ./setup.sh links [DIR]  link hutch as machinectl, systemd-nspawn and importctl in DIR (/usr/local/bin),
#                        where no such command is found on PATH already (--force: link them anyway)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
HERE=$(pwd)
VENV=$HERE/.venv
PACKAGES="python3 python3-venv busybox-static debootstrap systemd-container hyperfine bubblewrap util-linux bsdutils iproute2 nftables ca-certificates gcc libc6-dev"

install() {
    local missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        # Debian's interpreter, never a pyenv shim on PATH (~90 ms per start).
        /usr/bin/python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$HERE[test]" --config-settings editable_mode=compat
    # The launcher starts Python with -I -S (no site-packages scan, ~2 ms) and frozen stdlib modules
    # (Debian builds 3.11 with them off by default; on, the interpreter starts ~1.5 ms sooner).
    # -S also leaves out the environment's site-packages: append it (after the standard library, so
    # looking a stdlib module up costs nothing more) for the few libraries some verbs use.
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    cat > "$VENV/bin/hutch" <<LAUNCHER
#!$VENV/bin/python -ISXfrozen_modules=on
import sys
sys.path.insert(0, "$HERE")
sys.path.append("$site")
from hutch.preload import load
load(sys.argv[1] if len(sys.argv) > 1 else "")
from hutch.cli import main
sys.exit(main())
LAUNCHER
    chmod 755 "$VENV/bin/hutch"
    # Precompiled bytecode even where PYTHONDONTWRITEBYTECODE is set: compiling costs ~10 ms a start.
    "$VENV/bin/python" -m compileall -q "$HERE/hutch"
    # spawn's modules in one file, loaded without the import system's search (see hutch/preload.py).
    "$VENV/bin/python" -m hutch.preload >/dev/null
    echo "setup: hutch installed as $VENV/bin/hutch" >&2
}

case "${1:-install}" in
    install) install ;;
    demo) install; exec "$VENV/bin/python" "$HERE/demo/demo.py" ;;
    test)
        install
        # The foreign-architecture guest (tests/root/test_guests.py) runs through qemu-user's handler;
        # the faithful copies of disk images and OCI archives (tests/formats.py) are made with the tools
        # that make the originals, and pulled from Debian's registry server.
        # The ports of systemd's TEST-13-NSPAWN put ACLs on a tree (acl), as upstream's do.
        TEST_PACKAGES="qemu-user-static binfmt-support fdisk e2fsprogs dosfstools squashfs-tools skopeo docker-registry qemu-utils xz-utils zstd file acl"
        missing=""
        for p in $TEST_PACKAGES; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
        done
        if [ -n "$missing" ]; then
            echo "setup: installing test packages:$missing" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
        fi
        [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null
        export PATH="$VENV/bin:$PATH"
        # A private mount namespace: any mount a test leaks dies with the run.
        exec unshare --mount --propagation private -- "$VENV/bin/python" -m pytest -p no:cacheprovider "${@:2}"
        ;;
    links)
        # hutch answers to these names as the tools do (hutch/cli/dropin.py); the real ones win unless --force.
        dir=/usr/local/bin force=no
        for a in "${@:2}"; do
            case "$a" in --force) force=yes ;; *) dir=$a ;; esac
        done
        [ -x "$VENV/bin/hutch" ] || install
        for name in machinectl systemd-nspawn importctl; do
            found=$(command -v "$name" || true)
            if [ -n "$found" ] && [ "$(readlink -f "$found")" != "$(readlink -f "$VENV/bin/hutch")" ] && [ $force = no ]; then
                echo "setup: $name is $found already; not linking it (--force links it anyway)" >&2
                continue
            fi
            ln -sfn "$VENV/bin/hutch" "$dir/$name"
            echo "setup: $dir/$name -> $VENV/bin/hutch" >&2
        done
        ;;
    *) echo "usage: $0 install|demo|test [pytest args]|links [DIR] [--force]" >&2; exit 2 ;;
esac
