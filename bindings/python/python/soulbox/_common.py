"""Argument checks and result handling shared by Sandbox and AsyncSandbox."""

import os
import posixpath
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from . import _native
from ._types import (
    CommandResult,
    FileType,
    Mount,
    OutputDecoder,
    SandboxQuery,
    SeccompPolicy,
    WriteInfo,
)
from .exceptions import (
    CommandExitException,
    InvalidArgumentException,
    TimeoutException,
    exit_code_of,
    exit_error,
)


# The connection options of E2B's SDK. SoulBox runs sandboxes in this
# process, with no API server, so they are accepted and have no effect.
CONNECTION_OPTIONS = frozenset(
    ["api_key", "domain", "debug", "request_timeout", "headers", "proxy", "access_token"]
)

HOME = "/home/user"

Chunk = Tuple[Optional[str], Optional[str], Optional[bytes]]


def not_implemented(what: str) -> NotImplementedError:
    """Build the error for a part of E2B's API that SoulBox lacks so far."""
    return NotImplementedError(f"not implemented yet in SoulBox: {what}")


def check_connection_options(options: Mapping[str, Any]) -> None:
    """Reject keyword arguments that are neither SoulBox's nor E2B's."""
    unknown = sorted(set(options) - CONNECTION_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")


def check_str_map(name: str, value: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """Return a mapping of str to str as a dict, or raise naming the bad entry."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentException(f"{name} must be a dict of str to str, not {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidArgumentException(
                f"{name} must map str to str; entry {key!r}: {item!r} does not"
            )
    return dict(value)


def check_size(name: str, value: Optional[int], allow_none: bool) -> Optional[int]:
    """Check a count or size in bytes: a non-negative int, or None if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        allowed = "a non-negative int or None" if allow_none else "a non-negative int"
        raise InvalidArgumentException(f"{name} must be {allowed}, not {value!r}")
    return value


def check_optional_str(name: str, value: Any) -> Optional[str]:
    """Return ``value`` if it is a str or None, else raise InvalidArgumentException naming it."""
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentException(f"{name} must be a str or None, not {value!r}")
    return value


def check_query(query: Any) -> Optional[SandboxQuery]:
    """Return the ``query`` of ``Sandbox.list`` if it is None or a SandboxQuery
    whose metadata maps str to str, else raise InvalidArgumentException."""
    if query is None:
        return None
    if not isinstance(query, SandboxQuery):
        raise InvalidArgumentException(
            "query must be a SandboxQuery, such as SandboxQuery(metadata={'job': '42'}), "
            f"or None, not {query!r}"
        )
    check_str_map("query.metadata", query.metadata)
    return query


def template_name(template: Any) -> str:
    """Return the native template: "host", a built template's name, or an
    absolute path.

    A ``str`` without ``/`` is the name given to ``soulbox template build
    --name``. A path is a ``str`` with a ``/`` in it, or an ``os.PathLike``;
    a relative one starts at the current directory. It names a directory
    with a root file system, an OCI image layout directory, an image
    archive (a regular file), or a built ``soulbox.toml`` or its folder. In
    a ``str``, ``:NAME`` after the path selects one image of several. Only
    the part before the first ``:`` is made absolute, because the name may
    contain ``/`` and ``:`` itself.
    """
    if template is None or template == "host":
        return "host"
    reference = None
    if isinstance(template, os.PathLike):
        # A path object needs no "/", because os.fspath(Path("./rootfs")) is "rootfs".
        path = os.fspath(template)
    elif isinstance(template, str) and "/" not in template:
        # The native layer looks the name up and names the fix when no
        # template was built under it.
        return template
    else:
        path = template
    if not isinstance(path, str):
        raise InvalidArgumentException(
            f"template must be 'host' or a path, not {template!r}"
        )
    if isinstance(template, str) and ":" in path:
        path, reference = path.split(":", 1)
    absolute = os.path.abspath(path)
    try:
        absolute.encode("utf-8")
    except UnicodeEncodeError:
        # The path has surrogate escapes, os.fsdecode's form of bytes that are
        # not UTF-8, which the native layer rejects.
        raise InvalidArgumentException(
            f"template {template!r} resolves to {absolute!r}, which is not valid UTF-8; "
            "move it to a UTF-8 path"
        ) from None
    if reference is not None:
        return f"{absolute}:{reference}"
    return absolute


def create_options(
    template: Any,
    timeout: Optional[float],
    metadata: Optional[Dict[str, str]],
    envs: Optional[Dict[str, str]],
    allow_internet_access: Optional[bool],
    network: Any,
    mcp: Any,
    lifecycle: Any,
    volume_mounts: Any,
    limits: Dict[str, Any],
    kill_on_drop: bool,
    seccomp: Optional[SeccompPolicy],
    mounts: Optional[List[Mount]] = None,
) -> Dict[str, Any]:
    """Check the arguments of ``create`` and build the native options."""
    native_template = template_name(template)
    if allow_internet_access is not None and not isinstance(allow_internet_access, bool):
        raise InvalidArgumentException(
            f"allow_internet_access must be a bool or None, not {allow_internet_access!r}"
        )
    allow_out, deny_out = egress_rules(network)
    if network is not None and allow_internet_access is False:
        raise InvalidArgumentException(
            "allow_internet_access=False gives the sandbox no network, so network= has "
            "nothing to filter; leave allow_internet_access unset to get internet access "
            "with these rules, or pass network={'deny_out': [ALL_TRAFFIC]} to deny all "
            "outbound traffic"
        )
    if mcp is not None:
        raise not_implemented("MCP servers in the sandbox")
    on_timeout, auto_resume = lifecycle_options(lifecycle)
    if volume_mounts is not None:
        raise not_implemented("volume mounts")
    if timeout is None:
        timeout = _native.DEFAULT_TIMEOUT
    cpu_limit = limits["cpu_limit"]
    if cpu_limit is not None and (isinstance(cpu_limit, bool) or not isinstance(cpu_limit, (int, float))):
        raise InvalidArgumentException(f"cpu_limit must be a number of cores or None, not {cpu_limit!r}")
    return {
        "template": native_template,
        "timeout": seconds("timeout", timeout),
        "envs": check_str_map("envs", envs),
        "memory_limit": check_size("memory_limit", limits["memory_limit"], True),
        "pids_limit": check_size("pids_limit", limits["pids_limit"], True),
        "cpu_limit": None if cpu_limit is None else float(cpu_limit),
        "disk_size": check_size("disk_size", limits["disk_size"], False),
        "tmp_size": check_size("tmp_size", limits["tmp_size"], False),
        "disk_inodes": check_size("disk_inodes", limits["disk_inodes"], False),
        "open_files_limit": check_size("open_files_limit", limits["open_files_limit"], False),
        "file_size_limit": check_size("file_size_limit", limits["file_size_limit"], True),
        "metadata": check_str_map("metadata", metadata),
        "kill_on_drop": bool(kill_on_drop),
        "seccomp": None if seccomp is None else seccomp_spec(seccomp),
        "mounts": mount_specs(mounts),
        # SoulBox's default is no network, where E2B's is internet access.
        # Egress rules imply internet access, as in E2B.
        "allow_internet_access": allow_internet_access is True or network is not None,
        "allow_out": allow_out,
        "deny_out": deny_out,
        "on_timeout": on_timeout,
        "auto_resume": auto_resume,
    }


# Keys of E2B's network options that SoulBox does not implement: there is
# no public URL whose traffic they would control.
E2B_ONLY_NETWORK_KEYS = frozenset(["allow_public_traffic", "mask_request_host"])


def egress_rules(network: Any) -> Tuple[List[str], List[str]]:
    """Check the ``network`` option of ``create`` and return its
    ``allow_out`` and ``deny_out`` lists; the native layer checks each
    entry's address."""
    if network is None:
        return [], []
    if not isinstance(network, Mapping):
        raise InvalidArgumentException(
            f"network must be a dict with allow_out and deny_out lists, not {network!r}"
        )
    for key in network:
        if key in E2B_ONLY_NETWORK_KEYS:
            raise not_implemented(f"network option {key!r}; only allow_out and deny_out exist")
        if key not in ("allow_out", "deny_out"):
            raise InvalidArgumentException(
                f"network option {key!r} is unknown; use allow_out and deny_out"
            )
    lists: List[List[str]] = []
    for key in ("allow_out", "deny_out"):
        entries = network.get(key)
        if entries is None:
            lists.append([])
            continue
        if isinstance(entries, (str, bytes)) or not isinstance(entries, (list, tuple)):
            raise InvalidArgumentException(
                f"network[{key!r}] must be a list of IPv4 addresses and CIDR blocks (str), "
                f"not {entries!r}"
            )
        for entry in entries:
            if not isinstance(entry, str):
                raise InvalidArgumentException(
                    f"network[{key!r}] entry {entry!r} must be a str, such as '192.0.2.1' or "
                    "'192.0.2.0/24'"
                )
        lists.append(list(entries))
    return lists[0], lists[1]


LIFECYCLE_KEYS = ("on_timeout", "auto_resume")


def lifecycle_options(lifecycle: Any) -> Tuple[str, bool]:
    """Check E2B's ``lifecycle`` option of ``create`` and return its
    ``on_timeout`` ("kill", the default, or "pause") and ``auto_resume``
    (default False, valid only with "pause")."""
    if lifecycle is None:
        return "kill", False
    if not isinstance(lifecycle, Mapping):
        raise InvalidArgumentException(
            f"lifecycle must be a dict with the keys {', '.join(LIFECYCLE_KEYS)}, not {lifecycle!r}"
        )

    for key in lifecycle:
        if key not in LIFECYCLE_KEYS:
            raise InvalidArgumentException(
                f"lifecycle has the unknown key {key!r}; use {' and '.join(LIFECYCLE_KEYS)}"
            )

    on_timeout = lifecycle.get("on_timeout", "kill")
    if not isinstance(on_timeout, str) or on_timeout not in ("kill", "pause"):
        raise InvalidArgumentException(
            f"lifecycle['on_timeout'] must be 'kill' or 'pause', not {on_timeout!r}"
        )

    auto_resume = lifecycle.get("auto_resume", False)
    if not isinstance(auto_resume, bool):
        raise InvalidArgumentException(
            f"lifecycle['auto_resume'] must be True or False, not {auto_resume!r}"
        )

    if auto_resume and on_timeout != "pause":
        raise InvalidArgumentException(
            "lifecycle['auto_resume'] is valid only with lifecycle['on_timeout'] 'pause'; "
            "set on_timeout to 'pause' or auto_resume to False"
        )

    return on_timeout, auto_resume


def mount_specs(mounts: Any) -> List[Dict[str, Any]]:
    """Check the ``mounts`` of ``create``: a list of Mount, or of
    ``(source, target)`` and ``(source, target, writable)`` tuples."""
    if mounts is None:
        return []
    if isinstance(mounts, (str, bytes)) or not isinstance(mounts, (list, tuple)):
        raise InvalidArgumentException(f"mounts must be a list of Mount, not {mounts!r}")
    specs = []
    for mount in mounts:
        if isinstance(mount, tuple) and len(mount) in (2, 3):
            mount = Mount(*mount)
        if not isinstance(mount, Mount):
            raise InvalidArgumentException(
                f"each mount must be a Mount or a (source, target[, writable]) tuple, not {mount!r}"
            )
        if not isinstance(mount.source, (str, os.PathLike)):
            raise InvalidArgumentException(f"Mount.source must be a path, not {mount.source!r}")
        if not isinstance(mount.target, str):
            raise InvalidArgumentException(f"Mount.target must be a str, not {mount.target!r}")
        if not isinstance(mount.writable, bool):
            raise InvalidArgumentException(
                f"Mount.writable must be True or False, not {mount.writable!r}"
            )
        source = os.path.abspath(os.fspath(mount.source))
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentException(
                f"mount source {mount.source!r} is not valid UTF-8; move it to a UTF-8 path"
            ) from None
        specs.append({"source": source, "target": mount.target, "writable": mount.writable})
    return specs


def seccomp_spec(policy: SeccompPolicy) -> Dict[str, Any]:
    """Check a SeccompPolicy and build the native spec."""
    if not isinstance(policy, SeccompPolicy):
        raise InvalidArgumentException(f"seccomp must be a SeccompPolicy, not {policy!r}")
    allow = list(policy.allow)
    if not all(isinstance(name, str) for name in allow):
        raise InvalidArgumentException(f"SeccompPolicy.allow must list str names, not {allow!r}")
    deny = dict(policy.deny)
    for name, number in deny.items():
        if not isinstance(name, str) or isinstance(number, bool) or not isinstance(number, int):
            raise InvalidArgumentException(
                f"SeccompPolicy.deny must map str names to errno ints; {name!r}: {number!r} does not"
            )
    return {"base": policy.base, "allow": allow, "deny": deny}


# The native module converts seconds to a Rust Duration, whose maximum is
# just under 2**64 seconds.
_SECONDS_LIMIT = 2**64


def seconds(name: str, value: Any) -> float:
    """Check a number of seconds, 0 or more and below 2**64, and return it
    as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidArgumentException(
            f"{name} must be a number of seconds, 0 or more, not {value!r}"
        )
    # Both are compared because an int just below 2**64 rounds up to it as
    # a float, and float() raises OverflowError for an int above about
    # 1.8e308.
    if value >= _SECONDS_LIMIT or float(value) >= _SECONDS_LIMIT:
        raise InvalidArgumentException(
            f"{name} of {value!r} seconds is too large; give fewer than 2**64 seconds"
        )
    return float(value)


def command_timeout(timeout: Optional[float], background: bool) -> Optional[float]:
    """Resolve a command's timeout in seconds; None means no limit.

    None (the default) is 60 s for a command run to its end and no limit
    for a background command or a PTY session, which E2B ends after 60 s
    whether or not anyone waits for them. 0 means no limit.
    """
    if timeout is None:
        return None if background else _native.DEFAULT_COMMAND_TIMEOUT
    value = seconds("timeout", timeout)
    return value if value > 0 else None


def command_spec(
    cmd: str,
    envs: Optional[Dict[str, str]],
    user: Optional[str],
    cwd: Optional[str],
    timeout: Optional[float],
    stdin: Optional[bool],
    tag: Optional[str] = None,
) -> Dict[str, Any]:
    """Check a command's arguments and build the native spec."""
    if not isinstance(cmd, str):
        raise InvalidArgumentException(f"cmd must be a str, not {cmd!r}")
    return {
        "cmd": cmd,
        "envs": check_str_map("envs", envs),
        "user": check_optional_str("user", user),
        "cwd": check_optional_str("cwd", cwd),
        "timeout": timeout,
        "stdin": bool(stdin),
        "tag": check_optional_str("tag", tag),
    }


def terminal_size(rows: Any, cols: Any) -> Tuple[int, int]:
    """Check a terminal's rows and columns, which the kernel keeps as 16-bit
    numbers, and return them."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 0xFFFF:
            raise InvalidArgumentException(f"{name} must be an int from 1 to 65535, not {value!r}")
    return rows, cols


def pty_spec(
    size: Any,
    rows: Optional[int],
    cols: Optional[int],
    envs: Optional[Dict[str, str]],
    user: Optional[str],
    cwd: Optional[str],
    timeout: Optional[float],
) -> Dict[str, Any]:
    """Check a PTY's arguments and build the native spec (default 24x80)."""
    if size is not None:
        rows, cols = size.rows, size.cols
    rows, cols = terminal_size(24 if rows is None else rows, 80 if cols is None else cols)
    return {
        "rows": rows,
        "cols": cols,
        "envs": check_str_map("envs", envs),
        "user": check_optional_str("user", user),
        "cwd": check_optional_str("cwd", cwd),
        "timeout": timeout,
    }


def to_bytes(data: Any) -> bytes:
    """Convert data for stdin or a file: str is encoded as UTF-8."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgumentException(
        f"data must be str, bytes or a file object, not {type(data).__name__}"
    )


# Size of the chunks read from a file object that ``files.write`` streams.
STREAM_CHUNK = 1 << 20


class _NoData:
    """The type of :data:`NO_DATA`."""

    def __repr__(self) -> str:
        return "NO_DATA"


# The default of ``write``'s data, so that a missing argument differs from None.
NO_DATA: Any = _NoData()


def entries_user(second: Any, user: Optional[str]) -> Optional[str]:
    """Return the user of E2B 1.x's ``write(files, user)``, whose second
    positional argument is the user, not data."""
    if second is NO_DATA or second is None:
        return user
    if not isinstance(second, str):
        raise InvalidArgumentException(
            f"write(files, ...) takes the user after the list of files, a str, not {second!r}"
        )
    if user is not None:
        raise InvalidArgumentException("write(files, ...) got the user twice")
    return second


def write_entries(files: Any) -> List[Tuple[str, Any]]:
    """Return ``(path, data)`` of each entry of ``files.write_files``: a
    ``WriteEntry`` or another object with ``path`` and ``data``, or a dict
    with those keys."""
    entries = []
    for entry in files:
        if isinstance(entry, Mapping) and "path" in entry and "data" in entry:
            entries.append((entry["path"], entry["data"]))
        elif hasattr(entry, "path") and hasattr(entry, "data"):
            entries.append((entry.path, entry.data))
        else:
            raise InvalidArgumentException(
                "each entry of write_files must be a WriteEntry(path, data) or a dict "
                f"with 'path' and 'data', not {type(entry).__name__}"
            )
    return entries


def is_stream(data: Any) -> bool:
    """Return whether ``data`` is a file object to write in chunks."""
    return not isinstance(data, (str, bytes, bytearray, memoryview)) and hasattr(data, "read")


def stream_chunks(data: Any) -> Iterator[bytes]:
    """Read a binary or text file object in chunks, as UTF-8 bytes."""
    while True:
        chunk = data.read(STREAM_CHUNK)
        if not chunk:
            return
        yield to_bytes(chunk)


def absolute(path: str) -> str:
    """Return the absolute sandbox path; relative paths start at /home/user."""
    return posixpath.normpath(posixpath.join(HOME, path))


def write_info(path: str) -> WriteInfo:
    """Describe a file that ``files.write`` wrote at ``path``."""
    full = absolute(path)
    return WriteInfo(name=posixpath.basename(full), type=FileType.FILE, path=full)


def timed_out(timeout: Optional[float], stdout: str, stderr: str) -> TimeoutException:
    """Build the error of a command that its timeout ended."""
    limit = f" after {timeout:g} s" if timeout else ""
    error = TimeoutException(
        f"command timed out{limit}; it and every process it started were killed"
    )
    error.stdout, error.stderr, error.errno = stdout, stderr, None
    return error


def finish(
    stdout: str,
    stderr: str,
    exit: Tuple[Optional[int], Optional[int], bool, bool],
    timeout: Optional[float],
) -> CommandResult:
    """Turn a command's end into its result, or raise as E2B does."""
    code, signal, was_timed_out, oom_killed = exit
    if was_timed_out:
        raise timed_out(timeout, stdout, stderr)
    exit_code = exit_code_of(code, signal)
    error = exit_error(code, signal, oom_killed)
    if exit_code != 0:
        raise CommandExitException(stderr=stderr, stdout=stdout, exit_code=exit_code, error=error)
    return CommandResult(stderr=stderr, stdout=stdout, exit_code=0, error=error)


def result_from_run(raw: Tuple[Any, ...], timeout: Optional[float]) -> CommandResult:
    """Turn the native ``run`` result into a CommandResult, or raise."""
    stdout, stderr, code, signal, was_timed_out, oom_killed = raw
    return finish(
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
        (code, signal, was_timed_out, oom_killed),
        timeout,
    )


class EventStream:
    """Decode a command's native events into E2B's (stdout, stderr, pty)
    chunks and keep what the result needs.

    Output goes either to the caller (a callback or iteration) or into the
    result, never both, so streaming any amount keeps memory flat.
    """

    def __init__(self, pty: bool, timeout: Optional[float]) -> None:
        self.pty = pty
        self.timeout = timeout
        self.keep_stdout = True
        self.keep_stderr = True
        self._decoders = (OutputDecoder(), OutputDecoder())
        self._kept: Tuple[List[str], List[str]] = ([], [])
        self.exit: Optional[Tuple[Optional[int], Optional[int], bool, bool]] = None

    def feed(self, raw: Tuple[str, Any]) -> List[Chunk]:
        """Handle one native event and return the chunks it produced."""
        kind, payload = raw
        if kind == "exit":
            self.exit = tuple(payload)
            return self.flush()
        if self.pty:
            return [(None, None, bytes(payload))]
        index = 0 if kind == "stdout" else 1
        return self._chunk(index, self._decoders[index].decode(payload))

    def flush(self) -> List[Chunk]:
        """Return the characters the decoders still hold, at the end."""
        return self._chunk(0, self._decoders[0].flush()) + self._chunk(
            1, self._decoders[1].flush()
        )

    def _chunk(self, index: int, text: str) -> List[Chunk]:
        if not text:
            return []
        keep = self.keep_stdout if index == 0 else self.keep_stderr
        if keep:
            self._kept[index].append(text)
        return [(text, None, None) if index == 0 else (None, text, None)]

    def result(self) -> CommandResult:
        """Return the result once the exit arrived, or raise as E2B does."""
        stdout, stderr = "".join(self._kept[0]), "".join(self._kept[1])
        if self.exit is None:
            raise InvalidArgumentException(
                "the command's events ended without its exit; the handle was disconnected"
            )
        return finish(stdout, stderr, self.exit, self.timeout)


OutputCallback = Callable[[str], Any]
PtyCallback = Callable[[bytes], Any]


def settle_future(future: Any, value: Any, failed: bool) -> None:
    """Resolve an asyncio future from the native module, on its loop's
    thread, unless it was cancelled meanwhile."""
    if future.done():
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)
