//! `soulbox_template_build` and `soulbox_built_template_*`.

use std::ffi::c_char;
use std::ptr;

use super::{c_os_string, free_box, guard, guard_value, optional_c_str, optional_handle, Out};
use crate::error::Error;
use crate::template::BuiltTemplate;

/// Builds a template from a soulbox.toml, as `soulbox template build`
/// does: runs the file's steps in a sandbox made from its `base` and keeps
/// what they wrote. `path` is the file or its folder, any bytes but NUL,
/// relative to the current directory. `name_or_null` registers the
/// template under a name, in place of the file's `name` key. A build
/// whose inputs have not changed returns at once, and
/// `soulbox_built_template_cached` is then true. Step output is discarded.
/// Blocks until the build ends. On success stores the result in `*out`,
/// which the caller frees with `soulbox_built_template_free`. On failure
/// stores NULL, and a failed build leaves nothing in the layer cache.
/// The template's name, or the absolute path of the file or its folder,
/// is then a template for `soulbox_options_set_template`. The build's
/// sandbox needs what `soulbox_sandbox_create` needs.
///
/// Errors: INVALID_ARGUMENT for an invalid file or name, with a message
/// that names the key. TEMPLATE when a step exits non-zero, with the step
/// and its status in the message, or when the layer cannot be saved.
/// Others as `soulbox_sandbox_create` returns them for the build's
/// sandbox.
#[no_mangle]
pub extern "C" fn soulbox_template_build(
    path: *const c_char,
    name_or_null: *const c_char,
    out: *mut *mut BuiltTemplate,
) -> *mut Error {
    guard("soulbox_template_build", || {
        // SAFETY: the header requires `out` to be NULL or writable, `path`
        // a NUL-terminated string and `name_or_null` NULL or one.
        let (out, path, name) = unsafe {
            (
                Out::new(out, "out", ptr::null_mut())?,
                c_os_string(path, "path")?,
                optional_c_str(name_or_null, "name_or_null")?,
            )
        };
        out.set(Box::into_raw(BuiltTemplate::build(&path, name)?));
        Ok(())
    })
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

/// Frees a result of `soulbox_template_build`; the template stays built.
/// NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_built_template_free(built: *mut BuiltTemplate) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a result of
        // soulbox_template_build that was not freed yet.
        unsafe { free_box(built) }
    });
}
