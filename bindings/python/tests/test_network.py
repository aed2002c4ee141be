"""Internet access: allow_internet_access=True gives the sandbox
slirp4netns's tap device and DNS address. These tests only look at the
device, the route and /etc/resolv.conf; no packet leaves the sandbox."""

import asyncio
import subprocess
import sys

import pytest

from conftest import require_root
from soulbox import ALL_TRAFFIC, AsyncSandbox, InvalidArgumentException, Sandbox, SandboxNetworkOpts


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


def test_network_rules_imply_internet_access() -> None:
    require_root()
    network: SandboxNetworkOpts = {"deny_out": [ALL_TRAFFIC], "allow_out": ["192.0.2.0/24"]}
    with Sandbox.create(network=network, kill_on_drop=True) as sandbox:
        rules = sandbox.commands.run("ip -4 rule show").stdout
        assert "100:\tfrom all to 192.0.2.0/24 lookup main" in rules
        assert "200:\tfrom all prohibit" in rules
        # Route lookups only: no packet leaves the sandbox.
        allowed = sandbox.commands.run("ip -4 route get 192.0.2.1")
        assert allowed.stdout.startswith("192.0.2.1 via 10.0.2.2 dev eth0")
        denied = sandbox.commands.run("ip -4 route get 203.0.113.1 2>&1 || true")
        assert "Permission denied" in denied.stdout


def test_async_network_rules() -> None:
    require_root()

    async def main() -> str:
        async with await AsyncSandbox.create(
            network={"deny_out": ["198.51.100.0/24"]}, kill_on_drop=True
        ) as sandbox:
            result = await sandbox.commands.run("ip -4 rule show")
            return result.stdout

    assert "200:\tfrom all to 198.51.100.0/24 prohibit" in asyncio.run(main())


def test_all_traffic_is_every_ipv4_address() -> None:
    assert ALL_TRAFFIC == "0.0.0.0/0"


def test_network_without_internet_access_rejected() -> None:
    with pytest.raises(InvalidArgumentException, match="allow_internet_access=False"):
        Sandbox.create(allow_internet_access=False, network={"deny_out": [ALL_TRAFFIC]})


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ("0.0.0.0/0", "network must be a dict"),
        ({"allow_out": "192.0.2.1"}, r"network\['allow_out'\] must be a list"),
        ({"deny_out": [3232235777]}, r"network\['deny_out'\] entry 3232235777 must be a str"),
        ({"allowOut": []}, "network option 'allowOut' is unknown"),
        ({"allow_out": ["example.com"]}, 'allow_out entry "example.com" is a domain name'),
        ({"deny_out": ["::/0"]}, r'deny_out entry "::/0" is an IPv6'),
        ({"deny_out": ["10.1.2.3/16"]}, r"host bits set \(0.0.2.3 .*use 10.1.0.0/16"),
    ],
)
def test_invalid_network_rejected(network: object, message: str) -> None:
    with pytest.raises(InvalidArgumentException, match=message):
        Sandbox.create(network=network)  # type: ignore[arg-type]


def test_e2b_only_network_options_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="allow_public_traffic"):
        Sandbox.create(network={"allow_public_traffic": False})  # type: ignore[typeddict-unknown-key]
