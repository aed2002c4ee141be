//! The stateful code interpreter: E2B's `run_code` and code contexts.
//!
//! A code context is an interpreter process in the sandbox that keeps one
//! namespace across executions, as a Jupyter kernel does: `python3 -u -c`
//! with the program in `kernel.py`, or `node -e` with the one in
//! `kernel.js`. It runs as an ordinary command, tagged
//! `soulbox-code-ID`, so it counts against the sandbox's limits and shows in
//! [`Commands::list`](crate::Commands::list). The host writes one JSON
//! request per line to its stdin and reads one JSON reply per line from its
//! stdout. The program turns its descriptors 1 and 2 into pipes of its own,
//! so the output of child processes is captured along with `print`.
//!
//! Contexts belong to the [`Sandbox`] handle that made them and its clones:
//! a handle from [`Sandbox::connect`] starts contexts of its own.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::process::{CommandController, CommandEvent, CommandHandle};
use crate::sandbox::Sandbox;

/// The program a Python context runs.
const PYTHON_KERNEL: &str = include_str!("kernel.py");

/// The program a JavaScript context runs.
const JS_KERNEL: &str = include_str!("kernel.js");

/// The language of a context when none is given.
const PYTHON: &str = "python";

/// JavaScript, run by Node.js.
const JS: &str = "js";

/// Returns the program that runs contexts of `language` (a name that
/// [`code_language`] returned) and its arguments.
fn interpreter(language: &str) -> (&'static str, &'static [&'static str]) {
    const PYTHON_ARGS: [&str; 3] = ["-u", "-c", PYTHON_KERNEL];
    const JS_ARGS: [&str; 2] = ["-e", JS_KERNEL];
    if language == JS {
        ("node", &JS_ARGS)
    } else {
        ("python3", &PYTHON_ARGS)
    }
}

/// How long an execution may run when the caller sets no timeout, as in
/// E2B's code interpreter.
pub const DEFAULT_CODE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a new context may take to start its interpreter and report
/// ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an execution that ran out of time gets to stop after SIGINT
/// before its context is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// Bytes of results an [`Execution`] keeps; later results are only
/// streamed to [`RunCode::on_event`].
pub const MAX_KEPT_RESULT_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of each of stdout and stderr an [`Execution`] keeps. The streaming
/// callback of [`RunCode::on_event`] still receives every byte.
pub const MAX_KEPT_LOG_BYTES: usize = 16 * 1024 * 1024;

/// A code context: an interpreter whose variables, imports and functions
/// persist from one execution to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeContext {
    /// The context's id.
    pub id: String,
    /// Its language: `python` or `js`.
    pub language: String,
    /// The working directory it started in.
    pub cwd: String,
}

/// The outcome of one [`Sandbox::run_code`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Execution {
    /// The values the code displayed, in order: each `display()` call and,
    /// last, the value of the final expression (`is_main_result`).
    pub results: Vec<ExecutionResult>,
    /// Output of the code and of its child processes.
    pub logs: Logs,
    /// The exception that ended the code, if one did.
    pub error: Option<ExecutionError>,
    /// How many executions the context has run, this one included.
    pub execution_count: Option<u32>,
}

impl Execution {
    /// Returns the text form of the final expression's value, if there was
    /// one.
    pub fn text(&self) -> Option<&str> {
        self.results
            .iter()
            .find(|result| result.is_main_result)
            .and_then(ExecutionResult::text)
    }
}

/// Output of an execution. Each entry is one piece as it arrived, not one
/// line; joined, they are the whole output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    /// Pieces written to stdout.
    pub stdout: Vec<String>,
    /// Pieces written to stderr.
    pub stderr: Vec<String>,
}

/// One displayed value, in every representation it offered, under E2B's
/// names: `text`, `html`, `markdown`, `svg`, `png`, `jpeg`, `pdf`, `latex`,
/// `json` and `javascript`. `png`, `jpeg` and `pdf` are base64; `json` is
/// JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionResult {
    /// The representations by name.
    pub formats: BTreeMap<String, String>,
    /// Whether this is the value of the code's final expression.
    pub is_main_result: bool,
}

