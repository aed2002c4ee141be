//! `NativeSandbox`: creating and ending a sandbox, and its commands.
//!
//! Every method that waits has a synchronous flavour, through
//! [`bridge::block`], and an `_async` flavour that returns an awaitable,
//! through [`bridge::spawn`], both over one future.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use soulbox_core::{Command, Network, Output, ProcessInfo, Sandbox, SandboxOptions, SeccompPolicy};

use crate::bridge::{self, block, spawn, List, ToPython};
use crate::code::ContextLocks;
use crate::command::{KillOnDrop, NativeCommand};

/// Options of `Sandbox.create`, as the Python layer passes them (a dict
/// whose values it has already type-checked).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct CreateOptions {
    template: String,
    timeout: f64,
    envs: BTreeMap<String, String>,
    memory_limit: Option<u64>,
    pids_limit: Option<u64>,
    cpu_limit: Option<f64>,
    disk_size: u64,
    tmp_size: u64,
    disk_inodes: u64,
    open_files_limit: u64,
    file_size_limit: Option<u64>,
    metadata: BTreeMap<String, String>,
    kill_on_drop: bool,
    seccomp: Option<SeccompSpec>,
    allow_internet_access: bool,
    allow_out: Vec<String>,
    deny_out: Vec<String>,
    mounts: Vec<MountSpec>,
    /// "kill" or "pause", from E2B's `lifecycle` option.
    on_timeout: String,
    auto_resume: bool,
}

/// A host path to mount, as `Mount` checked by the Python layer.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct MountSpec {
    source: String,
    target: String,
    writable: bool,
}

/// A seccomp policy: a base ("default", "minimal" or "unconfined"), system
/// calls to allow, and system calls to fail with an errno.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct SeccompSpec {
    base: String,
    allow: Vec<String>,
    deny: BTreeMap<String, i32>,
}

impl SeccompSpec {
    fn into_policy(self, py: Python<'_>) -> PyResult<SeccompPolicy> {
        let mut policy = match self.base.as_str() {
            "default" => SeccompPolicy::default(),
            "minimal" => SeccompPolicy::minimal(),
            "unconfined" => SeccompPolicy::unconfined(),
            other => {
                return Err(bridge::core_error(
                    py,
                    soulbox_core::Error::InvalidArgument(format!(
                        "seccomp base {other:?} is invalid; use \"default\", \"minimal\" or \
                         \"unconfined\""
                    )),
                ))
            }
        };
        policy = policy.allow_all(self.allow.iter().map(String::as_str));
        for (syscall, errno) in &self.deny {
            policy = policy.deny(syscall, *errno);
        }
        Ok(policy)
    }
}

impl CreateOptions {
    /// Builds the core options, for `NativeSandbox.create` and `NativePool`.
    pub(crate) fn into_options(self, py: Python<'_>) -> PyResult<SandboxOptions> {
        let mut options = SandboxOptions::default();
        options.template = self.template;
        options.timeout = bridge::seconds(py, "timeout", Some(self.timeout))?.unwrap_or_default();
        options.envs = self.envs;
        options.memory_limit = self.memory_limit;
        options.pids_limit = self.pids_limit;
        options.cpu_limit = self.cpu_limit;
        options.disk_size = self.disk_size;
        options.tmp_size = self.tmp_size;
        options.disk_inodes = self.disk_inodes;
        options.open_files_limit = self.open_files_limit;
        options.file_size_limit = self.file_size_limit;
        options.metadata = self.metadata;
        options.kill_on_drop = self.kill_on_drop;
        options.on_timeout = self
            .on_timeout
            .parse()
            .map_err(|e| bridge::core_error(py, e))?;
        options.auto_resume = self.auto_resume;
        if self.allow_internet_access {
            options.network = Network::Internet;
        }
        options.allow_out = self.allow_out;
        options.deny_out = self.deny_out;
        if let Some(seccomp) = self.seccomp {
            options.seccomp = seccomp.into_policy(py)?;
        }
        options.mounts = self
            .mounts
            .into_iter()
            .map(|mount| soulbox_core::Mount {
                source: mount.source.into(),
                target: mount.target,
                writable: mount.writable,
            })
            .collect();
        Ok(options)
    }
}

/// A command to start, as the Python layer passes it.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct CommandSpec {
    cmd: String,
    envs: BTreeMap<String, String>,
    user: Option<String>,
    cwd: Option<String>,
    /// Seconds; `None` for no limit.
    timeout: Option<f64>,
    stdin: bool,
    tag: Option<String>,
}

