"""The synchronous API: :class:`Sandbox` and the objects it hands out.

Every call that waits releases the GIL, so other threads run meanwhile, and
Ctrl-C interrupts it with KeyboardInterrupt. An interrupted ``commands.run``
kills the command's whole process tree.
"""

import os
import types
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Union, overload

from . import _code, _common, _native
from ._code import Context, ErrorHandler, Execution, OutputHandler, ResultHandler
from ._common import Chunk, EventStream, OutputCallback, PtyCallback
from ._pool import PoolBase, handed_over
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
from .exceptions import InvalidArgumentException, NotFoundException, SandboxException

__all__ = [
    "Sandbox",
    "Commands",
    "CommandHandle",
    "Pty",
    "Filesystem",
    "FileStreamReader",
    "WatchHandle",
    "SandboxPaginator",
    "SandboxPool",
]


class _class_method_variant:
    """Make ``Sandbox.kill(id)`` call a class-level variant and
    ``sbx.kill()`` the instance method, as E2B's SDK does."""

    def __init__(self, class_method_name: str) -> None:
        self.class_method_name = class_method_name
        self.method: Any = None

    def __call__(self, method: Any) -> Any:
        self.method = method
        self.__doc__ = method.__doc__
        return self

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return getattr(objtype, self.class_method_name)
        return types.MethodType(self.method, obj)


