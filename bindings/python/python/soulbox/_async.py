"""The asyncio API: :class:`AsyncSandbox` and the objects it hands out.

Each call is a coroutine over the same Rust code as the synchronous API.
It runs on SoulBox's tokio runtime, so awaiting it never blocks the event
loop.
Cancelling a ``commands.run`` kills the command's whole process tree.
Callbacks may be plain functions or coroutine functions.
"""

import asyncio
import inspect
import os
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Literal, Optional, Union, overload

from . import _code, _common, _native
from ._code import Context, Execution
from ._common import Chunk, EventStream
from ._pool import PoolBase, handed_over
from ._sync import _class_method_variant, _list_depth
from ._types import (
    BuiltTemplate,
    CommandResult,
    SandboxNetworkOpts,
    CopySummary,
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    Mount,
    PaginatorBase,
    ProcessInfo,
    PtySize,
    SandboxInfo,
    SandboxMetrics,
    SandboxQuery,
    SeccompPolicy,
    WriteEntry,
    WriteInfo,
    built_from_native,
    copy_from_native,
    entry_from_native,
    info_from_native,
    metrics_from_native,
    process_from_native,
    query_to_native,
)
from .exceptions import (
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)

__all__ = [
    "AsyncSandbox",
    "AsyncCommands",
    "AsyncCommandHandle",
    "AsyncPty",
    "AsyncFilesystem",
    "AsyncFileStreamReader",
    "AsyncWatchHandle",
    "AsyncSandboxPaginator",
    "AsyncSandboxPool",
]

Handler = Callable[[Any], Union[None, Awaitable[None]]]


async def _call(handler: Optional[Handler], value: Any) -> None:
    if handler is None:
        return
    result = handler(value)
    if inspect.isawaitable(result):
        await result


