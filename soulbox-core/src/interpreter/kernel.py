# The Python side of SoulBox's code interpreter. It runs inside the sandbox
# as an ordinary command, `python3 -u -c <this file>`, and keeps one
# namespace alive across executions, as a Jupyter kernel does.
#
# Requests arrive on stdin, one JSON object per line:
#   {"id": 7, "code": "...", "envs": {"A": "1"}}
#   {"interrupt": 7}
# A thread reads them while code runs, and an interrupt raises
# KeyboardInterrupt in execution 7 only: at once if it runs, when it starts
# if it has not started yet, and never once it has ended.
# Replies leave on the original stdout, one JSON object per line, each with
# the request's id:
#   {"id": 7, "type": "stdout" | "stderr", "text": "..."}
#   {"id": 7, "type": "result", "formats": {"text": "...", ...}, "main": true}
#   {"id": 7, "type": "error", "name": "...", "value": "...", "traceback": "..."}
#   {"id": 7, "type": "done", "count": 3}
# File descriptors 1 and 2 become pipes that this program reads, so output of
# child processes (os.system, subprocess) is captured as well as print().
import ast
import base64
import builtins
import codecs
import collections
import json
import linecache
import os
import signal
import sys
import threading
import traceback
import types

_requests = os.fdopen(os.dup(0), "r", encoding="utf-8", errors="replace")
_replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
_reply_lock = threading.Lock()
_current = {"id": 0}
_streams = []
# Written to fds 1 and 2 after each execution; the readers pass everything
# before it on and then report that the stream has caught up.
_MARK = b"\0soulbox-sync-" + os.urandom(8).hex().encode() + b"\0"


def _send(kind, **fields):
    fields["id"] = _current["id"]
    fields["type"] = kind
    line = json.dumps(fields, ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate, such as a non-UTF-8 file name decoded with
            # surrogateescape. JSON readers reject it, so it travels as a
            # backslash escape, as this program's sys.stdout writes it.
            line = json.dumps(_escape_surrogates(fields), ensure_ascii=False)
    main = threading.get_ident() == _MAIN_THREAD
    if main:
        # An interrupt in the middle of a write would cut the line short.
        _interrupts["deferred"] += 1
    try:
        with _reply_lock:
            _replies.write(line + "\n")
            _replies.flush()
    finally:
        if main:
            _interrupts["deferred"] -= 1
    if main and _interrupts["pending"] and _executing.is_set():
        _interrupts["pending"] = False
        raise KeyboardInterrupt


def _escape_surrogates(value):
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    return value


class _Stream:
    """Reads one redirected descriptor and sends its data as replies."""

    def __init__(self, fd, name):
        self.name = name
        self.caught_up = threading.Event()
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.read_end = read_end
        info = os.fstat(read_end)
        self.pipe = (info.st_dev, info.st_ino)
        thread = threading.Thread(target=self._pump, daemon=True)
        thread.start()

    def _pump(self):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = b""
        while True:
            data = os.read(self.read_end, 65536)
            if not data:
                return
            pending += data
            while True:
                at = pending.find(_MARK)
                if at < 0:
                    break
                self._emit(decoder.decode(pending[:at]))
                pending = pending[at + len(_MARK) :]
                self.caught_up.set()
            # Hold back a tail that may be the start of a mark.
            keep = 0
            for size in range(min(len(_MARK) - 1, len(pending)), 0, -1):
                if _MARK.startswith(pending[-size:]):
                    keep = size
                    break
            self._emit(decoder.decode(pending[: len(pending) - keep]))
            pending = pending[len(pending) - keep :]

    def _emit(self, text):
        if not text:
            return
        with _late_output_lock:
            if not _collecting.is_set():
                # Between executions, as from a thread that a cell started:
                # the next execution reports it, as a notebook's next cell
                # shows such output.
                if _late_output["bytes"] < _MAX_LATE_OUTPUT:
                    _late_output["bytes"] += len(text)
                    _late_output["pieces"].append((self.name, text))
                return
        _send(self.name, text=text)

    def feeds(self, fd):
        """Return whether descriptor fd still writes to this stream's pipe."""
        try:
            info = os.fstat(fd)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.pipe


def _formats(value):
    """Return the representations of a value, under E2B's format names."""
    out = {}
    if not isinstance(value, type):
        bundle = _call(value, "_repr_mimebundle_")
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        if isinstance(bundle, dict):
            for mime, data in bundle.items():
                name = _MIME_NAMES.get(mime)
                if name is not None:
                    out[name] = _as_text(name, data)
        for method, name in _REPR_METHODS:
            if name not in out:
                data = _call(value, method)
                if data is not None:
                    out[name] = _as_text(name, data)
    out["text"] = repr(value)
    return out


_MIME_NAMES = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}
_REPR_METHODS = [
    ("_repr_html_", "html"),
    ("_repr_markdown_", "markdown"),
    ("_repr_svg_", "svg"),
    ("_repr_png_", "png"),
    ("_repr_jpeg_", "jpeg"),
    ("_repr_pdf_", "pdf"),
    ("_repr_latex_", "latex"),
    ("_repr_json_", "json"),
    ("_repr_javascript_", "javascript"),
]


