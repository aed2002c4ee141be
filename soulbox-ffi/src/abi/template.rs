//! `soulbox_template_build`, `soulbox_template_build_with_output` and
//! `soulbox_built_template_*`.

use std::ffi::{c_char, c_void};
use std::ptr;

use super::{c_os_string, free_box, guard, guard_value, optional_c_str, optional_handle, Out};
use crate::error::{Error, Result};
use crate::template::{BuildEventKind, BuiltTemplate};

/// Receives an event of a build while `soulbox_template_build_with_output`
/// is in progress, in the order the build makes them. `kind` names the
/// event and so what `data` contains:
/// - SOULBOX_BUILD_EVENT_KIND_CACHED: the build's key, 64 hex digits. An
///   earlier build with the same inputs is reused, and no other event
///   comes.
/// - SOULBOX_BUILD_EVENT_KIND_FILE: the absolute path in the template of a
///   file or directory about to be copied in, one event for each, a
///   directory before its contents.
/// - SOULBOX_BUILD_EVENT_KIND_STEP: the command line of the `run` step that
///   starts.
/// - SOULBOX_BUILD_EVENT_KIND_STDOUT and SOULBOX_BUILD_EVENT_KIND_STDERR: a
///   chunk that the running step wrote to stdout or stderr. Chunks of one
///   stream arrive in order, but the two are separate pipes, so their
///   relative order is not kept, and a multibyte character may be split
///   across two chunks.
/// - SOULBOX_BUILD_EVENT_KIND_SAVING: nothing (`len` is 0). Every step
///   succeeded and the layer is being saved.
///
/// `data` points to `len` bytes, followed by a NUL byte that `len` does not
/// count, so text can be passed to C string functions (a step's command
/// line may itself contain a NUL, so `len` is the length to trust). The
/// bytes stay valid only until the callback returns. `data` is never NULL.
/// `user_data` is the pointer the caller passed along with the callback.
///
/// The callback runs on the thread that made the call, never on another
/// thread and never twice at once, and the build waits while it runs. It
/// may call other SoulBox functions, but must not leave by longjmp or a
/// C++ exception.
pub type BuildEventCallback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, kind: BuildEventKind, data: *const u8, len: usize),
>;

/// Builds a template from a soulbox.toml, as `soulbox template build`
/// does: runs the file's steps in a sandbox made from its `base` and keeps
/// what they wrote. `path` is the file or its folder, any bytes but NUL,
/// relative to the current directory. `name_or_null` registers the
/// template under a name, in place of the file's `name` key. A build
/// whose inputs have not changed returns at once, and
/// `soulbox_built_template_cached` is then true. Step output is discarded;
/// `soulbox_template_build_with_output` passes it on.
/// Blocks until the build ends. On success stores the result in `*out`,
/// which the caller frees with `soulbox_built_template_free`. On failure
/// stores NULL, and a failed build leaves nothing in the layer cache.
/// The template's name, or the absolute path of the file or its folder,
/// is then a template for `soulbox_options_set_template`. The build's
/// sandbox needs what `soulbox_sandbox_create` needs.
///
/// Errors: INVALID_ARGUMENT for an invalid file or name, with a message
/// that names the key. TEMPLATE when a step exits non-zero, with the step
/// and its status in the message, when a copied file changed during the
/// build, or when the layer cannot be saved. Others as
/// `soulbox_sandbox_create` returns them for the build's sandbox.
#[no_mangle]
pub extern "C" fn soulbox_template_build(
    path: *const c_char,
    name_or_null: *const c_char,
    out: *mut *mut BuiltTemplate,
) -> *mut Error {
    guard("soulbox_template_build", || {
        // SAFETY: as in build_into.
        unsafe { build_into(path, name_or_null, None, ptr::null_mut(), out) }
    })
}

/// Builds a template as `soulbox_template_build` does, and passes each
/// event of the build to `on_event` as it happens: each file copied in,
/// each step with its stdout and stderr, and the saving of the layer (see
/// `soulbox_build_event_callback`). A NULL `on_event` discards them, as
/// `soulbox_template_build` does. `user_data` is passed to every call of
/// `on_event` and is not read by SoulBox. The events come before the call
/// returns, also for a build that fails, so the output of a failed step
/// is there to show. Results and errors as `soulbox_template_build`.
#[no_mangle]
pub extern "C" fn soulbox_template_build_with_output(
    path: *const c_char,
    name_or_null: *const c_char,
    on_event: BuildEventCallback,
    user_data: *mut c_void,
    out: *mut *mut BuiltTemplate,
) -> *mut Error {
    guard("soulbox_template_build_with_output", || {
        // SAFETY: as in build_into.
        unsafe { build_into(path, name_or_null, on_event, user_data, out) }
    })
}

