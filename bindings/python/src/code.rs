//! The code interpreter: `run_code` and the code contexts.
//!
//! An execution runs as a task of the runtime and sends what it produces
//! through a channel to a [`NativeCodeRun`]. The Python layer calls its
//! `next_event` until the final `done` event, so the callbacks of
//! `run_code` run on the calling thread (or on the event loop), as those
//! of `commands.run` do.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use soulbox_core::{
    CodeContext, CodeContextOptions, CodeEvent, Execution, ExecutionError, ExecutionResult, Sandbox,
};
use tokio::sync::{mpsc, oneshot};

use crate::bridge::{self, block, spawn, List, ToPython};
use crate::sandbox::NativeSandbox;

/// How often an interrupt is requested again while the core has not yet
/// registered the execution.
const INTERRUPT_RETRY: Duration = Duration::from_millis(5);

/// One lock per code context of a sandbox handle. Every execution, restart
/// and removal that Python starts holds its context's lock until it ends,
/// so while an execution holds the lock, the interpreter runs its code and
/// no other. An interrupt therefore signals the interpreter only while the
/// interrupted execution holds the lock.
#[derive(Default)]
pub(crate) struct ContextLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ContextLocks {
    fn get(&self, context_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(context_id.to_string()).or_default())
    }

    fn forget(&self, context_id: &str) {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(context_id);
    }
}

/// Returns the id of the default context that soulbox-core runs `language`
/// in: `default-` and the name the core gives the language. An unknown
/// language keeps its name; the core rejects it when the code runs.
fn default_context_id(language: Option<&str>) -> String {
    match soulbox_core::code_language(language) {
        Ok(name) => format!("default-{name}"),
        Err(_) => format!("default-{}", language.unwrap_or_default()),
    }
}

/// An execution to start, as the Python layer passes it.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct CodeSpec {
    code: String,
    language: Option<String>,
    context: Option<String>,
    envs: BTreeMap<String, String>,
    /// Seconds; `None` for no limit.
    timeout: Option<f64>,
    /// The kinds of event sent before `done`, among "stdout", "stderr",
    /// "result" and "error". The others are not sent.
    stream: Vec<String>,
}

impl CodeSpec {
    /// Returns the id of the context the execution runs in.
    fn context_id(&self) -> String {
        match &self.context {
            Some(id) => id.clone(),
            None => default_context_id(self.language.as_deref()),
        }
    }
}

/// A message from an execution to its [`NativeCodeRun`]. A run ends with
/// `Done` or with the error of the call.
enum Item {
    /// A piece of stdout and when it arrived, in microseconds since the
    /// Unix epoch.
    Stdout(String, u64),
    /// A piece of stderr and when it arrived.
    Stderr(String, u64),
    /// A displayed value.
    Result(ExecutionResult),
    /// The exception that ended the code.
    Error(ExecutionError),
    /// The whole execution.
    Done(Execution),
}

/// Returns the time in microseconds since the Unix epoch, the unit of the
/// output timestamps of E2B's JavaScript SDK.
fn now_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

/// Converts a streamed event, or returns `None` for a kind the caller did
/// not ask for.
fn streamed(event: CodeEvent, stream: &[String]) -> Option<Item> {
    let (kind, item) = match event {
        CodeEvent::Stdout(text) => ("stdout", Item::Stdout(text, now_micros())),
        CodeEvent::Stderr(text) => ("stderr", Item::Stderr(text, now_micros())),
        CodeEvent::Result(result) => ("result", Item::Result(result)),
        CodeEvent::Error(error) => ("error", Item::Error(error)),
        // A kind added to soulbox-core later, which the Python layer does
        // not know.
        _ => return None,
    };
    stream.iter().any(|wanted| wanted == kind).then_some(item)
}

type ResultTuple = (BTreeMap<String, String>, bool);
type ErrorTuple = (String, String, String);

fn result_tuple(result: ExecutionResult) -> ResultTuple {
    (result.formats, result.is_main_result)
}

fn error_tuple(error: ExecutionError) -> ErrorTuple {
    (error.name, error.value, error.traceback)
}

