//! Reading, writing, listing and watching a sandbox's files from the host
//! side.
//!
//! Every path resolves inside the sandbox's root, never the host's. A
//! caller's path goes to openat2 with RESOLVE_IN_ROOT and
//! RESOLVE_NO_MAGICLINKS, relative to the sandbox's root directory, so an
//! absolute symlink or a `..` that sandboxed code planted resolves against
//! the sandbox's root and /proc magic links are rejected. Steps below a
//! directory opened that way (recursive listing and removal, renames, new
//! subdirectories of a watch) use *at calls on one path component at a
//! time, which is never `..` and never followed if it is a symlink. No
//! round trip into the sandbox is made.
//!
//! Each call acts as a sandbox user: `user`, unless [`Files::user`] names
//! another. The blocking thread that does the work switches its file
//! system uid, gid and groups to that user's for the duration, so the
//! kernel checks permissions as it would for a command of that user, and
//! what the call creates belongs to that user.

mod copy;
mod entry;
mod path;
mod read;
mod remove;
mod watch;
mod write;

use std::io;
use std::sync::Arc;

pub use copy::CopySummary;
pub use entry::{EntryInfo, FileType};
pub use read::{FileReader, MAX_READ_SIZE};
pub use watch::{FilesystemEvent, FilesystemEventKind, Watcher};

use crate::error::{Error, Result};
use crate::sandbox::{Inner, Sandbox};
use crate::sys;
use crate::template::USER_UID;

/// File access to one sandbox as one of its users; see [`Sandbox::files`].
#[derive(Debug, Clone)]
pub struct Files {
    sandbox: Arc<Inner>,
    /// The user name given to [`Files::user`]; `None` is the default user.
    user: Option<String>,
}

impl Sandbox {
    /// File access to this sandbox as `user` (as `root` in a rootless
    /// sandbox). Relative paths resolve against /home/user.
    pub fn files(&self) -> Files {
        Files {
            sandbox: Arc::clone(&self.inner),
            user: None,
        }
    }
}

/// A sandbox user that file calls act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileUser {
    uid: u32,
    gid: u32,
    /// False in a rootless sandbox, whose only user, root, is the caller
    /// itself, so the thread's credentials are already that user's.
    switch_credentials: bool,
}

impl Files {
    /// Returns file access that acts as the sandbox user `name`: `user`
    /// (uid 1000) or `root`. In a rootless sandbox `root` is the only user.
    /// An unknown name fails each call with [`Error::InvalidArgument`].
    pub fn user(&self, name: impl Into<String>) -> Files {
        Files {
            sandbox: Arc::clone(&self.sandbox),
            user: Some(name.into()),
        }
    }

    /// Checks `path` and makes it absolute. A relative path starts at
    /// /home/user, or in an image template at the image's `WorkingDir`,
    /// where its commands start.
    fn sandbox_path(&self, path: &str) -> Result<path::SandboxPath> {
        match self.sandbox.image.as_deref() {
            Some(image) => path::SandboxPath::new_in(path, &image.working_dir),
            None => path::SandboxPath::new(path),
        }
    }

    fn resolve_user(&self) -> Result<FileUser> {
        // A rootless sandbox's user namespace maps only the caller's uid,
        // to root, so root is its only user and the default.
        let rootless = self.sandbox.rootless;
        // An image template's users are those its commands run as: the
        // image's `User` by default, or a name from its /etc/passwd.
        if let Some(image) = self.sandbox.image.as_deref() {
            let (uid, gid) = crate::command::user_ids(self.user.as_deref(), rootless, Some(image))?;
            return Ok(FileUser {
                uid,
                gid,
                switch_credentials: !rootless,
            });
        }
        let default = if rootless { "root" } else { "user" };
        match self.user.as_deref().unwrap_or(default) {
            "user" if rootless => Err(Error::InvalidArgument(
                "user \"user\" does not exist in a rootless sandbox, whose user namespace \
                 maps only the caller's uid (to root); use \"root\", which has no privileges \
                 on the host"
                    .into(),
            )),
            "user" => Ok(FileUser {
                uid: USER_UID,
                gid: USER_UID,
                switch_credentials: true,
            }),
            "root" => Ok(FileUser {
                uid: 0,
                gid: 0,
                switch_credentials: !rootless,
            }),
            other => Err(Error::InvalidArgument(format!(
                "unknown user {other:?}; the host template has \"user\" and \"root\""
            ))),
        }
    }

    /// Runs `work` on a blocking thread whose file system credentials are
    /// the call's user's for the whole of `work`.
    async fn run_as_user<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.run_blocking(move |sandbox, user| {
            let _credentials = act_as(user)?;
            work(sandbox)
        })
        .await
    }

    /// Runs `work` on a blocking thread with the host's credentials; `work`
    /// switches to the user's with [`act_as`] around the steps that touch
    /// the sandbox.
    ///
    /// A call that fails once the sandbox has ended returns
    /// [`Error::SandboxNotRunning`]. A kill during the call closes the
    /// sandbox's root directory, so the next step fails with ESRCH, which
    /// would not name the cause.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, FileUser) -> Result<T> + Send + 'static,
    {
        let user = self.resolve_user()?;
        self.sandbox.resume_if_auto().await?;
        let sandbox = Arc::clone(&self.sandbox);
        let task = tokio::task::spawn_blocking(move || {
            ensure_running(&sandbox)?;
            work(&sandbox, user).map_err(|error| match ensure_running(&sandbox) {
                Ok(()) => error,
                Err(not_running) => not_running,
            })
        });
        join(task).await
    }
}

/// Waits for a blocking task, passing on a panic in it as a panic.
async fn join<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::os("run a file operation")(io::Error::other(
            e.to_string(),
        ))),
    }
}

/// Switches the calling thread to `user`'s file system credentials until
/// the guard drops.
fn act_as(user: FileUser) -> Result<Option<sys::FsCredentialsGuard>> {
    if !user.switch_credentials {
        return Ok(None);
    }
    sys::switch_fs_credentials(user.uid, user.gid)
        .map(Some)
        .map_err(Error::os(
            "switch to the sandbox user's file system credentials",
        ))
}

fn ensure_running(sandbox: &Inner) -> Result<()> {
    if sandbox.is_running() {
        Ok(())
    } else {
        Err(sandbox.not_running())
    }
}

/// Maps an OS error on the caller's `path` to the matching SoulBox error.
fn file_error<'a>(path: &'a str, step: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::FileNotFound {
            path: path.to_string(),
        },
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NotEnoughSpace {
            path: path.to_string(),
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            path: path.to_string(),
        },
        Some(libc::EISDIR) => Error::InvalidArgument(format!("{path:?} is a directory")),
        Some(libc::ENOTDIR) => {
            Error::InvalidArgument(format!("a parent of {path:?} is not a directory"))
        }
        Some(libc::ELOOP) => Error::InvalidArgument(format!(
            "{path:?} resolves through too many symlinks or through a /proc magic link"
        )),
        Some(libc::EROFS) => Error::InvalidArgument(format!(
            "{path:?} is on a read-only mount of the sandbox, such as /usr"
        )),
        Some(libc::ENAMETOOLONG) => Error::InvalidArgument(format!(
            "{path:?} is longer than the kernel's path or name limit, or holds a tree \
             nested deeper than {} levels",
            path::MAX_TREE_DEPTH
        )),
        _ => Error::File {
            step,
            path: path.to_string(),
            source: e,
        },
    }
}
