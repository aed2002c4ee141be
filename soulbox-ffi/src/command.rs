//! Commands: `soulbox_run`, `soulbox_exec`, and the `soulbox_command`
//! handle of a background command or PTY session.

use std::ffi::OsString;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use soulbox_core::{
    CommandController, CommandEvent, CommandExit, CommandHandle, Error as CoreError,
    Sandbox as CoreSandbox, Selector, DEFAULT_COMMAND_TIMEOUT,
};

use crate::error::{Error, ErrorKind, Result};
use crate::options::RunOptions;
use crate::output::{ChunkBlock, OutputBlock, Stream};
use crate::processes::ProcessListBlock;
use crate::runtime::{self, Polled};
use crate::sandbox::Sandbox;

/// What to run: a command line for the sandbox's shell, or a program and
/// its arguments with no shell.
#[derive(Debug)]
pub enum Program {
    Shell(OsString),
    Argv(Vec<OsString>),
}

/// Receives output chunks while a run or wait is in progress.
pub type OnOutput<'a> = Option<&'a mut dyn FnMut(Stream, &[u8])>;

/// A command started in the background, a PTY session, or a running
/// command attached by pid or tag. Created by `soulbox_command_start`,
/// `soulbox_pty_create` or `soulbox_commands_connect` and freed with
/// `soulbox_command_free`.
#[derive(Debug)]
pub struct Command {
    controller: CommandController,
    /// Taken by the one thread that waits; see [`Command::wait`].
    events: Mutex<Events>,
}

#[derive(Debug)]
struct Events {
    handle: CommandHandle,
    /// The end, once a wait or read has seen it, for the calls after that.
    ending: Option<Result<CommandExit>>,
}

/// The next item from a command's events.
enum Received {
    Output(Stream, Vec<u8>),
    End(CommandExit),
}

fn build(
    sandbox: &CoreSandbox,
    program: &Program,
    options: Option<&RunOptions>,
) -> Result<soulbox_core::Command> {
    let mut command = match program {
        Program::Shell(line) => sandbox.shell(line),
        Program::Argv(argv) => {
            let (first, rest) = argv.split_first().ok_or_else(|| {
                Error::invalid("argv is empty; pass the program as argv[0] and end with NULL")
            })?;
            let mut command = sandbox.command(first);
            command.args(rest);
            command
        }
    };
    configure(&mut command, options);
    Ok(command)
}

/// Applies `options`, when there are any, to `command`.
fn configure(command: &mut soulbox_core::Command, options: Option<&RunOptions>) {
    let Some(options) = options else {
        return;
    };
    if let Some(cwd) = &options.cwd {
        command.cwd(cwd.clone());
    }
    if let Some(user) = &options.user {
        command.user(user.clone());
    }
    for (key, value) in &options.envs {
        command.env(key, value);
    }
    if let Some(timeout) = options.timeout {
        command.timeout(timeout);
    }
    if let Some(tag) = &options.tag {
        command.tag(tag.clone());
    }
    command.stdin(options.stdin);
}

/// Runs a command to its end: the body of `soulbox_run` and
/// `soulbox_exec`.
pub fn run(
    sandbox: &Sandbox,
    program: &Program,
    options: Option<&RunOptions>,
    on_output: OnOutput<'_>,
) -> Result<Box<OutputBlock>> {
    if options.is_some_and(|o| o.stdin) {
        return Err(Error::invalid(
            "the stdin option keeps stdin open for soulbox_command_send_stdin, which needs a \
             command from soulbox_command_start; soulbox_run and soulbox_exec give the \
             command /dev/null",
        ));
    }
    // A clone, so that the sandbox lives until this call returns even if a
    // callback frees the caller's handle.
    let sandbox = sandbox.inner.clone();
    let mut command = build(&sandbox, program, options)?;
    if options.and_then(|o| o.timeout).is_none() {
        command.timeout(Some(DEFAULT_COMMAND_TIMEOUT));
    }
    let mut events = Events {
        handle: runtime::block_on(command.start())??,
        ending: None,
    };
    events.drain(on_output)
}

impl Command {
    pub fn start(
        sandbox: &Sandbox,
        program: &Program,
        options: Option<&RunOptions>,
    ) -> Result<Box<Self>> {
        let command = build(&sandbox.inner, program, options)?;
        let handle = runtime::block_on(command.start())??;
        Ok(Self::wrap(handle))
    }

    /// Starts the sandbox's interactive login shell on a new PTY of `rows`
    /// x `cols`.
    pub fn start_pty(
        sandbox: &Sandbox,
        rows: u16,
        cols: u16,
        options: Option<&RunOptions>,
    ) -> Result<Box<Self>> {
        let mut command = sandbox.inner.pty_shell();
        configure(&mut command, options);
        let handle = runtime::block_on(command.start_pty(rows, cols))??;
        Ok(Self::wrap(handle))
    }

    /// Attaches a new handle to the running command that `selector` names.
    pub fn connect(sandbox: &Sandbox, selector: Selector) -> Result<Box<Self>> {
        match sandbox.inner.commands().connect(selector.clone()) {
            Ok(handle) => Ok(Self::wrap(handle)),
            // soulbox-core's message names its Rust method list().
            Err(CoreError::NotFound(_)) => Err(command_not_found(sandbox, &selector)),
            Err(other) => Err(other.into()),
        }
    }

