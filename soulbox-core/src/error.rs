//! The error type of every SoulBox call.

use std::io;
use std::path::PathBuf;

/// Result alias for SoulBox calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failure of a SoulBox call. Variants are named after the failed step. The
/// OS error, where there is one, is the [`source`](std::error::Error::source)
/// and stays reachable through [`Error::errno`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A caller-supplied value was rejected before anything was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The sandbox ended (killed, timed out, or its PID 1 died).
    #[error("sandbox {id} is not running")]
    SandboxNotRunning {
        /// The sandbox id.
        id: String,
    },

    /// No sandbox with this id exists for this user on this host: it never
    /// existed, was killed, or reached its timeout.
    #[error(
        "sandbox {} not found; `soulbox ls` lists this user's sandboxes",
        shorten(id)
    )]
    SandboxNotFound {
        /// The id as the caller gave it.
        id: String,
    },

    /// The operation does not work on this host or in this mode.
    #[error("{operation} is not supported here: {reason}")]
    Unsupported {
        /// The requested operation.
        operation: &'static str,
        /// The reason it cannot work, and the change that would make it work.
        reason: String,
    },

    /// The state directory that records sandboxes for other processes could
    /// not be used.
    #[error("failed to {step} {path} in the SoulBox state directory")]
    State {
        /// The step that failed.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },

    /// A path inside the sandbox does not exist.
    #[error("file not found in sandbox: {path}")]
    FileNotFound {
        /// The path as the caller gave it.
        path: String,
    },

    /// The sandbox's writable layer is full.
    #[error("not enough space in sandbox to write {path}")]
    NotEnoughSpace {
        /// The path as the caller gave it.
        path: String,
    },

    /// PID 1 could not build the sandbox.
    #[error("sandbox setup failed: could not {stage} ({detail})")]
    Setup {
        /// The setup step that failed.
        stage: &'static str,
        /// The path or value involved.
        detail: String,
        /// The OS error PID 1 reported.
        #[source]
        source: io::Error,
    },

    /// A command could not be started; none of its code ran.
    #[error("command {program:?} could not start: {reason}")]
    Spawn {
        /// The program that was to run.
        program: String,
        /// Description of the failure.
        reason: String,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },

    /// The template a sandbox was asked to use cannot be prepared.
    #[error("template {name:?} cannot be prepared at {path}")]
    Template {
        /// Template name.
        name: String,
        /// Path being prepared.
        path: PathBuf,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },

    /// A template build from a `soulbox.toml` failed: a run step exited
    /// with a non-zero status, a file could not be copied in, or the layer
    /// could not be kept. Nothing of the build is left in the cache.
    #[error("template build of {path} failed: {message}")]
    Build {
        /// The `soulbox.toml` being built.
        path: PathBuf,
        /// The failure, with the step or file that failed.
        message: String,
    },

    /// The `ready` command of a built template did not exit 0 in time
    /// after the sandbox was created; the sandbox was killed.
    #[error(
        "template's ready command {command:?} did not exit 0 within {timeout_ms} ms; its last \
         output: {output}"
    )]
    NotReady {
        /// The ready command.
        command: String,
        /// How long it was given, in milliseconds.
        timeout_ms: u64,
        /// Its last run's status and output.
        output: String,
    },

    /// A cgroup step failed.
    #[error("failed to {step} cgroup {path}")]
    Cgroup {
        /// The step that failed.
        step: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },

    /// No running command, or other named object, matches.
    #[error("not found: {0}")]
    NotFound(String),

    /// A command exited with a non-zero code or was killed by a signal;
    /// returned by [`crate::Output::check`].
    #[error("command failed with {status}{}", if *.oom_killed { " (out of memory)" } else { "" })]
    CommandExit {
        /// Its exit status.
        status: crate::ExitStatus,
        /// Its stdout.
        stdout: Vec<u8>,
        /// Its stderr.
        stderr: Vec<u8>,
        /// Whether the sandbox's out-of-memory killer ended it.
        oom_killed: bool,
    },

    /// A command's timeout ended it; returned by [`crate::Output::check`].
    #[error("command timed out; it and every process it started were killed")]
    CommandTimedOut {
        /// Its stdout before the timeout.
        stdout: Vec<u8>,
        /// Its stderr before the timeout.
        stderr: Vec<u8>,
    },

    /// Code run with [`crate::Sandbox::run_code`] was still running at its
    /// timeout. It was interrupted as with Ctrl-C; if it did not stop
    /// within two seconds its context was restarted.
    #[error(
        "code execution timed out after {} s and was interrupted; {}",
        timeout.as_secs_f64(),
        if *.context_restarted {
            "it did not stop, so its context was restarted and lost its variables"
        } else {
            "its context keeps its variables"
        }
    )]
    CodeTimedOut {
        /// The execution's timeout.
        timeout: std::time::Duration,
        /// Whether the context was killed and will start afresh.
        context_restarted: bool,
    },

    /// PID 1 sent something the host cannot decode.
    #[error("protocol error with sandbox PID 1: {0}")]
    Protocol(String),

    /// The sandbox user a file call acts as may not access a path.
    #[error("permission denied in sandbox: {path}; act as a user who may access it, such as root")]
    PermissionDenied {
        /// The path as the caller gave it.
        path: String,
    },

    /// A directory watch needs more inotify watches or instances than the
    /// host allows.
    #[error(
        "cannot watch {path} in sandbox: the host's inotify limit in {limit_file} is reached; \
         as root, write a larger number to {limit_file}"
    )]
    WatchLimit {
        /// The watched path as the caller gave it.
        path: String,
        /// The /proc/sys/fs/inotify file with the limit.
        limit_file: &'static str,
        /// The OS error behind it: ENOSPC for watches, EMFILE for instances.
        #[source]
        source: io::Error,
    },

    /// Events of a directory watch were lost; the watch goes on.
    #[error("events under {path} in sandbox were lost: {reason}")]
    WatchEventsLost {
        /// The watched path as the caller gave it.
        path: String,
        /// The cause, and what to do about it.
        reason: String,
    },

    /// A host file or directory that a copy into or out of a sandbox reads
    /// or writes could not be accessed.
    #[error("failed to {step} {path} on the host")]
    HostFile {
        /// The step that failed.
        step: &'static str,
        /// The host path.
        path: PathBuf,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },

    /// The user-mode network stack (slirp4netns) of a sandbox with internet
    /// access could not be started; nothing of the sandbox is left.
    #[error("failed to set up the sandbox's internet access: {reason}")]
    Network {
        /// Description of the failure and the change that would fix it.
        reason: String,
        /// The OS error behind it, if there is one.
        #[source]
        source: Option<io::Error>,
    },

    /// A system call on a path in the sandbox failed with an error that no
    /// other variant names, such as EINVAL from a write to a /proc file.
    #[error("failed to {step} {path:?}")]
    File {
        /// The step that failed.
        step: &'static str,
        /// The path as the caller gave it.
        path: String,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },

    /// Any other system call failed.
    #[error("failed to {step}")]
    Os {
        /// The step that failed.
        step: &'static str,
        /// The OS error behind it.
        #[source]
        source: io::Error,
    },
}

