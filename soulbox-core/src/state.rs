//! The per-user state directory that makes a sandbox reachable from every
//! process of the user that created it.
//!
//! Each sandbox has an entry: files named after its id in
//! `STATE/sandboxes/`. An entry's path is that directory joined with the
//! id, and each file adds a suffix to it:
//! - `ID.lock`: a file whose `flock` PID 1 holds for as long as it lives. A
//!   lock that can be taken marks a dead sandbox, whatever killed it. The
//!   entry exists while this file does.
//! - `ID.sock`: the listening socket PID 1 serves. Connecting to it and
//!   reading the peer's pidfd is how another process reaches the sandbox.
//! - `ID.json`: the [`Record`] written once the sandbox is handed to its
//!   caller.
//! - `ID.paused`: present while the sandbox is paused; it stores the time
//!   that was left until the sandbox's timeout.
//!
//! The lock file is created and locked under a hidden name and renamed into
//! place, so that a sweep never finds an entry whose lock is not taken yet.
//! Removal deletes the lock file last. Files rather than a directory per
//! entry save a mkdir on every create and an rmdir on every kill; where the
//! state directory is on ext4 rather than tmpfs, an rmdir took 80 µs to
//! 3 ms on the benchmark host against 3 µs for an unlink. The state
//! directory is mode 0700, so only its owner (and root) reaches a sandbox.
//!
//! Removal leaves no name behind in the kernel's dentry cache. On ext4 and
//! on cgroupfs, a name that is unlinked while no one has it open, or looked
//! up and not found, stays cached as a negative dentry until memory runs
//! short (tmpfs drops such names at once). Each sandbox id is
//! used once, and the kill used to leave 8 such names per sandbox (5 here,
//! 3 for the cgroup directories). The benchmark host had 1.1 million
//! negative dentries after days of tests, probably most of them from this,
//! and they lengthened the hash chains that every path lookup walks. So
//! each file is unlinked while open with O_PATH, which makes the kernel
//! drop its dentry instead, and no file is unlinked only in case it exists
//! (see [`remove_entry_files`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{id, sys};

const SANDBOXES: &str = "sandboxes";
const LOCK: &str = ".lock";
const CONTROL: &str = ".sock";
const RECORD: &str = ".json";
const PAUSED: &str = ".paused";
/// Suffix of the file that [`write_atomically`] renames into place.
const TEMPORARY: &str = ".tmp";
/// Prefix of a lock file whose entry is still being built.
const NEW_PREFIX: &str = ".new-";
/// Age after which a half-built entry's lock file with a free lock, or a
/// file of an entry without a lock file, is removed. A creator takes the
/// lock microseconds after creating the file.
const NEW_ENTRY_MAX_AGE: Duration = Duration::from_secs(5);

/// Returns the path of an entry's file with `suffix`.
fn entry_file(entry: &Path, suffix: &str) -> PathBuf {
    let mut path = entry.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// The creating process's record of a sandbox, read by `connect`, `list`
/// and `get_info` in other processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) template: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) envs: BTreeMap<String, String>,
    /// Creation time, in milliseconds since the Unix epoch.
    pub(crate) started_at_ms: u64,
    /// Host pid of PID 1.
    pub(crate) pid: i32,
    /// Whether the sandbox runs in a user namespace of its own.
    pub(crate) rootless: bool,
    /// Limits in force.
    pub(crate) memory_limit: Option<u64>,
    pub(crate) pids_limit: Option<u64>,
    pub(crate) cpu_millicores: Option<u64>,
    /// Size limit of the writable layer, in bytes.
    pub(crate) disk_size: u64,
    /// Whether the sandbox has internet access. Left out of the record
    /// when false, and false in records written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) internet: bool,
    /// The `allow_out` and `deny_out` entries as the caller gave them,
    /// left out of the record when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) allow_out: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) deny_out: Vec<String>,
    /// The action the timeout takes. Left out for the default, `kill`, so
    /// that a default sandbox's record stays as it was.
    #[serde(default, skip_serializing_if = "is_kill")]
    pub(crate) on_timeout: crate::sandbox::OnTimeout,
    /// Whether calls through a handle resume the paused sandbox first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) auto_resume: bool,
}

fn is_kill(on_timeout: &crate::sandbox::OnTimeout) -> bool {
    *on_timeout == crate::sandbox::OnTimeout::Kill
}

