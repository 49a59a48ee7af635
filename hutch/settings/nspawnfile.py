""".nspawn settings files (systemd.nspawn(5)), found where systemd-nspawn looks, merged as it merges.

- Found as NAME.nspawn first in the settings directories ($HUTCH_SETTINGS_PATH: /etc/systemd/nspawn,
  /run/systemd/nspawn), which are trusted, else next to the image (/var/lib/machines), which is not.
- An untrusted file cannot widen the container's privileges: keys that add capabilities, mount host
  paths, switch off the user namespace or chown trees, allow system calls or raise limits are ignored
  with a warning (upstream's rule, tightened after CVE-2026-40226). --settings=trusted trusts any file.
- The command line wins over the file (--settings=yes), or the file over the command line
  (--settings=override, what `hutch start` uses, as systemd-nspawn@.service does); --settings=no
  ignores files.

Each key is translated to the systemd-nspawn option it mirrors and parsed by the same code, so a value
means the same in both places; errors name the file and line.
"""

from __future__ import annotations

import sys

from hutch.errors import HutchError, SettingsError
from hutch.settings.model import Settings

# Key -> (section, option, kind). kind: "flag" (a boolean becomes the bare option when true), "value"
# (--option=VALUE), "bool" (--option=BOOL), "list" (whitespace-separated, one option per item), "words"
# (a list whose items may be quoted, as Environment="A=1 2" B=3 in a unit file).
KEYS: dict[str, tuple[str, str, str]] = {
    "Boot": ("Exec", "boot", "flag"),
    "Ephemeral": ("Exec", "ephemeral", "flag"),
    "ProcessTwo": ("Exec", "as-pid2", "flag"),
    "Parameters": ("Exec", "", "parameters"),
    "Environment": ("Exec", "setenv", "words"),
    "SetCredential": ("Exec", "set-credential", "value"),
    "LoadCredential": ("Exec", "load-credential", "value"),
    "User": ("Exec", "user", "value"),
    "WorkingDirectory": ("Exec", "chdir", "value"),
    "Capability": ("Exec", "capability", "list"),
    "DropCapability": ("Exec", "drop-capability", "list"),
    "AmbientCapability": ("Exec", "ambient-capability", "list"),
    "NoNewPrivileges": ("Exec", "no-new-privileges", "bool"),
    "KillSignal": ("Exec", "kill-signal", "value"),
    "MachineID": ("Exec", "uuid", "value"),
    "PrivateUsers": ("Exec", "private-users", "value"),
    "SystemCallFilter": ("Exec", "system-call-filter", "value"),
    "OOMScoreAdjust": ("Exec", "oom-score-adjust", "value"),
    "Hostname": ("Exec", "hostname", "value"),
    "ResolvConf": ("Exec", "resolv-conf", "value"),
    "Timezone": ("Exec", "timezone", "value"),
    "PivotRoot": ("Exec", "pivot-root", "value"),
    "Personality": ("Exec", "personality", "value"),
    "NotifyReady": ("Exec", "notify-ready", "bool"),
    "CPUAffinity": ("Exec", "cpu-affinity", "value"),
    "LinkJournal": ("Exec", "link-journal", "value"),
    "SuppressSync": ("Exec", "suppress-sync", "bool"),
    "ReadOnly": ("Files", "read-only", "flag"),
    "Volatile": ("Files", "volatile", "value"),
    "Bind": ("Files", "bind", "value"),
    "BindReadOnly": ("Files", "bind-ro", "value"),
    "TemporaryFileSystem": ("Files", "tmpfs", "value"),
    "Inaccessible": ("Files", "inaccessible", "value"),
    "Overlay": ("Files", "overlay", "value"),
    "OverlayReadOnly": ("Files", "overlay-ro", "value"),
    "PrivateUsersOwnership": ("Files", "private-users-ownership", "value"),
    "PrivateUsersChown": ("Files", "private-users-chown", "flag"),
    "BindUser": ("Files", "bind-user", "list"),
    "BindUserShell": ("Files", "bind-user-shell", "value"),
    "Private": ("Network", "private-network", "flag"),
    "VirtualEthernet": ("Network", "network-veth", "flag"),
    "VirtualEthernetExtra": ("Network", "network-veth-extra", "list"),
    "Interface": ("Network", "network-interface", "list"),
    "Bridge": ("Network", "network-bridge", "value"),
    "Zone": ("Network", "network-zone", "value"),
    "Port": ("Network", "port", "value"),
    "MACVLAN": ("Network", "network-macvlan", "list"),
    "IPVLAN": ("Network", "network-ipvlan", "list"),
}
LIMITS = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NOFILE", "AS", "NPROC", "MEMLOCK", "LOCKS",
          "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")  # fmt: skip
