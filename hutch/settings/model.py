"""What a container is asked to be: pure data, no syscalls.

Plain slotted classes rather than dataclasses/enums: both modules pull in `re`/`inspect`, which the
`spawn` start-up path cannot afford (shared/reference/findings.md). Treat instances as immutable once
the command line has been parsed.
"""

from __future__ import annotations

CONSOLE_MODES = ("interactive", "read-only", "passive", "pipe", "autopipe")
VOLATILE_MODES = ("no", "yes", "state", "overlay")
RESOLV_CONF_MODES = (
    "off",
    "copy-host",
    "copy-static",
    "copy-uplink",
    "copy-stub",
    "replace-host",
    "replace-static",
    "replace-uplink",
    "replace-stub",
    "bind-host",
    "bind-static",
    "bind-uplink",
    "bind-stub",
    "delete",
    "auto",
)
TIMEZONE_MODES = ("off", "copy", "bind", "symlink", "delete", "auto")


class Bind:
    """--bind/--bind-ro: SRC on the host (or inside the image with '+', or a temp dir when empty)."""

    __slots__ = ("destination", "idmap", "image_relative", "read_only", "recursive", "source")

    def __init__(
        self,
        source: str,
        destination: str,
        read_only: bool = False,
        recursive: bool = True,
        image_relative: bool = False,
        idmap: str = "",
    ) -> None:
        self.source = source
        # "" and "idmap": host IDs show as themselves; "noidmap": unmapped (nobody) under a user
        # namespace; "rootidmap"/"owneridmap": the source's owner shows as root / as --user.
        self.idmap = idmap  # "" = a temporary directory, removed when the container ends
        self.destination = destination
        self.read_only = read_only
        self.recursive = recursive
        self.image_relative = image_relative

    def __repr__(self) -> str:
        return f"Bind({self.source!r}, {self.destination!r}, ro={self.read_only}, rec={self.recursive})"


class Tmpfs:
    __slots__ = ("destination", "options")

    def __init__(self, destination: str, options: str = "mode=0755") -> None:
        self.destination = destination
        self.options = options


class Overlay:
    """--overlay/--overlay-ro: lower layers (bottom first), an upper ("" = temp) and a destination."""

    __slots__ = ("destination", "lowers", "read_only", "upper")

    def __init__(self, lowers: list[str], upper: str, destination: str, read_only: bool) -> None:
        self.lowers = lowers
        self.upper = upper
        self.destination = destination
        self.read_only = read_only


