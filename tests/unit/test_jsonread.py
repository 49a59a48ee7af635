"""hutch.jsonread.loads reads what json.loads reads, and refuses what it refuses, without importing
json (the registry's readers take it on every shell, list and status)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from hutch import jsonread

GOOD = [
    '{"name":"bb","leader":12,"addresses":["10.0.0.2","fd00::2"],"boot":true,"cgroup":null}',
    ' {"a": {"b": [1, 2.5, -3e2, 1E-2]}, "c": "\\u00e9\\n\\"x\\"", "d": false}\n',
    "[]", "{}", '"\\ud83d\\ude00"', "0", "-0.0", "1e400", "NaN", "[Infinity, -Infinity]", '"é"',
]  # fmt: skip
BAD = ["", " ", "{", '{"a":1,}', "[1 2]", "{} {}", "tru", "'x'", '{"a":1}x', "[01]", '"\\x"', "\x00"]


@pytest.mark.parametrize("text", GOOD)
def test_as_json_reads_it(text: str) -> None:
    got, want = jsonread.loads(text), json.loads(text)
    assert repr(got) == repr(want)  # NaN != NaN; its repr is the same


@pytest.mark.parametrize("text", BAD)
def test_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError) as want:
        json.loads(text)
    # In a fresh interpreter: the scanner's own errors need json.decoder loaded, which it is not.
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from hutch import jsonread\n"
    code += f"try: jsonread.loads({text!r})\nexcept ValueError as e: print(type(e).__name__, e)"
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == f"{type(want.value).__name__} {want.value}"


def test_no_json_import() -> None:
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from hutch import jsonread; "
    code += "jsonread.loads('{\"a\": [1]}'); print(sorted({'json', 're', 'enum'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
