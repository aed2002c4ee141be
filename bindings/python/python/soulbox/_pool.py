"""The part of :class:`SandboxPool` and :class:`AsyncSandboxPool` that
does not wait: construction from the options of ``Sandbox.create``, and
the pool's counts."""

import os
from typing import Any, Dict, List, Optional, Union

from . import _common, _native
from ._types import Mount, SandboxNetworkOpts, SeccompPolicy
from .exceptions import InvalidArgumentException, SandboxException

MAX_POOL_SIZE: int = _native.MAX_POOL_SIZE


def check_pool_size(size: Any) -> int:
    """Return ``size`` if it is an int from 1 to MAX_POOL_SIZE, else raise
    InvalidArgumentException naming it and the range."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_POOL_SIZE:
        raise InvalidArgumentException(
            f"pool size must be an int from 1 to {MAX_POOL_SIZE} (MAX_POOL_SIZE), not {size!r}"
        )
    return size


class PoolBase:
    """Sandboxes of one configuration, built in advance by a thread of the
    pool's own; see :class:`soulbox.SandboxPool`."""

    def __init__(
        self,
        size: int,
        *,
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
    ) -> None:
        """Start a pool that keeps ``size`` sandboxes waiting, built with
        the keyword arguments of ``Sandbox.create``, and fill it in the
        background.

        :raises InvalidArgumentException: for a ``size`` outside 1 to
            MAX_POOL_SIZE, or a bad option as ``Sandbox.create`` does.
        :raises NotImplementedError: as ``Sandbox.create`` does.
        """
        _common.check_connection_options(opts)
        checked_size = check_pool_size(size)
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
        self._native = _native.NativePool(native_options, checked_size)

    @property
    def size(self) -> int:
        """The number of sandboxes the pool keeps waiting."""
        return self._native.size

    @property
    def waiting(self) -> int:
        """The number of sandboxes waiting for a hand-over now, which is 0
        once the pool is closed."""
        return self._native.waiting

    def __repr__(self) -> str:
        state = "closed" if self._native.is_closed() else f"waiting={self.waiting}"
        return f"{type(self).__name__}(size={self.size}, {state})"


def handed_over(native: Optional["_native.NativeSandbox"]) -> "_native.NativeSandbox":
    """Return the sandbox of a native create, which is None once the pool
    is closed, or raise SandboxException."""
    if native is None:
        raise SandboxException(
            "the sandbox pool is closed, so it hands over no sandboxes; start a new pool"
        )
    return native
