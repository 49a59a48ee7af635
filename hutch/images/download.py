"""Downloads for pull-tar, pull-raw and pull-oci: the URL checked before anything is made, one line for
every way a download fails, and importd's --verify=checksum (SHA256SUMS next to the file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hutch.errors import ImageError


def check_url(url: str, verify: str, verb: str) -> str:
    """Refuse a URL or --verify= value a pull cannot use, before anything is made. Returns the name of
    the file the URL names."""
    import urllib.parse

    if verify not in ("no", "checksum"):
        raise ImageError(
            f"Unsupported --verify={verify}.", "use --verify=checksum (SHA256SUMS next to the file) or no"
        )
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 (parses the port: 'http://h:x/' fails here, not in the download)
    except ValueError as e:
        raise ImageError(f"Invalid URL '{url}': {e}.", f"{verb} takes an http:// or https:// URL") from None
    local = parsed.scheme == "file" and parsed.netloc in ("", "localhost")  # importd takes those too
    if not local and (parsed.scheme not in ("http", "https") or not parsed.netloc):
        raise ImageError(
            f"Invalid URL '{url}'.", f"{verb} takes an http://, https:// or file:// URL to a file"
        )
    filename = os.path.basename(urllib.parse.unquote(parsed.path))
    if not filename:
        raise ImageError(f"URL '{url}' names no file.")
    return filename


def download(url: str) -> Any:
    """The response to a GET of URL, as a context manager; an error is one ImageError line."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=60)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        raise ImageError(f"Failed to download {url}: {why(e)}.") from None


def guarded_download(url: str, run: Callable[[], Any]) -> Any:
    """RUN, which reads a download: a connection that fails midway is an ImageError."""
    import http.client

    try:
        return run()
    except ImageError:
        raise
    except (OSError, TimeoutError, http.client.HTTPException) as e:
        raise ImageError(f"Failed to download {url}: {e!r}.", "try again") from None


def check_digest(filename: str, got: str, expected: str | None) -> None:
    if expected is not None and got != expected:
        raise ImageError(
            f"Checksum of {filename} does not match SHA256SUMS: got {got}, expected {expected}.",
            "the download is corrupt or was tampered with; nothing was imported",
        )


def why(e: BaseException) -> str:
    code = getattr(e, "code", None)
    reason = getattr(e, "reason", None) or e
    return f"HTTP {code} {reason}" if isinstance(code, int) else str(reason)


def fetch_checksum(url: str, filename: str) -> str:
    """The file's SHA-256 from SHA256SUMS in the same directory, as importd's --verify=checksum."""
    import urllib.error
    import urllib.request

    sums_url = url.rsplit("/", 1)[0] + "/SHA256SUMS"
    try:
        with urllib.request.urlopen(sums_url, timeout=60) as r:
            text = r.read(1 << 20).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise ImageError(
            f"Failed to download {sums_url}: {why(e)}.",
            "pass --verify=no to import without checking",
        ) from None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename and len(parts[0]) == 64:
            return str(parts[0]).lower()
    raise ImageError(f"{sums_url} lists no checksum for {filename}.", "pass --verify=no to skip the check")
