"""The code interpreter's types, with the names and fields of E2B's
``e2b_code_interpreter`` package, and the conversions that Sandbox and
AsyncSandbox share."""

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from . import _common, _native
from .exceptions import InvalidArgumentException, SandboxException

__all__ = ["Context", "Execution", "ExecutionError", "Logs", "OutputMessage", "Result"]


@dataclass
class OutputMessage:
    """A piece of output that ``on_stdout`` or ``on_stderr`` receives.

    ``timestamp`` is when SoulBox received the piece, in microseconds since
    the Unix epoch, and ``error`` is True for stderr.
    """

    # NOTE: E2B's Python package documents the timestamp as nanoseconds, but
    # its JavaScript package fills in microseconds (Date.getTime() * 1000),
    # and SoulBox follows the JavaScript package.
    line: str
    timestamp: int
    error: bool = False

    def __str__(self) -> str:
        return self.line


@dataclass
class ExecutionError:
    """The exception that ended an execution: its type's ``name``, its
    message as ``value``, and the formatted ``traceback``."""

    name: str
    value: str
    traceback: str

    def to_json(self) -> str:
        """Return the error as a JSON object."""
        return json.dumps({"name": self.name, "value": self.value, "traceback": self.traceback})


# The representations a Result can have, in the order ``formats()`` lists them.
FORMAT_NAMES = ("text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript")


@dataclass
class Result:
    """A value the code displayed: each ``display()`` call and, with
    ``is_main_result`` set, the value of the code's final expression.

    Each representation the value offered has its own attribute: ``text``
    (its ``repr()``), ``html``, ``markdown``, ``svg``, ``png``, ``jpeg``,
    ``pdf``, ``latex``, ``json`` (the parsed value) and ``javascript``.
    ``png``, ``jpeg`` and ``pdf`` are base64 text. ``data`` and ``chart``
    are always None, because SoulBox does not extract data frames or
    charts.
    """

    text: Optional[str] = None
    html: Optional[str] = None
    markdown: Optional[str] = None
    svg: Optional[str] = None
    png: Optional[str] = None
    jpeg: Optional[str] = None
    pdf: Optional[str] = None
    latex: Optional[str] = None
    json: Optional[Any] = None
    javascript: Optional[str] = None
    data: Optional[Dict[str, Any]] = None
    chart: Optional[Any] = None
    is_main_result: bool = False
    extra: Optional[Dict[str, Any]] = None

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def formats(self) -> List[str]:
        """List the names of the representations present, then ``extra``'s keys."""
        names = [name for name in FORMAT_NAMES + ("data", "chart") if getattr(self, name)]
        return names + list(self.extra or {})

    def __repr__(self) -> str:
        if self.text:
            return f"Result({self.text})"
        return f"Result(Formats: {', '.join(self.formats())})"

    __str__ = __repr__

    def _repr_html_(self) -> Optional[str]:
        return self.html

    def _repr_markdown_(self) -> Optional[str]:
        return self.markdown

    def _repr_svg_(self) -> Optional[str]:
        return self.svg

    def _repr_png_(self) -> Optional[str]:
        return self.png

    def _repr_jpeg_(self) -> Optional[str]:
        return self.jpeg

    def _repr_pdf_(self) -> Optional[str]:
        return self.pdf

    def _repr_latex_(self) -> Optional[str]:
        return self.latex

    def _repr_json_(self) -> Optional[Any]:
        return self.json

    def _repr_javascript_(self) -> Optional[str]:
        return self.javascript


