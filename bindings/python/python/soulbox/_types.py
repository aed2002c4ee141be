"""Result and description types, with E2B's names and fields."""

import codecs
import datetime
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "CommandResult",
    "EntryInfo",
    "FileType",
    "FilesystemEvent",
    "FilesystemEventType",
    "ProcessInfo",
    "PtySize",
    "WriteInfo",
    "CopySummary",
]


@dataclass
class CommandResult:
    """The result of a command that ran to its end.

    ``exit_code`` is 128 + N when signal N ended the command, and ``error``
    then says so; it is None after a normal exit.
    """

    stderr: str
    stdout: str
    exit_code: int
    error: Optional[str] = None


@dataclass
class PtySize:
    """Size of a pseudo-terminal, in rows and columns."""

    rows: int
    cols: int


@dataclass
class ProcessInfo:
    """A running command as ``commands.list()`` shows it.

    ``envs`` holds the variables given for this command only, not the
    sandbox's or the defaults.
    """

    pid: int
    tag: Optional[str]
    cmd: str
    args: List[str]
    envs: Dict[str, str]
    cwd: Optional[str]


class FileType(Enum):
    """Kind of a file in a sandbox."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass
class WriteInfo:
    """A file that was written: its name, kind and absolute path."""

    name: str
    type: Optional[FileType]
    path: str


@dataclass
class EntryInfo(WriteInfo):
    """A file or directory in a sandbox.

    ``type`` is None for FIFOs, sockets and devices. ``mode`` holds the
    permission bits with setuid, setgid and sticky; ``permissions`` shows
    them as ``ls -l`` does. ``symlink_target`` is set for symlinks only.
    """

    size: int = 0
    mode: int = 0
    permissions: str = ""
    owner: str = ""
    group: str = ""
    modified_time: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    )
    symlink_target: Optional[str] = None


class FilesystemEventType(Enum):
    """Kind of change in a watched directory."""

    CHMOD = "chmod"
    CREATE = "create"
    REMOVE = "remove"
    RENAME = "rename"
    WRITE = "write"


@dataclass
class FilesystemEvent:
    """One change in a watched directory; ``name`` is relative to it."""

    name: str
    type: FilesystemEventType


@dataclass
class CopySummary:
    """Totals of ``files.copy_in`` or ``files.copy_out``.

    ``skipped`` lists the symlinks, FIFOs, sockets and devices below the
    top that were not copied.
    """

    files: int
    directories: int
    bytes: int
    skipped: List[str]


def entry_from_native(raw: Tuple[Any, ...]) -> EntryInfo:
    """Build an EntryInfo from the native module's tuple."""
    name, kind, path, size, mode, permissions, owner, (group, modified, target) = raw
    return EntryInfo(
        name=name,
        type=FileType(kind) if kind is not None else None,
        path=path,
        size=size,
        mode=mode,
        permissions=permissions,
        owner=owner,
        group=group,
        modified_time=datetime.datetime.fromtimestamp(modified, datetime.timezone.utc),
        symlink_target=target,
    )


def process_from_native(raw: Tuple[Any, ...]) -> ProcessInfo:
    """Build a ProcessInfo from the native module's tuple."""
    pid, tag, cmd, args, envs, cwd = raw
    return ProcessInfo(pid=pid, tag=tag, cmd=cmd, args=list(args), envs=dict(envs), cwd=cwd)


def copy_from_native(raw: Tuple[Any, ...]) -> CopySummary:
    """Build a CopySummary from the native module's tuple."""
    files, directories, size, skipped = raw
    return CopySummary(files=files, directories=directories, bytes=size, skipped=list(skipped))


class OutputDecoder:
    """Decode one output stream chunk by chunk as UTF-8.

    Invalid bytes become U+FFFD, and a character whose bytes arrive in two
    chunks is decoded whole once its last byte arrives.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes) -> str:
        """Decode a chunk, keeping an incomplete character for later."""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Decode what is left at the end: an incomplete character is U+FFFD."""
        return self._decoder.decode(b"", final=True)
