"""Drive a program through a pseudo-terminal, expect-style: the hands of the tests and the demo."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time


class PtySession:
    def __init__(
        self, argv: list[str], env: dict[str, str] | None = None, rows: int = 24, cols: int = 80
    ) -> None:
        import fcntl
        import struct
        import termios

        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.buffer = b""
        self.log = b""

    def send(self, text: str | bytes) -> None:
        os.write(self.master, text.encode() if isinstance(text, str) else text)

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            return False
        self.buffer += data
        self.log += data
        return True

    def expect(self, pattern: str, timeout: float = 30.0) -> str:
        """Wait until PATTERN appears; consume up to and including it; return what came before."""
        pat = pattern.encode()
        deadline = time.monotonic() + timeout
        while pat not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or (
                not self._read(min(left, 0.5)) and self.proc.poll() is not None and not self._read(0.1)
            ):
                raise TimeoutError(f"{pattern!r} not seen; console so far:\n{self.text()[-3000:]}")
        before, _, after = self.buffer.partition(pat)
        self.buffer = after
        return before.decode(errors="replace")

    def text(self) -> str:
        return self.log.decode(errors="replace").replace("\r", "")

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"process did not exit; console:\n{self.text()[-3000:]}")
            self._read(0.1)
        while self._read(0.05):
            pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)