impl ExecutionResult {
    /// Returns the representation called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.formats.get(name).map(String::as_str)
    }

    /// Returns the plain-text representation (`repr()` in Python,
    /// `util.inspect()` in JavaScript).
    pub fn text(&self) -> Option<&str> {
        self.get("text")
    }
}

/// An exception that ended an execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionError {
    /// The exception's type, such as `ZeroDivisionError`.
    pub name: String,
    /// Its message.
    pub value: String,
    /// The formatted traceback, starting at the executed code.
    pub traceback: String,
}

/// Something an execution produced, as it happened; see
/// [`RunCode::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeEvent {
    /// A piece of stdout.
    Stdout(String),
    /// A piece of stderr.
    Stderr(String),
    /// A displayed value.
    Result(ExecutionResult),
    /// The exception that ended the code.
    Error(ExecutionError),
}

/// A running interpreter and the handle of its command.
struct Kernel {
    context: CodeContext,
    /// `None` until the first execution starts the process, and again after
    /// it died or was killed, so the next execution starts a fresh one.
    process: tokio::sync::Mutex<Option<KernelProcess>>,
    /// A controller of the process last started. It kills the process while
    /// an execution has `process` locked.
    controller: Mutex<Option<CommandController>>,
    /// The id of the execution in progress, 0 between executions.
    running: AtomicU64,
    /// The id of the last execution whose interrupt was requested.
    interrupts: watch::Sender<u64>,
    /// The id of the next execution, unique across restarts.
    next_id: AtomicU64,
}

impl Kernel {
    fn new(context: CodeContext, process: Option<KernelProcess>) -> Self {
        let controller = process.as_ref().map(|p| p.handle.controller());
        Self {
            context,
            process: tokio::sync::Mutex::new(process),
            controller: Mutex::new(controller),
            running: AtomicU64::new(0),
            interrupts: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Starts the interpreter of this context in `sandbox`.
    async fn start(&self, sandbox: &Sandbox) -> Result<KernelProcess> {
        let process = start(sandbox, &self.context).await?;
        *self
            .controller
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(process.handle.controller());
        Ok(process)
    }

    /// Kills the interpreter without waiting for the execution in progress,
    /// which then fails with [`Error::Protocol`].
    async fn kill(&self) {
        let controller = self
            .controller
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(controller) = controller {
            let _ = controller.kill().await;
        }
    }
}

/// Resets [`Kernel::running`] when an execution's call ends or is dropped.
struct RunningGuard<'k>(&'k Kernel);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.store(0, Ordering::Release);
    }
}

/// The state of the interrupts requested for one execution. The interrupt
/// goes to the interpreter on its stdin with the execution's id, and the
/// interpreter signals its own main thread only while that execution runs,
/// so an interrupt never reaches another execution's code.
struct InterruptState {
    requests: watch::Receiver<u64>,
    open: bool,
    requested: bool,
    sent: bool,
}

struct KernelProcess {
    handle: CommandHandle,
    /// Whether the interpreter's stdin contains the start of a request line
    /// without its end, because a call was dropped, or timed out, while
    /// writing it.
    request_cut: bool,
    /// Stdout bytes after the last complete reply line.
    pending: Vec<u8>,
    /// How many bytes of `pending` are known to hold no line end.
    scanned: usize,
    /// The end of what the process wrote to stderr, for errors.
    stderr_tail: Vec<u8>,
    /// The interpreter's program, `python3` or `node`, for errors.
    program: &'static str,
}

/// The contexts of one sandbox handle and its clones.
#[derive(Default)]
pub(crate) struct Contexts {
    kernels: Mutex<Vec<Arc<Kernel>>>,
}

impl std::fmt::Debug for Contexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.lock().len();
        f.debug_struct("Contexts").field("count", &count).finish()
    }
}

