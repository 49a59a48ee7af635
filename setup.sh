#!/bin/bash
# hutch's one set-up script, for a fresh Debian 12 machine, as root.
#   ./setup.sh install   Debian packages, then hutch's wheel (built here) in its own virtual environment
#                        in $HUTCH_PREFIX (/opt/hutch), linked as /usr/local/bin/hutch
#   ./setup.sh demo      install, then bootstrap a busybox image, boot it, run commands, power it off
#   ./setup.sh test      a development environment in .venv (this checkout, editable, with pytest, mypy
#                        and ruff), then mypy, ruff and the whole test suite (in a private mount namespace)
#   ./setup.sh wheel     build the wheel into dist/
#   ./setup.sh deb       build the Debian package into dist/ (hutch_VERSION_all.deb, packaging/deb.py):
#                        then `apt install ./dist/hutch_VERSION_all.deb`
#   ./setup.sh links [DIR]  link hutch as machinectl, systemd-nspawn and importctl in DIR (/usr/local/bin),
#                        where no such command is found on PATH already (--force: link them anyway)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
HERE=$(pwd)
VENV=$HERE/.venv
PREFIX=${HUTCH_PREFIX:-/opt/hutch}
PACKAGES="python3 python3-venv busybox-static debootstrap systemd-container hyperfine bubblewrap util-linux bsdutils iproute2 nftables ca-certificates gcc libc6-dev"

packages() {
    local missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

wheel() {
    # Built by pip in an isolated environment (setuptools and wheel fetched for the build only).
    local py=${1:-/usr/bin/python3} build
    build=$(mktemp -d)
    "$py" -m venv "$build/env"
    "$build/env/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$HERE/dist" "$HERE" >&2
    rm -rf "$build" "$HERE/build"
    ls -t "$HERE"/dist/hutch-*.whl | head -1
}

install() {
    packages
    local whl tmp
    # Installed from a copy: pip records where a wheel came from, and nothing installed names this
    # checkout (it may move or go).
    tmp=$(mktemp -d)
    whl=$(wheel) && cp "$whl" "$tmp/"
    whl=$tmp/${whl##*/}
    # Debian's interpreter, never a pyenv shim on PATH (~90 ms per start).
    [ -x "$PREFIX/bin/python3" ] || /usr/bin/python3 -m venv "$PREFIX"
    "$PREFIX/bin/pip" install -q --disable-pip-version-check "$whl"
    "$PREFIX/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$whl"
    rm -rf "$tmp"
    # spawn's modules in one file, loaded without the import system's search (see hutch/preload.py);
    # -I: the installed package, not this checkout's (the current directory).
    "$PREFIX/bin/python3" -I -m hutch.preload >/dev/null
    # The interpreter's path is known now: the kernel starts it with the front end's flags, with no
    # shell first (and none resolving the /usr/local/bin link: a readlink and a dirname, ~2 ms).
    sed -i "1s|^#!/bin/sh\$|#!$PREFIX/bin/python3 -ISXfrozen_modules=on|" "$PREFIX/bin/hutch"
    ln -sfn "$PREFIX/bin/hutch" /usr/local/bin/hutch
    # Man pages from the installed --help texts and parser tables (hutch/manpages.py), where man looks.
    "$PREFIX/bin/python3" -I -m hutch.manpages "$PREFIX/share/man" >/dev/null
    for page in man1/hutch.1 man1/hutch-spawn.1 man5/hutch.nspawn.5; do
        mkdir -p "/usr/local/share/man/${page%/*}"
        ln -sfn "$PREFIX/share/man/$page" "/usr/local/share/man/$page"
    done
    # Completion of verbs, spawn's options and machine and image names (hutch/completion.py).
    mkdir -p /usr/local/share/bash-completion/completions /usr/local/share/zsh/site-functions
    "$PREFIX/bin/python3" -I -m hutch.completion bash > /usr/local/share/bash-completion/completions/hutch
    "$PREFIX/bin/python3" -I -m hutch.completion zsh > /usr/local/share/zsh/site-functions/_hutch
    echo "setup: hutch installed in $PREFIX, as /usr/local/bin/hutch (man hutch, hutch-spawn, hutch.nspawn)" >&2
}

dev() {
    packages
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
    echo "setup: development hutch in $VENV/bin/hutch" >&2
}

case "${1:-install}" in
    install) install ;;
    wheel) packages; wheel ;;
    deb) packages; /usr/bin/python3 "$HERE/packaging/deb.py" "$(wheel)" "$HERE/dist" ;;
    demo) install; HUTCH_BIN=$PREFIX/bin/hutch exec /usr/bin/python3 "$HERE/demo/demo.py" ;;
    test)
        dev
        # The foreign-architecture guest (tests/root/test_guests.py) runs through qemu-user's handler;
        # the faithful copies of disk images and OCI archives (tests/formats.py) are made with the tools
        # that make the originals, and pulled from Debian's registry server.
        # The ports of systemd's TEST-13-NSPAWN put ACLs on a tree (acl), as upstream's do. The
        # systemd-host lane (tests/vm) boots a Debian VM with QEMU (qemu-system-x86). The man pages are
        # rendered by groff (groff-base); the completion scripts run in bash and zsh.
        TEST_PACKAGES="qemu-user-static binfmt-support fdisk e2fsprogs dosfstools squashfs-tools skopeo docker-registry qemu-utils xz-utils zstd file acl qemu-system-x86 groff-base zsh"
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
        pytest=(unshare --mount --propagation private -- "$VENV/bin/python" -m pytest -p no:cacheprovider)
        # The systemd-host lane (tests/vm) is an emulated VM, most of a run's length on its own: the whole
        # suite runs it beside the rest. A run narrowed by paths, -k or -m is one pytest as asked.
        for a in "${@:2}"; do
            case "$a" in -m | -k | -m* | -k* | [!-]*) exec "${pytest[@]}" "${@:2}" ;; esac
        done
        lane_log=$(mktemp /tmp/hutch-vm-lane.XXXXXX)
        "${pytest[@]}" -m vm "${@:2}" >"$lane_log" 2>&1 &
        lane=$!
        rc=0 lane_rc=0
        "${pytest[@]}" -m "not vm" "${@:2}" || rc=$?
        wait "$lane" || lane_rc=$?
        echo "== the systemd-host lane (tests/vm), run beside the rest:"
        cat "$lane_log" && rm -f "$lane_log"
        [ $rc -ne 0 ] && exit $rc
        exit $lane_rc
        ;;
    links)
        # hutch answers to these names as the tools do (hutch/cli/dropin.py); the real ones win unless --force.
        dir=/usr/local/bin force=no
        for a in "${@:2}"; do
            case "$a" in --force) force=yes ;; *) dir=$a ;; esac
        done
        [ -x "$PREFIX/bin/hutch" ] || install
        for name in machinectl systemd-nspawn importctl; do
            found=$(command -v "$name" || true)
            if [ -n "$found" ] && [ "$(readlink -f "$found")" != "$(readlink -f "$PREFIX/bin/hutch")" ] && [ $force = no ]; then
                echo "setup: $name is $found already; not linking it (--force links it anyway)" >&2
                continue
            fi
            ln -sfn "$PREFIX/bin/hutch" "$dir/$name"
            echo "setup: $dir/$name -> $PREFIX/bin/hutch" >&2
        done
        ;;
    *) echo "usage: $0 install|demo|test [pytest args]|wheel|links [DIR] [--force]" >&2; exit 2 ;;
esac