# Keys an untrusted file may not set: each could give the container more than its defaults.
PRIVILEGED = {
    "Capability", "AmbientCapability", "Bind", "BindReadOnly", "TemporaryFileSystem", "Overlay",
    "OverlayReadOnly", "PrivateUsersOwnership", "PrivateUsersChown", "SystemCallFilter", "OOMScoreAdjust",
    "VirtualEthernetExtra", "Interface", "Bridge", "Port", "LoadCredential", "BindUser", "MACVLAN", "IPVLAN",
    *(f"Limit{x}" for x in LIMITS),
}  # fmt: skip
# Without a user namespace the container is no security boundary: an untrusted file cannot ask for that.
_USERNS_OFF = ("no", "false", "0", "off", "identity")


def _parse_bool(value: str, where: str) -> bool:
    from hutch.errors import UsageError
    from hutch.settings.values import parse_boolean

    try:
        return parse_boolean(value, where)
    except UsageError:
        raise SettingsError(f"{where}: Failed to parse boolean value '{value}'.") from None


MAX_FILE = 1 << 20  # far above any real settings file; a device or a huge file is no settings file


def _read_bounded(path: str) -> bytes:
    from hutch.linux import posixos as os

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise SettingsError(f"Failed to read settings file {path}: {e.strerror}.") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000:  # not S_ISREG (the stat module stays off spawn's path)
            raise SettingsError(f"Failed to read settings file {path}: not a regular file.")
        data = os.read(fd, MAX_FILE + 1)
        if len(data) > MAX_FILE:
            raise SettingsError(f"Failed to read settings file {path}: larger than {MAX_FILE >> 20} MiB.")
        return data
    except OSError as e:
        raise SettingsError(f"Failed to read settings file {path}: {e.strerror}.") from None
    finally:
        os.close(fd)


