"""`shell USER@.host` (and `USER@`, an empty machine name): a command on the host itself as USER, with a
login environment, as machinectl runs one through a transient unit of the host's service manager.

Ansible's community.general.machinectl become plugin is this verb's best-known client: it runs
`machinectl -q shell USER@ /bin/sh -c '...'` on the managed host. The command runs in the caller's
terminal (or pipes) directly; its exit status is the verb's.
"""

from __future__ import annotations

import os
import signal

from hutch.errors import MachineError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(user: str | None, command: list[str] | None, setenv: list[str]) -> int:
    import pwd

    who = user or "root"
    try:
        pw = pwd.getpwuid(int(who)) if who.isdigit() else pwd.getpwnam(who)
    except (KeyError, ValueError):
        raise MachineError(
            f"No user '{who}' on the host.", "name a user in the host's /etc/passwd"
        ) from None
    shell = pw.pw_shell or "/bin/sh"
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": pw.pw_dir or "/",
        "USER": pw.pw_name,
        "LOGNAME": pw.pw_name,
        "SHELL": shell,
        "TERM": os.environ.get("TERM", "dumb"),
    }
    for kv in setenv:
        k, _, v = kv.partition("=")
        env[k] = v
    # No command: the user's login shell, as a login shell (argv[0] with a leading '-').
    argv = command or [shell]
    arg0 = argv[0] if command else "-" + os.path.basename(shell)
    pid = os.fork()
    if pid == 0:
        try:
            os.initgroups(pw.pw_name, pw.pw_gid)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            try:
                os.chdir(pw.pw_dir)
            except OSError:
                os.chdir("/")
            os.execvpe(argv[0], [arg0, *argv[1:]], env)
        except OSError as e:
            os.write(2, f"hutch shell: Failed to run {argv[0]} as {pw.pw_name}: {e.strerror}\n".encode())
            os._exit(127 if e.errno == 2 else 126)
        os._exit(127)
    # The terminal's ^C and ^\\ are the command's: this process only waits for it.
    old = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)]
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGQUIT, old[1])
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
