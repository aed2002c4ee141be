//! Removing and renaming files and directories.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::entry::{read_names, stat_path, EntryInfo};
use super::path::{self, Name, SandboxPath, DIR_PATH, DIR_READ};
use super::{file_error, Files};
use crate::error::{Error, Result};
use crate::sandbox::Inner;
use crate::sys;

/// How often a directory is emptied again when it is still not empty,
/// because sandboxed code keeps adding entries while it is removed.
const EMPTY_ATTEMPTS: usize = 5;

impl Files {
    /// Removes a file, a symlink (not its target) or a directory with
    /// everything below it. A path that does not exist is not an error.
    ///
    /// The removal never follows a symlink below `path`, so it cannot
    /// reach a directory outside the tree even if sandboxed code swaps one
    /// in while it runs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for the root or a path that ends in `.`
    /// or `..`; [`Error::PermissionDenied`] if the user may not remove an
    /// entry, in which case the entries removed before it stay removed.
    pub async fn remove(&self, path: &str) -> Result<()> {
        let path = self.sandbox_path(path)?;
        self.run_as_user(move |sandbox| remove_path(sandbox, &path))
            .await
    }

    /// Renames `from` to `to`, replacing `to` as rename(2) does (a file
    /// replaces a file, a directory an empty directory), and returns the
    /// description of `to`. A symlink is renamed itself. Missing parents of
    /// `to` are not created.
    ///
    /// # Errors
    ///
    /// [`Error::FileNotFound`] if `from` or the parent of `to` does not
    /// exist. [`Error::InvalidArgument`] if the two are on different mounts
    /// of the sandbox (for example /home and /tmp), or if the rename is not
    /// possible, such as a directory into itself or a file over a
    /// directory. [`Error::PermissionDenied`] if the user may not change
    /// either directory.
    pub async fn rename(&self, from: &str, to: &str) -> Result<EntryInfo> {
        let from = self.sandbox_path(from)?;
        let to = self.sandbox_path(to)?;
        self.run_as_user(move |sandbox| {
            rename_path(sandbox, &from, &to)?;
            stat_path(sandbox, &to)
        })
        .await
    }
}

fn remove_path(sandbox: &Inner, path: &SandboxPath) -> Result<()> {
    let caller = path.caller();
    let Some((parent_path, name)) = path.split() else {
        return Err(Error::InvalidArgument(format!(
            "{caller:?} cannot be removed: it is the root or ends in . or .."
        )));
    };
    let parent = match path::open_in_root(sandbox, &path::c_path(&parent_path), DIR_PATH) {
        Ok(fd) => fd,
        // A missing parent, or a parent that is a file, means that the
        // path does not exist; `rm -f` treats both the same way.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => return Ok(()),
        Err(e) => return Err(file_error(caller, "open a directory in the sandbox")(e)),
    };
    remove_entry(parent.as_fd(), &name).map_err(file_error(caller, "remove a path in the sandbox"))
}

/// Removes the entry `name` of `dir`, with everything below it if it is a
/// directory.
fn remove_entry(dir: BorrowedFd<'_>, name: &Name) -> std::io::Result<()> {
    match sys::unlinkat_name(dir, name.as_c_str(), false) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        // Linux reports EISDIR when unlink meets a directory.
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
        Err(e) => return Err(e),
    }
    remove_tree(dir, name)
}

