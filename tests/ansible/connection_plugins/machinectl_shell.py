"""A minimal Ansible connection plugin into a machine, as the ones in the wild are written: every command
through `machinectl shell`, files through `machinectl copy-to` and `copy-from`, nothing else. It knows
nothing of hutch: it is how a client of the real machinectl talks to it."""

from __future__ import annotations

import subprocess

from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: machinectl_shell
short_description: run tasks in a machine through machinectl shell, copy-to and copy-from
description: [run tasks in a machine through machinectl shell, copy-to and copy-from]
options:
  remote_addr:
    description: the machine's name
    default: inventory_hostname
    vars: [{name: inventory_hostname}, {name: ansible_host}]
"""


class Connection(ConnectionBase):
    transport = "machinectl_shell"
    has_pipelining = False

    def _connect(self) -> Connection:
        self._connected = True
        return self

    @property
    def machine(self) -> str:
        return str(self.get_option("remote_addr"))

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = ["machinectl", "-q", "shell", self.machine, "/bin/sh", "-c", cmd]
        p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if in_data else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = p.communicate(in_data)
        return p.returncode, out, err

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        subprocess.run(["machinectl", "copy-to", "--force", self.machine, in_path, out_path], check=True)

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        subprocess.run(["machinectl", "copy-from", "--force", self.machine, in_path, out_path], check=True)

    def close(self) -> None:
        self._connected = False
