//! `soulbox_sandbox_*`.

use std::ffi::c_char;
use std::ptr;

use soulbox_core::ListQuery;

use super::{c_buffer, c_str, free_box, guard, guard_value, handle, optional_handle, Out};
use crate::error::{Error, Result};
use crate::info::{
    InfoBlock, KeyValue, ListBlock, Metrics, SandboxInfo, SandboxList, SandboxState,
};
use crate::options::Options;
use crate::output::Bytes;
use crate::sandbox::Sandbox;

/// Runs `body` on the sandbox `sandbox` points to and stores the value it
/// returns in the out-parameter `out`, named `out_name` in the header.
/// `out` is checked and set to `cleared` first, so it contains `cleared`
/// whenever the call fails, even for a NULL `sandbox`.
pub(super) fn with_sandbox_value<T: Copy>(
    function: &'static str,
    sandbox: *const Sandbox,
    (out, out_name): (*mut T, &str),
    cleared: T,
    body: impl FnOnce(&Sandbox) -> Result<T>,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires `out` to be NULL or writable.
        let out = unsafe { Out::new(out, out_name, cleared) }?;
        // SAFETY: the header requires NULL or a live handle from
        // soulbox_sandbox_create that no thread frees during the call.
        let sandbox = unsafe { handle(sandbox, "sandbox") }?;
        out.set(body(sandbox)?);
        Ok(())
    })
}

/// As [`with_sandbox_value`], for an object that `out` receives.
pub(super) fn with_sandbox_out<T>(
    function: &'static str,
    sandbox: *const Sandbox,
    out: *mut *mut T,
    body: impl FnOnce(&Sandbox) -> Result<*mut T>,
) -> *mut Error {
    with_sandbox_value(function, sandbox, (out, "out"), ptr::null_mut(), body)
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

/// Runs `body` on the sandbox `sandbox` points to and stores the flag it
/// returns in `flag`, which may be NULL. The flag is cleared first.
pub(super) fn with_sandbox_flag(
    function: &'static str,
    sandbox: *const Sandbox,
    flag: *mut bool,
    body: impl FnOnce(&Sandbox) -> Result<bool>,
) -> *mut Error {
    with_sandbox_optional(function, sandbox, flag, false, body, |value| value)
}

/// Runs `body` on the sandbox `sandbox` points to and stores the object it
/// returns in `out`, which may be NULL; the object is then freed. `B` is a
/// `repr(C)` block whose first field is the `P` that C reads. `out` is
/// cleared first.
pub(super) fn with_sandbox_optional_out<B, P>(
    function: &'static str,
    sandbox: *const Sandbox,
    out: *mut *mut P,
    body: impl FnOnce(&Sandbox) -> Result<Box<B>>,
) -> *mut Error {
    let into_c = |block: Box<B>| Box::into_raw(block).cast::<P>();
    with_sandbox_optional(function, sandbox, out, ptr::null_mut(), body, into_c)
}

/// Runs `body` on the sandbox `sandbox` points to and, unless `out` is
/// NULL, stores what `into_c` makes of its result in `out`, which is set
/// to `cleared` first.
fn with_sandbox_optional<V, T: Copy>(
    function: &'static str,
    sandbox: *const Sandbox,
    out: *mut T,
    cleared: T,
    body: impl FnOnce(&Sandbox) -> Result<V>,
    into_c: impl FnOnce(V) -> T,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires `out` to be NULL or writable.
        let out = unsafe { Out::optional(out, cleared) };
        // SAFETY: as in with_sandbox.
        let sandbox = unsafe { handle(sandbox, "sandbox") }?;
        let value = body(sandbox)?;
        if let Some(out) = out {
            out.set(into_c(value));
        }
        Ok(())
    })
}

/// Creates a sandbox and waits until it accepts commands, typically a few
/// milliseconds. `options` may be NULL for the defaults; the call does
/// not keep it. On success stores a new handle in `*out`, which the
/// caller frees with `soulbox_sandbox_free`; on failure stores NULL, and
/// nothing is left behind. The sandbox runs until its timeout (default
/// 300 s) or a kill, also after its handle is freed, unless
/// `soulbox_options_set_kill_on_drop` says otherwise. Needs root, or
/// unprivileged user namespaces for a rootless sandbox.
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

