"""hutch as a library: `hutch.Image` and `hutch.Machine`, so scripts need not parse the CLI's output.
The CLI is a thin layer over the same functions; errors are hutch.errors.HutchError subclasses with
`message` and `hint`. Paths come from the environment (HUTCH_IMAGE_PATH, HUTCH_STATE_DIR, ...) at each
call, or from an explicit `paths=`.

    import hutch
    img = hutch.Image.import_tar("ubuntu.tar.gz", "ubuntu", read_only=True)
    img.clone("web1", thin=True)
    m = hutch.Machine.start("web1")
    assert m.shell(["systemctl", "is-system-running"]) == 0
    m.poweroff(wait=True)
"""

from __future__ import annotations

import builtins
from typing import Any

from hutch.paths import Paths


def _paths(paths: Paths | None) -> Paths:
    return paths or Paths.from_env()


class Image:
    """An image along the image path (directory, raw or thin)."""

    def __init__(self, img: Any, paths: Paths | None = None) -> None:
        self._img = img
        self._paths = paths
        self.name: str = img.name
        self.path: str = img.path
        self.type: str = img.type
        self.read_only: bool = img.read_only
        self.created_usec: int | None = img.crtime
        self.modified_usec: int | None = img.mtime
        self.source: str | None = img.lower

    def __repr__(self) -> str:
        return f"<hutch.Image {self.name} {self.type}{' ro' if self.read_only else ''} {self.path}>"

    @staticmethod
    def list(all: bool = False, paths: Paths | None = None) -> builtins.list[Image]:
        from hutch.images import store

        return [Image(i, paths) for i in store.discover(_paths(paths), hidden=all)]

    @staticmethod
    def get(name: str, paths: Paths | None = None) -> Image:
        from hutch.images import store

        return Image(store.get(name, _paths(paths)), paths)

    @staticmethod
    def import_tar(
        file: str, name: str | None = None, *, read_only: bool = False, force: bool = False,
        paths: Paths | None = None,
    ) -> Image:  # fmt: skip
        from hutch.images import transfer

        img, _ = transfer.import_tar(
            file, name, _paths(paths), read_only=read_only, force=force, progress=False
        )
        return Image(img, paths)

    @staticmethod
    def import_fs(
        directory: str, name: str | None = None, *, read_only: bool = False, paths: Paths | None = None
    ) -> Image:
        from hutch.images import transfer

        return Image(
            transfer.import_fs(directory, name, _paths(paths), read_only=read_only, progress=False), paths
        )

    @staticmethod
    def pull_tar(
        url: str, name: str | None = None, *, verify: str = "checksum", paths: Paths | None = None
    ) -> Image:
        from hutch.images import transfer

        img, _ = transfer.pull_tar(url, name, _paths(paths), verify=verify, progress=False)
        return Image(img, paths)

    def clone(self, new: str, *, read_only: bool = False, thin: bool = False) -> Image:
        from hutch.images import transfer

        p = _paths(self._paths)
        if thin:
            return Image(transfer.clone_thin(self.name, new, p), self._paths)
        return Image(transfer.clone(self.name, new, p, read_only=read_only, progress=False), self._paths)

    def export(self, file: str, fmt: str | None = None) -> None:
        from hutch.images import transfer

        transfer.export_tar(self.name, file, _paths(self._paths), fmt=fmt, progress=False)

    def rename(self, new: str) -> Image:
        from hutch.images import manage

        return Image(manage.rename(self.name, new, _paths(self._paths)), self._paths)

    def set_read_only(self, value: bool = True) -> Image:
        from hutch.images import manage

        return Image(manage.set_read_only(self.name, value, _paths(self._paths)), self._paths)

    def remove(self) -> None:
        from hutch.images import manage

        manage.remove(self.name, _paths(self._paths))


class Machine:
    """A running machine, as the registry records it."""

    def __init__(self, entry: dict[str, Any], paths: Paths | None = None) -> None:
        self._entry = entry
        self._paths = paths
        self.name: str = entry["name"]
        self.id: str = entry.get("id", "")
        self.leader: int = int(entry["leader"])
        self.supervisor: int = int(entry["supervisor"])
        self.root: str = entry["root"]
        self.state: str = entry.get("state", "running")
        self.since_usec: int = int(entry.get("since", 0))
        self.uid_shift: int = int(entry.get("uid_shift", 0))

    def __repr__(self) -> str:
        return f"<hutch.Machine {self.name} leader={self.leader} {self.state}>"

    @staticmethod
    def start(name: str, *, timeout: float = 90.0, paths: Paths | None = None) -> Machine:
        from hutch.machines import control

        return Machine(control.start(name, _paths(paths), timeout), paths)

    @staticmethod
    def list(paths: Paths | None = None) -> builtins.list[Machine]:
        from hutch.machines import registry

        return [Machine(e, paths) for e in registry.running(_paths(paths).state_dir)]

    @staticmethod
    def get(name: str, paths: Paths | None = None) -> Machine:
        from hutch.machines import control

        return Machine(control.get(name, _paths(paths)), paths)

    @property
    def running(self) -> bool:
        from hutch.machines import registry

        return registry.is_running(_paths(self._paths).state_dir, self.name)

    def shell(
        self,
        command: builtins.list[str] | None = None,
        *,
        user: str = "root",
        env: dict[str, str] | None = None,
    ) -> int:
        """Run COMMAND (default: a login shell) in the machine with our stdin/stdout/stderr; its status."""
        from hutch.machines import enter

        setenv = [f"{k}={v}" for k, v in (env or {}).items()]
        return enter.run(self.name, _paths(self._paths), user=user, command=command, setenv=setenv)

    def poweroff(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        from hutch.machines import control

        control.poweroff(self.name, _paths(self._paths))
        if wait:
            control.wait_stopped(self.name, _paths(self._paths), timeout)

    def reboot(self) -> None:
        from hutch.machines import control

        control.reboot(self.name, _paths(self._paths))

    def terminate(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        from hutch.machines import control

        control.terminate(self.name, _paths(self._paths))
        if wait:
            control.wait_stopped(self.name, _paths(self._paths), timeout)

    def kill(self, signal: int = 15, whom: str = "all") -> None:
        from hutch.machines import control

        control.kill(self.name, signal, whom, _paths(self._paths))

    def bind(
        self, src: str, dst: str | None = None, *, read_only: bool = False, mkdir: bool = False
    ) -> None:
        from hutch.machines import files

        files.bind(self.name, src, dst, _paths(self._paths), read_only=read_only, mkdir=mkdir)

    def copy_to(self, src: str, dst: str | None = None, *, force: bool = False) -> None:
        from hutch.machines import files

        files.copy_to(self.name, src, dst, _paths(self._paths), force=force)

    def copy_from(self, src: str, dst: str | None = None, *, force: bool = False) -> None:
        from hutch.machines import files

        files.copy_from(self.name, src, dst, _paths(self._paths), force=force)
