"""SandboxPool and AsyncSandboxPool: hand-overs that are like new
sandboxes, the refill, and a close, collection or exit that leaves nothing
of the waiting sandboxes."""

import asyncio
import gc
import glob
import os
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Tuple

import pytest

from conftest import host_process_alive, require_root, wait_until
from soulbox import (
    MAX_POOL_SIZE,
    AsyncSandbox,
    AsyncSandboxPool,
    InvalidArgumentException,
    Sandbox,
    SandboxException,
    SandboxPool,
    SandboxQuery,
    SeccompPolicy,
)

# Long enough for a pool to build its sandboxes on a busy 2-core machine.
FILL_LIMIT = 60.0


def wait_full(pool: Any) -> None:
    """Wait until every sandbox of ``pool`` is built, or fail."""
    assert wait_until(lambda: pool.waiting == pool.size, limit=FILL_LIMIT), (
        f"pool filled only {pool.waiting} of {pool.size} within {FILL_LIMIT} s"
    )


def listed_ids(label: str) -> List[str]:
    """Return the ids that ``Sandbox.list`` shows with the metadata label."""
    paginator = Sandbox.list(SandboxQuery(metadata={"pool-test": label}))
    ids: List[str] = []
    while paginator.has_next:
        ids.extend(info.sandbox_id for info in paginator.next_items())
    return ids


def leftovers(waiting: List[Tuple[str, int]]) -> List[str]:
    """Describe what is left on the host of the sandboxes in ``waiting``: a
    live PID 1, a cgroup directory, a host mount or a state entry."""
    state_dir = os.path.join(os.environ["SOULBOX_STATE_DIR"], "sandboxes")
    with open("/proc/self/mountinfo") as mounts:
        mount_table = mounts.read()
    left = []
    for sandbox_id, pid in waiting:
        if host_process_alive(pid):
            left.append(f"{sandbox_id}: PID 1 {pid} alive")
        for pattern in ("/sys/fs/cgroup/*/soulbox/", "/sys/fs/cgroup/soulbox/"):
            left.extend(f"{sandbox_id}: cgroup {d}" for d in glob.glob(pattern + sandbox_id))
        if sandbox_id in mount_table:
            left.append(f"{sandbox_id}: host mount")
        entries = glob.glob(os.path.join(state_dir, sandbox_id + "*"))
        left.extend(f"{sandbox_id}: state entry {entry}" for entry in entries)
    return left


def test_pooled_sandbox_runs_commands() -> None:
    require_root()
    with SandboxPool(1, envs={"POOL_ENV": "set"}) as pool:
        assert pool.size == 1
        wait_full(pool)
        with pool.create() as sandbox:
            assert isinstance(sandbox, Sandbox)
            result = sandbox.commands.run("echo $POOL_ENV; hostname")
            assert result.stdout == f"set\n{sandbox.sandbox_id}\n"
            assert sandbox.files.write("note.txt", "kept").path == "/home/user/note.txt"
            assert sandbox.files.read("note.txt") == "kept"


def test_pooled_timeout_counts_from_hand_over() -> None:
    require_root()
    timeout = 30
    with SandboxPool(1, timeout=timeout) as pool:
        wait_full(pool)
        # The waiting sandbox ages, so a start or deadline taken from its
        # build would be at least this much too early.
        time.sleep(2)
        handed_at = time.time()
        with pool.create() as sandbox:
            returned_at = time.time()
            info = sandbox.get_info()
    started = info.started_at.timestamp()
    assert info.end_at is not None, "a pooled sandbox with a timeout has no end time"
    ends = info.end_at.timestamp()
    # The record keeps whole milliseconds.
    assert started >= handed_at - 0.01, f"started_at {started} is before the hand-over {handed_at}"
    assert started <= returned_at + 0.01, f"started_at {started} is after create returned"
    assert ends >= handed_at + timeout - 0.5, f"end_at {ends} counts from before the hand-over"
    assert ends <= returned_at + timeout + 0.5, f"end_at {ends} is past the timeout"


def test_pooled_sandbox_listed_with_metadata() -> None:
    require_root()
    label = uuid.uuid4().hex
    with SandboxPool(2, metadata={"pool-test": label}) as pool:
        wait_full(pool)
        assert listed_ids(label) == [], "waiting sandboxes are listed"
        with pool.create() as sandbox:
            assert listed_ids(label) == [sandbox.sandbox_id]
            assert sandbox.get_info().metadata == {"pool-test": label}


def test_pooled_sandbox_has_no_earlier_state() -> None:
    require_root()
    with SandboxPool(1) as pool:
        wait_full(pool)
        with pool.create() as first:
            assert first.commands.list() == [], "a command ran before the hand-over"
            first.commands.run("echo old > /home/user/mark; echo old > /tmp/mark")
            first.commands.run("sleep 300", background=True)
        wait_full(pool)
        with pool.create() as second:
            assert second.sandbox_id != first.sandbox_id
            assert second.commands.list() == [], "a command ran before the hand-over"
            assert not second.files.exists("/home/user/mark")
            assert not second.files.exists("/tmp/mark")
            listing = second.commands.run("ls -A /home/user /tmp").stdout
            assert listing == "/home/user:\n\n/tmp:\n"


def test_pool_refills_after_create() -> None:
    require_root()
    with SandboxPool(2) as pool:
        wait_full(pool)
        sandbox = pool.create()
        sandbox.kill()
        wait_full(pool)
        assert pool.waiting == 2


