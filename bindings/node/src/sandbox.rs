//! `NativeSandbox`: creating, timing out and killing a sandbox, and
//! starting its commands.

use std::collections::HashMap;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use soulbox_core::{
    Command, ListQuery, Network, Sandbox, SandboxOptions, SandboxState, DEFAULT_TIMEOUT,
};

use crate::command::{self, NativeCommand};
use crate::convert::{
    port_number, terminal_size, timeout_from_ms, whole_number, ProcessInfoObject,
    SandboxInfoObject, SandboxMetricsObject,
};
use crate::error::{IntoNapi, Result};

/// Options of `createSandbox`, checked by `index.js` first.
#[napi(object)]
#[derive(Debug)]
pub struct CreateOptions {
    /// Template name; `host` when absent.
    pub template: Option<String>,
    /// Sandbox lifetime in milliseconds; 0 for none, 300 000 when absent.
    pub timeout_ms: Option<f64>,
    pub envs: Option<HashMap<String, String>>,
    /// Labels that `getInfo` returns and `list` filters by.
    pub metadata: Option<HashMap<String, String>>,
    /// Memory limit in bytes; 0 for none, 2 GiB when absent.
    pub memory_limit: Option<f64>,
    /// Limit on processes and threads; 0 for none, 1024 when absent.
    pub pids_limit: Option<f64>,
    /// CPU limit in cores; 0 or absent for none.
    pub cpu_limit: Option<f64>,
    /// Internet access through slirp4netns; loopback only when absent or
    /// false.
    pub allow_internet_access: Option<bool>,
    /// IPv4 addresses and CIDR blocks reachable despite `deny_out`.
    pub allow_out: Option<Vec<String>>,
    /// IPv4 addresses and CIDR blocks the sandbox may not send to.
    pub deny_out: Option<Vec<String>>,
    /// Host paths to mount, with absolute sources.
    pub mounts: Option<Vec<MountOptions>>,
    /// `kill` (when absent) or `pause`, from `lifecycle.onTimeout`.
    pub on_timeout: Option<String>,
    /// `lifecycle.autoResume`; false when absent.
    pub auto_resume: Option<bool>,
}

/// A host file or directory to mount, as `mounts` of `Sandbox.create`.
#[napi(object)]
#[derive(Debug)]
pub struct MountOptions {
    pub source: String,
    pub target: String,
    pub writable: Option<bool>,
}

/// Options of `NativeSandbox.start`.
#[napi(object)]
#[derive(Debug)]
pub struct StartOptions {
    /// The command line, run through the sandbox's shell.
    pub cmd: String,
    pub envs: Option<HashMap<String, String>>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    /// Keep stdin open for `sendStdin`; otherwise it reads /dev/null.
    pub stdin: Option<bool>,
    /// Milliseconds before the command's whole tree is killed; 0 or absent
    /// for no limit.
    pub timeout_ms: Option<f64>,
}

/// Options of `NativeSandbox.startPty`.
#[napi(object)]
#[derive(Debug)]
pub struct PtyOptions {
    pub rows: u32,
    pub cols: u32,
    pub envs: Option<HashMap<String, String>>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    /// As in [`StartOptions::timeout_ms`].
    pub timeout_ms: Option<f64>,
}

/// A sandbox. It runs on after the JavaScript object is garbage-collected,
/// until its timeout or a kill, as on E2B. This handle's forwarded ports
/// stop with the object, and its code contexts can no longer be reached.
#[napi]
#[derive(Debug)]
pub struct NativeSandbox {
    pub(crate) sandbox: Sandbox,
}

/// Applies the options that commands and PTYs share.
fn configure(
    command: &mut Command,
    envs: Option<HashMap<String, String>>,
    user: Option<String>,
    cwd: Option<String>,
    timeout_ms: Option<f64>,
) -> Result<()> {
    for (key, value) in envs.unwrap_or_default() {
        command.env(key, value);
    }
    if let Some(user) = user {
        command.user(user);
    }
    if let Some(cwd) = cwd {
        command.cwd(cwd);
    }
    command.timeout(timeout_from_ms("timeoutMs", timeout_ms)?);
    Ok(())
}

