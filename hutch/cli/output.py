"""machinectl's output shapes: tables with a legend, `-o json`, Key=Value properties, and systemd's
timestamp, time span and byte formats."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc (and json, below) are imported only where used: list runs often
    from collections.abc import Sequence


def timestamp(usec: int | None) -> str:
    if not usec:
        return "n/a"
    return time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(usec / 1_000_000))


def timespan_ago(usec: int | None) -> str:
    if not usec:
        return ""
    secs = max(0, int(time.time() - usec / 1_000_000))
    parts = []
    for unit, size in (
        ("y", 31557600),
        ("month", 2629800),
        ("w", 604800),
        ("d", 86400),
        ("h", 3600),
        ("min", 60),
        ("s", 1),
    ):
        if secs >= size:
            parts.append(f"{secs // size}{unit}")
            secs %= size
        if len(parts) == 2:
            break
    return (" ".join(parts) or "0s") + " ago"


def size(n: int | None) -> str:
    """systemd's format_bytes(): 1024-based, one decimal, suffixes B K M G T P E."""
    if n is None:
        return "n/a"
    value = float(n)
    for suffix in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or suffix == "P":
            return f"{int(value)}{suffix}" if suffix == "B" else f"{value:.1f}{suffix}"
        value /= 1024
    return f"{value:.1f}E"


def table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, legend: bool, noun: str, out: object = None
) -> None:
    f = out or sys.stdout
    if not rows:
        if legend:
            print(f"No {noun}s.", file=f)  # type: ignore[arg-type]
        return
    widths = [len(c) if legend else 0 for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(part) for part in cell.split("\n")))
    lines = [list(columns)] if legend else []
    for r in rows:
        # A cell of several lines makes its row as high, the other cells blank below their first line.
        cells = [c.split("\n") for c in r]
        for k in range(max(len(c) for c in cells)):
            lines.append([c[k] if k < len(c) else "" for c in cells])
    for line in lines:
        text = " ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        print(text, file=f)  # type: ignore[arg-type]
    if legend:
        print(f"\n{len(rows)} {noun}s listed.", file=f)  # type: ignore[arg-type]


def print_json(value: object, pretty: bool = False) -> None:
    import json

    if pretty:
        print(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        print(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def properties(
    props: list[tuple[str, str]],
    wanted: list[str],
    value_only: bool,
    show_all: bool,
    extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    """`show`'s Key=Value lines; -p picks keys, --value drops the names, -a shows the empty ones too.
    EXTRA are hutch's own properties, which upstream has not: shown with -a or when named by -p only,
    so the default output is upstream's."""
    keys = {w for p in wanted for w in p.split(",") if w}
    for key, value in [*props, *(extra if keys or show_all else [])]:
        if keys and key not in keys:
            continue
        if not value and not show_all and not keys:
            continue
        print(value if value_only else f"{key}={value}")


# journalctl's -o modes: machinectl takes them for status's console lines; -o help lists them.
JOURNAL_MODES = (
    "short", "short-full", "short-iso", "short-iso-precise", "short-precise", "short-monotonic",
    "short-delta", "short-unix", "verbose", "export", "json", "json-pretty", "json-sse", "json-seq",
    "cat", "with-unit",
)  # fmt: skip
