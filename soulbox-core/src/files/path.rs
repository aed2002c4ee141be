//! Turning a caller's path into lookups that stay inside the sandbox.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use super::file_error;
use crate::error::{Error, Result};
use crate::sandbox::Inner;
use crate::sys;
use crate::template::USER_HOME;

/// Flags that open a directory only as a starting point for *at calls.
pub(super) const DIR_PATH: i32 = libc::O_PATH | libc::O_DIRECTORY;
/// Flags that open a directory for reading its entries.
pub(super) const DIR_READ: i32 = libc::O_RDONLY | libc::O_DIRECTORY;
/// Permission bits of directories the API creates.
const DIR_MODE: u32 = 0o755;

/// A caller's path, and the absolute path inside the sandbox it names.
#[derive(Debug, Clone)]
pub(super) struct SandboxPath {
    caller: String,
    full: String,
}

impl SandboxPath {
    /// Checks `path` and makes it absolute; a relative path starts at
    /// /home/user.
    pub(super) fn new(path: &str) -> Result<Self> {
        Self::new_in(path, USER_HOME)
    }

    /// Checks `path` and makes it absolute; a relative path starts at
    /// `base`, an absolute directory.
    pub(super) fn new_in(path: &str, base: &str) -> Result<Self> {
        if path.is_empty() {
            return Err(Error::InvalidArgument("path is empty".into()));
        }
        if path.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "path {path:?} contains a NUL byte"
            )));
        }
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", base.trim_end_matches('/'))
        };
        Ok(Self {
            caller: path.to_string(),
            full,
        })
    }

    /// Returns the path of `name` in this directory.
    pub(super) fn child(&self, name: &str) -> Self {
        Self {
            caller: format!("{}/{name}", self.caller.trim_end_matches('/')),
            full: format!("{}/{name}", self.full.trim_end_matches('/')),
        }
    }

    /// The path as the caller gave it, for error messages.
    pub(super) fn caller(&self) -> &str {
        &self.caller
    }

    /// The absolute path inside the sandbox, unresolved.
    pub(super) fn full(&self) -> &str {
        &self.full
    }

    pub(super) fn c_full(&self) -> CString {
        c_path(&self.full)
    }

    /// The absolute path with `.`, `..` and repeated slashes removed by
    /// text alone, as [`super::EntryInfo::path`] reports it. A `..` after a
    /// symlink therefore differs from where the kernel resolves it.
    pub(super) fn normalized(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for component in self.full.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        format!("/{}", parts.join("/"))
    }

    /// Splits the path into its parent directory and its last component.
    /// Returns `None` for the root and for a path that ends in `.` or
    /// `..`, which name no entry of a directory.
    pub(super) fn split(&self) -> Option<(String, Name)> {
        let trimmed = self.full.trim_end_matches('/');
        let (parent, last) = trimmed.rsplit_once('/')?;
        let name = Name::new(last.as_bytes())?;
        let parent = if parent.is_empty() { "/" } else { parent };
        Some((parent.to_string(), name))
    }
}

/// Converts a path already checked to contain no NUL byte.
pub(super) fn c_path(path: &str) -> CString {
    CString::new(path).expect("sandbox paths are checked for NUL bytes")
}

/// One path component: not empty, not `.` or `..`, and without '/'.
/// Every *at call of the file API takes one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name(CString);

impl Name {
    pub(super) fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return None;
        }
        CString::new(bytes).ok().map(Self)
    }

    pub(super) fn as_c_str(&self) -> &CStr {
        &self.0
    }

    /// The name as text; bytes that are not UTF-8 become U+FFFD.
    pub(super) fn to_lossy(&self) -> String {
        String::from_utf8_lossy(self.0.to_bytes()).into_owned()
    }
}

/// Opens an absolute sandbox path with openat2 RESOLVE_IN_ROOT.
pub(super) fn open_in_root(sandbox: &Inner, full: &CStr, flags: i32) -> io::Result<OwnedFd> {
    sandbox.with_root(|root| sys::openat2_in_root(root, full, flags, 0))
}

/// Opens the entry `name` of `dir` without following a symlink.
pub(super) fn open_child(dir: BorrowedFd<'_>, name: &Name, flags: i32) -> io::Result<OwnedFd> {
    sys::openat2_name(dir, name.as_c_str(), flags, 0)
}

/// Deepest directory level below a walk's top that list, remove, copy_out
/// and recursive watches follow.
pub const MAX_TREE_DEPTH: usize = 512;

/// Opens what `names` leads to from `top`, one component at a time and
/// following no symlink, so a directory that sandboxed code swaps for a
/// symlink during a walk fails the walk instead of redirecting it.
/// `names` must not be empty. Only two descriptors are open at a time,
/// however deep the walk goes.
pub(super) fn open_descendant(
    top: BorrowedFd<'_>,
    names: &[Name],
    flags: i32,
) -> io::Result<OwnedFd> {
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // Each level is opened from the top again, so the walks that use this
    // cost the square of the depth; a tree that sandboxed code nests deeper
    // than this is refused rather than left to take minutes of host CPU.
    if names.len() > MAX_TREE_DEPTH {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let dir = current.as_ref().map_or(top, |fd| fd.as_fd());
        current = Some(open_child(dir, name, DIR_PATH)?);
    }
    let dir = current.as_ref().map_or(top, |fd| fd.as_fd());
    open_child(dir, last, flags)
}

