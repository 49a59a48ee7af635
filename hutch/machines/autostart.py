"""Starting machines at boot. Where systemd is PID 1, a `hutch@.service` template unit (upstream's
systemd-nspawn@.service, running hutch) wanted by machines.target; elsewhere a marker per machine in
$HUTCH_CONFIG_DIR/autostart/ and `hutch autostart`, to call from OpenRC, sysvinit or rc.local."""

from __future__ import annotations

import os
import sys

from hutch.errors import MachineError
from hutch.machines import control, registry
from hutch.paths import Paths

UNIT = """\
# Installed by `hutch enable`: upstream's systemd-nspawn@.service, with hutch as the supervisor.
[Unit]
Description=Container %i (hutch)
PartOf=machines.target
Before=machines.target
After=network.target
RequiresMountsFor={image_dir}/%i

[Service]
ExecStart={hutch} {spawn_args}
KillMode=mixed
Type=notify
RestartForceExitStatus=133
SuccessExitStatus=133
Slice=machine.slice
Delegate=yes
TasksMax=16384

[Install]
WantedBy=machines.target
"""


def systemd_is_init() -> bool:
    return os.path.isdir("/run/systemd/system")


def unit_dir() -> str:
    return os.environ.get("HUTCH_SYSTEMD_UNIT_DIR") or "/etc/systemd/system"


def unit_text(paths: Paths, hutch: str | None = None) -> str:
    """The template unit running HUTCH (by default this hutch's own launcher; the Debian package's
    names /usr/bin/hutch)."""
    spawn = control.spawn_args("%i")
    # The unit's own cgroup is the machine's (systemd-nspawn@.service's --keep-unit).
    spawn = [a for a in spawn if a != "--console=read-only"]
    spawn.insert(2, "--keep-unit")
    return UNIT.format(
        image_dir=paths.image_dir, hutch=hutch or " ".join(control._self_argv()), spawn_args=" ".join(spawn)
    )


def _marker(paths: Paths, name: str) -> str:
    return os.path.join(paths.config_dir, "autostart", name)


def enabled(paths: Paths) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(paths.config_dir, "autostart")))
    except FileNotFoundError:
        return []


def _atomic_write(path: str, text: str) -> None:
    from hutch.linux.fsutil import write_atomic

    write_atomic(path, text.encode())


def enable(name: str, paths: Paths) -> list[str]:
    """Mark NAME for autostart; returns what was created."""
    from hutch.images import store

    control.check_name(name)
    if store.find(name, paths) is None:
        raise MachineError(f"No image '{name}' in {':'.join(paths.image_path)}.", "see 'hutch list-images'")
    made = []
    os.makedirs(os.path.join(paths.config_dir, "autostart"), 0o755, exist_ok=True)
    marker = _marker(paths, name)
    if not os.path.exists(marker):
        _atomic_write(marker, f"{name}\n")
        made.append(marker)
    if systemd_is_init() or os.environ.get("HUTCH_SYSTEMD_UNIT_DIR"):
        d = unit_dir()
        os.makedirs(os.path.join(d, "machines.target.wants"), 0o755, exist_ok=True)
        unit = os.path.join(d, "hutch@.service")
        _atomic_write(unit, unit_text(paths))
        link = os.path.join(d, "machines.target.wants", f"hutch@{name}.service")
        if not os.path.lexists(link):
            os.symlink("../hutch@.service", link)
            made.append(link)
        made += _want_machines_target(d)
        if systemd_is_init() and not os.environ.get("HUTCH_SYSTEMD_UNIT_DIR"):
            from hutch.container import systemd

            systemd.daemon_reload()  # as systemctl enable does: the new unit is known at once
    return made


def start_unit(name: str) -> None:
    """systemctl start hutch@NAME.service: Type=notify, so it returns once the machine is up."""
    from hutch.container import systemd

    systemd.start_unit(f"hutch@{systemd.unit_escape(name)}.service")


MACHINES_TARGET = ("/usr/lib/systemd/system/machines.target", "/lib/systemd/system/machines.target")


def _want_machines_target(unit_dir: str) -> list[str]:
    """machinectl enable's second half: machines.target wanted by multi-user.target, so the machines
    start at boot (Debian ships it enabled, other distributions may not)."""
    target = next((p for p in MACHINES_TARGET if os.path.exists(p)), None)
    link = os.path.join(unit_dir, "multi-user.target.wants", "machines.target")
    if target is None or os.path.lexists(link):
        return []
    os.makedirs(os.path.dirname(link), 0o755, exist_ok=True)
    os.symlink(target, link)
    return [link]


def disable(name: str, paths: Paths) -> list[str]:
    control.check_name(name)
    removed = []
    for path in (
        _marker(paths, name),
        os.path.join(unit_dir(), "machines.target.wants", f"hutch@{name}.service"),
    ):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def autostart(paths: Paths, timeout: float = control.START_TIMEOUT) -> int:
    """Start every enabled machine that is not running; one line per machine; non-zero if any failed."""
    from hutch.cli import fail

    rc = 0
    for name in enabled(paths):
        if registry.is_running(paths.state_dir, name):
            print(f"Machine '{name}' is already running.", file=sys.stderr)
            continue
        try:
            e = control.start(name, paths, timeout)
            print(f"Started machine '{name}' (leader {e['leader']}).", file=sys.stderr)
        except MachineError as err:
            rc = fail("hutch autostart", err)
    return rc
