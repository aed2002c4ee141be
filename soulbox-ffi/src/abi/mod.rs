//! Every `extern "C"` function of libsoulbox, and the crate's only
//! `unsafe` code.
//!
//! Each function runs its body through [`guard`], which catches panics,
//! and turns its C arguments into Rust values with the helpers below
//! before calling the safe layer. The helpers check for NULL and for
//! invalid UTF-8, so a bad argument becomes an invalid-argument error. What
//! no check can catch (a dangling pointer, a handle freed twice, a length
//! longer than its buffer) is the caller's side of the contract that
//! `soulbox.h` states, and each `SAFETY` comment below relies on it.

// Declared in the order the header lists them.
mod code;
mod command;
mod commands;
mod files;
mod options;
mod pty;
mod sandbox;
mod template;
mod watch;

use std::ffi::{c_char, c_int, CStr, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{self, Polled};

/// Runs the body of the exported function `function` and returns its
/// error for C: NULL on success, otherwise an error object that the
/// caller frees with `soulbox_error_free`. A panic becomes an
/// internal-kind error instead of unwinding into C.
fn guard(function: &'static str, body: impl FnOnce() -> Result<()>) -> *mut Error {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ptr::null_mut(),
        Ok(Err(error)) => Box::into_raw(Box::new(error)),
        Err(payload) => Box::into_raw(Box::new(Error::panic(function, payload.as_ref()))),
    }
}

/// Runs the body of an exported function that returns a value instead of
/// an error, returning `fallback` if it panics.
fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The header lets C share sandbox, command and watcher handles between
/// threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<crate::sandbox::Sandbox>();
    shareable::<crate::command::Command>();
    shareable::<crate::watch::Watcher>();
};

fn null_argument(name: &str) -> Error {
    Error::invalid(format!("argument {name} is NULL"))
}

/// Turns a handle pointer into a reference.
///
/// # Safety
///
/// `ptr` is NULL or points to a live object of type `T` created by this
/// library, which is not freed while `'a` lasts.
unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: as the caller guarantees.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_argument(name))
}

/// Turns a handle pointer into a mutable reference, for option builders.
///
/// # Safety
///
/// As [`handle`], and no other reference to the object exists while `'a`
/// lasts (the header forbids using one builder from two threads at once).
unsafe fn handle_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: as the caller guarantees.
    unsafe { ptr.as_mut() }.ok_or_else(|| null_argument(name))
}

/// Turns a pointer that may be NULL into an optional reference.
///
/// # Safety
///
/// As [`handle`].
unsafe fn optional_handle<'a, T>(ptr: *const T) -> Option<&'a T> {
    // SAFETY: as the caller guarantees.
    unsafe { ptr.as_ref() }
}

/// Borrows a C string's bytes, without its NUL.
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string that stays readable
/// and unchanged while `'a` lasts.
unsafe fn c_bytes<'a>(ptr: *const c_char, name: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Err(null_argument(name));
    }
    // SAFETY: not NULL, and the caller guarantees the rest.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// Borrows a C string that must be UTF-8.
///
/// # Safety
///
/// As [`c_bytes`].
unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    // SAFETY: as the caller guarantees.
    let bytes = unsafe { c_bytes(ptr, name) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "argument {name} is not valid UTF-8 (invalid byte at offset {}): {:?}",
            e.valid_up_to(),
            String::from_utf8_lossy(bytes)
        ))
    })
}

/// Borrows a C string that may be NULL and must otherwise be UTF-8.
///
/// # Safety
///
/// As [`c_bytes`].
unsafe fn optional_c_str<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: as the caller guarantees.
    unsafe { c_str(ptr, name) }.map(Some)
}

/// Copies a C string of any bytes into an `OsString`.
///
/// # Safety
///
/// As [`c_bytes`].
unsafe fn c_os_string(ptr: *const c_char, name: &str) -> Result<OsString> {
    // SAFETY: as the caller guarantees.
    let bytes = unsafe { c_bytes(ptr, name) }?;
    Ok(OsStr::from_bytes(bytes).to_owned())
}

