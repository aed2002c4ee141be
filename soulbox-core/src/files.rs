//! Reading and writing files of a sandbox from the host side.
//!
//! Every path resolves inside the sandbox's root with openat2 and
//! RESOLVE_IN_ROOT: an absolute symlink or a `..` that sandboxed code
//! planted resolves against the sandbox's root, never the host's, and
//! /proc magic links are refused. No round trip into the sandbox is made.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sandbox::{Inner, Sandbox};
use crate::sys;
use crate::template::{USER_HOME, USER_UID};

/// File access to one sandbox; see [`Sandbox::files`].
#[derive(Debug, Clone)]
pub struct Files {
    sandbox: Arc<Inner>,
}

impl Sandbox {
    /// File access to this sandbox. Relative paths resolve against
    /// /home/user; files and directories created belong to `user`.
    pub fn files(&self) -> Files {
        Files {
            sandbox: Arc::clone(&self.inner),
        }
    }
}

impl Files {
    /// Reads a whole file.
    ///
    /// # Errors
    ///
    /// [`Error::FileNotFound`] if it does not exist;
    /// [`Error::InvalidArgument`] if it is a directory.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        let sandbox = Arc::clone(&self.sandbox);
        let path = path.to_string();
        blocking(move || read_file(&sandbox, &path)).await
    }

    /// Writes a whole file, creating missing parent directories and
    /// replacing any previous contents.
    ///
    /// # Errors
    ///
    /// [`Error::NotEnoughSpace`] when the writable layer is full;
    /// [`Error::InvalidArgument`] if a parent is not a directory.
    pub async fn write(&self, path: &str, data: impl Into<Vec<u8>>) -> Result<()> {
        self.write_with_mode(path, data, 0o644).await
    }

    /// Writes a whole file as [`Files::write`] does, giving a newly created
    /// file the permission bits `mode` (for example 0o755 for a script).
    /// An existing file keeps its mode.
    ///
    /// # Errors
    ///
    /// As [`Files::write`]; [`Error::InvalidArgument`] for a mode above
    /// 0o777.
    pub async fn write_with_mode(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<()> {
        if mode > 0o777 {
            return Err(Error::InvalidArgument(format!(
                "file mode {mode:#o} has bits above 0o777; setuid, setgid and sticky bits \
                 cannot be set"
            )));
        }
        let sandbox = Arc::clone(&self.sandbox);
        let path = path.to_string();
        let data = data.into();
        blocking(move || write_file(&sandbox, &path, &data, mode)).await
    }

    /// Creates a directory and any missing parents. Returns false if it
    /// already existed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if a file is in the way.
    pub async fn make_dir(&self, path: &str) -> Result<bool> {
        let sandbox = Arc::clone(&self.sandbox);
        let path = path.to_string();
        blocking(move || {
            ensure_running(&sandbox)?;
            let full = sandbox_path(&path)?;
            let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
            match sys::openat2_in_root(sandbox.root.as_fd(), &c_path(&full)?, dir_flags, 0) {
                Ok(_) => return Ok(false),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(Error::InvalidArgument(format!(
                        "{path:?} exists and is not a directory"
                    )))
                }
                Err(e) => return Err(file_error(&path, "open a directory in the sandbox")(e)),
            }
            make_parents(&sandbox, &full, &path)?;
            Ok(true)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::os("run a file operation")(io::Error::other(e.to_string())))?
}

/// Turns a caller's path into an absolute path inside the sandbox.
fn sandbox_path(path: &str) -> Result<String> {
    if path.is_empty() {
        return Err(Error::InvalidArgument("path is empty".into()));
    }
    if path.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "path {path:?} contains a NUL byte"
        )));
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{USER_HOME}/{path}")
    })
}

fn c_path(path: &str) -> Result<CString> {
    sys::c_string(path.as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {path:?} contains a NUL byte")))
}

/// Maps an OS error on `path` to the matching SoulBox error.
fn file_error<'a>(path: &'a str, step: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::FileNotFound {
            path: path.to_string(),
        },
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NotEnoughSpace {
            path: path.to_string(),
        },
        Some(libc::EISDIR) => Error::InvalidArgument(format!("{path:?} is a directory")),
        Some(libc::ENOTDIR) => {
            Error::InvalidArgument(format!("a parent of {path:?} is not a directory"))
        }
        Some(libc::ELOOP) => {
            Error::InvalidArgument(format!("{path:?} resolves through too many symlinks"))
        }
        _ => Error::Os { step, source: e },
    }
}

/// Opens `full` (an absolute sandbox path) for the caller's `path`.
fn open_in(root: BorrowedFd<'_>, full: &str, path: &str, flags: i32, mode: u32) -> Result<OwnedFd> {
    sys::openat2_in_root(root, &c_path(full)?, flags, mode)
        .map_err(file_error(path, "open a file in the sandbox"))
}