/// Connects to a running or paused sandbox of this user by its id, for
/// example one that another process created; a paused sandbox is
/// resumed. On success stores a new handle in `*out`, which the caller
/// frees with `soulbox_sandbox_free` (the sandbox keeps running); on
/// failure stores NULL.
///
/// Errors: SANDBOX_NOT_FOUND when no running or paused sandbox of this
/// user has the id.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_connect(id: *const c_char, out: *mut *mut Sandbox) -> *mut Error {
    guard("soulbox_sandbox_connect", || {
        // SAFETY: the header requires `out` to be NULL or writable, and
        // `id` a NUL-terminated string.
        let (out, id) = unsafe { (Out::new(out, "out", ptr::null_mut())?, c_str(id, "id")?) };
        out.set(Box::into_raw(Sandbox::connect(id)?));
        Ok(())
    })
}

/// Kills the sandbox with this id, running or paused, whichever process
/// created it, and stores in `*was_running` (which may be NULL) whether
/// such a sandbox existed. An id that matches no sandbox is not an error.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_kill_id(id: *const c_char, was_running: *mut bool) -> *mut Error {
    guard("soulbox_sandbox_kill_id", || {
        // SAFETY: the header requires `was_running` to be NULL or
        // writable, and `id` a NUL-terminated string.
        let (out, id) = unsafe { (Out::optional(was_running, false), c_str(id, "id")?) };
        let existed = Sandbox::kill_id(id)?;
        if let Some(out) = out {
            out.set(existed);
        }
        Ok(())
    })
}

/// Lists this user's running and paused sandboxes, oldest first, whether
/// this process created them or not. Only sandboxes whose metadata
/// contains every one of the `metadata_len` pairs in `metadata` are listed
/// (`metadata` is not read when `metadata_len` is 0, and may be NULL), and
/// only those in
/// `state` unless it is SOULBOX_SANDBOX_STATE_ANY. On success stores the
/// list in `*out`, which the caller frees with `soulbox_sandbox_info_list_free`;
/// on failure stores NULL.
///
/// Errors: INVALID_ARGUMENT for a NULL or non-UTF-8 key or value, or a
/// `state` that is not a soulbox_sandbox_state value; STATE when the
/// state directory cannot be read.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_list(
    metadata: *const KeyValue,
    metadata_len: usize,
    state: u32,
    out: *mut *mut SandboxList,
) -> *mut Error {
    guard("soulbox_sandbox_list", || {
        // SAFETY: the header requires `out` to be NULL or writable, and
        // `metadata` to hold `metadata_len` pairs.
        let (out, pairs) = unsafe {
            (
                Out::new(out, "out", ptr::null_mut())?,
                c_buffer(metadata, metadata_len, "metadata")?,
            )
        };
        let mut query = ListQuery::default();
        for (index, pair) in pairs.iter().enumerate() {
            // SAFETY: the header requires every key and value to be a
            // NUL-terminated string.
            let (key, value) = unsafe {
                (
                    c_str(pair.key, &format!("metadata[{index}].key"))?,
                    c_str(pair.value, &format!("metadata[{index}].value"))?,
                )
            };
            query = query.metadata(key, value);
        }
        query.state = SandboxState::from_filter(state).ok_or_else(|| {
            Error::invalid(format!(
                "state {state} is not a soulbox_sandbox_state; pass \
                 SOULBOX_SANDBOX_STATE_ANY, _RUNNING or _PAUSED"
            ))
        })?;
        out.set(Box::into_raw(Sandbox::list(&query)?).cast::<SandboxList>());
        Ok(())
    })
}

/// Frees a list from `soulbox_sandbox_list` with everything it points to.
/// NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_info_list_free(list: *mut SandboxList) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a list of this library that
        // was not freed yet. Each list is the first field of a boxed
        // ListBlock, at offset 0 because ListBlock is repr(C).
        unsafe { free_box(list.cast::<ListBlock>()) }
    });
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

/// Freezes every process of the sandbox and stops its timeout clock, and
/// stores in `*paused` (which may be NULL) false when it was already
/// paused. A paused sandbox keeps its memory and files, and uses no CPU,
/// until `soulbox_sandbox_resume`, `soulbox_sandbox_connect` or a kill.
///
/// Errors: UNSUPPORTED without a writable cgroup v2 directory (a rootless
/// sandbox without a delegated cgroup); SANDBOX_NOT_RUNNING once the
/// sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_pause(sandbox: *mut Sandbox, paused: *mut bool) -> *mut Error {
    with_sandbox_flag("soulbox_sandbox_pause", sandbox, paused, Sandbox::pause)
}

/// Thaws a paused sandbox, whose timeout clock goes on from where it
/// stopped, and stores in `*resumed` (which may be NULL) false when it was
/// not paused.
///
/// Errors: SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_resume(sandbox: *mut Sandbox, resumed: *mut bool) -> *mut Error {
    with_sandbox_flag("soulbox_sandbox_resume", sandbox, resumed, Sandbox::resume)
}

