"""The slim supervisor of a machine started with `hutch start`, once it is up.

A detached supervisor spends the machine's whole life in one poll loop: copy the console to the log,
pass SIGTERM/SIGINT/SIGHUP on to PID 1, read the notify socket, answer the machine's DHCP requests
(hutch.container.dhcp, loaded at the first), reap children. Everything it imported
to build the container (~3 MiB of code and data) would stay resident for that loop, so the full
supervisor exec()s into this module instead (see hutch.container.handoff): same PID, same
children, same descriptors (the registry lock among them), and a fresh interpreter that loads nothing
of hutch but this file. When PID 1 is gone it exec()s back into the full supervisor, which reads its
pickled state from a memfd and carries on: reboot, or tear down and exit.

Imports: the standard library's built-in modules only, and `_ctypes` for prctl and madvise; a test
(tests/unit/test_lint.py) keeps it so.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found,unused-ignore]
import marshal
import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGCHLD = 1, 2, 9, 15, 17
FORWARDED = (SIGTERM, SIGINT, SIGHUP)
HANDLED = (*FORWARDED, SIGCHLD)
PR_SET_DUMPABLE = 4
MADV_DONTNEED = 4

# How the full supervisor runs this module, and how this module runs it again: a fresh interpreter
# with the flags of hutch's launcher and the same sys.path, given one argument, a dict in marshal's
# format (`json` would import `re`: ~0.5 MiB more for the machine's whole life).
_LOAD = "import sys,marshal;a=marshal.loads(bytes.fromhex(sys.argv[1]));sys.path[:0]=a['path'];"
MONITOR_CODE = _LOAD + "from hutch.container import monitor;monitor.main(a)"
RESUME_CODE = _LOAD + "from hutch.container import handoff;handoff.resume(a)"


def interpreter_argv(code: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", "-S", "-X", "frozen_modules=on", "-c", code, marshal.dumps(args).hex()]


def _libc() -> dict[str, Any]:
    """prctl and madvise, called through `_ctypes` as hutch.linux.libc does; that module's other
    hundred wrappers would cost this process ~0.4 MiB."""
    import _ctypes

    class c_int(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "i"

    class Libc:
        _handle = _ctypes.dlopen("libc.so.6", os.RTLD_NOW)

    class Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = c_int

    class c_ulong(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "L"

    def call(name: str) -> Any:
        f = Func((name, Libc))  # type: ignore[arg-type]
        return lambda *args: int(f(*(c_ulong(x) for x in args)))

    return {"prctl": call("prctl"), "madvise": call("madvise")}


def name_self() -> None:
    """`hutch`, as the launcher's process was called, for ps -C and top, rather than `python`."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write("hutch")
    except OSError:
        pass


def release_clean_pages(madvise: Any) -> None:
    """Drop our page-table entries for clean file pages: the interpreter's and libraries' code and
    read-only data. The loop faults back the few it runs from the page cache, as the kernel's own
    reclaim would make it do. Mappings holding private copies (relocated data: smaps' Anonymous)
    keep them, since dropping those would lose the relocations."""
    try:
        with open("/proc/self/smaps") as f:
            smaps = f.read().splitlines()
    except OSError:
        return
    drop: list[tuple[int, int]] = []
    span: tuple[int, int] | None = None
    for line in smaps:
        head = line.split(" ", 1)[0]
        if "-" in head and line[:1] in "0123456789abcdef":
            parts = line.split()
            span = None
            if len(parts) >= 6 and parts[5].startswith("/") and "w" not in parts[1]:
                start, end = (int(x, 16) for x in head.split("-"))
                span = (start, end)
        elif span is not None and line.startswith("Anonymous:"):
            if line.split()[1] == "0":
                drop.append(span)
            span = None
    for start, end in drop:
        madvise(start, end - start, MADV_DONTNEED)  # refused for special mappings: fine


