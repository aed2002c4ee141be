//! Conversion of core errors into the errors JavaScript receives.
//!
//! napi-rs rejects a Promise with an `Error` built from a status and a
//! message only, so the error's kind travels in the message:
//! `[CODE] message`, or `[CODE errno] message` when an OS error number is
//! known. `index.js` parses that prefix, strips it and throws the E2B
//! error class for `CODE` with `code` and `errno` properties.

use std::error::Error as _;

use soulbox_core::Error;

/// Result type of the addon's methods.
pub(crate) type Result<T> = napi::Result<T>;

/// Returns the code that `index.js` maps to an error class.
fn code(error: &Error) -> &'static str {
    match error {
        Error::InvalidArgument(_) => "INVALID_ARGUMENT",
        Error::SandboxNotRunning { .. } => "SANDBOX_NOT_RUNNING",
        Error::SandboxNotFound { .. } => "SANDBOX_NOT_FOUND",
        Error::Unsupported { .. } => "UNSUPPORTED",
        Error::State { .. } => "STATE_FAILED",
        Error::FileNotFound { .. } => "FILE_NOT_FOUND",
        Error::NotFound(_) => "NOT_FOUND",
        Error::NotEnoughSpace { .. } => "NOT_ENOUGH_SPACE",
        Error::PermissionDenied { .. } => "PERMISSION_DENIED",
        Error::CommandTimedOut { .. } | Error::CodeTimedOut { .. } | Error::NotReady { .. } => {
            "TIMEOUT"
        }
        Error::CommandExit { .. } => "COMMAND_EXIT",
        Error::Setup { .. } => "SETUP_FAILED",
        Error::Spawn { .. } => "SPAWN_FAILED",
        Error::Template { .. } | Error::Build { .. } => "TEMPLATE_FAILED",
        Error::Cgroup { .. } => "CGROUP_FAILED",
        Error::Protocol(_) => "PROTOCOL",
        Error::WatchLimit { .. } => "WATCH_LIMIT",
        Error::WatchEventsLost { .. } => "WATCH_EVENTS_LOST",
        Error::HostFile { .. } => "HOST_FILE",
        Error::Os { .. } | Error::File { .. } => "OS_ERROR",
        _ => "SANDBOX_ERROR",
    }
}

/// Converts a core error into the `Error` a Promise rejects with. The
/// message keeps the chain of sources, so an OS error's text is not lost.
pub(crate) fn to_napi(error: Error) -> napi::Error {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    let prefix = match error.errno() {
        Some(errno) => format!("[{} {errno}]", code(&error)),
        None => format!("[{}]", code(&error)),
    };
    napi::Error::from_reason(format!("{prefix} {message}"))
}

/// Builds the error for an invalid argument that the addon itself rejects.
pub(crate) fn invalid_argument(message: String) -> napi::Error {
    to_napi(Error::InvalidArgument(message))
}

/// Extension that converts a core result for napi-rs.
pub(crate) trait IntoNapi<T> {
    fn into_napi(self) -> Result<T>;
}

impl<T> IntoNapi<T> for soulbox_core::Result<T> {
    fn into_napi(self) -> Result<T> {
        self.map_err(to_napi)
    }
}