/// Checks the arguments, builds the template and stores the result in
/// `*out`: the shared body of soulbox_template_build and
/// soulbox_template_build_with_output.
///
/// # Safety
///
/// `out` is NULL or writable, `path` a NUL-terminated string and
/// `name_or_null` NULL or one, and `on_event` NULL or a function of its
/// signature that may be called with `user_data` until the call returns,
/// as the header requires.
unsafe fn build_into(
    path: *const c_char,
    name_or_null: *const c_char,
    on_event: BuildEventCallback,
    user_data: *mut c_void,
    out: *mut *mut BuiltTemplate,
) -> Result<()> {
    // SAFETY: as the caller guarantees.
    let (out, path, name) = unsafe {
        (
            Out::new(out, "out", ptr::null_mut())?,
            c_os_string(path, "path")?,
            optional_c_str(name_or_null, "name_or_null")?,
        )
    };
    let built = match on_event {
        Some(function) => {
            let mut forward = |kind: BuildEventKind, data: &[u8]| {
                // SAFETY: the caller guarantees that `function` may be
                // called with `user_data`. `data` is valid for
                // `data.len()` bytes, and the NUL after them, while the
                // callback runs.
                unsafe { function(user_data, kind, data.as_ptr(), data.len()) }
            };
            BuiltTemplate::build(&path, name, Some(&mut forward))?
        }
        None => BuiltTemplate::build(&path, name, None)?,
    };
    out.set(Box::into_raw(built));
    Ok(())
}

/// Runs `read` on the built template `built` points to, or returns NULL
/// for a NULL `built`.
fn read_string(
    built: *const BuiltTemplate,
    read: impl FnOnce(&BuiltTemplate) -> *const c_char,
) -> *const c_char {
    guard_value(ptr::null(), || {
        // SAFETY: the header requires NULL or a live result of
        // soulbox_template_build.
        unsafe { optional_handle(built) }.map_or(ptr::null(), read)
    })
}

/// Returns the build's key, 64 hex digits of a SHA-256. The string
/// belongs to `built` and stays valid until `soulbox_built_template_free`.
/// Returns NULL for a NULL `built`.
#[no_mangle]
pub extern "C" fn soulbox_built_template_key(built: *const BuiltTemplate) -> *const c_char {
    read_string(built, |built| built.key().as_ptr())
}

/// Returns the name the template is registered under, or NULL when the
/// build had none (and for a NULL `built`). The string belongs to `built`.
#[no_mangle]
pub extern "C" fn soulbox_built_template_name(built: *const BuiltTemplate) -> *const c_char {
    read_string(built, |built| {
        built.name().map_or(ptr::null(), |name| name.as_ptr())
    })
}

/// Returns the absolute path of the soulbox.toml the template was built
/// from. The string belongs to `built`; NULL for a NULL `built`.
#[no_mangle]
pub extern "C" fn soulbox_built_template_source(built: *const BuiltTemplate) -> *const c_char {
    read_string(built, |built| built.source().as_ptr())
}

/// Returns the path of the kept layer in the layer cache. The string
/// belongs to `built`; NULL for a NULL `built`.
#[no_mangle]
pub extern "C" fn soulbox_built_template_layer(built: *const BuiltTemplate) -> *const c_char {
    read_string(built, |built| built.layer().as_ptr())
}

/// Returns whether an earlier build with the same inputs was reused and
/// no step ran; false for a NULL `built`.
#[no_mangle]
pub extern "C" fn soulbox_built_template_cached(built: *const BuiltTemplate) -> bool {
    guard_value(false, || {
        // SAFETY: as in read_string.
        unsafe { optional_handle(built) }.is_some_and(BuiltTemplate::cached)
    })
}

/// Frees a result of `soulbox_template_build` or
/// `soulbox_template_build_with_output`; the template stays built.
/// NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_built_template_free(built: *mut BuiltTemplate) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a result of
        // soulbox_template_build that was not freed yet.
        unsafe { free_box(built) }
    });
}