def _call(value, method):
    function = getattr(value, method, None)
    if not callable(function):
        return None
    try:
        return function()
    except Exception:
        return None


def _as_text(name, data):
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, (bytes, bytearray)):
        return base64.b64encode(bytes(data)).decode("ascii")
    if name == "json" and not isinstance(data, str):
        return json.dumps(data)
    return str(data)


def display(*values):
    """Shows each value as a result of the execution, as Jupyter's display()."""
    for value in values:
        _send_result(value, False)


def _send_result(value, main):
    if os.getpid() != _KERNEL_PID:
        # A process that the code forked has no stream readers to catch up
        # with, and its values would only repeat its parent's.
        return
    _send_formats(_formats(value), main)


def _send_formats(formats, main):
    # Output printed before the value comes first, as in a notebook.
    _catch_up()
    _send("result", formats=formats, main=main)


def _show_figures(*args, **kwargs):
    """Sends each open matplotlib figure as a PNG result and closes it.

    It replaces pyplot.show, and runs after each execution, as the inline
    backend of a notebook shows and closes the figures a cell drew.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or os.getpid() != _KERNEL_PID:
        return
    # The code may have put a stand-in module of its own there, such as a
    # stub in a test, which must not fail every later execution.
    needed = ("get_fignums", "figure", "close")
    if not all(callable(getattr(pyplot, name, None)) for name in needed):
        return
    import io

    failed = None
    try:
        for number in pyplot.get_fignums():
            figure = pyplot.figure(number)
            image = io.BytesIO()
            try:
                figure.savefig(image, format="png", bbox_inches="tight")
            except Exception as error:
                # The other figures are still sent; the first failure is
                # the execution's error, marked as coming from the display.
                if failed is None:
                    failed = error
                    if hasattr(error, "add_note"):
                        error.add_note("(raised while drawing matplotlib figure %d for display)" % number)
                continue
            formats = {"png": base64.b64encode(image.getvalue()).decode("ascii")}
            formats["text"] = repr(figure)
            _send_formats(formats, False)
    finally:
        pyplot.close("all")
    if failed is not None:
        raise failed


class _PyplotFinder:
    """Makes pyplot's show() send figures to the host once pyplot loads.

    It finds matplotlib.pyplot with the other finders and wraps the loader,
    so nothing changes for a program that never imports pyplot.
    """

    def __init__(self):
        self._searching = threading.local()

    def find_spec(self, name, path=None, target=None):
        # A finder of the code's own that calls the other finders in turn,
        # as this one does, would otherwise call back here without end.
        if name != "matplotlib.pyplot" or getattr(self._searching, "active", False):
            return None
        self._searching.active = True
        try:
            spec = self._find_with_others(name, path, target)
        finally:
            self._searching.active = False
        if spec is None:
            return None
        if hasattr(spec.loader, "exec_module"):
            spec.loader = _PyplotLoader(spec.loader)
        return spec

    def _find_with_others(self, name, path, target):
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                return spec
        return None


class _PyplotLoader:
    """The loader of matplotlib.pyplot, which then replaces its show()."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.show = _show_figures