/// Size of a new PTY.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct PtySpec {
    rows: u16,
    cols: u16,
    envs: BTreeMap<String, String>,
    user: Option<String>,
    cwd: Option<String>,
    timeout: Option<f64>,
}

/// A handle of a running sandbox. The sandbox ends at its timeout or at
/// `kill()`; a `kill_on_drop` sandbox also when the handle `create`
/// returned is garbage collected.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativeSandbox {
    pub(crate) sandbox: Sandbox,
    /// The locks that order the executions of each code context.
    pub(crate) code_locks: Arc<ContextLocks>,
}

impl NativeSandbox {
    pub(crate) fn new(sandbox: Sandbox) -> Self {
        Self {
            sandbox,
            code_locks: Arc::default(),
        }
    }
}

impl ToPython for NativeSandbox {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

/// The output of a command run to completion.
struct RunOutput(Output);

impl ToPython for RunOutput {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let Output {
            status,
            stdout,
            stderr,
            timed_out,
            oom_killed,
            ..
        } = self.0;
        let tuple = (
            PyBytes::new(py, &stdout),
            PyBytes::new(py, &stderr),
            status.code(),
            status.signal(),
            timed_out,
            oom_killed,
        );
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

/// A running command as `commands.list()` shows it.
pub(crate) struct Process(pub(crate) ProcessInfo);

impl ToPython for Process {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let ProcessInfo {
            pid,
            tag,
            cmd,
            args,
            envs,
            cwd,
            ..
        } = self.0;
        let tuple = (pid, tag, cmd, args, envs, cwd);
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

impl NativeSandbox {
    fn shell_command(&self, py: Python<'_>, spec: CommandSpec) -> PyResult<Command> {
        let mut command = self.sandbox.shell(&spec.cmd);
        configure(
            py,
            &mut command,
            spec.envs,
            spec.user,
            spec.cwd,
            spec.timeout,
        )?;
        command.stdin(spec.stdin);
        if let Some(tag) = spec.tag {
            command.tag(tag);
        }
        Ok(command)
    }

    fn kill_future(&self) -> impl Future<Output = soulbox_core::Result<bool>> + Send + 'static {
        let sandbox = self.sandbox.clone();
        async move {
            let was_running = sandbox.is_running();
            sandbox.kill().await?;
            Ok(was_running)
        }
    }
}

/// Applies the options every command and PTY shares.
fn configure(
    py: Python<'_>,
    command: &mut Command,
    envs: BTreeMap<String, String>,
    user: Option<String>,
    cwd: Option<String>,
    timeout: Option<f64>,
) -> PyResult<()> {
    for (key, value) in envs {
        command.env(key, value);
    }
    if let Some(user) = user {
        command.user(user);
    }
    if let Some(cwd) = cwd {
        command.cwd(cwd);
    }
    command.timeout(bridge::seconds(py, "timeout", timeout)?);
    Ok(())
}

/// Starts `command` and waits for it. If the wait is cancelled (Ctrl-C or
/// a cancelled coroutine), the command's whole process tree is killed.
async fn run_to_end(command: Command) -> soulbox_core::Result<RunOutput> {
    let mut handle = command.start().await?;
    let guard = KillOnDrop::new(handle.controller());
    let output = handle.wait().await;
    guard.defuse();
    output.map(RunOutput)
}

#[pymethods]
impl NativeSandbox {
    /// Creates a sandbox and waits until it accepts commands.
    #[staticmethod]
    fn create(py: Python<'_>, options: CreateOptions) -> PyResult<Py<PyAny>> {
        let options = options.into_options(py)?;
        block(py, async move {
            Sandbox::create(options).await.map(NativeSandbox::new)
        })
    }

    /// Awaitable flavour of `create`.
    #[staticmethod]
    fn create_async(py: Python<'_>, options: CreateOptions) -> PyResult<Bound<'_, PyAny>> {
        let options = options.into_options(py)?;
        spawn(py, async move {
            Sandbox::create(options).await.map(NativeSandbox::new)
        })
    }

    /// The sandbox id, which is also its hostname.
    #[getter]
    fn sandbox_id(&self) -> &str {
        self.sandbox.id()
    }

    /// Host pid of the sandbox's PID 1.
    #[getter]
    fn pid(&self) -> i32 {
        self.sandbox.pid()
    }

    /// Returns whether the sandbox still runs.
    fn is_running(&self) -> bool {
        self.sandbox.is_running()
    }

    /// Returns "127.0.0.1:PORT" on the host's loopback, forwarded to `port`
    /// on the sandbox's loopback. The forwarding runs on the package's
    /// runtime until the sandbox ends or this handle is dropped.
    fn get_host(&self, py: Python<'_>, port: i64) -> PyResult<String> {
        let Ok(port) = u16::try_from(port) else {
            let message = format!("port {port} is not a TCP port; give one from 1 to 65535");
            return Err(bridge::core_error(
                py,
                soulbox_core::Error::InvalidArgument(message),
            ));
        };
        let _entered = bridge::runtime()?.enter();
        self.sandbox
            .get_host(port)
            .map_err(|e| bridge::core_error(py, e))
    }

    /// Limits in force, as (memory bytes, pids, CPU millicores).
    fn enforced_limits(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        let limits = self.sandbox.enforced_limits();
        (limits.memory, limits.pids, limits.cpu_millicores)
    }

    /// Kills the sandbox; returns whether it was running.
    fn kill(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.kill_future())
    }

