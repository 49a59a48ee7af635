"""The image verbs, with machinectl's and importctl's names and options: list-images, image-status,
show-image, clone, rename, remove, read-only, clean, cat, edit, import-tar, import-fs, export-tar,
pull-tar, import-raw, export-raw, pull-raw, pull-oci, list-transfers, cancel-transfer."""

from __future__ import annotations

import argparse
import os
import sys

from hutch.cli import output
from hutch.cli.options import make_parser
from hutch.errors import ImageError, UsageError
from hutch.images import store
from hutch.images.store import Image
from hutch.paths import Paths

_Parser = argparse.ArgumentParser
_parser = make_parser


def _yes_no(b: bool) -> str:
    return "yes" if b else "no"


def _progress(ns: argparse.Namespace) -> bool | None:
    return False if ns.quiet else None


def _say(ns: argparse.Namespace, text: str) -> None:
    if not ns.quiet:
        print(text, file=sys.stderr)


def list_images(args: list[str]) -> int:
    p = _parser("list-images", "[OPTIONS]", "List the images along the image path.")
    p.add_argument("-a", "--all", action="store_true", help="also hidden images (.NAME) and .host")
    p.add_argument("--no-legend", action="store_true", help="no header and footer")
    _output_options(p)
    _class_option(p)
    ns = p.parse_args(args)
    images = store.discover(_paths(ns), hidden=ns.all)
    if ns.output.startswith("json"):
        output.print_json([i.as_dict() for i in images], pretty=ns.output == "json-pretty")
        return 0
    rows = [
        [
            i.name,
            i.type,
            _yes_no(i.read_only),
            output.size(i.usage),
            output.timestamp(i.crtime),
            output.timestamp(i.mtime),
        ]
        for i in images
    ]
    output.table(
        ["NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"], rows, legend=not ns.no_legend, noun="image"
    )
    return 0


def _usage(img: Image) -> int | None:
    if img.usage is not None or img.name == ".host":
        return img.usage
    from hutch.images.tree import disk_usage

    try:
        return disk_usage(img.path)
    except OSError:
        return None


def image_status(args: list[str]) -> int:
    p = _parser("image-status", "[NAME...]", "Show an image's properties, for people.")
    p.add_argument("names", nargs="*", metavar="NAME")
    ns = p.parse_args(args)
    paths = Paths.from_env()
    images = [store.get(n, paths) for n in ns.names] if ns.names else store.discover(paths)
    for n, img in enumerate(images):
        if n:
            print()
        rel = store.os_release(img)
        print(img.name)
        print(f"\t    Path: {img.path}")
        print(f"\t    Type: {img.type}")
        if img.lower:
            print(f"\t  Source: {img.lower}")
        hostname = (store.read_in_root(img.lower or img.path, "etc/hostname") or "").strip()
        if hostname:
            print(f"\tHostname: {hostname}")
        if rel.get("PRETTY_NAME"):
            print(f"\t      OS: {rel['PRETTY_NAME']}")
        print(f"\t      RO: {'read-only' if img.read_only else 'writable'}")
        if img.crtime:
            print(f"\t Created: {output.timestamp(img.crtime)}; {output.timespan_ago(img.crtime)}")
        if img.mtime:
            print(f"\tModified: {output.timestamp(img.mtime)}; {output.timespan_ago(img.mtime)}")
        usage = _usage(img)
        if usage is not None:
            print(f"\t   Usage: {output.size(usage)}")
    return 0


