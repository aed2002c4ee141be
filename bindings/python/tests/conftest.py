"""Fixtures of the Python package's tests.

Every test creates real sandboxes, which needs root. Without root a test
is skipped with the reason, except under CI (CI=true), where CI runs as
root and a skip would hide a failure, so the test fails instead.
"""

import os
import shutil
import tempfile
import time
from typing import Callable, Iterator, List

import pytest

# The sandboxes of this run get their own state directory, so that
# Sandbox.list() and connect() see only them and not those of other SoulBox
# users on this host. Set before soulbox makes its first sandbox, and
# inherited by the processes that tests start.
if "SOULBOX_STATE_DIR" not in os.environ:
    os.environ["SOULBOX_STATE_DIR"] = tempfile.mkdtemp(prefix="soulbox-pytest-")
    _OWN_STATE_DIR = os.environ["SOULBOX_STATE_DIR"]
else:
    _OWN_STATE_DIR = ""

from soulbox import Sandbox  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the state directory this run made."""
    if _OWN_STATE_DIR:
        shutil.rmtree(_OWN_STATE_DIR, ignore_errors=True)


def require_root() -> None:
    """Skip the calling test without root, or fail it under CI."""
    if os.geteuid() == 0:
        return
    reason = f"creating sandboxes needs root (euid {os.geteuid()})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run every test as root")
    pytest.skip(reason)


@pytest.fixture
def sbx() -> Iterator[Sandbox]:
    """A fresh sandbox with default options, killed after the test."""
    require_root()
    sandbox = Sandbox.create()
    try:
        yield sandbox
    finally:
        sandbox.kill()


def processes_named(sandbox: Sandbox, name: str) -> List[str]:
    """Return "pid state" of each process in the sandbox called ``name``,
    zombies included, read from /proc inside it. A process that exits
    during the scan makes cat fail on its file, which is ignored."""
    stat = sandbox.commands.run("cat /proc/[0-9]*/stat 2>/dev/null; true").stdout
    found = []
    for line in stat.splitlines():
        open_paren, close_paren = line.find("("), line.rfind(")")
        if open_paren < 0 or close_paren < 0:
            continue
        if line[open_paren + 1 : close_paren] == name:
            state = line[close_paren + 1 :].split()[0]
            found.append(f"{line[:open_paren].strip()} {state}")
    return found


def wait_until(check: Callable[[], bool], limit: float = 5.0) -> bool:
    """Poll ``check`` every 50 ms for up to ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def host_process_alive(pid: int) -> bool:
    """Return whether host process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def current_rss() -> int:
    """Return this process's resident memory in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS missing from /proc/self/status")
