"""Locating the image a container runs on: -i's disk image, -D's tree (made from --template's
if missing), -M's image in the image path, or the working directory; locked beside itself as nspawn's
image_path_lock() locks it; and an OCI image's own process when no command is given."""

from __future__ import annotations

from hutch.errors import ImageError
from hutch.linux import posixos as os
from hutch.linux.fsutil import release_lock_file, take_lock_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hutch.paths import Paths
    from hutch.settings.model import Settings


def find_image(name: str, paths: Paths) -> str | None:
    """NAME's image in the search path: a directory NAME, or a disk image NAME.raw, as machined finds
    them (the first directory of the path that has either wins)."""
    for d in paths.image_path:
        p = os.path.join(d, name)
        if os.path.isdir(p):
            return p
        if os.path.isfile(p + ".raw"):
            return p + ".raw"
    return None


def resolve_image(s: Settings, paths: Paths) -> str:
    if s.image:
        if not os.path.lexists(s.image):
            raise ImageError(f"Image {s.image} doesn't exist.", "-i takes a disk or file-system image file")
        if os.path.isdir(s.image):
            raise ImageError(f"{s.image} is a directory.", "use -D for a directory tree")
        if not os.path.isfile(s.image):
            raise ImageError(
                f"{s.image} is not a regular file.", "-i takes a disk or file-system image file"
            )
        return os.path.realpath(s.image)
    if s.directory:
        d = s.directory
        if not os.path.lexists(d):
            if s.template:
                _instantiate_template(s.template, d)
            else:
                raise ImageError(
                    f"Directory {d} doesn't exist.", "create it, or pass --template=DIR to copy one"
                )
        if not os.path.isdir(d):
            raise ImageError(f"{d} is not a directory.", "-D needs an OS tree directory")
        return os.path.realpath(d)
    if s.machine:
        found = find_image(s.machine, paths)
        if found is None:
            raise ImageError(
                f"No image for machine '{s.machine}' in {':'.join(paths.image_path)}.",
                f"bootstrap one with 'hutch bootstrap busybox {s.machine}', or pass -D DIR",
            )
        return os.path.realpath(found)
    cwd = os.getcwd()
    if cwd == "/" and not s.ephemeral and s.volatile in ("no", "overlay"):
        raise ImageError(
            "Spawning container on root directory is not supported.",
            "consider --ephemeral, --volatile=yes or --volatile=state",
        )
    return cwd


def oci_process(s: Settings, image: str) -> None:
    """An image imported from an OCI archive, run with no command, runs its own: Entrypoint and Cmd,
    with its Env, in its WorkingDir, as its User (each unless the command line or .nspawn file says)."""
    from hutch.images import records

    payload = records.read(image, os.stat(image).st_ino, "oci")
    if payload is None:
        return
    from hutch.images import oci

    proc = oci.parse_record(payload)
    s.command = proc["entrypoint"] + proc["cmd"]
    s.setenv = [*proc["env"], *s.setenv]
    if not s.chdir and proc["workdir"]:
        s.chdir = proc["workdir"]
    user = proc["user"].partition(":")[0]
    if not s.user and user not in ("", "root", "0"):
        s.user = user


def _instantiate_template(template: str, target: str) -> None:
    import subprocess

    if not os.path.isdir(template):
        raise ImageError(f"Template {template} is not a directory.")
    parent = os.path.dirname(target) or "."
    tmp = os.path.join(parent, f".#{os.path.basename(target)}.template-{os.urandom(4).hex()}")
    # Build under a hidden name and rename: an interrupted copy never looks like an image.
    r = subprocess.run(["cp", "-a", "--reflink=auto", "--", template, tmp], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", tmp])
        raise ImageError(f"Failed to copy template {template} to {target}: {r.stderr.strip()}")
    os.rename(tmp, target)


def lock_image(image: str, exclusive: bool) -> int:
    """A lock file next to the image, as nspawn's image_path_lock(): shared for read-only use."""
    path = image_lock_path(image)
    try:
        return take_lock_file(path, exclusive)
    except BlockingIOError:
        # A writer holds it (a started machine, say): --read-only and --ephemeral cannot share that.
        try:
            release_lock_file(path, take_lock_file(path, exclusive=False))
            hint = "another container runs on it read-only; use --ephemeral or --read-only to share it"
        except BlockingIOError:
            hint = "a container runs on it; stop it first (see 'hutch list')"
        raise ImageError(f"Directory tree {image} is currently busy.", hint) from None
    except OSError:
        return -1  # a read-only image location: nothing can write it either


def image_lock_path(image: str) -> str:
    parent, base = os.path.split(image)
    return os.path.join(parent, f".#{base}.lck")