class AsyncCommandHandle:
    """A running command or PTY session, for asyncio.

    With callbacks given at its start, a task delivers the output to them
    at once and :meth:`wait` awaits that task. Otherwise ``async for``
    yields ``(stdout, stderr, pty)`` tuples, and :meth:`wait` reads what
    is left. Output delivered to a callback or by iteration is not kept
    for the result.
    """

    def __init__(
        self,
        native: "_native.NativeCommand",
        owner: "_native.NativeSandbox",
        pty: bool = False,
        timeout: Optional[float] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
        on_pty: Optional[Handler] = None,
    ) -> None:
        self._native = native
        self._owner = owner
        self._stream = EventStream(pty, timeout)
        # The task only delivers output, and wait() raises the command's
        # exit. A command killed on purpose then leaves no exception in a
        # task that no caller awaits, which asyncio would log as "Task
        # exception was never retrieved".
        self._task: Optional["asyncio.Task[None]"] = None
        if on_stdout is not None or on_stderr is not None or on_pty is not None:
            self._task = asyncio.get_running_loop().create_task(
                self._deliver(on_pty, on_stdout, on_stderr)
            )

    @property
    def pid(self) -> int:
        """The pid of the command's first process inside the sandbox."""
        return self._native.pid

    def __aiter__(self) -> AsyncIterator[Chunk]:
        self._stream.keep_stdout = self._stream.keep_stderr = False
        return self._events()

    async def _events(self) -> AsyncIterator[Chunk]:
        while True:
            raw = await self._native.next_event_async()
            if raw is None:
                return
            for chunk in self._stream.feed(raw):
                yield chunk

    async def _deliver(
        self,
        on_pty: Optional[Handler],
        on_stdout: Optional[Handler],
        on_stderr: Optional[Handler],
    ) -> None:
        self._stream.keep_stdout = on_stdout is None
        self._stream.keep_stderr = on_stderr is None
        async for stdout, stderr, pty in self._events():
            if stdout is not None:
                await _call(on_stdout, stdout)
            elif stderr is not None:
                await _call(on_stderr, stderr)
            elif pty is not None:
                await _call(on_pty, pty)

    async def wait(
        self,
        on_pty: Optional[Handler] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
    ) -> CommandResult:
        """Wait for the command to end and return its result.

        :raises CommandExitException: on a non-zero exit, with the output.
        :raises TimeoutException: when the command's timeout ended it.
        """
        if self._task is not None:
            await self._task
        else:
            await self._deliver(on_pty, on_stdout, on_stderr)
        return self._stream.result()

    async def kill(self) -> bool:
        """Kill the command and every process it started.

        :return: whether its first process was still running.
        """
        return await self._native.kill_async()

    async def send_stdin(self, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Write to the command's stdin (started with ``stdin=True``)."""
        await self._native.send_stdin_async(_common.to_bytes(data))

    async def close_stdin(self, request_timeout: Optional[float] = None) -> None:
        """Close the command's stdin, so it reads end of file."""
        await self._native.close_stdin_async()

    async def resize(self, size: PtySize) -> None:
        """Resize the PTY of a PTY session (SoulBox only)."""
        rows, cols = _common.terminal_size(size.rows, size.cols)
        self._native.resize(rows, cols)

    async def disconnect(self) -> None:
        """Stop receiving output; the command keeps running."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._native.disconnect()


class AsyncCommands:
    """Runs and controls commands in a sandbox: ``sbx.commands``."""

    def __init__(self, native: "_native.NativeSandbox") -> None:
        self._native = native

    async def list(self, request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        """List the running commands and PTY sessions."""
        return [process_from_native(raw) for raw in self._native.list_commands()]

    async def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kill a running command's whole process tree.

        :return: False if no running command has this pid.
        """
        try:
            command = self._native.connect_command(pid)
        except NotFoundException:
            return False
        return await command.kill_async()

    async def send_stdin(
        self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None
    ) -> None:
        """Write to a running command's stdin."""
        await self._native.connect_command(pid).send_stdin_async(_common.to_bytes(data))

    async def close_stdin(self, pid: int, request_timeout: Optional[float] = None) -> None:
        """Close a running command's stdin."""
        await self._native.connect_command(pid).close_stdin_async()

    async def connect(
        self,
        pid: int,
        timeout: Optional[float] = 60,
        request_timeout: Optional[float] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
    ) -> AsyncCommandHandle:
        """Attach a new handle to a running command; see
        :meth:`soulbox.Commands.connect`."""
        native = self._native.connect_command(pid)
        return AsyncCommandHandle(native, self._native, False, None, on_stdout, on_stderr)

    @overload
    async def run(
        self,
        cmd: str,
        background: Optional[Literal[False]] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str,
        background: Literal[True],
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str,
        background: Optional[bool] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> Any:
        """Run a command line through ``/bin/bash -l -c``; see
        :meth:`soulbox.Commands.run` for every parameter.

        :raises CommandExitException: on a non-zero exit, with the output.
        :raises TimeoutException: when the timeout ended the command.
        """
        limit = _common.command_timeout(timeout, bool(background))
        spec = _common.command_spec(cmd, envs, user, cwd, limit, stdin, tag)
        if not background and on_stdout is None and on_stderr is None:
            return _common.result_from_run(await self._native.run_async(spec), limit)
        native = await self._native.start_async(spec)
        handle = AsyncCommandHandle(native, self._native, False, limit, on_stdout, on_stderr)
        if background:
            return handle
        try:
            return await handle.wait()
        except BaseException:
            # Cancelled, or a callback failed: the command must not outlive
            # the call.
            await native.kill_async()
            raise


class AsyncPty:
    """Interactive terminals in a sandbox: ``sbx.pty``."""

    def __init__(self, native: "_native.NativeSandbox") -> None:
        self._native = native

    async def create(
        self,
        size: Optional[PtySize] = None,
        on_data: Optional[Handler] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        rows: Optional[int] = None,
        cols: Optional[int] = None,
    ) -> AsyncCommandHandle:
        """Start ``bash -i -l`` on a new pseudo-terminal; ``on_data``
        receives its output as bytes. See :meth:`soulbox.Pty.create`."""
        limit = _common.command_timeout(timeout, True)
        spec = _common.pty_spec(size, rows, cols, envs, user, cwd, limit)
        native = await self._native.start_pty_async(spec)
        return AsyncCommandHandle(native, self._native, True, limit, on_pty=on_data)

    async def connect(
        self,
        pid: int,
        on_data: Optional[Handler] = None,
        timeout: Optional[float] = 60,
        request_timeout: Optional[float] = None,
    ) -> AsyncCommandHandle:
        """Attach a new handle to a running PTY session."""
        native = self._native.connect_command(pid)
        return AsyncCommandHandle(native, self._native, True, on_pty=on_data)

    async def send_stdin(self, pid: int, data: bytes, request_timeout: Optional[float] = None) -> None:
        """Type ``data`` into the PTY session ``pid``."""
        await self._native.connect_command(pid).send_stdin_async(_common.to_bytes(data))

    async def resize(self, pid: int, size: PtySize, request_timeout: Optional[float] = None) -> None:
        """Resize the PTY session ``pid``; its shell gets SIGWINCH."""
        rows, cols = _common.terminal_size(size.rows, size.cols)
        self._native.connect_command(pid).resize(rows, cols)

    async def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kill the PTY session ``pid``; False if none runs with this pid."""
        return await AsyncCommands(self._native).kill(pid)


class AsyncFileStreamReader(AsyncIterator[bytes]):
    """A sandbox file read in chunks of up to 1 MiB, for ``async for``."""

    def __init__(self, native: "_native.NativeFileReader", owner: "_native.NativeSandbox") -> None:
        self._native = native
        self._owner = owner

    def __aiter__(self) -> "AsyncFileStreamReader":
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._native.read_chunk_async()
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Close the file; safe to call more than once."""
        self._native.close()

    async def __aenter__(self) -> "AsyncFileStreamReader":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


class AsyncWatchHandle:
    """A running watch whose task passes each event to ``on_event``."""

    def __init__(
        self,
        native: "_native.NativeWatcher",
        owner: "_native.NativeSandbox",
        on_event: Handler,
        on_exit: Optional[Handler],
        timeout: Optional[float],
    ) -> None:
        self._native = native
        self._owner = owner
        self._on_event = on_event
        self._on_exit = on_exit
        self._task = asyncio.get_running_loop().create_task(self._run(timeout))

    async def _run(self, timeout: Optional[float]) -> None:
        error: Optional[BaseException] = None
        try:
            await asyncio.wait_for(self._deliver(), timeout)
        except asyncio.TimeoutError:
            error = TimeoutException(f"the watch ended at its timeout of {timeout:g} s")
        except asyncio.CancelledError:
            await _call(self._on_exit, None)
            raise
        except Exception as failure:
            error = failure
        self._native.stop()
        await _call(self._on_exit, error)

    async def _deliver(self) -> None:
        while True:
            item = await self._native.next_event_async(None)
            if item is None:
                return
            event = FilesystemEvent(name=item[1], type=FilesystemEventType(item[2]))
            await _call(self._on_event, event)

    async def stop(self) -> None:
        """Stop watching; ``on_exit`` receives None."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._native.stop()


class AsyncFilesystem:
    """The sandbox's files, from the host side: ``sbx.files``; see
    :class:`soulbox.Filesystem` for the semantics of each call."""

    def __init__(self, native: "_native.NativeSandbox") -> None:
        self._native = native

    @overload
    async def read(
        self,
        path: str,
        format: Literal["text"] = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> str: ...

    @overload
    async def read(
        self,
        path: str,
        format: Literal["bytes"],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bytearray: ...

    @overload
    async def read(
        self,
        path: str,
        format: Literal["stream"],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> AsyncFileStreamReader: ...

    async def read(
        self,
        path: str,
        format: str = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Any:
        """Read a file as ``str``, ``bytearray`` or an
        :class:`AsyncFileStreamReader` (``format="stream"``)."""
        if format == "stream":
            native = await self._native.open_file_async(path, user)
            return AsyncFileStreamReader(native, self._native)
        if format not in ("text", "bytes"):
            raise InvalidArgumentException(
                f"format {format!r} is invalid; use 'text', 'bytes' or 'stream'"
            )
        data = await self._native.read_file_async(path, user)
        return data.decode("utf-8", "replace") if format == "text" else bytearray(data)

    @overload
    async def write(
        self, path: str, data: Any, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> WriteInfo: ...

    @overload
    async def write(
        self,
        path: List[Union[WriteEntry, Dict[str, Any]]],
        data: Optional[str] = None,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[WriteInfo]: ...

    async def write(
        self,
        path: Any,
        data: Any = _common.NO_DATA,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Any:
        """Write a whole file, creating missing parent directories; see
        :meth:`soulbox.Filesystem.write`, also for E2B 1.x's list form."""
        if isinstance(path, list):
            return await self.write_files(path, _common.entries_user(data, user), request_timeout)
        if data is _common.NO_DATA:
            raise InvalidArgumentException("write is missing its data: pass write(path, data)")
        if not _common.is_stream(data):
            await self._native.write_file_async(path, _common.to_bytes(data), user)
            return _common.write_info(path)
        writer = self._native.open_writer(path, user)
        try:
            for chunk in _common.stream_chunks(data):
                await writer.write_async(chunk)
        except BaseException:
            await writer.abort_async()
            raise
        await writer.finish_async()
        return _common.write_info(path)

    async def write_files(
        self, files: List[Union[WriteEntry, Dict[str, Any]]], user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> List[WriteInfo]:
        """Write several files in order, each a ``WriteEntry`` or a dict
        with ``path`` and ``data``; ``data`` is as for :meth:`write`."""
        requested = _common.write_entries(files)
        if any(_common.is_stream(data) for _, data in requested):
            return [await self.write(path, data, user) for path, data in requested]
        entries = [(path, _common.to_bytes(data)) for path, data in requested]
        if entries:
            await self._native.write_files_async(entries, user)
        return [_common.write_info(path) for path, _ in entries]

    async def list(
        self,
        path: str,
        depth: Optional[int] = 1,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[EntryInfo]:
        """List a directory ``depth`` levels deep, sorted by path."""
        raw = await self._native.list_dir_async(path, _list_depth(depth), user)
        return [entry_from_native(entry) for entry in raw]

    async def exists(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Return whether ``path`` exists."""
        return await self._native.exists_async(path, user)

    async def get_info(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> EntryInfo:
        """Describe ``path`` without following a final symlink."""
        return entry_from_native(await self._native.stat_async(path, user))

    async def remove(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> None:
        """Remove a file or a directory tree; a missing path is not an error."""
        await self._native.remove_async(path, user)

    async def rename(
        self, old_path: str, new_path: str, user: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> EntryInfo:
        """Rename ``old_path`` to ``new_path`` and describe the result."""
        return entry_from_native(await self._native.rename_async(old_path, new_path, user))

    async def make_dir(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Create a directory and its parents; False if it existed."""
        return await self._native.make_dir_async(path, user)

    async def watch_dir(
        self,
        path: str,
        on_event: Handler,
        on_exit: Optional[Handler] = None,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
        timeout: Optional[float] = 60,
        recursive: bool = False,
    ) -> AsyncWatchHandle:
        """Watch a directory and pass each event to ``on_event``.

        ``timeout`` in seconds (0 or None: none) ends the watch, and
        ``on_exit`` then receives a TimeoutException; after :meth:`stop`
        it receives None.
        """
        limit = None if not timeout else _common.seconds("timeout", timeout)
        native = await self._native.watch_dir_async(path, recursive, user)
        return AsyncWatchHandle(native, self._native, on_event, on_exit, limit)

    async def copy_in(self, host_path: str, sandbox_path: str, user: Optional[str] = None) -> CopySummary:
        """Copy a host file or directory tree into the sandbox (SoulBox only)."""
        return copy_from_native(await self._native.copy_in_async(str(host_path), sandbox_path, user))

    async def copy_out(self, sandbox_path: str, host_path: str, user: Optional[str] = None) -> CopySummary:
        """Copy a sandbox file or directory tree to the host (SoulBox only)."""
        return copy_from_native(await self._native.copy_out_async(sandbox_path, str(host_path), user))


class AsyncSandboxPaginator(PaginatorBase):
    """Pages of ``AsyncSandbox.list``."""

    async def next_items(self, **opts: Any) -> List[SandboxInfo]:
        """Return the next page of sandboxes.

        :raises SandboxException: when ``has_next`` is false.
        """
        if not self.has_next:
            raise SandboxException("no more sandboxes to list; check has_next first")
        if self._items is None:
            metadata, state = query_to_native(self._query)
            listed = await _native.NativeSandbox.list_async(metadata, state)
            self._items = [info_from_native(raw) for raw in listed]
        return self._page()


class AsyncSandbox:
    """A sandbox on this machine, with the API of E2B's ``AsyncSandbox``;
    see :class:`soulbox.Sandbox`. Use it as an ``async with`` block."""

    def __init__(self, native: Optional["_native.NativeSandbox"] = None, **options: Any) -> None:
        if not isinstance(native, _native.NativeSandbox) or options:
            raise TypeError(
                "AsyncSandbox(...) does not create a sandbox: call AsyncSandbox.create(...) to make one or "
                "AsyncSandbox.connect(sandbox_id) to reach a running one"
            )
        self._native = native
        self._commands = AsyncCommands(native)
        self._pty = AsyncPty(native)
        self._files = AsyncFilesystem(native)

    @classmethod
    async def create(
        cls,
        template: Union[str, "os.PathLike[str]", None] = None,
        timeout: Optional[int] = None,
        metadata: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        secure: bool = True,
        allow_internet_access: Optional[bool] = None,
        network: Optional[SandboxNetworkOpts] = None,
        mcp: Any = None,
        lifecycle: Any = None,
        volume_mounts: Any = None,
        *,
        memory_limit: Optional[int] = _native.DEFAULT_MEMORY_LIMIT,
        pids_limit: Optional[int] = _native.DEFAULT_PIDS_LIMIT,
        cpu_limit: Optional[float] = None,
        disk_size: int = _native.DEFAULT_DISK_SIZE,
        tmp_size: int = _native.DEFAULT_TMP_SIZE,
        disk_inodes: int = _native.DEFAULT_DISK_INODES,
        open_files_limit: int = _native.DEFAULT_OPEN_FILES_LIMIT,
        file_size_limit: Optional[int] = None,
        kill_on_drop: bool = False,
        seccomp: Optional[SeccompPolicy] = None,
        mounts: Optional[List[Mount]] = None,
        **opts: Any,
    ) -> "AsyncSandbox":
        """Create a sandbox; see :meth:`soulbox.Sandbox.create`."""
        _common.check_connection_options(opts)
        native_options = _common.create_options(
            template,
            timeout,
            metadata,
            envs,
            allow_internet_access,
            network,
            mcp,
            lifecycle,
            volume_mounts,
            dict(
                memory_limit=memory_limit,
                pids_limit=pids_limit,
                cpu_limit=cpu_limit,
                disk_size=disk_size,
                tmp_size=tmp_size,
                disk_inodes=disk_inodes,
                open_files_limit=open_files_limit,
                file_size_limit=file_size_limit,
            ),
            kill_on_drop,
            seccomp,
            mounts,
        )
        return cls(await _native.NativeSandbox.create_async(native_options))

    @property
    def sandbox_id(self) -> str:
        """The sandbox id, which is also its hostname."""
        return self._native.sandbox_id

    @property
    def commands(self) -> AsyncCommands:
        """Commands in the sandbox."""
        return self._commands

    @property
    def pty(self) -> AsyncPty:
        """Pseudo-terminals in the sandbox."""
        return self._pty

    @property
    def files(self) -> AsyncFilesystem:
        """The sandbox's files."""
        return self._files

    async def is_running(self, request_timeout: Optional[float] = None) -> bool:
        """Return whether the sandbox still runs."""
        return self._native.is_running()

    def get_host(self, port: int) -> str:
        """Return ``127.0.0.1:PORT``: an address on this machine's loopback
        interface whose connections reach ``port`` on the sandbox's loopback,
        where E2B returns its sandbox's host name for the port. Connect with
        ``f"http://{sandbox.get_host(8000)}"``. The first call for a port
        starts the forwarding, which lasts until the sandbox ends or this
        object is dropped. Any process on this machine can connect to it.

        :raises InvalidArgumentException: for a port outside 1 to 65535.
        """
        return self._native.get_host(port)

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.kill()

    @staticmethod
    async def build_template(
        path: Union[str, "os.PathLike[str]"],
        name: Optional[str] = None,
        on_output: Optional[Callable[[str, bytes], None]] = None,
    ) -> BuiltTemplate:
        """Build a template from a ``soulbox.toml``; see
        :meth:`soulbox.Sandbox.build_template`."""
        raw = await _native.NativeSandbox.build_template_async(
            os.path.abspath(path), name, on_output
        )
        return built_from_native(raw)

    @classmethod
    async def _cls_kill(cls, sandbox_id: str, **opts: Any) -> bool:
        return await _native.NativeSandbox.kill_id_async(sandbox_id)

    @_class_method_variant("_cls_kill")
    async def kill(self, **opts: Any) -> bool:
        """Kill the sandbox; see :meth:`soulbox.Sandbox.kill`."""
        return await self._native.kill_async()

    @classmethod
    async def _cls_set_timeout(cls, sandbox_id: str, timeout: int, **opts: Any) -> None:
        native = await _native.NativeSandbox.connect_paused_async(sandbox_id)
        await native.set_timeout_async(_common.seconds("timeout", timeout))

    @_class_method_variant("_cls_set_timeout")
    async def set_timeout(self, timeout: int, **opts: Any) -> None:
        """Set the sandbox to end ``timeout`` seconds from now (0: never)."""
        await self._native.set_timeout_async(_common.seconds("timeout", timeout))

    @classmethod
    async def _cls_connect(
        cls, sandbox_id: str, timeout: Optional[int] = None, **opts: Any
    ) -> "AsyncSandbox":
        sandbox = cls(await _native.NativeSandbox.connect_async(sandbox_id))
        if timeout is not None:
            await sandbox.set_timeout(timeout)
        return sandbox

    @_class_method_variant("_cls_connect")
    async def connect(self, timeout: Optional[int] = None, **opts: Any) -> "AsyncSandbox":
        """Resume and return this sandbox, or with a sandbox id, connect to
        another one; see :meth:`soulbox.Sandbox.connect`."""
        await self._native.resume_async()
        if timeout is not None:
            await self.set_timeout(timeout)
        return self

    @classmethod
    def list(
        cls,
        query: Optional[SandboxQuery] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        **opts: Any,
    ) -> "AsyncSandboxPaginator":
        """List this user's sandboxes; read pages with
        ``await next_items()``. See :meth:`soulbox.Sandbox.list`."""
        return AsyncSandboxPaginator(_common.check_query(query), limit, next_token)

    @classmethod
    async def _cls_get_info(cls, sandbox_id: str, **opts: Any) -> SandboxInfo:
        native = await _native.NativeSandbox.connect_paused_async(sandbox_id)
        return info_from_native(await native.get_info_async())

    @_class_method_variant("_cls_get_info")
    async def get_info(self, **opts: Any) -> SandboxInfo:
        """Describe the sandbox; see :meth:`soulbox.Sandbox.get_info`."""
        return info_from_native(await self._native.get_info_async())

    @classmethod
    async def _cls_get_metrics(
        cls, sandbox_id: str, start: Any = None, end: Any = None, **opts: Any
    ) -> List[SandboxMetrics]:
        native = await _native.NativeSandbox.connect_paused_async(sandbox_id)
        return [metrics_from_native(await native.metrics_async())]

    @_class_method_variant("_cls_get_metrics")
    async def get_metrics(
        self, start: Any = None, end: Any = None, **opts: Any
    ) -> List[SandboxMetrics]:
        """Return one reading of resource use; see
        :meth:`soulbox.Sandbox.get_metrics`."""
        return [metrics_from_native(await self._native.metrics_async())]

    @classmethod
    async def _cls_pause(cls, sandbox_id: str, **opts: Any) -> bool:
        native = await _native.NativeSandbox.connect_paused_async(sandbox_id)
        return await native.pause_async()

    @_class_method_variant("_cls_pause")
    async def pause(self, **opts: Any) -> bool:
        """Pause the sandbox; False if it was paused already."""
        return await self._native.pause_async()

    @_class_method_variant("_cls_pause")
    async def beta_pause(self, **opts: Any) -> bool:
        """Pause the sandbox as :meth:`pause` does. E2B's beta SDKs use this name."""
        return await self._native.pause_async()

    @classmethod
    async def _cls_resume(cls, sandbox_id: str, **opts: Any) -> bool:
        native = await _native.NativeSandbox.connect_paused_async(sandbox_id)
        return await native.resume_async()

    @_class_method_variant("_cls_resume")
    async def resume(self, **opts: Any) -> bool:
        """Resume a paused sandbox; False if it was not paused."""
        return await self._native.resume_async()

    async def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Optional[Union[Context, str]] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
        on_result: Optional[Handler] = None,
        on_error: Optional[Handler] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> Execution:
        """Run code in a stateful context; see
        :meth:`soulbox.Sandbox.run_code`. The callbacks may be coroutine
        functions, and cancelling the call interrupts the code."""
        handlers = _code.Handlers(on_stdout, on_stderr, on_result, on_error)
        spec = _code.code_spec(code, language, context, envs, timeout, handlers)
        run = self._native.start_code(spec)
        try:
            while True:
                kind, payload = _code.check_event(await run.next_event_async())
                if kind == "done":
                    return _code.execution_from_native(payload)
                handler, argument = handlers.route(kind, payload)
                await _call(handler, argument)
        except BaseException:
            run.interrupt()
            raise

    async def create_code_context(
        self,
        cwd: Optional[str] = None,
        language: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Context:
        """Start a new code context; see
        :meth:`soulbox.Sandbox.create_code_context`."""
        raw = await self._native.create_code_context_async(language, cwd)
        return _code.context_from_native(raw)

    async def list_code_contexts(self) -> List[Context]:
        """List the code contexts of this handle."""
        return [_code.context_from_native(raw) for raw in self._native.list_code_contexts()]

    async def remove_code_context(self, context: Union[Context, str]) -> None:
        """End a code context; see :meth:`soulbox.Sandbox.remove_code_context`."""
        await self._native.remove_code_context_async(_code.context_id(context))

    async def restart_code_context(self, context: Union[Context, str]) -> None:
        """Restart a code context without its variables; see
        :meth:`soulbox.Sandbox.restart_code_context`."""
        await self._native.restart_code_context_async(_code.context_id(context))


class AsyncSandboxPool(PoolBase):
    """Sandboxes of one configuration, built in advance, for asyncio
    (SoulBox only); see :class:`soulbox.SandboxPool`. Use it as an
    ``async with`` block, or await :meth:`close`."""

    async def create(self) -> AsyncSandbox:
        """Hand over a waiting sandbox, or create one as
        :meth:`AsyncSandbox.create` does when none is waiting; see
        :meth:`soulbox.SandboxPool.create`.

        :raises SandboxException: after :meth:`close`.
        """
        return AsyncSandbox(handed_over(await self._native.create_async()))

    async def close(self) -> None:
        """Stop the refill and kill every waiting sandbox, after the
        creates in progress end. Calling it again does nothing."""
        await self._native.close_async()

    async def __aenter__(self) -> "AsyncSandboxPool":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
