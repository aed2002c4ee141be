"""Ctrl-C during a blocking call, and cancellation of a coroutine."""

import signal
import subprocess
import sys
import time

import pytest

from conftest import require_root

# Runs a long command, is interrupted by SIGINT, and then reports how many
# sleep processes are left in the sandbox after a short grace period.
CHILD = r"""
import sys, time
from soulbox import Sandbox
sandbox = Sandbox.create()
callbacks = sys.argv[1] == "callbacks"
started = time.monotonic()
try:
    print("ready", flush=True)
    if callbacks:
        sandbox.commands.run("sleep 300 & sleep 300 & wait", timeout=0, on_stdout=print)
    else:
        sandbox.commands.run("sleep 300 & sleep 300 & wait", timeout=0)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f}", flush=True)
for _ in range(50):
    stat = sandbox.commands.run("cat /proc/[0-9]*/stat 2>/dev/null; true").stdout
    left = stat.count("(sleep)")
    if left == 0:
        break
    time.sleep(0.1)
print(f"sleeps left {left}", flush=True)
sandbox.kill()
"""


@pytest.mark.parametrize("mode", ["plain", "callbacks"])
def test_ctrl_c_interrupts_run(mode: str) -> None:
    require_root()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("interrupted after"), out
    assert time.monotonic() - sent < 30
    assert lines[-1] == "sleeps left 0", out
