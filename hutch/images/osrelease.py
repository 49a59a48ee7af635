"""os-release(5): parsed, and read from an image's tree as if its root were / (a symlink planted in the
image, etc/os-release -> /etc/shadow say, stays inside it). Light on purpose: `list` and `status` read
every running machine's, and spawn the host's."""

from __future__ import annotations


def parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key.isidentifier():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[key] = value
    return out


def of_tree(root: str) -> dict[str, str]:
    """ROOT's etc/os-release, else its usr/lib/os-release; {} where neither can be read."""
    from hutch.container.rootfs import read_file_in_root

    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = read_file_in_root(root, rel, 1 << 16)
        except OSError:
            continue
        if text:
            return parse(text)
    return {}
