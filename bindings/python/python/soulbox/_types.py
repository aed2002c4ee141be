"""Result and description types, with E2B's names and fields."""

import codecs
import datetime
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple, TypedDict, Union

from . import _native

__all__ = [
    "ALL_TRAFFIC",
    "BuiltTemplate",
    "CommandResult",
    "EntryInfo",
    "FileType",
    "FilesystemEvent",
    "FilesystemEventType",
    "ProcessInfo",
    "PtySize",
    "WriteEntry",
    "WriteInfo",
    "CopySummary",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxQuery",
    "SandboxNetworkOpts",
    "SandboxState",
    "SeccompPolicy",
]


@dataclass
class CommandResult:
    """The result of a command that ran to its end.

    ``exit_code`` is 128 + N when signal N ended the command, and ``error``
    then names the signal. It is None after a normal exit.
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

    ``envs`` contains the variables given for this command only, not the
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
class WriteEntry:
    """A file for ``files.write_files``: its path and its data (str, bytes
    or a file object), as E2B's ``WriteEntry``."""

    path: str
    data: Any


@dataclass
class WriteInfo:
    """A file that was written: its name, kind and absolute path."""

    name: str
    type: Optional[FileType]
    path: str


@dataclass
class EntryInfo(WriteInfo):
    """A file or directory in a sandbox.

    ``type`` is None for FIFOs, sockets and devices. ``mode`` contains the
    permission bits with setuid, setgid and sticky, and ``permissions``
    shows them as ``ls -l`` does. ``symlink_target`` is set for symlinks only.
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
    name, kind, path, size, mode, permissions, owner, group, modified, target = raw
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


@dataclass
class SeccompPolicy:
    """The system calls a sandbox's processes may make (SoulBox only).

    ``base`` is ``"default"`` (SoulBox's allow-list, which denies keyrings,
    new namespaces, mounts, io_uring, BPF and the like), ``"minimal"`` (only
    what SoulBox's own processes call; add what your commands need) or
    ``"unconfined"`` (no filter at all: never for untrusted code).
    ``allow`` lists system calls to allow on top, and ``deny`` maps system
    calls to the errno they fail with, such as ``{"mkdir": errno.EPERM}``.
    Names are those of the kernel's syscall table for this machine.
    """

    base: str = "default"
    allow: List[str] = field(default_factory=list)
    deny: Dict[str, int] = field(default_factory=dict)


@dataclass
class Mount:
    """A host file or directory mounted into the sandbox (SoulBox only).

    ``source`` is the host path (relative paths start at the current
    directory), ``target`` the absolute path inside the sandbox. The mount
    is read-only unless ``writable``, and nosuid and nodev either way.
    What the sandbox writes to a writable mount lands on the host, owned by
    the sandbox user's uid, outside the sandbox's disk limit.
    """

    source: Union[str, "os.PathLike[str]"]
    target: str
    writable: bool = False


ALL_TRAFFIC: str = _native.ALL_TRAFFIC
"""The CIDR block of every IPv4 address, ``"0.0.0.0/0"``."""


class SandboxNetworkOpts(TypedDict, total=False):
    """The ``network`` option of ``Sandbox.create``: egress rules.

    Each entry is an IPv4 address or CIDR block. ``deny_out`` networks are
    unreachable, TCP and UDP alike, unless an ``allow_out`` network contains
    the address: allowed entries win, even over a more specific denied one.
    ``deny_out=[ALL_TRAFFIC]`` with ``allow_out`` lets the sandbox reach only
    the allowed networks. Unlike E2B, SoulBox rejects domain names and IPv6.
    """

    allow_out: List[str]
    deny_out: List[str]


class SandboxState(Enum):
    """Whether a sandbox runs or is paused."""

    RUNNING = "running"
    PAUSED = "paused"


@dataclass
class SandboxQuery:
    """Filters of ``Sandbox.list``: sandboxes whose metadata contains
    every pair of ``metadata``, in one of the ``state`` states."""

    metadata: Optional[Dict[str, str]] = None
    state: Optional[List[SandboxState]] = None


@dataclass
class BuiltTemplate:
    """A template built from a ``soulbox.toml``, from ``build_template``.

    ``name`` is what ``Sandbox.create(template=...)`` takes where the build
    had one; ``source``, the soulbox.toml's path, works too. ``cached`` is
    true when an earlier build with the same inputs was reused and no step
    ran.
    """

    key: str
    name: Optional[str]
    source: str
    layer: str
    cached: bool


def built_from_native(raw: Any) -> BuiltTemplate:
    """Convert the native build result."""
    key, name, source, layer, cached = raw
    return BuiltTemplate(key=key, name=name, source=source, layer=layer, cached=cached)


@dataclass
class SandboxInfo:
    """A sandbox's description, from ``get_info`` or ``Sandbox.list``.

    ``end_at`` is None for a sandbox without a timeout and while it is
    paused, because a paused sandbox's clock stops. ``cpu_count`` and
    ``memory_mb`` are its limits, None where none is enforced. ``envs`` and
    ``pid`` (the host pid of its PID 1) are SoulBox's own.

    ``allow_internet_access``, ``network`` and ``lifecycle`` have the shapes
    of the ``Sandbox.create`` options of the same names, as the sandbox was
    created. ``network`` is ``{"allow_out": [...], "deny_out": [...]}``
    with both keys, or None without egress entries, and ``lifecycle`` is
    ``{"on_timeout": "kill" | "pause", "auto_resume": bool}``.
    """

    sandbox_id: str
    template_id: str
    name: Optional[str]
    metadata: Dict[str, str]
    started_at: datetime.datetime
    end_at: Optional[datetime.datetime]
    state: SandboxState
    cpu_count: Optional[float]
    memory_mb: Optional[int]
    envs: Dict[str, str] = field(default_factory=dict)
    pid: int = 0
    allow_internet_access: bool = False
    network: Optional[Dict[str, List[str]]] = None
    lifecycle: Dict[str, Any] = field(
        default_factory=lambda: {"on_timeout": "kill", "auto_resume": False}
    )


@dataclass
class SandboxMetrics:
    """A sandbox's resource use at ``timestamp``.

    ``cpu_used_pct`` is averaged since the previous reading through the same
    handle, or since creation. ``mem_used`` and ``mem_total`` are None
    without a memory cgroup or limit.
    """

    cpu_count: float
    cpu_used_pct: float
    disk_total: int
    disk_used: int
    mem_total: Optional[int]
    mem_used: Optional[int]
    timestamp: datetime.datetime


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def info_from_native(raw: Tuple[Any, ...]) -> SandboxInfo:
    """Build a SandboxInfo from the native module's tuple."""
    sandbox_id, template, metadata, envs, started, ends, state, cpu, memory, pid = raw[:10]
    internet, allow_out, deny_out = raw[10]
    on_timeout, auto_resume = raw[11]
    network = None
    if allow_out or deny_out:
        network = {"allow_out": list(allow_out), "deny_out": list(deny_out)}
    return SandboxInfo(
        sandbox_id=sandbox_id,
        template_id=template,
        name=None,
        metadata=dict(metadata),
        started_at=_utc(started),
        end_at=None if ends is None else _utc(ends),
        state=SandboxState(state),
        cpu_count=cpu,
        memory_mb=None if memory is None else memory >> 20,
        envs=dict(envs),
        pid=pid,
        allow_internet_access=internet,
        network=network,
        lifecycle={"on_timeout": on_timeout, "auto_resume": auto_resume},
    )


def metrics_from_native(raw: Tuple[Any, ...]) -> SandboxMetrics:
    """Build a SandboxMetrics from the native module's tuple."""
    timestamp, cpu_count, cpu_pct, _cpu_time, mem_used, mem_total, disk_used, disk_total = raw
    return SandboxMetrics(
        cpu_count=cpu_count,
        cpu_used_pct=cpu_pct,
        disk_total=disk_total,
        disk_used=disk_used,
        mem_total=mem_total,
        mem_used=mem_used,
        timestamp=_utc(timestamp),
    )


def query_to_native(query: Optional[SandboxQuery]) -> Tuple[Dict[str, str], Optional[str]]:
    """Turn a SandboxQuery into the native list filters. Several states, or
    none, list every state."""
    if query is None:
        return {}, None
    states = {SandboxState(state) for state in query.state or []}
    state = states.pop().value if len(states) == 1 else None
    return dict(query.metadata or {}), state


class PaginatorBase:
    """Pages of a ``Sandbox.list`` result, as E2B's paginator: read
    ``next_items()`` while ``has_next`` is true. Every sandbox is read at
    the first call; ``limit`` sets the page size."""

    def __init__(
        self, query: Optional[SandboxQuery], limit: Optional[int], next_token: Optional[str]
    ) -> None:
        self.limit = limit
        self._query = query
        self._items: Optional[List[SandboxInfo]] = None
        self._position = int(next_token or 0)

    @property
    def has_next(self) -> bool:
        """Whether another page can be read."""
        return self._items is None or self._position < len(self._items)

    @property
    def next_token(self) -> Optional[str]:
        """A token for the next page, or None on the last one."""
        return None if not self.has_next else str(self._position)

    def _page(self) -> List[SandboxInfo]:
        assert self._items is not None
        end = len(self._items) if not self.limit else self._position + self.limit
        page = self._items[self._position : end]
        self._position += len(page)
        return page