/// Converts [`CreateOptions`] into the core's options, for
/// `NativeSandbox.create` and `NativeSandboxPool.open`.
pub(crate) fn sandbox_options(options: CreateOptions) -> Result<SandboxOptions> {
    let mut sandbox_options = SandboxOptions::default();
    if let Some(template) = options.template {
        sandbox_options.template = template;
    }
    sandbox_options.timeout = match options.timeout_ms {
        None => DEFAULT_TIMEOUT,
        Some(_) => timeout_from_ms("timeoutMs", options.timeout_ms)?.unwrap_or_default(),
    };
    sandbox_options.envs = options.envs.unwrap_or_default().into_iter().collect();
    sandbox_options.metadata = options.metadata.unwrap_or_default().into_iter().collect();
    if let Some(bytes) = options.memory_limit {
        sandbox_options.memory_limit = whole_number("memoryLimit", bytes)?;
    }
    if let Some(count) = options.pids_limit {
        sandbox_options.pids_limit = whole_number("pidsLimit", count)?;
    }
    if let Some(cores) = options.cpu_limit {
        sandbox_options.cpu_limit = (cores != 0.0).then_some(cores);
    }
    sandbox_options.mounts = options
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|mount| soulbox_core::Mount {
            source: mount.source.into(),
            target: mount.target,
            writable: mount.writable.unwrap_or(false),
        })
        .collect();
    if options.allow_internet_access == Some(true) {
        sandbox_options.network = Network::Internet;
    }
    sandbox_options.allow_out = options.allow_out.unwrap_or_default();
    sandbox_options.deny_out = options.deny_out.unwrap_or_default();
    if let Some(on_timeout) = options.on_timeout {
        sandbox_options.on_timeout = on_timeout.parse().into_napi()?;
    }
    sandbox_options.auto_resume = options.auto_resume.unwrap_or(false);
    Ok(sandbox_options)
}

#[napi]
impl NativeSandbox {
    /// Creates a sandbox and waits until it accepts commands.
    #[napi]
    pub async fn create(options: CreateOptions) -> Result<NativeSandbox> {
        let sandbox = Sandbox::create(sandbox_options(options)?)
            .await
            .into_napi()?;
        Ok(NativeSandbox { sandbox })
    }

    /// Connects to a running or paused sandbox of this user by id, and
    /// resumes it if it was paused.
    #[napi]
    pub async fn connect(sandbox_id: String) -> Result<NativeSandbox> {
        let sandbox = Sandbox::connect(&sandbox_id).await.into_napi()?;
        Ok(NativeSandbox { sandbox })
    }

    /// Connects to a sandbox by id and leaves it paused if it is, for
    /// calls that work on it as it is.
    #[napi]
    pub async fn connect_without_resume(sandbox_id: String) -> Result<NativeSandbox> {
        let sandbox = Sandbox::connect_without_resume(&sandbox_id)
            .await
            .into_napi()?;
        Ok(NativeSandbox { sandbox })
    }

    /// Lists this user's sandboxes whose metadata contains every pair of
    /// `metadata`, in `state` (`running` or `paused`) when given, oldest
    /// first.
    #[napi]
    pub async fn list(
        metadata: Option<HashMap<String, String>>,
        state: Option<String>,
    ) -> Result<Vec<SandboxInfoObject>> {
        let mut query = ListQuery::default();
        for (key, value) in metadata.unwrap_or_default() {
            query = query.metadata(key, value);
        }
        if let Some(state) = state.as_deref() {
            let state: SandboxState = state.parse().into_napi()?;
            query = query.state(state);
        }
        let infos = Sandbox::list(&query).await.into_napi()?;
        Ok(infos.into_iter().map(SandboxInfoObject::from).collect())
    }

    /// Kills the sandbox `sandbox_id`; false if no such sandbox runs.
    #[napi]
    pub async fn kill_id(sandbox_id: String) -> Result<bool> {
        Sandbox::kill_id(&sandbox_id).await.into_napi()
    }

