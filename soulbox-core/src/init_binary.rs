//! The sandbox's PID 1, embedded at build time (see build.rs).
//!
//! A host process runs it from a read-only copy in the state directory,
//! `STATE/init/soulbox-init-HASH`, which every process of the user shares.
//! Loading it into a fresh memfd instead costs each process a 1 MiB copy
//! (0.35 ms on the benchmark host) and freeing it again at exit. For a
//! short-lived process such as the `soulbox` command, that was the largest
//! cost beyond the library's own work. Where no copy can be made or
//! trusted, the process loads a sealed memfd of its own.
//!
//! A copy is used only when its directory is a real directory (not a
//! symlink) on a file system not mounted noexec, owned by the effective uid
//! with no permission for anyone else. The copy itself must be a regular
//! file owned by the effective uid, mode 0500, with one link and the
//! helper's size. Only this user and root can then have written it.
//!
//! The copy is written under a temporary name, flushed to disk and renamed
//! into place, so a crash never leaves a partial copy under its name. A
//! copy that fails a check is replaced. Like the sealed memfd, it cannot
//! change under a running sandbox, because the kernel rejects opening a
//! file for writing while a process executes it (ETXTBSY). Sandboxed code
//! cannot reach it either: PID 1 is not dumpable (its /proc/PID/exe stays
//! closed), and the state directory is not mounted in a sandbox.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tracing::debug;

use crate::error::{Error, Result};
use crate::{paths, sys};

static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/soulbox-init"));

/// Subdirectory of the state directory that contains the copy.
const DIR_NAME: &str = "init";
/// Start of the copy's file name. The rest of the name identifies the build.
const COPY_PREFIX: &str = "soulbox-init-";
/// The copy's file name. Builds with different helpers use different names.
const COPY_NAME: &CStr = {
    let name = concat!("soulbox-init-", env!("SOULBOX_INIT_HASH"), "\0");
    match CStr::from_bytes_with_nul(name.as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("the helper's hash contains a NUL byte"),
    }
};
/// The copy's mode: readable and executable by its owner only.
const COPY_MODE: u32 = 0o500;
/// Age after which another build's copy, or a temporary file that a
/// crashed writer left, is removed. Another build's copy may still be in
/// use by a process of that build, which then writes it again.
const STALE_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// PID 1's executable, once [`executable`] has opened or made it.
static EXECUTABLE: OnceLock<OwnedFd> = OnceLock::new();

/// Returns a descriptor of PID 1's executable: the state directory's
/// copy, or a sealed memfd. The first call opens or makes it.
pub fn executable() -> Result<BorrowedFd<'static>> {
    static LOADING: Mutex<()> = Mutex::new(());
    if let Some(fd) = EXECUTABLE.get() {
        return Ok(fd.as_fd());
    }
    // One thread loads the program. The others wait for its descriptor,
    // because they would write the copy under the same temporary name.
    let _loading = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(fd) = EXECUTABLE.get() {
        return Ok(fd.as_fd());
    }
    let dir = paths::state_dir().join(DIR_NAME);
    let fd = match shared_copy(&dir) {
        Ok(fd) => fd,
        Err(reason) => {
            debug!(
                dir = %dir.display(),
                %reason,
                "no usable copy of the sandbox init program; loading it into a memfd"
            );
            sys::sealed_memfd(c"soulbox-init", INIT_BINARY).map_err(Error::os(
                "load the sandbox init program into a sealed memfd",
            ))?
        }
    };
    Ok(EXECUTABLE.get_or_init(|| fd).as_fd())
}

/// Compares the state directory's copy with the embedded program, after a
/// PID 1 failed before it was ready, and removes the copy if they differ.
/// The checks on open cannot tell a same-sized file that this user (or
/// root) put in its place, and without this every later create of every
/// process would fail the same way. Returns the removed copy's path.
pub fn remove_if_damaged() -> Option<std::path::PathBuf> {
    // A process that never opened the program started no PID 1 from it:
    // under `Launcher::Fork` its PID 1 runs the code linked into it.
    EXECUTABLE.get()?;
    let name = COPY_NAME.to_str().ok()?;
    let path = paths::state_dir().join(DIR_NAME).join(name);
    let bytes = fs::read(&path).ok()?;
    if bytes == INIT_BINARY {
        return None;
    }
    fs::remove_file(&path).ok()?;
    Some(path)
}

/// Opens the copy in `dir`, making the directory and the copy where they
/// are missing and replacing a copy that fails the checks.
fn shared_copy(dir: &Path) -> io::Result<OwnedFd> {
    let dir_fd = open_private_dir(dir)?;
    match open_copy(dir_fd.as_fd()) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => debug!(dir = %dir.display(), reason = %e, "replacing the init program's copy"),
    }
    write_copy(dir_fd.as_fd())?;
    remove_stale(dir, dir_fd.as_fd());
    open_copy(dir_fd.as_fd())
}

