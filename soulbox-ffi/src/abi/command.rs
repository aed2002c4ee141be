//! `soulbox_run`, `soulbox_exec`, `soulbox_command_*`,
//! `soulbox_output_free` and `soulbox_chunk_free`.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use super::sandbox::with_sandbox_out;
use super::{
    c_argv, c_buffer, c_os_string, free_box, guard, guard_value, handle, optional_handle,
    with_next_item, Out,
};
use crate::command::{self, Command, OnOutput, Program};
use crate::error::{Error, Result};
use crate::options::RunOptions;
use crate::output::{Chunk, ChunkBlock, Output, OutputBlock, Stream};
use crate::sandbox::Sandbox;

/// Receives a chunk of a command's output while `soulbox_run`,
/// `soulbox_exec` or `soulbox_command_wait` is in progress. `stream` is
/// SOULBOX_STREAM_STDOUT or SOULBOX_STREAM_STDERR. `data` points to `len`
/// bytes (at most 65,536) that stay valid only until the callback
/// returns. Chunks of one stream arrive in order, but stdout and stderr
/// are separate pipes, so their relative order is not kept. A multibyte
/// character may be split across two chunks. `user_data` is the pointer
/// the caller passed along with the callback.
///
/// The callback runs on the thread that made the call, never on another
/// thread and never twice at once. It may call other SoulBox functions,
/// for example `soulbox_command_send_stdin` on the command it is reading,
/// but must not free the command or wait for it again, and must not
/// leave by longjmp or a C++ exception.
pub type OutputCallback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, stream: Stream, data: *const u8, len: usize),
>;

/// Runs `body` with the C callback as a Rust closure.
fn with_callback<R>(
    on_output: OutputCallback,
    user_data: *mut c_void,
    body: impl FnOnce(OnOutput<'_>) -> R,
) -> R {
    let Some(function) = on_output else {
        return body(None);
    };
    let mut forward = |stream: Stream, chunk: &[u8]| {
        // SAFETY: the header requires `on_output` to be a function of this
        // signature that may be called with the caller's `user_data` until
        // the call returns. `chunk` is valid for `chunk.len()` bytes while
        // the callback runs.
        unsafe { function(user_data, stream, chunk.as_ptr(), chunk.len()) }
    };
    body(Some(&mut forward))
}

/// Runs `body` on the command `command` points to.
pub(super) fn with_command(
    function: &'static str,
    command: *const Command,
    body: impl FnOnce(&Command) -> Result<()>,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires NULL or a live command handle that
        // no thread frees during the call.
        let command = unsafe { handle(command, "command") }?;
        body(command)
    })
}

/// Hands a finished command's output to C.
fn into_output(block: Box<OutputBlock>) -> *mut Output {
    Box::into_raw(block).cast::<Output>()
}

/// Runs `program` to its end, giving its output to `on_output` when the
/// callback is not NULL: the shared body of soulbox_run and soulbox_exec.
fn run_to_end(
    sandbox: &Sandbox,
    program: Program,
    options: Option<&RunOptions>,
    on_output: OutputCallback,
    user_data: *mut c_void,
) -> Result<*mut Output> {
    with_callback(on_output, user_data, |on_output| {
        command::run(sandbox, &program, options, on_output)
    })
    .map(into_output)
}

/// Runs a command line through the sandbox's shell (`/bin/bash -l -c`, or
/// `/bin/sh -c` where there is no bash) and waits for its end, as E2B's
/// `commands.run`. `command_line` may hold any bytes but NUL. `options`
/// may be NULL for the defaults, including a 60 s timeout.
///
/// Output goes to `on_output` as it arrives when the callback is not NULL,
/// and is then not collected; otherwise it is collected into the result.
/// On success stores the result in `*out`, which the caller frees with
/// `soulbox_output_free`; on failure stores NULL. A non-zero exit, a
/// signal or a timeout is not an error: the result reports it.
///
/// Errors: INVALID_ARGUMENT for a bad user, working directory or
/// environment variable, in which case nothing ran; SPAWN when the shell
/// cannot be executed; SANDBOX_NOT_RUNNING when the sandbox has ended or
/// ends during the call.
#[no_mangle]
pub extern "C" fn soulbox_run(
    sandbox: *mut Sandbox,
    command_line: *const c_char,
    options: *const RunOptions,
    on_output: OutputCallback,
    user_data: *mut c_void,
    out: *mut *mut Output,
) -> *mut Error {
    with_sandbox_out("soulbox_run", sandbox, out, |sandbox| {
        // SAFETY: the header requires `command_line` to be a
        // NUL-terminated string and `options` NULL or live options.
        let (line, options) = unsafe {
            (
                c_os_string(command_line, "command_line")?,
                optional_handle(options),
            )
        };
        run_to_end(sandbox, Program::Shell(line), options, on_output, user_data)
    })
}

