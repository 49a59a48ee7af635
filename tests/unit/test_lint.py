"""The linters are tests: a type error or a lint finding fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_strict() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "hutch"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "hutch", "tests", "bench", "demo", "packaging"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


HEAVY = ("argparse", "re", "json", "enum", "dataclasses", "typing", "socket", "subprocess", "ipaddress")


def _fresh(code: str) -> str:
    """Run CODE in a fresh interpreter started as hutch's launcher starts it; its output."""
    r = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_spawn_start_path_imports_stay_small() -> None:
    """The spawn path, -n's included, must not import argparse, re, json, enum, dataclasses, typing,
    socket or ipaddress (~2-10 ms each)."""
    out = _fresh(
        "import sys; sys.argv=['hutch','spawn','--help']; import hutch.cli.spawn, hutch.container.launch, "
        "hutch.container.prepare, hutch.container.network, hutch.container.dhcp, hutch.linux.rtnl; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out == "", f"start-up path imports heavy modules: {out}"


def test_spawn_start_path_does_without_os() -> None:
    """os costs ~1.2 ms to import (see hutch.linux.posixos): nothing on spawn's path may load it,
    -n's modules and those of --property, --bind and --as-pid2 included."""
    out = _fresh(
        "import sys; import hutch.cli, hutch.cli.spawn, hutch.container.launch, hutch.container.prepare, "
        "hutch.container.network, hutch.container.dhcp, hutch.container.ports, hutch.linux.rtnl, "
        "hutch.container.limits, hutch.container.custom_mounts, hutch.container.stub_init, "
        "hutch.container.security, hutch.linux.fsutil, hutch.container.record, hutch.machines.registry; "
        "print(','.join(m for m in ('os', 'posixpath', '_collections_abc') if m in sys.modules))"
    )
    assert out == "", f"spawn's path imports {out}"


def test_slim_monitor_loads_nothing_else_of_hutch() -> None:
    """The monitor that supervises a started machine for its whole life imports one module of hutch's
    and no heavy library: what it loads stays resident (see hutch.container.monitor)."""
    out = _fresh(
        "import sys; before=set(sys.modules); import hutch.container.monitor; "
        "new=sorted(m for m in set(sys.modules)-before if m.startswith('hutch') or m in "
        f"{(*HEAVY, 'pickle', 'ctypes')!r}); print(','.join(new))"
    )
    assert out == "hutch,hutch.container,hutch.container.monitor"