impl Contexts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Kernel>>> {
        self.kernels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn find(&self, id: &str) -> Option<Arc<Kernel>> {
        self.lock()
            .iter()
            .find(|kernel| kernel.context.id == id)
            .cloned()
    }
}

/// A reply line from the interpreter.
#[derive(Deserialize)]
struct Reply {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default, deserialize_with = "known_formats")]
    formats: BTreeMap<String, String>,
    #[serde(default)]
    main: bool,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    traceback: String,
    #[serde(default)]
    count: Option<u32>,
}

/// The representation names of [`ExecutionResult::formats`], E2B's. The
/// interpreter sends no others.
const FORMAT_NAMES: [&str; 10] = [
    "text",
    "html",
    "markdown",
    "svg",
    "png",
    "jpeg",
    "pdf",
    "latex",
    "json",
    "javascript",
];

/// Reads a reply's format map, keeping the names in [`FORMAT_NAMES`]. Code
/// in the sandbox can write replies of its own, and a map of many unknown
/// names with empty values would otherwise take memory far beyond the
/// bytes that [`MAX_KEPT_RESULT_BYTES`] counts. Other names are skipped
/// without being copied.
fn known_formats<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    struct FormatsVisitor;

    impl<'de> Visitor<'de> for FormatsVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of format names to text")
        }

        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut formats = BTreeMap::new();
            while let Some(FormatName(name)) = map.next_key()? {
                match name {
                    Some(name) => {
                        formats.insert(name.to_string(), map.next_value()?);
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(formats)
        }
    }

    deserializer.deserialize_map(FormatsVisitor)
}

/// A format name in a reply: one of [`FORMAT_NAMES`], or `None` for any
/// other, which is matched without being copied.
struct FormatName(Option<&'static str>);

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct NameVisitor;

        impl Visitor<'_> for NameVisitor {
            type Value = FormatName;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a format name")
            }

            fn visit_str<E: serde::de::Error>(
                self,
                name: &str,
            ) -> std::result::Result<FormatName, E> {
                let known = FORMAT_NAMES.iter().copied().find(|known| *known == name);
                Ok(FormatName(known))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

/// Settings of a new code context; see [`Sandbox::create_code_context`].
#[derive(Debug, Clone, Default)]
pub struct CodeContextOptions {
    /// `python` (the default) or `js`; see [`code_language`] for the other
    /// names taken.
    pub language: Option<String>,
    /// The working directory; by default the template's, where commands
    /// start (/home/user on the `host` template).
    pub cwd: Option<String>,
}

/// An execution being set up; run it with `.await`. Made by
/// [`Sandbox::run_code`].
pub struct RunCode<'a> {
    sandbox: &'a Sandbox,
    code: String,
    language: Option<String>,
    context: Option<String>,
    envs: BTreeMap<String, String>,
    timeout: Option<Duration>,
    on_event: Option<Box<dyn FnMut(CodeEvent) + Send + 'a>>,
}