impl Record {
    pub(crate) fn limits(&self) -> crate::cgroup::Limits {
        crate::cgroup::Limits {
            memory: self.memory_limit,
            pids: self.pids_limit,
            cpu_millicores: self.cpu_millicores,
        }
    }

    pub(crate) fn started_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.started_at_ms)
    }
}

/// Returns the directory holding every entry, creating it (and the state
/// directory, mode 0700) if needed. Rejects a state directory that another
/// user owns or may write to, because another user who can rename its
/// entries can replace the sandboxes' records, templates and sockets.
pub(crate) fn sandboxes_dir(state_dir: &Path) -> Result<PathBuf> {
    let dir = state_dir.join(SANDBOXES);
    if dir.is_dir() {
        check_private(state_dir)?;
        return Ok(dir);
    }
    let create = |path: &Path, recursive: bool| {
        fs::DirBuilder::new()
            .recursive(recursive)
            .mode(0o700)
            .create(path)
            .map_err(|source| Error::State {
                step: "create",
                path: path.to_path_buf(),
                source,
            })
    };
    if fs::symlink_metadata(state_dir).is_err() {
        create(state_dir, true)?;
    }
    // Before anything is created inside.
    check_private(state_dir)?;
    match create(&dir, false) {
        // Another process made it in the meantime.
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(e),
        Ok(()) => Ok(dir),
    }
}

