"""Exceptions of SoulBox, with the names and hierarchy of E2B's SDK.

Every exception is a :class:`SandboxException`. Where Python has a matching
built-in, the exception is also an instance of it, so ``except
FileNotFoundError`` catches :class:`FileNotFoundException`. Each carries
``errno``, the OS error number behind it where there is one.
"""

from typing import Any, Dict, Optional

from ._types import CommandResult

__all__ = [
    "SandboxException",
    "TimeoutException",
    "InvalidArgumentException",
    "NotEnoughSpaceException",
    "NotFoundException",
    "FileNotFoundException",
    "SandboxNotFoundException",
    "CommandExitException",
    "AuthenticationException",
    "RateLimitException",
    "TemplateException",
]


class SandboxException(Exception):
    """Base class of every SoulBox error."""

    errno: Optional[int]


class TimeoutException(SandboxException, TimeoutError):
    """A command, or another call with a time limit, ran out of time.

    For a command, ``stdout`` and ``stderr`` hold what it wrote before its
    whole process tree was killed.
    """

    stdout: str
    stderr: str


class InvalidArgumentException(SandboxException, ValueError):
    """A value passed to SoulBox was rejected before anything changed."""


class NotEnoughSpaceException(SandboxException):
    """The sandbox's writable layer is full."""


class NotFoundException(SandboxException):
    """Something that was named does not exist, such as a command's pid."""


class FileNotFoundException(NotFoundException, FileNotFoundError):
    """A file or directory does not exist in the sandbox."""


class SandboxNotFoundException(NotFoundException):
    """The sandbox does not exist or no longer runs."""


class CommandExitException(SandboxException, CommandResult):
    """A command exited with a non-zero code, or a signal ended it.

    It carries the command's output like a :class:`CommandResult`:
    ``stdout``, ``stderr``, ``exit_code`` and ``error``.
    """

    def __init__(
        self,
        stderr: str = "",
        stdout: str = "",
        exit_code: int = 1,
        error: Optional[str] = None,
    ) -> None:
        SandboxException.__init__(self, stderr, stdout, exit_code, error)
        CommandResult.__init__(self, stderr, stdout, exit_code, error)
        self.errno = None

    def __str__(self) -> str:
        reason = ""
        if self.error and self.error != f"exit status {self.exit_code}":
            reason = f" ({self.error})"
        return f"Command exited with code {self.exit_code}{reason} and error:\n{self.stderr}"

    __repr__ = Exception.__repr__
    __eq__ = Exception.__eq__
    __hash__ = Exception.__hash__


class AuthenticationException(SandboxException):
    """E2B's error for a missing or rejected API key. SoulBox has no API
    key and never raises it; it exists so that ported code imports."""


class RateLimitException(SandboxException):
    """E2B's error for too many requests to its API. SoulBox has no API to
    rate-limit and never raises it; it exists so that ported code imports."""


class TemplateException(SandboxException):
    """E2B's error for a template its service cannot use. SoulBox reports
    an unknown or broken template with :class:`InvalidArgumentException`
    and never raises this one; it exists so that ported code imports."""


def _decode(data: Any) -> str:
    return bytes(data).decode("utf-8", "replace") if data is not None else ""


def exit_error(code: Optional[int], signal: Optional[int], oom_killed: bool) -> Optional[str]:
    """Describe how a command ended, or return None after an exit with code 0."""
    if signal is not None:
        reason = f"killed by signal {signal}"
        if oom_killed:
            reason = "out of memory: the sandbox's memory limit was reached, " + reason
        return reason
    if oom_killed:
        return "out of memory: the sandbox's memory limit was reached"
    if code:
        # The wording of E2B's envd, which reports Go's wait error.
        return f"exit status {code}"
    return None


def exit_code_of(code: Optional[int], signal: Optional[int]) -> int:
    """Return the exit code, or 128 + N when signal N ended the command."""
    if code is not None:
        return code
    return 128 + (signal or 0)


def _from_native(name: str, message: str, details: Dict[str, Any]) -> SandboxException:
    """Build the exception the native module raises for a core error."""
    cls = globals()[name]
    exception: SandboxException
    if cls is CommandExitException:
        code, signal = details.get("code"), details.get("signal")
        exception = CommandExitException(
            stderr=_decode(details.get("stderr")),
            stdout=_decode(details.get("stdout")),
            exit_code=exit_code_of(code, signal),
            error=exit_error(code, signal, bool(details.get("oom_killed"))),
        )
    else:
        exception = cls(message)
        if isinstance(exception, TimeoutException):
            exception.stdout = _decode(details.get("stdout"))
            exception.stderr = _decode(details.get("stderr"))
    exception.errno = details.get("errno")
    return exception
