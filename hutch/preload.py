"""A verb's modules loaded from one file, without the import system's search (~1 ms of each spawn).

The import system spends ~60 µs on each module it loads: it looks the module up along the package's
path, checks its source's time stamp, opens and reads the .pyc and sets the module up, mostly in
Python code of its own. spawn's path loads ~30 modules: ~2 ms of a container start that takes ~20.
`python -m hutch.preload` (setup.sh runs it) imports each verb's modules once, as the launcher
would, and writes their code, in the order they finished loading, to one file beside the .pyc
files, with each source's mtime and size. The launcher calls load() before it imports anything
else: one read, one stat per source, and each module is executed as the import system would have
(same spec, same attributes, each after the modules it imports). If anything is stale, missing or
unreadable, load() leaves everything to the import system.
"""

# No `from __future__ import annotations` here or in hutch/__init__.py: both load before the bundle,
# and that statement imports the __future__ module through the search this module exists to skip.
import gc
import marshal
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, ModuleType

# What each verb imports at once and on its way to work (the lazy imports inside functions too),
# for the default options. Options that need more (-n, --property, ...) import the rest the usual
# way. tests/root/test_spawn.py checks that a real run loads nothing of hutch's beyond this.
ENTRIES: dict[str, tuple[str, ...]] = {
    "spawn": (
        "hutch.cli",
        "hutch.cli.spawn",
        "hutch.settings.cmdline",
        "hutch.paths",
        "hutch.container.prepare",
        "hutch.images.osrelease",
        "hutch.container.systemd",
        "hutch.container.security",
        "hutch.linux.fsutil",
        "hutch.container.launch",
        "hutch.container.record",
        "hutch.machines.registry",
    ),
    # The verb real clients call most (Ansible's machinectl connection: nine times per ping).
    "shell": (
        "hutch.cli",
        "hutch.cli.shell",
        "hutch.machines.control",
        "hutch.machines.enter",
        "hutch.container.security",
        "hutch.container.payload",
        "hutch.jsonread",
        "hutch.linux.cgroups",
    ),
    # What scripts and clients poll: the table, one machine's state, a stop.
    # The registry's sweep of dead machines asks whether systemd runs the host (hutch.container.systemd).
    "list": (
        "hutch.cli",
        "hutch.cli.listing",
        "hutch.images.osrelease",
        "hutch.container.rootfs",
        "hutch.jsonread",
        "hutch.container.systemd",
        "hutch.linux.cgroups",
    ),
    "status": (
        "hutch.cli",
        "hutch.cli.status",
        "hutch.images.osrelease",
        "hutch.container.rootfs",
        "hutch.jsonread",
        "hutch.container.limits",
        "hutch.settings.values",
        "hutch.container.systemd",
        "hutch.linux.cgroups",
    ),
    "show": ("hutch.cli", "hutch.cli.status", "hutch.jsonread", "hutch.settings.values"),
    "poweroff": (
        "hutch.cli",
        "hutch.cli.stopping",
        "hutch.jsonread",
        "hutch.container.emulation",
        "hutch.settings.values",  # the machine's kill signal, by name
        "hutch.linux.sig",
    ),
    "kill": (
        "hutch.cli",
        "hutch.cli.stopping",
        "hutch.jsonread",
        "hutch.container.emulation",
        "hutch.settings.values",  # -s NAME
        "hutch.linux.sig",
    ),
}

# One entry: name, source path, whether it is a package, source mtime_ns, source size, code (None
# for an extension module: its path is what the entry saves).
Entry = tuple[str, str, bool, int, int, "CodeType | None"]

_bootstrap = sys.modules["_frozen_importlib"]
_external = sys.modules["_frozen_importlib_external"]


def bundle_path(verb: str, cache_dir: str | None = None) -> str:
    if cache_dir is None:
        cache_dir = __file__.rpartition("/")[0] + "/__pycache__"
    return f"{cache_dir}/preload-{verb}.{sys.implementation.cache_tag}.bin"


def _header() -> bytes:
    # The bytecode's magic number: another interpreter version must not execute this file's code.
    return b"hutch-preload\0" + bytes(_external.MAGIC_NUMBER)