    /// Awaitable flavour of `kill`.
    fn kill_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.kill_future())
    }

    /// Sets the remaining lifetime to `seconds` from now; 0 removes it.
    fn set_timeout(&self, py: Python<'_>, seconds: f64) -> PyResult<Py<PyAny>> {
        let timeout = bridge::seconds(py, "timeout", Some(seconds))?.unwrap_or_default();
        let sandbox = self.sandbox.clone();
        block(py, async move { sandbox.set_timeout(timeout).await })
    }

    /// Awaitable flavour of `set_timeout`.
    fn set_timeout_async<'py>(&self, py: Python<'py>, seconds: f64) -> PyResult<Bound<'py, PyAny>> {
        let timeout = bridge::seconds(py, "timeout", Some(seconds))?.unwrap_or_default();
        let sandbox = self.sandbox.clone();
        spawn(py, async move { sandbox.set_timeout(timeout).await })
    }

    /// Runs a command line through the shell to its end and returns
    /// (stdout, stderr, exit code, signal, timed out, out of memory).
    fn run(&self, py: Python<'_>, spec: CommandSpec) -> PyResult<Py<PyAny>> {
        let command = self.shell_command(py, spec)?;
        block(py, run_to_end(command))
    }

    /// Awaitable flavour of `run`.
    fn run_async<'py>(&self, py: Python<'py>, spec: CommandSpec) -> PyResult<Bound<'py, PyAny>> {
        let command = self.shell_command(py, spec)?;
        spawn(py, run_to_end(command))
    }

    /// Starts a command line through the shell and returns its handle.
    fn start(&self, py: Python<'_>, spec: CommandSpec) -> PyResult<Py<PyAny>> {
        let command = self.shell_command(py, spec)?;
        block(
            py,
            async move { command.start().await.map(NativeCommand::new) },
        )
    }

    /// Awaitable flavour of `start`.
    fn start_async<'py>(&self, py: Python<'py>, spec: CommandSpec) -> PyResult<Bound<'py, PyAny>> {
        let command = self.shell_command(py, spec)?;
        spawn(
            py,
            async move { command.start().await.map(NativeCommand::new) },
        )
    }

    /// Starts an interactive login shell on a new PTY.
    fn start_pty(&self, py: Python<'_>, spec: PtySpec) -> PyResult<Py<PyAny>> {
        let (command, rows, cols) = self.pty_command(py, spec)?;
        block(py, async move {
            command.start_pty(rows, cols).await.map(NativeCommand::new)
        })
    }

    /// Awaitable flavour of `start_pty`.
    fn start_pty_async<'py>(&self, py: Python<'py>, spec: PtySpec) -> PyResult<Bound<'py, PyAny>> {
        let (command, rows, cols) = self.pty_command(py, spec)?;
        spawn(py, async move {
            command.start_pty(rows, cols).await.map(NativeCommand::new)
        })
    }

    /// Lists the running commands as (pid, tag, cmd, args, envs, cwd).
    fn list_commands(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list: Vec<Process> = self
            .sandbox
            .commands()
            .list()
            .into_iter()
            .map(Process)
            .collect();
        List(list).to_python(py)
    }

    /// Attaches a new handle to the running command `pid`.
    fn connect_command(&self, py: Python<'_>, pid: u32) -> PyResult<NativeCommand> {
        self.sandbox
            .commands()
            .connect(pid)
            .map(NativeCommand::new)
            .map_err(|e| bridge::core_error(py, e))
    }
}

impl NativeSandbox {
    fn pty_command(&self, py: Python<'_>, spec: PtySpec) -> PyResult<(Command, u16, u16)> {
        let mut command = self.sandbox.pty_shell();
        configure(
            py,
            &mut command,
            spec.envs,
            spec.user,
            spec.cwd,
            spec.timeout,
        )?;
        Ok((command, spec.rows, spec.cols))
    }
}
