//! `soulbox_sandbox_*`.

use std::ffi::c_char;
use std::ptr;

use super::{c_str, free_box, guard, guard_value, handle, optional_handle, Out};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::sandbox::{self, Sandbox};

/// Runs `body` on the sandbox `sandbox` points to and stores the object
/// it returns in `out`. `out` is checked and cleared first, so it holds
/// NULL whenever the call fails, even for a NULL `sandbox`.
pub(super) fn with_sandbox_out<T>(
    function: &'static str,
    sandbox: *const Sandbox,
    out: *mut *mut T,
    body: impl FnOnce(&Sandbox) -> Result<*mut T>,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires `out` to be NULL or writable.
        let out = unsafe { Out::new(out, "out", ptr::null_mut()) }?;
        // SAFETY: the header requires NULL or a live handle from
        // soulbox_sandbox_create that no thread frees during the call.
        let sandbox = unsafe { handle(sandbox, "sandbox") }?;
        out.set(body(sandbox)?);
        Ok(())
    })
}

/// Runs `body` on the sandbox `sandbox` points to.
pub(super) fn with_sandbox(
    function: &'static str,
    sandbox: *const Sandbox,
    body: impl FnOnce(&Sandbox) -> Result<()>,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires NULL or a live handle from
        // soulbox_sandbox_create that no thread frees during the call.
        let sandbox = unsafe { handle(sandbox, "sandbox") }?;
        body(sandbox)
    })
}

/// Creates a sandbox and waits until it accepts commands, typically a few
/// milliseconds. `options` may be NULL for the defaults; the call does
/// not keep it. On success stores a new handle in `*out`, which the
/// caller frees with `soulbox_sandbox_free`; on failure stores NULL, and
/// nothing is left behind. Needs root, or unprivileged user namespaces
/// for a rootless sandbox.
///
/// Errors: INVALID_ARGUMENT for an option out of range (the message names
/// it); SETUP, CGROUP, TEMPLATE or OS when the host lacks a kernel
/// feature or permission.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_create(
    options: *const Options,
    out: *mut *mut Sandbox,
) -> *mut Error {
    guard("soulbox_sandbox_create", || {
        // SAFETY: the header requires `out` to be NULL or writable, and
        // `options` to be NULL or live options.
        let (out, options) = unsafe {
            (
                Out::new(out, "out", ptr::null_mut())?,
                optional_handle(options),
            )
        };
        out.set(Box::into_raw(Sandbox::create(options)?));
        Ok(())
    })
}

/// Connects to a running sandbox by its id, for example one that another
/// process created. Not implemented yet: always fails with UNSUPPORTED
/// and stores NULL in `*out`.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_connect(id: *const c_char, out: *mut *mut Sandbox) -> *mut Error {
    guard("soulbox_sandbox_connect", || {
        // SAFETY: the header requires `out` to be NULL or writable, and
        // `id` a NUL-terminated string.
        let (out, id) = unsafe { (Out::new(out, "out", ptr::null_mut())?, c_str(id, "id")?) };
        out.set(Box::into_raw(sandbox::connect(id)?));
        Ok(())
    })
}

/// Kills the sandbox with this id, wherever it was created, and stores in
/// `*was_running` (which may be NULL) whether it was running. Not
/// implemented yet: always fails with UNSUPPORTED.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_kill_id(id: *const c_char, was_running: *mut bool) -> *mut Error {
    guard("soulbox_sandbox_kill_id", || {
        // SAFETY: the header requires `was_running` to be NULL or
        // writable, and `id` a NUL-terminated string.
        let (out, id) = unsafe { (Out::optional(was_running, false), c_str(id, "id")?) };
        let running = sandbox::kill_id(id)?;
        if let Some(out) = out {
            out.set(running);
        }
        Ok(())
    })
}

/// Returns the sandbox's id, which is also its hostname: a string that
/// belongs to `sandbox` and stays valid until `soulbox_sandbox_free`.
/// Returns NULL for a NULL `sandbox`.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_id(sandbox: *const Sandbox) -> *const c_char {
    guard_value(ptr::null(), || {
        // SAFETY: the header requires NULL or a live handle.
        unsafe { optional_handle(sandbox) }.map_or(ptr::null(), |s| s.id().as_ptr())
    })
}

/// Returns whether the sandbox is running: not killed, and its PID 1 has
/// not exited (as it does at the sandbox's timeout). False for NULL.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_is_running(sandbox: *const Sandbox) -> bool {
    guard_value(false, || {
        // SAFETY: the header requires NULL or a live handle.
        unsafe { optional_handle(sandbox) }.is_some_and(Sandbox::is_running)
    })
}

/// Changes the sandbox's remaining lifetime to `ms` milliseconds from
/// now; 0 removes the limit.
///
/// Errors: SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_set_timeout_ms(sandbox: *mut Sandbox, ms: u64) -> *mut Error {
    with_sandbox("soulbox_sandbox_set_timeout_ms", sandbox, |sandbox| {
        sandbox.set_timeout_ms(ms)
    })
}

/// Kills every process of the sandbox and removes its cgroups before
/// returning. Calling it again does nothing. The handle stays valid:
/// commands, file calls and timeout changes on it then fail with
/// SANDBOX_NOT_RUNNING, and it still has to be freed with
/// `soulbox_sandbox_free`.
///
/// Errors: CGROUP if a cgroup directory could not be removed.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_kill(sandbox: *mut Sandbox) -> *mut Error {
    with_sandbox("soulbox_sandbox_kill", sandbox, Sandbox::kill)
}

/// Kills the sandbox, as `soulbox_sandbox_kill` does, and frees the
/// handle; if an output callback frees the sandbox that its `soulbox_run`
/// uses, the kill waits until that call returns. Commands started in the
/// sandbox stay valid handles whose calls then fail with
/// SANDBOX_NOT_RUNNING; they still have to be freed. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_free(sandbox: *mut Sandbox) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a handle from
        // soulbox_sandbox_create that was not freed yet.
        unsafe { free_box(sandbox) }
    });
}
