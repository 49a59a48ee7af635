"""Text from files, archives and arguments made fit for one line of a terminal."""

from __future__ import annotations


def cescape(text: str) -> str:
    """TEXT with control characters and undecodable bytes escaped, as systemd's cescape() prints
    them: a name from a file or an argument must not write raw escapes into the user's terminal."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        n = ord(c)
        if c.isprintable():
            out.append(c)
        elif c in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[c])
        elif 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{n - 0xDC00:02x}")
        elif n < 0x100:
            out.append(f"\\x{n:02x}")
        else:
            out.append(f"\\u{n:04x}")
    return "".join(out)
