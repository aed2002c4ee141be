//! The binding policy, in one place: every call into soulbox-core goes
//! through [`block`] (the synchronous API) or [`spawn`] (the asyncio API).
//!
//! - [`block`] releases the GIL while it waits, so other Python threads run,
//!   and wakes every [`SIGNAL_CHECK_INTERVAL`] to run Python's signal
//!   handlers. When one raises (Ctrl-C raises `KeyboardInterrupt`), the
//!   Rust future is dropped on the runtime, which cancels its work, and the
//!   exception propagates.
//! - [`spawn`] runs the future as a task on the same tokio runtime and
//!   returns an asyncio future, which the task resolves on the event loop's
//!   thread with `call_soon_threadsafe`. Cancelling the asyncio future
//!   aborts the task, as Ctrl-C does for [`block`].
//! - [`core_error`] maps every `soulbox_core::Error` to the exception
//!   hierarchy of `soulbox.exceptions`.
//!
//! `AsyncSandbox` awaits the Rust futures themselves rather than running
//! the blocking calls in a thread pool. A pending call then costs a tokio
//! task rather than a blocked thread, and a watch or a long `wait()` would
//! each hold a thread. Cancellation also reaches the Rust future, where a
//! thread would run on to completion.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::runtime::Runtime;

/// How often a blocking call wakes to let Python handle signals.
pub const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Returns the process-wide tokio runtime, starting it on first use.
///
/// NOTE: a process forked after the runtime started (multiprocessing's
/// `fork` start method) has no runtime threads; SoulBox calls in such a
/// child hang or fail. Use the `spawn` or `forkserver` start method.
pub fn runtime() -> PyResult<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("soulbox-runtime")
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("failed to start the tokio runtime: {e}")))?;
    // Two threads may race here; the runtime that loses is dropped unused.
    Ok(RUNTIME.get_or_init(|| built))
}

/// A value that a SoulBox call returns, converted to Python once the GIL is
/// held again.
pub trait ToPython: Send + 'static {
    /// Converts the value into a Python object.
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

impl ToPython for () {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py.None())
    }
}

impl ToPython for bool {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.into_pyobject(py)?.to_owned().into_any().unbind())
    }
}

impl ToPython for Vec<u8> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(PyBytes::new(py, &self).into_any().unbind())
    }
}

impl<T: ToPython> ToPython for Option<T> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Some(value) => value.to_python(py),
            None => Ok(py.None()),
        }
    }
}

/// A list of values; a plain `Vec<u8>` converts to `bytes` instead.
pub struct List<T>(pub Vec<T>);

impl<T: ToPython> ToPython for List<T> {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let items = self
            .0
            .into_iter()
            .map(|item| item.to_python(py))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(pyo3::types::PyList::new(py, items)?.into_any().unbind())
    }
}

/// Waits for `future` with the GIL released and converts its value.
///
/// # Errors
///
/// The mapped core error; `KeyboardInterrupt` (or whatever a signal
/// handler raises) after cancelling the future; `RuntimeError` when called
/// from a thread of the runtime itself.
pub fn block<F, T>(py: Python<'_>, future: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = soulbox_core::Result<T>> + Send + 'static,
    T: ToPython,
{
    wait(py, future)?.to_python(py)
}

/// Waits for `future` with the GIL released, as [`block`] does, and returns
/// its value unconverted.
///
/// The future runs as a task on the runtime's worker threads rather than
/// on the calling thread. A worker both polls the sandbox's descriptors
/// and runs the task, so each step of the call continues on the thread
/// that saw its event, and the caller is woken once, at the end. Polled
/// on the calling thread, every event would cost a wake-up of that thread
/// by a worker instead.
///
/// # Errors
///
/// As [`block`].
pub fn wait<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = soulbox_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(PyRuntimeError::new_err(
            "a blocking SoulBox call was made on a thread of SoulBox's async runtime; \
             use AsyncSandbox there",
        ));
    }
    let runtime = runtime()?;
    let mut task = runtime.spawn(future);
    loop {
        let step = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK_INTERVAL, &mut task).await })
        });
        match step {
            Ok(Ok(result)) => return result.map_err(|e| core_error(py, e)),
            Ok(Err(join_error)) if join_error.is_panic() => {
                return Err(pyo3::panic::PanicException::new_err(format!(
                    "a SoulBox call panicked: {join_error}"
                )))
            }
            Ok(Err(join_error)) => {
                return Err(PyRuntimeError::new_err(format!(
                    "a SoulBox call was cancelled: {join_error}"
                )))
            }
            Err(_elapsed) => {
                if let Err(interrupt) = py.check_signals() {
                    // Aborting drops the future on a worker thread, inside
                    // the runtime, which cancels its work.
                    task.abort();
                    return Err(interrupt);
                }
            }
        }
    }
}

