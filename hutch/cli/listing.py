"""`hutch list`, which clients and people run often: its command line a table (hutch.cli.options, no
argparse unless it must say something), its table made without the image store's writers."""

from __future__ import annotations

from hutch.cli import fail, output
from hutch.cli.options import BadValue, Opt, Verb, parse
from hutch.linux import posixos as os
from hutch.machines import registry
from hutch.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OUTPUTS = ("table", "json", "json-pretty")


def max_addresses(text: str) -> int | None:
    if text in ("all", "infinity"):
        return 1 << 30
    return int(text) if text.isdigit() else None


def address_count(text: str) -> int:
    n = max_addresses(text)
    if n is None:
        raise BadValue(f"invalid number of addresses '{text}': a count, or 'all'")
    return n


LIST = Verb(
    "list",
    "[OPTIONS]",
    "List the running machines.",
    [
        Opt("-a", "--all", help="also the host itself (.host)"),
        Opt("--no-legend", help="no header and footer"),
        Opt("-o", "--output", choices=OUTPUTS, default="table", help="the output's form"),
        Opt(
            "--max-addresses",
            convert=address_count,
            default=1,
            metavar="N|all",
            help="how many addresses a machine's row shows (1; 0 drops the column)",
        ),
    ],
)


def list_machines(args: list[str]) -> int:
    ns = parse(LIST, args)
    return show(ns.all, ns.no_legend, ns.output, ns.max_addresses, ns.full)


def show(all_: bool, no_legend: bool, output_mode: str, max_addresses: int, full: bool) -> int:
    damaged: list[registry.DamagedEntry] = []
    entries = registry.running(Paths.from_env().state_dir, damaged)
    registry.gc_cgroups()  # what SIGKILLed supervisors of unregistered machines left
    for bad in damaged:  # the others are listed all the same; the exit status tells
        fail("hutch list", bad)
    if all_:
        entries.insert(0, host_entry())
    rows = []
    for e in entries:
        rel = os_release_of(e) if e["name"] != ".host" else host_release()
        # As machinectl's table: a missing value is null (a dash in the table), and the addresses
        # are one string, one per line.
        row: dict[str, str | None] = {
            "machine": e["name"],
            "class": e.get("cls", "container") or None,
            "service": e.get("service", "hutch") or None,
            "os": rel.get("ID") or None,
            "version": rel.get("VERSION_ID") or None,
            "addresses": "\n".join(e.get("addresses") or []) or None,
        }
        if max_addresses == 0:
            del row["addresses"]
        rows.append(row)
    rows.sort(key=lambda r: r["machine"] or "")
    if output_mode.startswith("json"):
        output.print_json(rows, pretty=output_mode == "json-pretty")
        return 1 if damaged else 0
    columns = ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES"][: 6 if max_addresses else 5]
    height = None if full else max_addresses
    table = [[cell(r[c.lower()], height if c == "ADDRESSES" else None) for c in columns] for r in rows]
    output.table(columns, table, legend=not no_legend, noun="machine")
    return 1 if damaged else 0


def os_release_of(entry: dict[str, Any]) -> dict[str, str]:
    from hutch.images import osrelease

    root = entry["root"]
    if os.path.isfile(root):  # a disk image, mounted only inside the machine: read it there
        root = f"/proc/{entry['leader']}/root"
    return osrelease.of_tree(root)


def host_entry() -> dict[str, Any]:
    """The host as machinectl shows it: `.host`, class host, its machine ID, up since its boot."""
    mid = ""
    try:
        with open("/etc/machine-id") as f:
            mid = f.read(64).strip()
    except OSError:
        pass
    since = 0
    try:
        with open("/proc/stat") as f:
            btime = next((ln.split()[1] for ln in f if ln.startswith("btime ")), "0")
        since = int(btime) * 1_000_000
    except (OSError, ValueError):
        pass
    return {"name": ".host", "cls": "host", "service": "", "root": "/", "leader": 1, "id": mid,
            "since": since, "supervisor": 0}  # fmt: skip


def cell(value: str | None, lines: int | None) -> str:
    """A table cell as systemd's tables show it: '-' for nothing, at most LINES lines, the last of them
    ending in '…' when some were cut."""
    if not value:
        return "-"
    parts = value.split("\n")
    if lines is None or len(parts) <= lines:
        return value
    return "\n".join([*parts[: lines - 1], parts[lines - 1] + "…"])


def host_release() -> dict[str, str]:
    from hutch.images import osrelease

    return osrelease.of_tree("/")