# The cells' globals are the namespace of a module of their own, which
# replaces this program as sys.modules["__main__"]: pickle, and so
# multiprocessing, find a cell's classes and functions there by name. This
# program's functions keep their globals, and _program keeps the module.
_program = sys.modules["__main__"]
_main = types.ModuleType("__main__")
_namespace = _main.__dict__
_namespace.update({"__builtins__": builtins, "display": display})
sys.modules["__main__"] = _main
_count = {"value": 0}
_executing = threading.Event()
# inspect.CO_COROUTINE, the same since Python 3.5; importing inspect takes
# milliseconds.
_CO_COROUTINE = 0x80
# Made on the first cell that uses top-level await: importing asyncio takes
# longer than the rest of this program's start.
_loop = {}
_MAIN_THREAD = threading.get_ident()
_KERNEL_PID = os.getpid()
# "deferred" counts the main thread's reply writes in progress; an interrupt
# that arrives during one is "pending" until the write has ended.
# "requested" is the id of an execution interrupted before it started.
_interrupts = {"deferred": 0, "pending": False, "requested": 0}
# Serializes the start of an execution with the stdin thread's interrupts.
_start_lock = threading.Lock()
# Set from the start of an execution until its "done", while output belongs
# to it. Output that arrives at other times waits in _late_output for the next one.
_collecting = threading.Event()
_late_output_lock = threading.Lock()
_late_output = {"bytes": 0, "pieces": []}
# Characters kept between executions at most; more are dropped.
_MAX_LATE_OUTPUT = 1 << 20
# Execution requests that the stdin thread has read, and their count; None
# marks the end of stdin.
_queued = collections.deque()
_queued_count = threading.Semaphore(0)


def _interrupt(signum, frame):
    # Between executions an interrupt has nothing to stop.
    if not _executing.is_set():
        return
    if _interrupts["deferred"]:
        _interrupts["pending"] = True
        return
    raise KeyboardInterrupt