/// Opens `dir`, creating it (mode 0700) if missing, and checks that only
/// this user can write in it and that its file system allows executables.
fn open_private_dir(dir: &Path) -> io::Result<OwnedFd> {
    let open = || {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
    };
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            open()?
        }
        opened => opened?,
    };
    let fd = OwnedFd::from(file);
    check_private_dir(&sys::fstat_fd(fd.as_fd())?)?;
    if sys::fstatvfs(fd.as_fd())?.f_flag & libc::ST_NOEXEC != 0 {
        return Err(io::Error::other("its file system is mounted noexec"));
    }
    Ok(fd)
}

fn check_private_dir(stat: &libc::stat) -> io::Result<()> {
    if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(io::Error::other("it is not a directory"));
    }
    check_owner(stat)?;
    let mode = stat.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "its mode is {mode:04o}; group and others must have no access (0700)"
        )));
    }
    Ok(())
}

/// Opens the copy in `dir` and checks it.
fn open_copy(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // O_NONBLOCK: opening a FIFO under the name must not hang.
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let fd = sys::openat2_name(dir, COPY_NAME, flags, 0)?;
    check_copy(&sys::fstat_fd(fd.as_fd())?)?;
    Ok(fd)
}

fn check_copy(stat: &libc::stat) -> io::Result<()> {
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::other("the copy is not a regular file"));
    }
    check_owner(stat)?;
    let mode = stat.st_mode & 0o7777;
    if mode != COPY_MODE {
        return Err(io::Error::other(format!(
            "the copy's mode is {mode:04o}, not {COPY_MODE:04o}"
        )));
    }
    if stat.st_nlink != 1 {
        return Err(io::Error::other(format!(
            "the copy has {} links, not 1",
            stat.st_nlink
        )));
    }
    if u64::try_from(stat.st_size).ok() != Some(INIT_BINARY.len() as u64) {
        return Err(io::Error::other(format!(
            "the copy has {} bytes, not {}",
            stat.st_size,
            INIT_BINARY.len()
        )));
    }
    Ok(())
}

fn check_owner(stat: &libc::stat) -> io::Result<()> {
    let euid = sys::geteuid();
    if stat.st_uid != euid {
        return Err(io::Error::other(format!(
            "it belongs to uid {}, not to this process's uid {euid}",
            stat.st_uid
        )));
    }
    Ok(())
}

/// Writes the copy under a temporary name and renames it into place,
/// replacing what had the copy's name.
fn write_copy(dir: BorrowedFd<'_>) -> io::Result<()> {
    let temp = CString::new(format!(
        ".{}.{}.tmp",
        COPY_NAME.to_string_lossy(),
        std::process::id()
    ))?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
    let mut file = File::from(sys::openat2_name(dir, &temp, flags, COPY_MODE)?);
    let written = file
        .write_all(INIT_BINARY)
        // The mode given to open is reduced by the umask.
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(COPY_MODE)))
        .and_then(|()| file.sync_all());
    drop(file);
    let renamed = written.and_then(|()| sys::renameat_names(dir, &temp, dir, COPY_NAME));
    if renamed.is_err() {
        let _ = sys::unlinkat_name(dir, &temp, false);
    }
    renamed
}

