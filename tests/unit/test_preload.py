"""hutch.preload: a verb's modules from one file must come out as the import system makes them, and
anything wrong with the file must leave the work to the import system."""

from __future__ import annotations

import json
import marshal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LATE_IMPORT_HOOK
from hutch import preload

REPO = Path(__file__).resolve().parents[2]

# Imports the verb's entries after load() in a fresh interpreter started as the launcher starts one,
# and reports what load() did, what the import system still loaded, and each module's attributes.
PROBE = """
import json, sys
sys.path.insert(0, REPO)
from hutch import preload
n = preload.load("spawn", CACHE)
HOOK
for name in preload.ENTRIES["spawn"]:
    __import__(name)
mods = {}
for name in sorted(m for m in sys.modules if m.startswith("hutch")):
    m = sys.modules[name]
    parent, _, child = name.rpartition(".")
    mods[name] = {
        "file": m.__file__, "cached": m.__cached__, "package": m.__package__,
        "path": getattr(m, "__path__", None), "spec": [m.__spec__.name, m.__spec__.origin],
        "loader": type(m.__loader__).__name__,
        "in_parent": not parent or getattr(sys.modules[parent], child, None) is m,
    }
print(json.dumps({"n": n, "late": late, "mods": mods}))
"""


def _probe(cache: Path | None) -> dict[str, object]:
    where = str(cache) if cache else "/nonexistent"
    code = PROBE.replace("REPO", repr(str(REPO))).replace("CACHE", repr(where))
    code = code.replace("HOOK\n", LATE_IMPORT_HOOK)
    r = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "frozen_modules=on", "-c", code], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout)
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("preload")
    preload.build("spawn", str(cache))
    return cache


def _entries(cache: Path) -> list[list[object]]:
    data = Path(preload.bundle_path("spawn", str(cache))).read_bytes()
    return [list(e) for e in marshal.loads(data[len(preload._header()) :])]


def _rewrite(cache: Path, entries: list[list[object]]) -> None:
    path = Path(preload.bundle_path("spawn", str(cache)))
    path.write_bytes(preload._header() + marshal.dumps([tuple(e) for e in entries]))


def test_modules_come_out_as_the_import_system_makes_them(bundle: Path) -> None:
    with_bundle, without = _probe(bundle), _probe(None)
    assert without["n"] == 0
    assert with_bundle["late"] == [], "the import system still loaded these"
    # hutch and hutch.preload were imported to call load(); the rest, __future__ too, came from it.
    assert with_bundle["n"] == len(_entries(bundle)) - 1  # hutch itself was already there
    assert with_bundle["mods"] == without["mods"]
    names = {e[0] for e in _entries(bundle)}
    assert {"hutch.container.launch", "hutch.container.prepare", "hutch.linux.libc"} <= names


@pytest.mark.parametrize("damage", ["stale", "truncated", "header", "missing"])
def test_anything_wrong_leaves_it_to_the_import_system(bundle: Path, tmp_path: Path, damage: str) -> None:
    entries = _entries(bundle)
    cache = tmp_path / "c"
    cache.mkdir()
    _rewrite(cache, entries)
    path = Path(preload.bundle_path("spawn", str(cache)))
    if damage == "stale":
        entries[len(entries) // 2][3] = int(entries[len(entries) // 2][3]) + 1  # type: ignore[call-overload]
        _rewrite(cache, entries)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "header":
        path.write_bytes(b"x" + path.read_bytes()[1:])
    else:
        path.unlink()
    out = _probe(cache)
    assert out["n"] == 0 and out["mods"] == _probe(None)["mods"]
    assert preload.load("no-such-verb", str(cache)) == 0


def test_a_module_that_fails_is_left_to_its_import_statement(bundle: Path, tmp_path: Path) -> None:
    entries = _entries(bundle)
    i = next(i for i, e in enumerate(entries) if e[0] == "hutch.container.launch")
    entries[i][5] = compile("raise RuntimeError('boom')", "x", "exec")
    cache = tmp_path / "c"
    cache.mkdir()
    _rewrite(cache, entries)
    out = _probe(cache)
    # Everything before launch came from the bundle; launch and the rest, from their sources, whole.
    late = out["late"]
    assert isinstance(late, list)
    assert sorted(map(str, late)) == sorted(str(e[0]) for e in entries[i:])
    assert out["mods"] == _probe(None)["mods"]