/// Opens an existing regular file. The open is non-blocking and the type is
/// checked before any data moves, so a FIFO or device that sandboxed code
/// planted (say a symlink to /dev/zero) cannot block or flood the host.
pub(super) fn open_regular(sandbox: &Inner, path: &SandboxPath, flags: i32) -> Result<File> {
    let caller = path.caller();
    let not_regular =
        || Error::InvalidArgument(format!("{caller:?} is not a regular file in the sandbox"));
    let fd = match open_in_root(sandbox, &path.c_full(), flags | libc::O_NONBLOCK) {
        Ok(fd) => fd,
        // A FIFO with no reader rejects a non-blocking open for writing.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(not_regular()),
        Err(e) => return Err(file_error(caller, "open a file in the sandbox")(e)),
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(file_error(caller, "stat a file in the sandbox"))?;
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!("{caller:?} is a directory")));
    }
    if !meta.is_file() {
        return Err(not_regular());
    }
    sys::clear_nonblocking(file.as_fd())
        .map_err(file_error(caller, "open a file in the sandbox"))?;
    Ok(file)
}

/// Opens the directory `dir` (an absolute sandbox path), creating it and
/// each missing parent with mode 0755. Returns the directory and whether
/// this call created it. Directories belong to the thread's fsuid, which
/// is the call's user.
pub(super) fn make_dirs(sandbox: &Inner, dir: &str, caller: &str) -> Result<(OwnedFd, bool)> {
    let open_error = |e| file_error(caller, "open a directory in the sandbox")(e);
    match open_in_root(sandbox, &c_path(dir), DIR_PATH) {
        Ok(fd) => return Ok((fd, false)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(open_error(e)),
    }
    let mut parent = open_in_root(sandbox, c"/", DIR_PATH).map_err(open_error)?;
    let mut prefix = String::new();
    let mut created = false;
    for component in dir.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(component);
        match open_in_root(sandbox, &c_path(&prefix), DIR_PATH) {
            Ok(fd) => {
                parent = fd;
                created = false;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(open_error(e)),
        }
        // `.` and `..` exist whenever their parent does, so a missing
        // component is always a plain name.
        let name = Name::new(component.as_bytes()).ok_or_else(|| Error::FileNotFound {
            path: caller.to_string(),
        })?;
        match sys::mkdirat(parent.as_fd(), name.as_c_str(), DIR_MODE) {
            Ok(()) => {
                let made = open_child(parent.as_fd(), &name, DIR_READ).map_err(open_error)?;
                // mkdir applies the host process's umask; the mode is set
                // again so that it does not depend on the host.
                File::from(made.try_clone().map_err(open_error)?)
                    .set_permissions(std::fs::Permissions::from_mode(DIR_MODE))
                    .map_err(file_error(caller, "set the mode of a new directory"))?;
                parent = made;
                created = true;
            }
            // A concurrent writer made it first.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                parent = open_in_root(sandbox, &c_path(&prefix), DIR_PATH).map_err(open_error)?;
                created = false;
            }
            Err(e) => return Err(file_error(caller, "create a directory in the sandbox")(e)),
        }
    }
    Ok((parent, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_start_at_home() {
        let path = SandboxPath::new("a/b").unwrap();
        assert_eq!(path.full(), "/home/user/a/b");
        assert_eq!(path.caller(), "a/b");
    }

    #[test]
    fn empty_and_nul_paths_rejected() {
        assert!(SandboxPath::new("").is_err());
        assert!(SandboxPath::new("a\0b").is_err());
    }

    #[test]
    fn split_gives_parent_and_name() {
        let (parent, name) = SandboxPath::new("/a/b/c/").unwrap().split().unwrap();
        assert_eq!(parent, "/a/b");
        assert_eq!(name.to_lossy(), "c");
        let (parent, name) = SandboxPath::new("/top").unwrap().split().unwrap();
        assert_eq!(parent, "/");
        assert_eq!(name.to_lossy(), "top");
    }

    #[test]
    fn split_rejects_root_dot_and_dotdot() {
        for path in ["/", "///", "/a/.", "/a/..", "x/.."] {
            assert!(
                SandboxPath::new(path).unwrap().split().is_none(),
                "{path:?} should have no last name"
            );
        }
    }

    #[test]
    fn normalized_removes_dots() {
        let path = SandboxPath::new("/a//./b/../c/").unwrap();
        assert_eq!(path.normalized(), "/a/c");
        assert_eq!(SandboxPath::new("/../..").unwrap().normalized(), "/");
    }

    #[test]
    fn names_are_single_components() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(Name::new(bad).is_none(), "{bad:?} is not a name");
        }
        assert!(Name::new(b"...").is_some());
        assert!(Name::new("ünï😀 x".as_bytes()).is_some());
    }
}
