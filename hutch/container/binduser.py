"""--bind-user: host users inside the machine, as systemd-nspawn's (the facts of its nspawn-bind-user.c).

Each user's UID and primary GID show as 60514+N inside (the range systemd reserves for this, 60514..60577),
by lines of their own in the container's ID maps; their home is bound to /run/host/home/NAME with their
files showing as theirs; and JSON user and group records go to /run/host/userdb/, where the guest's
nss-systemd and userdbd find them. A name or ID the image already has is refused, as upstream does.
Imported only when the option is given.
"""

from __future__ import annotations

import json

from hutch.container import rootfs
from hutch.container.plan import Mkdirs, Op, WriteFile
from hutch.errors import SetupError
from hutch.settings.model import Settings

FIRST = 60514
LAST = 60577


class BoundUser:
    __slots__ = ("gecos", "group", "home", "host_gid", "host_uid", "inner", "name", "shell")

    def __init__(
        self,
        name: str,
        host_uid: int,
        host_gid: int,
        group: str,
        home: str,
        shell: str,
        gecos: str,
        inner: int,
    ) -> None:
        self.name = name
        self.host_uid = host_uid
        self.host_gid = host_gid
        self.group = group
        self.home = home
        self.shell = shell
        self.gecos = gecos
        self.inner = inner


def _entries(text: str | None) -> list[tuple[str, str]]:
    out = []
    for line in (text or "").splitlines():
        f = line.split(":")
        if len(f) >= 3 and f[0] and not f[0].startswith(("+", "-")):
            out.append((f[0], f[2]))
    return out


def resolve(s: Settings, tree: str) -> list[BoundUser]:
    """The host's users named by --bind-user, checked against the image's /etc/passwd and /etc/group."""
    import grp
    import pwd

    if len(s.bind_users) > LAST - FIRST + 1:
        raise SetupError(f"At most {LAST - FIRST + 1} users can be bound into a machine.")
    passwd = _entries(rootfs.read_file_in_root(tree, "etc/passwd"))
    groups = _entries(rootfs.read_file_in_root(tree, "etc/group"))
    out: list[BoundUser] = []
    for i, name in enumerate(s.bind_users):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise SetupError(
                f"Failed to bind user {name}: no such user on the host.", "see getent passwd"
            ) from None
        if pw.pw_uid == 0:
            raise SetupError(f"Failed to bind user {name}: the host's root cannot be bound.")
        try:
            group = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            group = name
        inner = FIRST + i
        for file, table, key in (("passwd", passwd, name), ("group", groups, group)):
            for n, ident in table:
                if n == key or ident == str(inner):
                    raise SetupError(
                        f"Failed to bind user {name}: the image's /etc/{file} already has {n} ({ident}).",
                        "bind another user, or remove that entry from the image",
                    )
        out.append(BoundUser(name, pw.pw_uid, pw.pw_gid, group, pw.pw_dir, pw.pw_shell, pw.pw_gecos, inner))
    return out


def _records(u: BoundUser, shell: bool | str | None) -> list[tuple[str, bytes]]:
    user: dict[str, object] = {"userName": u.name}
    if u.gecos.split(",")[0]:
        user["realName"] = u.gecos.split(",")[0]
    user.update(uid=u.inner, gid=u.inner, homeDirectory=f"/run/host/home/{u.name}", disposition="regular")
    if shell is True and u.shell:
        user["shell"] = u.shell
    elif isinstance(shell, str):
        user["shell"] = shell
    group = {"groupName": u.group, "gid": u.inner, "disposition": "regular"}
    # Compact, one line each, as upstream writes them (its tests grep for '"shell":"/bin/sh"').
    dump = {"separators": (",", ":")}
    ujson = json.dumps(user, **dump).encode() + b"\n"  # type: ignore[arg-type]
    gjson = json.dumps(group, **dump).encode() + b"\n"  # type: ignore[arg-type]
    return [
        (f"{u.name}.user", ujson),
        (f"{u.inner}.user", ujson),
        (f"{u.group}.group", gjson),
        (f"{u.inner}.group", gjson),
    ]


def map_lines(base: int, count: int, pairs: list[tuple[int, int]]) -> str:
    """The container's 0 BASE COUNT map, with a line of its own for each (inside, host) pair."""
    lines: list[str] = []
    at = 0
    for inner, host in sorted(pairs):
        if inner > at:
            lines.append(f"{at} {base + at} {inner - at}")
        lines.append(f"{inner} {host} 1")
        at = inner + 1
    if at < count:
        lines.append(f"{at} {base + at} {count - at}")
    return "\n".join(lines) + "\n"


def ops(users: list[BoundUser], shell: bool | str | None) -> tuple[list[Op], list[Op]]:
    """(what goes into /run/host before it turns read-only, the home binds after)."""
    from hutch.container.custom_mounts import BindOp
    from hutch.linux.libc import MS_BIND, MS_REC

    files: list[Op] = [Mkdirs(["/run/host/userdb", *(f"/run/host/home/{u.name}" for u in users)])]
    binds: list[Op] = []
    for u in users:
        for name, data in _records(u, shell):
            files.append(
                WriteFile(f"/run/host/userdb/{name}", data, 0o644, label=f"userdb record of {u.name}")
            )
        op = BindOp(u.home, f"/run/host/home/{u.name}", MS_BIND | MS_REC, "dir", False, False)
        op.owner_to = -2  # not idmapped: the user's own map line already shows their files as theirs
        binds.append(op)
    return files, binds
