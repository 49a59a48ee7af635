"""The man pages say what the program does: written from the texts --help prints and the parsers' own
tables (hutch.manpages), they must name every verb, every option spawn accepts and every settings key
the .nspawn parser reads, and render with groff without a warning."""

from __future__ import annotations

import re
import subprocess

import pytest

from hutch import manpages


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("man")
    assert manpages.main([str(d)]) == 0
    return {rel: (d / rel).read_text() for rel in manpages.PAGES}


def _rendered(text: str) -> str:
    r = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P-cbou"], input=text, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout.replace("\u2010", "-")  # groff's hyphen


def test_every_page_renders_without_a_warning(pages: dict[str, str]) -> None:
    for rel, text in pages.items():
        out = _rendered(text)
        assert out.count("\n") > 40, rel


def test_hutch_1_names_every_verb(pages: dict[str, str]) -> None:
    from hutch.cli import VERBS

    text = pages["man1/hutch.1"].replace("\\-", "-")
    aliases = {"stop", "restart"}  # machinectl's other names for poweroff and reboot
    missing = [v for v in VERBS if v not in aliases and f"\\fB{v}" not in text and f"|{v} " not in text]
    assert missing == [], missing


def test_hutch_spawn_1_names_every_option(pages: dict[str, str]) -> None:
    from hutch.settings.cmdline import LONG

    text = pages["man1/hutch-spawn.1"].replace("\\-", "-")
    internal = {"userns-pick"}  # -U's handler, no option of its own
    missing = [o for o in LONG if o not in internal and f"--{o}" not in text]
    assert missing == [], missing


def test_hutch_nspawn_5_names_every_key(pages: dict[str, str]) -> None:
    from hutch.settings.nspawnfile import KEYS, LIMITS

    text = pages["man5/hutch.nspawn.5"]
    missing = [k for k in (*KEYS, *(f"Limit{x}" for x in LIMITS)) if f"{k}=" not in text]
    assert missing == [], missing
    assert "As \\fB\\-\\-boot\\fR: Boot the OS tree" in text  # the option's own help, continued lines too


def test_hutch_1_has_every_verbs_options_as_its_help_prints_them(pages: dict[str, str]) -> None:
    from hutch.cli import options

    text = pages["man1/hutch.1"]
    parsers = manpages.verb_parsers()
    assert len(parsers) > 40  # every verb, bootstrap's kinds too
    for p in parsers:
        assert f'.SS "{manpages._esc(p.usage)}"' in text, p.usage
        for _, entries in options.help_entries(p):
            for tag, _ in entries:
                if tag != "-h --help" and not p._subparsers:
                    assert f"\\fB{manpages._esc(tag.strip())}\\fR" in text, (p.usage, tag)


def test_every_verbs_help_is_in_one_style() -> None:
    """hutch --help and each verb's: synopsis first, then what it does, then "-q --quiet" entries in
    one column, capitalised, in 100 columns; never argparse's own layout."""
    from conftest import HUTCH
    from hutch.cli import VERBS

    for verb in ["", *VERBS]:
        r = subprocess.run([HUTCH, *([verb] if verb else []), "--help"], capture_output=True, text=True)
        out = r.stdout
        assert r.returncode == 0 and r.stderr == "", (verb, r.stderr)
        first = out.splitlines()[0]
        aliases = {"stop": "poweroff", "restart": "reboot"}  # machinectl's other names
        assert first.startswith(f"hutch {aliases.get(verb, verb) or 'VERB'}"), (verb, first)
        assert "usage:" not in out and "positional arguments" not in out, (verb, out)
        assert all(len(ln) <= 100 for ln in out.splitlines()), verb
        entries = [ln for ln in out.splitlines() if ln.startswith(("  -", "     --"))]
        assert entries, verb
        for ln in entries:
            text = (re.split(r" {2,}", ln.strip(), maxsplit=1) + [""])[1]
            assert not text or text[0].isupper() or text[0] in "-(.'$", (verb, ln)
