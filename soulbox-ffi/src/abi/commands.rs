//! `soulbox_commands_*`: the running commands of a sandbox, and
//! `soulbox_process_info_list_free`.

use std::ffi::c_char;

use soulbox_core::Selector;

use super::sandbox::with_sandbox_out;
use super::{c_str, free_box, guard_value};
use crate::command::{self, Command};
use crate::error::Error;
use crate::processes::{ProcessList, ProcessListBlock};
use crate::sandbox::Sandbox;

/// Lists the running commands started through this sandbox handle,
/// PTY sessions included, ordered by pid. A command leaves the list when
/// its first process exits. On success stores the list in `*out`, which
/// the caller frees with `soulbox_process_info_list_free`; on failure
/// stores NULL.
///
/// Each handle has its own list: commands started through another handle
/// of the same sandbox (from `soulbox_sandbox_connect`, or in another
/// process) are not listed, because their output goes only to that
/// handle.
#[no_mangle]
pub extern "C" fn soulbox_commands_list(
    sandbox: *mut Sandbox,
    out: *mut *mut ProcessList,
) -> *mut Error {
    with_sandbox_out("soulbox_commands_list", sandbox, out, |sandbox| {
        Ok(Box::into_raw(command::list(sandbox)).cast::<ProcessList>())
    })
}

/// Attaches a new handle to the running command whose first process has
/// pid `pid` inside the sandbox, as `soulbox_commands_list` shows it. The
/// handle receives the output written from now on and the command's end,
/// and works with every `soulbox_command_*` function. On success stores it
/// in `*out`, which the caller frees with `soulbox_command_free` (the
/// command keeps running); on failure stores NULL.
///
/// Every handle of a command gets all of its output, and a handle's queue
/// holds at most 1 MiB: while one handle is not read, the command blocks
/// once that queue is full. Free handles whose output is not wanted.
///
/// Errors: NOT_FOUND if no command that `soulbox_commands_list` lists for
/// this handle has the pid.
#[no_mangle]
pub extern "C" fn soulbox_commands_connect(
    sandbox: *mut Sandbox,
    pid: u32,
    out: *mut *mut Command,
) -> *mut Error {
    with_sandbox_out("soulbox_commands_connect", sandbox, out, |sandbox| {
        Command::connect(sandbox, Selector::Pid(pid)).map(Box::into_raw)
    })
}

/// As `soulbox_commands_connect`, for the running command with the tag
/// `tag` (UTF-8) given by `soulbox_run_options_set_tag`.
///
/// Errors: NOT_FOUND if no command that `soulbox_commands_list` lists for
/// this handle has the tag.
#[no_mangle]
pub extern "C" fn soulbox_commands_connect_tag(
    sandbox: *mut Sandbox,
    tag: *const c_char,
    out: *mut *mut Command,
) -> *mut Error {
    with_sandbox_out("soulbox_commands_connect_tag", sandbox, out, |sandbox| {
        // SAFETY: the header requires `tag` to be a NUL-terminated string.
        let tag = unsafe { c_str(tag, "tag") }?;
        Command::connect(sandbox, Selector::Tag(tag.to_string())).map(Box::into_raw)
    })
}

/// Frees a list from `soulbox_commands_list` with everything it points
/// to. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_process_info_list_free(list: *mut ProcessList) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a list of this library that
        // was not freed yet. Each list is the first field of a boxed
        // ProcessListBlock, at offset 0 because ProcessListBlock is
        // repr(C).
        unsafe { free_box(list.cast::<ProcessListBlock>()) }
    });
}
