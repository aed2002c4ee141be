"""get_host: a port of the sandbox reached through this machine's loopback.
Every connection goes to 127.0.0.1 and, through it, to a server inside the
sandbox."""

import asyncio
import time
import urllib.request

import pytest

from conftest import require_root
from soulbox import AsyncSandbox, InvalidArgumentException, Sandbox


def fetch_when_up(url: str) -> bytes:
    """Return the body at ``url``, retrying for 20 s while the server starts."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_get_host_reaches_a_server(sbx: Sandbox) -> None:
    sbx.files.write("/tmp/page.txt", "served from the sandbox")
    sbx.commands.run("cd /tmp && python3 -m http.server 8000 --bind 127.0.0.1", background=True, timeout=0)
    host = sbx.get_host(8000)
    assert host.startswith("127.0.0.1:")
    assert fetch_when_up(f"http://{host}/page.txt") == b"served from the sandbox"
    assert sbx.get_host(8000) == host


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_get_host_rejects_bad_ports(sbx: Sandbox, port: int) -> None:
    with pytest.raises(InvalidArgumentException, match=str(port)):
        sbx.get_host(port)


def test_async_get_host() -> None:
    require_root()

    async def main() -> bytes:
        sandbox = await AsyncSandbox.create()
        try:
            await sandbox.commands.run(
                "cd /tmp && echo async > index.html && python3 -m http.server 8001 --bind 127.0.0.1",
                background=True,
                timeout=0,
            )
            host = sandbox.get_host(8001)
            return await asyncio.to_thread(fetch_when_up, f"http://{host}/")
        finally:
            await sandbox.kill()

    assert asyncio.run(main()) == b"async\n"
