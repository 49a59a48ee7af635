"""hutch: systemd-nspawn and machinectl for any Linux host.

`hutch.Image` and `hutch.Machine` are the library (hutch/api.py), loaded on first use so that the
command line, which imports this package, pays nothing for them.
"""

__version__ = "0.1.0"
__all__ = ["Image", "Machine", "__version__"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hutch.api import Image, Machine


def __getattr__(name: str) -> object:
    if name in ("Image", "Machine"):
        from hutch import api

        return getattr(api, name)
    raise AttributeError(f"module 'hutch' has no attribute {name!r}")
