//! The per-user state directory that makes a sandbox reachable from every
//! process of the user that created it.
//!
//! Each sandbox has an entry `STATE/sandboxes/ID/` holding:
//! - `lock`: a file whose `flock` PID 1 holds for as long as it lives. A
//!   lock that can be taken marks a dead sandbox, whatever killed it.
//! - `control`: the listening socket PID 1 serves. Connecting to it and
//!   reading the peer's pidfd is how another process reaches the sandbox.
//! - `sandbox.json`: the [`Record`] written once the sandbox is ready.
//! - `paused`: present while the sandbox is paused; it stores the time that
//!   was left until the sandbox's timeout.
//!
//! An entry is built under a hidden name and renamed into place, so that a
//! sweep never sees an entry whose lock is not taken yet. The state
//! directory is mode 0700, so only its owner (and root) reaches a sandbox.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{id, sys};

const SANDBOXES: &str = "sandboxes";
const LOCK: &str = "lock";
const CONTROL: &str = "control";
const RECORD: &str = "sandbox.json";
const PAUSED: &str = "paused";
/// Prefix of an entry that is still being built.
const NEW_PREFIX: &str = ".new-";
/// Age after which a half-built entry with a free lock is removed. Its
/// creator takes the lock microseconds after making the directory.
const NEW_ENTRY_MAX_AGE: Duration = Duration::from_secs(5);

/// What the creating process records about a sandbox, for `connect`,
/// `list` and `get_info` in other processes.
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
/// directory, mode 0700) if needed.
pub(crate) fn sandboxes_dir(state_dir: &Path) -> Result<PathBuf> {
    let dir = state_dir.join(SANDBOXES);
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::State {
                step: "create",
                path: dir.clone(),
                source,
            })?;
    }
    Ok(dir)
}

/// A new entry: its lock is taken and its socket bound, but PID 1 does not
/// listen yet.
#[derive(Debug)]
pub(crate) struct NewEntry {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
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
            let staging = sandboxes.join(format!("{NEW_PREFIX}{id}"));
            match fs::DirBuilder::new().mode(0o700).create(&staging) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::State {
                        step: "create",
                        path: staging,
                        source,
                    })
                }
            }
            let built = Self::populate(&staging, &id, sandboxes);
            if built.is_err() {
                let _ = remove_dir_contents(&staging);
            }
            return built;
        }
        Err(Error::State {
            step: "pick an unused id in",
            path: sandboxes.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        })
    }

    fn populate(staging: &Path, id: &str, sandboxes: &Path) -> Result<Self> {
        let state_error = |step: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::State { step, path, source }
        };
        let lock_path = staging.join(LOCK);
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(state_error("create", &lock_path))?;
        let lock = OwnedFd::from(lock);
        sys::flock_exclusive(lock.as_fd(), false).map_err(state_error("lock", &lock_path))?;

        let control = staging.join(CONTROL);
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| state_error("create a socket for", &control)(e.into()))?;
        let address = UnixAddr::new(&control).map_err(|e| {
            if e == nix::errno::Errno::ENAMETOOLONG {
                Error::InvalidArgument(format!(
                    "the socket path {} is longer than the 107 bytes a Unix socket allows; \
                     set SOULBOX_STATE_DIR to a shorter directory",
                    control.display()
                ))
            } else {
                state_error("bind", &control)(e.into())
            }
        })?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&listener), &address)
            .map_err(|e| state_error("bind", &control)(e.into()))?;

        let dir = sandboxes.join(id);
        fs::rename(staging, &dir).map_err(state_error("rename into place", staging))?;
        Ok(Self {
            id: id.to_string(),
            dir,
            lock,
            listener,
        })
    }
}

/// Writes the record of the sandbox at `dir`, atomically.
pub(crate) fn write_record(dir: &Path, record: &Record) -> Result<()> {
    let json = serde_json::to_vec(record).map_err(|e| Error::State {
        step: "encode the record of",
        path: dir.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    write_atomically(&dir.join(RECORD), &json)
}

/// Reads the record of the sandbox at `dir`; `None` when it is missing
/// (the sandbox is still being created or is being removed).
pub(crate) fn read_record(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join(RECORD);
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
pub(crate) fn write_paused(dir: &Path, remaining: Option<Duration>) -> Result<()> {
    let text = remaining.map_or_else(|| "none".to_string(), |d| d.as_millis().to_string());
    write_atomically(&dir.join(PAUSED), text.as_bytes())
}

/// Returns the stored time left of a paused sandbox: `None` when it is not
/// marked paused, `Some(None)` when it has no timeout.
pub(crate) fn read_paused(dir: &Path) -> Option<Option<Duration>> {
    let text = fs::read_to_string(dir.join(PAUSED)).ok()?;
    let text = text.trim();
    if text == "none" {
        return Some(None);
    }
    text.parse().ok().map(|ms| Some(Duration::from_millis(ms)))
}

pub(crate) fn clear_paused(dir: &Path) {
    let _ = fs::remove_file(dir.join(PAUSED));
}

/// Path of the socket PID 1 listens on.
pub(crate) fn control_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
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

/// Probes the lock of the entry at `dir`. A dead entry's lock stays taken
/// by the returned descriptor, so the caller may remove the entry.
pub(crate) fn probe(dir: &Path) -> (Liveness, Option<OwnedFd>) {
    let lock = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(LOCK))
    {
        Ok(file) => OwnedFd::from(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // An entry without a lock file is half removed.
            return if dir.exists() {
                (Liveness::Dead, None)
            } else {
                (Liveness::Missing, None)
            };
        }
        Err(_) => return (Liveness::Alive, None),
    };
    match sys::flock_exclusive(lock.as_fd(), false) {
        Ok(true) => (Liveness::Dead, Some(lock)),
        // A probe that fails for another reason must not remove anything.
        Ok(false) | Err(_) => (Liveness::Alive, None),
    }
}

/// Removes an entry's files and its directory. A missing entry is not an
/// error.
pub(crate) fn remove_entry(dir: &Path) -> io::Result<()> {
    match remove_dir_contents(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_dir_contents(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let _ = fs::remove_file(entry?.path());
    }
    fs::remove_dir(dir)
}

/// An entry in the state directory.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
}

/// Lists the entries, removing half-built ones whose creator died.
pub(crate) fn entries(sandboxes: &Path) -> Vec<Listed> {
    let Ok(read) = fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    let mut listed = Vec::new();
    for entry in read.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = name.strip_prefix(NEW_PREFIX) {
            if id::is_sandbox_id(id) && is_stale_new_entry(&entry.path()) {
                let _ = remove_entry(&entry.path());
            }
            continue;
        }
        if id::is_sandbox_id(&name) {
            listed.push(Listed {
                id: name,
                dir: entry.path(),
            });
        }
    }
    listed
}

fn is_stale_new_entry(dir: &Path) -> bool {
    let old = fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= NEW_ENTRY_MAX_AGE);
    old && probe(dir).0 == Liveness::Dead
}

/// Returns the entry directory of sandbox `id`, or `None` when `id` cannot
/// be a sandbox id (so it never names a path outside the state directory).
pub(crate) fn entry_dir(sandboxes: &Path, id: &str) -> Option<PathBuf> {
    id::is_sandbox_id(id).then(|| sandboxes.join(id))
}
