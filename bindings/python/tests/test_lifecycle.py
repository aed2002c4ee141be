"""Sandboxes reachable by id: connect, list, kill by id, info, metrics,
pause and resume, sync and async."""

import asyncio
import datetime
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time
import uuid

import pytest

from conftest import require_root
from soulbox import (
    AsyncSandbox,
    InvalidArgumentException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)


def test_connect_from_another_process(sbx: Sandbox) -> None:
    sbx.files.write("shared.txt", "from the creator")
    script = (
        "import sys\n"
        "from soulbox import Sandbox\n"
        "sandbox = Sandbox.connect(sys.argv[1])\n"
        "print(sandbox.files.read('shared.txt'))\n"
        "sandbox.files.write('reply.txt', 'from another process')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, sbx.sandbox_id], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the creator"
    assert sbx.files.read("reply.txt") == "from another process"


def test_unknown_id_not_found() -> None:
    require_root()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("sb-doesnotexist")
    assert Sandbox.kill("sb-doesnotexist") is False


def test_info_and_list_by_metadata() -> None:
    require_root()
    label = uuid.uuid4().hex
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    first = Sandbox.create(metadata={"test": label, "role": "a"}, envs={"A": "1"}, timeout=120)
    second = Sandbox.create(metadata={"test": label, "role": "b"}, timeout=120)
    try:
        info = first.get_info()
        assert info.sandbox_id == first.sandbox_id
        assert info.metadata == {"test": label, "role": "a"}
        assert info.envs == {"A": "1"}
        assert info.template_id == "host"
        assert info.state == SandboxState.RUNNING
        assert info.started_at > before
        assert info.end_at is not None
        assert 100 < (info.end_at - info.started_at).total_seconds() <= 121
        assert Sandbox.get_info(second.sandbox_id).metadata["role"] == "b"

        paginator = Sandbox.list(query=SandboxQuery(metadata={"test": label}))
        assert paginator.has_next
        listed = paginator.next_items()
        assert not paginator.has_next
        assert [i.sandbox_id for i in listed] == [first.sandbox_id, second.sandbox_id]
        only_b = Sandbox.list(query=SandboxQuery(metadata={"test": label, "role": "b"}))
        assert [i.sandbox_id for i in only_b.next_items()] == [second.sandbox_id]
        paged = Sandbox.list(query=SandboxQuery(metadata={"test": label}), limit=1)
        assert len(paged.next_items()) == 1
        assert len(paged.next_items()) == 1
        assert not paged.has_next
    finally:
        assert Sandbox.kill(first.sandbox_id) is True
        second.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"test": label})).next_items() == []


def test_info_shows_create_options() -> None:
    require_root()
    label = uuid.uuid4().hex
    network = {"allow_out": ["192.0.2.1"], "deny_out": ["192.0.2.0/24"]}
    lifecycle = {"on_timeout": "pause", "auto_resume": True}
    configured = Sandbox.create(
        metadata={"test": label},
        allow_internet_access=True,
        network={"allow_out": ["192.0.2.1"], "deny_out": ["192.0.2.0/24"]},
        lifecycle={"on_timeout": "pause", "auto_resume": True},
        kill_on_drop=True,
    )
    default = Sandbox.create(metadata={"test": label}, kill_on_drop=True)
    try:
        listed = Sandbox.list(query=SandboxQuery(metadata={"test": label})).next_items()
        assert [i.sandbox_id for i in listed] == [configured.sandbox_id, default.sandbox_id]
        for info in (configured.get_info(), Sandbox.get_info(configured.sandbox_id), listed[0]):
            assert info.allow_internet_access is True
            assert info.network == network
            assert info.lifecycle == lifecycle
        for info in (default.get_info(), listed[1]):
            assert info.allow_internet_access is False
            assert info.network is None
            assert info.lifecycle == {"on_timeout": "kill", "auto_resume": False}
    finally:
        configured.kill()
        default.kill()


def test_info_shows_deny_only_network_async() -> None:
    require_root()
    label = uuid.uuid4().hex

    async def main() -> None:
        sandbox = await AsyncSandbox.create(
            metadata={"test": label},
            network={"deny_out": ["198.51.100.0/24"]},
            lifecycle={"on_timeout": "pause"},
            kill_on_drop=True,
        )
        try:
            listed = await AsyncSandbox.list(query=SandboxQuery(metadata={"test": label})).next_items()
            assert len(listed) == 1
            for info in (await sandbox.get_info(), listed[0]):
                assert info.allow_internet_access is True, "network= implies internet access"
                assert info.network == {"allow_out": [], "deny_out": ["198.51.100.0/24"]}
                assert info.lifecycle == {"on_timeout": "pause", "auto_resume": False}
        finally:
            await sandbox.kill()

    asyncio.run(main())


