"""bash and zsh completion (hutch.completion): verbs, spawn's options, running machines' and images'
names, completed by the real shells against a real machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import HUTCH, run
from hutch import completion

pytestmark = pytest.mark.usefixtures("private_net")


def _bash(script: Path, words: list[str]) -> list[str]:
    """What bash's completion function offers for WORDS, the last one being completed."""
    line = " ".join(f"'{w}'" for w in words)
    prog = f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _hutch; "
    prog += 'printf "%s\\n" "${COMPREPLY[@]}"'
    env = dict(os.environ, PATH=f"{Path(HUTCH).parent}:{os.environ['PATH']}")
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


def test_bash_completes_verbs_options_machines_and_images(busybox: Path, tmp_path: Path) -> None:
    script = tmp_path / "hutch.bash"
    script.write_text(completion.bash())
    assert _bash(script, ["hutch", "sta"]) == ["start", "status"]
    assert _bash(script, ["hutch", "spawn", "--kill-s"]) == ["--kill-signal="]
    assert "--ephemeral" in _bash(script, ["hutch", "spawn", "--e"])
    assert _bash(script, ["hutch", "clone", "b"]) == ["bb"]  # an image
    # Every verb's options, as its --help lists them; bootstrap's kinds.
    assert _bash(script, ["hutch", "list", "--max"]) == ["--max-addresses="]
    assert _bash(script, ["hutch", "poweroff", "--w"]) == ["--wait"]
    assert _bash(script, ["hutch", "import-tar", "--f"]) == ["--force"]
    assert _bash(script, ["hutch", "bootstrap", ""]) == ["busybox", "debian"]
    assert _bash(script, ["hutch", "shell", ""]) == []  # nothing running yet
    run("start", "bb", check=True)
    try:
        assert _bash(script, ["hutch", "shell", "b"]) == ["bb"]  # a running machine
    finally:
        run("poweroff", "--wait", "bb")


def _zsh(script: Path, words: list[str], prefix: str) -> list[str]:
    """What the zsh function offers for WORDS (the last being completed, PREFIX typed of it), with
    compadd and _files standing in for the completion system's builtins: they print what they get."""
    stubs = "compadd() { while [[ $1 == -* && $1 != -- ]]; do [[ $1 == -S ]] && shift; shift; done; "
    stubs += '[[ $1 == -- ]] && shift; print -l -- $@ | grep -- "^$PREFIX" }; _files() { print FILES }'
    quoted = " ".join(f"'{w}'" for w in words)
    # Sourcing runs the function once, as autoloading does: what it prints then is not the answer.
    prog = f"{stubs}; source {script} >/dev/null; words=({quoted}); CURRENT={len(words)}; "
    prog += f"PREFIX='{prefix}'; _hutch"
    env = dict(os.environ, PATH=f"{Path(HUTCH).parent}:{os.environ['PATH']}")
    r = subprocess.run(["zsh", "-f", "-c", prog], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode in (0, 1) and r.stderr == "", r.stderr
    return [w for w in r.stdout.splitlines() if w]


def test_zsh_completes_verbs_options_machines_and_images(busybox: Path, tmp_path: Path) -> None:
    script = tmp_path / "_hutch"
    script.write_text(completion.zsh())
    r = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert script.read_text().startswith("#compdef hutch\n")
    assert _zsh(script, ["hutch", "sta"], "sta") == ["start", "status"]
    assert _zsh(script, ["hutch", "spawn", "--kill-s"], "--kill-s") == ["--kill-signal="]
    assert _zsh(script, ["hutch", "list", "--max"], "--max") == ["--max-addresses="]
    assert _zsh(script, ["hutch", "bootstrap", ""], "") == ["busybox", "debian"]
    assert _zsh(script, ["hutch", "clone", "b"], "b") == ["bb"]
    assert _zsh(script, ["hutch", "spawn", "/"], "/") == ["FILES"]
