//! `soulbox_files_*` but the watch, and the free functions of their
//! results.

use std::ffi::c_char;
use std::path::PathBuf;

use super::sandbox::{
    with_sandbox, with_sandbox_flag, with_sandbox_optional_out, with_sandbox_out,
    with_sandbox_value,
};
use super::{c_buffer, c_os_string, c_str, free_box, guard_value, optional_c_str};
use crate::entry::{
    CopySummary, CopySummaryBlock, EntryBlock, EntryInfo, EntryList, EntryListBlock,
};
use crate::error::{Error, Result};
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

/// Lists the directory `path`: with `depth` 1 its entries, with 2 also the
/// entries of its subdirectories, and so on. Entries come sorted by path.
/// Symlinks are listed as symlinks and not descended into; subdirectories
/// the user may not read are listed but not descended into. `path` and
/// `user` are as for `soulbox_files_read`. On success stores the list in
/// `*out`, which the caller frees with `soulbox_entry_info_list_free`; on
/// failure stores NULL.
///
/// Errors: INVALID_ARGUMENT if `depth` is 0 or `path` is not a directory;
/// FILE_NOT_FOUND if it does not exist; PERMISSION_DENIED if the user may
/// not read it.
#[no_mangle]
pub extern "C" fn soulbox_files_list(
    sandbox: *mut Sandbox,
    path: *const c_char,
    depth: usize,
    user: *const c_char,
    out: *mut *mut EntryList,
) -> *mut Error {
    with_sandbox_out("soulbox_files_list", sandbox, out, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        let block = files::list(sandbox, path, depth, user)?;
        Ok(Box::into_raw(block).cast::<EntryList>())
    })
}

/// Describes the file or directory at `path`, as E2B's `get_info`. A
/// symlink is described itself, not followed. `path` and `user` are as for
/// `soulbox_files_read`. On success stores the description in `*out`,
/// which the caller frees with `soulbox_entry_info_free`; on failure
/// stores NULL.
///
/// Errors: FILE_NOT_FOUND if it does not exist; PERMISSION_DENIED if the
/// user may not search a parent directory.
#[no_mangle]
pub extern "C" fn soulbox_files_stat(
    sandbox: *mut Sandbox,
    path: *const c_char,
    user: *const c_char,
    out: *mut *mut EntryInfo,
) -> *mut Error {
    with_sandbox_out("soulbox_files_stat", sandbox, out, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        let block = files::stat(sandbox, path, user)?;
        Ok(Box::into_raw(block).cast::<EntryInfo>())
    })
}

/// Renames `from` to `to`, replacing `to` as rename(2) does (a file
/// replaces a file, a directory an empty directory). A symlink is renamed
/// itself, and missing parents of `to` are not created. `from`, `to` and
/// `user` are as `path` and `user` for `soulbox_files_read`. Stores the
/// description of `to` in `*out` unless `out` is NULL; the caller frees it
/// with `soulbox_entry_info_free`. On failure stores NULL.
///
/// Errors: FILE_NOT_FOUND if `from` or the parent of `to` does not exist.
/// INVALID_ARGUMENT if the two are on different mounts of the sandbox (for
/// example /home and /tmp), or if the rename is impossible, such as a
/// directory into itself. PERMISSION_DENIED if the user may not change
/// either directory.
#[no_mangle]
pub extern "C" fn soulbox_files_rename(
    sandbox: *mut Sandbox,
    from: *const c_char,
    to: *const c_char,
    user: *const c_char,
    out: *mut *mut EntryInfo,
) -> *mut Error {
    with_sandbox_optional_out("soulbox_files_rename", sandbox, out, |sandbox| {
        // SAFETY: the header requires `from` and `to` to be NUL-terminated
        // strings and `user` NULL or one.
        let (from, to, user) = unsafe {
            (
                c_str(from, "from")?,
                c_str(to, "to")?,
                optional_c_str(user, "user")?,
            )
        };
        files::rename(sandbox, from, to, user)
    })
}

/// Copies a host path, any bytes but NUL, into a `PathBuf`.
///
/// # Safety
///
/// As [`c_os_string`].
unsafe fn c_path(ptr: *const c_char, name: &str) -> Result<PathBuf> {
    // SAFETY: as the caller guarantees.
    unsafe { c_os_string(ptr, name) }.map(PathBuf::from)
}