/// Removes the directory `name` of `top` and everything below it.
///
/// The walk keeps no descriptor per level. Each directory is reached again
/// from `top` through its names with [`path::open_descendant`], so a tree
/// of any depth needs two or three descriptors. The walk keeps a list
/// instead of recursing, so the host's stack does not grow with the depth
/// either.
fn remove_tree(top: BorrowedFd<'_>, name: &Name) -> std::io::Result<()> {
    // Directories still to handle, as names below `top`, and whether their
    // subdirectories are gone already so that they can be removed.
    let mut pending: Vec<(Vec<Name>, bool)> = vec![(vec![name.clone()], false)];
    let mut attempts = 0;
    while let Some((names, emptied)) = pending.pop() {
        let (last, parents) = names.split_last().expect("pending paths are not empty");
        let parent = open_parent(top, parents)?;
        let parent = parent.as_ref().map_or(top, |fd| fd.as_fd());
        if emptied {
            match sys::unlinkat_name(parent, last.as_c_str(), true) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                // Sandboxed code added entries after the directory was
                // emptied; empty it again a bounded number of times.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOTEMPTY) && attempts < EMPTY_ATTEMPTS =>
                {
                    attempts += 1;
                    pending.push((names, false));
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        let dir = match path::open_child(parent, last, DIR_READ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            // Swapped for a symlink or a file since it was seen: remove
            // that entry itself.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                remove_entry(parent, last)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let subdirectories = remove_files(dir.as_fd())?;
        pending.push((names.clone(), true));
        for child in subdirectories {
            let mut below = names.clone();
            below.push(child);
            pending.push((below, false));
        }
    }
    Ok(())
}

/// Opens the directory that `names` lead to from `top`, or returns `None`
/// for `top` itself.
fn open_parent(top: BorrowedFd<'_>, names: &[Name]) -> std::io::Result<Option<OwnedFd>> {
    if names.is_empty() {
        return Ok(None);
    }
    path::open_descendant(top, names, DIR_PATH).map(Some)
}

/// Removes every entry of `dir` that is not a directory, and returns the
/// names of its subdirectories.
fn remove_files(dir: BorrowedFd<'_>) -> std::io::Result<Vec<Name>> {
    let mut subdirectories = Vec::new();
    for name in read_names(dir)? {
        match sys::unlinkat_name(dir, name.as_c_str(), false) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => subdirectories.push(name),
            Err(e) => return Err(e),
        }
    }
    Ok(subdirectories)
}

fn rename_path(sandbox: &Inner, from: &SandboxPath, to: &SandboxPath) -> Result<()> {
    let no_name = |path: &SandboxPath| {
        Error::InvalidArgument(format!(
            "{:?} cannot be renamed: it is the root or ends in . or ..",
            path.caller()
        ))
    };
    let (from_parent, from_name) = from.split().ok_or_else(|| no_name(from))?;
    let (to_parent, to_name) = to.split().ok_or_else(|| no_name(to))?;
    let open = |parent: &str, path: &SandboxPath| {
        path::open_in_root(sandbox, &path::c_path(parent), DIR_PATH)
            .map_err(file_error(path.caller(), "open a directory in the sandbox"))
    };
    let from_dir = open(&from_parent, from)?;
    let to_dir = open(&to_parent, to)?;
    let renamed = sys::renameat_names(
        from_dir.as_fd(),
        from_name.as_c_str(),
        to_dir.as_fd(),
        to_name.as_c_str(),
    );
    let (from, to) = (from.caller(), to.caller());
    renamed.map_err(|e| match e.raw_os_error() {
        Some(libc::EXDEV) => Error::InvalidArgument(format!(
            "cannot rename {from:?} to {to:?}: they are on different mounts of the sandbox; \
             write a copy and remove the original instead"
        )),
        Some(libc::EINVAL) => Error::InvalidArgument(format!(
            "cannot rename {from:?} to {to:?}: a directory cannot move into itself"
        )),
        Some(libc::EISDIR) => Error::InvalidArgument(format!(
            "cannot rename {from:?} to {to:?}: {to:?} is a directory and {from:?} is not"
        )),
        Some(libc::ENOTDIR) => Error::InvalidArgument(format!(
            "cannot rename {from:?} to {to:?}: one is a directory and the other is not"
        )),
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => Error::InvalidArgument(format!(
            "cannot rename {from:?} to {to:?}: {to:?} is a directory that is not empty"
        )),
        Some(libc::EBUSY) => Error::InvalidArgument(format!(
            "cannot rename {from:?} to {to:?}: one of them is a mount point"
        )),
        _ => file_error(from, "rename a path in the sandbox")(e),
    })
}