/// Runs `future` on the runtime and returns an asyncio future of its
/// converted value. Must be called with an asyncio event loop running in
/// this thread. Cancelling the asyncio future aborts the task, which drops
/// the Rust future and so cancels its work.
///
/// # Errors
///
/// `RuntimeError` if no event loop runs in this thread; the asyncio future
/// raises the mapped core error.
pub fn spawn<'py, F, T>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = soulbox_core::Result<T>> + Send + 'static,
    T: ToPython,
{
    let runtime = runtime()?;
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let awaitable = event_loop.call_method0("create_future")?;
    let target = (event_loop.unbind(), awaitable.clone().unbind());
    let task = runtime.spawn(async move {
        let result = future.await;
        resolve(target, result);
    });
    let cancel = CancelTask(task.abort_handle());
    awaitable.call_method1("add_done_callback", (cancel,))?;
    Ok(awaitable)
}

/// Hands a task's result to its asyncio future, on the event loop's
/// thread. Does nothing once the interpreter is shutting down.
fn resolve<T: ToPython>(
    (event_loop, awaitable): (Py<PyAny>, Py<PyAny>),
    result: soulbox_core::Result<T>,
) {
    let Ok(shutting_down) = SHUTTING_DOWN.read() else {
        return;
    };
    if *shutting_down {
        return;
    }
    Python::attach(|py| {
        let (value, failed) = match result.map(|value| value.to_python(py)) {
            Ok(Ok(value)) => (value, false),
            Ok(Err(error)) => (error.into_value(py).into_any(), true),
            Err(error) => (core_error(py, error).into_value(py).into_any(), true),
        };
        let settle = py
            .import("soulbox._common")
            .and_then(|module| module.getattr("settle_future"));
        if let Ok(settle) = settle {
            // Fails only when the loop is closed, and then no caller waits.
            let _ = event_loop.call_method1(
                py,
                "call_soon_threadsafe",
                (settle, awaitable, value, failed),
            );
        }
    });
}

/// Set once the interpreter exits. Runtime threads hold the read lock
/// while they run Python code, so [`shut_down`] waits until none does, and
/// none starts afterwards.
static SHUTTING_DOWN: std::sync::RwLock<bool> = std::sync::RwLock::new(false);

/// Stops runtime threads from entering Python and closes the sandbox
/// pools still open; registered with `atexit`.
///
/// A runtime thread that took the GIL during the interpreter's
/// finalization would crash it, so results that arrive after this are
/// dropped. pyo3-async-runtimes, which this module first used for
/// `AsyncSandbox`, does that, and crashed CPython 3.9 and 3.13 at exit.
/// Python need not collect every object at exit, so a pool's waiting
/// sandboxes are killed here rather than left to its drop.
#[pyfunction]
pub fn shut_down(py: Python<'_>) {
    py.detach(|| {
        if let Ok(mut shutting_down) = SHUTTING_DOWN.write() {
            *shutting_down = true;
        }
        crate::pool::close_open_pools();
    });
}

/// The done callback of an asyncio future from [`spawn`]: aborts the task
/// when the future was cancelled.
#[pyclass(module = "soulbox._native", frozen)]
struct CancelTask(tokio::task::AbortHandle);

