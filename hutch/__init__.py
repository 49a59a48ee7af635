"""hutch: systemd-nspawn and machinectl for any Linux host."""

__version__ = "0.1.0"