/// Runs a program with arguments, without a shell, and waits for its end.
/// `argv` is a NULL-terminated array, as for execv: `argv[0]` is the
/// program, looked up in PATH unless it contains a '/'. Otherwise as
/// `soulbox_run`; a program that does not exist fails with SPAWN and
/// errno ENOENT.
#[no_mangle]
pub extern "C" fn soulbox_exec(
    sandbox: *mut Sandbox,
    argv: *const *const c_char,
    options: *const RunOptions,
    on_output: OutputCallback,
    user_data: *mut c_void,
    out: *mut *mut Output,
) -> *mut Error {
    with_sandbox_out("soulbox_exec", sandbox, out, |sandbox| {
        // SAFETY: the header requires `argv` to be a NULL-terminated array
        // of NUL-terminated strings and `options` NULL or live options.
        let (argv, options) = unsafe { (c_argv(argv)?, optional_handle(options)) };
        run_to_end(sandbox, Program::Argv(argv), options, on_output, user_data)
    })
}

/// Starts a command line through the sandbox's shell in the background
/// and returns as soon as it runs. It has no timeout unless `options`
/// sets one. On success stores a new handle in `*out`, which the caller
/// frees with `soulbox_command_free`; on failure stores NULL.
///
/// Until a wait reads it, its output waits in a queue of at most 1 MiB per
/// handle. When the queue is full, the command blocks on its next write,
/// so output is never lost and never piles up.
///
/// Errors: as `soulbox_run`.
#[no_mangle]
pub extern "C" fn soulbox_command_start(
    sandbox: *mut Sandbox,
    command_line: *const c_char,
    options: *const RunOptions,
    out: *mut *mut Command,
) -> *mut Error {
    with_sandbox_out("soulbox_command_start", sandbox, out, |sandbox| {
        // SAFETY: as in soulbox_run.
        let (line, options) = unsafe {
            (
                c_os_string(command_line, "command_line")?,
                optional_handle(options),
            )
        };
        Command::start(sandbox, &Program::Shell(line), options).map(Box::into_raw)
    })
}

/// Starts a program with arguments, without a shell, in the background.
/// `argv` is as for `soulbox_exec`; otherwise as `soulbox_command_start`.
#[no_mangle]
pub extern "C" fn soulbox_command_start_argv(
    sandbox: *mut Sandbox,
    argv: *const *const c_char,
    options: *const RunOptions,
    out: *mut *mut Command,
) -> *mut Error {
    with_sandbox_out("soulbox_command_start_argv", sandbox, out, |sandbox| {
        // SAFETY: as in soulbox_exec.
        let (argv, options) = unsafe { (c_argv(argv)?, optional_handle(options)) };
        Command::start(sandbox, &Program::Argv(argv), options).map(Box::into_raw)
    })
}

/// Returns the pid of the command's first process inside the sandbox, or
/// 0 for NULL.
#[no_mangle]
pub extern "C" fn soulbox_command_pid(command: *const Command) -> u32 {
    guard_value(0, || {
        // SAFETY: the header requires NULL or a live handle.
        unsafe { optional_handle(command) }.map_or(0, Command::pid)
    })
}