impl std::fmt::Debug for RunCode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCode")
            .field("language", &self.language)
            .field("context", &self.context)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<'a> RunCode<'a> {
    /// Runs in the default context of `language` (`python` when not set;
    /// see [`code_language`]). Not allowed
    /// together with [`RunCode::context`].
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Runs in `context` instead of the language's default context.
    pub fn context(mut self, context: &CodeContext) -> Self {
        self.context = Some(context.id.clone());
        self
    }

    /// Sets an environment variable for this execution only.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Sets how long the code may run (default [`DEFAULT_CODE_TIMEOUT`]);
    /// `None` for no limit. Code still running then is interrupted as with
    /// Ctrl-C, and the call returns [`Error::CodeTimedOut`].
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls `on_event` with each piece of output and each result as it
    /// arrives, before the call returns the whole [`Execution`].
    pub fn on_event(mut self, on_event: impl FnMut(CodeEvent) + Send + 'a) -> Self {
        self.on_event = Some(Box::new(on_event));
        self
    }

    /// Runs the code in its context, starting the context's interpreter
    /// first when it has none, and restarts the interpreter when it died or
    /// did not stop after the timeout.
    async fn execute(mut self) -> Result<Execution> {
        self.sandbox.inner.resume_if_auto().await?;
        let kernel = find_kernel(
            self.sandbox,
            self.context.as_deref(),
            self.language.as_deref(),
        )?;
        let mut process = kernel.process.lock().await;
        if process
            .as_ref()
            .is_some_and(|p| p.handle.controller().has_exited())
        {
            *process = None;
        }
        if process.is_none() {
            *process = Some(kernel.start(self.sandbox).await?);
        }
        let running = process.as_mut().expect("started above");

        let deadline = self.timeout.map(|timeout| Instant::now() + timeout);
        let id = kernel.next_id.fetch_add(1, Ordering::Relaxed);
        let mut interrupts = InterruptState {
            requests: kernel.interrupts.subscribe(),
            open: true,
            requested: false,
            sent: false,
        };
        kernel.running.store(id, Ordering::Release);
        // Clears `running` however this call ends, a drop included.
        let _running = RunningGuard(&kernel);
        let sent = running
            .execute(
                id,
                &self.code,
                &self.envs,
                deadline,
                &mut interrupts,
                &mut self.on_event,
            )
            .await;

        let outcome = match sent {
            Ok(Some(execution)) => Outcome::Done(execution),
            Err(e) => Outcome::Failed(e),
            // The interpreter did not take the whole request in time, so
            // it is not reading: restart it.
            Ok(None) if running.request_cut => Outcome::TimedOut { stopped: false },
            Ok(None) => {
                // Out of time: interrupt, then wait a moment for the reply
                // that ends the execution.
                interrupts.requested = true;
                let grace = Instant::now() + INTERRUPT_GRACE;
                running
                    .interrupt_if_due(id, &mut interrupts, Some(grace))
                    .await;
                let rest = running
                    .execute_rest(id, Some(grace), &mut interrupts, &mut self.on_event)
                    .await;
                Outcome::TimedOut {
                    stopped: matches!(rest, Ok(Some(_))),
                }
            }
        };

        match outcome {
            Outcome::Done(execution) => Ok(execution),
            Outcome::TimedOut { stopped } => {
                if !stopped {
                    if let Some(old) = process.take() {
                        old.stop().await;
                    }
                }
                Err(Error::CodeTimedOut {
                    timeout: self.timeout.unwrap_or_default(),
                    context_restarted: !stopped,
                })
            }
            Outcome::Failed(e) => {
                // The interpreter died or the sandbox ended: the next
                // execution starts a new one.
                if let Some(old) = process.take() {
                    old.stop().await;
                }
                Err(e)
            }
        }
    }
}

/// The end of an execution, before the context is cleaned up after it.
enum Outcome {
    /// The interpreter reported the execution's end.
    Done(Execution),
    /// The timeout passed. `stopped` is true when the code stopped after
    /// its interrupt, so that the context keeps its variables.
    TimedOut { stopped: bool },
    /// The interpreter died or the sandbox ended.
    Failed(Error),
}

impl<'a> IntoFuture for RunCode<'a> {
    type Output = Result<Execution>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Execution>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

/// Finds the context to run in: `context`, or the default one of
/// `language`, made on first use.
fn find_kernel(
    sandbox: &Sandbox,
    context: Option<&str>,
    language: Option<&str>,
) -> Result<Arc<Kernel>> {
    let contexts = &sandbox.owner.code;
    if let Some(id) = context {
        if language.is_some() {
            return Err(Error::InvalidArgument(
                "run_code takes a language or a context, not both; a context already \
                 has its language"
                    .into(),
            ));
        }
        return contexts.find(id).ok_or_else(|| unknown_context(id));
    }
    let language = code_language(language)?;
    let mut kernels = contexts.lock();
    let default_id = format!("default-{language}");
    if let Some(kernel) = kernels.iter().find(|k| k.context.id == default_id) {
        return Ok(Arc::clone(kernel));
    }
    let context = CodeContext {
        id: default_id,
        language: language.to_string(),
        cwd: default_cwd(sandbox),
    };
    let kernel = Arc::new(Kernel::new(context, None));
    kernels.push(Arc::clone(&kernel));
    Ok(kernel)
}

/// Returns the name under which the code interpreter runs `language`:
/// `python` for `None`, `python`, `python3` and `py`, and `js` for `js`,
/// `javascript`, `node` and `nodejs`. A language's default context has the
/// id `default-` and that name.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for any other language.
pub fn code_language(language: Option<&str>) -> Result<&'static str> {
    match language {
        None | Some("python" | "python3" | "py") => Ok(PYTHON),
        Some("js" | "javascript" | "node" | "nodejs") => Ok(JS),
        Some(other) => Err(Error::InvalidArgument(format!(
            "code language {other:?} is not supported; SoulBox's code interpreter runs \
             \"python\" and \"js\" (run other languages as commands)"
        ))),
    }
}

