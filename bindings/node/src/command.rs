//! `NativeCommand`: the output and control of one running command.
//!
//! JavaScript pulls output with `nextEvent()`, one Promise per chunk, so
//! its callbacks run on the JavaScript thread and a slow callback slows the
//! command down instead of piling output up in memory (the core's queue
//! per handle is bounded).
//!
//! The core's `CommandHandle::next_event` needs the handle exclusively, and
//! a pending `nextEvent()` holds it. Control calls therefore never wait for
//! it: `kill` goes through the sandbox's command registry, by pid, while the
//! command runs, and uses the handle only after the command has ended,
//! when no `nextEvent()` holds it any more.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use soulbox_core::{CommandEvent, CommandExit, CommandHandle, Commands, ExitStatus, Output};

use crate::convert::terminal_size;
use crate::detach::Detachable;
use crate::error::{invalid_argument, IntoNapi, Result};

/// One chunk of output or the end of a command.
#[napi(object)]
#[expect(
    missing_debug_implementations,
    reason = "napi-rs's Buffer has no Debug"
)]
pub struct CommandEventObject {
    /// `stdout`, `stderr` or `exit`.
    pub kind: String,
    /// The bytes of a `stdout` or `stderr` chunk.
    pub data: Option<Buffer>,
    /// As in [`ExitObject`], for `exit`.
    pub exit: Option<ExitObject>,
}

/// How a command ended.
#[napi(object)]
#[derive(Debug)]
pub struct ExitObject {
    /// The exit code; absent when a signal ended the command.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// Whether the command's timeout ended it.
    pub timed_out: bool,
    /// Whether the sandbox's out-of-memory killer ended it.
    pub oom_killed: bool,
}

impl From<CommandExit> for ExitObject {
    fn from(exit: CommandExit) -> Self {
        Self::new(exit.status, exit.timed_out, exit.oom_killed)
    }
}

impl ExitObject {
    fn new(status: ExitStatus, timed_out: bool, oom_killed: bool) -> Self {
        Self {
            exit_code: status.code(),
            signal: status.signal(),
            timed_out,
            oom_killed,
        }
    }
}

/// Everything a command wrote, and how it ended.
#[napi(object)]
#[expect(
    missing_debug_implementations,
    reason = "napi-rs's Buffer has no Debug"
)]
pub struct OutputObject {
    pub stdout: Buffer,
    pub stderr: Buffer,
    pub exit: ExitObject,
}

impl From<Output> for OutputObject {
    fn from(output: Output) -> Self {
        Self {
            exit: ExitObject::new(output.status, output.timed_out, output.oom_killed),
            stdout: output.stdout.into(),
            stderr: output.stderr.into(),
        }
    }
}

/// A running command. Dropping it (when JavaScript garbage-collects it)
/// detaches from the command, which keeps running.
#[napi]
#[derive(Debug)]
pub struct NativeCommand {
    pid: u32,
    commands: Commands,
    handle: Detachable<CommandHandle>,
}

impl NativeCommand {
    pub(crate) fn new(commands: Commands, handle: CommandHandle) -> Self {
        Self {
            pid: handle.pid(),
            commands,
            handle: Detachable::new(handle),
        }
    }
}

#[napi]
impl NativeCommand {
    /// The pid of the command's first process inside the sandbox.
    #[napi(getter)]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the next chunk of output or the command's end; `null`
    /// after the end, or once `disconnect` was called.
    #[napi]
    pub async fn next_event(&self) -> Result<Option<CommandEventObject>> {
        let event = self
            .handle
            .run(async |handle| handle.next_event().await)
            .await
            .transpose()
            .into_napi()?
            .flatten();
        Ok(event.map(|event| match event {
            CommandEvent::Stdout(bytes) => output_event("stdout", bytes),
            CommandEvent::Stderr(bytes) => output_event("stderr", bytes),
            CommandEvent::Exit(exit) => CommandEventObject {
                kind: "exit".into(),
                data: None,
                exit: Some(exit.into()),
            },
        }))
    }

    /// Waits for the command's end and returns everything it wrote since
    /// this handle attached, in one call.
    #[napi]
    pub async fn wait(&self) -> Result<OutputObject> {
        let Some(output) = self.handle.run(async |handle| handle.wait().await).await else {
            return Err(invalid_argument(format!(
                "command {} was disconnected; connect to it again to wait for it",
                self.pid
            )));
        };
        output.map(OutputObject::from).into_napi()
    }

    /// Kills the command's first process and every process it started.
    /// Returns false when the command had already ended; processes it left
    /// running are killed all the same, unless this handle was
    /// disconnected.
    #[napi]
    pub async fn kill(&self) -> Result<bool> {
        if self.commands.kill(self.pid).await.into_napi()? {
            return Ok(true);
        }
        // The command has ended, so no `nextEvent()` holds the handle for
        // long: its last event is already queued.
        let killed = self.handle.run(async |handle| handle.kill().await).await;
        killed.transpose().into_napi()?;
        Ok(false)
    }

    /// Writes to the command's stdin, or types into its PTY.
    #[napi]
    pub async fn send_stdin(&self, data: Buffer) -> Result<()> {
        send_stdin(&self.commands, self.pid, data).await
    }

    /// Closes the command's stdin, so it reads end of file.
    #[napi]
    pub async fn close_stdin(&self) -> Result<()> {
        close_stdin(&self.commands, self.pid).await
    }

    /// Resizes the command's PTY.
    #[napi]
    pub fn resize(&self, rows: u32, cols: u32) -> Result<()> {
        resize(&self.commands, self.pid, rows, cols)
    }

    /// Stops receiving output; the command keeps running. A pending
    /// `nextEvent()` resolves with `null`.
    #[napi]
    pub fn disconnect(&self) {
        self.handle.detach();
    }
}

/// Writes to the stdin (or PTY) of the running command `pid`.
pub(crate) async fn send_stdin(commands: &Commands, pid: u32, data: Buffer) -> Result<()> {
    let data = data.to_vec();
    commands.send_stdin(pid, &data).await.into_napi()
}

/// Closes the stdin of the running command `pid`.
pub(crate) async fn close_stdin(commands: &Commands, pid: u32) -> Result<()> {
    // A handle attached only for this call. Nothing reads its output, but
    // it is dropped long before its queue could fill and hold the command up.
    let handle = commands.connect(pid).into_napi()?;
    handle.close_stdin().await.into_napi()
}

/// Resizes the PTY of the running command `pid`.
pub(crate) fn resize(commands: &Commands, pid: u32, rows: u32, cols: u32) -> Result<()> {
    let (rows, cols) = (terminal_size("rows", rows)?, terminal_size("cols", cols)?);
    let handle = commands.connect(pid).into_napi()?;
    handle.resize(rows, cols).into_napi()
}

fn output_event(kind: &str, bytes: Vec<u8>) -> CommandEventObject {
    CommandEventObject {
        kind: kind.into(),
        data: Some(bytes.into()),
        exit: None,
    }
}
