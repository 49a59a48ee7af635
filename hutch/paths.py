"""Where hutch keeps things; every path is overridable by environment (tests point them at temp dirs).

A plain class rather than a dataclass: `dataclasses` imports `re` and `inspect` (~10 ms), which the
start-up path cannot afford.
"""

from __future__ import annotations

from hutch.linux import posixos as os

DEFAULT_IMAGE_PATH = (
    "/var/lib/machines:/etc/machines:/run/machines:/usr/local/lib/machines:/usr/lib/machines"
)
DEFAULT_SETTINGS_PATH = "/etc/systemd/nspawn:/run/systemd/nspawn"
# importctl's image classes other than machine: (environment override, systemd's directory).
CLASS_DIRS = {
    "confext": ("HUTCH_CONFEXT_PATH", "/var/lib/confexts"),
    "sysext": ("HUTCH_SYSEXT_PATH", "/var/lib/extensions"),
    "portable": ("HUTCH_PORTABLE_PATH", "/var/lib/portables"),
}
IMAGE_CLASSES = ("machine", *CLASS_DIRS)


class Paths:
    __slots__ = (
        "cache_dir",
        "config_dir",
        "image_class",
        "image_path",
        "journal_dir",
        "log_dir",
        "settings_path",
        "state_dir",
    )

    def __init__(
        self,
        image_path: tuple[str, ...],
        settings_path: tuple[str, ...],
        state_dir: str,
        log_dir: str,
        cache_dir: str,
        config_dir: str = "/etc/hutch",
        journal_dir: str = "/var/log/journal",
    ) -> None:
        self.image_path = image_path
        self.settings_path = settings_path
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.cache_dir = cache_dir
        self.config_dir = config_dir
        self.journal_dir = journal_dir  # the host's journals, where --link-journal links a machine's
        self.image_class = "machine"  # importctl's --class: what the images along image_path are

    @property
    def image_dir(self) -> str:
        """The first image directory: the one that receives new images."""
        if not self.image_path:
            from hutch.errors import SettingsError

            raise SettingsError(
                "$HUTCH_IMAGE_PATH names no directory.", "set it to DIR[:DIR...], or unset it"
            )
        return self.image_path[0]

    def settings_files(self, name: str, image_dirs: tuple[str, ...] | None = None) -> list[tuple[str, bool]]:
        """Where NAME.nspawn may be, in the order systemd-nspawn looks, each with whether it is
        trusted: the settings directories, then next to the image (IMAGE_DIRS: where it is; by
        default every image directory)."""
        out = [(os.path.join(d, f"{name}.nspawn"), True) for d in self.settings_path]
        dirs = self.image_path if image_dirs is None else image_dirs
        return out + [(os.path.join(d, f"{name}.nspawn"), False) for d in dirs]

    def for_class(self, image_class: str) -> Paths:
        """These paths for importctl's --class: machine images stay where they are; confexts, sysexts
        and portable services get their own directory ($HUTCH_CONFEXT_PATH, $HUTCH_SYSEXT_PATH,
        $HUTCH_PORTABLE_PATH; by default where systemd keeps them)."""
        if image_class == "machine":
            return self
        env, default = CLASS_DIRS[image_class]
        other = Paths(
            (os.getenv(env) or default,),
            self.settings_path,
            self.state_dir,
            self.log_dir,
            self.cache_dir,
            self.config_dir,
            self.journal_dir,
        )
        other.image_class = image_class
        return other

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Paths:
        get = os.getenv if env is None else env.get

        def split(value: str) -> tuple[str, ...]:
            return tuple(p for p in value.split(":") if p)

        return cls(
            image_path=split(get("HUTCH_IMAGE_PATH") or DEFAULT_IMAGE_PATH),
            settings_path=split(get("HUTCH_SETTINGS_PATH") or DEFAULT_SETTINGS_PATH),
            state_dir=get("HUTCH_STATE_DIR") or "/run/hutch",
            log_dir=get("HUTCH_LOG_DIR") or "/var/log/hutch",
            cache_dir=get("HUTCH_CACHE_DIR") or "/var/cache/hutch",
            config_dir=get("HUTCH_CONFIG_DIR") or "/etc/hutch",
            journal_dir=get("HUTCH_JOURNAL_DIR") or "/var/log/journal",
        )
