"""The container's user namespace: choosing and locking a UID range, and the image's ownership.

A range is 64K IDs at a multiple of 65536 in 524288..1878982656 (upstream's 'pick' window), chosen from
the machine name so a machine tends to get the same one, and held for the machine's life by a kernel file
lock in STATE_DIR/uid-ranges: two running machines never share IDs, and a SIGKILLed supervisor frees its
range at once. Ownership: 'map' shows the image through an idmapped mount (nothing on disk changes),
'chown' shifts the files on disk (walking by fd, never following symlinks), 'off' leaves them.
"""

from __future__ import annotations

from hutch.errors import SetupError
from hutch.linux import posixos as os
from hutch.linux.fsutil import release_lock_file, take_lock_file
from hutch.settings.values import RANGE as RANGE

PICK_MIN = 0x00080000
PICK_MAX = 0x6FFF0000
NO_USERNS = "no"


class UidRange:
    __slots__ = ("base", "count", "extra_gids", "extra_uids", "lock_fds", "lock_paths")

    def __init__(self, base: int, count: int) -> None:
        self.base = base
        self.count = count
        self.lock_fds: list[int] = []
        self.lock_paths: list[str] = []
        # (inside, host) IDs mapped on lines of their own: --bind-user's users and their groups.
        self.extra_uids: list[tuple[int, int]] = []
        self.extra_gids: list[tuple[int, int]] = []

    def map_line(self, gids: bool = False) -> str:
        extra = self.extra_gids if gids else self.extra_uids
        if not extra:
            return f"0 {self.base} {self.count}\n"
        from hutch.container.binduser import map_lines

        return map_lines(self.base, self.count, extra)

    def release(self) -> None:
        for path, fd in zip(self.lock_paths, self.lock_fds, strict=True):
            release_lock_file(path, fd)
        self.lock_fds = []
        self.lock_paths = []


def name_hash(name: str) -> int:
    # FNV-1a: stable across runs and Python versions, unlike hash().
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _lock_blocks(state_dir: str, base: int, count: int, name: str) -> list[tuple[str, int]] | None:
    """Lock every 64K block the range touches; None (and nothing held) if another machine holds one."""
    d = os.path.join(state_dir, "uid-ranges")
    os.makedirs(d, mode=0o700, exist_ok=True)
    fds: list[tuple[str, int]] = []
    first, last = base // RANGE, (base + count - 1) // RANGE
    for block in range(first, last + 1):
        path = os.path.join(d, f"{block * RANGE}")
        try:
            fd = take_lock_file(path)
        except BlockingIOError:
            for p, f in fds:
                release_lock_file(p, f)
            return None
        fds.append((path, fd))
        data = f"{name}\n".encode()
        try:
            if os.pread(fd, len(data) + 1, 0) != data:
                # Only when it changed: a truncate is a journal commit on ext4 (~0.2 ms of each start).
                os.ftruncate(fd, 0)
                os.write(fd, data)
        except OSError as e:  # a full state directory: give back what was taken, and say where
            for p, f in fds:
                release_lock_file(p, f)
            raise OSError(e.errno, e.strerror, path) from None
    return fds


def holder(state_dir: str, base: int) -> str:
    try:
        with open(os.path.join(state_dir, "uid-ranges", f"{base - base % RANGE}")) as f:
            return f.read().strip() or "another machine"
    except OSError:
        return "another machine"


def acquire(mode: str, base: int, count: int, name: str, state_dir: str, image_owner: int) -> UidRange:
    """Choose and lock the range for MODE ('pick', 'fixed', 'identity')."""
    if mode == "identity":
        return UidRange(0, count)
    if mode == "fixed":
        r = UidRange(base, count)
        fds = _lock_blocks(state_dir, base, count, name)
        if fds is None:
            raise SetupError(
                f"UID range {base}:{count} overlaps one held by {holder(state_dir, base)}.",
                "pick another range, or let hutch pick with -U",
            )
        r.lock_paths, r.lock_fds = [p for p, _ in fds], [f for _, f in fds]
        return r
    slots = (PICK_MAX - PICK_MIN) // RANGE
    candidates: list[int] = []
    if image_owner >= PICK_MIN and image_owner % RANGE == 0 and image_owner < PICK_MAX:
        # An image chowned for a range before: reuse that range, as upstream's pick does.
        candidates.append(image_owner)
    start = name_hash(name) % slots
    for i in range(64):
        candidates.append(PICK_MIN + ((start + i) % slots) * RANGE)
    for cand in candidates:
        fds = _lock_blocks(state_dir, cand, RANGE, name)
        if fds is not None:
            r = UidRange(cand, RANGE)
            r.lock_paths, r.lock_fds = [p for p, _ in fds], [f for _, f in fds]
            return r
        if cand == image_owner:
            raise SetupError(
                f"The image is owned by UID range {cand}, which {holder(state_dir, cand)} holds.",
                "stop that machine, or run this one with --ephemeral or a copy of the image",
            )
    raise SetupError("No free UID range found.", "too many machines are running")