/// Opens an existing regular file. The open is non-blocking and the type is
/// checked before any data moves, so a FIFO or device that sandboxed code
/// planted (say a symlink to /dev/zero) cannot block or flood the host.
fn open_regular(root: BorrowedFd<'_>, full: &str, path: &str, flags: i32) -> Result<std::fs::File> {
    let not_regular =
        || Error::InvalidArgument(format!("{path:?} is not a regular file in the sandbox"));
    let fd = match sys::openat2_in_root(root, &c_path(full)?, flags | libc::O_NONBLOCK, 0) {
        Ok(fd) => fd,
        // A FIFO with no reader refuses a non-blocking open for writing.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(not_regular()),
        Err(e) => return Err(file_error(path, "open a file in the sandbox")(e)),
    };
    let file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .map_err(file_error(path, "stat a file in the sandbox"))?;
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!("{path:?} is a directory")));
    }
    if !meta.is_file() {
        return Err(not_regular());
    }
    sys::clear_nonblocking(file.as_fd()).map_err(file_error(path, "open a file in the sandbox"))?;
    Ok(file)
}

fn read_file(sandbox: &Inner, path: &str) -> Result<Vec<u8>> {
    ensure_running(sandbox)?;
    let full = sandbox_path(path)?;
    let mut file = open_regular(sandbox.root.as_fd(), &full, path, libc::O_RDONLY)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(file_error(path, "read a file in the sandbox"))?;
    Ok(data)
}

fn write_file(sandbox: &Inner, path: &str, data: &[u8], mode: u32) -> Result<()> {
    ensure_running(sandbox)?;
    let full = sandbox_path(path)?;
    let (parent, name) = full.rsplit_once('/').unwrap_or(("", &full));
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!(
            "{path:?} does not name a file"
        )));
    }
    make_parents(sandbox, parent, path)?;
    let root = sandbox.root.as_fd();
    let create = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let mut file = match sys::openat2_in_root(root, &c_path(&full)?, create, mode) {
        Ok(fd) => {
            // A new file belongs to the sandbox user, as if a command made
            // it, and gets `mode` regardless of this process's umask.
            set_owner(sandbox, fd.as_fd())
                .map_err(file_error(path, "set the owner of a new file"))?;
            let file = std::fs::File::from(fd);
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(file_error(path, "set the mode of a new file"))?;
            file
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // Truncate only once the file is known to be a regular file.
            let file = open_regular(root, &full, path, libc::O_WRONLY)?;
            file.set_len(0)
                .map_err(file_error(path, "truncate a file in the sandbox"))?;
            file
        }
        Err(e) => return Err(file_error(path, "create a file in the sandbox")(e)),
    };
    file.write_all(data)
        .map_err(file_error(path, "write a file in the sandbox"))?;
    Ok(())
}

/// Creates each missing directory of `dir` (an absolute sandbox path), owned
/// by the sandbox user.
fn make_parents(sandbox: &Inner, dir: &str, path: &str) -> Result<()> {
    let root = sandbox.root.as_fd();
    let mut prefix = String::new();
    for component in dir.split('/').filter(|c| !c.is_empty()) {
        let parent = if prefix.is_empty() {
            "/".to_string()
        } else {
            prefix.clone()
        };
        prefix.push('/');
        prefix.push_str(component);
        let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
        match sys::openat2_in_root(root, &c_path(&prefix)?, dir_flags, 0) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(file_error(path, "open a directory in the sandbox")(e)),
        }
        let parent_fd = open_in(root, &parent, path, dir_flags, 0)?;
        match sys::mkdirat(parent_fd.as_fd(), &c_path(component)?, 0o755) {
            Ok(()) => {
                let made = open_in(root, &prefix, path, dir_flags, 0)?;
                set_owner(sandbox, made.as_fd())
                    .map_err(file_error(path, "set the owner of a new directory"))?;
            }
            // A concurrent writer made it first.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(file_error(path, "create a directory in the sandbox")(e)),
        }
    }
    Ok(())
}

/// Gives a new file or directory to the sandbox's `user`. In a rootless
/// sandbox the caller already owns it, and the caller is sandbox root.
fn set_owner(sandbox: &Inner, fd: BorrowedFd<'_>) -> io::Result<()> {
    if sandbox.rootless {
        return Ok(());
    }
    sys::fchown_empty_path(fd, USER_UID, USER_UID)
}

fn ensure_running(sandbox: &Inner) -> Result<()> {
    if sandbox.is_running() {
        Ok(())
    } else {
        Err(sandbox.not_running())
    }
}
