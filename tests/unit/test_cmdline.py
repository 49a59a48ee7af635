from __future__ import annotations

import pytest

from hutch.errors import UsageError
from hutch.settings import values
from hutch.settings.cmdline import parse
from hutch.settings.values import parse_signal, split_escaped


def test_stops_at_first_non_option_like_getopt_plus() -> None:
    s = parse(["-D", "/srv/x", "-q", "ls", "-l", "--color"])
    assert s.directory == "/srv/x" and s.quiet
    assert s.command == ["ls", "-l", "--color"]


def test_bundled_short_options_and_attached_values() -> None:
    s = parse(["-bqD/srv/x", "-Mname", "init-arg"])
    assert s.boot and s.quiet and s.directory == "/srv/x" and s.machine == "name"
    assert s.command == ["init-arg"]


def test_long_options_with_and_without_equals() -> None:
    s = parse(["--directory", "/a", "--hostname=h1", "--volatile", "--", "-x"])
    assert s.directory == "/a" and s.hostname == "h1" and s.volatile == "yes" and s.command == ["-x"]


@pytest.mark.parametrize(
    ("text", "num"),
    [
        ("SIGTERM", 15),
        ("term", 15),
        ("9", 9),
        ("SIGRTMIN+3", 37),
        ("RTMIN+4", 38),
        ("SIGRTMAX", 64),
        ("RTMAX-1", 63),
    ],
)
def test_signals(text: str, num: int) -> None:
    assert parse_signal(text) == num


@pytest.mark.parametrize("bad", ["SIGFOO", "0", "65", "RTMIN+40", ""])
def test_bad_signals(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_signal(bad)


def test_split_escaped() -> None:
    assert split_escaped(r"/a\:b:/c") == ["/a:b", "/c"]
    assert split_escaped("a") == ["a"]
    assert split_escaped(":/dst") == ["", "/dst"]


def test_bind_forms() -> None:
    s = parse(["--bind=/src", "--bind-ro=/src2:/dst2", "--bind=+/in/image:/dst3:norbind", "--bind=:/tmpdir"])
    b1, b2, b3, b4 = s.binds
    assert (b1.source, b1.destination, b1.read_only, b1.recursive) == ("/src", "/src", False, True)
    assert (b2.source, b2.destination, b2.read_only) == ("/src2", "/dst2", True)
    assert (b3.source, b3.image_relative, b3.recursive, b3.destination) == (
        "/in/image",
        True,
        False,
        "/dst3",
    )
    assert (b4.source, b4.destination) == ("", "/tmpdir")


@pytest.mark.parametrize("spec", ["/a:/b:/c:/d", "/a:rel", "/a:/b:bogus", ":", "/a:/b/../c"])
def test_bad_bind_specs(spec: str) -> None:
    with pytest.raises(UsageError):
        parse(["--bind=" + spec])


def test_overlay_forms() -> None:
    s = parse(["--overlay=/l1:/l2:/up:/dst", "--overlay-ro=/l:/dst2", "--overlay=/l::/dst3"])
    o1, o2, o3 = s.overlays
    assert (o1.lowers, o1.upper, o1.destination, o1.read_only) == (["/l1", "/l2"], "/up", "/dst", False)
    assert (o2.lowers, o2.upper, o2.destination, o2.read_only) == (["/l"], "/dst2", "/dst2", True)
    assert (o3.upper, o3.destination) == ("", "/dst3")
    with pytest.raises(UsageError):
        parse(["--overlay=/only"])


def test_tmpfs() -> None:
    s = parse(["--tmpfs=/a", "--tmpfs=/b:mode=0700,size=1m"])
    assert [(t.destination, t.options) for t in s.tmpfs] == [
        ("/a", "mode=0755"),
        ("/b", "mode=0700,size=1m"),
    ]
    for bad in ("rel", "/", ""):
        with pytest.raises(UsageError):
            parse(["--tmpfs=" + bad])


def test_rlimit() -> None:
    import resource

    s = parse(["--rlimit=NOFILE=100:200", "--rlimit=RLIMIT_CORE=infinity"])
    assert s.rlimits[resource.RLIMIT_NOFILE] == (100, 200)
    assert s.rlimits[resource.RLIMIT_CORE] == (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    for bad in ("NOFILE", "BOGUS=1", "NOFILE=x", "NOFILE=10:5"):
        with pytest.raises(UsageError):
            parse(["--rlimit=" + bad])


@pytest.mark.parametrize(
    "argv",
    [
        ["-b", "-a"],
        ["--bogus"],
        ["-Z"],
        ["--directory"],
        ["--quiet=yes"],
        ["--console=fancy"],
        ["--volatile=maybe"],
        ["--machine=bad/name"],
        ["--uuid=xyz"],
        ["--oom-score-adjust=2000"],
        ["--chdir=relative"],
        ["--resolv-conf=nope"],
        ["--timezone=nope"],
        ["-E", "1BAD=x"],
        ["-x", "--template=/t"],
        ["-u", ""],
        ["--hostname=-bad-."],
        ["--kill-signal=NOPE"],
        ["--register=maybe"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError) as e:
        parse(argv)
    assert "\n" not in e.value.message


def test_setenv_copies_host_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_T_VAR", "v1")
    monkeypatch.delenv("HUTCH_T_UNSET", raising=False)
    s = parse(["-E", "A=1", "-E", "HUTCH_T_VAR", "-E", "HUTCH_T_UNSET"])
    assert s.setenv == ["A=1", "HUTCH_T_VAR=v1"]


def test_machine_names() -> None:
    assert values.valid_machine_name("a.b-c_d")
    for bad in ("", ".a", "a.", "a..b", "x" * 65, "a/b", "ä"):
        assert not values.valid_machine_name(bad)


def test_private_users_values() -> None:
    from hutch.settings.values import parse_private_users

    assert parse_private_users("no")[0] == "no"
    assert parse_private_users("yes") == ("pick", 0, 65536) == parse_private_users("pick")
    assert parse_private_users("identity")[0] == "identity"
    assert parse_private_users("1048576") == ("fixed", 1048576, 65536)
    assert parse_private_users("1048576:1000") == ("fixed", 1048576, 1000)
    for bad in ("0:65536", "1:1", "4294967295:2", "abc", "65536:0", "-5"):
        with pytest.raises(UsageError):
            parse_private_users(bad)
    s = parse(["-U", "--private-users-ownership=chown"])
    assert (s.private_users, s.private_users_ownership) == ("pick", "chown")
    assert parse([]).private_users == "pick"  # on by default
    with pytest.raises(UsageError):
        parse(["--private-users-ownership=sideways"])