/// An event as ("stdout" or "stderr", (text, timestamp)), ("result",
/// (formats, is main result)), ("error", (name, value, traceback)) or
/// ("done", (results, stdout, stderr, error, execution count)).
impl ToPython for Item {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let event = match self {
            Item::Stdout(text, at) => ("stdout", (text, at).into_pyobject(py)?.into_any()),
            Item::Stderr(text, at) => ("stderr", (text, at).into_pyobject(py)?.into_any()),
            Item::Result(result) => ("result", result_tuple(result).into_pyobject(py)?.into_any()),
            Item::Error(error) => ("error", error_tuple(error).into_pyobject(py)?.into_any()),
            Item::Done(execution) => {
                let done = (
                    execution
                        .results
                        .into_iter()
                        .map(result_tuple)
                        .collect::<Vec<_>>(),
                    execution.logs.stdout,
                    execution.logs.stderr,
                    execution.error.map(error_tuple),
                    execution.execution_count,
                );
                ("done", done.into_pyobject(py)?.into_any())
            }
        };
        Ok(event.into_pyobject(py)?.into_any().unbind())
    }
}

/// A code context as (id, language, cwd).
struct Context(CodeContext);

impl ToPython for Context {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let CodeContext { id, language, cwd } = self.0;
        Ok((id, language, cwd).into_pyobject(py)?.into_any().unbind())
    }
}

type Sender = mpsc::Sender<soulbox_core::Result<Item>>;

/// Events queued between an execution and Python before the execution
/// waits for Python to take one.
const EVENT_QUEUE_CAPACITY: usize = 32;

/// Runs one execution and sends its events, then its end, to `sender`.
///
/// When `interrupted` resolves (its sender was used or dropped) before
/// the execution holds its context's lock, the code never runs. After
/// that, the code is interrupted, as E2B's server interrupts the kernel
/// when its client goes away, and the execution runs on to its end.
async fn execute(
    sandbox: Sandbox,
    spec: CodeSpec,
    timeout: Option<Duration>,
    lock: Arc<tokio::sync::Mutex<()>>,
    mut interrupted: oneshot::Receiver<()>,
    sender: Sender,
) {
    let context_lock = tokio::select! {
        guard = lock.lock_owned() => guard,
        _ = &mut interrupted => return,
    };
    let context_id = spec.context_id();
    let mut run = sandbox.run_code(spec.code).timeout(timeout);
    for (key, value) in spec.envs {
        run = run.env(key, value);
    }
    if let Some(language) = spec.language {
        run = run.language(language);
    }
    if let Some(id) = spec.context {
        // `RunCode::context` takes a whole context. An id that this handle
        // does not know still goes to run_code, which reports it as not
        // found.
        let context = sandbox
            .list_code_contexts()
            .into_iter()
            .find(|known| known.id == id)
            .unwrap_or(CodeContext {
                id,
                language: String::new(),
                cwd: String::new(),
            });
        run = run.context(&context);
    }
    if !spec.stream.is_empty() {
        let events = sender.clone();
        let stream = spec.stream;
        run = run.on_event(move |event| {
            if let Some(item) = streamed(event, &stream) {
                if let Err(mpsc::error::TrySendError::Full(item)) = events.try_send(Ok(item)) {
                    // The core calls this inside the execution's future,
                    // which cannot await. block_in_place lets this worker
                    // block while its other tasks move to another one, so a
                    // slow callback slows the code down instead of queueing
                    // its output. A closed queue means that the caller
                    // stopped listening, and the event is dropped.
                    tokio::task::block_in_place(|| {
                        let _ = events.blocking_send(item);
                    });
                }
            }
        });
    }
    let mut execution = std::pin::pin!(run.into_future());
    let result = tokio::select! {
        result = &mut execution => result,
        _ = &mut interrupted => {
            // The core interrupts an execution once it has registered it,
            // and its code once that has started. Until the registration
            // (the context's python3 may still be starting) the request
            // is repeated.
            let mut sent = false;
            loop {
                if !sent {
                    sent = matches!(sandbox.interrupt_code_context(&context_id), Ok(true));
                }
                tokio::select! {
                    result = &mut execution => break result,
                    () = tokio::time::sleep(INTERRUPT_RETRY), if !sent => {}
                }
            }
        }
    };
    drop(context_lock);
    let _ = sender.send(result.map(Item::Done)).await;
}

/// An execution in progress: `next_event` returns what it produces, and
/// `interrupt` stops it.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativeCodeRun {
    events: Arc<tokio::sync::Mutex<Events>>,
    /// Sending on it or dropping it interrupts the execution.
    interrupt: Mutex<Option<oneshot::Sender<()>>>,
}

struct Events {
    receiver: mpsc::Receiver<soulbox_core::Result<Item>>,
    finished: bool,
}

impl NativeCodeRun {
    fn next_event_future(
        &self,
    ) -> impl Future<Output = soulbox_core::Result<Option<Item>>> + Send + 'static {
        let events = Arc::clone(&self.events);
        async move {
            let mut events = events.lock_owned().await;
            if events.finished {
                return Ok(None);
            }
            let item = events.receiver.recv().await;
            events.finished = match &item {
                Some(Ok(item)) => matches!(item, Item::Done(_)),
                // The error of the call, or `None` when the execution was
                // interrupted before its turn.
                Some(Err(_)) | None => true,
            };
            item.transpose()
        }
    }
}