/// Waits for the command's end, with output as in `soulbox_run`: to
/// `on_output` when it is not NULL, otherwise collected into the result.
/// The output starts where the previous wait on this handle stopped; a
/// wait after the end returns the same exit with no output. On success
/// stores the result in `*out`, which the caller frees with
/// `soulbox_output_free`; on failure stores NULL.
///
/// One thread at a time may wait on a command; a second wait or read while
/// one is in progress fails at once with INVALID_ARGUMENT. Other threads
/// may meanwhile call `soulbox_command_kill`, `soulbox_command_signal` and
/// `soulbox_command_send_stdin` on it.
///
/// Errors: SANDBOX_NOT_RUNNING when the sandbox ended before the command;
/// PROTOCOL when code running as root inside killed the command's
/// supervisor, so its exit is unknown.
#[no_mangle]
pub extern "C" fn soulbox_command_wait(
    command: *mut Command,
    on_output: OutputCallback,
    user_data: *mut c_void,
    out: *mut *mut Output,
) -> *mut Error {
    guard("soulbox_command_wait", || {
        // SAFETY: the header requires `out` to be NULL or writable.
        let out = unsafe { Out::new(out, "out", ptr::null_mut()) }?;
        // SAFETY: the header requires NULL or a live command handle that
        // no thread frees during the call.
        let command = unsafe { handle(command, "command") }?;
        let block = with_callback(on_output, user_data, |on_output| command.wait(on_output))?;
        out.set(into_output(block));
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds for the next chunk of the
/// command's output: a negative value waits without limit and 0 only
/// takes output that is already there. Stores the chunk in `*out`, which
/// the caller frees with `soulbox_chunk_free`, and false in `*ended`. When
/// no output came in time, stores NULL and false. Once the command has
/// ended and all its output was read, stores NULL and true at once; then
/// `soulbox_command_wait` returns its exit without further output.
///
/// Reads and waits take the output from the same place: each chunk goes
/// to one of them. One thread at a time may read or wait; a second call
/// while one is in progress fails at once with INVALID_ARGUMENT.
///
/// Errors: as `soulbox_command_wait`, and each read after such an error
/// returns it again.
#[no_mangle]
pub extern "C" fn soulbox_command_read(
    command: *mut Command,
    timeout_ms: i64,
    ended: *mut bool,
    out: *mut *mut Chunk,
) -> *mut Error {
    let handle = (command.cast_const(), "command");
    with_next_item(
        "soulbox_command_read",
        handle,
        timeout_ms,
        ended,
        out,
        Command::read,
    )
}

/// Writes `len` bytes from `data` to the command's stdin, blocking while
/// its pipe is full. `data` may be NULL when `len` is 0.
///
/// Errors: INVALID_ARGUMENT when the command was started without the
/// stdin option, when `soulbox_command_close_stdin` closed it, or when no
/// process reads the pipe any more: the command closed its stdin or exited
/// and left no process that has it open, or the sandbox ended. Input to a
/// PTY session fails with INVALID_ARGUMENT once its shell has exited, and
/// with SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_command_send_stdin(
    command: *mut Command,
    data: *const u8,
    len: usize,
) -> *mut Error {
    with_command("soulbox_command_send_stdin", command, |command| {
        // SAFETY: the header requires `data` to hold `len` readable bytes.
        let data = unsafe { c_buffer(data, len, "data") }?;
        command.send_stdin(data)
    })
}

/// Closes the command's stdin, so that it reads end of file.
///
/// Errors: INVALID_ARGUMENT when the command has no open stdin.
#[no_mangle]
pub extern "C" fn soulbox_command_close_stdin(command: *mut Command) -> *mut Error {
    with_command("soulbox_command_close_stdin", command, Command::close_stdin)
}

/// Sends `signal` (1 to 64, such as SIGTERM) to the command's first
/// process.
///
/// Errors: INVALID_ARGUMENT for a number outside 1 to 64;
/// SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_command_signal(command: *mut Command, signal: c_int) -> *mut Error {
    with_command("soulbox_command_signal", command, |command| {
        command.signal(signal)
    })
}

/// Kills the command's first process and every process it started,
/// however they detached (new sessions, double forks). A wait in progress
/// then returns with `signal` 9.
///
/// Errors: SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_command_kill(command: *mut Command) -> *mut Error {
    with_command("soulbox_command_kill", command, Command::kill)
}

/// Frees the handle. The command keeps running until it ends, its
/// timeout passes or the sandbox ends; its later output is read and
/// discarded unless another handle from `soulbox_commands_connect`
/// receives it. NULL is ignored.
///
/// No other thread may be in a call on the handle: a wait or read in
/// progress would use freed memory. End such a call first, for example
/// with `soulbox_command_kill`, and free the handle after it returned.
#[no_mangle]
pub extern "C" fn soulbox_command_free(command: *mut Command) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a command handle of this
        // library that was not freed yet.
        unsafe { free_box(command) }
    });
}

/// Frees a result of `soulbox_run`, `soulbox_exec` or
/// `soulbox_command_wait`, with the buffers it points to. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_output_free(output: *mut Output) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a result of this library
        // that was not freed yet. Each result is the first field of a boxed
        // OutputBlock, at offset 0 because OutputBlock is repr(C).
        unsafe { free_box(output.cast::<OutputBlock>()) }
    });
}

/// Frees a chunk from `soulbox_command_read` with its bytes. NULL is
/// ignored.
#[no_mangle]
pub extern "C" fn soulbox_chunk_free(chunk: *mut Chunk) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a chunk of this library that
        // was not freed yet. Each chunk is the first field of a boxed
        // ChunkBlock, at offset 0 because ChunkBlock is repr(C).
        unsafe { free_box(chunk.cast::<ChunkBlock>()) }
    });
}
