"""How long a sandbox lives when its owner does not kill it."""

import gc
import os
import subprocess
import sys
import time

import pytest

from conftest import host_process_alive, require_root, wait_until
from soulbox import Sandbox, SandboxNotFoundException


def test_unclosed_sandbox_ends_at_timeout() -> None:
    require_root()
    sandbox = Sandbox.create(timeout=2)
    init_pid = sandbox._native.pid
    assert sandbox.is_running()
    assert wait_until(lambda: not sandbox.is_running(), limit=10), "timeout did not end it"
    assert wait_until(lambda: not host_process_alive(init_pid)), "PID 1 outlived the timeout"
    with pytest.raises(SandboxNotFoundException):
        sandbox.commands.run("true")


def test_set_timeout_shortens_life() -> None:
    require_root()
    sandbox = Sandbox.create()
    sandbox.set_timeout(1)
    assert wait_until(lambda: not sandbox.is_running(), limit=10)


def test_garbage_collected_sandbox_ends() -> None:
    # NOTE: the core kills a sandbox when its last handle drops; once
    # sandboxes can outlive their handles, this test must instead check
    # that the sandbox still ends at its timeout.
    require_root()
    sandbox = Sandbox.create()
    init_pid = sandbox._native.pid
    handle = sandbox.commands.run("sleep 300", background=True)
    del sandbox
    gc.collect()
    assert host_process_alive(init_pid), "a command handle keeps the sandbox alive"
    del handle
    gc.collect()
    assert wait_until(lambda: not host_process_alive(init_pid)), "the sandbox leaked"


def test_exiting_process_ends_sandbox() -> None:
    require_root()
    script = (
        "from soulbox import Sandbox\n"
        "sandbox = Sandbox.create(timeout=300)\n"
        "print(sandbox._native.pid, flush=True)\n"
        "import os; os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    init_pid = int(done.stdout.strip())
    assert wait_until(lambda: not host_process_alive(init_pid), limit=10), (
        f"PID 1 ({init_pid}) outlived its host process"
    )
    assert os.getpid() != init_pid
