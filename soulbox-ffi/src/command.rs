//! Commands: `soulbox_run`, `soulbox_exec` and the background
//! `soulbox_command`.

use std::ffi::OsString;
use std::sync::{Mutex, TryLockError};

use soulbox_core::{
    CommandController, CommandEvent, CommandExit, CommandHandle, Sandbox as CoreSandbox,
    DEFAULT_COMMAND_TIMEOUT,
};

use crate::error::{Error, Result};
use crate::options::RunOptions;
use crate::output::{OutputBlock, Stream};
use crate::runtime;
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

/// A command started in the background. Created by
/// `soulbox_command_start` and freed with `soulbox_command_free`.
#[derive(Debug)]
pub struct Command {
    controller: CommandController,
    /// Taken by the one thread that waits; see [`Command::wait`].
    events: Mutex<Events>,
}

#[derive(Debug)]
struct Events {
    handle: CommandHandle,
    /// The end, once a wait has seen it, for waits after that.
    ending: Option<Result<CommandExit>>,
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
    let Some(options) = options else {
        return Ok(command);
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
    command.stdin(options.stdin);
    Ok(command)
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
        Ok(Box::new(Self {
            controller: handle.controller(),
            events: Mutex::new(Events {
                handle,
                ending: None,
            }),
        }))
    }

    pub fn pid(&self) -> u32 {
        self.controller.pid()
    }

    /// Waits for the command's end. One thread at a time: a second
    /// concurrent wait fails at once instead of blocking until the first
    /// one ends.
    pub fn wait(&self, on_output: OnOutput<'_>) -> Result<Box<OutputBlock>> {
        let mut events = match self.events.try_lock() {
            Ok(events) => events,
            // A panic in an earlier wait was caught and reported; the
            // handle itself is still consistent.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::invalid(format!(
                    "command {} is already being waited for by soulbox_command_wait in \
                     another thread or in the output callback; wait in one place only",
                    self.pid()
                )))
            }
        };
        events.drain(on_output)
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
}

impl Events {
    /// Receives events until the command's end, giving output to
    /// `on_output` or collecting it when there is no callback. The callback
    /// runs between two blocking waits for the next event, never inside
    /// one, so it may call SoulBox again.
    fn drain(&mut self, mut on_output: OnOutput<'_>) -> Result<Box<OutputBlock>> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(ending) = &self.ending {
            return ending
                .clone()
                .map(|exit| OutputBlock::new(exit, stdout, stderr));
        }
        loop {
            let event = match runtime::block_on(self.handle.next_event())? {
                Ok(event) => event,
                Err(e) => {
                    let error = Error::from(e);
                    self.ending = Some(Err(error.clone()));
                    return Err(error);
                }
            };
            let (stream, chunk, collected) = match event {
                Some(CommandEvent::Stdout(chunk)) => (Stream::Stdout, chunk, &mut stdout),
                Some(CommandEvent::Stderr(chunk)) => (Stream::Stderr, chunk, &mut stderr),
                Some(CommandEvent::Exit(exit)) => {
                    self.ending = Some(Ok(exit));
                    return Ok(OutputBlock::new(exit, stdout, stderr));
                }
                // next_event returns None only after it returned the end,
                // which `self.ending` caught above.
                None => {
                    return Err(Error::invalid(
                        "the command's end was already returned to an earlier wait",
                    ))
                }
            };
            match on_output.as_mut() {
                Some(callback) => callback(stream, &chunk),
                None => collected.extend_from_slice(&chunk),
            }
        }
    }
}