    /// The sandbox id, which is also its hostname.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.sandbox.id().to_string()
    }

    /// Kills every process of the sandbox and removes its cgroups.
    #[napi]
    pub async fn kill(&self) -> Result<()> {
        self.sandbox.kill().await.into_napi()
    }

    /// Sets the sandbox's remaining lifetime; 0 removes the limit.
    #[napi]
    pub async fn set_timeout(&self, timeout_ms: f64) -> Result<()> {
        let timeout = timeout_from_ms("timeoutMs", Some(timeout_ms))?;
        self.sandbox
            .set_timeout(timeout.unwrap_or_default())
            .await
            .into_napi()
    }

    /// Describes the sandbox.
    #[napi]
    pub async fn get_info(&self) -> Result<SandboxInfoObject> {
        let info = self.sandbox.get_info().await.into_napi()?;
        Ok(info.into())
    }

    /// Freezes every process of the sandbox; false if it was paused.
    #[napi]
    pub async fn pause(&self) -> Result<bool> {
        self.sandbox.pause().await.into_napi()
    }

    /// Thaws a paused sandbox; false if it was running.
    #[napi]
    pub async fn resume(&self) -> Result<bool> {
        self.sandbox.resume().await.into_napi()
    }

    /// Returns the sandbox's current resource use.
    #[napi]
    pub async fn metrics(&self) -> Result<SandboxMetricsObject> {
        let metrics = self.sandbox.metrics().await.into_napi()?;
        Ok(metrics.into())
    }

    /// Returns whether the sandbox is still running.
    #[napi]
    pub fn is_running(&self) -> bool {
        self.sandbox.is_running()
    }

    /// Forwards `port` on the sandbox's loopback to the host and returns
    /// the address to connect to, `127.0.0.1:PORT`. Synchronous, as E2B's
    /// `getHost`. The core call spawns the forwarding on the current tokio
    /// runtime, so this call enters napi-rs's runtime, whose worker threads
    /// then serve the connections until the sandbox ends or this object is
    /// garbage-collected.
    #[napi]
    pub fn get_host(&self, port: f64) -> Result<String> {
        let port = port_number(port)?;
        napi::bindgen_prelude::within_runtime_if_available(|| self.sandbox.get_host(port))
            .into_napi()
    }

    /// Starts a command line through the sandbox's shell.
    #[napi]
    pub async fn start(&self, options: StartOptions) -> Result<NativeCommand> {
        let mut command = self.sandbox.shell(&options.cmd);
        configure(
            &mut command,
            options.envs,
            options.user,
            options.cwd,
            options.timeout_ms,
        )?;
        command.stdin(options.stdin.unwrap_or(false));
        let handle = command.start().await.into_napi()?;
        Ok(NativeCommand::new(self.sandbox.commands(), handle))
    }

    /// Starts an interactive login shell on a new PTY.
    #[napi]
    pub async fn start_pty(&self, options: PtyOptions) -> Result<NativeCommand> {
        let rows = terminal_size("rows", options.rows)?;
        let cols = terminal_size("cols", options.cols)?;
        let mut command = self.sandbox.pty_shell();
        configure(
            &mut command,
            options.envs,
            options.user,
            options.cwd,
            options.timeout_ms,
        )?;
        let handle = command.start_pty(rows, cols).await.into_napi()?;
        Ok(NativeCommand::new(self.sandbox.commands(), handle))
    }

    /// Lists the running commands and PTYs, ordered by pid.
    #[napi]
    pub fn list_commands(&self) -> Vec<ProcessInfoObject> {
        let commands = self.sandbox.commands().list();
        commands.into_iter().map(ProcessInfoObject::from).collect()
    }

    /// Attaches a new handle to the running command `pid`.
    #[napi]
    pub fn connect_command(&self, pid: u32) -> Result<NativeCommand> {
        let commands = self.sandbox.commands();
        let handle = commands.connect(pid).into_napi()?;
        Ok(NativeCommand::new(commands, handle))
    }

    /// Kills the running command `pid` and its whole tree; false if no
    /// running command has that pid.
    #[napi]
    pub async fn kill_command(&self, pid: u32) -> Result<bool> {
        self.sandbox.commands().kill(pid).await.into_napi()
    }

    /// Writes to the stdin (or PTY) of the running command `pid`.
    #[napi]
    pub async fn send_stdin(&self, pid: u32, data: Buffer) -> Result<()> {
        command::send_stdin(&self.sandbox.commands(), pid, data).await
    }

    /// Closes the stdin of the running command `pid`.
    #[napi]
    pub async fn close_stdin(&self, pid: u32) -> Result<()> {
        command::close_stdin(&self.sandbox.commands(), pid).await
    }

    /// Resizes the PTY of the running command `pid`.
    #[napi]
    pub fn resize_pty(&self, pid: u32, rows: u32, cols: u32) -> Result<()> {
        command::resize(&self.sandbox.commands(), pid, rows, cols)
    }
}
