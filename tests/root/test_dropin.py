"""hutch linked as machinectl, systemd-nspawn and importctl: the command lines scripts and clients use
with those tools, run unchanged, and Ansible (ansible-core and the `ansible` package's community.general,
from PyPI into a venv cached outside the checkout) as a real client: its machinectl become plugin runs
`machinectl -q shell USER@ /bin/sh -c ...` on the host."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CACHE, HUTCH, run

ANSIBLE_SPEC = "ansible-core==2.19.14 ansible==12.3.0"


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A directory with the three names linked to hutch, as `./setup.sh links` makes them."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("machinectl", "systemd-nspawn", "importctl"):
        (d / name).symlink_to(HUTCH)
    return d


def tool(tools: Path, name: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        **kw,
    )  # type: ignore[call-overload, no-any-return]


def sh(tools: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}")
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def machine(busybox: Path) -> Iterator[str]:
    run("start", "bb", check=True, timeout=60)
    try:
        yield "bb"
    finally:
        run("terminate", "--wait", "bb", timeout=60)


def test_version_in_systemds_layout(tools: Path) -> None:
    for name in ("machinectl", "systemd-nspawn", "importctl"):
        r = tool(tools, name, "--version")
        assert r.returncode == 0, r.stderr
        assert re.match(r"systemd \d{3} \(hutch \d", r.stdout.splitlines()[0]), r.stdout
    assert re.match(r"hutch \d", run("--version", check=True).stdout)


def test_script_idioms(tools: Path, machine: str) -> None:
    # Each as the manual page or common scripts use them, options before the verb.
    assert sh(tools, "machinectl --no-legend list | awk '{print $1}'").stdout == "bb\n"
    leader = sh(tools, "machinectl show bb -p Leader --value").stdout.strip()
    assert leader.isdigit() and Path(f"/proc/{leader}").exists()
    names = [m["machine"] for m in json.loads(sh(tools, "machinectl list -o json").stdout)]
    assert names == ["bb"]
    assert [m["machine"] for m in json.loads(sh(tools, "machinectl -o json list").stdout)] == ["bb"]
    assert "bb" in sh(tools, "machinectl").stdout  # bare machinectl lists
    assert sh(tools, "machinectl -q shell bb /bin/echo hi").stdout == "hi\n"
    assert sh(tools, "machinectl --uid=0 -q shell bb /bin/sh -c 'exit 7'").returncode == 7
    assert sh(tools, "machinectl --no-pager --no-ask-password status bb").returncode == 0
    assert sh(tools, "machinectl --no-legend list-images | awk '{print $1, $2}'").stdout == "bb directory\n"
    assert sh(tools, "machinectl list -o json | jq -r '.[].machine'").stdout == "bb\n"
    assert sh(tools, "machinectl status bb | grep Unit:").stdout == "\t    Unit: machine-bb.scope\n"
    # machinectl's JSON: the addresses one string, a line each; nothing is null, not "".
    (m,) = json.loads(sh(tools, "machinectl list -o json").stdout)
    assert isinstance(m["addresses"], str) and len(m["addresses"].split("\n")) == 2
    # The table: one address a row, cut with an ellipsis, unless --max-addresses says more.
    row = sh(tools, "machinectl --no-legend list").stdout.splitlines()
    assert len(row) == 1 and row[0].endswith("…") and row[0].split()[-1].startswith("10.88.")
    rows = sh(tools, "machinectl --no-legend --max-addresses=all list").stdout.splitlines()
    assert len(rows) == 2 and rows[1].strip().startswith("fd68:")
    assert sh(tools, "machinectl --no-legend --max-addresses=0 list").stdout.split() == [
        "bb",
        "container",
        "hutch",
        "busybox",
        "1.35.0",
    ]
    # show: machined's properties, names and formats; hutch's own only with -a or -p.
    props = dict(ln.split("=", 1) for ln in sh(tools, "machinectl show bb").stdout.splitlines())
    assert set(props) == {
        "Name",
        "Id",
        "Timestamp",
        "TimestampMonotonic",
        "Service",
        "Unit",
        "Leader",
        "Class",
        "RootDirectory",
        "NetworkInterfaces",
        "State",
    }
    assert props["NetworkInterfaces"] == Path("/sys/class/net/ve-bb/ifindex").read_text().strip()
    assert props["TimestampMonotonic"].isdigit() and props["Unit"] == "machine-bb.scope"
    assert "UIDShift=" in sh(tools, "machinectl show -a bb").stdout
    r = sh(tools, "machinectl status --lines=-1 bb")
    assert r.returncode != 0 and "invalid number of lines" in r.stderr


def test_systemd_nspawn_and_importctl_command_lines(tools: Path, busybox: Path, tmp_path: Path) -> None:
    r = tool(tools, "systemd-nspawn", "-q", "-D", str(busybox), "/bin/sh", "-c", "echo $container")
    assert (r.returncode, r.stdout) == (0, "hutch\n"), r.stderr
    archive = tmp_path / "bb.tar"
    run("export-tar", "bb", str(archive), check=True)
    r = tool(tools, "importctl", "-m", "import-tar", str(archive), "bb2")
    assert r.returncode == 0, r.stderr
    # Another class is kept in its own directory (systemd's /var/lib/portables), never as a machine.
    portables = tmp_path / "portables"
    env = dict(os.environ, HUTCH_PORTABLE_PATH=str(portables))
    r = tool(tools, "importctl", "--class=portable", "import-tar", str(archive), "bb3", env=env)
    assert r.returncode == 0 and (portables / "bb3/bin/busybox").exists(), r.stderr
    r = tool(tools, "importctl", "--class=nonsense", "import-tar", str(archive), "bb4")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "--class" in r.stderr
    assert [i["name"] for i in json.loads(run("list-images", "-o", "json", check=True).stdout)] == [
        "bb",
        "bb2",
    ]


def test_the_host_as_a_machine(tools: Path) -> None:
    r = sh(tools, "machinectl status .host")
    assert r.returncode == 0 and r.stdout.startswith(".host(") and "\t   Class: host\n" in r.stdout, r.stderr
    props = dict(ln.split("=", 1) for ln in sh(tools, "machinectl show .host").stdout.splitlines())
    assert props["Name"] == ".host" and props["Class"] == "host" and props["Leader"] == "1"
    assert props["RootDirectory"] == "/"


def test_shell_on_the_host(tools: Path) -> None:
    r = sh(tools, "machinectl -q shell root@ /bin/sh -c 'id -u; echo $HOME $USER'")
    assert r.stdout == "0\n/root root\n", r.stderr
    r = sh(tools, "machinectl -q shell nobody@.host /bin/sh -c 'id -un; echo $LOGNAME'")
    assert r.stdout == "nobody\nnobody\n", r.stderr
    assert sh(tools, "machinectl -q shell .host /bin/sh -c 'exit 9'").returncode == 9
    r = sh(tools, "machinectl -q shell no-such-user@ /bin/true")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "No user 'no-such-user'" in r.stderr


# ---------------------------------------------------------------- Ansible


@pytest.fixture(scope="session")
def ansible() -> Path:
    """A venv with ansible-core and community.general, built once and kept outside the checkout."""
    import hashlib

    key = hashlib.sha256(ANSIBLE_SPEC.encode()).hexdigest()[:12]
    venv = CACHE / f"ansible-{key}"
    if not (venv / "bin/ansible-playbook").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin/pip"), "install", "-q", *ANSIBLE_SPEC.split()], check=True, timeout=900
        )
    return venv


def playbook(
    ansible: Path, tools: Path, tmp_path: Path, text: str, inventory: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(text)
    (tmp_path / "hosts").write_text(inventory)
    home = tmp_path / "ansible-home"
    env = dict(
        os.environ,
        PATH=f"{tools}:{ansible / 'bin'}:{os.environ['PATH']}",
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="0",
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        **extra,
    )
    return subprocess.run(
        [str(ansible / "bin/ansible-playbook"), "-i", str(tmp_path / "hosts"), str(tmp_path / "play.yml")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )


BECOME_PLAY = """
- hosts: all
  gather_facts: false
  become: true
  become_method: community.general.machinectl
  tasks:
    - command: id -un
      register: as_root
    - command: id -un
      become_user: nobody
      register: as_nobody
    - copy:
        dest: "{{ out }}/written-as-root"
        content: "from ansible\\n"
    - assert:
        that:
          - as_root.stdout == "root"
          - as_nobody.stdout == "nobody"
