"""`hutch bootstrap busybox|debian NAME`: build a new image in the first image directory."""

from __future__ import annotations

import argparse
import sys

from hutch.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, "see 'hutch bootstrap --help'")


def run(args: list[str]) -> int:
    from hutch.images import bootstrap
    from hutch.paths import Paths

    p = _Parser(
        prog="hutch bootstrap",
        description="Build a new image in the first directory of the "
        "image path ($HUTCH_IMAGE_PATH, default /var/lib/machines).",
    )
    sub = p.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    bb = sub.add_parser("busybox", help="a bootable tree from the host's static busybox")
    bb.add_argument("name", metavar="NAME")
    bb.add_argument("--busybox", metavar="PATH", help="the static busybox binary to use")
    deb = sub.add_parser("debian", help="debootstrap minbase + systemd, dbus, iproute2")
    deb.add_argument("name", metavar="NAME")
    deb.add_argument("--suite", default="bookworm")
    deb.add_argument("--mirror", default=bootstrap.DEFAULT_MIRROR)
    deb.add_argument(
        "--arch", help="a Debian architecture (arm64, ...); a foreign one runs through qemu-user"
    )
    for sp in (bb, deb):
        sp.add_argument("-q", "--quiet", action="store_true")
    ns = p.parse_args(args)
    image_dir = Paths.from_env().image_dir
    if ns.kind == "busybox":
        path = bootstrap.bootstrap_busybox(ns.name, image_dir, ns.busybox)
    else:
        path = bootstrap.bootstrap_debian(ns.name, image_dir, ns.suite, ns.mirror, ns.quiet, ns.arch)
    if not ns.quiet:
        print(f"Created image '{ns.name}' at {path}.", file=sys.stderr)
    return 0
