"""How long a sandbox lives when its owner does not kill it."""

import gc
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


def test_garbage_collected_sandbox_lives_on() -> None:
    require_root()
    sandbox = Sandbox.create(timeout=30)
    sandbox_id, init_pid = sandbox.sandbox_id, sandbox._native.pid
    del sandbox
    gc.collect()
    assert host_process_alive(init_pid), "a sandbox runs until its timeout or a kill"
    assert Sandbox.kill(sandbox_id) is True
    assert wait_until(lambda: not host_process_alive(init_pid)), "kill by id left PID 1"


def test_kill_on_drop_sandbox_ends_when_collected() -> None:
    require_root()
    sandbox = Sandbox.create(kill_on_drop=True)
    init_pid = sandbox._native.pid
    handle = sandbox.commands.run("sleep 300", background=True)
    del sandbox
    gc.collect()
    assert host_process_alive(init_pid), "a command handle keeps the sandbox alive"
    del handle
    gc.collect()
    assert wait_until(lambda: not host_process_alive(init_pid)), "the sandbox leaked"


def test_sandbox_outlives_its_process() -> None:
    require_root()
    script = (
        "from soulbox import Sandbox\n"
        "kept = Sandbox.create(timeout=60)\n"
        "dropped = Sandbox.create(kill_on_drop=True)\n"
        "print(kept.sandbox_id, kept._native.pid, dropped._native.pid, flush=True)\n"
        "kept.files.write('note.txt', 'left behind')\n"
        "import os; os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sandbox_id, kept_pid, dropped_pid = done.stdout.split()
    assert wait_until(lambda: not host_process_alive(int(dropped_pid)), limit=10), (
        "a kill_on_drop sandbox outlived its host process"
    )
    assert host_process_alive(int(kept_pid)), "a default sandbox outlives its host process"
    with Sandbox.connect(sandbox_id) as sandbox:
        assert sandbox.files.read("note.txt") == "left behind"
        assert sandbox.commands.run("hostname").stdout.strip() == sandbox_id
    assert not host_process_alive(int(kept_pid)) or wait_until(
        lambda: not host_process_alive(int(kept_pid))
    )


def test_interpreter_exits_cleanly_after_async() -> None:
    # Results that the runtime's threads deliver while the interpreter
    # shuts down must not crash it; the race is narrow, so try many times.
    require_root()
    script = (
        "import asyncio\n"
        "from soulbox import AsyncSandbox\n"
        "async def main():\n"
        "    sandbox = await AsyncSandbox.create(kill_on_drop=True)\n"
        "    await sandbox.commands.run('true')\n"
        "    await sandbox.kill()\n"
        "asyncio.run(main())\n"
    )
    codes = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60).returncode
        for _ in range(20)
    ]
    assert codes == [0] * 20, f"exit statuses: {codes}"