/// Copies a NULL-terminated array of C strings, as execv takes.
///
/// # Safety
///
/// `argv` is NULL or points to an array of C strings that ends with a
/// NULL entry, each string as [`c_bytes`] requires.
unsafe fn c_argv(argv: *const *const c_char) -> Result<Vec<OsString>> {
    if argv.is_null() {
        return Err(null_argument("argv"));
    }
    let mut args = Vec::new();
    for index in 0.. {
        // SAFETY: the array ends with a NULL entry, and no entry past it
        // is read.
        let arg = unsafe { *argv.add(index) };
        if arg.is_null() {
            break;
        }
        // SAFETY: a non-NULL entry is a C string, as the caller guarantees.
        args.push(unsafe { c_os_string(arg, &format!("argv[{index}]")) }?);
    }
    Ok(args)
}

/// Borrows an array of `len` elements. `data` is not read when `len` is
/// 0, so it may then be NULL or any other value, such as the end of a C
/// array or a pointer that is not aligned for `T`.
///
/// # Safety
///
/// `data` is NULL or points to `len` initialized, readable elements that
/// stay unchanged while `'a` lasts.
unsafe fn c_buffer<'a, T>(data: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Error::invalid(format!(
            "argument {name} is NULL but its length is {len}"
        )));
    }
    let fits = len
        .checked_mul(std::mem::size_of::<T>())
        .is_some_and(|bytes| bytes <= isize::MAX as usize);
    if !fits {
        return Err(Error::invalid(format!(
            "length {len} of argument {name} is larger than any array"
        )));
    }
    // SAFETY: not NULL, at most isize::MAX bytes, and the caller
    // guarantees that the elements are readable.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// An out-parameter, cleared as soon as it is checked, so that it holds
/// NULL (or false, or 0) whenever the call fails.
struct Out<T: Copy> {
    slot: NonNull<T>,
}

impl<T: Copy> Out<T> {
    /// Checks `ptr` and writes `cleared` to it.
    ///
    /// # Safety
    ///
    /// `ptr` is NULL or valid for writes of a `T` until the exported
    /// function that received it returns; the `Out` must not outlive that
    /// function.
    unsafe fn new(ptr: *mut T, name: &str, cleared: T) -> Result<Self> {
        let slot = NonNull::new(ptr).ok_or_else(|| null_argument(name))?;
        // SAFETY: writable, as the caller guarantees.
        unsafe { slot.as_ptr().write(cleared) };
        Ok(Self { slot })
    }

    /// Like [`Out::new`], but a NULL `ptr` means the caller does not want
    /// the value.
    ///
    /// # Safety
    ///
    /// As [`Out::new`].
    unsafe fn optional(ptr: *mut T, cleared: T) -> Option<Self> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: as the caller guarantees.
        unsafe { Self::new(ptr, "an optional out-parameter", cleared) }.ok()
    }

    fn set(self, value: T) {
        // SAFETY: `new` checked the pointer, and its caller guaranteed that
        // it stays writable while this `Out` exists.
        unsafe { self.slot.as_ptr().write(value) };
    }
}

/// Runs the body of an exported function that waits up to `timeout_ms`
/// (see [`runtime::wait_limit`]) for the next item of the handle `ptr`,
/// named `name` in the header. `next` returns the item as a `repr(C)` block
/// `B` whose first field is the `P` that C reads. Stores the item in `out`
/// and false in `ended`, NULL and false when the time ran out, and NULL
/// and true at the end.
fn with_next_item<H, B, P>(
    function: &'static str,
    (ptr, name): (*const H, &str),
    timeout_ms: i64,
    ended: *mut bool,
    out: *mut *mut P,
    next: impl FnOnce(&H, Option<Duration>) -> Result<Polled<Box<B>>>,
) -> *mut Error {
    guard(function, || {
        // SAFETY: the header requires `out` and `ended` to be NULL or
        // writable.
        let (out, ended) = unsafe {
            (
                Out::new(out, "out", ptr::null_mut())?,
                Out::new(ended, "ended", false)?,
            )
        };
        // SAFETY: the header requires NULL or a live handle of this
        // library that no thread frees during the call.
        let handle = unsafe { handle(ptr, name) }?;
        match next(handle, runtime::wait_limit(timeout_ms))? {
            Polled::Item(block) => out.set(Box::into_raw(block).cast::<P>()),
            Polled::TimedOut => {}
            Polled::Ended => ended.set(true),
        }
        Ok(())
    })
}