/// Stores the sandbox's id, template, metadata, environment, times, state
/// and limits in `*out`, which the caller frees with
/// `soulbox_sandbox_info_free`; on failure stores NULL.
///
/// Errors: SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_get_info(
    sandbox: *mut Sandbox,
    out: *mut *mut SandboxInfo,
) -> *mut Error {
    with_sandbox_out("soulbox_sandbox_get_info", sandbox, out, |sandbox| {
        Ok(Box::into_raw(sandbox.info()?).cast::<SandboxInfo>())
    })
}

/// Frees what `soulbox_sandbox_get_info` returned, with everything it
/// points to. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_info_free(info: *mut SandboxInfo) {
    guard_value((), || {
        // SAFETY: the header requires NULL or an info of this library that
        // was not freed yet. Each one is the first field of a boxed
        // InfoBlock, at offset 0 because InfoBlock is repr(C).
        unsafe { free_box(info.cast::<InfoBlock>()) }
    });
}

/// Stores the sandbox's CPU, memory and disk use in `*out`, which the
/// caller frees with `soulbox_metrics_free`; on failure stores NULL.
///
/// Errors: SANDBOX_NOT_RUNNING once the sandbox has ended.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_metrics(
    sandbox: *mut Sandbox,
    out: *mut *mut Metrics,
) -> *mut Error {
    with_sandbox_out("soulbox_sandbox_metrics", sandbox, out, |sandbox| {
        Ok(Box::into_raw(sandbox.metrics()?))
    })
}

/// Frees what `soulbox_sandbox_metrics` returned. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_metrics_free(metrics: *mut Metrics) {
    guard_value((), || {
        // SAFETY: the header requires NULL or metrics of this library that
        // were not freed yet; each is a `Box<Metrics>`.
        unsafe { free_box(metrics) }
    });
}

/// Forwards the TCP port `port` of the sandbox's loopback interface to
/// the host, as E2B's `get_host`. On success stores in `*out` the address
/// to connect to, such as "127.0.0.1:40123", as NUL-terminated text. The
/// caller frees it with `soulbox_bytes_free`. On failure stores NULL.
///
/// The first call for a port starts listening on an unused port of the
/// host's 127.0.0.1, and later calls through this handle return the same
/// address. Each connection to it is forwarded to `port` on the
/// sandbox's loopback, where a server may listen on 127.0.0.1, ::1 or
/// every address. A connection that finds nothing listening there is
/// reset. The forwarding runs on the library's background threads, so it
/// keeps working between calls, until the sandbox ends or this handle is
/// freed with `soulbox_sandbox_free`. The sandbox keeps its
/// loopback-only network. Any process on the host can connect to the
/// address, as to any port on the host's loopback interface.
///
/// Errors: INVALID_ARGUMENT for port 0 or a NULL argument;
/// SANDBOX_NOT_RUNNING once the sandbox has ended; OS when the host
/// cannot listen.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_get_host(
    sandbox: *mut Sandbox,
    port: u16,
    out: *mut *mut Bytes,
) -> *mut Error {
    with_sandbox_out("soulbox_sandbox_get_host", sandbox, out, |sandbox| {
        Ok(Box::into_raw(sandbox.get_host(port)?).cast::<Bytes>())
    })
}

/// Kills every process of the sandbox and removes its cgroups and state
/// entry before returning. Calling it again does nothing. The handle stays valid:
/// commands, file calls and timeout changes on it then fail with
/// SANDBOX_NOT_RUNNING, and it still has to be freed with
/// `soulbox_sandbox_free`.
///
/// Errors: CGROUP if a cgroup directory could not be removed.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_kill(sandbox: *mut Sandbox) -> *mut Error {
    with_sandbox("soulbox_sandbox_kill", sandbox, Sandbox::kill)
}

/// Frees the handle. The sandbox keeps running until its timeout or a
/// kill, and `soulbox_sandbox_connect` reaches it again. Only a sandbox
/// created with `soulbox_options_set_kill_on_drop` is killed here, and
/// only by freeing the handle that `soulbox_sandbox_create` returned. If
/// an output callback frees that handle during `soulbox_run`, the kill
/// waits until that call returns. Commands and watchers started through
/// the handle stay valid and still have to be freed. When this call kills
/// the sandbox, calls in other threads that wait for a running command's
/// output or end, or for a watcher's next event, return
/// SANDBOX_NOT_RUNNING. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_sandbox_free(sandbox: *mut Sandbox) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a handle from
        // soulbox_sandbox_create that was not freed yet.
        unsafe { free_box(sandbox) }
    });
}