/// Returns where a context starts when no cwd is given: the working
/// directory of an image template or of a built template that sets
/// `workdir`, as for commands, or else /home/user.
fn default_cwd(sandbox: &Sandbox) -> String {
    match &sandbox.inner.image {
        Some(image) => image.working_dir.clone(),
        None => crate::template::USER_HOME.to_string(),
    }
}

fn unknown_context(id: &str) -> Error {
    Error::NotFound(format!(
        "code context {id:?}; list_code_contexts lists this handle's contexts"
    ))
}

/// Starts the interpreter of `context` and waits until it is ready.
async fn start(sandbox: &Sandbox, context: &CodeContext) -> Result<KernelProcess> {
    let tag = format!("soulbox-code-{}", context.id);
    wait_until_tag_free(sandbox, &tag).await;
    let (program, args) = interpreter(&context.language);
    let mut command = sandbox.command(program);
    command
        .args(args.iter().copied())
        .cwd(context.cwd.clone())
        .stdin(true)
        .timeout(None)
        .tag(tag);
    let handle = command.start().await.map_err(|e| match e {
        Error::Spawn { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
            Error::Unsupported {
                operation: "run_code",
                reason: format!(
                    "the code interpreter runs {} with {program}, and the template has no \
                     {program} on its PATH; use the host template (with {program} on the \
                     host) or install {program} in yours",
                    context.language
                ),
            }
        }
        other => other,
    })?;
    let mut process = KernelProcess {
        handle,
        request_cut: false,
        pending: Vec::new(),
        scanned: 0,
        stderr_tail: Vec::new(),
        program,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match process.next_reply(Some(deadline)).await {
            Ok(Some(reply)) if reply.kind == "ready" => return Ok(process),
            Ok(Some(_)) => {}
            Ok(None) => {
                process.stop().await;
                return Err(Error::Protocol(format!(
                    "the {program} of code context {:?} did not start within {} s",
                    context.id,
                    START_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long [`KernelProcess::stop`] waits for a killed interpreter's end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Waits up to [`STOP_WAIT`] until no command of this handle has `tag`.
/// A killed interpreter keeps its tag until its end is reported, which can
/// come after [`KernelProcess::stop`] stopped waiting: in a paused sandbox,
/// PID 1 carries out the kill only after the resume. Past the wait, the
/// start fails and names the tag.
async fn wait_until_tag_free(sandbox: &Sandbox, tag: &str) {
    let deadline = Instant::now() + STOP_WAIT;
    let commands = sandbox.commands();
    while commands
        .list()
        .iter()
        .any(|command| command.tag.as_deref() == Some(tag))
    {
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl KernelProcess {
    /// Kills the interpreter and every process it started, and waits a
    /// moment for the end, which frees its tag for the next interpreter.
    async fn stop(mut self) {
        if self.handle.kill().await.is_ok() {
            let _ = tokio::time::timeout(STOP_WAIT, self.handle.wait()).await;
        }
    }

    /// Sends one execution and collects its replies. Returns `None` when
    /// `deadline` passed first.
    async fn execute<'b>(
        &mut self,
        id: u64,
        code: &str,
        envs: &BTreeMap<String, String>,
        deadline: Option<Instant>,
        interrupts: &mut InterruptState,
        on_event: &mut Option<Box<dyn FnMut(CodeEvent) + Send + 'b>>,
    ) -> Result<Option<Execution>> {
        let request = serde_json::json!({ "id": id, "code": code, "envs": envs });
        let mut line = Vec::with_capacity(code.len() + 64);
        if self.request_cut {
            // Ends the cut line, which the interpreter then skips as
            // invalid JSON, so that this request is read on its own.
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, &request).expect("JSON values serialize to memory");
        line.push(b'\n');
        if !self.send_request(&line, deadline).await? {
            return Ok(None);
        }
        self.execute_rest(id, deadline, interrupts, on_event).await
    }

    /// Writes `line` to the interpreter's stdin. Returns false when
    /// `deadline` passed first: an interpreter that does not read, because
    /// it is stopped or its code holds the GIL, would otherwise keep the
    /// call past its timeout once the pipe is full.
    async fn send_request(&mut self, line: &[u8], deadline: Option<Instant>) -> Result<bool> {
        self.request_cut = true;
        let send = self.handle.send_stdin(line);
        match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, send).await {
                Ok(sent) => sent?,
                Err(_) => return Ok(false),
            },
            None => send.await?,
        }
        self.request_cut = false;
        Ok(true)
    }

    /// Sends the interrupt of execution `id` to the interpreter once it was
    /// requested, and only once. The interpreter reads its stdin on a thread
    /// of its own, so the line arrives while the code runs.
    async fn interrupt_if_due(
        &mut self,
        id: u64,
        interrupts: &mut InterruptState,
        deadline: Option<Instant>,
    ) {
        if !interrupts.requested || interrupts.sent {
            return;
        }
        interrupts.sent = true;
        let line = format!("{{\"interrupt\": {id}}}\n");
        // A failed or late write leaves the execution to its timeout, after
        // which the context is restarted.
        let _ = self.send_request(line.as_bytes(), deadline).await;
    }

    /// Collects the replies of the execution sent last, until its `done`.
    async fn execute_rest<'b>(
        &mut self,
        id: u64,
        deadline: Option<Instant>,
        interrupts: &mut InterruptState,
        on_event: &mut Option<Box<dyn FnMut(CodeEvent) + Send + 'b>>,
    ) -> Result<Option<Execution>> {
        let mut execution = Execution::default();
        // Bytes kept of stdout, stderr and results.
        let mut kept = (0, 0, 0);
        loop {
            let reply = tokio::select! {
                reply = self.next_reply(deadline) => reply?,
                changed = interrupts.requests.changed(), if interrupts.open => {
                    match changed {
                        Ok(()) => {
                            if *interrupts.requests.borrow_and_update() == id {
                                interrupts.requested = true;
                            }
                        }
                        Err(_) => interrupts.open = false,
                    }
                    self.interrupt_if_due(id, interrupts, deadline).await;
                    continue;
                }
            };
            let Some(reply) = reply else {
                return Ok(None);
            };
            // Replies of an execution that ran out of time earlier.
            if reply.id != id {
                continue;
            }
            let event = match reply.kind.as_str() {
                "stdout" => {
                    keep(&mut execution.logs.stdout, &mut kept.0, &reply.text);
                    CodeEvent::Stdout(reply.text)
                }
                "stderr" => {
                    keep(&mut execution.logs.stderr, &mut kept.1, &reply.text);
                    CodeEvent::Stderr(reply.text)
                }
                "result" => {
                    let result = ExecutionResult {
                        formats: reply.formats,
                        is_main_result: reply.main,
                    };
                    kept.2 += result.formats.values().map(String::len).sum::<usize>();
                    if kept.2 <= MAX_KEPT_RESULT_BYTES {
                        execution.results.push(result.clone());
                    }
                    CodeEvent::Result(result)
                }
                "error" => {
                    let error = ExecutionError {
                        name: reply.name,
                        value: reply.value,
                        traceback: reply.traceback,
                    };
                    execution.error = Some(error.clone());
                    CodeEvent::Error(error)
                }
                "done" => {
                    execution.execution_count = reply.count;
                    return Ok(Some(execution));
                }
                _ => continue,
            };
            if let Some(on_event) = on_event.as_mut() {
                on_event(event);
            }
        }
    }

    /// Returns the next reply line, or `None` once `deadline` has passed.
    async fn next_reply(&mut self, deadline: Option<Instant>) -> Result<Option<Reply>> {
        loop {
            let unread = &self.pending[self.scanned..];
            if let Some(offset) = unread.iter().position(|&b| b == b'\n') {
                let end = self.scanned + offset;
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.scanned = 0;
                match serde_json::from_slice::<Reply>(&line) {
                    Ok(reply) => return Ok(Some(reply)),
                    // Not from the interpreter program: something else in
                    // the process wrote to its stdout before the program
                    // took the descriptor over.
                    Err(_) => continue,
                }
            }
            self.scanned = self.pending.len();
            if self.pending.len() > MAX_REPLY_LINE {
                return Err(Error::Protocol(format!(
                    "the code context's {} wrote a line of over {} MiB to its reply \
                     stream; it was stopped, and the next run_code starts a new one",
                    self.program,
                    MAX_REPLY_LINE >> 20
                )));
            }
            let event = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.handle.next_event()).await {
                        Ok(event) => event?,
                        Err(_) => return Ok(None),
                    }
                }
                None => self.handle.next_event().await?,
            };
            match event {
                Some(CommandEvent::Stdout(bytes)) => self.pending.extend_from_slice(&bytes),
                Some(CommandEvent::Stderr(bytes)) => {
                    self.stderr_tail.extend_from_slice(&bytes);
                    let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
                    self.stderr_tail.drain(..excess);
                }
                Some(CommandEvent::Exit(exit)) => {
                    let memory = if exit.oom_killed {
                        ", out of memory: the sandbox reached its memory limit; use less \
                         memory or raise memory_limit"
                    } else {
                        ""
                    };
                    return Err(Error::Protocol(format!(
                        "the code context's {} ended ({}{memory}){}; the next run_code \
                         starts a new one, without the old variables",
                        self.program,
                        exit.status,
                        describe_stderr(&self.stderr_tail)
                    )));
                }
                None => {
                    return Err(Error::Protocol(format!(
                        "the code context's {} ended; the next run_code starts a new one",
                        self.program
                    )))
                }
            }
        }
    }
}

/// The longest reply line accepted from the interpreter. Code in the
/// sandbox can write to the reply stream, so a line needs a bound. A
/// result's representations travel in one line, so this also bounds one
/// image or HTML value.
const MAX_REPLY_LINE: usize = 64 * 1024 * 1024;

/// Bytes of the interpreter's own stderr kept for an error message.
const STDERR_TAIL: usize = 2048;

fn describe_stderr(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Adds `text` to `logs` while fewer than [`MAX_KEPT_LOG_BYTES`] are kept;
/// the first piece over the limit is replaced by a note.
fn keep(logs: &mut Vec<String>, kept: &mut usize, text: &str) {
    if *kept >= MAX_KEPT_LOG_BYTES {
        return;
    }
    *kept += text.len();
    if *kept < MAX_KEPT_LOG_BYTES {
        logs.push(text.to_string());
    } else {
        logs.push(format!(
            "\n[SoulBox kept the first {} MiB of this stream; stream the rest with on_event]\n",
            MAX_KEPT_LOG_BYTES >> 20
        ));
    }
}

impl Sandbox {
    /// Prepares `code` to run in the default Python context, which keeps
    /// its variables from one call to the next; `.language("js")` runs
    /// JavaScript in Node.js instead. Await it:
    ///
    /// ```no_run
    /// # async fn demo(sandbox: &soulbox_core::Sandbox) -> soulbox_core::Result<()> {
    /// sandbox.run_code("x = 6 * 7").await?;
    /// let execution = sandbox.run_code("x").await?;
    /// assert_eq!(execution.text(), Some("42"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// An exception in the code is not an error of the call: it is in
    /// [`Execution::error`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an unsupported language;
    /// [`Error::NotFound`] for an unknown context; [`Error::Unsupported`]
    /// when the template has no python3 (or node for `js`);
    /// [`Error::CodeTimedOut`] when the
    /// timeout passed; [`Error::Protocol`] when the interpreter died (the
    /// next call starts a new one); [`Error::SandboxNotRunning`] once the
    /// sandbox has ended.
    pub fn run_code(&self, code: impl Into<String>) -> RunCode<'_> {
        RunCode {
            sandbox: self,
            code: code.into(),
            language: None,
            context: None,
            envs: BTreeMap::new(),
            timeout: Some(DEFAULT_CODE_TIMEOUT),
            on_event: None,
        }
    }

    /// Starts a new code context, with variables of its own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an unsupported language or a relative
    /// cwd; otherwise as [`Sandbox::run_code`].
    pub async fn create_code_context(&self, options: CodeContextOptions) -> Result<CodeContext> {
        let language = code_language(options.language.as_deref())?;
        let cwd = options.cwd.unwrap_or_else(|| default_cwd(self));
        if !cwd.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "code context cwd {cwd:?} is not an absolute path; give one such as /home/user"
            )));
        }
        let id = format!(
            "{:08x}",
            crate::id::random_u32().map_err(Error::os("make a code context id"))?
        );
        let context = CodeContext {
            id,
            language: language.to_string(),
            cwd,
        };
        let process = start(self, &context).await?;
        let kernel = Arc::new(Kernel::new(context.clone(), Some(process)));
        self.owner.code.lock().push(kernel);
        Ok(context)
    }

    /// Lists this handle's code contexts, default ones included once used.
    pub fn list_code_contexts(&self) -> Vec<CodeContext> {
        self.owner
            .code
            .lock()
            .iter()
            .map(|kernel| kernel.context.clone())
            .collect()
    }

    /// Interrupts the code running in context `id`, as Ctrl-C does in a
    /// notebook: Python raises `KeyboardInterrupt` in it (JavaScript
    /// throws an `Error`), the execution ends with that error, and the
    /// context keeps its variables. An
    /// execution whose code has not started yet is interrupted as soon as
    /// it starts. Returns false when nothing runs in the context.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown context.
    pub fn interrupt_code_context(&self, id: &str) -> Result<bool> {
        let kernel = self
            .owner
            .code
            .find(id)
            .ok_or_else(|| unknown_context(id))?;
        let running = kernel.running.load(Ordering::Acquire);
        if running == 0 {
            return Ok(false);
        }
        kernel.interrupts.send_replace(running);
        Ok(true)
    }

    /// Ends a code context and its process. An execution in progress
    /// there fails with [`Error::Protocol`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown context.
    pub async fn remove_code_context(&self, id: &str) -> Result<()> {
        let kernel = {
            let mut kernels = self.owner.code.lock();
            let at = kernels
                .iter()
                .position(|kernel| kernel.context.id == id)
                .ok_or_else(|| unknown_context(id))?;
            kernels.remove(at)
        };
        kernel.kill().await;
        if let Some(process) = kernel.process.lock().await.take() {
            process.stop().await;
        }
        Ok(())
    }

    /// Restarts a code context: its process is killed and a new one
    /// started, without the old variables. An execution in progress there
    /// fails with [`Error::Protocol`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown context; otherwise as
    /// [`Sandbox::run_code`].
    pub async fn restart_code_context(&self, id: &str) -> Result<()> {
        let kernel = self
            .owner
            .code
            .find(id)
            .ok_or_else(|| unknown_context(id))?;
        kernel.kill().await;
        let mut process = kernel.process.lock().await;
        if let Some(old) = process.take() {
            old.stop().await;
        }
        *process = Some(kernel.start(self).await?);
        Ok(())
    }
}