/// Frees an object that this library handed to C as a `Box`.
///
/// # Safety
///
/// `ptr` is NULL or came from `Box::into_raw` of a `Box<T>` in this
/// library and has not been freed yet.
unsafe fn free_box<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: as the caller guarantees.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// Returns the kind of `error`, or `SOULBOX_ERROR_KIND_NONE` for NULL.
#[no_mangle]
pub extern "C" fn soulbox_error_get_kind(error: *const Error) -> ErrorKind {
    guard_value(ErrorKind::Internal, || {
        // SAFETY: the header requires NULL or an error this library
        // returned and the caller has not freed.
        match unsafe { error.as_ref() } {
            Some(error) => error.kind(),
            None => ErrorKind::None,
        }
    })
}

/// Returns the OS error number behind `error` (an `errno` value such as
/// ENOENT), or 0 when there is none or `error` is NULL.
#[no_mangle]
pub extern "C" fn soulbox_error_errno(error: *const Error) -> c_int {
    guard_value(0, || {
        // SAFETY: as in soulbox_error_get_kind.
        unsafe { error.as_ref() }.map_or(0, Error::errno)
    })
}

/// Returns the error's message: one line of UTF-8 that names the failed
/// step, the value involved and, where there is one, what to do. The
/// string belongs to `error` and stays valid until `soulbox_error_free`.
/// Returns "" for NULL.
#[no_mangle]
pub extern "C" fn soulbox_error_message(error: *const Error) -> *const c_char {
    guard_value(c"".as_ptr(), || {
        // SAFETY: as in soulbox_error_get_kind.
        match unsafe { error.as_ref() } {
            Some(error) => error.message().as_ptr(),
            None => c"".as_ptr(),
        }
    })
}

/// Frees an error returned by any function of this library. NULL is
/// ignored.
#[no_mangle]
pub extern "C" fn soulbox_error_free(error: *mut Error) {
    guard_value((), || {
        // SAFETY: the header requires NULL or an error this library
        // returned and the caller has not freed; every error is a
        // `Box<Error>`.
        unsafe { free_box(error) }
    });
}

/// Returns the version of libsoulbox, such as "0.1.0". The string is
/// static.
#[no_mangle]
pub extern "C" fn soulbox_version() -> *const c_char {
    // Checked at compile time, so this function cannot panic.
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => panic!("the package version contains a NUL byte"),
        };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_panic_into_error() {
        let error = guard("soulbox_test_function", || panic!("deliberate"));
        assert!(!error.is_null(), "a panic must come back as an error");
        assert_eq!(soulbox_error_get_kind(error), ErrorKind::Internal);
        assert_eq!(soulbox_error_errno(error), 0);
        // SAFETY: the message belongs to `error`, which is still alive.
        let message = unsafe { CStr::from_ptr(soulbox_error_message(error)) };
        let message = message.to_str().expect("UTF-8 message");
        assert!(
            message.contains("soulbox_test_function: deliberate"),
            "{message}"
        );
        soulbox_error_free(error);
    }

    #[test]
    fn guard_value_returns_fallback_on_panic() {
        assert_eq!(guard_value(7, || panic!("deliberate")), 7);
        assert_eq!(guard_value(7, || 8), 8);
    }

    #[test]
    fn guard_passes_errors_and_success() {
        assert!(guard("f", || Ok(())).is_null());
        let error = guard("f", || Err(Error::invalid("bad value")));
        assert_eq!(soulbox_error_get_kind(error), ErrorKind::InvalidArgument);
        assert_eq!(soulbox_error_errno(error), libc::EINVAL);
        soulbox_error_free(error);
    }
}
