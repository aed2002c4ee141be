//! Copying files and directory trees between the host and a sandbox.
//!
//! File contents move with std::io::copy, which has the kernel copy them
//! (copy_file_range, or sendfile between file systems) without passing
//! through the host process's memory.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::entry::read_names;
use super::path::{self, Name, SandboxPath, DIR_READ};
use super::write::WriteTarget;
use super::{act_as, file_error, FileUser, Files};
use crate::error::{Error, Result};
use crate::sandbox::Inner;
use crate::sys;

/// The totals of a [`Files::copy_in`] or [`Files::copy_out`], and the
/// entries it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopySummary {
    /// Regular files copied.
    pub files: u64,
    /// Directories copied, the top one included.
    pub directories: u64,
    /// Bytes of file contents copied. Holes in sparse files stay holes and
    /// are not counted.
    pub bytes: u64,
    /// Source paths below the top that were not copied because they are
    /// neither regular files nor directories: symlinks, FIFOs, sockets and
    /// devices. Host paths for `copy_in`, sandbox paths for `copy_out`.
    pub skipped: Vec<PathBuf>,
}

impl Files {
    /// Copies the host file or directory tree `host_path` to
    /// `sandbox_path`, which becomes the copy (it is not a directory to copy
    /// into). Directories are created as [`Files::make_dir`] does, and files
    /// are written as [`Files::write`] does, keeping their permission bits
    /// up to 0o777.
    ///
    /// The host side is read with the caller's own permissions; the sandbox
    /// side is written as the user, who owns what is created. A symlink at
    /// `host_path` itself is followed; below it, symlinks and special files
    /// are skipped and listed in [`CopySummary::skipped`].
    ///
    /// # Errors
    ///
    /// [`Error::HostFile`] if a host path cannot be read;
    /// [`Error::InvalidArgument`] if `host_path` is neither a regular file
    /// nor a directory, or a host name is not UTF-8;
    /// [`Error::SandboxNotRunning`] if the sandbox ends before or during the
    /// copy; otherwise as [`Files::write`] and [`Files::make_dir`]. What was
    /// copied before the error stays in the sandbox.
    pub async fn copy_in(
        &self,
        host_path: impl AsRef<Path>,
        sandbox_path: &str,
    ) -> Result<CopySummary> {
        let host = host_path.as_ref().to_path_buf();
        let target = self.sandbox_path(sandbox_path)?;
        self.run_blocking(move |sandbox, user| copy_tree_in(sandbox, user, &host, &target))
            .await
    }

    /// Copies the sandbox file or directory tree `sandbox_path` to
    /// `host_path`, which becomes the copy. Missing host directories are
    /// created, and existing host files are replaced. New host files get
    /// the sandbox file's permission bits up to 0o777.
    ///
    /// The sandbox side is read as the user; the host side is written with
    /// the caller's own permissions. A symlink at `sandbox_path` itself is
    /// followed inside the sandbox. Below it, no symlink is followed, on
    /// either side, and symlinks and special files are skipped and listed
    /// in [`CopySummary::skipped`]. Names below the top are single path
    /// components, so nothing is written outside `host_path`.
    ///
    /// # Errors
    ///
    /// [`Error::FileNotFound`] if `sandbox_path` does not exist;
    /// [`Error::PermissionDenied`] if the user may not read it;
    /// [`Error::InvalidArgument`] if it is neither a regular file nor a
    /// directory; [`Error::HostFile`] if a host path cannot be written.
    /// What was copied before the error stays on the host.
    pub async fn copy_out(
        &self,
        sandbox_path: &str,
        host_path: impl AsRef<Path>,
    ) -> Result<CopySummary> {
        let source = self.sandbox_path(sandbox_path)?;
        let host = host_path.as_ref().to_path_buf();
        self.run_blocking(move |sandbox, user| copy_tree_out(sandbox, user, &source, &host))
            .await
    }
}

fn host_error<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::HostFile {
        step,
        path: path.to_path_buf(),
        source,
    }
}

fn copy_tree_in(
    sandbox: &Inner,
    user: FileUser,
    host: &Path,
    target: &SandboxPath,
) -> Result<CopySummary> {
    let mut summary = CopySummary::default();
    let meta = std::fs::metadata(host).map_err(host_error("read", host))?;
    if meta.is_file() {
        copy_file_in(sandbox, user, host, true, target, &mut summary)?;
        return Ok(summary);
    }
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is neither a regular file nor a directory",
            host.display()
        )));
    }
    let mut pending = vec![(host.to_path_buf(), target.clone())];
    while let Some((host_dir, target_dir)) = pending.pop() {
        {
            let _credentials = act_as(user)?;
            path::make_dirs(sandbox, target_dir.full(), target_dir.caller())?;
        }
        summary.directories += 1;
        let mut entries = std::fs::read_dir(&host_dir)
            .map_err(host_error("list", &host_dir))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(host_error("list", &host_dir))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let host_path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::InvalidArgument(format!(
                    "{} has a name that is not UTF-8, which sandbox paths must be",
                    host_path.display()
                )));
            };
            let child = target_dir.child(name);
            let kind = entry.file_type().map_err(host_error("read", &host_path))?;
            if kind.is_dir() {
                pending.push((host_path, child));
            } else if kind.is_file() {
                copy_file_in(sandbox, user, &host_path, false, &child, &mut summary)?;
            } else {
                summary.skipped.push(host_path);
            }
        }
    }
    Ok(summary)
}

