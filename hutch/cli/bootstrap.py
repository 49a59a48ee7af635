"""`hutch bootstrap busybox|debian NAME`: build a new image in the first image directory."""

from __future__ import annotations

import sys

from hutch.cli.options import make_parser


def run(args: list[str]) -> int:
    from hutch.images import bootstrap
    from hutch.paths import Paths

    p = make_parser(
        "bootstrap",
        "KIND NAME [OPTIONS]",
        "Build a new image in the first directory of the image path ($HUTCH_IMAGE_PATH, default "
        "/var/lib/machines).",
    )
    sub = p.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    bb = sub.add_parser(
        "busybox",
        prog="hutch bootstrap busybox",
        help="a bootable tree from the host's static busybox",
        usage="hutch bootstrap busybox NAME [--busybox=PATH]",
        description="Build a bootable busybox tree (init, a shell, a login) from the host's static busybox.",
    )
    bb.add_argument("name", metavar="NAME")
    bb.add_argument("--busybox", metavar="PATH", help="the static busybox binary to use")
    deb = sub.add_parser(
        "debian",
        prog="hutch bootstrap debian",
        help="debootstrap minbase + systemd, dbus, iproute2",
        usage="hutch bootstrap debian NAME [--suite=S] [--mirror=URL] [--arch=ARCH]",
        description="Debootstrap a Debian tree (minbase with systemd, dbus and iproute2) that boots.",
    )
    deb.add_argument("name", metavar="NAME")
    deb.add_argument("--suite", default="bookworm", help="the Debian release (bookworm)")
    deb.add_argument("--mirror", default=bootstrap.DEFAULT_MIRROR, metavar="URL", help="the archive")
    deb.add_argument(
        "--arch", help="a Debian architecture (arm64, ...); a foreign one runs through qemu-user"
    )
    for sp in (bb, deb):
        sp.add_argument("-q", "--quiet", action="store_true", help="print no progress or status messages")
    ns = p.parse_args(args)
    image_dir = Paths.from_env().image_dir
    if ns.kind == "busybox":
        path = bootstrap.bootstrap_busybox(ns.name, image_dir, ns.busybox)
    else:
        path = bootstrap.bootstrap_debian(ns.name, image_dir, ns.suite, ns.mirror, ns.quiet, ns.arch)
    if not ns.quiet:
        print(f"Created image '{ns.name}' at {path}.", file=sys.stderr)
    return 0
