"""One sandbox used from many Python threads at once."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

from soulbox import Sandbox


def test_threads_share_sandbox(sbx: Sandbox) -> None:
    def work(worker: int) -> List[str]:
        errors = []
        for round_ in range(8):
            text = f"worker {worker} round {round_}"
            path = f"threads/{worker}/{round_}.txt"
            sbx.files.write(path, text)
            echoed = sbx.commands.run(f"cat {path}").stdout
            if echoed != text:
                errors.append(f"{path}: read {echoed!r}")
            handle = sbx.commands.run("cat", background=True, stdin=True)
            handle.send_stdin(text)
            handle.close_stdin()
            if handle.wait().stdout != text:
                errors.append(f"{path}: stdin round trip failed")
        return errors

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    assert [error for errors in results for error in errors] == []
    assert len(sbx.files.list("threads", depth=2)) == 8 + 64


def test_blocking_call_releases_gil(sbx: Sandbox) -> None:
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        sbx.commands.run("sleep 1")
    finally:
        stop.set()
        counter.join()
    # With the GIL held for the whole second the counter would not run;
    # released, it ticks hundreds of times.
    assert ticks > 100, f"the counter thread ran only {ticks} times during a 1 s command"
