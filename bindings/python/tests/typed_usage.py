"""Type-checked with mypy --strict in CI, never run: each annotation states
the type the shipped stubs and inline types must give."""

from typing import Any, Dict, Iterator, List, Optional, Tuple

from soulbox import (
    ALL_TRAFFIC,
    AsyncCommandHandle,
    Context,
    Execution,
    ExecutionError,
    AsyncFileStreamReader,
    AsyncSandbox,
    AsyncSandboxPool,
    CommandHandle,
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    FileStreamReader,
    FileType,
    MAX_POOL_SIZE,
    OutputMessage,
    ProcessInfo,
    PtySize,
    Result,
    Sandbox,
    SandboxInfo,
    SandboxPool,
    WatchHandle,
    WriteInfo,
)


def network_usage() -> None:
    everything: str = ALL_TRAFFIC
    with Sandbox.create(network={"deny_out": [everything], "allow_out": ["192.0.2.1"]}) as sbx:
        info: SandboxInfo = sbx.get_info()
        internet: bool = info.allow_internet_access
        rules: Optional[Dict[str, List[str]]] = info.network
        lifecycle: Dict[str, Any] = info.lifecycle
        del internet, rules, lifecycle
        sbx.kill()


def sync_usage() -> None:
    with Sandbox.create(timeout=60, envs={"A": "1"}, metadata={"k": "v"}) as sbx:
        sandbox_id: str = sbx.sandbox_id
        result: CommandResult = sbx.commands.run("echo hi", cwd="/tmp", user="root")
        code: int = result.exit_code
        error: Optional[str] = result.error
        handle: CommandHandle = sbx.commands.run("sleep 1", background=True, stdin=True)
        pid: int = handle.pid
        chunks: Iterator[Tuple[Optional[str], Optional[str], Optional[bytes]]] = iter(handle)
        killed: bool = handle.kill()
        listed: List[ProcessInfo] = sbx.commands.list()
        text: str = sbx.files.read("a.txt")
        data: bytearray = sbx.files.read("a.txt", format="bytes")
        stream: FileStreamReader = sbx.files.read("a.txt", format="stream")
        written: WriteInfo = sbx.files.write("a.txt", b"x")
        entries: List[EntryInfo] = sbx.files.list("/home/user", depth=2)
        kind: Optional[FileType] = entries[0].type
        made: bool = sbx.files.make_dir("d")
        watch: WatchHandle = sbx.files.watch_dir("d", recursive=True)
        events: List[FilesystemEvent] = watch.get_new_events()
        terminal: CommandHandle = sbx.pty.create(PtySize(rows=24, cols=80))
        sbx.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
        del sandbox_id, code, error, pid, chunks, killed, listed, text, data, stream
        del written, kind, made, events

        def on_stdout(message: OutputMessage) -> None:
            print(message.line, message.timestamp, message.error)

        context: Context = sbx.create_code_context(cwd="/tmp")
        execution: Execution = sbx.run_code("1", context=context, on_stdout=on_stdout, timeout=5)
        value: Optional[str] = execution.text
        results: List[Result] = execution.results
        formats: List[str] = results[0].formats()
        failure: Optional[ExecutionError] = execution.error
        stdout: List[str] = execution.logs.stdout
        contexts: List[Context] = sbx.list_code_contexts()
        sbx.restart_code_context(context.id)
        sbx.remove_code_context(context)
        del value, formats, failure, stdout, contexts


async def async_usage() -> None:
    async with await AsyncSandbox.create() as sbx:
        result: CommandResult = await sbx.commands.run("echo hi")
        handle: AsyncCommandHandle = await sbx.commands.run("sleep 1", background=True)
        waited: CommandResult = await handle.wait()
        text: str = await sbx.files.read("a.txt")
        stream: AsyncFileStreamReader = await sbx.files.read("a.txt", format="stream")
        exists: bool = await sbx.files.exists("a.txt")
        execution: Execution = await sbx.run_code("1", language="python")
        context: Context = await sbx.create_code_context()
        await sbx.remove_code_context(context)
        del result, waited, text, stream, exists, execution


def pool_usage() -> None:
    with SandboxPool(2, timeout=60, metadata={"k": "v"}, memory_limit=None) as pool:
        size: int = pool.size
        waiting: int = pool.waiting
        largest: int = MAX_POOL_SIZE
        sbx: Sandbox = pool.create()
        sbx.kill()
        del size, waiting, largest
    pool.close()


async def async_pool_usage() -> None:
    async with AsyncSandboxPool(1, template="host") as pool:
        sbx: AsyncSandbox = await pool.create()
        await sbx.kill()
        waiting: int = pool.waiting
        del waiting
    await pool.close()


if __name__ == "__main__":
    raise SystemExit("typed_usage.py is for mypy; run the tests with pytest")