class Settings:
    """Everything `hutch spawn` was asked for. Defaults match systemd-nspawn's."""

    __slots__ = (
        "ambient_capabilities",
        "argv",
        "as_pid2",
        "bind_user_shell",
        "bind_users",
        "binds",
        "boot",
        "capabilities",
        "chdir",
        "command",
        "console",
        "cpu_affinity",
        "credentials",
        "debug",
        "directory",
        "drop_capabilities",
        "ephemeral",
        "hostname",
        "image",
        "inaccessible",
        "keep_unit",
        "kill_signal",
        "link_journal",
        "machine",
        "network_bridge",
        "network_interfaces",
        "network_ipvlan",
        "network_macvlan",
        "network_masquerade",
        "network_namespace_path",
        "network_veth",
        "network_veth_extra",
        "network_zone",
        "no_new_privileges",
        "notify_ready",
        "oom_score_adjust",
        "overlays",
        "personality",
        "pivot_root",
        "ports",
        "private_network",
        "private_users",
        "private_users_ownership",
        "properties",
        "quiet",
        "read_only",
        "register",
        "resolv_conf",
        "rlimits",
        "selinux_apifs_context",
        "selinux_context",
        "setenv",
        "settings_mode",
        "slice",
        "suppress_sync",
        "syscall_allow",
        "syscall_deny",
        "template",
        "timezone",
        "tmpfs",
        "user",
        "uuid",
        "volatile",
    )

    def __init__(self) -> None:
        self.directory: str | None = None
        self.image: str | None = None  # -i: a raw disk or file-system image file
        self.machine: str | None = None
        self.template: str | None = None
        self.ephemeral = False
        self.read_only = False
        self.volatile = "no"
        self.boot = False
        self.as_pid2 = False
        self.chdir: str | None = None
        self.setenv: list[str] = []
        self.credentials: list[tuple[str, bytes]] = []  # (ID, data), in the order given
        self.user: str | None = None
        self.kill_signal: int | None = None
        self.hostname: str | None = None
        self.uuid: str | None = None
        self.rlimits: dict[int, tuple[int, int]] = {}
        self.oom_score_adjust: int | None = None
        self.quiet = False
        self.debug = False
        self.binds: list[Bind] = []
        self.tmpfs: list[Tmpfs] = []
        self.overlays: list[Overlay] = []
        self.inaccessible: list[str] = []
        self.resolv_conf = "auto"
        self.timezone = "auto"
        self.private_network = False
        self.network_veth = False  # -n: implies private_network
        self.network_zone = ""  # --network-zone=Z: a veth on the bridge vz-Z
        self.network_bridge = ""  # --network-bridge=BR: the veth's host side (vb-NAME) on BR
        self.network_masquerade = False  # hutch's --network-masquerade: NAT for outbound traffic
        self.network_namespace_path = ""  # --network-namespace-path: join that network namespace
        self.network_interfaces: list[tuple[str, str]] = []  # --network-interface=IF[:NEW], moved in
        self.network_veth_extra: list[tuple[str, str]] = []  # --network-veth-extra=HOST[:INNER]
        self.ports: list[tuple[str, int, int]] = []  # -p: (protocol, host port, container port)
        self.console: str | None = None  # None: interactive on a terminal, read-only otherwise
        self.command: list[str] = []
        self.argv: list[str] = []  # as given, for the registry (hutch shell re-derives the confinement)
        self.settings_mode = "yes"
        self.register = True
        self.keep_unit = False  # --keep-unit: the machine's cgroup is the calling unit's own (systemd hosts)
        self.capabilities: set[int] = set()
        self.drop_capabilities: set[int] = set()
        self.ambient_capabilities: set[int] = set()
        self.no_new_privileges = False
        self.syscall_allow: list[str] = []
        self.syscall_deny: list[str] = []
        self.properties: list[str] = []  # --property=Key=Value: resource limits (systemd's names)
        # User namespaces are on by default, unlike systemd-nspawn's command line (its service unit has -U).
        self.private_users = "pick"
        self.private_users_ownership = "auto"
        self.cpu_affinity: list[int] | None = None  # --cpu-affinity: CPUs for every process inside
        self.personality: str | None = None  # --personality: x86 or x86-64 (what uname -m reports)
        self.suppress_sync = False  # --suppress-sync: sync(2) and friends do nothing
        self.notify_ready: bool | None = None  # None: wait for READY=1 only from a systemd init
        self.link_journal = "auto"  # --link-journal: no, host, try-host, guest, try-guest, auto
        self.bind_users: list[str] = []  # --bind-user: host users, their homes under /run/host/home
        self.bind_user_shell: bool | str | None = None  # --bind-user-shell: copy theirs, or this path
        self.network_macvlan: list[tuple[str, str]] = []  # --network-macvlan=IF[:NAME]
        self.network_ipvlan: list[tuple[str, str]] = []  # --network-ipvlan=IF[:NAME]
        self.pivot_root: tuple[str, str] | None = None  # --pivot-root=NEW[:OLD] ("" = unmount the old)
        self.slice = "machine.slice"  # -S: the slice of the scope systemd makes (else machine.slice only)
        self.selinux_context = ""  # -Z/-L: accepted where SELinux is off, as upstream's are no-ops
        self.selinux_apifs_context = ""
