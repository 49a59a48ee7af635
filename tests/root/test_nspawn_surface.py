"""Every option systemd-nspawn's --help lists, and every key systemd.nspawn(5) documents, read from the
systemd-container package installed here (systemd 252): hutch accepts each with its meaning, or refuses
it with one clear line. Nothing is "unrecognized" or an "Unknown key". The meanings themselves are
checked by the ports of upstream's tests (test_upstream_nspawn*.py) and hutch's own."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from upstream13 import dummy_container

from conftest import HUTCH, debian_image

pytestmark = pytest.mark.usefixtures("private_net")

# A value each option can take (hutch's choice of a harmless one); options hutch refuses on purpose.
VALUES = {
    "--help": [], "--version": [], "--quiet": [], "--no-pager": [], "--settings": ["no"],
    "--directory": ["{root}"], "--template": ["{root}"], "--ephemeral": [], "--image": ["{tmp}/no-such.raw"],
    "--oci-bundle": ["{tmp}"], "--read-only": [], "--volatile": ["overlay"], "--root-hash": ["ab" * 32],
    "--root-hash-sig": ["base64:AAAA"], "--verity-data": ["{tmp}/x.verity"], "--pivot-root": ["/"],
    "--as-pid2": [], "--boot": [], "--chdir": ["/tmp"], "--setenv": ["A=b"], "--user": ["root"],
    "--kill-signal": ["SIGTERM"], "--notify-ready": ["yes"], "--suppress-sync": ["yes"],
    "--machine": ["surface"], "--hostname": ["surface-host"], "--uuid": ["deadbeef" * 4],
    "--slice": ["machine.slice"], "--property": ["TasksMax=100"], "--register": ["no"], "--keep-unit": [],
    "--private-users": ["pick"], "--private-users-ownership": ["auto"], "--private-network": [],
    "--network-interface": ["sv-moved"], "--network-macvlan": ["sv-parent"],
    "--network-ipvlan": ["sv-parent"], "--network-veth": [], "--network-veth-extra": ["sv-extra:sv-in"],
    "--network-bridge": ["sv-br"], "--network-zone": ["surface"],
    "--network-namespace-path": ["/proc/self/ns/net"], "--port": ["8080"], "--capability": ["CAP_NET_ADMIN"],
    "--drop-capability": ["CAP_CHOWN"], "--ambient-capability": ["CAP_CHOWN"],
    "--no-new-privileges": ["yes"],
    "--system-call-filter": ["@basic-io"], "--selinux-context": ["system_u:system_r:container_t:s0"],
    "--selinux-apifs-context": ["system_u:object_r:container_file_t:s0"], "--rlimit": ["NOFILE=512"],
    "--oom-score-adjust": ["10"], "--cpu-affinity": ["0"], "--personality": ["x86"],
    "--resolv-conf": ["copy-host"], "--timezone": ["copy"], "--link-journal": ["try-guest"],
    "--bind": ["{tmp}:/mnt"], "--bind-ro": ["{tmp}:/mnt"], "--inaccessible": ["/var"], "--tmpfs": ["/mnt"],
    "--overlay": ["+/var::/var"], "--overlay-ro": ["+/var:/var"], "--bind-user": ["root"],
    "--console": ["pipe"], "--pipe": [], "--set-credential": ["a:b"],
    "--load-credential": ["a:/etc/hostname"],
}  # fmt: skip
REFUSED = {"--oci-bundle", "--root-hash", "--root-hash-sig", "--verity-data", "--image", "--bind-user"}
NEEDS_VETH = {"--port"}
# Not refused on principle, but this host lacks what it takes (no ipvlan driver here): one line then.
MAY_REFUSE = {"--network-ipvlan"}


def _nspawn_options() -> list[str]:
    text = subprocess.run(["systemd-nspawn", "--help", "--no-pager"], capture_output=True, text=True).stdout
    return sorted(set(re.findall(r"^\s+(?:-\w )?(--[a-z][a-z0-9-]*)", text, re.M)))


def _man_keys() -> list[tuple[str, str]]:
    with gzip.open("/usr/share/man/man5/systemd.nspawn.5.gz", "rt") as f:
        text = f.read()
    out: list[tuple[str, str]] = []
    section = ""
    for line in text.splitlines():
        m = re.match(r'\.SH "\[(EXEC|FILES|NETWORK)\]', line)
        if m:
            section = m.group(1).capitalize()
        elif line.startswith(".SH"):
            section = ""
        elif section:
            out += [(section, k) for k in re.findall(r"\\fI([A-Za-z]+)=\\fR", line)]
    return sorted(set(out))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dummy_container(debian_image(), tmp_path_factory.mktemp("surface") / "surface", dummy_init=True)


@pytest.fixture
def links() -> Iterator[None]:
    cmds = [
        "ip link add sv-moved type veth peer sv-moved-p",
        "ip link add sv-parent type veth peer sv-parent-p",
        "ip link add sv-br type bridge",
    ]
    for c in cmds:
        subprocess.run(c.split(), check=True)
    yield
    for dev in ("sv-moved", "sv-parent", "sv-br"):
        subprocess.run(["ip", "link", "del", dev], capture_output=True)


def test_the_option_list_is_upstreams() -> None:
    options = _nspawn_options()
    assert len(options) > 60 and "--directory" in options and "--bind-user" in options
    assert not set(options) - set(VALUES), (
        f"options this test has no value for: {set(options) - set(VALUES)}"
    )


@pytest.mark.parametrize("option", _nspawn_options())
def test_every_option(option: str, root: Path, tmp_path: Path, links: None, hutch_env: Path) -> None:
    value = VALUES[option]
    args = [f"{option}={v.format(root=root, tmp=tmp_path)}" for v in value] or [option]
    extra = ["-n"] if option in NEEDS_VETH else []
    env = dict(os.environ, HUTCH_JOURNAL_DIR=str(tmp_path / "journal"))
    r = subprocess.run(
        [HUTCH, "spawn", "-q", f"--directory={root}", *extra, *args, "true"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("hutch spawn:")]
    assert "unrecognized option" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    if option in REFUSED:
        assert r.returncode != 0 and len(errors) == 1, r.stderr
    elif option in MAY_REFUSE and r.returncode != 0:
        assert len(errors) == 1, r.stderr
    else:
        assert r.returncode == 0, r.stderr


KEY_VALUES = {
    "AmbientCapability": "CAP_CHOWN", "Boot": "yes", "CPUAffinity": "0", "Capability": "CAP_NET_ADMIN",
    "DropCapability": "CAP_CHOWN", "Environment": 'A=b "C=d e"', "Ephemeral": "yes", "Hostname": "keys",
    "KillSignal": "SIGTERM", "LinkJournal": "no", "MachineID": "deadbeefdeadbeefdeadbeefdeadbeef",
    "NoNewPrivileges": "yes", "NotifyReady": "no", "OOMScoreAdjust": "5", "Parameters": "true",
    "Personality": "x86-64", "PivotRoot": "/", "PrivateUsers": "pick", "ProcessTwo": "yes",
    "ResolvConf": "off", "SuppressSync": "yes", "SystemCallFilter": "@basic-io", "Timezone": "off",
    "User": "root", "WorkingDirectory": "/tmp", "Bind": "/tmp:/mnt", "BindReadOnly": "/tmp:/mnt2",
    "BindUser": "", "Inaccessible": "/var", "Overlay": "+/var::/var", "OverlayReadOnly": "+/opt:/opt",
    "PrivateUsersOwnership": "auto", "ReadOnly": "no", "TemporaryFileSystem": "/mnt3", "Volatile": "no",
    "Bridge": "sv-br", "IPVLAN": "", "Interface": "sv-moved", "MACVLAN": "sv-parent", "Port": "8080",
    "Private": "yes", "VirtualEthernet": "yes", "VirtualEthernetExtra": "sv-extra2", "Zone": "",
}  # fmt: skip


def _current_limit(name: str) -> str:
    """This process's own SOFT:HARD for the limit: always settable (this host's bounding set has no
    CAP_SYS_RESOURCE to raise one with)."""
    import resource

    res = getattr(resource, f"RLIMIT_{name}", {"LOCKS": 10}.get(name))
    assert isinstance(res, int), name
    soft, hard = resource.getrlimit(res)

    def text(v: int) -> str:
        return "infinity" if v == resource.RLIM_INFINITY else str(v)

    return f"{text(soft)}:{text(hard)}"


def test_the_key_list_is_upstreams() -> None:
    keys = [k for _, k in _man_keys()]
    assert len(keys) > 50 and "BindUser" in keys
    missing = {k for k in keys if k not in KEY_VALUES and not k.startswith("Limit")}
    assert not missing, f"keys this test has no value for: {missing}"


@pytest.mark.parametrize(("section", "key"), _man_keys())
def test_every_key(section: str, key: str, root: Path, links: None, hutch_env: Path) -> None:
    value = _current_limit(key[5:]) if key.startswith("Limit") else KEY_VALUES[key]
    conf = hutch_env / "settings" / f"{root.name}.nspawn"
    body = f"[{section}]\n{key}={value}\n"
    if key == "Port":
        body += "VirtualEthernet=yes\n"
    conf.write_text(body)
    r = subprocess.run(
        [HUTCH, "spawn", "-q", f"--directory={root}", "--settings=trusted", "true"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Unknown key" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("hutch spawn:")]
    assert r.returncode == 0 or len(errors) == 1, r.stderr
    assert r.returncode == 0, f"{key}={value}: {r.stderr}"
