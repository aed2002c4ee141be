"""Internet access: allow_internet_access=True gives the sandbox
slirp4netns's tap device and DNS address. These tests only look at the
device, the route and /etc/resolv.conf; no packet leaves the sandbox."""

import asyncio
import subprocess
import sys

import pytest

from conftest import require_root
from soulbox import AsyncSandbox, InvalidArgumentException, Sandbox


def test_allow_internet_access_brings_tap_device_up() -> None:
    require_root()
    with Sandbox.create(allow_internet_access=True, kill_on_drop=True) as sandbox:
        address = sandbox.commands.run("ip -o -4 addr show dev eth0").stdout
        assert "inet 10.0.2.100/24" in address
        route = sandbox.commands.run("ip route show default").stdout
        assert "default via 10.0.2.2 dev eth0" in route
        resolv_conf = sandbox.files.read("/etc/resolv.conf")
        assert "\nnameserver 10.0.2.3\n" in resolv_conf


def test_default_is_loopback_only() -> None:
    require_root()
    # E2B's default is internet access; SoulBox's is loopback only.
    for options in ({}, {"allow_internet_access": False}):
        with Sandbox.create(kill_on_drop=True, **options) as sandbox:
            devices = sandbox.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
            assert devices.stdout == "lo\n", options


def test_async_allow_internet_access() -> None:
    require_root()

    async def main() -> str:
        async with await AsyncSandbox.create(allow_internet_access=True, kill_on_drop=True) as sandbox:
            result = await sandbox.commands.run("ip -o -4 addr show dev eth0")
            return result.stdout

    assert "inet 10.0.2.100/24" in asyncio.run(main())


def test_internet_access_with_sigchld_ignored() -> None:
    require_root()
    # An ignored SIGCHLD survives exec; slirp4netns must still be able to
    # wait for its own child. A process of its own keeps the setting from
    # affecting the other tests.
    program = (
        "import signal\n"
        "from soulbox import Sandbox\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "with Sandbox.create(allow_internet_access=True, kill_on_drop=True) as sandbox:\n"
        "    print(sandbox.commands.run('ip -o -4 addr show dev eth0').stdout)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "inet 10.0.2.100/24" in result.stdout


def test_allow_internet_access_must_be_bool() -> None:
    with pytest.raises(InvalidArgumentException, match="allow_internet_access"):
        Sandbox.create(allow_internet_access="yes")
