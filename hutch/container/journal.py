"""--link-journal: the machine's journal directory, /var/log/journal/MACHINE-ID, shared with the host's
journal directory ($HUTCH_JOURNAL_DIR, /var/log/journal) so the host's journalctl sees it.

- host, try-host: the journal lives on the host; its directory is bound into the machine.
- guest, try-guest: the journal lives in the image; the host gets a symlink to it.
- no, and auto (the default): nothing is linked. Upstream's auto links a guest that already keeps a
  persistent journal; hutch never writes into the host's /var/log unasked.

The try- modes give up quietly where the plain ones fail (no machine ID, the host's own ID, a host
directory already there). Imported only when the option is given.
"""

from __future__ import annotations

from hutch.container import rootfs
from hutch.container.plan import Context, Op
from hutch.errors import SetupError
from hutch.linux import posixos as os
from hutch.paths import Paths
from hutch.settings.model import Settings


def _kind(path: str) -> str:
    """'link', 'dir', 'other', or '' for nothing there (posixos has no islink/lexists)."""
    try:
        mode = os.lstat(path).st_mode & 0o170000
    except FileNotFoundError:
        return ""
    return {0o120000: "link", 0o040000: "dir"}.get(mode, "other")


def _machine_id(tree: str) -> str:
    text = (rootfs.read_file_in_root(tree, "etc/machine-id") or "").strip()
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text) and text != "0" * 32:
        return text
    return ""


def ops(s: Settings, tree: str, paths: Paths) -> list[Op]:
    mode = s.link_journal
    if mode in ("no", "auto"):
        return []
    strict = not mode.startswith("try-")
    mid = _machine_id(tree)
    if not mid:
        if strict:
            raise SetupError(
                f"--link-journal={mode} needs the machine's ID, and its /etc/machine-id has none.",
                "write one (systemd-machine-id-setup --root=DIR) or use --link-journal=try-" + mode,
            )
        return []
    host_id = ""
    try:
        with open("/etc/machine-id") as f:
            host_id = f.read().strip()
    except OSError:
        pass
    if mid == host_id:
        if strict:
            raise SetupError("The machine has the host's machine ID; its journal cannot be linked.")
        return []
    host_dir = os.path.join(paths.journal_dir, mid)
    inside = f"/var/log/journal/{mid}"
    if mode.endswith("host"):
        if _kind(host_dir) == "link":
            if strict:
                raise SetupError(f"{host_dir} is a symlink, not a journal directory.", "remove it first")
            return []
        os.makedirs(host_dir, mode=0o755, exist_ok=True)
        from hutch.container.custom_mounts import BindOp
        from hutch.linux.libc import MS_BIND

        return [BindOp(host_dir, inside, MS_BIND, "dir", False, False)]
    # guest: the directory in the image, and the host's symlink to it.
    target = os.path.join(tree, inside.lstrip("/"))
    if _kind(host_dir):
        if _kind(host_dir) == "link" and os.readlink(host_dir) == target:
            return [_GuestDir(inside)]
        if strict:
            raise SetupError(f"{host_dir} already exists; the machine's journal cannot be linked there.")
        return []
    os.makedirs(paths.journal_dir, mode=0o755, exist_ok=True)
    os.symlink(target, host_dir)
    return [_GuestDir(inside)]


class _GuestDir(Op):
    """The machine's own journal directory, made (as the container's root) if the image lacks it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"mkdir -p {self.path} (the journal the host links to)"

    def execute(self, ctx: Context) -> None:
        os.close(ctx.target(self.path))
