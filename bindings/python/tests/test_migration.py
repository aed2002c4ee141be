"""Programs written for E2B's SDK run on SoulBox with only the import
changed."""

import pathlib
import subprocess
import sys

from conftest import require_root

HERE = pathlib.Path(__file__).parent


def run_with_soulbox(script: str) -> str:
    """Run a script from this directory with its e2b import made soulbox's."""
    source = (HERE / script).read_text()
    assert source.count("from e2b import") == 1, "the script should import e2b once"
    source = source.replace("from e2b import", "from soulbox import")
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr}"
    return done.stdout


def test_sync_script_runs() -> None:
    require_root()
    output = run_with_soulbox("e2b_script.py").splitlines()
    assert output == [
        "id: True",
        "sum: 42",
        "streamed: ['hello', 'warn']",
        "exit: 2 partial",
        "listed: True",
        "killed: True",
        "files: ['1.txt', '2.txt']",
        "exists: True False",
        "removed: False",
        "running: False",
    ]


def test_async_script_runs() -> None:
    require_root()
    output = run_with_soulbox("e2b_script_async.py").splitlines()
    assert output == [
        "read: async note",
        "greeting: hello",
        "exit: 4",
        "chunks: ['one', 'two']",
    ]

