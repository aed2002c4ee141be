//! `soulbox_pty_create` and `soulbox_command_resize`: interactive shells on
//! a pseudo-terminal.

use super::command::with_command;
use super::optional_handle;
use super::sandbox::with_sandbox_out;
use crate::command::Command;
use crate::error::Error;
use crate::options::RunOptions;
use crate::sandbox::Sandbox;

/// Starts the sandbox's interactive login shell (`/bin/bash -i -l`, or
/// `/bin/sh -i` where there is no bash, with TERM=xterm-256color) on a new
/// pseudo-terminal of `rows` x `cols`, as E2B's `pty.create`. The PTY
/// comes from the sandbox's own devpts, so sandboxed code never gets the
/// caller's terminal. `options` may be NULL; its working directory, user,
/// environment variables and timeout apply (no timeout unless set). On
/// success stores a new command handle in `*out`, which the caller frees
/// with `soulbox_command_free`; on failure stores NULL.
///
/// The session works through the command functions:
/// `soulbox_command_send_stdin` types into it, `soulbox_command_read`
/// reads what it writes (all of it as SOULBOX_STREAM_STDOUT),
/// `soulbox_command_resize` resizes it, and `soulbox_command_wait` and
/// `soulbox_command_kill` end it. Its output waits in a queue of at most
/// 1 MiB until it is read, as for `soulbox_command_start`.
///
/// Errors: INVALID_ARGUMENT for a zero `rows` or `cols`, or a bad user,
/// working directory or environment variable; otherwise as
/// `soulbox_command_start`.
#[no_mangle]
pub extern "C" fn soulbox_pty_create(
    sandbox: *mut Sandbox,
    rows: u16,
    cols: u16,
    options: *const RunOptions,
    out: *mut *mut Command,
) -> *mut Error {
    with_sandbox_out("soulbox_pty_create", sandbox, out, |sandbox| {
        // SAFETY: the header requires `options` to be NULL or live options.
        let options = unsafe { optional_handle(options) };
        Command::start_pty(sandbox, rows, cols, options).map(Box::into_raw)
    })
}

/// Resizes the command's pseudo-terminal to `rows` x `cols`; the kernel
/// sends the command SIGWINCH.
///
/// Errors: INVALID_ARGUMENT if the command has no PTY (it was not started
/// by `soulbox_pty_create`), a size is 0, or the session's shell has
/// exited; SANDBOX_NOT_RUNNING if the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_command_resize(
    command: *mut Command,
    rows: u16,
    cols: u16,
) -> *mut Error {
    with_command("soulbox_command_resize", command, |command| {
        command.resize(rows, cols)
    })
}
