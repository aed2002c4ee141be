"""Exceptions, argument checks and the parts that raise NotImplementedError."""

import errno
import os
import pathlib

import pytest

from conftest import require_root
from soulbox import (
    AsyncSandbox,
    CommandExitException,
    CommandResult,
    FileNotFoundException,
    InvalidArgumentException,
    Mount,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SeccompPolicy,
    TimeoutException,
)


def test_exception_hierarchy() -> None:
    assert issubclass(FileNotFoundException, NotFoundException)
    assert issubclass(FileNotFoundException, FileNotFoundError)
    assert issubclass(SandboxNotFoundException, NotFoundException)
    assert issubclass(NotFoundException, SandboxException)
    assert issubclass(TimeoutException, TimeoutError)
    assert issubclass(InvalidArgumentException, ValueError)
    assert issubclass(CommandExitException, CommandResult)
    error = CommandExitException(stderr="e", stdout="o", exit_code=2)
    assert (error.stdout, error.stderr, error.exit_code, error.error) == ("o", "e", 2, None)
    assert "code 2" in str(error)


def test_constructor_points_to_create() -> None:
    for make in (lambda: Sandbox(), lambda: Sandbox(template="base"), lambda: AsyncSandbox()):
        with pytest.raises(TypeError, match=r"\.create\(\.\.\.\)"):
            make()


def test_missing_file_error(sbx: Sandbox) -> None:
    with pytest.raises(FileNotFoundException) as raised:
        sbx.files.read("/home/user/absent.txt")
    assert raised.value.errno == errno.ENOENT
    assert "/home/user/absent.txt" in str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)


def test_killed_sandbox_not_found(sbx: Sandbox) -> None:
    assert sbx.kill() is True
    assert sbx.kill() is False
    with pytest.raises(SandboxNotFoundException):
        sbx.commands.run("true")
    with pytest.raises(SandboxNotFoundException):
        sbx.files.read("x")


def test_invalid_arguments(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="timeout"):
        sbx.commands.run("true", timeout=-1)
    with pytest.raises(InvalidArgumentException, match="envs"):
        sbx.commands.run("true", envs={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentException, match="nobody"):
        sbx.commands.run("true", user="nobody")
    with pytest.raises(InvalidArgumentException, match="format"):
        sbx.files.read("x", format="yaml")  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentException, match="timeout"):
        Sandbox.create(timeout=-5)
    with pytest.raises(InvalidArgumentException, match="memory_limit"):
        Sandbox.create(memory_limit=-1)
    with pytest.raises(TypeError, match="colour"):
        Sandbox.create(colour="blue")


def test_command_options_of_wrong_type(sbx: Sandbox) -> None:
    for option in ("user", "cwd", "tag"):
        with pytest.raises(InvalidArgumentException, match=f"{option} must be a str or None, not 5"):
            sbx.commands.run("true", **{option: 5})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentException, match=r"user must be a str or None, not b'root'"):
        sbx.commands.run("true", user=b"root", background=True)  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentException, match="cwd must be a str or None, not 0"):
        sbx.pty.create(PtySize(24, 80), cwd=0)  # type: ignore[arg-type]
    assert sbx.commands.run("echo ok", user="root", cwd="/tmp", tag="t").stdout == "ok\n"


def test_list_query_of_wrong_type() -> None:
    for list_sandboxes in (Sandbox.list, AsyncSandbox.list):
        with pytest.raises(InvalidArgumentException, match=r"query must be a SandboxQuery.*not \{'metadata'"):
            list_sandboxes(query={"metadata": {"job": "42"}})  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentException, match="query.metadata must map str to str; entry 'job': 42"):
            list_sandboxes(query=SandboxQuery(metadata={"job": 42}))  # type: ignore[dict-item]


def test_connection_options_accepted() -> None:
    require_root()
    with Sandbox.create(api_key="unused", request_timeout=5, secure=True) as sandbox:
        assert sandbox.commands.run("echo ok").stdout == "ok\n"


@pytest.mark.parametrize(
    "options, missing",
    [
        ({"network": {"allow_public_traffic": False}}, "allow_public_traffic"),
        ({"mcp": {"x": {}}}, "MCP"),
    ],
)
def test_create_not_implemented(options: dict, missing: str) -> None:
    with pytest.raises(NotImplementedError, match=missing):
        Sandbox.create(**options)


def test_seccomp_policy_applied() -> None:
    require_root()
    deny_mkdir = SeccompPolicy(deny={"mkdir": errno.EPERM, "mkdirat": errno.EPERM})
    with Sandbox.create(seccomp=deny_mkdir) as sandbox:
        with pytest.raises(CommandExitException) as raised:
            sandbox.commands.run("mkdir /tmp/blocked")
        assert "Operation not permitted" in raised.value.stderr
        assert sandbox.commands.run("echo still-works").stdout == "still-works\n"
    with Sandbox.create() as sandbox:
        sandbox.commands.run("mkdir /tmp/allowed")
    with pytest.raises(InvalidArgumentException, match="base"):
        Sandbox.create(seccomp=SeccompPolicy(base="strict"))
    with pytest.raises(InvalidArgumentException, match="no_such_call"):
        Sandbox.create(seccomp=SeccompPolicy(allow=["no_such_call"]))


def test_mounts_from_relative_paths(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "out").mkdir()
    os.chmod(tmp_path / "out", 0o777)
    monkeypatch.chdir(tmp_path)
    mounts = [Mount("in", "/home/user/in"), ("out", "/home/user/out", True)]
    with Sandbox.create(mounts=mounts) as sandbox:
        assert sandbox.commands.run("cat in/data.csv").stdout == "a,b\n1,2\n"
        sandbox.commands.run("wc -l < in/data.csv > out/count")
        with pytest.raises(CommandExitException, match="Read-only"):
            sandbox.commands.run("touch in/new")
    assert (tmp_path / "out" / "count").read_text() == "2\n"
    with pytest.raises(InvalidArgumentException, match="/proc, /sys or /dev"):
        Sandbox.create(mounts=[Mount(tmp_path, "/dev/data")])
    with pytest.raises(InvalidArgumentException, match="list of Mount"):
        Sandbox.create(mounts="in:/in")
    with pytest.raises(InvalidArgumentException, match="writable must be True or False"):
        Sandbox.create(mounts=[("in", "/in", "ro")])


def test_commands_by_pid(sbx: Sandbox) -> None:
    assert sbx.commands.kill(999999) is False
    with pytest.raises(NotFoundException):
        sbx.commands.connect(999999)
    handle = sbx.commands.run("sleep 60", background=True, tag="sleeper")
    listed = sbx.commands.list()
    assert [(p.pid, p.tag) for p in listed] == [(handle.pid, "sleeper")]
    assert listed[0].args == ["-l", "-c", "sleep 60"]
    again = sbx.commands.connect(handle.pid)
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        again.wait()
    assert sbx.commands.list() == []


def test_background_timeout_raises(sbx: Sandbox) -> None:
    handle = sbx.commands.run("echo before; sleep 30", background=True, timeout=1)
    with pytest.raises(TimeoutException) as raised:
        handle.wait()
    assert raised.value.stdout == "before\n"


def test_copy_in_and_out(sbx: Sandbox, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("alpha")
    copied = sbx.files.copy_in(str(source), "/home/user/copied")
    assert (copied.files, copied.directories) == (1, 1)
    assert sbx.files.read("copied/a.txt") == "alpha"
    back = tmp_path / "back"
    sbx.files.copy_out("copied", str(back))
    assert (back / "a.txt").read_text() == "alpha"