/// Checks that `dir` is a directory (not a symbolic link) that belongs to
/// this process's effective user and that no one else may write to.
fn check_private(dir: &Path) -> Result<()> {
    let reject = |reason: String| Error::State {
        step: "use",
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{reason}; remove it, or set {} to a directory of your own",
                crate::paths::STATE_DIR_VAR
            ),
        ),
    };
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::State {
        step: "inspect",
        path: dir.to_path_buf(),
        source,
    })?;
    let uid = crate::sys::geteuid();
    if !meta.is_dir() {
        return Err(reject("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(reject(format!(
            "it belongs to uid {}, not to uid {uid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(reject(format!(
            "other users may write to it (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// A new entry: its lock is taken and its socket bound, but PID 1 does not
/// listen yet.
#[derive(Debug)]
pub(crate) struct NewEntry {
    pub(crate) id: String,
    /// The entry's path: the sandboxes directory joined with the id.
    pub(crate) path: PathBuf,
    /// The open lock file, locked. PID 1 receives a copy; the lock stays
    /// taken while either copy is open.
    pub(crate) lock: OwnedFd,
    /// The bound socket that PID 1 will listen on.
    pub(crate) listener: OwnedFd,
}

impl NewEntry {
    /// Builds an entry under a fresh sandbox id.
    pub(crate) fn create(sandboxes: &Path) -> Result<Self> {
        for _ in 0..8 {
            let id = id::new_sandbox_id().map_err(Error::os("read random bytes for an id"))?;
            let Some(lock) = Self::take_id(sandboxes, &id)? else {
                continue;
            };
            let path = sandboxes.join(&id);
            return match bind_control(&path) {
                Ok(listener) => Ok(Self {
                    id,
                    path,
                    lock,
                    listener,
                }),
                Err(e) => {
                    let _ = remove_entry(&path);
                    Err(e)
                }
            };
        }
        Err(Error::State {
            step: "pick an unused id in",
            path: sandboxes.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        })
    }

    /// Creates and locks `.new-ID.lock`, then renames it to `ID.lock`.
    /// Returns the locked file, or `None` when the id is taken.
    fn take_id(sandboxes: &Path, id: &str) -> Result<Option<OwnedFd>> {
        let staging = sandboxes.join(format!("{NEW_PREFIX}{id}{LOCK}"));
        let lock = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&staging)
        {
            Ok(file) => OwnedFd::from(file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(source) => {
                return Err(Error::State {
                    step: "create",
                    path: staging,
                    source,
                })
            }
        };
        let placed = sys::flock_exclusive(lock.as_fd(), false)
            .map_err(|source| (("lock", staging.clone()), source))
            .and_then(|_| {
                let target = entry_file(&sandboxes.join(id), LOCK);
                sys::rename_noreplace(&staging, &target)
                    .map_err(|source| (("rename into place", staging.clone()), source))
            });
        match placed {
            Ok(()) => Ok(Some(lock)),
            Err((_, source)) if source.raw_os_error() == Some(libc::EEXIST) => {
                let _ = fs::remove_file(&staging);
                Ok(None)
            }
            Err(((step, path), source)) => {
                let _ = fs::remove_file(&staging);
                Err(Error::State { step, path, source })
            }
        }
    }
}

/// Binds the control socket of the entry at `entry`. The caller holds the
/// entry's lock, so a socket file already there is a leftover.
fn bind_control(entry: &Path) -> Result<OwnedFd> {
    let control = entry_file(entry, CONTROL);
    let state_error = |step: &'static str| {
        let path = control.clone();
        move |source: nix::Error| Error::State {
            step,
            path,
            source: source.into(),
        }
    };
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(state_error("create a socket for"))?;
    let address = UnixAddr::new(&control).map_err(|e| {
        if e == nix::errno::Errno::ENAMETOOLONG {
            Error::InvalidArgument(format!(
                "the socket path {} is longer than the 107 bytes a Unix socket allows; \
                 set SOULBOX_STATE_DIR to a shorter directory",
                control.display()
            ))
        } else {
            state_error("bind")(e)
        }
    })?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
    match bind(raw, &address) {
        Ok(()) => {}
        Err(nix::Error::EADDRINUSE) => {
            let _ = fs::remove_file(&control);
            bind(raw, &address).map_err(state_error("bind"))?;
        }
        Err(e) => return Err(state_error("bind")(e)),
    }
    Ok(listener)
}

/// Writes the record of the sandbox whose entry is `entry`, atomically.
pub(crate) fn write_record(entry: &Path, record: &Record) -> Result<()> {
    let json = serde_json::to_vec(record).map_err(|e| Error::State {
        step: "encode the record of",
        path: entry.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    write_atomically(&entry_file(entry, RECORD), &json)
}

/// Reads the record of the sandbox whose entry is `entry`; `None` when it
/// is missing (the sandbox is still being created, waits in a pool, or is
/// being removed).
pub(crate) fn read_record(entry: &Path) -> Result<Option<Record>> {
    let path = entry_file(entry, RECORD);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::State {
                step: "read",
                path,
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::State {
            step: "decode",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
}

/// Stores that the sandbox is paused, with the time that was left until
/// its timeout (`None` for no timeout).
pub(crate) fn write_paused(entry: &Path, remaining: Option<Duration>) -> Result<()> {
    let text = remaining.map_or_else(|| "none".to_string(), |d| d.as_millis().to_string());
    write_atomically(&entry_file(entry, PAUSED), text.as_bytes())
}

/// Returns the stored time left of a paused sandbox: `None` when it is not
/// marked paused, `Some(None)` when it has no timeout.
pub(crate) fn read_paused(entry: &Path) -> Option<Option<Duration>> {
    let text = fs::read_to_string(entry_file(entry, PAUSED)).ok()?;
    let text = text.trim();
    if text == "none" {
        return Some(None);
    }
    text.parse().ok().map(|ms| Some(Duration::from_millis(ms)))
}

pub(crate) fn clear_paused(entry: &Path) {
    let _ = unlink_open(&entry_file(entry, PAUSED));
}

/// Path of the socket PID 1 listens on.
pub(crate) fn control_path(entry: &Path) -> PathBuf {
    entry_file(entry, CONTROL)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temporary = entry_file(path, TEMPORARY);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents)?;
        fs::rename(&temporary, path)
    })();
    written.map_err(|source| Error::State {
        step: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Whether a sandbox's PID 1 still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Its lock is held: PID 1 (or the process creating it) is alive.
    Alive,
    /// Its lock could be taken: nothing of the sandbox runs.
    Dead,
    /// There is no such entry.
    Missing,
}

/// Probes the lock of the entry `entry`. A dead entry's lock stays taken by
/// the returned descriptor, so the caller may remove the entry.
pub(crate) fn probe(entry: &Path) -> (Liveness, Option<OwnedFd>) {
    probe_lock(&entry_file(entry, LOCK))
}

fn probe_lock(lock_path: &Path) -> (Liveness, Option<OwnedFd>) {
    let lock = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(lock_path)
    {
        Ok(file) => OwnedFd::from(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Liveness::Missing, None),
        Err(_) => return (Liveness::Alive, None),
    };
    match sys::flock_exclusive(lock.as_fd(), false) {
        Ok(true) => (Liveness::Dead, Some(lock)),
        // A probe that fails for another reason must not remove anything.
        Ok(false) | Err(_) => (Liveness::Alive, None),
    }
}

/// Removes an entry's files, the lock file last, so that an interrupted
/// removal still leaves an entry that the next sweep finds. A missing file
/// is not an error.
pub(crate) fn remove_entry(entry: &Path) -> io::Result<()> {
    let files = remove_entry_files(entry);
    let lock = remove_entry_lock(entry);
    files.and(lock)
}

/// Removes every file of an entry but its lock file. The entry is then
/// out of [`Sandbox::list`](crate::Sandbox::list) and out of reach, while
/// the sweep still finds it by its lock file.
///
/// The paused marker exists only while the sandbox is paused, and an
/// unlink of a missing name leaves a negative dentry. So the record is
/// renamed over the marker, which replaces it if it is there and leaves no
/// dentry of either name, and is then unlinked under its new name. An
/// entry without a record was never handed to a caller, so it was never
/// paused, unless a kill was interrupted between the rename and the
/// unlink. That renamed record, a marker that a pause racing the kill
/// writes after it, and temporary files of a writer that died are left to
/// the sweep, which removes files without a lock file once they are 5 s
/// old.
pub(crate) fn remove_entry_files(entry: &Path) -> io::Result<()> {
    let control = unlink_open(&entry_file(entry, CONTROL));
    let record = entry_file(entry, RECORD);
    let records = match open_path(&record) {
        Ok(opened) => {
            let paused = entry_file(entry, PAUSED);
            let removed = match fs::rename(&record, &paused) {
                Ok(()) => fs::remove_file(&paused),
                Err(_) => fs::remove_file(&record),
            };
            drop(opened);
            ignore_missing(removed)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => ignore_missing(fs::remove_file(&record)),
    };
    control.and(records)
}

/// Removes the socket and then the lock file of an entry that has no
/// record, such as a sandbox that waited in a pool and was never handed to
/// a caller. Such an entry was never paused either. A missing file is not
/// an error.
pub(crate) fn remove_entry_without_record(entry: &Path) -> io::Result<()> {
    let control = unlink_open(&entry_file(entry, CONTROL));
    let lock = remove_entry_lock(entry);
    control.and(lock)
}

/// Removes an entry's lock file, the last of its files.
pub(crate) fn remove_entry_lock(entry: &Path) -> io::Result<()> {
    unlink_open(&entry_file(entry, LOCK))
}

/// Unlinks `path`, a file that is expected to exist, while it is open with
/// O_PATH, so that the kernel drops its dentry rather than keep it as a
/// negative one (see the module's documentation). A missing file is not an
/// error.
fn unlink_open(path: &Path) -> io::Result<()> {
    let opened = open_path(path);
    let removed = ignore_missing(fs::remove_file(path));
    drop(opened);
    removed
}

fn open_path(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// An entry in the state directory.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) id: String,
    /// The entry's path, as [`NewEntry::path`].
    pub(crate) path: PathBuf,
}

/// Lists the entries. On the way it removes the lock files of half-built
/// entries whose creator died, and files left without a lock file.
pub(crate) fn entries(sandboxes: &Path) -> Vec<Listed> {
    let Ok(read) = fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    let mut listed = Vec::new();
    let mut others = Vec::new();
    for entry in read.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = name
            .strip_prefix(NEW_PREFIX)
            .and_then(|rest| rest.strip_suffix(LOCK))
        {
            if id::is_sandbox_id(id) && is_stale_new_lock(&entry.path()) {
                let _ = unlink_open(&entry.path());
            }
            continue;
        }
        match name.strip_suffix(LOCK) {
            Some(id) if id::is_sandbox_id(id) => listed.push(Listed {
                id: id.to_string(),
                path: sandboxes.join(id),
            }),
            _ => others.push(name),
        }
    }
    for name in others {
        remove_if_orphan(sandboxes, &name, &listed);
    }
    listed
}

/// Removes the file `name` if it belongs to an entry without a lock file
/// and is old enough that no creator is about to add one.
fn remove_if_orphan(sandboxes: &Path, name: &str, listed: &[Listed]) {
    let Some((id, _suffix)) = name.split_once('.') else {
        return;
    };
    if !id::is_sandbox_id(id) || listed.iter().any(|entry| entry.id == id) {
        return;
    }
    let path = sandboxes.join(name);
    if age(&path).is_some_and(|age| age >= NEW_ENTRY_MAX_AGE) {
        let _ = unlink_open(&path);
    }
}

fn age(path: &Path) -> Option<Duration> {
    let modified = fs::symlink_metadata(path).and_then(|m| m.modified()).ok()?;
    SystemTime::now().duration_since(modified).ok()
}

fn is_stale_new_lock(path: &Path) -> bool {
    let old = age(path).is_some_and(|age| age >= NEW_ENTRY_MAX_AGE);
    old && probe_lock(path).0 == Liveness::Dead
}

/// File next to the sandboxes directory (so that directory holds only
/// sandboxes' entries) whose modification time is when a process of the
/// user last started a sweep of dead sandboxes' leftovers.
const SWEPT: &str = "sandboxes.swept";

/// Returns whether no process of the user started a sweep of `sandboxes`
/// in the last `interval`, and if so records that one starts now. Two
/// processes may both find a sweep due and both sweep, which is harmless.
pub(crate) fn claim_sweep(sandboxes: &Path, interval: Duration) -> bool {
    let stamp = sandboxes.with_file_name(SWEPT);
    // A modification time in the future (the clock went back) counts as
    // old, so sweeps cannot stop.
    if age(&stamp).is_some_and(|age| age < interval) {
        return false;
    }
    // Where the stamp cannot be written, every process sweeps.
    // O_NONBLOCK: opening a FIFO under the name must not hang.
    let _ = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&stamp)
        .and_then(|file| file.set_modified(SystemTime::now()));
    true
}

/// Returns the entry of sandbox `id`, or `None` when `id` cannot be a
/// sandbox id (so it never names a path outside the state directory).
pub(crate) fn entry_path(sandboxes: &Path, id: &str) -> Option<PathBuf> {
    id::is_sandbox_id(id).then(|| sandboxes.join(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh sandboxes directory, removed at the end of the test.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "soulbox-state-{tag}-{}-{}",
                std::process::id(),
                id::random_u32().unwrap()
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn state_dir_writable_by_others_rejected() {
        let dir = TempDir::new("private");
        sandboxes_dir(&dir.0).expect("a fresh private directory is accepted");
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
        let error = sandboxes_dir(&dir.0).expect_err("a world-writable directory is accepted");
        let message = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(
            message.contains("other users may write to it (mode 777)")
                && message.contains(crate::paths::STATE_DIR_VAR),
            "unexpected message: {message}"
        );
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o700)).unwrap();
        sandboxes_dir(&dir.0).expect("a private directory again");
    }

    #[test]
    fn state_dir_symlink_rejected() {
        let dir = TempDir::new("symlinked");
        let real = dir.0.join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let error = sandboxes_dir(&link).expect_err("a symbolic link is accepted");
        let message = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(
            message.contains("it is not a directory"),
            "unexpected message: {message}"
        );
    }

    #[test]
    fn sweep_claimed_once_per_interval() {
        let dir = TempDir::new("sweep");
        let sandboxes = dir.0.join("sandboxes");
        fs::create_dir(&sandboxes).unwrap();
        let interval = Duration::from_secs(60);
        assert!(
            claim_sweep(&sandboxes, interval),
            "the first sweep is not due"
        );
        assert!(
            !claim_sweep(&sandboxes, interval),
            "a second sweep is due at once"
        );
        let old = SystemTime::now() - interval - Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(dir.0.join(SWEPT))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(
            claim_sweep(&sandboxes, interval),
            "no sweep is due after the interval"
        );
        assert!(
            fs::read_dir(&sandboxes).unwrap().next().is_none(),
            "the stamp is in the sandboxes directory"
        );
        assert!(dir.0.join(SWEPT).exists(), "the stamp is missing");
    }

    #[test]
    fn sweep_claim_does_not_hang_on_fifo_stamp() {
        let dir = TempDir::new("sweep-fifo");
        let sandboxes = dir.0.join("sandboxes");
        fs::create_dir(&sandboxes).unwrap();
        nix::unistd::mkfifo(&dir.0.join(SWEPT), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(claim_sweep(&sandboxes, Duration::ZERO));
        });
        let claimed = finished.recv_timeout(Duration::from_secs(10));
        if claimed.is_err() {
            // Free the blocked thread so that the test process can exit.
            let _ = fs::File::open(dir.0.join(SWEPT));
        }
        assert_eq!(claimed, Ok(true), "claiming a sweep hung on a FIFO stamp");
    }

    fn make_old(path: &Path) {
        let old = SystemTime::now() - NEW_ENTRY_MAX_AGE - Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    fn sample_record(id: &str) -> Record {
        Record {
            id: id.to_string(),
            template: "host".into(),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            envs: BTreeMap::new(),
            started_at_ms: 1,
            pid: 42,
            rootless: false,
            memory_limit: None,
            pids_limit: Some(8),
            cpu_millicores: None,
            disk_size: 1 << 20,
            internet: true,
            allow_out: Vec::new(),
            deny_out: vec!["0.0.0.0/0".into()],
            on_timeout: crate::sandbox::OnTimeout::Pause,
            auto_resume: true,
        }
    }

    #[test]
    fn record_network_fields_optional() {
        let record = sample_record("sb-a");
        let json = serde_json::to_string(&record).unwrap();
        let read: Record = serde_json::from_str(&json).unwrap();
        assert!(read.internet);
        assert_eq!(read.deny_out, ["0.0.0.0/0"]);

        let without_network = Record {
            internet: false,
            deny_out: Vec::new(),
            ..record
        };
        let json = serde_json::to_string(&without_network).unwrap();
        for key in ["internet", "allow_out", "deny_out"] {
            assert!(!json.contains(key), "{key} in {json}");
        }
        let read: Record = serde_json::from_str(&json).unwrap();
        assert!(!read.internet);
        assert!(read.allow_out.is_empty());
        assert!(read.deny_out.is_empty());
    }

    #[test]
    fn record_lifecycle_round_trip() {
        let pausing = sample_record("sb-a");
        let text = serde_json::to_string(&pausing).unwrap();
        let read: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(read.on_timeout, crate::sandbox::OnTimeout::Pause);
        assert!(read.auto_resume);

        // A default sandbox's record, like one from an older version, has
        // neither field.
        let mut killing = sample_record("sb-b");
        killing.on_timeout = crate::sandbox::OnTimeout::Kill;
        killing.auto_resume = false;
        let text = serde_json::to_string(&killing).unwrap();
        assert!(!text.contains("on_timeout"), "{text}");
        assert!(!text.contains("auto_resume"), "{text}");
        let read: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(read.on_timeout, crate::sandbox::OnTimeout::Kill);
        assert!(!read.auto_resume);
    }

    #[test]
    fn entry_files_live_and_die() {
        let dir = TempDir::new("entry");
        let entry = NewEntry::create(&dir.0).unwrap();
        let id = entry.id.clone();
        assert_eq!(dir.names(), [format!("{id}.lock"), format!("{id}.sock")]);
        assert_eq!(probe(&entry.path).0, Liveness::Alive);

        write_record(&entry.path, &sample_record(&id)).unwrap();
        let record = read_record(&entry.path).unwrap().unwrap();
        assert_eq!(record.metadata, sample_record(&id).metadata);
        write_paused(&entry.path, Some(Duration::from_millis(1500))).unwrap();
        assert_eq!(
            read_paused(&entry.path),
            Some(Some(Duration::from_millis(1500)))
        );
        let listed = entries(&dir.0);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].path, entry.path);

        let NewEntry { path, lock, .. } = entry;
        drop(lock);
        assert_eq!(probe(&path).0, Liveness::Dead);
        remove_entry(&path).unwrap();
        assert_eq!(dir.names(), Vec::<String>::new());
        assert_eq!(probe(&path).0, Liveness::Missing);
    }

    #[test]
    fn entry_without_record_removed() {
        let dir = TempDir::new("without-record");
        let NewEntry { path, lock, .. } = NewEntry::create(&dir.0).unwrap();
        drop(lock);
        remove_entry_without_record(&path).unwrap();
        assert_eq!(dir.names(), Vec::<String>::new());
        assert_eq!(probe(&path).0, Liveness::Missing);
    }

    #[test]
    fn entries_remove_stale_leftovers() {
        let dir = TempDir::new("leftovers");
        let stale_new = dir.0.join(".new-sb-aaaaaaaaaaaa.lock");
        let orphan = dir.0.join("sb-bbbbbbbbbbbb.json");
        let young_orphan = dir.0.join("sb-cccccccccccc.sock");
        let unrelated = dir.0.join("notes.txt");
        for path in [&stale_new, &orphan, &young_orphan, &unrelated] {
            fs::write(path, b"").unwrap();
        }
        for path in [&stale_new, &orphan, &unrelated] {
            make_old(path);
        }
        assert!(entries(&dir.0).is_empty());
        assert_eq!(dir.names(), ["notes.txt", "sb-cccccccccccc.sock"]);
    }

    #[test]
    fn taken_id_is_not_replaced() {
        let dir = TempDir::new("taken");
        let first = NewEntry::create(&dir.0).unwrap();
        let again = NewEntry::take_id(&dir.0, &first.id).unwrap();
        assert!(again.is_none(), "an existing entry's lock was replaced");
        assert_eq!(dir.names().len(), 2, "{:?}", dir.names());
    }
}
