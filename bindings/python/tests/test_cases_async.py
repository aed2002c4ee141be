"""The behaviours users depend on, through AsyncSandbox."""

import asyncio
import gc
import io
import time
from typing import Any, Awaitable, Callable, Dict, List

import pytest

from conftest import current_rss, host_process_alive, require_root
from soulbox import (
    AsyncSandbox,
    CommandExitException,
    FileNotFoundException,
    FilesystemEvent,
    FilesystemEventType,
    InvalidArgumentException,
    PtySize,
    TimeoutException,
)


def with_sandbox(test: Callable[[AsyncSandbox], Awaitable[None]]) -> Callable[[], None]:
    """Run an async test in a new event loop with a fresh sandbox."""

    def run() -> None:
        require_root()

        async def main() -> None:
            async with await AsyncSandbox.create() as sandbox:
                await test(sandbox)

        asyncio.run(main())

    run.__name__ = test.__name__
    return run


def in_loop(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Run an async test that creates its own sandboxes."""

    def run() -> None:
        require_root()
        asyncio.run(test())

    run.__name__ = test.__name__
    return run


async def processes_named(sbx: AsyncSandbox, name: str) -> List[str]:
    stat = (await sbx.commands.run("cat /proc/[0-9]*/stat 2>/dev/null; true")).stdout
    found = []
    for line in stat.splitlines():
        open_paren, close_paren = line.find("("), line.rfind(")")
        if open_paren >= 0 and close_paren >= 0 and line[open_paren + 1 : close_paren] == name:
            found.append(line[:open_paren].strip())
    return found


async def wait_until(check: Callable[[], Awaitable[bool]], limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def no_sleep_left(sbx: AsyncSandbox) -> bool:
    return await wait_until(lambda: _none_named(sbx, "sleep"))


async def _none_named(sbx: AsyncSandbox, name: str) -> bool:
    return not await processes_named(sbx, name)


# Processes


@with_sandbox
async def test_timeout_kills_tree(sbx: AsyncSandbox) -> None:
    with pytest.raises(TimeoutException):
        await sbx.commands.run("sleep 300 & sleep 300 & wait", timeout=2)
    assert await no_sleep_left(sbx), await processes_named(sbx, "sleep")


@with_sandbox
async def test_handle_kill_ends_tree(sbx: AsyncSandbox) -> None:
    handle = await sbx.commands.run("sleep 300 & sleep 300 & wait", background=True)

    async def two_sleeps() -> bool:
        return len(await processes_named(sbx, "sleep")) == 2

    assert await wait_until(two_sleeps), "sleeps did not start"
    assert await handle.kill() is True
    assert await no_sleep_left(sbx), await processes_named(sbx, "sleep")


@with_sandbox
async def test_cancel_kills_command(sbx: AsyncSandbox) -> None:
    task = asyncio.ensure_future(sbx.commands.run("sleep 300 & sleep 300 & wait"))

    async def two_sleeps() -> bool:
        return len(await processes_named(sbx, "sleep")) == 2

    assert await wait_until(two_sleeps), "sleeps did not start"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await no_sleep_left(sbx), await processes_named(sbx, "sleep")


@with_sandbox
async def test_stdin(sbx: AsyncSandbox) -> None:
    result = await asyncio.wait_for(sbx.commands.run("cat"), 5)
    assert result.stdout == ""
    handle = await sbx.commands.run("cat", background=True, stdin=True)
    await handle.send_stdin("hello\n")
    await handle.close_stdin()
    assert (await handle.wait()).stdout == "hello\n"


@with_sandbox
async def test_output_decoding(sbx: AsyncSandbox) -> None:
    lone = await sbx.commands.run("head -c 8191 /dev/zero | tr '\\0' a; printf '\\342'")
    assert lone.stdout == "a" * 8191 + "\ufffd"
    chunks: List[str] = []

    async def collect(chunk: str) -> None:
        chunks.append(chunk)

    await sbx.commands.run("printf '\\342'; sleep 0.2; printf '\\202\\254'", on_stdout=collect)
    assert "".join(chunks) == "€"
    random = await sbx.commands.run("head -c 4096 /dev/urandom")
    assert len(random.stdout) > 0


@with_sandbox
async def test_large_output(sbx: AsyncSandbox) -> None:
    counted = await sbx.commands.run("yes | head -c 200000000 | wc -c", timeout=120)
    assert counted.stdout.strip() == "200000000"
    total = 0
    peak = before = current_rss()

    def count(chunk: str) -> None:
        nonlocal total, peak
        total += len(chunk)
        peak = max(peak, current_rss())

    await sbx.commands.run("head -c 100000000 /dev/zero | tr '\\0' a", on_stdout=count, timeout=120)
    assert total == 100_000_000
    assert peak - before < 40 << 20, f"resident memory grew by {peak - before} bytes"


@with_sandbox
async def test_nonzero_exit(sbx: AsyncSandbox) -> None:
    with pytest.raises(CommandExitException) as raised:
        await sbx.commands.run("echo out; echo err >&2; exit 3")
    assert raised.value.stdout == "out\n"
    assert raised.value.stderr == "err\n"
    assert raised.value.exit_code == 3


@in_loop
async def test_env_layering() -> None:
    async with await AsyncSandbox.create(envs={"FOO": "bar"}) as sbx:
        assert (await sbx.commands.run("echo $FOO")).stdout == "bar\n"
        assert (await sbx.commands.run("echo $FOO", envs={"FOO": "baz"})).stdout == "baz\n"
        assert (await sbx.commands.run("echo $HOME $USER")).stdout == "/home/user user\n"
        assert (await sbx.commands.run("whoami", user="root")).stdout == "root\n"


@with_sandbox
async def test_bad_cwd(sbx: AsyncSandbox) -> None:
    with pytest.raises(InvalidArgumentException) as raised:
        await sbx.commands.run("touch /tmp/ran", cwd="/nope")
    assert "/nope" in str(raised.value)
    assert not await sbx.files.exists("/tmp/ran")


# Files


@with_sandbox
async def test_binary_and_empty(sbx: AsyncSandbox) -> None:
    data = bytes(range(256)) * 1000
    await sbx.files.write("bin.dat", data)
    assert bytes(await sbx.files.read("bin.dat", format="bytes")) == data
    streamed = b""
    async with await sbx.files.read("bin.dat", format="stream") as stream:
        async for chunk in stream:
            streamed += chunk
    assert streamed == data
    await sbx.files.write("from-object.dat", io.BytesIO(data))
    assert bytes(await sbx.files.read("from-object.dat", format="bytes")) == data
    await sbx.files.write("empty", "")
    assert await sbx.files.read("empty") == ""
    listed = await sbx.files.write([{"path": "listed.txt", "data": "in a list"}])
    assert [info.path for info in listed] == ["/home/user/listed.txt"]
    assert await sbx.files.read("listed.txt") == "in a list"
    assert await sbx.files.read("empty", format="bytes") == bytearray()
    assert (await sbx.files.get_info("empty")).size == 0
    await sbx.commands.run("touch touched")
    assert await sbx.files.read("touched") == ""


@with_sandbox
async def test_odd_names(sbx: AsyncSandbox) -> None:
    path = "dir with space/ünï😀.txt"
    await sbx.files.write(path, "odd")
    assert [e.name for e in await sbx.files.list("dir with space")] == ["ünï😀.txt"]
    assert await sbx.files.read(path) == "odd"
    await sbx.files.rename(path, "dir with space/ëmoji 🚀.txt")
    await sbx.files.remove("dir with space/ëmoji 🚀.txt")
    assert await sbx.files.list("dir with space") == []


@with_sandbox
async def test_idempotent_and_ownership(sbx: AsyncSandbox) -> None:
    await sbx.files.remove("never-existed")
    assert await sbx.files.make_dir("d") is True
    assert await sbx.files.make_dir("d") is False
    await sbx.files.write("d/a", "x")
    with pytest.raises(InvalidArgumentException):
        await sbx.files.make_dir("d/a")
    with pytest.raises(InvalidArgumentException):
        await sbx.files.list("d", depth=0)
    await sbx.commands.run("mv d/a d/b")
    assert await sbx.files.read("d/b") == "x"


@with_sandbox
async def test_watch_dir(sbx: AsyncSandbox) -> None:
    await sbx.files.make_dir("w")
    seen = set()
    exits: List[Any] = []

    def record(event: FilesystemEvent) -> None:
        seen.add((event.name, event.type))

    watch = await sbx.files.watch_dir("w", record, on_exit=exits.append, recursive=True)

    async def directory_created() -> bool:
        return ("a/b", FilesystemEventType.CREATE) in seen

    # The watch misses what is made inside a new directory before it covers
    # that directory, so the files come once a/b is watched.
    await sbx.commands.run("mkdir -p a/b", cwd="w")
    assert await wait_until(directory_created), f"seen: {seen}"
    script = "echo x > a/b/f && mv a/b/f a/b/g && chmod 600 a/b/g && rm a/b/g"
    await sbx.commands.run(script, cwd="w")
    expected = {
        ("a", FilesystemEventType.CREATE),
        ("a/b/f", FilesystemEventType.WRITE),
        ("a/b/f", FilesystemEventType.RENAME),
        ("a/b/g", FilesystemEventType.CHMOD),
        ("a/b/g", FilesystemEventType.REMOVE),
    }

    async def all_seen() -> bool:
        return expected <= seen

    await wait_until(all_seen)
    await watch.stop()
    assert expected <= seen, f"missing events: {expected - seen}"
    assert exits == [None]
    with pytest.raises(FileNotFoundException):
        await sbx.files.watch_dir("missing", record)
    await sbx.files.write("plain", "x")
    with pytest.raises(InvalidArgumentException):
        await sbx.files.watch_dir("plain", record)


# Limits


@in_loop
async def test_out_of_memory() -> None:
    async with await AsyncSandbox.create(memory_limit=256 << 20) as sbx:
        toucher = "python3 -c 'import mmap; m = mmap.mmap(-1, 1 << 30); m[::4096] = b\"x\" * (1 << 18)'"
        with pytest.raises(CommandExitException) as raised:
            await sbx.commands.run(toucher, timeout=30)
        assert raised.value.error is not None
        assert "out of memory" in raised.value.error
        assert (await sbx.commands.run("echo alive")).stdout == "alive\n"


@in_loop
async def test_fork_bomb() -> None:
    bombed = await AsyncSandbox.create(pids_limit=64)
    async with await AsyncSandbox.create() as bystander:
        bomb = await bombed.commands.run(":(){ :|:& };:", background=True)
        await asyncio.sleep(2)
        other = await bystander.commands.run("sh -c 'echo from-child'")
        assert other.stdout == "from-child\n"
        await bomb.kill()
        init_pid = bombed._native.pid
        await bombed.kill()
        assert not host_process_alive(init_pid)


# PTY


@with_sandbox
async def test_pty_session(sbx: AsyncSandbox) -> None:
    output = bytearray()
    marker = asyncio.Event()

    def on_data(data: bytes) -> None:
        output.extend(data)
        if b"marker-42" in output:
            marker.set()

    terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=on_data)
    await terminal.send_stdin(b"stty size; echo marker-$((6*7))\n")
    await asyncio.wait_for(marker.wait(), 10)
    assert b"24 80" in output
    await sbx.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    await sbx.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    await terminal.wait()
    assert b"30 100" in output


@with_sandbox
async def test_invalid_pty_size_rejected(sbx: AsyncSandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="cols must be an int from 1 to 65535, not 65536"):
        await sbx.pty.create(PtySize(rows=24, cols=65536), on_data=lambda data: None)
    terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=lambda data: None)
    too_wide = PtySize(rows=24, cols=65536)
    with pytest.raises(InvalidArgumentException, match="cols must be an int from 1 to 65535"):
        await terminal.resize(too_wide)
    with pytest.raises(InvalidArgumentException, match="cols must be an int from 1 to 65535"):
        await sbx.pty.resize(terminal.pid, too_wide)
    await terminal.kill()
    with pytest.raises(CommandExitException):
        await terminal.wait()


@with_sandbox
async def test_kill_without_wait_reports_nothing(sbx: AsyncSandbox) -> None:
    # asyncio reports "Task exception was never retrieved" through the
    # loop's exception handler when it collects a task whose exception no
    # caller retrieved.
    reports: List[Dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reports.append(context))
    terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=lambda data: None)
    command = await sbx.commands.run("sleep 300", background=True, on_stdout=lambda text: None)
    assert await terminal.kill() is True
    assert await command.kill() is True

    # Let the tasks that deliver the output see the exits, and then drop
    # every reference to them, so that the collection finalizes them.
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=10)
    del terminal, command, others
    gc.collect()

    messages = [str(report.get("message")) for report in reports]
    assert messages == []