# File systems the kernel will not idmap (no FS_ALLOW_IDMAP): ownership 'auto' chowns images on them.
_NO_IDMAP = ("overlay", "aufs", "nfs", "nfs4", "cifs", "smb3", "9p", "ceph", "fuse", "zfs")


def lacks_idmap(tree: str) -> bool:
    """Whether TREE is on one of those file systems, by its mount's entry in /proc/self/mountinfo."""
    st = os.stat(tree)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split(" ", 3)
                if len(fields) > 2 and fields[2] == dev and " - " in line:
                    fstype = line.split(" - ", 1)[1].split(" ", 1)[0]
                    return fstype in _NO_IDMAP or fstype.startswith("fuse.")
    except OSError:
        pass
    return False


def chown_image(tree: str, base: int) -> None:
    """Shift TREE's files to the range at BASE, from the range they are in (its top directory's owner
    says which), or from the host's IDs. Never the host's own root: its /tmp, /home and /etc would be
    shifted with it."""
    st = os.stat(tree)
    top = os.stat("/")
    if (st.st_dev, st.st_ino) == (top.st_dev, top.st_ino):
        raise SetupError(
            f"Refusing to change the owners of {tree}: it is the host's root directory.",
            "run the host's tree with -x or --volatile, which leave it unchanged",
        )
    owner = st.st_uid
    if owner != base:
        chown_tree(tree, base, owner if owner % RANGE == 0 and owner >= RANGE else 0)


def chown_tree(root: str, shift: int, old_base: int) -> None:
    """Shift every file's owner and group from OLD_BASE+id to SHIFT+id, by fd, never following symlinks
    (CVE-2018-6954 was a chown that followed one). Iterative: deep trees must not exhaust the stack."""

    def new(i: int) -> int:
        rel = i - old_base if old_base <= i < old_base + RANGE else i
        return shift + rel if rel < RANGE else i

    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(top)
    os.chown(top, new(st.st_uid), new(st.st_gid))
    os.chmod(top, st.st_mode & 0o7777)  # chown clears setuid bits; keep the mode
    stack = [top]
    dev = st.st_dev
    try:
        while stack:
            dfd = stack.pop()
            try:
                with os.scandir(dfd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                for name, is_dir in entries:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    os.chown(name, new(st.st_uid), new(st.st_gid), dir_fd=dfd, follow_symlinks=False)
                    if (st.st_mode & 0o170000) != 0o120000 and st.st_mode & 0o6000:
                        os.chmod(name, st.st_mode & 0o7777, dir_fd=dfd)
                    if is_dir and st.st_dev == dev:
                        stack.append(
                            os.open(
                                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd
                            )
                        )
            finally:
                os.close(dfd)
    except BaseException:
        for fd in stack:
            os.close(fd)
        raise


def mapping_userns(uid_map: str, gid_map: str) -> int:
    """An fd of a new user namespace with these maps ("INSIDE OUTSIDE COUNT" lines), to idmap a mount
    through: a file whose owner on disk is INSIDE shows as OUTSIDE. The process that made it is gone
    by the time this returns; the fd keeps the namespace."""
    from hutch.linux import libc

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = -1
    try:
        pid, pidfd = libc.clone3_fork(libc.CLONE_NEWUSER)
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # until the parent has what it needs
            os._exit(0)
        # PID 1 without a user namespace calls this from its own PID namespace while /proc is still
        # the host's: the child's number there is the one the pidfd's fdinfo gives.
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            host_pid = next(int(ln.split()[1]) for ln in f if ln.startswith("Pid:"))
        os.close(pidfd)
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{host_pid}/{name}", "w") as f:
                f.write(text)
        return os.open(f"/proc/{host_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.close(w)
        if pid > 0:
            os.waitpid(pid, 0)