def _run(code, cell):
    tree = ast.parse(code, filename=cell, mode="exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for node, mode in ((tree, "exec"), (last, "eval")):
        if node is None:
            continue
        compiled = compile(node, cell, mode, flags=flags, dont_inherit=True)
        value = eval(compiled, _namespace)
        if compiled.co_flags & _CO_COROUTINE:
            if not _loop:
                import asyncio

                _loop["loop"] = asyncio.new_event_loop()
            value = _loop["loop"].run_until_complete(value)
        if mode == "eval" and value is not None:
            _namespace["_"] = value
            _send_result(value, True)
    _show_figures()


def _report(error, cell):
    frames = traceback.extract_tb(error.__traceback__)
    # Drop this program's own frames: those above the first line of the
    # cell, and its signal handler below it. This program runs as `-c`, so
    # its frames' file name is "<string>".
    start = next((i for i, f in enumerate(frames) if f.filename == cell), len(frames))
    cell_frames = [f for f in frames[start:] if f.filename != "<string>"]
    if isinstance(error, SyntaxError):
        lines = traceback.format_exception_only(type(error), error)
    else:
        lines = ["Traceback (most recent call last):\n"]
        lines += traceback.format_list(cell_frames)
        lines += traceback.format_exception_only(type(error), error)
    _send(
        "error",
        name=type(error).__name__,
        value=_message(error),
        traceback="".join(lines),
    )


def _message(error):
    # An exception's __str__ is the code's own and may raise; the traceback
    # module shows the same placeholder then.
    try:
        return str(error)
    except Exception:
        return "<exception str() failed>"


def _read_requests():
    for line in _requests:
        try:
            request = json.loads(line)
        except ValueError:
            # For example the start of a request that the host stopped
            # writing. The host's next request starts with a line end.
            continue
        if not isinstance(request, dict):
            continue
        if "interrupt" in request:
            _interrupt_execution(request["interrupt"])
        else:
            _queued.append(request)
            _queued_count.release()
    _queued.append(None)
    _queued_count.release()


def _interrupt_execution(request_id):
    if not isinstance(request_id, int):
        return
    with _start_lock:
        if request_id == _current["id"] and _executing.is_set():
            # The handler runs on the main thread before it can take the
            # next request, which this thread queues only after this call.
            signal.pthread_kill(_MAIN_THREAD, signal.SIGINT)
        elif request_id > _current["id"]:
            _interrupts["requested"] = request_id


def _execute(request):
    _count["value"] += 1
    cell = "<cell-%d>" % _count["value"]
    code = request.get("code", "")
    linecache.cache[cell] = (len(code), None, code.splitlines(True), cell)
    saved = {}
    for key, value in (request.get("envs") or {}).items():
        saved[key] = os.environ.get(key)
        os.environ[key] = value
    try:
        # Inside the try, so that the finally clears _executing even when
        # a SIGINT from elsewhere lands right after it is set.
        with _start_lock:
            _current["id"] = request.get("id", 0)
            _interrupts["pending"] = False
            _executing.set()
            interrupted = _interrupts["requested"] == _current["id"]
        with _late_output_lock:
            _collecting.set()
            late = _late_output["pieces"]
            _late_output["pieces"] = []
            _late_output["bytes"] = 0
        for name, text in late:
            _send(name, text=text)
        if interrupted:
            raise KeyboardInterrupt
        _run(code, cell)
    except BaseException as error:  # noqa: B036 - SystemExit is reported too
        _executing.clear()
        _exit_if_forked(error)
        _report(error, cell)
        # A notebook shows what a failed cell drew too.
        try:
            _show_figures()
        except Exception:
            pass
    else:
        _exit_if_forked(None)
    finally:
        _executing.clear()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _exit_if_forked(error):
    """End a process that the code forked once the cell has ended in it.

    Back in this program's loop it would take requests meant for its parent
    and send replies under the parent's execution id. It exits as a script
    would at its end: with the SystemExit code, or status 1 and the
    traceback on stderr after another exception.
    """
    if os.getpid() == _KERNEL_PID:
        return
    status = 0
    if isinstance(error, SystemExit):
        if isinstance(error.code, int):
            status = error.code
        elif error.code is not None:
            print(error.code, file=sys.stderr)
            status = 1
    elif error is not None:
        traceback.print_exception(type(error), error, error.__traceback__)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


def _catch_up():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    waiting = []
    for fd, stream in zip((1, 2), _streams):
        # The code may have closed the descriptor or pointed it elsewhere,
        # such as to a file of its own, which must not get the mark.
        if not stream.feeds(fd):
            continue
        stream.caught_up.clear()
        try:
            os.write(fd, _MARK)
        except OSError:
            continue
        waiting.append(stream)
    for stream in waiting:
        # Bounded because the reader thread may be stuck, for example on
        # _reply_lock taken by the code.
        stream.caught_up.wait(2)


def main():
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _streams.extend([_Stream(1, "stdout"), _Stream(2, "stderr")])
    sys.stdin = open(0, "r", closefd=False)
    # Line-buffered, so that print() reaches the host as whole lines rather
    # than the text and its line end apart; each execution ends with a flush.
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        setattr(sys, name, stream)
    signal.signal(signal.SIGINT, _interrupt)
    sys.meta_path.insert(0, _PyplotFinder())
    threading.Thread(target=_read_requests, daemon=True).start()
    _send("ready")
    while True:
        _queued_count.acquire()
        request = _queued.popleft()
        if request is None:
            return
        try:
            _execute(request)
        except KeyboardInterrupt:
            # An interrupt that came as the execution ended, after its
            # error report had started: the execution is over anyway.
            pass
        _catch_up()
        with _late_output_lock:
            _collecting.clear()
        _send("done", count=_count["value"])


main()
