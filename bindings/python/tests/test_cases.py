"""The behaviours users depend on, through the synchronous API."""

import io
import pathlib
import time
from typing import Dict, List

import pytest

from conftest import current_rss, host_process_alive, processes_named, require_root, wait_until
from soulbox import (
    CommandExitException,
    FileNotFoundException,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    Sandbox,
    TimeoutException,
    WriteEntry,
)

# Processes


def test_timeout_kills_tree(sbx: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException) as raised:
        sbx.commands.run("sleep 300 & sleep 300 & wait", timeout=2)
    assert time.monotonic() - started < 10, "the timeout should end the command"
    assert isinstance(raised.value, TimeoutError)
    gone = wait_until(lambda: not processes_named(sbx, "sleep"))
    assert gone, f"sleep processes left: {processes_named(sbx, 'sleep')}"


def test_handle_kill_ends_tree(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 300 & sleep 300 & wait", background=True)
    assert wait_until(lambda: len(processes_named(sbx, "sleep")) == 2), "sleeps did not start"
    assert handle.kill() is True
    gone = wait_until(lambda: not processes_named(sbx, "sleep"))
    assert gone, f"sleep processes left: {processes_named(sbx, 'sleep')}"
    with pytest.raises(CommandExitException) as raised:
        handle.wait()
    assert raised.value.exit_code == 128 + 9
    assert raised.value.error == "killed by signal 9"


def test_stdin_closed_by_default(sbx: Sandbox) -> None:
    started = time.monotonic()
    result = sbx.commands.run("cat")
    assert result.stdout == ""
    assert result.exit_code == 0
    assert time.monotonic() - started < 5, "cat should see end of file at once"


def test_stdin_when_asked(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    handle.send_stdin("hello\n")
    handle.close_stdin()
    assert handle.wait().stdout == "hello\n"


def test_stdin_by_pid(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, b"by pid\n")
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "by pid\n"


def test_lone_byte_decoded(sbx: Sandbox) -> None:
    result = sbx.commands.run("head -c 8191 /dev/zero | tr '\\0' a; printf '\\342'")
    assert result.stdout == "a" * 8191 + "\ufffd"


def test_split_euro_decoded(sbx: Sandbox) -> None:
    chunks: List[str] = []
    line = "printf '\\342'; sleep 0.2; printf '\\202\\254'"
    result = sbx.commands.run(line, on_stdout=chunks.append)
    assert "".join(chunks) == "€"
    assert "\ufffd" not in "".join(chunks)
    assert result.stdout == "", "output given to a callback is not kept"
    assert sbx.commands.run(line).stdout == "€"


def test_random_bytes_decoded(sbx: Sandbox) -> None:
    result = sbx.commands.run("head -c 4096 /dev/urandom")
    assert len(result.stdout) > 0


def test_large_output_counted(sbx: Sandbox) -> None:
    result = sbx.commands.run("yes | head -c 200000000 | wc -c", timeout=120)
    assert result.stdout.strip() == "200000000"


def test_streaming_keeps_memory_flat(sbx: Sandbox) -> None:
    total = 0
    peak = before = current_rss()

    def count(chunk: str) -> None:
        nonlocal total, peak
        total += len(chunk)
        peak = max(peak, current_rss())

    sbx.commands.run("head -c 100000000 /dev/zero | tr '\\0' a", on_stdout=count, timeout=120)
    assert total == 100_000_000
    growth = peak - before
    assert growth < 40 << 20, f"resident memory grew by {growth} bytes while streaming"


def test_nonzero_exit_keeps_output(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException) as raised:
        sbx.commands.run("echo out; echo err >&2; exit 3")
    assert raised.value.stdout == "out\n"
    assert raised.value.stderr == "err\n"
    assert raised.value.exit_code == 3
    assert raised.value.error == "exit status 3"
    assert str(raised.value) == "Command exited with code 3 and error:\nerr\n"


def test_env_layering() -> None:
    require_root()
    with Sandbox.create(envs={"FOO": "bar"}) as sandbox:
        assert sandbox.commands.run("echo $FOO").stdout == "bar\n"
        assert sandbox.commands.run("echo $FOO", envs={"FOO": "baz"}).stdout == "baz\n"
        assert sandbox.commands.run("echo $HOME $USER").stdout == "/home/user user\n"
        assert sandbox.commands.run("whoami", user="root").stdout == "root\n"


def test_bad_cwd_rejected(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException) as raised:
        sbx.commands.run("touch /tmp/ran", cwd="/nope")
    assert "/nope" in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert not sbx.files.exists("/tmp/ran"), "nothing may start with a bad cwd"


def test_nul_in_template_named() -> None:
    require_root()
    with pytest.raises(InvalidArgumentException) as raised:
        Sandbox.create(template="a\x00b")
    assert "contains a NUL byte" in str(raised.value)


@pytest.mark.parametrize(
    "metadata, problem",
    [
        ({"bad\x00key": "value"}, 'metadata key "bad\\0key" contains a NUL byte'),
        ({"label": "bad\x00value"}, 'the value of metadata key "label" contains a NUL byte'),
    ],
)
def test_nul_in_metadata_named(metadata: Dict[str, str], problem: str) -> None:
    require_root()
    with pytest.raises(InvalidArgumentException) as raised:
        Sandbox.create(metadata=metadata)
    assert problem in str(raised.value)


@pytest.mark.parametrize("timeout", [2**64, 2**64 - 1, 10**400, float("inf")])
def test_huge_timeout_shown_as_given(sbx: Sandbox, timeout: float) -> None:
    with pytest.raises(InvalidArgumentException) as raised:
        sbx.set_timeout(timeout)  # type: ignore[arg-type]
    assert f"timeout of {timeout!r} seconds is too large" in str(raised.value)


# The native module takes seconds as a float, so it shows a whole number
# below 2**53 as the int that converts to it, and anything else as repr()
# of the float.
@pytest.mark.parametrize(
    "timeout, message",
    [
        (2**64, "timeout of 1.8446744073709552e+19 seconds is too large"),
        (1e300, "timeout of 1e+300 seconds is too large"),
        (float("inf"), "timeout of inf seconds is too large"),
        (-1, "timeout of -1 seconds is invalid"),
        (-0.5, "timeout of -0.5 seconds is invalid"),
        (float("nan"), "timeout of nan seconds is invalid"),
    ],
)
def test_native_timeout_shown_as_float(sbx: Sandbox, timeout: float, message: str) -> None:
    with pytest.raises(InvalidArgumentException) as raised:
        sbx._native.set_timeout(timeout)
    assert message in str(raised.value)


def test_native_timeout_accepts_valid(sbx: Sandbox) -> None:
    sbx._native.set_timeout(2**40)
    sbx._native.set_timeout(0.5)
    assert sbx.is_running()


# Files


def test_binary_round_trip(sbx: Sandbox) -> None:
    data = bytes(range(256)) * 1000
    sbx.files.write("bin.dat", data)
    assert bytes(sbx.files.read("bin.dat", format="bytes")) == data
    with sbx.files.read("bin.dat", format="stream") as stream:
        assert b"".join(stream) == data


def test_file_object_streamed(sbx: Sandbox, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "big.bin"
    data = bytes(range(256)) * (12 << 12)
    source.write_bytes(data)
    with open(source, "rb") as stream:
        info = sbx.files.write("streamed.bin", stream)
    assert info.path == "/home/user/streamed.bin"
    assert bytes(sbx.files.read("streamed.bin", format="bytes")) == data
    with open(source, encoding="latin-1") as text:
        sbx.files.write("text.txt", text)
    assert sbx.files.get_info("text.txt").size > len(data), "latin-1 text re-encoded as UTF-8"


def test_failed_stream_leaves_no_file(sbx: Sandbox) -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("source broke")
            return b"x" * 1000

    with pytest.raises(OSError, match="source broke"):
        sbx.files.write("partial.bin", Failing())
    assert not sbx.files.exists("partial.bin"), "the partial file stayed"


def test_empty_files(sbx: Sandbox) -> None:
    sbx.files.write("empty", b"")
    assert sbx.files.read("empty") == ""
    assert sbx.files.read("empty", format="bytes") == bytearray()
    assert sbx.files.get_info("empty").size == 0
    sbx.commands.run("touch touched")
    assert sbx.files.read("touched") == ""


def test_odd_names(sbx: Sandbox) -> None:
    path = "dir with space/ünï😀.txt"
    info = sbx.files.write(path, "odd")
    assert info.path == "/home/user/" + path
    names = [entry.name for entry in sbx.files.list("dir with space")]
    assert names == ["ünï😀.txt"]
    assert sbx.files.read(path) == "odd"
    renamed = sbx.files.rename(path, "dir with space/ëmoji 🚀.txt")
    assert renamed.name == "ëmoji 🚀.txt"
    assert renamed.type == FileType.FILE
    sbx.files.remove("dir with space/ëmoji 🚀.txt")
    assert sbx.files.list("dir with space") == []


def test_idempotent_operations(sbx: Sandbox) -> None:
    sbx.files.remove("/home/user/never-existed")
    assert sbx.files.make_dir("made") is True
    assert sbx.files.make_dir("made") is False
    sbx.files.write("file", "x")
    with pytest.raises(InvalidArgumentException):
        sbx.files.make_dir("file")
    with pytest.raises(InvalidArgumentException):
        sbx.files.list("made", depth=0)


def test_ownership_lets_user_move(sbx: Sandbox) -> None:
    sbx.files.make_dir("d")
    sbx.files.write("d/a", "x")
    sbx.commands.run("mv d/a d/b")
    assert sbx.files.read("d/b") == "x"
    assert sbx.files.get_info("d/b").owner == "user"


def test_watch_dir_events(sbx: Sandbox) -> None:
    sbx.files.make_dir("w")
    watch = sbx.files.watch_dir("w", recursive=True)
    seen = set()

    def saw(expected_events: set) -> bool:
        seen.update((event.name, event.type) for event in watch.get_new_events())
        return expected_events <= seen

    # The watch misses what is made inside a new directory before it covers
    # that directory, so the files come once a/b is watched.
    sbx.commands.run("mkdir -p a/b", cwd="w")
    assert wait_until(lambda: saw({("a/b", FilesystemEventType.CREATE)})), f"seen: {seen}"
    script = "echo x > a/b/f && mv a/b/f a/b/g && chmod 600 a/b/g && rm a/b/g"
    sbx.commands.run(script, cwd="w")
    expected = {
        ("a", FilesystemEventType.CREATE),
        ("a/b/f", FilesystemEventType.WRITE),
        ("a/b/f", FilesystemEventType.RENAME),
        ("a/b/g", FilesystemEventType.CHMOD),
        ("a/b/g", FilesystemEventType.REMOVE),
    }
    wait_until(lambda: saw(expected))
    watch.stop()
    assert expected <= seen, f"missing events: {expected - seen}"


def test_watch_loss_keeps_received_events(sbx: Sandbox) -> None:
    from soulbox import SandboxException

    sbx.files.make_dir("flood")
    watch = sbx.files.watch_dir("flood")
    # 12,000 events (create and attrib), more than a watch queues unread.
    sbx.commands.run("seq 1 6000 | xargs touch", cwd="flood")
    received: List[FilesystemEvent] = []
    losses: List[SandboxException] = []

    def drained() -> bool:
        try:
            received.extend(watch.get_new_events())
        except SandboxException as loss:
            losses.append(loss)
            return True
        return False

    assert wait_until(drained), "the loss was never reported"
    assert "events were dropped" in str(losses[0])
    assert len(received) > 0, "the events queued before the loss are returned"
    sbx.commands.run("touch after-loss", cwd="flood")
    assert wait_until(lambda: any(e.name == "after-loss" for e in watch.get_new_events()))
    watch.stop()


def test_watch_missing_and_file(sbx: Sandbox) -> None:
    with pytest.raises(FileNotFoundException) as raised:
        sbx.files.watch_dir("missing")
    assert isinstance(raised.value, FileNotFoundError)
    sbx.files.write("plain", "x")
    with pytest.raises(InvalidArgumentException):
        sbx.files.watch_dir("plain")


# Limits


def test_out_of_memory_reported() -> None:
    require_root()
    with Sandbox.create(memory_limit=256 << 20) as sandbox:
        toucher = "python3 -c 'import mmap; m = mmap.mmap(-1, 1 << 30); m[::4096] = b\"x\" * (1 << 18)'"
        started = time.monotonic()
        with pytest.raises(CommandExitException) as raised:
            sandbox.commands.run(toucher, timeout=30)
        assert time.monotonic() - started < 25, "the OOM kill should come quickly"
        assert raised.value.exit_code == 128 + 9
        assert raised.value.error is not None
        assert "out of memory" in raised.value.error
        assert sandbox.commands.run("echo alive").stdout == "alive\n"


def test_fork_bomb_contained() -> None:
    require_root()
    bombed = Sandbox.create(pids_limit=64)
    with Sandbox.create() as bystander:
        bomb = bombed.commands.run(":(){ :|:& };:", background=True)
        time.sleep(2)
        assert bystander.commands.run("sh -c 'echo from-child'").stdout == "from-child\n"
        bomb.kill()
        init_pid = bombed._native.pid
        bombed.kill()
        assert not host_process_alive(init_pid), "PID 1 should be gone after kill"


# PTY


def test_pty_session(sbx: Sandbox) -> None:
    from soulbox import PtySize

    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    terminal.send_stdin(b"stty size; echo marker-$((6*7))\n")
    seen = b""
    for _, _, data in terminal:
        seen += data or b""
        if b"marker-42" in seen:
            break
    assert b"24 80" in seen
    sbx.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    for _, _, data in terminal:
        seen += data or b""
    assert b"30 100" in seen


@pytest.mark.parametrize("rows", [65536, -1, 1.5, True])
def test_invalid_pty_size_rejected(sbx: Sandbox, rows: object) -> None:
    from soulbox import PtySize

    with pytest.raises(InvalidArgumentException, match=f"rows must be an int from 1 to 65535, not {rows!r}"):
        sbx.pty.create(rows=rows, cols=80)  # type: ignore[arg-type]
    terminal = sbx.pty.create()
    size = PtySize(rows=rows, cols=80)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentException, match="rows must be an int from 1 to 65535"):
        terminal.resize(size)
    with pytest.raises(InvalidArgumentException, match="rows must be an int from 1 to 65535"):
        sbx.pty.resize(terminal.pid, size)
    terminal.kill()


def test_write_takes_e2b_1x_list_form(sbx: Sandbox) -> None:
    written = sbx.files.write(
        [{"path": "/tmp/first.txt", "data": "one"}, WriteEntry(path="/tmp/second.txt", data=b"two")]
    )
    assert [info.path for info in written] == ["/tmp/first.txt", "/tmp/second.txt"]
    assert sbx.files.read("/tmp/second.txt") == "two"
    # E2B 1.x takes the user second.
    sbx.files.write([{"path": "/root/by-root.txt", "data": "root's"}], "root")
    assert sbx.files.read("/root/by-root.txt", user="root") == "root's"
    with pytest.raises(InvalidArgumentException, match="user twice"):
        sbx.files.write([], "root", user="root")
    with pytest.raises(InvalidArgumentException, match="missing its data"):
        sbx.files.write("/tmp/no-data.txt")  # type: ignore[call-overload]


def test_write_files_takes_write_entries(sbx: Sandbox) -> None:
    written = sbx.files.write_files(
        [
            WriteEntry(path="/tmp/entry.txt", data="from a WriteEntry"),
            {"path": "/tmp/dict.txt", "data": b"from a dict"},
        ]
    )
    assert [info.path for info in written] == ["/tmp/entry.txt", "/tmp/dict.txt"]
    assert sbx.files.read("/tmp/entry.txt") == "from a WriteEntry"
    assert sbx.files.read("/tmp/dict.txt") == "from a dict"
    with pytest.raises(InvalidArgumentException, match="WriteEntry"):
        sbx.files.write_files([("/tmp/tuple.txt", "a tuple")])  # type: ignore[list-item]
