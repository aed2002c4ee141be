//! The code interpreter of `NativeSandbox`: `runCode` and code contexts.
//!
//! An execution runs in a tokio task of its own and reports to
//! JavaScript through `NativeCodeRun.nextEvent()`, one Promise per event.
//! `index.js` runs the callbacks on the JavaScript thread, in order, and
//! awaits each before it requests the next event. The core
//! calls its event callback synchronously, so the events pass through a
//! bounded queue. When the queue is full, the task waits for room, which
//! stops it from reading the interpreter's replies and slows the code down
//! instead of piling events up in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use napi_derive::napi;
use soulbox_core::{
    CodeContext, CodeContextOptions, CodeEvent, Error, Execution, ExecutionError, ExecutionResult,
    Sandbox, DEFAULT_CODE_TIMEOUT,
};
use tokio::sync::mpsc;

use crate::convert::timeout_from_ms;
use crate::detach::Detachable;
use crate::error::{to_napi, IntoNapi, Result};
use crate::sandbox::NativeSandbox;

/// Events queued between an execution and JavaScript before the execution
/// waits for JavaScript to take one.
const EVENT_QUEUE_CAPACITY: usize = 32;

/// Options of `NativeSandbox.runCode`, checked by `index.js` first.
#[napi(object)]
#[derive(Debug)]
pub struct RunCodeOptions {
    pub code: String,
    /// The language whose default context runs the code; `python` when
    /// absent. Not together with `context_id`.
    pub language: Option<String>,
    /// The id of a context from `createCodeContext`.
    pub context_id: Option<String>,
    /// Environment variables for this execution only.
    pub envs: Option<HashMap<String, String>>,
    /// Milliseconds before the code is interrupted; 0 for no limit, the
    /// core's 300 s when absent.
    pub timeout_ms: Option<f64>,
    /// Whether to report output, results and the exception as they
    /// happen, before the `done` event; without it `done` is the only
    /// event.
    pub stream: Option<bool>,
}

/// A code context, as E2B's `Context`.
#[napi(object)]
#[derive(Debug)]
pub struct CodeContextObject {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

impl From<CodeContext> for CodeContextObject {
    fn from(context: CodeContext) -> Self {
        Self {
            id: context.id,
            language: context.language,
            cwd: context.cwd,
        }
    }
}

/// One displayed value: its representations by E2B's format names.
#[napi(object)]
#[derive(Debug)]
pub struct ExecutionResultObject {
    pub formats: HashMap<String, String>,
    pub is_main_result: bool,
}

impl From<ExecutionResult> for ExecutionResultObject {
    fn from(result: ExecutionResult) -> Self {
        Self {
            formats: result.formats.into_iter().collect(),
            is_main_result: result.is_main_result,
        }
    }
}

/// The exception that ended an execution.
#[napi(object)]
#[derive(Debug)]
pub struct ExecutionErrorObject {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

impl From<ExecutionError> for ExecutionErrorObject {
    fn from(error: ExecutionError) -> Self {
        Self {
            name: error.name,
            value: error.value,
            traceback: error.traceback,
        }
    }
}

/// The outcome of an execution.
#[napi(object)]
#[derive(Debug)]
pub struct ExecutionObject {
    pub results: Vec<ExecutionResultObject>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub error: Option<ExecutionErrorObject>,
    pub execution_count: Option<u32>,
}

impl From<Execution> for ExecutionObject {
    fn from(execution: Execution) -> Self {
        Self {
            results: execution.results.into_iter().map(Into::into).collect(),
            stdout: execution.logs.stdout,
            stderr: execution.logs.stderr,
            error: execution.error.map(Into::into),
            execution_count: execution.execution_count,
        }
    }
}

/// Something an execution produced, or its end.
#[napi(object)]
#[derive(Debug)]
pub struct CodeEventObject {
    /// `stdout`, `stderr`, `result`, `error` or `done`.
    pub kind: String,
    /// The text of a `stdout` or `stderr` event.
    pub text: Option<String>,
    /// When SoulBox received the event, in microseconds since the Unix
    /// epoch, as E2B's `OutputMessage.timestamp`.
    pub timestamp_us: f64,
    /// The value of a `result` event.
    pub result: Option<ExecutionResultObject>,
    /// The exception of an `error` event.
    pub error: Option<ExecutionErrorObject>,
    /// The whole execution, for `done`.
    pub execution: Option<ExecutionObject>,
}

impl CodeEventObject {
    fn new(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            text: None,
            timestamp_us: now_us(),
            result: None,
            error: None,
            execution: None,
        }
    }
}

/// Microseconds since the Unix epoch.
fn now_us() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros() as f64)
        .unwrap_or(0.0)
}