def load(verb: str, cache_dir: str | None = None) -> int:
    """Execute VERB's modules from its bundle; returns how many (0: the import system does it all)."""
    if verb not in ENTRIES:
        return 0
    # The collector off first: unmarshalling and executing ~40 modules' code allocates enough tracked
    # objects to run it several times over them, none of them garbage (~1.5-3 ms of spawn's start
    # measured here). Every verb with a bundle is one hutch.cli leaves at once, with it off.
    gc.disable()
    try:
        # posix.read of the whole size, and a view past the header: open().read() and a slice would
        # each copy the ~300 KB again, into memory that costs a page fault per 4 KB.
        fd = posix.open(bundle_path(verb, cache_dir), posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            data = posix.read(fd, posix.fstat(fd).st_size)
        finally:
            posix.close(fd)
        head = _header()
        if not data.startswith(head):
            return 0
        entries: list[Entry] = marshal.loads(memoryview(data)[len(head) :])
        for _name, path, _pkg, mtime, size, _code in entries:
            st = posix.stat(path)
            if st.st_mtime_ns != mtime or st.st_size != size:
                return 0
    except (OSError, ValueError, EOFError, TypeError):
        return 0
    done = 0
    for name, path, is_pkg, _mtime, _size, code in entries:
        if name in sys.modules:
            continue
        try:
            if code is None:
                # An extension module: loaded from the file recorded, where the import system would
                # first list three directories of sys.path (the standard library's is ~200 names).
                spec = _external.spec_from_file_location(
                    name, path, loader=_external.ExtensionFileLoader(name, path)
                )
                _bootstrap._load(spec)
            else:
                _exec(name, path, is_pkg, code)
        except BaseException:
            # The import statement that needs it will try again, and report the failure where it
            # belongs. The modules already done are whole and stay.
            sys.modules.pop(name, None)
            return done
        done += 1
    return done


def _exec(name: str, path: str, is_pkg: bool, code: "CodeType") -> None:
    # The spec and module spec_from_file_location() and module_from_spec() would make for a source
    # file, made directly: their generality costs ~20 us a module, ~0.8 ms of spawn's 40.
    loader = _external.SourceFileLoader(name, path)
    spec = _bootstrap.ModuleSpec(name, loader, origin=path, is_package=is_pkg)
    spec.has_location = True
    directory, _, base = path.rpartition("/")
    if sys.pycache_prefix is None and not sys.flags.optimize:
        spec.cached = f"{directory}/__pycache__/{base[:-3]}.{sys.implementation.cache_tag}.pyc"
    module: ModuleType = type(sys)(name)
    module.__spec__ = spec
    module.__loader__ = loader
    module.__file__ = path
    module.__dict__["__cached__"] = spec.cached  # the spec computes it where the branch above did not
    if is_pkg:
        spec.submodule_search_locations = [directory]
        module.__path__ = spec.submodule_search_locations
        module.__package__ = name
    else:
        module.__package__ = name.rpartition(".")[0]
    sys.modules[name] = module
    exec(code, module.__dict__)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


_RECORD = """
import marshal, sys
from importlib.machinery import ExtensionFileLoader, SourceFileLoader
done = []
for cls in (SourceFileLoader, ExtensionFileLoader):
    def exec_module(self, module, real=cls.exec_module):
        real(self, module)
        done.append(module)
    cls.exec_module = exec_module
for name in sys.argv[1:]:
    __import__(name)
out = []
for m in done:
    path = m.__spec__.origin
    st = __import__("posix").stat(path)
    code = None if isinstance(m.__loader__, ExtensionFileLoader) else m.__loader__.get_code(m.__name__)
    out.append((m.__name__, path, m.__spec__.submodule_search_locations is not None, st.st_mtime_ns,
                st.st_size, code))
sys.stdout.buffer.write(marshal.dumps(out))
"""


def build(verb: str, cache_dir: str | None = None) -> str:
    """Write VERB's bundle; returns its path. The modules are imported in a fresh interpreter started
    as the launcher starts one, so that the same modules come from the same places."""
    import subprocess

    root = __file__.rpartition("/")[0].rpartition("/")[0]
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-X",
            "frozen_modules=on",
            "-c",
            f"import sys; sys.path.insert(0, {root!r}); exec({_RECORD!r})",
            *ENTRIES[verb],
        ],
        check=True,
        capture_output=True,
    ).stdout
    marshal.loads(out)  # a truncated answer fails here, not in load()
    path = bundle_path(verb, cache_dir)
    try:
        posix.mkdir(path.rpartition("/")[0], 0o755)
    except FileExistsError:
        pass
    tmp = f"{path}.{posix.getpid()}"
    with open(tmp, "wb") as f:
        f.write(_header() + out)
    posix.rename(tmp, path)
    return path


def refresh(verb: str) -> None:
    """Write VERB's bundle where it is missing or stale, for the next run: an installed wheel has none
    until its first run, and an upgrade makes it stale. Best effort: an installation this user cannot
    write to runs without one."""
    if verb not in ENTRIES or not posix.access(bundle_path(verb).rpartition("/")[0], posix.W_OK):
        return
    try:
        build(verb)
    except Exception:  # never the reason a command fails
        pass


def main() -> int:
    for verb in ENTRIES:
        print(f"preload: {build(verb)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
