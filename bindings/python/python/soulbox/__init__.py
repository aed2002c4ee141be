"""SoulBox: disposable Linux sandboxes for untrusted code, with the Python
API of E2B's SDK (``from soulbox import Sandbox``).

Sandboxes run on this machine, built from namespaces, cgroups, seccomp and
an overlay filesystem; creating one needs root, or unprivileged user
namespaces for the rootless mode.
"""

from ._async import (
    AsyncCommandHandle,
    AsyncCommands,
    AsyncFilesystem,
    AsyncFileStreamReader,
    AsyncPty,
    AsyncSandbox,
    AsyncSandboxPaginator,
    AsyncWatchHandle,
)
from ._code import Context, Execution, ExecutionError, Logs, OutputMessage, Result
from ._sync import (
    CommandHandle,
    Commands,
    Filesystem,
    FileStreamReader,
    Pty,
    Sandbox,
    SandboxPaginator,
    WatchHandle,
)
from ._types import (
    CommandResult,
    CopySummary,
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    ProcessInfo,
    PtySize,
    SandboxInfo,
    SandboxMetrics,
    SandboxQuery,
    SandboxState,
    SeccompPolicy,
    WriteEntry,
    WriteInfo,
)
from .exceptions import (
    CommandExitException,
    FileNotFoundException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    SandboxException,
    SandboxNotFoundException,
    TimeoutException,
)

__all__ = [
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncFilesystem",
    "AsyncFileStreamReader",
    "AsyncPty",
    "AsyncSandbox",
    "AsyncSandboxPaginator",
    "AsyncWatchHandle",
    "CommandExitException",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "Context",
    "CopySummary",
    "EntryInfo",
    "Execution",
    "ExecutionError",
    "FileNotFoundException",
    "FileStreamReader",
    "FileType",
    "Filesystem",
    "FilesystemEvent",
    "FilesystemEventType",
    "InvalidArgumentException",
    "Logs",
    "NotEnoughSpaceException",
    "NotFoundException",
    "OutputMessage",
    "ProcessInfo",
    "Pty",
    "PtySize",
    "Result",
    "Sandbox",
    "SandboxException",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxPaginator",
    "SandboxQuery",
    "SandboxState",
    "SeccompPolicy",
    "SandboxNotFoundException",
    "TimeoutException",
    "WatchHandle",
    "WriteEntry",
    "WriteInfo",
]