#[pymethods]
impl NativeCodeRun {
    /// Waits for the next event; `None` after `done`, after the error of
    /// the call, or when the execution was interrupted before it started.
    fn next_event(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.next_event_future())
    }

    /// Awaitable flavour of `next_event`.
    fn next_event_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.next_event_future())
    }

    /// Interrupts the execution without waiting: code that has not started
    /// never runs, and running code gets SIGINT. Does nothing after the
    /// first call.
    fn interrupt(&self) {
        let mut interrupt = self.interrupt.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = interrupt.take() {
            let _ = sender.send(());
        }
        // Nothing reads the events any more. Closing the queue fails the
        // execution's waiting sends, so it can run on to its end.
        let events = Arc::clone(&self.events);
        if let Ok(runtime) = bridge::runtime() {
            runtime.spawn(async move {
                let mut events = events.lock().await;
                events.receiver.close();
                while events.receiver.try_recv().is_ok() {}
                events.finished = true;
            });
        }
    }
}

impl NativeSandbox {
    fn create_code_context_future(
        &self,
        language: Option<String>,
        cwd: Option<String>,
    ) -> impl Future<Output = soulbox_core::Result<Context>> + Send + 'static {
        let sandbox = self.sandbox.clone();
        async move {
            let options = CodeContextOptions { language, cwd };
            sandbox.create_code_context(options).await.map(Context)
        }
    }

    fn remove_code_context_future(
        &self,
        id: String,
    ) -> impl Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let sandbox = self.sandbox.clone();
        let locks = Arc::clone(&self.code_locks);
        let lock = locks.get(&id);
        async move {
            let _context_lock = lock.lock().await;
            let removed = sandbox.remove_code_context(&id).await;
            locks.forget(&id);
            removed
        }
    }

    fn restart_code_context_future(
        &self,
        id: String,
    ) -> impl Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let sandbox = self.sandbox.clone();
        let lock = self.code_locks.get(&id);
        async move {
            let _context_lock = lock.lock().await;
            sandbox.restart_code_context(&id).await
        }
    }
}

#[pymethods]
impl NativeSandbox {
    /// Starts an execution and returns its handle at once; the execution
    /// waits while another one runs in the same context.
    fn start_code(&self, py: Python<'_>, spec: CodeSpec) -> PyResult<NativeCodeRun> {
        let timeout = bridge::seconds(py, "timeout", spec.timeout)?;
        let lock = self.code_locks.get(&spec.context_id());
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let (interrupt, interrupted) = oneshot::channel();
        let sandbox = self.sandbox.clone();
        bridge::runtime()?.spawn(execute(sandbox, spec, timeout, lock, interrupted, sender));
        Ok(NativeCodeRun {
            events: Arc::new(tokio::sync::Mutex::new(Events {
                receiver,
                finished: false,
            })),
            interrupt: Mutex::new(Some(interrupt)),
        })
    }

    /// Starts a new code context and returns it as (id, language, cwd).
    #[pyo3(signature = (language=None, cwd=None))]
    fn create_code_context(
        &self,
        py: Python<'_>,
        language: Option<String>,
        cwd: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        block(py, self.create_code_context_future(language, cwd))
    }

    /// Awaitable flavour of `create_code_context`.
    #[pyo3(signature = (language=None, cwd=None))]
    fn create_code_context_async<'py>(
        &self,
        py: Python<'py>,
        language: Option<String>,
        cwd: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.create_code_context_future(language, cwd))
    }

    /// Lists this handle's code contexts as (id, language, cwd).
    fn list_code_contexts(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let contexts = self.sandbox.list_code_contexts();
        List(contexts.into_iter().map(Context).collect()).to_python(py)
    }

    /// Ends a code context and its interpreter, after the executions
    /// started before in it.
    fn remove_code_context(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        block(py, self.remove_code_context_future(id))
    }

    /// Awaitable flavour of `remove_code_context`.
    fn remove_code_context_async<'py>(
        &self,
        py: Python<'py>,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.remove_code_context_future(id))
    }

    /// Replaces a context's interpreter with a new one, without the old
    /// variables, after the executions started before in it.
    fn restart_code_context(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        block(py, self.restart_code_context_future(id))
    }

    /// Awaitable flavour of `restart_code_context`.
    fn restart_code_context_async<'py>(
        &self,
        py: Python<'py>,
        id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.restart_code_context_future(id))
    }
}