/// A message from the execution's task to its `NativeCodeRun`.
#[derive(Debug)]
enum Message {
    Event(CodeEventObject),
    Done(soulbox_core::Result<Execution>),
}

/// Converts a core event as it arrives, so that it carries the time of
/// its arrival.
fn event_object(event: CodeEvent) -> Option<CodeEventObject> {
    let object = match event {
        CodeEvent::Stdout(text) => CodeEventObject {
            text: Some(text),
            ..CodeEventObject::new("stdout")
        },
        CodeEvent::Stderr(text) => CodeEventObject {
            text: Some(text),
            ..CodeEventObject::new("stderr")
        },
        CodeEvent::Result(result) => CodeEventObject {
            result: Some(result.into()),
            ..CodeEventObject::new("result")
        },
        CodeEvent::Error(error) => CodeEventObject {
            error: Some(error.into()),
            ..CodeEventObject::new("error")
        },
        // A kind added to the core later, which JavaScript has no callback
        // for yet.
        _ => return None,
    };
    Some(object)
}

/// Queues `event` for JavaScript, waiting while the queue is full. Drops
/// it once JavaScript has closed the run.
fn forward(sender: &mpsc::Sender<Message>, event: CodeEvent) {
    let Some(event) = event_object(event) else {
        return;
    };
    match sender.try_send(Message::Event(event)) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(message)) => {
            // The core calls this inside the execution's future, which
            // cannot await here. block_in_place hands this worker's other
            // tasks to another thread while this one blocks. A closed queue
            // means that JavaScript has closed the run, and the event is
            // dropped.
            tokio::task::block_in_place(|| {
                let _ = sender.blocking_send(message);
            });
        }
    }
}

/// Returns the context `id` of this handle.
fn find_context(sandbox: &Sandbox, id: &str) -> Result<CodeContext> {
    sandbox
        .list_code_contexts()
        .into_iter()
        .find(|context| context.id == id)
        .ok_or_else(|| {
            to_napi(Error::NotFound(format!(
                "code context {id:?}; listCodeContexts() lists the contexts of this Sandbox \
                 object"
            )))
        })
}

#[napi]
impl NativeSandbox {
    /// Starts running code in a task of its own and returns the run, whose
    /// `nextEvent()` reports what it produces and its end.
    #[napi]
    pub async fn run_code(&self, options: RunCodeOptions) -> Result<NativeCodeRun> {
        let timeout = match options.timeout_ms {
            None => Some(DEFAULT_CODE_TIMEOUT),
            Some(_) => timeout_from_ms("timeoutMs", options.timeout_ms)?,
        };
        let context = match options.context_id.as_deref() {
            Some(id) => Some(find_context(&self.sandbox, id)?),
            None => None,
        };
        let stream = options.stream.unwrap_or(false);
        let context_id = match (&context, options.language.as_deref()) {
            (Some(context), _) => context.id.clone(),
            (None, language) => match soulbox_core::code_language(language) {
                Ok(name) => format!("default-{name}"),
                // The core rejects the language when the code runs.
                Err(_) => format!("default-{}", language.unwrap_or_default()),
            },
        };
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let sandbox = self.sandbox.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let finished_by_task = Arc::clone(&finished);
        tokio::spawn(async move {
            let mut run = sandbox.run_code(options.code).timeout(timeout);
            if let Some(language) = options.language {
                run = run.language(language);
            }
            if let Some(context) = &context {
                run = run.context(context);
            }
            for (key, value) in options.envs.unwrap_or_default() {
                run = run.env(key, value);
            }
            if stream {
                let events = sender.clone();
                run = run.on_event(move |event| forward(&events, event));
            }
            let outcome = run.await;
            finished_by_task.store(true, Ordering::Release);
            // Fails only when JavaScript closed the run, which then wants
            // nothing more.
            let _ = sender.send(Message::Done(outcome)).await;
        });
        Ok(NativeCodeRun {
            messages: Detachable::new(receiver),
            sandbox: self.sandbox.clone(),
            context_id,
            finished,
        })
    }

