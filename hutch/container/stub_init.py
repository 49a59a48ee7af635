"""--as-pid2: a minimal PID 1 that starts the payload as PID 2, forwards signals to it and reaps orphans.

Most programs do not expect to be PID 1: the kernel ignores signals PID 1 has no handler for, and
orphaned children would pile up as zombies without someone calling wait().
"""

from __future__ import annotations

from hutch.linux import posixos as os
from hutch.linux import sig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SIGRTMIN = 34
EXIT_EXCEPTION = 255
# Signals that ask the whole container to stop become SIGTERM for the payload (as nspawn's stub does).
_STOP = (sig.SIGTERM, sig.SIGINT, SIGRTMIN + 3, SIGRTMIN + 4, SIGRTMIN + 5, sig.SIGPWR)
_FORWARD = (sig.SIGHUP, sig.SIGQUIT, sig.SIGUSR1, sig.SIGUSR2, sig.SIGWINCH, sig.SIGCONT)


def run(child_main: Callable[[], None]) -> int:
    """Fork; the child calls CHILD_MAIN (which execs). Returns the payload's exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            child_main()
        finally:
            os._exit(EXIT_EXCEPTION)

    def forward(signo: int, _frame: object) -> None:
        try:
            os.kill(pid, sig.SIGTERM if signo in _STOP else signo)
        except ProcessLookupError:
            pass

    for s in _STOP + _FORWARD:
        sig.signal(s, forward)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return EXIT_EXCEPTION
        if wpid != pid:
            continue  # an orphan reparented to us: reaped, nothing more
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        return EXIT_EXCEPTION