def test_pause_and_resume(sbx: Sandbox) -> None:
    counter = sbx.commands.run("while true; do echo x >> ticks; sleep 0.05; done", background=True)
    time.sleep(0.3)
    assert sbx.pause() is True
    assert sbx.pause() is False
    info = sbx.get_info()
    assert info.state == SandboxState.PAUSED
    assert info.end_at is None, "a paused sandbox's clock stops"
    paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
    assert sbx.sandbox_id in [i.sandbox_id for i in paused]
    frozen = sbx.files.read("ticks")
    time.sleep(0.5)
    assert sbx.files.read("ticks") == frozen, "a paused sandbox's processes must not run"
    assert Sandbox.connect(sbx.sandbox_id).get_info().state == SandboxState.RUNNING
    assert sbx.resume() is False
    time.sleep(0.3)
    assert len(sbx.files.read("ticks")) > len(frozen)
    assert sbx.beta_pause() is True
    assert sbx.get_info().state == SandboxState.PAUSED
    assert Sandbox.beta_pause(sbx.sandbox_id) is False
    assert sbx.resume() is True
    counter.kill()


def test_metrics(sbx: Sandbox) -> None:
    sbx.files.write("blob", b"x" * (4 << 20))
    metrics = sbx.get_metrics()
    assert len(metrics) == 1
    reading = metrics[0]
    assert reading.disk_used >= 4 << 20
    assert reading.disk_total > reading.disk_used
    assert reading.cpu_count > 0
    assert reading.mem_total == 2 << 30
    assert reading.mem_used is not None and reading.mem_used > 0
    assert Sandbox.get_metrics(sbx.sandbox_id)[0].disk_used >= 4 << 20