"""


def test_ansible_machinectl_become(ansible: Path, tools: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = playbook(ansible, tools, tmp_path, BECOME_PLAY, f"localhost ansible_connection=local out={out}\n")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"localhost\s*:\s*ok=4\s+changed=\d+\s+unreachable=0\s+failed=0", r.stdout), r.stdout
    assert (out / "written-as-root").read_text() == "from ansible\n"
    assert (out / "written-as-root").stat().st_uid == 0


@pytest.fixture(scope="session")
def python_guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cached bookworm tree plus python3, which Ansible's modules need on the managed machine, put
    there by apt inside a container on the host's network; built once, kept by the Debian image's key."""
    import hashlib
    import shutil

    from conftest import _debian_key, debian_image

    key = hashlib.sha256((_debian_key() + ":python3").encode()).hexdigest()[:16]
    d = CACHE / f"guest-python-{key}"
    image = d / "pyguest"
    if not image.is_dir():
        for old in CACHE.glob("guest-python-*"):
            shutil.rmtree(old, ignore_errors=True)
        build = d / ".build"
        build.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(debian_image()), str(build / "pyguest")], check=True)
        base = tmp_path_factory.mktemp("pyguest-state")
        env = dict(
            os.environ,
            HUTCH_STATE_DIR=str(base / "state"),
            HUTCH_LOG_DIR=str(base / "log"),
            HUTCH_IMAGE_PATH=str(base / "images"),
        )
        script = (
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "--no-install-recommends python3 >/dev/null && apt-get clean"
        )
        r = subprocess.run(
            [
                HUTCH,
                "spawn",
                "-q",
                "-D",
                str(build / "pyguest"),
                "--private-users=no",
                "--resolv-conf=copy-host",
                "/bin/sh",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        (build / "pyguest").rename(image)
        build.rmdir()
    return image


CONNECTION_PLAY = """
- hosts: all
  gather_facts: true
  tasks:
    - ping:
    - copy:
        dest: /etc/hutch-a.conf
        content: "a=1\\n"
        mode: "0644"
    - lineinfile:
        path: /etc/hutch-b.conf
        line: b=2
        create: true
        mode: "0644"
    - file:
        path: /srv/made-by-ansible
        state: directory
        mode: "0750"
    - template:
        src: hello.service.j2
        dest: /etc/systemd/system/hello.service
    - systemd_service:
        name: hello
        state: started
        enabled: true
        daemon_reload: true
    - command: cat /etc/hutch-a.conf /etc/hutch-b.conf
      register: conf
      changed_when: false
    - fetch:
        src: /etc/hutch-b.conf
        dest: "{{ out }}/fetched.conf"
        flat: true
    - assert:
        that:
          - ansible_facts.distribution == "Debian"
          - ansible_facts.virtualization_role == "guest"
          - conf.stdout_lines == ["a=1", "b=2"]
"""


def test_ansible_through_a_machinectl_connection(
    ansible: Path, tools: Path, python_guest: Path, tmp_path: Path, hutch_env: Path
) -> None:
    """setup, ping, copy, file, lineinfile, template, a service, command and fetch into a running
    machine, through a connection plugin that uses only machinectl shell, copy-to and copy-from; the
    second run changes nothing."""
    run("import-fs", str(python_guest), "pyguest", check=True, timeout=300)
    (tmp_path / "hello.service.j2").write_text(
        "[Unit]\nDescription=made by {{ inventory_hostname }}\n[Service]\nExecStart=/bin/sleep infinity\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    plugins = str(Path(__file__).resolve().parent.parent / "ansible/connection_plugins")
    run("start", "pyguest", check=True, timeout=120)
    try:
        inventory = f"pyguest ansible_connection=machinectl_shell out={out}\n"
        first = playbook(
            ansible, tools, tmp_path, CONNECTION_PLAY, inventory, ANSIBLE_CONNECTION_PLUGINS=plugins
        )
        assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
        assert re.search(r"pyguest\s*:\s*ok=10\s+changed=[1-9]", first.stdout), first.stdout[-3000:]
        second = playbook(
            ansible, tools, tmp_path, CONNECTION_PLAY, inventory, ANSIBLE_CONNECTION_PLUGINS=plugins
        )
        assert second.returncode == 0, second.stdout[-5000:]
        assert re.search(r"pyguest\s*:\s*ok=10\s+changed=0\s+unreachable=0\s+failed=0", second.stdout), (
            second.stdout[-3000:]
        )
        assert (out / "fetched.conf").read_text() == "b=2\n"
        r = run("shell", "pyguest", "systemctl", "is-active", "hello", timeout=60)
        assert r.stdout.strip() == "active"
    finally:
        run("poweroff", "--wait", "pyguest", timeout=120)


def test_list_and_cancel_transfers(tools: Path, busybox: Path, hutch_env: Path, tmp_path: Path) -> None:
    assert tool(tools, "importctl", "list-transfers").stdout == "No transfers.\n"
    archive = tmp_path / "bb.tar"
    run("export-tar", "bb", str(archive), check=True)
    data = archive.read_bytes()
    p = subprocess.Popen(
        [HUTCH, "import-tar", "-q", "-", "incoming"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
    )
    assert p.stdin is not None
    try:
        p.stdin.write(data[: len(data) // 2])  # half an archive: the import waits for the rest
        p.stdin.flush()
        deadline = time.monotonic() + 20
        while "incoming" not in (out := tool(tools, "importctl", "list-transfers").stdout):
            assert time.monotonic() < deadline, out
        header, row = out.splitlines()[:2]
        assert header.split() == ["ID", "PERCENT", "TYPE", "LOCAL", "REMOTE"]
        assert row.split() == ["1", "-", "import-tar", "incoming", "-"]
        (entry,) = json.loads(tool(tools, "importctl", "list-transfers", "-o", "json").stdout)
        assert entry["id"] == 1 and entry["percent"] is None
        r = tool(tools, "importctl", "cancel-transfer", "1")
        assert r.returncode == 0, r.stderr
        assert p.wait(20) == 130
    finally:
        p.kill()
        p.wait()
    assert "interrupted" in p.stderr.read().decode()  # type: ignore[union-attr]
    assert sorted(os.listdir(hutch_env / "images")) == ["bb"]
    assert tool(tools, "importctl", "list-transfers").stdout == "No transfers.\n"
    r = tool(tools, "importctl", "cancel-transfer", "7")
    assert r.returncode != 0 and "No transfer with ID 7" in r.stderr


def test_shell_streams_as_a_connection_plugin_sees_them(tools: Path, machine: str) -> None:
    """A pty as stdin, pipes as stdout and stderr (as connection plugins in the wild run it): the
    command sees a terminal, its two streams stay apart and in order, its exit status is the verb's."""
    import pty

    master, slave = pty.openpty()
    try:
        script = (
            "test -t 0 && echo stdin-is-a-tty; for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 5"
        )
        p = subprocess.Popen(
            [str(tools / "machinectl"), "-q", "shell", machine, "/bin/sh", "-c", script],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        slave = -1
        out, err = p.communicate(timeout=30)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert p.returncode == 5
    assert out == "stdin-is-a-tty\nout1\nout2\nout3\n" and err == "err1\nerr2\nerr3\n"


def test_verbs_machinectl_has_that_hutch_refuses_or_takes(tools: Path, machine: str) -> None:
    r = sh(tools, "machinectl set-limit 10G")
    assert r.returncode != 0 and "only supported on btrfs" in r.stderr and r.stderr.count("\n") == 1
    for mode in ("cat", "short-iso", "json"):
        assert sh(tools, f"machinectl -o {mode} status bb").returncode == 0, mode
    r = sh(tools, "machinectl -o bogus status bb")
    assert r.returncode != 0 and "invalid choice" in r.stderr
