//! `soulbox_run_code` and `soulbox_run_code_language`, the code
//! interpreter.

use std::ffi::c_char;

use super::sandbox::with_sandbox_out;
use super::{c_str, optional_c_str};
use crate::code;
use crate::error::Error;
use crate::output::Bytes;
use crate::sandbox::Sandbox;

/// Runs Python code in the sandbox's default code context, as E2B's
/// `run_code`, and waits for its end. Variables, imports and functions
/// persist from one call to the next through the same handle. Another
/// handle to the sandbox, such as one from `soulbox_sandbox_connect`,
/// has a context of its own. `code` is UTF-8. `timeout_ms` is how long
/// the code may run, or 0 for the default of 300 s.
///
/// On success stores the execution in `*out` as a JSON object, in
/// NUL-terminated UTF-8 that the caller frees with `soulbox_bytes_free`;
/// on failure stores NULL. Its fields, with example values:
///
///   {"results": [{"formats": {"text": "42"}, "is_main_result": true}],
///    "logs": {"stdout": ["piece\n"], "stderr": []},
///    "error": null,
///    "execution_count": 2}
///
/// `results` contains each `display()`ed value and, last, the value of the
/// final expression (`is_main_result`). Its format names are text, html,
/// markdown, svg, png, jpeg, pdf, latex, json and javascript; png, jpeg
/// and pdf are base64 and json is JSON text. `logs` holds the output of
/// the code and its child processes in the pieces it arrived in, the
/// first 16 MiB of each stream. An exception in the code is not an error
/// of the call: `error` then holds its `name`, `value` and `traceback`.
///
/// Errors: CODE_TIMED_OUT (errno ETIMEDOUT) when the code still ran at
/// the timeout; it was interrupted as with Ctrl-C, and the context keeps
/// its variables unless the code ignored the interrupt for 2 s and its
/// context was restarted, which the message says. UNSUPPORTED when the
/// template has no python3; PROTOCOL when the interpreter died, after
/// which the next call starts a new one without the old variables;
/// SANDBOX_NOT_RUNNING once the sandbox has ended; INVALID_ARGUMENT for a
/// NULL argument or code that is not UTF-8.
#[no_mangle]
pub extern "C" fn soulbox_run_code(
    sandbox: *mut Sandbox,
    code: *const c_char,
    timeout_ms: u64,
    out: *mut *mut Bytes,
) -> *mut Error {
    with_sandbox_out("soulbox_run_code", sandbox, out, |sandbox| {
        // SAFETY: the header requires `code` to be a NUL-terminated string.
        let code = unsafe { c_str(code, "code") }?;
        let block = code::run(sandbox, code, None, timeout_ms)?;
        Ok(Box::into_raw(block).cast::<Bytes>())
    })
}

/// Runs code as `soulbox_run_code` does, in the default context of
/// `language`: "python" (also "python3" or "py"), "js" (JavaScript, run by
/// the template's node; also "javascript", "node" or "nodejs"), or NULL
/// for Python. Each language's context keeps its own variables. The
/// execution's JSON has the same fields; a JavaScript value's text is what
/// Node's `util.inspect` prints.
///
/// Errors: as `soulbox_run_code`, and INVALID_ARGUMENT for another language
/// or one that is not UTF-8; UNSUPPORTED also when the template has no node
/// for "js".
#[no_mangle]
pub extern "C" fn soulbox_run_code_language(
    sandbox: *mut Sandbox,
    code: *const c_char,
    language: *const c_char,
    timeout_ms: u64,
    out: *mut *mut Bytes,
) -> *mut Error {
    with_sandbox_out("soulbox_run_code_language", sandbox, out, |sandbox| {
        // SAFETY: the header requires `code` to be a NUL-terminated string
        // and `language` NULL or one.
        let (code, language) =
            unsafe { (c_str(code, "code")?, optional_c_str(language, "language")?) };
        let block = code::run(sandbox, code, language, timeout_ms)?;
        Ok(Box::into_raw(block).cast::<Bytes>())
    })
}