#[pymethods]
impl CancelTask {
    fn __call__(&self, awaitable: &Bound<'_, PyAny>) -> PyResult<()> {
        if awaitable.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

/// Converts a core error into an instance of the matching class of
/// `soulbox.exceptions`, with `errno` and, for a failed command, its output.
pub fn core_error(py: Python<'_>, error: soulbox_core::Error) -> PyErr {
    match build_exception(py, &error) {
        Ok(exception) => exception,
        // The exceptions module failed to import: still report the error.
        Err(import_error) => PyRuntimeError::new_err(format!(
            "{} (and soulbox.exceptions could not be loaded: {import_error})",
            message_with_sources(&error)
        )),
    }
}

fn build_exception(py: Python<'_>, error: &soulbox_core::Error) -> PyResult<PyErr> {
    use soulbox_core::Error;

    let details = PyDict::new(py);
    details.set_item("errno", error.errno())?;
    let class = match error {
        Error::InvalidArgument(_) => "InvalidArgumentException",
        Error::SandboxNotRunning { .. } | Error::SandboxNotFound { .. } => {
            "SandboxNotFoundException"
        }
        Error::FileNotFound { .. } => "FileNotFoundException",
        Error::NotEnoughSpace { .. } => "NotEnoughSpaceException",
        Error::NotFound(_) => "NotFoundException",
        // A built template's ready command did not succeed in time.
        Error::CodeTimedOut { .. } | Error::NotReady { .. } => "TimeoutException",
        Error::CommandTimedOut { stdout, stderr } => {
            details.set_item("stdout", PyBytes::new(py, stdout))?;
            details.set_item("stderr", PyBytes::new(py, stderr))?;
            "TimeoutException"
        }
        Error::CommandExit {
            status,
            stdout,
            stderr,
            oom_killed,
        } => {
            details.set_item("stdout", PyBytes::new(py, stdout))?;
            details.set_item("stderr", PyBytes::new(py, stderr))?;
            details.set_item("code", status.code())?;
            details.set_item("signal", status.signal())?;
            details.set_item("oom_killed", *oom_killed)?;
            "CommandExitException"
        }
        _ => "SandboxException",
    };
    let factory = py.import("soulbox.exceptions")?.getattr("_from_native")?;
    let exception = factory.call1((class, message_with_sources(error), details))?;
    Ok(PyErr::from_value(exception))
}

/// Returns the error's message followed by each of its sources, as
/// "failed to X: reason: cause".
fn message_with_sources(error: &soulbox_core::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Converts seconds from Python into a duration; `None` stays `None`.
///
/// # Errors
///
/// `InvalidArgumentException` for a negative or NaN number, or one of 2**64
/// seconds or more (infinity too), which a `Duration` cannot hold.
pub fn seconds(py: Python<'_>, name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    Duration::try_from_secs_f64(value).map(Some).map_err(|_| {
        let value_text = python_number(py, value);
        let message = if value >= 0.0 {
            format!("{name} of {value_text} seconds is too large; give fewer than 2**64 seconds")
        } else {
            format!(
                "{name} of {value_text} seconds is invalid; give a number of seconds, 0 or more"
            )
        };
        core_error(py, soulbox_core::Error::InvalidArgument(message))
    })
}

/// Formats a number that Python passed as a float the way the caller most
/// likely wrote it. A whole number of magnitude below 2**53 is shown as an
/// int, because every such int converts to a float exactly. Any other
/// number is shown as Python's `repr()` of the float, such as
/// `1.8446744073709552e+19` for 2**64, `inf` and `nan`.
///
/// NOTE: an int of 2**53 or more shows as the float it rounded to, because
/// the callers extract an `f64`. Showing it exactly needs the Python object.
fn python_number(py: Python<'_>, value: f64) -> String {
    const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2**53
    if value.fract() == 0.0 && value.abs() < EXACT_INT_LIMIT {
        return format!("{}", value as i64);
    }
    match pyo3::types::PyFloat::new(py, value).repr() {
        Ok(repr) => repr.to_string(),
        Err(_) => format!("{value:?}"),
    }
}