/// Copies one host file. A symlink at `host` is followed only with
/// `follow`, which is set for the path the caller gave and no other.
fn copy_file_in(
    sandbox: &Inner,
    user: FileUser,
    host: &Path,
    follow: bool,
    target: &SandboxPath,
    summary: &mut CopySummary,
) -> Result<()> {
    let mut source = open_host_file(host, follow)?;
    let mode = source
        .metadata()
        .map_err(host_error("read", host))?
        .permissions()
        .mode()
        & 0o777;
    let mut written = {
        let _credentials = act_as(user)?;
        WriteTarget::open(sandbox, target, mode)?
    };
    match std::io::copy(&mut source, &mut written.file) {
        Ok(bytes) => {
            summary.files += 1;
            summary.bytes += bytes;
            Ok(())
        }
        Err(e) => {
            if let Ok(_credentials) = act_as(user) {
                written.undo.run();
            }
            Err(file_error(
                target.caller(),
                "copy a host file into the sandbox",
            )(e))
        }
    }
}

/// Opens a host file for reading without blocking on a FIFO, nor following
/// a symlink unless `follow`, in case either took the place of a regular
/// file since the directory was read.
fn open_host_file(host: &Path, follow: bool) -> Result<File> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | nofollow)
        .open(host)
        .map_err(host_error("open", host))?;
    let is_file = file.metadata().map_err(host_error("read", host))?.is_file();
    if !is_file {
        return Err(Error::InvalidArgument(format!(
            "{} is not a regular file any more",
            host.display()
        )));
    }
    sys::clear_nonblocking(file.as_fd()).map_err(host_error("open", host))?;
    Ok(file)
}

fn copy_tree_out(
    sandbox: &Inner,
    user: FileUser,
    source: &SandboxPath,
    host: &Path,
) -> Result<CopySummary> {
    let caller = source.caller();
    let mut summary = CopySummary::default();
    // Non-blocking, so that a FIFO at the top cannot hold the open.
    let top = {
        let _credentials = act_as(user)?;
        path::open_in_root(sandbox, &source.c_full(), libc::O_RDONLY | libc::O_NONBLOCK)
            .map_err(file_error(caller, "open a path in the sandbox"))?
    };
    let stat = sys::fstat_fd(top.as_fd()).map_err(file_error(caller, "stat a path"))?;
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            sys::clear_nonblocking(top.as_fd()).map_err(file_error(caller, "open a file"))?;
            copy_file_out(File::from(top), stat.st_mode, host, true, &mut summary)?;
            return Ok(summary);
        }
        libc::S_IFDIR => {}
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{caller:?} is neither a regular file nor a directory"
            )))
        }
    }
    // Directories still to copy: their names below `top`, and their copy.
    let mut pending: Vec<(Vec<Name>, PathBuf)> = vec![(Vec::new(), host.to_path_buf())];
    while let Some((names, host_dir)) = pending.pop() {
        make_host_dir(&host_dir, names.is_empty())?;
        summary.directories += 1;
        let opened;
        let dir = if names.is_empty() {
            top.as_fd()
        } else {
            let _credentials = act_as(user)?;
            opened = path::open_descendant(top.as_fd(), &names, DIR_READ)
                .map_err(file_error(caller, "open a directory in the sandbox"))?;
            opened.as_fd()
        };
        let children = {
            let _credentials = act_as(user)?;
            read_names(dir).map_err(file_error(caller, "list a directory in the sandbox"))?
        };
        for name in children {
            let host_path = host_dir.join(OsStr::from_bytes(name.as_c_str().to_bytes()));
            // The type is checked before the open, so that no device node
            // is ever opened, and again after it, in case sandboxed code
            // swapped the entry in between.
            match child_kind(dir, &name) {
                Some(libc::S_IFDIR) => {
                    let mut below = names.clone();
                    below.push(name);
                    pending.push((below, host_path));
                }
                Some(libc::S_IFREG) => match open_child_file(dir, &name, user, caller)? {
                    Some((file, mode)) => {
                        copy_file_out(file, mode, &host_path, false, &mut summary)?
                    }
                    None => summary.skipped.push(source_path(source, &names, &name)),
                },
                Some(_) => summary.skipped.push(source_path(source, &names, &name)),
                // Removed since the directory was read.
                None => {}
            }
        }
    }
    Ok(summary)
}

