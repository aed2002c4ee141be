//! `soulbox_files_*` and `soulbox_bytes_free`.

use std::ffi::c_char;

use super::sandbox::{with_sandbox, with_sandbox_flag, with_sandbox_out, with_sandbox_value};
use super::{c_buffer, c_str, free_box, guard_value, optional_c_str};
use crate::error::Error;
use crate::files;
use crate::output::{Bytes, BytesBlock};
use crate::sandbox::Sandbox;

/// Reads a whole file of the sandbox into memory. `path` is UTF-8,
/// resolved inside the sandbox's root (a relative path starts at
/// /home/user); symlinks inside the sandbox never lead out of it. `user`
/// is the sandbox user whose permissions apply, "user" or "root", or NULL
/// for the default ("user", or "root" in a rootless sandbox). On success
/// stores the contents in `*out`, which the caller frees with
/// `soulbox_bytes_free`; on failure stores NULL.
///
/// Errors: FILE_NOT_FOUND when the file does not exist; PERMISSION_DENIED
/// when the user may not read it; INVALID_ARGUMENT for a directory, a
/// device or a file over 1 GiB.
#[no_mangle]
pub extern "C" fn soulbox_files_read(
    sandbox: *mut Sandbox,
    path: *const c_char,
    user: *const c_char,
    out: *mut *mut Bytes,
) -> *mut Error {
    with_sandbox_out("soulbox_files_read", sandbox, out, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        let block = files::read(sandbox, path, user)?;
        Ok(Box::into_raw(block).cast::<Bytes>())
    })
}

/// Writes `len` bytes from `data` to a file of the sandbox, creating it
/// and its missing parent directories, or replacing its contents. `data`
/// may be NULL when `len` is 0. `path` and `user` are as for
/// `soulbox_files_read`; what the call creates belongs to that user.
///
/// Errors: NOT_ENOUGH_SPACE when the writable layer is full;
/// PERMISSION_DENIED when the user may not write there; INVALID_ARGUMENT
/// for a path on a read-only mount such as /usr.
#[no_mangle]
pub extern "C" fn soulbox_files_write(
    sandbox: *mut Sandbox,
    path: *const c_char,
    data: *const u8,
    len: usize,
    user: *const c_char,
) -> *mut Error {
    with_sandbox("soulbox_files_write", sandbox, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated
        // string, `data` to hold `len` readable bytes and `user` to be NULL
        // or a NUL-terminated string.
        let (path, data, user) = unsafe {
            (
                c_str(path, "path")?,
                c_buffer(data, len, "data")?,
                optional_c_str(user, "user")?,
            )
        };
        files::write(sandbox, path, data, user)
    })
}

/// Removes a file or a directory with everything in it. A path that does
/// not exist is not an error. `path` and `user` are as for
/// `soulbox_files_read`.
#[no_mangle]
pub extern "C" fn soulbox_files_remove(
    sandbox: *mut Sandbox,
    path: *const c_char,
    user: *const c_char,
) -> *mut Error {
    with_sandbox("soulbox_files_remove", sandbox, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        files::remove(sandbox, path, user)
    })
}

/// Creates a directory and its missing parents. Stores in `*created`
/// (which may be NULL) false when the directory already existed. `path`
/// and `user` are as for `soulbox_files_read`.
#[no_mangle]
pub extern "C" fn soulbox_files_make_dir(
    sandbox: *mut Sandbox,
    path: *const c_char,
    user: *const c_char,
    created: *mut bool,
) -> *mut Error {
    with_sandbox_flag("soulbox_files_make_dir", sandbox, created, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        files::make_dir(sandbox, path, user)
    })
}

/// Stores in `*exists` whether something exists at `path`. `path` and
/// `user` are as for `soulbox_files_read`.
#[no_mangle]
pub extern "C" fn soulbox_files_exists(
    sandbox: *mut Sandbox,
    path: *const c_char,
    user: *const c_char,
    exists: *mut bool,
) -> *mut Error {
    let out = (exists, "exists");
    with_sandbox_value("soulbox_files_exists", sandbox, out, false, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        files::exists(sandbox, path, user)
    })
}

/// Frees a buffer from `soulbox_files_read`. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_bytes_free(bytes: *mut Bytes) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a buffer of this library that
        // was not freed yet. Each buffer is the first field of a boxed
        // BytesBlock, at offset 0 because BytesBlock is repr(C).
        unsafe { free_box(bytes.cast::<BytesBlock>()) }
    });
}
