"""The code interpreter: run_code and code contexts, through Sandbox and
AsyncSandbox, on real sandboxes."""

import asyncio
import base64
import json
import os
import signal
import threading
import time
from typing import Any, List, Tuple

import pytest

from test_cases_async import with_sandbox
from soulbox import (
    AsyncSandbox,
    Context,
    Execution,
    ExecutionError,
    InvalidArgumentException,
    NotFoundException,
    OutputMessage,
    Result,
    Sandbox,
    TimeoutException,
)

TABLE_CLASS = """
class Table:
    def _repr_html_(self):
        return '<table></table>'
    def _repr_json_(self):
        return {'rows': 0}
"""


def test_variables_persist(sbx: Sandbox) -> None:
    first = sbx.run_code("x = 6 * 7\nimport math")
    assert isinstance(first, Execution)
    assert first.error is None
    assert first.results == [], "an assignment has no value"
    assert first.text is None
    second = sbx.run_code("x + math.floor(0.5)")
    assert second.text == "42"
    assert second.execution_count == 2


def test_print_and_child_output_in_logs(sbx: Sandbox) -> None:
    code = (
        "import os, sys\n"
        "print('from print')\n"
        "print('to stderr', file=sys.stderr)\n"
        "os.system('echo from a child; echo child error >&2')\n"
    )
    execution = sbx.run_code(code)
    assert "".join(execution.logs.stdout) == "from print\nfrom a child\n"
    assert "".join(execution.logs.stderr) == "to stderr\nchild error\n"
    assert execution.error is None


def test_exception_in_execution_error(sbx: Sandbox) -> None:
    code = "def divide(a, b):\n    return a / b\n\nprint('before')\ndivide(1, 0)"
    execution = sbx.run_code(code)
    error = execution.error
    assert isinstance(error, ExecutionError)
    assert error.name == "ZeroDivisionError"
    assert error.value == "division by zero"
    assert "return a / b" in error.traceback
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert json.loads(error.to_json())["name"] == "ZeroDivisionError"
    assert "".join(execution.logs.stdout) == "before\n"
    assert execution.results == []


def test_repr_html_gives_html(sbx: Sandbox) -> None:
    execution = sbx.run_code(TABLE_CLASS + "Table()")
    assert len(execution.results) == 1
    result = execution.results[0]
    assert isinstance(result, Result)
    assert result.is_main_result
    assert result.html == "<table></table>"
    assert result.json == {"rows": 0}
    assert result["html"] == "<table></table>"
    assert result.text is not None and result.text.startswith("<__main__.Table object")
    assert result.formats() == ["text", "html", "json"]
    assert result.png is None
    assert result.chart is None
    assert result._repr_html_() == "<table></table>"
    serialized = json.loads(execution.to_json())
    assert serialized["results"][0]["html"] == "<table></table>"
    assert json.loads(serialized["logs"]) == {"stdout": [], "stderr": []}
    assert serialized["error"] is None


def test_matplotlib_figure_gives_png(sbx: Sandbox) -> None:
    # E2B's code for a chart: the figure arrives as a result with .png.
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\nplt.show()"
    )
    assert execution.error is None, execution.error
    pngs = [result.png for result in execution.results if result.png]
    assert len(pngs) == 1, execution.results
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not execution.results[0].is_main_result


def test_display_gives_non_main_result(sbx: Sandbox) -> None:
    execution = sbx.run_code("print('first')\ndisplay('shown')\n'last'")
    assert [result.text for result in execution.results] == ["'shown'", "'last'"]
    assert [result.is_main_result for result in execution.results] == [False, True]
    assert execution.text == "'last'"