/// Cuts a caller-given value to 64 characters for an error message.
fn shorten(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}...", &value[..end]),
        None => format!("{value:?}"),
    }
}

impl Error {
    /// Returns the OS error number behind this error, if there is one. The C ABI and
    /// the language bindings expose it as `errno`.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Setup { source, .. }
            | Self::Spawn { source, .. }
            | Self::Template { source, .. }
            | Self::Cgroup { source, .. }
            | Self::Os { source, .. }
            | Self::File { source, .. }
            | Self::WatchLimit { source, .. }
            | Self::HostFile { source, .. }
            | Self::State { source, .. } => source.raw_os_error(),
            Self::Network { source, .. } => source.as_ref().and_then(io::Error::raw_os_error),
            Self::SandboxNotFound { .. } => Some(libc::ESRCH),
            Self::Unsupported { .. } => Some(libc::EOPNOTSUPP),
            Self::InvalidArgument(_) => Some(libc::EINVAL),
            Self::FileNotFound { .. } | Self::NotFound(_) => Some(libc::ENOENT),
            Self::CommandExit { .. } | Self::Build { .. } => None,
            Self::NotReady { .. } => Some(libc::ETIMEDOUT),
            Self::CommandTimedOut { .. } | Self::CodeTimedOut { .. } => Some(libc::ETIMEDOUT),
            Self::NotEnoughSpace { .. } => Some(libc::ENOSPC),
            Self::SandboxNotRunning { .. } => Some(libc::ESRCH),
            Self::Protocol(_) => Some(libc::EPROTO),
            Self::PermissionDenied { .. } => Some(libc::EACCES),
            Self::WatchEventsLost { .. } => Some(libc::EOVERFLOW),
        }
    }

    pub(crate) fn os(step: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Os { step, source }
    }
}