    fn wrap(handle: CommandHandle) -> Box<Self> {
        Box::new(Self {
            controller: handle.controller(),
            events: Mutex::new(Events {
                handle,
                ending: None,
            }),
        })
    }

    pub fn pid(&self) -> u32 {
        self.controller.pid()
    }

    /// Takes the command's events for one wait or read. One thread at a
    /// time: a second concurrent call fails at once instead of blocking
    /// until the first one ends.
    fn lock_events(&self) -> Result<MutexGuard<'_, Events>> {
        match self.events.try_lock() {
            Ok(events) => Ok(events),
            // A panic in an earlier wait was caught and reported; the
            // handle itself is still consistent.
            Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::invalid(format!(
                "command {} is already being waited for or read by soulbox_command_wait or \
                 soulbox_command_read in another thread or in the output callback; read its \
                 output in one place only",
                self.pid()
            ))),
        }
    }

    /// Waits for the command's end.
    pub fn wait(&self, on_output: OnOutput<'_>) -> Result<Box<OutputBlock>> {
        self.lock_events()?.drain(on_output)
    }

    /// Waits up to `limit` (`None`: without limit) for the next chunk of
    /// output or the command's end, after which a wait returns the exit.
    pub fn read(&self, limit: Option<Duration>) -> Result<Polled<Box<ChunkBlock>>> {
        let mut events = self.lock_events()?;
        match events.receive(limit)? {
            Some(Received::Output(stream, chunk)) => {
                Ok(Polled::Item(ChunkBlock::new(stream, chunk)))
            }
            Some(Received::End(_)) => Ok(Polled::Ended),
            None => Ok(Polled::TimedOut),
        }
    }

    pub fn send_stdin(&self, data: &[u8]) -> Result<()> {
        runtime::block_on(self.controller.send_stdin(data))??;
        Ok(())
    }

    pub fn close_stdin(&self) -> Result<()> {
        runtime::block_on(self.controller.close_stdin())??;
        Ok(())
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        runtime::block_on(self.controller.signal(signal))??;
        Ok(())
    }

    pub fn kill(&self) -> Result<()> {
        runtime::block_on(self.controller.kill())??;
        Ok(())
    }

    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        Ok(self.controller.resize(rows, cols)?)
    }
}

/// The error for a pid or tag that no command started through `sandbox`
/// has. A command started through another handle of the same sandbox is
/// not found either, which is the surprise the message explains.
fn command_not_found(sandbox: &Sandbox, selector: &Selector) -> Error {
    let selected = match selector {
        Selector::Pid(pid) => format!("pid {pid}"),
        Selector::Tag(tag) => format!("tag {tag:?}"),
    };
    Error::new(
        ErrorKind::NotFound,
        libc::ENOENT,
        &format!(
            "not found: no running command with {selected} was started through this handle of \
             sandbox {}; soulbox_commands_list shows the ones that were",
            sandbox.inner.id()
        ),
    )
}

/// Lists the commands started through `sandbox` whose first process still
/// runs.
pub fn list(sandbox: &Sandbox) -> Box<ProcessListBlock> {
    ProcessListBlock::new(&sandbox.inner.commands().list())
}

impl Events {
    /// Receives events until the command's end, giving output to
    /// `on_output` or collecting it when there is no callback. The callback
    /// runs between two blocking waits for the next event, never inside
    /// one, so it may call SoulBox again.
    fn drain(&mut self, mut on_output: OnOutput<'_>) -> Result<Box<OutputBlock>> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        loop {
            // Without a limit, receive never returns None.
            let Some(received) = self.receive(None)? else {
                continue;
            };
            let (stream, chunk) = match received {
                Received::Output(stream, chunk) => (stream, chunk),
                Received::End(exit) => return Ok(OutputBlock::new(exit, stdout, stderr)),
            };
            let collected = match stream {
                Stream::Stdout => &mut stdout,
                Stream::Stderr => &mut stderr,
            };
            match on_output.as_mut() {
                Some(callback) => callback(stream, &chunk),
                None => collected.extend_from_slice(&chunk),
            }
        }
    }

    /// Waits up to `limit` (`None`: without limit) for the next chunk or
    /// the end, and returns `None` when the limit passed first. Once the
    /// end was received, every later call returns it again at once.
    fn receive(&mut self, limit: Option<Duration>) -> Result<Option<Received>> {
        if let Some(ending) = &self.ending {
            return ending.clone().map(|exit| Some(Received::End(exit)));
        }
        // next_event is cancel-safe, so the time limit loses no event.
        let Some(next) = runtime::block_on_for(limit, self.handle.next_event())? else {
            return Ok(None);
        };
        let event = match next {
            Ok(event) => event,
            Err(e) => {
                let error = Error::from(e);
                self.ending = Some(Err(error.clone()));
                return Err(error);
            }
        };
        match event {
            Some(CommandEvent::Stdout(chunk)) => Ok(Some(Received::Output(Stream::Stdout, chunk))),
            Some(CommandEvent::Stderr(chunk)) => Ok(Some(Received::Output(Stream::Stderr, chunk))),
            Some(CommandEvent::Exit(exit)) => {
                self.ending = Some(Ok(exit));
                Ok(Some(Received::End(exit)))
            }
            // next_event returns None only after it returned the end,
            // which `self.ending` caught above.
            None => Err(Error::invalid(
                "the command's end was already returned to an earlier wait",
            )),
        }
    }
}