/// Copies the host file or directory tree `host_path` (any bytes but NUL)
/// to `sandbox_path`. That path becomes the copy, and is not a directory
/// to copy into. Directories are created as `soulbox_files_make_dir` does and
/// files written as `soulbox_files_write` does, keeping their permission
/// bits up to 0777. The host side is read with the calling process's own
/// permissions; the sandbox side is written as `user`, who owns what is
/// created. A symlink at `host_path` itself is followed; below it,
/// symlinks and special files are skipped and listed in the summary.
/// Stores the summary in `*out` unless `out` is NULL; the caller frees it
/// with `soulbox_copy_summary_free`. On failure stores NULL, and what was
/// copied before the error stays in the sandbox.
///
/// Errors: HOST_FILE if a host path cannot be read; INVALID_ARGUMENT if
/// `host_path` is neither a regular file nor a directory, or a host name
/// below it is not UTF-8; otherwise as `soulbox_files_write`.
#[no_mangle]
pub extern "C" fn soulbox_files_copy_in(
    sandbox: *mut Sandbox,
    host_path: *const c_char,
    sandbox_path: *const c_char,
    user: *const c_char,
    out: *mut *mut CopySummary,
) -> *mut Error {
    with_sandbox_optional_out("soulbox_files_copy_in", sandbox, out, |sandbox| {
        // SAFETY: the header requires `host_path` and `sandbox_path` to be
        // NUL-terminated strings and `user` NULL or one.
        let (host, target, user) = unsafe {
            (
                c_path(host_path, "host_path")?,
                c_str(sandbox_path, "sandbox_path")?,
                optional_c_str(user, "user")?,
            )
        };
        files::copy_in(sandbox, &host, target, user)
    })
}

/// Copies the sandbox file or directory tree `sandbox_path` to the host
/// path `host_path` (any bytes but NUL), which becomes the copy. Missing
/// host directories are created and existing host files replaced; new
/// host files get the sandbox file's permission bits up to 0777. The
/// sandbox side is read as `user`; the host side is written with the
/// calling process's own permissions. A symlink at `sandbox_path` itself
/// is followed inside the sandbox. Below it no symlink is followed, on
/// either side: symlinks and special files are skipped and listed in the
/// summary, so nothing is written outside `host_path`. Stores the summary
/// in `*out` unless `out` is NULL; the caller frees it with
/// `soulbox_copy_summary_free`. On failure stores NULL, and what was
/// copied before the error stays on the host.
///
/// Errors: FILE_NOT_FOUND if `sandbox_path` does not exist;
/// PERMISSION_DENIED if the user may not read it; INVALID_ARGUMENT if it
/// is neither a regular file nor a directory; HOST_FILE if a host path
/// cannot be written.
#[no_mangle]
pub extern "C" fn soulbox_files_copy_out(
    sandbox: *mut Sandbox,
    sandbox_path: *const c_char,
    host_path: *const c_char,
    user: *const c_char,
    out: *mut *mut CopySummary,
) -> *mut Error {
    with_sandbox_optional_out("soulbox_files_copy_out", sandbox, out, |sandbox| {
        // SAFETY: as in soulbox_files_copy_in.
        let (source, host, user) = unsafe {
            (
                c_str(sandbox_path, "sandbox_path")?,
                c_path(host_path, "host_path")?,
                optional_c_str(user, "user")?,
            )
        };
        files::copy_out(sandbox, source, &host, user)
    })
}

/// Frees a description from `soulbox_files_stat` or `soulbox_files_rename`
/// with its strings. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_entry_info_free(info: *mut EntryInfo) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a description of this library
        // that was not freed yet. Each one is the first field of a boxed
        // EntryBlock, at offset 0 because EntryBlock is repr(C).
        unsafe { free_box(info.cast::<EntryBlock>()) }
    });
}

/// Frees a list from `soulbox_files_list` with everything it points to.
/// NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_entry_info_list_free(list: *mut EntryList) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a list of this library that
        // was not freed yet. Each list is the first field of a boxed
        // EntryListBlock, at offset 0 because EntryListBlock is repr(C).
        unsafe { free_box(list.cast::<EntryListBlock>()) }
    });
}

/// Frees a summary from `soulbox_files_copy_in` or `soulbox_files_copy_out`
/// with everything it points to. NULL is ignored.
#[no_mangle]
pub extern "C" fn soulbox_copy_summary_free(summary: *mut CopySummary) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a summary of this library that
        // was not freed yet. Each one is the first field of a boxed
        // CopySummaryBlock, at offset 0 because CopySummaryBlock is repr(C).
        unsafe { free_box(summary.cast::<CopySummaryBlock>()) }
    });
}

/// Frees a buffer from `soulbox_files_read` or `soulbox_run_code`. NULL is
/// ignored.
#[no_mangle]
pub extern "C" fn soulbox_bytes_free(bytes: *mut Bytes) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a buffer of this library that
        // was not freed yet. Each buffer is the first field of a boxed
        // BytesBlock, at offset 0 because BytesBlock is repr(C).
        unsafe { free_box(bytes.cast::<BytesBlock>()) }
    });
}
