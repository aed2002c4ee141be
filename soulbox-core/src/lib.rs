//! SoulBox: disposable Linux sandboxes for untrusted code, built directly
//! from kernel primitives.
//!
//! A [`Sandbox`] is a tree of processes in fresh mount, PID, network
//! (loopback only, unless [`SandboxOptions::network`] requests internet
//! access), UTS, IPC and cgroup namespaces (plus a user namespace
//! when the caller is not root), whose root is an overlay over a template
//! and whose PID 1 is SoulBox's own small init. Commands run in it through
//! [`Sandbox::command`] and [`Sandbox::shell`]; files move in and out
//! through [`Sandbox::files`].
//!
//! ```no_run
//! # async fn demo() -> soulbox_core::Result<()> {
//! use soulbox_core::{Sandbox, SandboxOptions};
//!
//! let sandbox = Sandbox::create(SandboxOptions::default()).await?;
//! sandbox.files().write("hello.py", "print(6 * 7)").await?;
//! let output = sandbox.run("python3 hello.py").await?;
//! assert_eq!(output.stdout, b"42\n");
//! sandbox.kill().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Caveats
//!
//! Creating a sandbox needs root, or unprivileged user namespaces for the
//! rootless mode. A sandbox runs until its timeout or [`Sandbox::kill`],
//! whether or not its handle is dropped, unless it was created with
//! [`SandboxOptions::kill_on_drop`].

#![deny(unsafe_code)]

pub mod build;
mod cgroup;
mod command;
mod error;
mod files;
mod host_limits;
mod id;
pub mod image;
mod init_binary;
mod interpreter;
mod mounts;
mod network;
mod paths;
mod pool;
mod ports;
mod process;
mod reaper;
mod sandbox;
mod seccomp;
mod state;
#[expect(unsafe_code, reason = "the one module that makes raw system calls")]
mod sys;
mod template;
mod zygote;

pub use cgroup::Limits;
pub use command::{Command, CommandSpec, ExitStatus, Output, DEFAULT_COMMAND_TIMEOUT};
pub use error::{Error, Result};
pub use files::{
    CopySummary, EntryInfo, FileReader, FileType, Files, FilesystemEvent, FilesystemEventKind,
    Watcher, MAX_READ_SIZE,
};
pub use interpreter::{
    code_language, CodeContext, CodeContextOptions, CodeEvent, Execution, ExecutionError,
    ExecutionResult, Logs, RunCode, DEFAULT_CODE_TIMEOUT, MAX_KEPT_LOG_BYTES,
    MAX_KEPT_RESULT_BYTES,
};
pub use mounts::{Mount, MAX_MOUNTS};
pub use network::{Network, ALL_TRAFFIC, DNS_SERVER, MAX_EGRESS_ENTRIES, SLIRP4NETNS_ENV};
pub use pool::{SandboxPool, MAX_POOL_SIZE};
pub use process::{
    CommandController, CommandEvent, CommandExit, CommandHandle, Commands, ProcessInfo, Selector,
    CHUNK_SIZE,
};
pub use sandbox::{
    ListQuery, OnTimeout, Sandbox, SandboxInfo, SandboxMetrics, SandboxOptions, SandboxState,
    DEFAULT_DISK_INODES, DEFAULT_DISK_SIZE, DEFAULT_MEMORY_LIMIT, DEFAULT_OPEN_FILES_LIMIT,
    DEFAULT_PIDS_LIMIT, DEFAULT_TIMEOUT, DEFAULT_TMP_SIZE,
};
pub use seccomp::{ArgCondition, SeccompAction, SeccompPolicy, SOULBOX_SYSCALLS};
pub use zygote::{launcher, set_launcher, Launcher};

/// Leak checks for tests and operators.
pub mod diagnostics {
    use std::path::PathBuf;

    /// Returns SoulBox's parent cgroup in every hierarchy it uses. Each
    /// contains one directory per live sandbox.
    pub fn cgroup_parents() -> Vec<PathBuf> {
        crate::cgroup::parent_dirs()
    }

    /// Returns SoulBox's state directory: `SOULBOX_STATE_DIR` when it is
    /// absolute, else `/run/soulbox` for root and a directory under
    /// `XDG_RUNTIME_DIR` otherwise.
    pub fn state_dir() -> PathBuf {
        crate::paths::state_dir()
    }

    /// Returns whether `name` has the shape of a sandbox id.
    pub fn is_sandbox_id(name: &str) -> bool {
        crate::id::is_sandbox_id(name)
    }

    /// Returns the id and the host pid of PID 1 of every sandbox waiting in
    /// `pool`. Such sandboxes cannot be reached through
    /// [`Sandbox::connect`](crate::Sandbox::connect) until a hand-over.
    pub fn pool_waiting(pool: &crate::SandboxPool) -> Vec<(String, i32)> {
        pool.waiting_sandboxes()
    }

    /// Returns the host pid of this process's zygote, the process that
    /// forks each sandbox's PID 1 under [`Launcher::Zygote`](crate::Launcher),
    /// while one runs.
    pub fn zygote_pid() -> Option<i32> {
        crate::zygote::zygote_pid()
    }
}