/// Removes other builds' copies and temporary files older than
/// [`STALE_AGE`].
fn remove_stale(dir_path: &Path, dir: BorrowedFd<'_>) {
    let Ok(entries) = fs::read_dir(dir_path) else {
        return;
    };
    let ours = COPY_NAME.to_bytes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let other_build = name.starts_with(COPY_PREFIX) && name.as_bytes() != ours;
        let temporary = name.starts_with('.') && name[1..].starts_with(COPY_PREFIX);
        if !(other_build || temporary) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age > STALE_AGE);
        if old {
            if let Ok(name) = CString::new(name) {
                let _ = sys::unlinkat_name(dir, &name, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    /// A fresh directory for a copy, removed at the end of the test.
    struct TempDir {
        parent: PathBuf,
        dir: PathBuf,
    }

    impl TempDir {
        fn new(tag: &str) -> Self {
            let parent = std::env::temp_dir().join(format!(
                "soulbox-init-copy-{tag}-{}-{}",
                std::process::id(),
                crate::id::random_u32().unwrap()
            ));
            fs::create_dir_all(&parent).unwrap();
            let dir = parent.join(DIR_NAME);
            Self { parent, dir }
        }

        fn copy_path(&self) -> PathBuf {
            self.dir.join(COPY_NAME.to_str().unwrap())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.parent);
        }
    }

    fn contents(fd: OwnedFd) -> Vec<u8> {
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn inode(fd: &OwnedFd) -> u64 {
        sys::fstat_fd(fd.as_fd()).unwrap().st_ino
    }

    #[test]
    fn copy_made_once_and_reused() {
        let temp = TempDir::new("fresh");
        let first = shared_copy(&temp.dir).expect("make the copy");
        let dir = fs::symlink_metadata(&temp.dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(dir.mode() & 0o7777, 0o700);
        let copy = fs::symlink_metadata(temp.copy_path()).unwrap();
        assert_eq!(copy.mode() & 0o7777, COPY_MODE);
        assert_eq!(copy.uid(), sys::geteuid());
        let second = shared_copy(&temp.dir).expect("open the copy");
        assert_eq!(inode(&first), inode(&second), "the copy was written again");
        assert!(contents(second) == INIT_BINARY, "the copy differs");
        let names: Vec<_> = fs::read_dir(&temp.dir).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files are left: {names:?}");
    }

    #[test]
    fn rejects_dir_open_to_others() {
        let temp = TempDir::new("open-dir");
        fs::DirBuilder::new().mode(0o755).create(&temp.dir).unwrap();
        fs::set_permissions(&temp.dir, fs::Permissions::from_mode(0o755)).unwrap();
        let error = shared_copy(&temp.dir).unwrap_err();
        assert!(error.to_string().contains("0755"), "{error}");
        assert!(!temp.copy_path().exists(), "a copy was written");
    }

    #[test]
    fn rejects_dir_of_another_user() {
        if sys::geteuid() != 0 {
            // Only root can give a directory away.
            return;
        }
        let temp = TempDir::new("other-user");
        fs::DirBuilder::new().mode(0o700).create(&temp.dir).unwrap();
        std::os::unix::fs::chown(&temp.dir, Some(65534), Some(65534)).unwrap();
        let error = shared_copy(&temp.dir).unwrap_err();
        assert!(error.to_string().contains("uid 65534"), "{error}");
        assert!(!temp.copy_path().exists(), "a copy was written");
    }

    #[test]
    fn rejects_symlinked_dir() {
        let temp = TempDir::new("symlink");
        let real = temp.parent.join("real");
        fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
        std::os::unix::fs::symlink(&real, &temp.dir).unwrap();
        assert!(shared_copy(&temp.dir).is_err());
        assert_eq!(
            fs::read_dir(&real).unwrap().count(),
            0,
            "a copy was written"
        );
    }

    /// Makes a copy, lets `spoil` change it, and checks that the next open
    /// replaces it with a correct one.
    fn check_replaced(tag: &str, spoil: impl FnOnce(&Path)) {
        let temp = TempDir::new(tag);
        // Held open, so that its inode number cannot be reused.
        let original = shared_copy(&temp.dir).unwrap();
        spoil(&temp.copy_path());
        let replaced = shared_copy(&temp.dir).expect("replace the copy");
        assert_ne!(
            inode(&replaced),
            inode(&original),
            "the spoiled copy was used"
        );
        let copy = fs::symlink_metadata(temp.copy_path()).unwrap();
        assert_eq!(copy.mode() & 0o7777, COPY_MODE);
        assert_eq!(copy.uid(), sys::geteuid());
        assert!(contents(replaced) == INIT_BINARY, "the copy differs");
    }

    #[test]
    fn replaces_writable_copy() {
        check_replaced("writable", |path| {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
        });
    }

    #[test]
    fn replaces_truncated_copy() {
        check_replaced("truncated", |path| {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(4096)
                .unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(COPY_MODE)).unwrap();
        });
    }

    #[test]
    fn replaces_hard_linked_copy() {
        check_replaced("linked", |path| {
            fs::hard_link(path, path.with_file_name("elsewhere")).unwrap();
        });
    }

    #[test]
    fn replaces_symlink_at_copy_name() {
        check_replaced("symlinked-copy", |path| {
            fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink("/bin/true", path).unwrap();
        });
    }

    #[test]
    fn replaces_copy_of_another_user() {
        if sys::geteuid() != 0 {
            // Only root can give a file away.
            return;
        }
        check_replaced("other-user-copy", |path| {
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
        });
    }

    #[test]
    fn removes_only_stale_files() {
        let temp = TempDir::new("stale");
        fs::DirBuilder::new().mode(0o700).create(&temp.dir).unwrap();
        let old = SystemTime::now() - STALE_AGE - Duration::from_secs(60);
        let make = |name: &str, old_file: bool| {
            let file = File::create(temp.dir.join(name)).unwrap();
            if old_file {
                file.set_modified(old).unwrap();
            }
        };
        make("soulbox-init-0000000000000000", true);
        make(".soulbox-init-0000000000000000.1.tmp", true);
        make("soulbox-init-1111111111111111", false);
        make("unrelated", true);
        shared_copy(&temp.dir).unwrap();
        let mut names: Vec<String> = fs::read_dir(&temp.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected = vec![
            COPY_NAME.to_str().unwrap().to_string(),
            "soulbox-init-1111111111111111".to_string(),
            "unrelated".to_string(),
        ];
        expected.sort();
        assert_eq!(names, expected);
    }
}