def test_close_kills_waiting_sandboxes() -> None:
    require_root()
    pool = SandboxPool(2)
    wait_full(pool)
    handed = pool.create()
    wait_full(pool)
    waiting = pool._native.waiting_sandboxes()
    assert len(waiting) == 2
    assert all(host_process_alive(pid) for _, pid in waiting)
    assert len(leftovers(waiting)) >= 4, "the check does not see the waiting sandboxes"
    pool.close()
    assert leftovers(waiting) == []
    assert pool.waiting == 0
    pool.close()
    # A sandbox already handed over runs on.
    assert handed.commands.run("echo alive").stdout == "alive\n"
    handed.kill()


def test_context_exit_closes_pool() -> None:
    require_root()
    with SandboxPool(1) as pool:
        wait_full(pool)
        waiting = pool._native.waiting_sandboxes()
    assert leftovers(waiting) == []
    assert repr(pool) == "SandboxPool(size=1, closed)"


def test_collected_pool_kills_waiting_sandboxes() -> None:
    require_root()
    pool = SandboxPool(2)
    wait_full(pool)
    waiting = pool._native.waiting_sandboxes()
    del pool
    gc.collect()
    assert leftovers(waiting) == []


@pytest.mark.parametrize("holder", ["module", "daemon thread"])
def test_pool_outlived_by_interpreter_leaves_nothing(holder: str) -> None:
    require_root()
    # A daemon thread's frame is never released, so Python does not
    # collect a pool that the thread holds, even at exit.
    hold = (
        "def hold(pool):\n"
        "    time.sleep(3600)\n"
        "threading.Thread(target=hold, args=(pool,), daemon=True).start()\n"
        "del pool\n"
        if holder == "daemon thread"
        else ""
    )
    script = (
        "import threading, time\n"
        "from soulbox import SandboxPool\n"
        "pool = SandboxPool(2)\n"
        "deadline = time.monotonic() + 60\n"
        "while pool.waiting < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "for sandbox_id, pid in pool._native.waiting_sandboxes():\n"
        "    print(sandbox_id, pid, flush=True)\n"
        f"{hold}"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    waiting = [(line.split()[0], int(line.split()[1])) for line in done.stdout.splitlines()]
    assert len(waiting) == 2, done.stdout
    assert leftovers(waiting) == []


@pytest.mark.parametrize("size", [0, -1, MAX_POOL_SIZE + 1, 1.5, True, "2", None])
def test_bad_size_raises(size: Any) -> None:
    with pytest.raises(InvalidArgumentException) as raised:
        SandboxPool(size)
    assert repr(size) in str(raised.value)
    assert f"1 to {MAX_POOL_SIZE}" in str(raised.value)
    with pytest.raises(InvalidArgumentException):
        AsyncSandboxPool(size)


BAD_OPTIONS: List[Dict[str, Any]] = [
    {"template": "no-such-template"},
    {"template": "/nonexistent/template"},
    {"timeout": -1},
    {"metadata": {"key": 1}},
    {"envs": "A=1"},
    {"memory_limit": 1},
    {"cpu_limit": "2"},
    {"lifecycle": {"on_timeout": "sleep"}},
    {"lifecycle": {"auto_resume": True}},
    {"network": {"deny_out": ["not-an-address"]}},
    {"seccomp": SeccompPolicy(base="nope")},
    {"mounts": ["/tmp"]},
    {"mcp": {"server": {}}},
    {"volume_mounts": {"data": "/data"}},
    {"colour": "red"},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda options: ",".join(options))
def test_bad_options_raise_as_create(options: Dict[str, Any]) -> None:
    with pytest.raises(Exception) as from_create:
        Sandbox.create(**options)
    with pytest.raises(type(from_create.value)) as from_pool:
        SandboxPool(1, **options)
    assert str(from_pool.value) == str(from_create.value)
    with pytest.raises(type(from_create.value)):
        AsyncSandboxPool(1, **options)


def test_create_after_close_raises() -> None:
    require_root()
    pool = SandboxPool(1)
    pool.close()
    with pytest.raises(SandboxException, match="closed"):
        pool.create()
    assert pool.waiting == 0


def test_async_pool_hands_over() -> None:
    require_root()
    label = uuid.uuid4().hex

    async def main() -> None:
        async with AsyncSandboxPool(1, metadata={"pool-test": label}) as pool:
            while pool.waiting < 1:
                await asyncio.sleep(0.05)
            waiting = pool._native.waiting_sandboxes()
            async with await pool.create() as sandbox:
                assert isinstance(sandbox, AsyncSandbox)
                assert (await sandbox.commands.run("echo hi")).stdout == "hi\n"
                assert await sandbox.commands.list() == []
                assert (await sandbox.get_info()).metadata == {"pool-test": label}
            refilled = time.monotonic() + FILL_LIMIT
            while pool.waiting < 1 and time.monotonic() < refilled:
                await asyncio.sleep(0.05)
            assert pool.waiting == 1
            waiting += pool._native.waiting_sandboxes()
        assert leftovers(waiting) == []
        await pool.close()
        with pytest.raises(SandboxException, match="closed"):
            await pool.create()

    asyncio.run(asyncio.wait_for(main(), FILL_LIMIT * 2))