class Monitor:
    def __init__(self, a: dict[str, Any]) -> None:
        self.a = a
        self.pid1: int = a["pid1"]
        self.master: int = a["master"]
        self.notify: int = a["notify"]
        self.kill_signal: int = a["kill_signal"]
        self.kill_sent: bool = a["kill_sent"]
        self.log_path: str = a["log"]["path"]
        self.log_fd: int = a["log"]["fd"]
        self.log_cap: int = a["log"]["cap"]
        self.log_size: int = a["log"]["size"]
        self.status: int | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # The DHCP server's socket and lease (hutch.container.dhcp), made into objects at the first
        # request: until a guest asks, its module and _socket need not be loaded.
        self.dhcp_args: dict[str, Any] | None = a.get("dhcp")
        self.dhcp: Any = None
        # The DNS forwarder's sockets (hutch.container.dns), made into one at the first query.
        self.dns_args: dict[str, Any] | None = a.get("dns")
        self.dns: Any = None
        # IPv6 router advertisements and DHCPv6 (hutch.container.dhcp6), likewise.
        self.router6_args: dict[str, Any] | None = a.get("router6")
        self.router6: Any = None
        self.pending: list[int] = []

    def _on_signal(self, signo: int, _frame: object) -> None:
        self.pending.append(signo)

    def _log(self, data: bytes) -> None:
        if self.log_size + len(data) > self.log_cap and self.log_size:
            os.close(self.log_fd)
            os.replace(self.log_path, self.log_path + ".1")
            self.log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self.log_size = 0
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.log_fd, view)
            except OSError:
                return  # a full disk loses console output, never the machine
            view = view[n:]
        self.log_size += len(data)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid1:
                self.status = status

    def _dhcp(self) -> None:
        from hutch.container import dhcp

        if self.dhcp is None:
            import _socket

            d = self.dhcp_args
            assert d is not None
            lease = dhcp.Lease(d["mac"], d["address"], d["server"], d["prefix"], d["dns"])
            self.dhcp = (_socket.socket(fileno=d["fd"]), lease)
        dhcp.answer(*self.dhcp)

    def _dns(self, fd: int) -> None:
        from hutch.container import dns

        d = self.dns_args
        assert d is not None
        if self.dns is None:
            import _socket

            listen, upstream = (_socket.socket(fileno=d[k]) for k in ("listen", "upstream"))
            self.dns = dns.Forwarder(listen, upstream, d["servers"], d["state_dir"])
        (dns.on_query if fd == d["listen"] else dns.on_answer)(self.dns)

    def _router6(self, fd: int) -> None:
        from hutch.container import dhcp6

        d = self.router6_args
        assert d is not None
        if self.router6 is None:
            import _socket

            ra, sock6 = (_socket.socket(fileno=d[k]) for k in ("ra", "dhcp"))
            self.router6 = dhcp6.Router(ra, sock6, d["ifindex"], d["address"], d["mac"], d["duid"])
        (dhcp6.on_ra_sock if fd == d["ra"] else dhcp6.on_dhcp_sock)(self.router6)

    def _signals(self) -> None:
        try:
            while os.read(self.wake_r, 256):
                pass
        except BlockingIOError:
            pass
        pending, self.pending = self.pending, []
        for signo in pending:
            if signo == SIGCHLD:
                self._reap()
            elif signo in FORWARDED and self.status is None:
                first = not self.kill_sent and self.kill_signal != SIGKILL
                try:
                    signo = self.kill_signal if first else SIGKILL
                    if signo >= 32:  # as PID 1 knows it (hutch.container.emulation)
                        from hutch.container import emulation

                        signo = emulation.host_signal(self.pid1, signo)
                    os.kill(self.pid1, signo)
                except ProcessLookupError:
                    pass
                self.kill_sent = True

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.master >= 0:
            poller.register(self.master, select.POLLIN)
        if self.notify >= 0:
            poller.register(self.notify, select.POLLIN)
        dhcp_fd = self.dhcp_args["fd"] if self.dhcp_args else -1
        if dhcp_fd >= 0:
            poller.register(dhcp_fd, select.POLLIN)
        dns_fds = (self.dns_args["listen"], self.dns_args["upstream"]) if self.dns_args else ()
        for fd in dns_fds:
            poller.register(fd, select.POLLIN)
        r6_fds = (self.router6_args["ra"], self.router6_args["dhcp"]) if self.router6_args else ()
        for fd in r6_fds:
            poller.register(fd, select.POLLIN)
        self._reap()
        while self.status is None:
            for fd, _ev in poller.poll():
                if fd == self.wake_r:
                    self._signals()
                elif fd == self.master:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:
                        data = b""
                    if data:
                        self._log(data)
                    else:
                        poller.unregister(self.master)
                elif fd == dhcp_fd:
                    self._dhcp()
                elif fd in dns_fds:
                    self._dns(fd)
                elif fd in r6_fds:
                    self._router6(fd)
                elif fd == self.notify:
                    try:
                        os.read(self.notify, 4096)  # STATUS=, WATCHDOG=1 ...: nothing to act on
                    except OSError:
                        pass
        if self.master >= 0:
            os.set_blocking(self.master, False)
            while True:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    break
                if not data:
                    break
                self._log(data)


def main(a: dict[str, Any]) -> None:
    libc = _libc()
    # exec() made us dumpable again: no ptrace or /proc/PID/mem for anyone but the host's root.
    libc["prctl"](PR_SET_DUMPABLE, 0, 0, 0, 0)
    name_self()
    m = Monitor(a)
    _signal.set_wakeup_fd(m.wake_w, warn_on_full_buffer=False)
    for signo in HANDLED:
        _signal.signal(signo, m._on_signal)
    # The full supervisor blocked these before exec(); any that came meanwhile arrive now.
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, HANDLED)
    try:
        release_clean_pages(libc["madvise"])
    except OSError:
        pass  # an optimisation only
    try:
        m.run()
    except BaseException:
        # Never leave PID 1 without a supervisor that can tear it down.
        try:
            os.kill(m.pid1, SIGKILL)
            m.status = os.waitpid(m.pid1, 0)[1]
        except OSError:
            m.status = SIGKILL
    _signal.pthread_sigmask(_signal.SIG_BLOCK, HANDLED)
    back = dict(
        a["resume"],
        status=m.status,
        kill_sent=m.kill_sent,
        log_fd=m.log_fd,
        log_size=m.log_size,
        path=a["path"],
    )
    argv = interpreter_argv(RESUME_CODE, back)
    os.execv(argv[0], argv)
