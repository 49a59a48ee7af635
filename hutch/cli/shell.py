"""`hutch shell`, on the path real clients take many times a task (Ansible's machinectl connection
makes nine calls per ping): its command line read without argparse, which with the modules it pulls in
(re, gettext, enum) costs ~13 ms a call. Anything this reader does not know (--help, an abbreviation,
a mistake) goes to the argparse definition in hutch.cli.machines, for the same help and errors."""

from __future__ import annotations


def shell(args: list[str]) -> int:
    uid: str | None = None
    setenv: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "--":
            i += 1
            break
        if a in ("-E", "--setenv", "--uid") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif a.startswith(("--setenv=", "--uid=")):
            value, i = a.partition("=")[2], i + 1
        elif a.startswith("-E") and len(a) > 2:
            value, i = a[2:], i + 1
        else:
            return _slow(args)
        if a.startswith("--uid"):
            uid = value
        else:
            setenv.append(value)
    if i >= len(args):
        return _slow(args)  # no machine: argparse says so, as before
    target, command = args[i], args[i + 1 :]
    from hutch.machines import control, enter
    from hutch.paths import Paths

    user, name = enter.split_target(target)
    if uid:
        user = uid
    if name in ("", ".host"):  # USER@ or USER@.host: the host itself, as machinectl's
        from hutch.machines import hostshell

        return hostshell.run(user, command or None, setenv)
    control.check_name(name)
    return enter.run(name, Paths.from_env(), user=user, command=command or None, setenv=setenv)


def _slow(args: list[str]) -> int:
    from hutch.cli import machines

    return machines.shell(args)