def test_set_timeout_by_id(sbx: Sandbox) -> None:
    Sandbox.set_timeout(sbx.sandbox_id, 1000)
    info = sbx.get_info()
    assert info.end_at is not None
    remaining = (info.end_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 990 < remaining <= 1000


def test_async_lifecycle() -> None:
    require_root()
    label = uuid.uuid4().hex

    async def main() -> None:
        sandbox = await AsyncSandbox.create(metadata={"test": label})
        try:
            connected = await AsyncSandbox.connect(sandbox.sandbox_id)
            assert (await connected.commands.run("echo hi")).stdout == "hi\n"
            info = await AsyncSandbox.get_info(sandbox.sandbox_id)
            assert info.metadata == {"test": label}
            listed = await AsyncSandbox.list(query=SandboxQuery(metadata={"test": label})).next_items()
            assert [i.sandbox_id for i in listed] == [sandbox.sandbox_id]
            assert await sandbox.pause() is True
            assert (await sandbox.get_info()).state == SandboxState.PAUSED
            assert await AsyncSandbox.resume(sandbox.sandbox_id) is True
            readings = await sandbox.get_metrics()
            assert readings[0].disk_total > 0
        finally:
            assert await AsyncSandbox.kill(sandbox.sandbox_id) is True
        with pytest.raises(SandboxNotFoundException):
            await AsyncSandbox.connect(sandbox.sandbox_id)

    asyncio.run(main())


def copy_with_libraries(root: pathlib.Path, program: str) -> None:
    """Copy ``program`` and the libraries ldd lists to the same paths."""
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    libraries = [word for line in listed.splitlines() for word in line.split() if word.startswith("/")]
    for path in [program, *libraries]:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def test_directory_template(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    root = tmp_path / "rootfs"
    copy_with_libraries(root, "/bin/sh")
    (root / "srv").mkdir()
    (root / "srv" / "marker").write_text("from the directory\n")
    monkeypatch.chdir(tmp_path)
    for template in ("./rootfs", root):
        with Sandbox.create(template=template) as sandbox:
            result = sandbox.commands.run("read line < /srv/marker; echo $line; [ -e /usr/bin/python3 ] || echo no-python")
            assert result.stdout == "from the directory\nno-python\n"
            assert sandbox.get_info().template_id == str(root)


def layer_tar(entries: "list[tuple[str, str, bytes]]") -> bytes:
    """Return a layer's tar stream: ("file", name, data), ("dir", name, b"")
    or ("link", name, target) entries, owned by root."""
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size = len(data)
                info.mode = 0o755
                archive.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode()
                archive.addfile(info)
    return stream.getvalue()


def write_docker_save(path: pathlib.Path, layers: "list[bytes]", config: "dict[str, object]", tag: str) -> None:
    """Write `docker save` output (before Docker 25) for one image."""

    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(layer)}" for layer in layers]},
        }
    ).encode()
    members = {f"{sha256(layer)}/layer.tar": layer for layer in layers}
    config_name = f"{sha256(image_config)}.json"
    members[config_name] = image_config
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{sha256(layer)}/layer.tar" for layer in layers]}]
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_image_template_relative_path(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `docker save` archive given by a relative path, with and without
    the image's name, runs with the image's Env and WorkingDir."""
    require_root()
    busybox = pathlib.Path("/bin/busybox").read_bytes()
    base = layer_tar(
        [("dir", "bin", b""), ("file", "bin/busybox", busybox), ("link", "bin/sh", b"busybox"), ("link", "bin/cat", b"busybox")]
    )
    upper = layer_tar([("dir", "srv", b""), ("file", "srv/marker", f"from the image {uuid.uuid4()}\n".encode())])
    write_docker_save(tmp_path / "image.tar", [base, upper], {"Env": ["FROM_IMAGE=yes"], "WorkingDir": "/srv"}, "py:1")
    monkeypatch.setenv("SOULBOX_LAYER_CACHE", str(tmp_path / "layers"))
    monkeypatch.chdir(tmp_path)
    for template in ("./image.tar", "./image.tar:py:1"):
        with Sandbox.create(template=template, envs={"FROM_SANDBOX": "yes"}) as sandbox:
            result = sandbox.commands.run("cat marker; echo $FROM_IMAGE $FROM_SANDBOX; [ -e /usr/bin/python3 ] || echo no-python")
            assert result.stdout.startswith("from the image ")
            assert result.stdout.endswith("\nyes yes\nno-python\n")
            expected = str(tmp_path / "image.tar") + template[len("./image.tar") :]
            assert sandbox.get_info().template_id == expected
    with pytest.raises(SandboxException, match='no image named "py:2"'):
        Sandbox.create(template="./image.tar:py:2")


def test_directory_template_path_objects(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    root = tmp_path / "rootfs"
    copy_with_libraries(root, "/bin/sh")
    monkeypatch.chdir(tmp_path)
    # os.fspath drops the "./", so the path object is the string "rootfs".
    with Sandbox.create(template=pathlib.Path("./rootfs")) as sandbox:
        assert sandbox.get_info().template_id == str(root)

    # Below a directory whose name is not UTF-8, the absolute path can only
    # be a str with surrogate escapes, which the native layer cannot take.
    odd = tmp_path / os.fsdecode(b"bad\xffname")
    odd.mkdir()
    (odd / "rootfs").symlink_to(root)
    monkeypatch.chdir(odd)
    with pytest.raises(InvalidArgumentException, match="not valid UTF-8"):
        Sandbox.create(template="./rootfs")


@pytest.mark.parametrize(
    "lifecycle, message",
    [
        ("pause", "lifecycle must be a dict"),
        ({"on_timeout": "pause", "autoResume": True}, "unknown key 'autoResume'"),
        ({"on_timeout": "stop"}, "lifecycle\\['on_timeout'\\] must be 'kill' or 'pause', not 'stop'"),
        ({"on_timeout": None}, "lifecycle\\['on_timeout'\\] must be 'kill' or 'pause', not None"),
        ({"on_timeout": "pause", "auto_resume": 1}, "lifecycle\\['auto_resume'\\] must be True or False"),
        ({"auto_resume": True}, "valid only with lifecycle\\['on_timeout'\\] 'pause'"),
        ({"on_timeout": "kill", "auto_resume": True}, "valid only with"),
    ],
)
def test_lifecycle_rejected(lifecycle: object, message: str) -> None:
    with pytest.raises(InvalidArgumentException, match=message):
        Sandbox.create(lifecycle=lifecycle, timeout=5)

    async def create() -> None:
        await AsyncSandbox.create(lifecycle=lifecycle, timeout=5)

    with pytest.raises(InvalidArgumentException, match=message):
        asyncio.run(create())


def wait_paused(sandbox: Sandbox) -> None:
    """Wait up to 5 s for the sandbox to be reported paused."""
    deadline = time.monotonic() + 5
    while sandbox.get_info().state != SandboxState.PAUSED:
        assert time.monotonic() < deadline, "not paused 5 s after the timeout"
        time.sleep(0.05)


def test_timeout_pauses_with_lifecycle() -> None:
    require_root()
    sandbox = Sandbox.create(timeout=1, lifecycle={"on_timeout": "pause"}, kill_on_drop=True)
    try:
        sandbox.commands.run("while true; do echo x >> ticks; sleep 0.05; done", background=True)
        time.sleep(1.2)
        wait_paused(sandbox)
        assert sandbox.is_running(), "the timeout killed a sandbox whose lifecycle pauses it"
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
        assert sandbox.sandbox_id in [i.sandbox_id for i in paused]
        frozen = sandbox.files.read("ticks")
        time.sleep(0.5)
        assert sandbox.files.read("ticks") == frozen, "a paused sandbox's processes must not run"

        connected = Sandbox.connect(sandbox.sandbox_id)
        info = connected.get_info()
        assert info.state == SandboxState.RUNNING
        assert info.end_at is not None
        left = (info.end_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        assert 0.7 < left <= 1.02, f"{left} s left; the timeout at creation is 1 s"
        time.sleep(0.3)
        assert len(sandbox.files.read("ticks")) > len(frozen)
    finally:
        sandbox.kill()


def test_auto_resume_on_command_async() -> None:
    require_root()

    async def main() -> None:
        sandbox = await AsyncSandbox.create(
            timeout=1, lifecycle={"on_timeout": "pause", "auto_resume": True}, kill_on_drop=True
        )
        try:
            deadline = time.monotonic() + 6
            while (await sandbox.get_info()).state != SandboxState.PAUSED:
                assert time.monotonic() < deadline, "not paused 5 s after the timeout"
                await asyncio.sleep(0.05)
            result = await sandbox.commands.run("echo awake")
            assert result.stdout == "awake\n"
            assert (await sandbox.get_info()).state == SandboxState.RUNNING
        finally:
            await sandbox.kill()

    asyncio.run(main())


def test_built_template_by_name(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    # The `soulbox` command builds; `cargo build -p soulbox-cli` makes it.
    soulbox = pathlib.Path(__file__).resolve().parents[3] / "target" / "debug" / "soulbox"
    assert soulbox.is_file(), f"{soulbox} is missing; run cargo build -p soulbox-cli first"
    monkeypatch.setenv("SOULBOX_LAYER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "soulbox.toml").write_text(
        'env = { FROM_TEMPLATE = "yes" }\nrun = ["echo built > /home/user/built.txt"]\n'
    )
    name = f"py-{uuid.uuid4().hex[:12]}"
    subprocess.run([str(soulbox), "template", "build", "--quiet", "--name", name, str(folder)], check=True)
    monkeypatch.chdir(tmp_path)
    for template in (name, "./app"):
        with Sandbox.create(template=template) as sandbox:
            result = sandbox.commands.run("cat /home/user/built.txt; echo $FROM_TEMPLATE")
            assert result.stdout == "built\nyes\n"
    with pytest.raises(InvalidArgumentException, match="soulbox template build"):
        Sandbox.create(template="no-such-built-template")


def test_build_template_from_python(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    monkeypatch.setenv("SOULBOX_LAYER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "soulbox.toml").write_text('run = ["echo from-step; echo built > /home/user/built.txt"]\n')
    chunks: "list[tuple[str, bytes]]" = []
    name = f"py-{uuid.uuid4().hex[:12]}"
    built = Sandbox.build_template(folder, name=name, on_output=lambda stream, data: chunks.append((stream, data)))
    assert built.name == name
    assert built.cached is False
    assert built.source == str(folder / "soulbox.toml")
    assert ("stdout", b"from-step\n") in chunks
    again = asyncio.run(AsyncSandbox.build_template(folder, name=name))
    assert again.cached is True
    assert again.key == built.key
    with Sandbox.create(template=name) as sandbox:
        assert sandbox.commands.run("cat /home/user/built.txt").stdout == "built\n"

    (folder / "soulbox.toml").write_text('run = ["echo failing; exit 3"]\n')
    with pytest.raises(SandboxException, match="exit code 3"):
        Sandbox.build_template(folder)
    with pytest.raises(InvalidArgumentException, match="unknown field"):
        (folder / "soulbox.toml").write_text('rn = ["true"]\n')
        Sandbox.build_template(folder)
