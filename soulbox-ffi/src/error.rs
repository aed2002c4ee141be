//! The error object that every fallible C function returns.

use std::ffi::CString;
use std::fmt::Write as _;

use soulbox_core::Error as CoreError;

/// Kind of a `soulbox_error`, one per variant of soulbox-core's error
/// type, plus the kinds that only the C ABI produces. Values never change
/// meaning; new kinds get new numbers.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No error: what `soulbox_error_get_kind(NULL)` returns.
    None = 0,
    /// A caller-supplied value was rejected before anything was changed:
    /// a NULL pointer, a string that is not UTF-8, an option out of range,
    /// a working directory that does not exist. errno EINVAL.
    InvalidArgument = 1,
    /// The sandbox ended: killed, timed out, or its PID 1 died. errno ESRCH.
    SandboxNotRunning = 2,
    /// A path inside the sandbox does not exist. errno ENOENT.
    FileNotFound = 3,
    /// The sandbox's writable layer is full. errno ENOSPC.
    NotEnoughSpace = 4,
    /// The sandbox's PID 1 could not build the sandbox; errno is the
    /// failed system call's.
    Setup = 5,
    /// A command could not be started and none of its code ran; errno is
    /// the failed system call's (ENOENT for a missing program).
    Spawn = 6,
    /// The sandbox's template could not be prepared, or a built template's
    /// ready command did not exit 0 in time.
    Template = 7,
    /// Creating, joining or removing a cgroup failed.
    Cgroup = 8,
    /// No running command, or other named object, matches. errno ENOENT.
    NotFound = 9,
    /// A command exited with a non-zero code. The C functions report exit
    /// codes in `soulbox_output` instead; this kind exists for
    /// completeness.
    CommandExit = 10,
    /// A command's timeout ended it. errno ETIMEDOUT. The C functions
    /// report this as `soulbox_output.timed_out` instead.
    CommandTimedOut = 11,
    /// The sandbox's PID 1 sent something that cannot be decoded, or a
    /// command's supervisor was killed from inside. errno EPROTO.
    Protocol = 12,
    /// The sandbox user may not access a path. errno EACCES.
    PermissionDenied = 13,
    /// The host's inotify limit is reached.
    WatchLimit = 14,
    /// Events of a directory watch were lost. errno EOVERFLOW.
    WatchEventsLost = 15,
    /// A host file or directory could not be accessed.
    HostFile = 16,
    /// Another system call failed; errno is its error.
    Os = 17,
    /// The operation does not work on this host or in this mode, such as
    /// pausing a rootless sandbox without a delegated cgroup. errno
    /// EOPNOTSUPP.
    Unsupported = 18,
    /// A bug inside SoulBox: a panic was caught before it reached C. The
    /// message names the function. errno 0.
    Internal = 19,
    /// An error kind that soulbox-core added after this version of the C
    /// interface.
    Other = 20,
    /// No running or paused sandbox of this user has the id. errno ESRCH.
    SandboxNotFound = 21,
    /// The state directory that records sandboxes for other processes
    /// could not be used; errno is the failed system call's.
    State = 22,
    /// Code run with `soulbox_run_code` was still running at its timeout
    /// and was interrupted. errno ETIMEDOUT.
    CodeTimedOut = 23,
}

/// A failed call's error: its kind, OS error number and message.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    errno: i32,
    message: CString,
}

/// Result of the safe layer's calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an error from its parts; NUL bytes in `message` become
    /// U+FFFD, since C reads it as a NUL-terminated string.
    pub fn new(kind: ErrorKind, errno: i32, message: &str) -> Self {
        let message = CString::new(message.replace('\0', "\u{fffd}"))
            .expect("interior NUL bytes were replaced");
        Self {
            kind,
            errno,
            message,
        }
    }

    /// An invalid-argument error with `message`.
    pub fn invalid(message: impl AsRef<str>) -> Self {
        Self::new(ErrorKind::InvalidArgument, libc::EINVAL, message.as_ref())
    }

    /// The error for a panic caught in `function`.
    pub fn panic(function: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let detail = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        Self::new(
            ErrorKind::Internal,
            0,
            &format!("internal error in {function}: {detail}; this is a SoulBox bug"),
        )
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn errno(&self) -> i32 {
        self.errno
    }

    pub fn message(&self) -> &CString {
        &self.message
    }
}

impl From<CoreError> for Error {
    fn from(error: CoreError) -> Self {
        let kind = kind_of(&error);
        let errno = error.errno().unwrap_or(0);
        Self::new(kind, errno, &message_with_sources(&error))
    }
}

fn kind_of(error: &CoreError) -> ErrorKind {
    match error {
        CoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
        CoreError::SandboxNotRunning { .. } => ErrorKind::SandboxNotRunning,
        CoreError::SandboxNotFound { .. } => ErrorKind::SandboxNotFound,
        CoreError::Unsupported { .. } => ErrorKind::Unsupported,
        CoreError::State { .. } => ErrorKind::State,
        CoreError::FileNotFound { .. } => ErrorKind::FileNotFound,
        CoreError::NotEnoughSpace { .. } => ErrorKind::NotEnoughSpace,
        CoreError::Setup { .. } => ErrorKind::Setup,
        CoreError::Spawn { .. } => ErrorKind::Spawn,
        CoreError::Template { .. } | CoreError::Build { .. } | CoreError::NotReady { .. } => {
            ErrorKind::Template
        }
        CoreError::Cgroup { .. } => ErrorKind::Cgroup,
        CoreError::NotFound(_) => ErrorKind::NotFound,
        CoreError::CommandExit { .. } => ErrorKind::CommandExit,
        CoreError::CommandTimedOut { .. } => ErrorKind::CommandTimedOut,
        CoreError::CodeTimedOut { .. } => ErrorKind::CodeTimedOut,
        CoreError::Protocol(_) => ErrorKind::Protocol,
        CoreError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
        CoreError::WatchLimit { .. } => ErrorKind::WatchLimit,
        CoreError::WatchEventsLost { .. } => ErrorKind::WatchEventsLost,
        CoreError::HostFile { .. } => ErrorKind::HostFile,
        CoreError::Os { .. } | CoreError::File { .. } => ErrorKind::Os,
        _ => ErrorKind::Other,
    }
}

/// Joins the error's message with those of its sources, as in "failed to
/// create a pipe: Too many open files (os error 24)", because C callers
/// have no way to walk the chain.
fn message_with_sources(error: &CoreError) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_includes_os_error() {
        let error: Error = CoreError::Spawn {
            program: "nope".into(),
            reason: "no such program in the sandbox".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }
        .into();
        assert_eq!(error.kind(), ErrorKind::Spawn);
        assert_eq!(error.errno(), libc::ENOENT);
        let message = error.message().to_str().expect("UTF-8 message");
        assert!(
            message.starts_with("command \"nope\" could not start"),
            "{message}"
        );
        assert!(message.contains("os error 2"), "{message}");
    }

    #[test]
    fn nul_in_message_is_replaced() {
        let error = Error::invalid("a\0b");
        assert_eq!(error.message().to_bytes(), "a\u{fffd}b".as_bytes());
    }

    #[test]
    fn panic_payload_is_named() {
        let payload: Box<dyn std::any::Any + Send> = Box::new("boom");
        let error = Error::panic("soulbox_x", payload.as_ref());
        assert_eq!(error.kind(), ErrorKind::Internal);
        let message = error.message().to_str().expect("UTF-8 message");
        assert!(message.contains("soulbox_x: boom"), "{message}");
    }
}