def show_image(args: list[str]) -> int:
    p = _parser(
        "show-image", "[NAME...] [-p PROPERTY] [--value]", "Show an image's properties as Key=Value."
    )
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument(
        "-p", "--property", action="append", default=[], help="only these (repeat or comma-separate)"
    )
    p.add_argument("-P", dest="value_property", action="append", default=[], help="like -p PROPERTY --value")
    p.add_argument("--value", action="store_true", help="print values without names")
    p.add_argument("-a", "--all", action="store_true", help="also empty properties")
    ns = p.parse_args(args)
    paths = Paths.from_env()
    wanted = ns.property + ns.value_property
    value_only = ns.value or bool(ns.value_property)
    if not ns.names:
        # With no name: the pool's own properties, as machinectl shows the manager's.
        d = paths.image_dir
        try:
            vfs = os.statvfs(d)
            pool_usage, pool_limit = (
                str((vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize),
                str(vfs.f_blocks * vfs.f_frsize),
            )
        except OSError:
            pool_usage = pool_limit = ""
        props = [("PoolPath", d), ("PoolUsage", pool_usage), ("PoolLimit", pool_limit)]
        output.properties(props, wanted, value_only, ns.all)
        return 0
    for n, name in enumerate(ns.names):
        img = store.get(name, paths)
        if n and not value_only:
            print()
        usage = _usage(img)
        props = [
            ("Name", img.name),
            ("Path", img.path),
            ("Type", img.type),
            ("ReadOnly", _yes_no(img.read_only)),
            ("CreationTimestamp", output.timestamp(img.crtime) if img.crtime else ""),
            ("ModificationTimestamp", output.timestamp(img.mtime) if img.mtime else ""),
            ("Usage", "" if usage is None else str(usage)),
            ("UsageExclusive", "" if usage is None else str(usage)),
            ("Limit", ""),
            ("LimitExclusive", ""),
        ]
        if img.lower:
            props.append(("Source", img.lower))
        output.properties(props, wanted, value_only, ns.all)
    return 0


def clone(args: list[str]) -> int:
    from hutch.images import transfer

    p = _parser("clone", "SRC DST [--read-only] [--thin]", "Copy an image (and its .nspawn file).")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--read-only", action="store_true", help="make the copy read-only")
    p.add_argument(
        "--thin",
        action="store_true",
        help="an O(1) overlay clone over the read-only SRC, which then stays read-only",
    )
    ns = p.parse_args(args)
    paths = Paths.from_env()
    if ns.thin:
        if ns.read_only:
            raise UsageError(
                "--thin and --read-only cannot be combined.", "a thin clone exists to be written"
            )
        img = transfer.clone_thin(ns.src, ns.dst, paths)
    else:
        img = transfer.clone(ns.src, ns.dst, paths, read_only=ns.read_only, progress=_progress(ns))
    _say(ns, f"Cloned image '{ns.src}' to '{img.name}' at {img.path}.")
    return 0


def rename(args: list[str]) -> int:
    from hutch.images import manage

    p = _parser("rename", "OLD NEW", "Rename an image (and its .nspawn files).")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    ns = p.parse_args(args)
    img = manage.rename(ns.old, ns.new, Paths.from_env())
    _say(ns, f"Renamed image '{ns.old}' to '{img.name}'.")
    return 0


def remove(args: list[str]) -> int:
    from hutch.images import manage

    p = _parser("remove", "NAME...", "Remove images (and their .nspawn files).")
    p.add_argument("names", nargs="+", metavar="NAME")
    ns = p.parse_args(args)
    paths = Paths.from_env()
    rc = 0
    for name in ns.names:
        try:
            manage.remove(name, paths)
            _say(ns, f"Removed image '{name}'.")
        except ImageError as e:
            if len(ns.names) == 1:
                raise
            from hutch.cli import fail

            rc = fail("hutch remove", e)
    return rc


def read_only(args: list[str]) -> int:
    from hutch.images import manage

    p = _parser("read-only", "NAME [BOOL]", "Mark an image read-only (default) or writable.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("value", nargs="?", default="yes", metavar="BOOL")
    ns = p.parse_args(args)
    value = ns.value.lower()
    if value in ("1", "yes", "y", "true", "t", "on"):
        flag = True
    elif value in ("0", "no", "n", "false", "f", "off"):
        flag = False
    else:
        raise UsageError(f"Failed to parse read-only boolean: {ns.value}", "use yes or no")
    img = manage.set_read_only(ns.name, flag, Paths.from_env())
    _say(ns, f"Image '{img.name}' is now {'read-only' if img.read_only else 'writable'}.")
    return 0


def clean(args: list[str]) -> int:
    from hutch.images import manage

    p = _parser(
        "clean", "[--all]", "Remove hidden images (all with --all) and leftovers of interrupted operations."
    )
    p.add_argument("-a", "--all", action="store_true", help="remove every image, not only hidden ones")
    ns = p.parse_args(args)
    removed, leftovers = manage.clean(Paths.from_env(), ns.all)
    for name in removed:
        _say(ns, f"Removed image '{name}'.")
    for entry in leftovers:
        _say(ns, f"Removed leftover {entry}.")
    return 0


def cat(args: list[str]) -> int:
    from hutch.images import settings_files
    from hutch.settings import nspawnfile
    from hutch.text import cescape

    p = _parser("cat", "NAME|FILE...", "Show an image's .nspawn settings file.")
    p.add_argument("names", nargs="+", metavar="NAME|FILE")
    ns = p.parse_args(args)
    paths = Paths.from_env()
    for n, name in enumerate(ns.names):
        if "/" not in name and name.endswith(".nspawn"):
            name = name.removesuffix(".nspawn")  # machinectl cat takes the file's name too
        if "/" in name:
            files = [name]
        else:
            files = settings_files.existing(name, paths)
            if not files:
                raise ImageError(f"No settings file for '{name}'.", f"create one with 'hutch edit {name}'")
        for path in files[:1]:
            if n:
                print()
            text = nspawnfile.read_text(path)  # before the header: a refusal prints one line
            print(f"# {cescape(os.path.abspath(path))}")
            sys.stdout.write(text)
    return 0


def edit(args: list[str]) -> int:
    import shlex
    import shutil
    import subprocess
    import tempfile

    from hutch.images import settings_files
    from hutch.settings import nspawnfile

    p = _parser("edit", "NAME|FILE", "Edit an image's .nspawn settings file with $EDITOR.")
    p.add_argument("name", metavar="NAME|FILE")
    ns = p.parse_args(args)
    paths = Paths.from_env()
    if "/" not in ns.name and ns.name.endswith(".nspawn"):
        ns.name = ns.name.removesuffix(".nspawn")  # machinectl edit takes the file's name too
    if "/" in ns.name:
        target = os.path.abspath(ns.name)
        current = [target] if os.path.lexists(target) else []
    else:
        current = settings_files.existing(ns.name, paths)
        if not current:
            store.get(ns.name, paths)  # a new file is for an image that exists: a typo makes none
        # Edits go to the first (trusted, administrator's) settings directory, as machinectl edit does.
        target = os.path.join(paths.settings_path[0], f"{ns.name}.nspawn")
    before = nspawnfile.read_text(current[0]) if current else "[Exec]\n"
    # The editor works on a copy in a private directory: nothing is created beside the target, and
    # nothing at all unless something was saved.
    scratch = tempfile.mkdtemp(prefix="hutch-edit-")
    try:
        tmp = os.path.join(scratch, os.path.basename(target))
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(before)
        editor = os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi"
        try:
            r = subprocess.run([*shlex.split(editor), tmp])
        except (OSError, ValueError) as e:
            raise ImageError(
                f"Failed to run editor '{editor}': {getattr(e, 'strerror', None) or e}."
            ) from None
        if r.returncode != 0:
            raise ImageError(
                f"Editor '{editor}' failed with exit status {r.returncode}; {target} is unchanged."
            )
        after = nspawnfile.read_text(tmp, target)
        # A file found elsewhere (beside the image) is copied to the trusted directory even unchanged.
        if after == before and (not current or current[0] == target):
            _say(
                ns,
                f"No changes; {target} is unchanged."
                if current
                else f"Nothing saved; {target} not created.",
            )
            return 0
        nspawnfile.check(tmp, target)  # what spawn would refuse, refused now
        from hutch.linux.fsutil import write_atomic

        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_atomic(target, after.encode())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _say(ns, f"Saved {target}.")
    return 0


def _import_options(p: _Parser) -> None:
    p.add_argument("--read-only", action="store_true", help="mark the new image read-only")
    p.add_argument("--force", action="store_true", help="replace an existing image of that name")
    _class_option(p)


def _output_options(p: _Parser) -> None:
    p.add_argument(
        "-o", "--output", choices=("table", "json", "json-pretty"), default="table", help="the output's form"
    )
    # importctl's: -j is --json=pretty on a terminal and short elsewhere.
    j = "json-pretty" if sys.stdout.isatty() else "json"
    p.add_argument("-j", dest="output", action="store_const", const=j, help="same as --json=auto")
    p.add_argument(
        "--json",
        dest="output",
        type=lambda v: {"pretty": "json-pretty", "short": "json", "off": "table", "auto": j}.get(v, v),
        choices=("json-pretty", "json", "table"),
        metavar="pretty|short|off",
        help="JSON, pretty or short; off: the table",
    )


def _class_option(p: _Parser) -> None:
    from hutch.paths import IMAGE_CLASSES

    p.add_argument(
        "--class",
        dest="image_class",
        choices=IMAGE_CLASSES,
        default="machine",
        help="importctl's image class: machine (default), or confext, sysext, portable, each kept in "
        "its own directory (systemd's: /var/lib/confexts, ...)",
    )


def _paths(ns: argparse.Namespace) -> Paths:
    return Paths.from_env().for_class(getattr(ns, "image_class", "machine"))


def _report(ns: argparse.Namespace, img: Image, stats: dict[str, int]) -> None:
    notes = []
    if stats.get("devices"):
        notes.append(f"{stats['devices']} device nodes skipped")
    if stats.get("setuid_stripped"):
        notes.append(f"setuid/setgid dropped from {stats['setuid_stripped']} writable files")
    if stats.get("xattrs_dropped"):
        notes.append(f"{stats['xattrs_dropped']} extended attributes dropped")
    if stats.get("caps_dropped"):
        notes.append(f"file capabilities dropped from {stats['caps_dropped']} files (setcap them inside)")
    if stats.get("absolute"):
        notes.append(f"leading '/' stripped from {stats['absolute']} names")
    tail = f" ({'; '.join(notes)})" if notes else ""
    _say(ns, f"Imported image '{img.name}' at {img.path}{tail}.")


def import_tar(args: list[str]) -> int:
    from hutch.images import transfer

    p = _parser(
        "import-tar",
        "FILE|- [NAME]",
        "Import a tarball (plain, gzip, xz, bzip2 or zstd, detected from its content) as a new image.",
    )
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("name", nargs="?", metavar="NAME")
    _import_options(p)
    ns = p.parse_args(args)
    img, stats = transfer.import_tar(
        ns.file, ns.name, _paths(ns), read_only=ns.read_only, force=ns.force, progress=_progress(ns)
    )
    _report(ns, img, stats)
    return 0


def import_fs(args: list[str]) -> int:
    from hutch.images import transfer

    p = _parser("import-fs", "DIR [NAME]", "Copy a directory tree in as a new image.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("name", nargs="?", metavar="NAME")
    _import_options(p)
    ns = p.parse_args(args)
    img = transfer.import_fs(
        ns.dir, ns.name, _paths(ns), read_only=ns.read_only, force=ns.force, progress=_progress(ns)
    )
    _say(ns, f"Imported image '{img.name}' at {img.path}.")
    return 0


def export_tar(args: list[str]) -> int:
    from hutch.images import compress, transfer

    p = _parser(
        "export-tar",
        "NAME [FILE|-]",
        "Write an image as a tarball; the compression comes from the file name's suffix or --format.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    p.add_argument("--format", choices=compress.FORMATS, help="compression (default: from the suffix)")
    _class_option(p)
    ns = p.parse_args(args)
    if ns.file == "-" and sys.stdout.isatty():
        raise UsageError("Refusing to write a tarball to a terminal.", "name a FILE or redirect the output")
    stats = transfer.export_tar(ns.name, ns.file, _paths(ns), fmt=ns.format, progress=_progress(ns))
    if ns.file != "-":
        _say(ns, f"Exported image '{ns.name}' to {ns.file} ({stats['members']} files).")
    return 0


def _pull_options(p: _Parser) -> _Parser:
    """URL [NAME] and the options pull-tar and pull-raw share."""
    p.add_argument("url", metavar="URL")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument(
        "--verify",
        default="checksum",
        metavar="no|checksum",
        help="check the file against SHA256SUMS next to it (default: checksum)",
    )
    _import_options(p)
    return p


def pull_tar(args: list[str]) -> int:
    from hutch.images import transfer

    p = _parser("pull-tar", "URL [NAME]", "Download a tarball and import it as a new image.")
    ns = _pull_options(p).parse_args(args)
    img, stats = transfer.pull_tar(
        ns.url,
        ns.name,
        _paths(ns),
        verify=ns.verify,
        read_only=ns.read_only,
        force=ns.force,
        progress=_progress(ns),
    )
    _report(ns, img, stats)
    return 0


def import_raw(args: list[str]) -> int:
    from hutch.images import rawtransfer

    p = _parser(
        "import-raw",
        "FILE|- [NAME]",
        "Import a disk image (raw or qcow2; plain, gzip, xz, bzip2 or zstd, detected from its content) as "
        "NAME.raw.",
    )
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("name", nargs="?", metavar="NAME")
    _import_options(p)
    ns = p.parse_args(args)
    img = rawtransfer.import_raw(
        ns.file, ns.name, _paths(ns), read_only=ns.read_only, force=ns.force, progress=_progress(ns)
    )
    _say(ns, f"Imported image '{img.name}' at {img.path}.")
    return 0


def export_raw(args: list[str]) -> int:
    from hutch.images import compress, rawtransfer

    p = _parser(
        "export-raw",
        "NAME [FILE|-]",
        "Write a disk image out; the compression comes from the file name's suffix (.xz, .gz, .bz2, .zst) "
        "or --format.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    p.add_argument("--format", choices=compress.FORMATS, help="compression (default: from the suffix)")
    _class_option(p)
    ns = p.parse_args(args)
    if ns.file == "-" and sys.stdout.isatty():
        raise UsageError(
            "Refusing to write a disk image to a terminal.", "name a FILE or redirect the output"
        )
    size = rawtransfer.export_raw(ns.name, ns.file, _paths(ns), fmt=ns.format, progress=_progress(ns))
    if ns.file != "-":
        _say(ns, f"Exported image '{ns.name}' to {ns.file} ({size} bytes).")
    return 0


def pull_raw(args: list[str]) -> int:
    from hutch.images import rawtransfer

    p = _parser(
        "pull-raw", "URL [NAME]", "Download a disk image (raw or qcow2, maybe compressed) as NAME.raw."
    )
    ns = _pull_options(p).parse_args(args)
    img = rawtransfer.pull_raw(
        ns.url,
        ns.name,
        _paths(ns),
        verify=ns.verify,
        read_only=ns.read_only,
        force=ns.force,
        progress=_progress(ns),
    )
    _say(ns, f"Imported image '{img.name}' at {img.path}.")
    return 0


def pull_oci(args: list[str]) -> int:
    from hutch.images import registry

    p = _parser(
        "pull-oci",
        "REF [NAME]",
        "Download an OCI image from a container registry ([REGISTRY/]REPOSITORY[:TAG|@DIGEST]) as a "
        "directory image.",
    )
    p.add_argument("ref", metavar="REF")
    p.add_argument("name", nargs="?", metavar="NAME")
    _import_options(p)
    ns = p.parse_args(args)
    img, stats = registry.pull_oci(
        ns.ref, ns.name, Paths.from_env(), read_only=ns.read_only, force=ns.force, progress=_progress(ns)
    )
    _report(ns, img, stats)
    return 0


def list_transfers(args: list[str]) -> int:
    from hutch.images import transfers

    p = _parser("list-transfers", "", "List the imports and pulls that are running.")
    _output_options(p)
    ns = p.parse_args(args)
    rows = transfers.running(Paths.from_env())
    if ns.output.startswith("json"):
        output.print_json(
            [{"id": r["id"], "percent": None, "type": r["type"], "local": r["local"], "remote": r["remote"]}
             for r in rows],
            pretty=ns.output == "json-pretty",
        )  # fmt: skip
        return 0
    table = [[str(r["id"]), "-", str(r["type"]), str(r["local"]), str(r["remote"])] for r in rows]
    output.table(
        ["ID", "PERCENT", "TYPE", "LOCAL", "REMOTE"], table, legend=not ns.no_legend, noun="transfer"
    )
    return 0


def cancel_transfer(args: list[str]) -> int:
    from hutch.images import transfers

    p = _parser("cancel-transfer", "ID...", "Interrupt running imports or pulls; each removes what it made.")
    p.add_argument("ids", nargs="+", metavar="ID")
    ns = p.parse_args(args)
    for ident in ns.ids:
        entry = transfers.cancel(Paths.from_env(), ident)
        _say(ns, f"Cancelled transfer {entry['id']} ({entry['type']} of {entry['local']}).")
    return 0