def read_text(path: str, origin: str = "") -> str:
    """The file's text: a regular file of at most MAX_FILE bytes, UTF-8."""
    raw = _read_bounded(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise SettingsError(
            f"{origin or path}:{lineno}: Not UTF-8 text (byte 0x{raw[e.start]:02x}).",
            "a settings file is UTF-8 text",
        ) from None


def read(path: str, trusted: bool, origin: str = "") -> list[tuple[str, str, str]]:
    """The file's assignments as (key, value, 'file:line'), privileged ones dropped if untrusted.
    Raises SettingsError naming file:line (ORIGIN:line if given) for anything malformed."""
    from hutch.text import cescape

    text = read_text(path, origin)
    section = None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        where = f"{origin or path}:{n}"
        line = raw.strip()
        if "\0" in line:
            raise SettingsError(f"{where}: NUL byte in the line.", "a settings file is text")
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise SettingsError(f"{where}: Invalid section header '{line}'.")
            section = line[1:-1]
            if section not in ("Exec", "Files", "Network"):
                print(cescape(f"hutch: {where}: Unknown section '{section}', ignoring."), file=sys.stderr)
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise SettingsError(f"{where}: Missing '=' in '{line[:60]}'.", "lines are Key=Value")
        if section is None:
            raise SettingsError(
                f"{where}: Assignment outside of a section.", "put it under [Exec], [Files] or [Network]"
            )
        if section not in ("Exec", "Files", "Network"):
            continue
        known = KEYS.get(key)
        if known is None and not (key.startswith("Limit") and key[5:] in LIMITS):
            warning = f"hutch: {where}: Unknown key '{key}' in section [{section}], ignoring."
            print(cescape(warning), file=sys.stderr)
            continue
        if known is not None and known[0] != section:
            print(f"hutch: {where}: Key '{key}' belongs in [{known[0]}], ignoring.", file=sys.stderr)
            continue
        if not trusted and (key in PRIVILEGED or (key == "PrivateUsers" and value.lower() in _USERNS_OFF)):
            print(
                f"hutch: {where}: Ignoring {key}=, file {path} is not trusted "
                "(only /etc/systemd/nspawn and /run/systemd/nspawn are).",
                file=sys.stderr,
            )
            continue
        out.append((key, value, where))
    return out


def to_argv(assignments: list[tuple[str, str, str]]) -> tuple[list[str], list[str] | None]:
    """nspawn options for the assignments, and the command from Parameters= (None if unset)."""
    from hutch.settings.cmdline import parse

    argv: list[str] = []
    command: list[str] | None = None
    for key, value, where in assignments:
        if key.startswith("Limit") and key not in KEYS:
            opts = [f"--rlimit=RLIMIT_{key[5:]}={value}"]
        else:
            _, option, kind = KEYS[key]
            if kind == "flag":
                opts = [f"--{option}"] if _parse_bool(value, where) else []
            elif kind == "bool":
                opts = [f"--{option}={'yes' if _parse_bool(value, where) else 'no'}"]
            elif kind == "words":
                import shlex

                try:
                    opts = [f"--{option}={item}" for item in shlex.split(value)]
                except ValueError as e:
                    raise SettingsError(f"{where}: Invalid {key}=: {e}.") from None
            elif kind == "list":
                # An empty assignment resets what came before (BindUser=), as systemd's list keys do.
                opts = [f"--{option}={item}" for item in value.split()] or (
                    [f"--{option}="] if key == "BindUser" else []
                )
            elif kind == "parameters":
                import shlex

                try:
                    command = shlex.split(value)
                except ValueError as e:
                    raise SettingsError(f"{where}: Invalid Parameters=: {e}.") from None
                if command and not command[0]:
                    raise SettingsError(f"{where}: Parameters= starts with an empty word.")
                continue
            else:
                opts = [f"--{option}={value}"]
        try:
            parse(opts)  # each key alone, so an error names its line
        except HutchError as e:
            raise SettingsError(f"{where}: {key}={value}: {e.message.rstrip('.')}.", e.hint) from None
        argv += opts
    return argv, command


def merge(cmdline: Settings, path: str, trusted: bool) -> Settings:
    """The settings to run with: the file's where the command line left a setting at its default
    (--settings=yes|trusted), or the file's wherever it has one (override)."""
    from hutch.settings.cmdline import parse

    mode = cmdline.settings_mode
    argv, command = to_argv(read(path, trusted or mode == "trusted"))
    from_file = parse(argv)
    if command is not None:
        from_file.command = command
    default = Settings()
    out = Settings()
    for field in Settings.__slots__:
        if field in ("argv", "settings_mode"):
            continue
        mine = getattr(cmdline, field)
        theirs = getattr(from_file, field)
        file_set = theirs != getattr(default, field)
        cmd_set = mine != getattr(default, field)
        use_file = file_set and (mode == "override" or not cmd_set)
        setattr(out, field, theirs if use_file else mine)
    out.argv = cmdline.argv
    out.settings_mode = mode
    return out


def check(path: str, origin: str) -> None:
    """Everything spawn would refuse in the file at PATH, named ORIGIN:line: the syntax, and each
    value as its command-line option parses it (`hutch edit` checks before it saves)."""
    to_argv(read(path, trusted=True, origin=origin))