def test_callbacks_fire_in_order(sbx: Sandbox) -> None:
    seen: List[Tuple[str, Any]] = []
    before = time.time() * 1e6
    code = (
        "import sys, time\n"
        "print('one')\n"
        "time.sleep(0.2)\n"
        "print('oops', file=sys.stderr)\n"
        "display(2)\n"
        "raise ValueError('bad')"
    )
    execution = sbx.run_code(
        code,
        on_stdout=lambda message: seen.append(("stdout", message)),
        on_stderr=lambda message: seen.append(("stderr", message)),
        on_result=lambda result: seen.append(("result", result)),
        on_error=lambda error: seen.append(("error", error)),
    )
    after = time.time() * 1e6

    # Output arrives in pieces, which need not be whole lines.
    kinds = [kind for index, (kind, _) in enumerate(seen) if index == 0 or seen[index - 1][0] != kind]
    assert kinds == ["stdout", "stderr", "result", "error"]
    stdout = [message for kind, message in seen if kind == "stdout"]
    stderr = [message for kind, message in seen if kind == "stderr"]
    assert all(isinstance(message, OutputMessage) for message in stdout + stderr)
    assert "".join(message.line for message in stdout) == "one\n"
    assert "".join(str(message) for message in stderr) == "oops\n"
    assert [message.error for message in stdout + stderr] == [False] * len(stdout) + [True] * len(stderr)

    assert before <= stdout[0].timestamp <= stderr[-1].timestamp <= after
    assert stderr[0].timestamp - stdout[-1].timestamp >= 150_000, "stdout came while the code ran"

    assert seen[-2][1].text == "2"
    assert seen[-1][1].name == "ValueError"
    assert "".join(execution.logs.stdout) == "one\n", "callbacks do not empty the logs"
    assert execution.error is not None and execution.error.value == "bad"


def test_failing_callback_interrupts_code(sbx: Sandbox) -> None:
    def fail(message: OutputMessage) -> None:
        raise RuntimeError(f"callback rejected {message.line!r}")

    code = "import time\nprint('started')\ntime.sleep(30)\nfinished = True"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="callback rejected 'started"):
        sbx.run_code(code, on_stdout=fail)
    after = sbx.run_code("'finished' in globals()")
    assert time.monotonic() - started < 10, "the interrupt should stop the sleep"
    assert after.text == "False"


def test_failing_callback_with_queued_output(sbx: Sandbox) -> None:
    # More pieces than the queue between the execution and Python holds,
    # so the execution waits for room when the callback fails.
    def fail(message: OutputMessage) -> None:
        raise RuntimeError("callback rejected the output")

    code = "import sys, time\nfor i in range(500):\n    print(i, flush=True)\ntime.sleep(30)\nfinished = True"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="callback rejected"):
        sbx.run_code(code, on_stdout=fail)
    after = sbx.run_code("'finished' in globals()")
    assert time.monotonic() - started < 10, "the interrupted execution should end at once"
    assert after.text == "False"


def test_slow_callback_gets_every_piece(sbx: Sandbox) -> None:
    pieces: List[str] = []

    def slow(message: OutputMessage) -> None:
        time.sleep(0.002)
        pieces.append(message.line)

    execution = sbx.run_code("for i in range(200):\n    print(i, flush=True)", on_stdout=slow)
    expected = "".join(f"{i}\n" for i in range(200))
    assert "".join(pieces) == expected
    assert "".join(execution.logs.stdout) == expected


def test_ctrl_c_interrupts_code(sbx: Sandbox) -> None:
    sbx.run_code("finished = False")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sbx.run_code("import time\ntime.sleep(30)\nfinished = True")
    finally:
        timer.cancel()
    after = sbx.run_code("finished")
    assert time.monotonic() - started < 10, "Ctrl-C should interrupt the sleep"
    assert after.text == "False"


def test_timeout_keeps_variables(sbx: Sandbox) -> None:
    sbx.run_code("kept = 'still here'")
    started = time.monotonic()
    with pytest.raises(TimeoutException) as raised:
        sbx.run_code("import time\ntime.sleep(30)", timeout=0.5)
    assert time.monotonic() - started < 10
    assert isinstance(raised.value, TimeoutError)
    assert "keeps its variables" in str(raised.value)
    assert sbx.run_code("kept").text == "'still here'"


def test_envs_for_one_execution(sbx: Sandbox) -> None:
    code = "import os\nos.environ.get('GREETING', 'unset')"
    assert sbx.run_code(code, envs={"GREETING": "hello"}).text == "'hello'"
    assert sbx.run_code(code).text == "'unset'"


def test_contexts_separate_and_removable(sbx: Sandbox) -> None:
    context = sbx.create_code_context(cwd="/tmp")
    assert isinstance(context, Context)
    assert (context.language, context.cwd) == ("python", "/tmp")
    sbx.run_code("name = 'default'")
    inside = sbx.run_code("import os\n(os.getcwd(), 'name' in globals())", context=context)
    assert inside.text == "('/tmp', False)"
    ids = [known.id for known in sbx.list_code_contexts()]
    assert sorted(ids) == sorted([context.id, "default-python"])

    sbx.run_code("mine = 1", context=context.id)
    sbx.restart_code_context(context)
    assert sbx.run_code("'mine' in globals()", context=context).text == "False"

    sbx.remove_code_context(context.id)
    assert [known.id for known in sbx.list_code_contexts()] == ["default-python"]
    with pytest.raises(NotFoundException):
        sbx.run_code("1", context=context)
    with pytest.raises(NotFoundException):
        sbx.remove_code_context(context)
    assert sbx.run_code("name").text == "'default'"