@dataclass(repr=False)
class Logs:
    """Output of an execution on ``stdout`` and ``stderr``, as the pieces
    arrived rather than as lines. Joined, the pieces are the whole output
    up to 16 MiB for each stream, and callbacks receive all of it."""

    stdout: List[str] = field(default_factory=list)
    stderr: List[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Logs(stdout: {self.stdout}, stderr: {self.stderr})"

    def to_json(self) -> str:
        """Return the logs as a JSON object."""
        return json.dumps({"stdout": self.stdout, "stderr": self.stderr})


@dataclass(repr=False)
class Execution:
    """The outcome of ``run_code``.

    ``results`` lists the displayed values in order, ``logs`` contains the
    output, and ``error`` is the exception that ended the code, if one did.
    ``execution_count`` counts the context's executions, this one included.
    """

    results: List[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: Optional[ExecutionError] = None
    execution_count: Optional[int] = None

    def __repr__(self) -> str:
        return f"Execution(Results: {self.results}, Logs: {self.logs}, Error: {self.error})"

    @property
    def text(self) -> Optional[str]:
        """The text of the final expression's value, or None without one."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    def to_json(self) -> str:
        """Return the execution as a JSON object, laid out as E2B's.

        As in E2B, ``logs`` and ``error`` are JSON text inside it, and
        ``execution_count`` is left out.
        """
        results = []
        for result in self.results:
            entry = {name: result[name] for name in FORMAT_NAMES if result[name]}
            entry.update(result.extra or {})
            entry["text"] = result.text
            results.append(entry)
        data = {
            "results": results,
            "logs": self.logs.to_json(),
            "error": self.error.to_json() if self.error else None,
        }
        return json.dumps(data)


@dataclass
class Context:
    """A code context: an interpreter whose variables persist between
    executions. ``Context(context_id, language, cwd)`` has the attribute
    ``id``, as in E2B."""

    id: str
    language: str
    cwd: str

    def __init__(self, context_id: str, language: str, cwd: str) -> None:
        self.id = context_id
        self.language = language
        self.cwd = cwd


OutputHandler = Callable[[OutputMessage], Any]
ResultHandler = Callable[[Result], Any]
ErrorHandler = Callable[[ExecutionError], Any]


class Handlers(NamedTuple):
    """The callbacks of one ``run_code`` call; each may be None."""

    on_stdout: Any
    on_stderr: Any
    on_result: Any
    on_error: Any

    def stream(self) -> List[str]:
        """List the kinds of event the native execution must send."""
        kinds = zip(("stdout", "stderr", "result", "error"), self)
        return [kind for kind, handler in kinds if handler is not None]

    def route(self, kind: str, payload: Any) -> Tuple[Any, Any]:
        """Return the callback for a native event and the object it receives."""
        if kind == "stdout":
            return self.on_stdout, OutputMessage(payload[0], payload[1], False)
        if kind == "stderr":
            return self.on_stderr, OutputMessage(payload[0], payload[1], True)
        if kind == "result":
            return self.on_result, result_from_native(*payload)
        return self.on_error, ExecutionError(*payload)


def context_id(context: Union[Context, str]) -> str:
    """Return the id of a Context, or the id itself."""
    if isinstance(context, Context):
        return context.id
    if isinstance(context, str):
        return context
    raise InvalidArgumentException(f"context must be a Context or a context id, not {context!r}")


def code_spec(
    code: str,
    language: Optional[str],
    context: Optional[Union[Context, str]],
    envs: Optional[Dict[str, str]],
    timeout: Optional[float],
    handlers: Handlers,
) -> Dict[str, Any]:
    """Check the arguments of ``run_code`` and build the native spec.

    ``timeout`` None is E2B's default of 300 s, and 0 means no limit.
    """
    if not isinstance(code, str):
        raise InvalidArgumentException(f"code must be a str, not {type(code).__name__}")
    if language is not None and not isinstance(language, str):
        raise InvalidArgumentException(f"language must be a str or None, not {language!r}")
    if timeout is None:
        limit: Optional[float] = _native.DEFAULT_CODE_TIMEOUT
    else:
        limit = _common.seconds("timeout", timeout) or None
    return {
        "code": code,
        "language": language,
        "context": None if context is None else context_id(context),
        "envs": _common.check_str_map("envs", envs),
        "timeout": limit,
        "stream": handlers.stream(),
    }


def check_event(raw: Optional[Tuple[str, Any]]) -> Tuple[str, Any]:
    """Return a native event as (kind, payload), or raise when the
    execution ended without its ``done`` event."""
    if raw is None:
        raise SandboxException("the execution ended without a result because it was interrupted")
    return raw


def result_from_native(formats: Dict[str, str], is_main_result: bool) -> Result:
    """Build a Result from the representations the interpreter sent."""
    extra = {name: value for name, value in formats.items() if name not in FORMAT_NAMES}
    return Result(
        text=formats.get("text"),
        html=formats.get("html"),
        markdown=formats.get("markdown"),
        svg=formats.get("svg"),
        png=formats.get("png"),
        jpeg=formats.get("jpeg"),
        pdf=formats.get("pdf"),
        latex=formats.get("latex"),
        json=parse_json(formats.get("json")),
        javascript=formats.get("javascript"),
        is_main_result=is_main_result,
        extra=extra or None,
    )


def parse_json(text: Optional[str]) -> Any:
    """Parse the ``json`` representation. A ``_repr_json_`` that returned
    a str which is not JSON gives that str."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def execution_from_native(raw: Tuple[Any, ...]) -> Execution:
    """Build an Execution from the payload of the native ``done`` event."""
    results, stdout, stderr, error, count = raw
    return Execution(
        results=[result_from_native(formats, main) for formats, main in results],
        logs=Logs(stdout=list(stdout), stderr=list(stderr)),
        error=None if error is None else ExecutionError(*error),
        execution_count=count,
    )


def context_from_native(raw: Tuple[str, str, str]) -> Context:
    """Build a Context from the native (id, language, cwd)."""
    return Context(*raw)