    /// Starts a new code context with variables of its own.
    #[napi]
    pub async fn create_code_context(
        &self,
        language: Option<String>,
        cwd: Option<String>,
    ) -> Result<CodeContextObject> {
        let options = CodeContextOptions { language, cwd };
        let context = self
            .sandbox
            .create_code_context(options)
            .await
            .into_napi()?;
        Ok(context.into())
    }

    /// Lists this handle's code contexts, default ones included once used.
    #[napi]
    pub fn list_code_contexts(&self) -> Vec<CodeContextObject> {
        let contexts = self.sandbox.list_code_contexts();
        contexts.into_iter().map(CodeContextObject::from).collect()
    }

    /// Ends a code context and its interpreter.
    #[napi]
    pub async fn remove_code_context(&self, id: String) -> Result<()> {
        self.sandbox.remove_code_context(&id).await.into_napi()
    }

    /// Restarts a code context's interpreter, without its variables.
    #[napi]
    pub async fn restart_code_context(&self, id: String) -> Result<()> {
        self.sandbox.restart_code_context(&id).await.into_napi()
    }
}

/// A running execution; see `NativeSandbox.runCode`. `close()` stops the
/// reports and interrupts code that still runs.
#[napi]
#[derive(Debug)]
pub struct NativeCodeRun {
    messages: Detachable<mpsc::Receiver<Message>>,
    sandbox: Sandbox,
    /// The context the execution runs in, for the interrupt.
    context_id: String,
    /// Set once the execution has ended.
    finished: Arc<AtomicBool>,
}

/// How often `close()` requests the interrupt again while the core has not
/// yet registered the execution (its context's python3 may be starting),
/// and for how long.
const INTERRUPT_RETRY: Duration = Duration::from_millis(5);
const INTERRUPT_RETRY_LIMIT: Duration = Duration::from_secs(60);

#[napi]
impl NativeCodeRun {
    /// Waits for the next event. The last is `done`, with the execution;
    /// when the execution fails instead (its timeout, a dead interpreter,
    /// an unknown language), this rejects. Returns `null` after either and
    /// after `close()`.
    #[napi]
    pub async fn next_event(&self) -> Result<Option<CodeEventObject>> {
        let message = self
            .messages
            .run(async |messages| messages.recv().await)
            .await
            .flatten();
        match message {
            None => Ok(None),
            Some(Message::Event(event)) => Ok(Some(event)),
            Some(Message::Done(outcome)) => {
                let execution = outcome.into_napi()?;
                Ok(Some(CodeEventObject {
                    execution: Some(execution.into()),
                    ..CodeEventObject::new("done")
                }))
            }
        }
    }

    /// Stops the reports; a pending `nextEvent()` returns `null`. Code
    /// that still runs is interrupted as with Ctrl-C, as E2B's server
    /// interrupts it when its client goes away, and the context keeps its
    /// variables.
    #[napi]
    pub fn close(&self) {
        self.messages.detach();
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        let sandbox = self.sandbox.clone();
        let context_id = self.context_id.clone();
        let finished = Arc::clone(&self.finished);
        napi::bindgen_prelude::spawn(async move {
            let started = Instant::now();
            while !finished.load(Ordering::Acquire) && started.elapsed() < INTERRUPT_RETRY_LIMIT {
                if matches!(sandbox.interrupt_code_context(&context_id), Ok(true)) {
                    return;
                }
                tokio::time::sleep(INTERRUPT_RETRY).await;
            }
        });
    }
}