def test_javascript_runs_in_a_node_context(sbx: Sandbox) -> None:
    pieces: List[str] = []
    sbx.run_code("let total = 40", language="js")
    execution = sbx.run_code(
        "console.log('adding'); total += await Promise.resolve(2); total",
        language="javascript",
        on_stdout=lambda message: pieces.append(message.line),
    )
    assert execution.error is None
    assert execution.text == "42"
    assert "".join(pieces) == "adding\n"
    failed = sbx.run_code("null.field", language="js")
    assert failed.error is not None
    assert failed.error.name == "TypeError"
    assert "cell:1" in failed.error.traceback
    with pytest.raises(TimeoutException):
        sbx.run_code("while (true) {}", language="js", timeout=0.5)
    assert sbx.run_code("total", language="js").text == "42"
    languages = sorted((c.id, c.language) for c in sbx.list_code_contexts())
    assert languages == [("default-js", "js")]
    context = sbx.create_code_context(language="node", cwd="/tmp")
    assert (context.language, context.cwd) == ("js", "/tmp")
    assert sbx.run_code("typeof total", context=context).text == "'undefined'"


def test_invalid_arguments_raise(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match='"r"'):
        sbx.run_code("cat('hi')", language="r")
    context = sbx.create_code_context()
    with pytest.raises(InvalidArgumentException, match="not both"):
        sbx.run_code("1", language="python", context=context)
    with pytest.raises(InvalidArgumentException, match="absolute"):
        sbx.create_code_context(cwd="tmp")
    with pytest.raises(InvalidArgumentException, match="timeout"):
        sbx.run_code("1", timeout=-1)
    assert sbx.run_code("1", language="python3").text == "1"


def test_same_context_from_two_threads(sbx: Sandbox) -> None:
    sbx.run_code("calls = []")
    texts: List[str] = []

    def run_slow() -> None:
        texts.append(str(sbx.run_code("import time\ntime.sleep(0.5)\ncalls.append('slow')\n'slow'").text))

    thread = threading.Thread(target=run_slow)
    thread.start()
    time.sleep(0.1)
    fast = sbx.run_code("calls.append('fast')\n'fast'")
    thread.join()
    assert fast.text == "'fast'"
    assert texts == ["'slow'"]
    assert sbx.run_code("calls").text == "['slow', 'fast']", "executions in a context take turns"


@with_sandbox
async def test_async_run_code_and_contexts(sbx: AsyncSandbox) -> None:
    await sbx.run_code("x = 41")
    lines: List[str] = []

    async def on_stdout(message: OutputMessage) -> None:
        await asyncio.sleep(0)
        lines.append(message.line)

    execution = await sbx.run_code("print('hi')\nx + 1", on_stdout=on_stdout)
    assert execution.text == "42"
    assert "".join(lines) == "hi\n"
    context = await sbx.create_code_context(cwd="/tmp")
    assert (await sbx.run_code("import os\nos.getcwd()", context=context)).text == "'/tmp'"
    listed = await sbx.list_code_contexts()
    assert sorted(known.id for known in listed) == sorted([context.id, "default-python"])
    await sbx.restart_code_context(context)
    await sbx.remove_code_context(context)
    with pytest.raises(NotFoundException):
        await sbx.run_code("1", context=context)
    with pytest.raises(TimeoutException):
        await sbx.run_code("import time\ntime.sleep(30)", timeout=0.5)
    assert (await sbx.run_code("x")).text == "41"


@with_sandbox
async def test_async_cancel_interrupts_only_its_code(sbx: AsyncSandbox) -> None:
    slow = asyncio.ensure_future(sbx.run_code("import time\ntime.sleep(1)\n'slow'"))
    await asyncio.sleep(0.2)
    # This execution waits for its turn behind the slow one, so the
    # cancel must not interrupt the slow one's code.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sbx.run_code("queued = True"), 0.2)
    assert (await slow).text == "'slow'"
    assert (await sbx.run_code("'queued' in globals()")).text == "False"

    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sbx.run_code("import time\ntime.sleep(30)\ndone = True"), 0.5)
    after = await sbx.run_code("'done' in globals()")
    assert time.monotonic() - started < 10, "the cancel should interrupt the sleep"
    assert after.text == "False"