/// Opens the entry `name` of `dir` as the user and returns the file and
/// its mode. Returns `None` if it is no longer a regular file or is gone.
fn open_child_file(
    dir: BorrowedFd<'_>,
    name: &Name,
    user: FileUser,
    caller: &str,
) -> Result<Option<(File, libc::mode_t)>> {
    let opened: std::io::Result<OwnedFd> = {
        let _credentials = act_as(user)?;
        path::open_child(dir, name, libc::O_RDONLY | libc::O_NONBLOCK)
    };
    let fd = match opened {
        Ok(fd) => fd,
        // Replaced by a symlink (never followed) or removed since its type
        // was read.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOENT)) => return Ok(None),
        Err(e) => return Err(file_error(caller, "open a file in the sandbox")(e)),
    };
    let stat = sys::fstat_fd(fd.as_fd()).map_err(file_error(caller, "stat a file"))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    sys::clear_nonblocking(fd.as_fd()).map_err(file_error(caller, "open a file"))?;
    Ok(Some((File::from(fd), stat.st_mode)))
}

/// Returns the file type bits of the entry `name` of `dir`, without
/// following a symlink, or `None` if it is gone.
fn child_kind(dir: BorrowedFd<'_>, name: &Name) -> Option<libc::mode_t> {
    sys::fstatat_name(dir, name.as_c_str())
        .ok()
        .map(|stat| stat.st_mode & libc::S_IFMT)
}

/// Returns the sandbox path of `name` below the top of a copy, for
/// [`CopySummary::skipped`].
fn source_path(source: &SandboxPath, names: &[Name], name: &Name) -> PathBuf {
    let mut shown = PathBuf::from(source.normalized());
    for component in names.iter().chain(std::iter::once(name)) {
        shown.push(OsStr::from_bytes(component.as_c_str().to_bytes()));
    }
    shown
}

/// Creates the host directory `dir` unless it exists. Below the top, an
/// existing entry must be a real directory, not a symlink to one: the names
/// there come from the sandbox, and a host symlink under such a name must
/// not redirect the copy.
fn make_host_dir(dir: &Path, top: bool) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = if top {
                std::fs::metadata(dir)
            } else {
                std::fs::symlink_metadata(dir)
            };
            match meta {
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(host_error("create", dir)(e)),
            }
        }
        Err(e) => Err(host_error("create", dir)(e)),
    }
}

/// Writes `source` to the host file `host`. A symlink at `host` is
/// followed only with `follow`, which is set for the path the caller gave
/// and no other (see [`make_host_dir`]).
fn copy_file_out(
    mut source: File,
    mode: libc::mode_t,
    host: &Path,
    follow: bool,
    summary: &mut CopySummary,
) -> Result<()> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    // O_NONBLOCK, so that a FIFO at `host` fails at once (the open with
    // ENXIO when no reader has it open, else the type check below).
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o777)
        .custom_flags(nofollow | libc::O_NONBLOCK)
        .open(host)
        .map_err(host_error("create", host))?;
    let file_type = target
        .metadata()
        .map_err(host_error("inspect", host))?
        .file_type();
    if !file_type.is_file() {
        return Err(host_error("write a regular file at", host)(
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    let bytes = copy_data_extents(&mut source, &mut target).map_err(host_error("write", host))?;
    summary.files += 1;
    summary.bytes += bytes;
    Ok(())
}

/// Copies only the data extents of `source` and leaves its holes as holes
/// in `target`. Sandboxed code can make a sparse file of any size that
/// takes no space (tmpfs allows sizes beyond its own limit); a plain copy
/// would write every zero to the host's disk. Returns the bytes copied.
fn copy_data_extents(source: &mut File, target: &mut File) -> std::io::Result<u64> {
    use nix::unistd::{lseek, Whence};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsRawFd;

    let size = source.metadata()?.len();
    let mut copied = 0;
    let mut offset: i64 = 0;
    loop {
        let data = match lseek(source.as_raw_fd(), offset, Whence::SeekData) {
            Ok(data) => data,
            // ENXIO: no data after `offset`, only a hole to the end.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(source.as_raw_fd(), data, Whence::SeekHole)?;
        source.seek(SeekFrom::Start(data as u64))?;
        target.seek(SeekFrom::Start(data as u64))?;
        let length = (hole - data) as u64;
        copied += std::io::copy(&mut Read::by_ref(source).take(length), target)?;
        offset = hole;
    }
    // A trailing hole is made by setting the length.
    target.set_len(size)?;
    Ok(copied)
}