class CommandHandle:
    """A running command or PTY session.

    Iterating it yields ``(stdout, stderr, pty)`` tuples in which one item
    is set: decoded text for a command, raw bytes for a PTY. Output
    delivered by iteration or to a callback is not kept for the result of
    :meth:`wait`.
    """

    def __init__(
        self,
        native: "_native.NativeCommand",
        owner: "_native.NativeSandbox",
        pty: bool = False,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> None:
        self._native = native
        # Keeps the sandbox alive while this handle is used.
        self._owner = owner
        self._stream = EventStream(pty, timeout)
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr

    @property
    def pid(self) -> int:
        """The pid of the command's first process inside the sandbox."""
        return self._native.pid

    def __iter__(self) -> Iterator[Chunk]:
        self._stream.keep_stdout = self._stream.keep_stderr = False
        return self._events()

    def _events(self) -> Iterator[Chunk]:
        while True:
            raw = self._native.next_event()
            if raw is None:
                return
            yield from self._stream.feed(raw)

    def wait(
        self,
        on_pty: Optional[PtyCallback] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> CommandResult:
        """Wait for the command to end and return its result.

        :raises CommandExitException: on a non-zero exit, with the output.
        :raises TimeoutException: when the command's timeout ended it.
        """
        on_stdout = on_stdout or self._on_stdout
        on_stderr = on_stderr or self._on_stderr
        self._stream.keep_stdout = on_stdout is None
        self._stream.keep_stderr = on_stderr is None
        for stdout, stderr, pty in self._events():
            if stdout is not None and on_stdout is not None:
                on_stdout(stdout)
            elif stderr is not None and on_stderr is not None:
                on_stderr(stderr)
            elif pty is not None and on_pty is not None:
                on_pty(pty)
        return self._stream.result()

    def kill(self) -> bool:
        """Kill the command and every process it started.

        :return: whether its first process was still running.
        """
        return self._native.kill()

    def signal(self, signal: int) -> None:
        """Send ``signal`` to the command's first process (SoulBox only)."""
        self._native.signal(signal)

    def send_stdin(self, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Write to the command's stdin; it must have been started with
        ``stdin=True`` (a PTY always has one)."""
        self._native.send_stdin(_common.to_bytes(data))

    def close_stdin(self, request_timeout: Optional[float] = None) -> None:
        """Close the command's stdin, so it reads end of file."""
        self._native.close_stdin()

    def resize(self, size: PtySize) -> None:
        """Resize the PTY of a PTY session (SoulBox only)."""
        rows, cols = _common.terminal_size(size.rows, size.cols)
        self._native.resize(rows, cols)

    def disconnect(self) -> None:
        """Stop receiving output; the command keeps running."""
        self._native.disconnect()


class Commands:
    """Runs and controls commands in a sandbox: ``sbx.commands``."""

    def __init__(self, native: "_native.NativeSandbox") -> None:
        self._native = native

    def list(self, request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        """List the running commands and PTY sessions."""
        return [process_from_native(raw) for raw in self._native.list_commands()]

    def _find(self, pid: int) -> Optional["_native.NativeCommand"]:
        try:
            return self._native.connect_command(pid)
        except NotFoundException:
            return None

    def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kill a running command's whole process tree.

        :return: False if no running command has this pid.
        """
        command = self._find(pid)
        return command is not None and command.kill()

    def send_stdin(
        self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None
    ) -> None:
        """Write to a running command's stdin."""
        self._native.connect_command(pid).send_stdin(_common.to_bytes(data))

    def close_stdin(self, pid: int, request_timeout: Optional[float] = None) -> None:
        """Close a running command's stdin."""
        self._native.connect_command(pid).close_stdin()

    def connect(
        self,
        pid: int,
        timeout: Optional[float] = 60,
        request_timeout: Optional[float] = None,
    ) -> CommandHandle:
        """Attach a new handle to a running command; it receives the output
        written from now on. ``timeout`` is accepted for compatibility: the
        command's own timeout still applies and the handle has none.

        :raises NotFoundException: if no running command has this pid.
        """
        return CommandHandle(self._native.connect_command(pid), self._native)

    @overload
    def run(
        self,
        cmd: str,
        background: Optional[Literal[False]] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: str,
        background: Literal[True],
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: str,
        background: Optional[bool] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> Any:
        """Run a command line through ``/bin/bash -l -c``.

        With ``background=False`` (the default) it waits and returns a
        :class:`CommandResult`; with ``background=True`` it returns a
        :class:`CommandHandle` at once.

        ``timeout`` is in seconds, 0 for no limit. None (the default) is 60
        for a command run to its end and no limit in the background, where
        E2B's 60 s would end long-running servers. At the timeout the
        command and every process it started are killed.
        ``on_stdout``/``on_stderr`` receive decoded text as it arrives, and
        what they receive is not kept in the result. ``tag`` names the
        command for ``list()`` (SoulBox only).

        :raises CommandExitException: on a non-zero exit, with the output.
        :raises TimeoutException: when the timeout ended the command.
        :raises InvalidArgumentException: for a bad user, cwd or envs.
        """
        limit = _common.command_timeout(timeout, bool(background))
        spec = _common.command_spec(cmd, envs, user, cwd, limit, stdin, tag)
        if not background and on_stdout is None and on_stderr is None:
            return _common.result_from_run(self._native.run(spec), limit)
        handle = CommandHandle(
            self._native.start(spec), self._native, False, limit, on_stdout, on_stderr
        )
        if background:
            return handle
        try:
            return handle.wait()
        except BaseException:
            # Ctrl-C or a failing callback: the command must not outlive
            # the call.
            handle.kill()
            raise


class Pty:
    """Interactive terminals in a sandbox: ``sbx.pty``."""

    def __init__(self, native: "_native.NativeSandbox") -> None:
        self._native = native

    def create(
        self,
        size: Optional[PtySize] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        rows: Optional[int] = None,
        cols: Optional[int] = None,
    ) -> CommandHandle:
        """Start ``bash -i -l`` on a new pseudo-terminal of ``size`` (or
        ``rows`` x ``cols``, default 24x80) and return its handle, whose
        iteration yields the terminal's output as bytes.

        ``timeout`` in seconds ends the session; None (the default) and 0
        mean no limit.
        """
        limit = _common.command_timeout(timeout, True)
        spec = _common.pty_spec(size, rows, cols, envs, user, cwd, limit)
        return CommandHandle(self._native.start_pty(spec), self._native, True, limit)

    def connect(
        self, pid: int, timeout: Optional[float] = 60, request_timeout: Optional[float] = None
    ) -> CommandHandle:
        """Attach a new handle to a running PTY session."""
        return CommandHandle(self._native.connect_command(pid), self._native, True)

    def send_stdin(self, pid: int, data: bytes, request_timeout: Optional[float] = None) -> None:
        """Type ``data`` into the PTY session ``pid``."""
        self._native.connect_command(pid).send_stdin(_common.to_bytes(data))

    def resize(self, pid: int, size: PtySize, request_timeout: Optional[float] = None) -> None:
        """Resize the PTY session ``pid``; its shell gets SIGWINCH."""
        rows, cols = _common.terminal_size(size.rows, size.cols)
        self._native.connect_command(pid).resize(rows, cols)

    def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kill the PTY session ``pid`` and its processes.

        :return: False if no running session has this pid.
        """
        return Commands(self._native).kill(pid)


class FileStreamReader(Iterator[bytes]):
    """A sandbox file read in chunks of up to 1 MiB. Use it in a ``with``
    block, or call :meth:`close`, if you stop before the end."""

    def __init__(self, native: "_native.NativeFileReader", owner: "_native.NativeSandbox") -> None:
        self._native = native
        self._owner = owner

    def __iter__(self) -> "FileStreamReader":
        return self

    def __next__(self) -> bytes:
        chunk = self._native.read_chunk()
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Close the file; safe to call more than once."""
        self._native.close()

    def __enter__(self) -> "FileStreamReader":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class WatchHandle:
    """A watch of a sandbox directory, from ``files.watch_dir``."""

    def __init__(self, native: "_native.NativeWatcher", owner: "_native.NativeSandbox") -> None:
        self._native = native
        self._owner = owner
        self._stopped = False
        # An error that came after events, raised by the next call so that
        # those events are returned first.
        self._pending_error: Optional[BaseException] = None

    def get_new_events(self, request_timeout: Optional[float] = None) -> List[FilesystemEvent]:
        """Return the events that arrived since the last call.

        :raises SandboxException: after :meth:`stop`, or when events were
            lost (the watch goes on). Events that arrived before the loss
            are returned first, and the next call raises.
        """
        if self._stopped:
            raise SandboxException("the watcher is already stopped")
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        events: List[FilesystemEvent] = []
        while True:
            try:
                item = self._native.next_event(0.0)
            except SandboxException as error:
                if not events:
                    raise
                self._pending_error = error
                return events
            if item is None or item[0] == "timeout":
                return events
            events.append(FilesystemEvent(name=item[1], type=FilesystemEventType(item[2])))

    def stop(self, request_timeout: Optional[float] = None) -> None:
        """Stop watching."""
        self._stopped = True
        self._native.stop()


class Filesystem:
    """The sandbox's files, from the host side: ``sbx.files``.

    Relative paths start at /home/user. Calls act as ``user`` unless
    ``user="root"`` is given.
    """

    def __init__(self, native: "_native.NativeSandbox") -> None:
        self._native = native

    @overload
    def read(
        self,
        path: str,
        format: Literal["text"] = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> str: ...

    @overload
    def read(
        self,
        path: str,
        format: Literal["bytes"],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bytearray: ...

    @overload
    def read(
        self,
        path: str,
        format: Literal["stream"],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> FileStreamReader: ...

    def read(
        self,
        path: str,
        format: str = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Any:
        """Read a file: as ``str`` (``format="text"``, invalid UTF-8 becomes
        U+FFFD), ``bytearray`` (``"bytes"``) or a :class:`FileStreamReader`
        of bytes chunks (``"stream"``).

        :raises FileNotFoundException: if it does not exist.
        """
        if format == "stream":
            return FileStreamReader(self._native.open_file(path, user), self._native)
        if format not in ("text", "bytes"):
            raise InvalidArgumentException(
                f"format {format!r} is invalid; use 'text', 'bytes' or 'stream'"
            )
        data = self._native.read_file(path, user)
        return data.decode("utf-8", "replace") if format == "text" else bytearray(data)

    @overload
    def write(
        self,
        path: str,
        data: Any,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> WriteInfo: ...

    @overload
    def write(
        self,
        path: List[Union[WriteEntry, Dict[str, Any]]],
        data: Optional[str] = None,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[WriteInfo]: ...

    def write(
        self,
        path: Any,
        data: Any = _common.NO_DATA,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Any:
        """Write a whole file from ``str``, bytes or a file object, creating
        missing parent directories and replacing what was there. A file
        object is read and written in chunks of 1 MiB. If the write fails
        or is interrupted, a new file is removed and an existing one left
        empty.

        ``write(files, user)``, with a list in place of the path, is E2B
        1.x's form of :meth:`write_files`, whose second argument is the
        user.
        """
        if isinstance(path, list):
            return self.write_files(path, _common.entries_user(data, user), request_timeout)
        if data is _common.NO_DATA:
            raise InvalidArgumentException("write is missing its data: pass write(path, data)")
        if not _common.is_stream(data):
            self._native.write_file(path, _common.to_bytes(data), user)
            return _common.write_info(path)
        writer = self._native.open_writer(path, user)
        try:
            for chunk in _common.stream_chunks(data):
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        writer.finish()
        return _common.write_info(path)

    def write_files(
        self,
        files: List[Union[WriteEntry, Dict[str, Any]]],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[WriteInfo]:
        """Write several files in order, each a ``WriteEntry`` or a dict
        with ``path`` and ``data``; ``data`` is as for :meth:`write`."""
        requested = _common.write_entries(files)
        if any(_common.is_stream(data) for _, data in requested):
            return [self.write(path, data, user) for path, data in requested]
        entries = [(path, _common.to_bytes(data)) for path, data in requested]
        if entries:
            self._native.write_files(entries, user)
        return [_common.write_info(path) for path, _ in entries]

    def list(
        self,
        path: str,
        depth: Optional[int] = 1,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[EntryInfo]:
        """List a directory ``depth`` levels deep, sorted by path.

        :raises InvalidArgumentException: for depth below 1 or a non-directory.
        """
        raw = self._native.list_dir(path, _list_depth(depth), user)
        return [entry_from_native(entry) for entry in raw]

    def exists(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Return whether ``path`` exists (a dangling symlink exists)."""
        return self._native.exists(path, user)

    def get_info(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> EntryInfo:
        """Describe ``path``; a symlink is described, not followed.

        :raises FileNotFoundException: if it does not exist.
        """
        return entry_from_native(self._native.stat(path, user))

    def remove(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> None:
        """Remove a file or a directory tree; a missing path is not an error."""
        self._native.remove(path, user)

    def rename(
        self,
        old_path: str,
        new_path: str,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> EntryInfo:
        """Rename ``old_path`` to ``new_path`` and describe the result."""
        return entry_from_native(self._native.rename(old_path, new_path, user))

    def make_dir(self, path: str, user: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Create a directory and its parents.

        :return: False if it already existed.
        :raises InvalidArgumentException: if a file is in the way.
        """
        return self._native.make_dir(path, user)

    def watch_dir(
        self,
        path: str,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
        recursive: bool = False,
    ) -> WatchHandle:
        """Watch a directory; poll :meth:`WatchHandle.get_new_events`.

        :raises FileNotFoundException: if it does not exist.
        :raises InvalidArgumentException: if it is not a directory.
        """
        return WatchHandle(self._native.watch_dir(path, recursive, user), self._native)

    def copy_in(self, host_path: str, sandbox_path: str, user: Optional[str] = None) -> CopySummary:
        """Copy a host file or directory tree into the sandbox (SoulBox only)."""
        return copy_from_native(self._native.copy_in(str(host_path), sandbox_path, user))

    def copy_out(self, sandbox_path: str, host_path: str, user: Optional[str] = None) -> CopySummary:
        """Copy a sandbox file or directory tree to the host (SoulBox only)."""
        return copy_from_native(self._native.copy_out(sandbox_path, str(host_path), user))


def _list_depth(depth: Optional[int]) -> int:
    if depth is None:
        return 1
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InvalidArgumentException(
            f"list depth {depth!r} is invalid; depth 1 lists a directory's own entries"
        )
    return depth


class SandboxPaginator(PaginatorBase):
    """Pages of ``Sandbox.list``; see :class:`soulbox.SandboxQuery`."""

    def next_items(self, **opts: Any) -> List[SandboxInfo]:
        """Return the next page of sandboxes.

        :raises SandboxException: when ``has_next`` is false.
        """
        if not self.has_next:
            raise SandboxException("no more sandboxes to list; check has_next first")
        if self._items is None:
            metadata, state = query_to_native(self._query)
            self._items = [info_from_native(raw) for raw in _native.NativeSandbox.list(metadata, state)]
        return self._page()


class Sandbox:
    """A sandbox on this machine, with the API of E2B's ``Sandbox``.

    Create it with :meth:`create`, use it as a context manager, and reach
    it through ``commands``, ``pty`` and ``files``. It ends at
    :meth:`kill` or at its timeout, whether or not this object is garbage
    collected first (unless it was created with ``kill_on_drop=True``).
    """

    def __init__(self, native: Optional["_native.NativeSandbox"] = None, **options: Any) -> None:
        if not isinstance(native, _native.NativeSandbox) or options:
            raise TypeError(
                "Sandbox(...) does not create a sandbox: call Sandbox.create(...) to make one or "
                "Sandbox.connect(sandbox_id) to reach a running one"
            )
        self._native = native
        self._commands = Commands(native)
        self._pty = Pty(native)
        self._files = Filesystem(native)

    @classmethod
    def create(
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
    ) -> "Sandbox":
        """Create a sandbox and wait until it accepts commands.

        :param template: ``None`` or ``"host"`` (the host's /usr,
            read-only), a directory or an image. A directory contains a root
            file system and becomes the sandbox's read-only root as it is.
            An image is the path of an OCI image layout directory or image
            archive (``docker save``, ``podman save --format oci-archive``),
            with ``:NAME`` after it to select one of several. A template
            built from a ``soulbox.toml`` (``soulbox template build``) is
            its name, a ``str`` without ``/``, or the path of the file or
            its folder. Its ``start`` command is running and its ``ready``
            command has exited 0 when this returns.
        :param timeout: lifetime in seconds (default 300; 0 for none).
        :param metadata: labels, returned by ``get_info`` and used to
            filter ``Sandbox.list``.
        :param envs: environment variables for every command.
        :param lifecycle: E2B's ``{"on_timeout": "kill" | "pause",
            "auto_resume": bool}``. With ``"pause"`` the timeout freezes
            the sandbox instead of killing it; ``connect`` or ``resume``
            thaws it, and its timeout starts again at this ``timeout``.
            ``auto_resume`` (only with ``"pause"``) makes commands, file
            calls and ``run_code`` through a handle resume it first.
            Pausing needs a writable cgroup v2 hierarchy.
        :param allow_internet_access: ``True`` gives the sandbox internet
            access through slirp4netns, which must be installed. Unlike
            E2B, whose sandboxes have it by default, the default (``None``
            or ``False``) is loopback only.
        :param network: egress rules, ``{"allow_out": [...], "deny_out":
            [...]}`` of IPv4 addresses and CIDR blocks (see
            :class:`SandboxNetworkOpts`). Passing it gives the sandbox
            internet access, as E2B's sandboxes have by default; with
            ``allow_internet_access=False`` it is an error. ``deny_out``
            with ``ALL_TRAFFIC`` also blocks the DNS forwarder 10.0.2.3
            unless ``allow_out`` contains it.
        :param memory_limit: bytes (default 2 GiB), None for no limit;
            the other keyword-only limits are SoulBox's own too.
        :param kill_on_drop: end the sandbox when this object is garbage
            collected or this process exits (SoulBox only). By default, as
            in E2B, it runs until its timeout or a kill, and any process of
            the same user can reach it with ``Sandbox.connect``.
        :param seccomp: the system calls its processes may make, as a
            :class:`SeccompPolicy` (SoulBox only); SoulBox's default
            allow-list when left out.
        :param mounts: host files and directories to mount, as
            :class:`Mount` objects or ``(source, target[, writable])``
            tuples (SoulBox only); read-only unless writable.

        ``secure`` and E2B's connection options (``api_key``, ``domain``,
        ``request_timeout``, ...) are accepted and have no effect: the
        sandbox runs in this process, with no API server.

        :raises NotImplementedError: for the network options
            ``allow_public_traffic`` and ``mask_request_host``, MCP and
            volume mounts, which SoulBox lacks so far.
        :raises InvalidArgumentException: for a bad option; nothing is made.
        """
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
        return cls(_native.NativeSandbox.create(native_options))

    @property
    def sandbox_id(self) -> str:
        """The sandbox id, which is also its hostname."""
        return self._native.sandbox_id

    @property
    def commands(self) -> Commands:
        """Commands in the sandbox."""
        return self._commands

    @property
    def pty(self) -> Pty:
        """Pseudo-terminals in the sandbox."""
        return self._pty

    @property
    def files(self) -> Filesystem:
        """The sandbox's files."""
        return self._files

    def is_running(self, request_timeout: Optional[float] = None) -> bool:
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

    def enforced_limits(self) -> Dict[str, Optional[int]]:
        """Return the resource limits in force (SoulBox only): ``memory``
        in bytes, ``pids``, and ``cpu_millicores``. A requested limit that
        is None here could not be applied (rootless mode without a
        delegated cgroup)."""
        memory, pids, cpu = self._native.enforced_limits()
        return {"memory": memory, "pids": pids, "cpu_millicores": cpu}

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()

    @staticmethod
    def build_template(
        path: Union[str, "os.PathLike[str]"],
        name: Optional[str] = None,
        on_output: Optional[Callable[[str, bytes], None]] = None,
    ) -> BuiltTemplate:
        """Build a template from a ``soulbox.toml`` (SoulBox only).

        Runs the file's steps in a sandbox made from its ``base`` and keeps
        what they wrote, as ``soulbox template build`` does. A build whose
        inputs have not changed returns at once. ``path`` is the file or
        its folder, relative to the current directory. ``name`` registers
        the template under a name, in place of the file's ``name`` key.
        ``on_output`` receives each chunk of a step's output as
        (``"stdout"`` or ``"stderr"``, bytes), on a thread of SoulBox's.

        :raises InvalidArgumentException: for an invalid file, naming the key.
        :raises SandboxException: when a step exits non-zero (the message
            names the step and its status) or the layer cannot be saved.
        """
        raw = _native.NativeSandbox.build_template(os.path.abspath(path), name, on_output)
        return built_from_native(raw)

    @classmethod
    def _cls_kill(cls, sandbox_id: str, **opts: Any) -> bool:
        return _native.NativeSandbox.kill_id(sandbox_id)

    @_class_method_variant("_cls_kill")
    def kill(self, **opts: Any) -> bool:
        """Kill the sandbox: every process ends and its cgroups are removed
        before this returns. ``Sandbox.kill(sandbox_id)`` kills another
        sandbox of this user, created by any process.

        :return: whether it was running (or, by id, whether it existed).
        """
        return self._native.kill()

    @classmethod
    def _cls_set_timeout(cls, sandbox_id: str, timeout: int, **opts: Any) -> None:
        _native.NativeSandbox.connect_paused(sandbox_id).set_timeout(
            _common.seconds("timeout", timeout)
        )

    @_class_method_variant("_cls_set_timeout")
    def set_timeout(self, timeout: int, **opts: Any) -> None:
        """Set the sandbox to end ``timeout`` seconds from now (0: never);
        a paused sandbox's timeout counts from its resume."""
        self._native.set_timeout(_common.seconds("timeout", timeout))

    @classmethod
    def _cls_connect(cls, sandbox_id: str, timeout: Optional[int] = None, **opts: Any) -> "Sandbox":
        sandbox = cls(_native.NativeSandbox.connect(sandbox_id))
        if timeout is not None:
            sandbox.set_timeout(timeout)
        return sandbox

    @_class_method_variant("_cls_connect")
    def connect(self, timeout: Optional[int] = None, **opts: Any) -> "Sandbox":
        """Resume this sandbox if it is paused, set its timeout if one is
        given, and return it. ``Sandbox.connect(sandbox_id)`` returns a
        handle of a running or paused sandbox of this user, created by any
        process, and resumes it.

        :raises SandboxNotFoundException: if no such sandbox exists.
        """
        self._native.resume()
        if timeout is not None:
            self.set_timeout(timeout)
        return self

    @classmethod
    def list(
        cls,
        query: Optional[SandboxQuery] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        **opts: Any,
    ) -> "SandboxPaginator":
        """List this user's running and paused sandboxes, oldest first,
        filtered by ``query``; read pages with ``next_items()``.

        :raises InvalidArgumentException: when ``query`` is not a
            :class:`SandboxQuery` or its metadata is not str to str.
        """
        return SandboxPaginator(_common.check_query(query), limit, next_token)

    @classmethod
    def _cls_get_info(cls, sandbox_id: str, **opts: Any) -> SandboxInfo:
        return info_from_native(_native.NativeSandbox.connect_paused(sandbox_id).get_info())

    @_class_method_variant("_cls_get_info")
    def get_info(self, **opts: Any) -> SandboxInfo:
        """Describe the sandbox: id, template, metadata, times, state and
        limits. ``Sandbox.get_info(sandbox_id)`` describes another one."""
        return info_from_native(self._native.get_info())

    @classmethod
    def _cls_get_metrics(
        cls, sandbox_id: str, start: Any = None, end: Any = None, **opts: Any
    ) -> List[SandboxMetrics]:
        return [metrics_from_native(_native.NativeSandbox.connect_paused(sandbox_id).metrics())]

    @_class_method_variant("_cls_get_metrics")
    def get_metrics(self, start: Any = None, end: Any = None, **opts: Any) -> List[SandboxMetrics]:
        """Return the sandbox's current CPU, memory and disk use as a list of
        one reading. SoulBox keeps no history, so ``start`` and ``end``
        have no effect."""
        return [metrics_from_native(self._native.metrics())]

    @classmethod
    def _cls_pause(cls, sandbox_id: str, **opts: Any) -> bool:
        return _native.NativeSandbox.connect_paused(sandbox_id).pause()

    @_class_method_variant("_cls_pause")
    def pause(self, **opts: Any) -> bool:
        """Freeze every process of the sandbox and stop its timeout clock
        until ``resume()`` or ``connect()``. Memory and files are kept, but
        a paused sandbox does not survive a host reboot.

        :return: False if it was already paused.
        """
        return self._native.pause()

    @_class_method_variant("_cls_pause")
    def beta_pause(self, **opts: Any) -> bool:
        """Pause the sandbox as :meth:`pause` does. E2B's beta SDKs use this name."""
        return self._native.pause()

    @classmethod
    def _cls_resume(cls, sandbox_id: str, **opts: Any) -> bool:
        return _native.NativeSandbox.connect_paused(sandbox_id).resume()

    @_class_method_variant("_cls_resume")
    def resume(self, **opts: Any) -> bool:
        """Thaw a paused sandbox; its timeout clock goes on.

        :return: False if it was not paused.
        """
        return self._native.resume()

    def run_code(
        self,
        code: str,
        language: Optional[str] = None,
        context: Optional[Union[Context, str]] = None,
        on_stdout: Optional[OutputHandler] = None,
        on_stderr: Optional[OutputHandler] = None,
        on_result: Optional[ResultHandler] = None,
        on_error: Optional[ErrorHandler] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
    ) -> Execution:
        """Run code in a context whose variables, imports and functions
        persist from one call to the next, as in a notebook.

        Without ``context`` the code runs in the default context of
        ``language``, made on first use: ``"python"`` (the default) or
        ``"js"`` (JavaScript, run by the template's ``node``). ``context`` is a :class:`Context` or its id. ``envs`` apply to
        this execution only. ``timeout`` is in seconds, 300 by default and
        0 for no limit. The callbacks run on this thread as the code
        produces output and values: ``on_stdout`` and ``on_stderr`` receive
        :class:`OutputMessage` objects, ``on_result`` each :class:`Result`
        and ``on_error`` the :class:`ExecutionError`.

        An exception in the code does not raise: it is the ``error`` of
        the returned :class:`Execution`. When a callback raises, or Ctrl-C
        interrupts the call, the code is interrupted as with Ctrl-C and the
        exception propagates.

        :raises TimeoutException: when the code ran out of time. It was
            interrupted, and its context keeps its variables unless the
            code ignored the interrupt, which restarts the context.
        :raises InvalidArgumentException: for an unsupported language, or
            both a language and a context.
        :raises NotFoundException: for an unknown context.
        """
        handlers = _code.Handlers(on_stdout, on_stderr, on_result, on_error)
        spec = _code.code_spec(code, language, context, envs, timeout, handlers)
        run = self._native.start_code(spec)
        try:
            while True:
                kind, payload = _code.check_event(run.next_event())
                if kind == "done":
                    return _code.execution_from_native(payload)
                handler, argument = handlers.route(kind, payload)
                handler(argument)
        except BaseException:
            run.interrupt()
            raise

    def create_code_context(
        self,
        cwd: Optional[str] = None,
        language: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Context:
        """Start a new code context, with variables of its own, in ``cwd``
        (an absolute path; by default the template's working directory,
        ``/home/user`` on the ``host`` template).

        :raises InvalidArgumentException: for an unsupported language or a
            relative ``cwd``.
        """
        return _code.context_from_native(self._native.create_code_context(language, cwd))

    def list_code_contexts(self) -> List[Context]:
        """List the code contexts of this handle, the default one included
        once used. A handle from ``Sandbox.connect`` has contexts of its own."""
        return [_code.context_from_native(raw) for raw in self._native.list_code_contexts()]

    def remove_code_context(self, context: Union[Context, str]) -> None:
        """End a code context and its interpreter, once the executions that
        were started in it before have ended.

        :raises NotFoundException: for an unknown context.
        """
        self._native.remove_code_context(_code.context_id(context))

    def restart_code_context(self, context: Union[Context, str]) -> None:
        """Replace a context's interpreter with a new one, without the old
        variables, once the executions that were started in it before
        have ended.

        :raises NotFoundException: for an unknown context.
        """
        self._native.restart_code_context(_code.context_id(context))


class SandboxPool(PoolBase):
    """Sandboxes of one configuration, built in advance (SoulBox only).

    ``SandboxPool(size, **options)`` takes the keyword arguments of
    :meth:`Sandbox.create` and keeps ``size`` sandboxes built with them
    waiting, so that :meth:`create` is a hand-over rather than a build. A
    thread of the pool's own builds a replacement after each hand-over.
    Use it as a context manager, or call :meth:`close`. Closing, garbage
    collection or the interpreter's exit kills the waiting sandboxes.
    Each waiting sandbox keeps its memory and processes, as an idle one
    does, and ``Sandbox.list`` shows a sandbox only after its hand-over.
    """

    def create(self) -> Sandbox:
        """Hand over a waiting sandbox, or create one as
        :meth:`Sandbox.create` does when none is waiting.

        The sandbox is like one from :meth:`Sandbox.create`: nothing has
        run in it, its timeout and start time count from the hand-over,
        and it has the pool's metadata and envs.

        :raises SandboxException: after :meth:`close`.
        """
        return Sandbox(handed_over(self._native.create()))

    def close(self) -> None:
        """Stop the refill and kill every waiting sandbox, after the
        creates in progress end. Sandboxes already handed over run on.
        Calling it again does nothing."""
        self._native.close()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
