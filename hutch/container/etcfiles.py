"""The files of the host's /etc a machine gets: /etc/resolv.conf (--resolv-conf, and on a veth hutch
addressed, its DNS forwarder) and /etc/localtime (--timezone), as mount plan operations. What each mode
does is upstream's (systemd-nspawn(1)); "auto" picks as upstream's does."""

from __future__ import annotations

from hutch.container import rootfs
from hutch.container.plan import Mount, Op, Symlink, Unlink, WriteFile
from hutch.linux import posixos as os
from hutch.linux.libc import MS_BIND, MS_NODEV, MS_NOSUID

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hutch.container.prepare import Prepared

RESOLV_SOURCES = {
    "host": "/etc/resolv.conf",
    "static": "/usr/lib/systemd/resolv.conf",
    "uplink": "/run/systemd/resolve/resolv.conf",
    "stub": "/run/systemd/resolve/stub-resolv.conf",
}


def read_host(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def resolv_conf_ops(prep: Prepared, read_only: bool) -> list[Op]:
    s = prep.settings
    mode = s.resolv_conf
    if mode == "off":
        return []
    if mode == "auto":
        if s.private_network:
            if s.network_veth and not s.network_bridge:
                return _routed_resolv_conf(prep, read_only)
            return []
        stub = RESOLV_SOURCES["stub"]
        source = (
            stub
            if os.path.exists("/run/systemd/resolve/io.systemd.Resolve") and os.path.exists(stub)
            else _host_resolv()
        )
        return _file_op("/etc/resolv.conf", source, "bind" if read_only else "copy", "resolv.conf")
    if mode == "delete":
        return [Unlink("/etc/resolv.conf")]
    how, _, which = mode.partition("-")
    return _file_op("/etc/resolv.conf", RESOLV_SOURCES[which], how, "resolv.conf")


def _routed_resolv_conf(prep: Prepared, read_only: bool) -> list[Op]:
    """A machine on a veth hutch addressed asks the DNS forwarder on the host side of its link
    (hutch.container.dns), which knows the host's machines by name and reaches the host's nameservers
    from the host's network namespace, loopback ones (systemd-resolved's 127.0.0.53 stub, a local
    dnsmasq) included, whether or not the host forwards IP. The host file's other lines (search,
    options) are kept. Upstream leaves the file to networkd."""
    from hutch.container import dns

    link = prep.link
    if link is None or link.external:
        return []
    data = read_host(_host_resolv()) or b""
    text = data.decode(errors="replace")
    prep.dns_upstream = dns.upstream_servers(text)
    prep.dns = [link.host_ip]
    kept = [ln for ln in text.splitlines() if ln.split()[:1] != ["nameserver"]]
    out = "\n".join([f"nameserver {link.host_ip}", *kept]) + "\n"
    label = f"resolv.conf: hutch's DNS forwarder, then {_host_resolv()}'s nameservers"
    if not read_only:
        return [WriteFile("/etc/resolv.conf", out.encode(), 0o644, replace=False, label=label)]
    # A read-only image keeps its file: ours is bound over it, from a name in the machine's /run that
    # is gone once bound.
    tmp = "/run/.hutch-resolv.conf"
    bind = Mount(tmp, "/etc/resolv.conf", None, MS_BIND, kind="file", source_in_root=True)
    return [WriteFile(tmp, out.encode(), 0o644, label=label), bind, Unlink(tmp)]


def _host_resolv() -> str:
    return os.getenv("HUTCH_HOST_RESOLV_CONF") or RESOLV_SOURCES["host"]


def _file_op(dest: str, source: str, how: str, label: str) -> list[Op]:
    if how == "bind":
        if not os.path.exists(source):
            return []
        return [
            Mount(
                source,
                dest,
                None,
                MS_BIND | MS_NOSUID | MS_NODEV,
                kind="file",
                read_only_after=True,
                optional=True,
            )
        ]
    data = read_host(source)
    if data is None:
        return []
    return [WriteFile(dest, data, 0o644, replace=(how == "replace"), label=f"{label} from {source}")]


def timezone_ops(prep: Prepared, read_only: bool) -> list[Op]:
    mode = prep.settings.timezone
    if mode == "off":
        return []
    if mode == "delete":
        return [Unlink("/etc/localtime")]
    zone = None
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            zone = link.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    if mode == "auto":
        if zone and rootfs.exists_in_root(prep.tree, "usr/share/zoneinfo/" + zone):
            mode = "symlink"
        else:
            mode = "bind" if read_only else "copy"
    if mode == "symlink":
        if not zone:
            return []
        return [Symlink("../usr/share/zoneinfo/" + zone, "/etc/localtime")]
    return _file_op("/etc/localtime", "/etc/localtime", mode, "localtime")
