//! Host files and directories that the caller mounts into a sandbox, as
//! bubblewrap's `--ro-bind` and `--bind` or Docker's volumes do.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use soulbox_proto::HostMount;

use crate::error::{Error, Result};
use crate::template;

/// Maximum number of mounts of one sandbox.
pub const MAX_MOUNTS: usize = 64;

/// Maximum length of a target path, in bytes (PATH_MAX less the
/// terminating NUL).
const MAX_TARGET_LEN: usize = 4095;

/// Directories of the sandbox that SoulBox builds itself, where no mount
/// may go.
const RESERVED_TARGETS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A host file or directory mounted into the sandbox, read-only unless
/// made [`Mount::writable`]. Mounts are always `nosuid` and `nodev`.
///
/// Files the sandbox writes to a writable mount land on the host, owned by
/// the sandbox user's uid (1000 for `user`), and count against no limit of
/// the sandbox's: they outlive it, as the host directory does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute host path of an existing file or directory. Symbolic links
    /// in it are resolved on the host when the sandbox is created.
    pub source: PathBuf,
    /// Absolute path inside the sandbox, resolved inside it. Missing
    /// directories on the way are made, owned by root.
    pub target: String,
    /// Whether sandboxed code may write to it.
    pub writable: bool,
}

impl Mount {
    /// Mounts `source` at `target` read-only.
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            writable: false,
        }
    }

    /// Mounts `source` at `target` writable.
    pub fn writable(source: impl Into<PathBuf>, target: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            writable: true,
        }
    }
}

/// Checks `mounts` and resolves their sources, for PID 1's configuration.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming the mount and the problem, for more
/// than [`MAX_MOUNTS`] mounts and for a bad source or target. A bad source
/// is relative, missing, neither a file nor a directory, on a kernel file
/// system, the host's root, or overlaps SoulBox's state directory. A bad
/// target is relative, `/`, contains `.` or `..`, or lies under `/proc`,
/// `/sys` or `/dev`.
pub(crate) fn resolve(mounts: &[Mount], state_dir: &Path) -> Result<Vec<HostMount>> {
    if mounts.len() > MAX_MOUNTS {
        return Err(Error::InvalidArgument(format!(
            "{} mounts exceed the maximum of {MAX_MOUNTS}",
            mounts.len()
        )));
    }
    mounts
        .iter()
        .map(|mount| {
            Ok(HostMount {
                source: resolve_source(mount, state_dir)?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
                target: check_target(mount)?.into_bytes(),
                writable: mount.writable,
            })
        })
        .collect()
}

fn invalid(mount: &Mount, problem: &str) -> Error {
    Error::InvalidArgument(format!(
        "mount of {} at {:?} {problem}",
        mount.source.display(),
        mount.target
    ))
}

fn resolve_source(mount: &Mount, state_dir: &Path) -> Result<PathBuf> {
    if !mount.source.is_absolute() {
        return Err(invalid(
            mount,
            "has a relative source; give an absolute host path",
        ));
    }
    let source = fs::canonicalize(&mount.source)
        .map_err(|e| invalid(mount, &format!("cannot use its source ({e})")))?;
    let meta = fs::metadata(&source)
        .map_err(|e| invalid(mount, &format!("cannot use its source ({e})")))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(invalid(
            mount,
            "has a source that is neither a directory nor a regular file",
        ));
    }
    if let Some(file_system) = template::kernel_file_system(&source) {
        return Err(invalid(
            mount,
            &format!("has a source on {file_system}, a kernel file system whose files would show the host's kernel state"),
        ));
    }
    if template::is_host_root(&source, &meta) {
        return Err(invalid(
            mount,
            "has the host's root as its source, which contains its secrets; mount the directories the sandbox needs",
        ));
    }
    let state_dir = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if state_dir.starts_with(&source) || source.starts_with(&state_dir) {
        return Err(invalid(
            mount,
            &format!(
                "overlaps SoulBox's state directory {}, whose sockets control every sandbox",
                state_dir.display()
            ),
        ));
    }
    Ok(source)
}

/// Returns the target in its plain form: one `/` between components.
fn check_target(mount: &Mount) -> Result<String> {
    let target = Path::new(&mount.target);
    if !target.is_absolute() {
        return Err(invalid(
            mount,
            "has a relative target; give an absolute path in the sandbox",
        ));
    }
    if mount.target.len() > MAX_TARGET_LEN || mount.target.contains('\0') {
        return Err(invalid(
            mount,
            "has a target longer than 4095 bytes or with a NUL byte",
        ));
    }
    let mut plain = String::new();
    for component in target.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => {
                plain.push('/');
                plain.push_str(&name.to_string_lossy());
            }
            _ => return Err(invalid(mount, "has a target with . or .. in it")),
        }
    }
    if plain.is_empty() {
        return Err(invalid(
            mount,
            "has / as its target; mount it at a directory below /",
        ));
    }
    let reserved = RESERVED_TARGETS
        .iter()
        .any(|dir| Path::new(&plain).starts_with(dir));
    if reserved {
        return Err(invalid(
            mount,
            "has a target under /proc, /sys or /dev, which SoulBox builds itself",
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_error(target: &str) -> String {
        match check_target(&Mount::read_only("/usr", target)) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected InvalidArgument for {target:?}, got {other:?}"),
        }
    }

    #[test]
    fn targets_are_normalized() {
        let plain = check_target(&Mount::read_only("/usr", "//data///set/")).expect("valid");
        assert_eq!(plain, "/data/set");
    }

    #[test]
    fn bad_targets_are_named() {
        assert!(target_error("data").contains("relative target"));
        assert!(target_error("/").contains("has / as its target"));
        assert!(target_error("/data/../etc").contains(". or .."));
        assert!(target_error("/proc/sys").contains("/proc, /sys or /dev"));
        assert!(target_error("/dev").contains("/proc, /sys or /dev"));
    }

    #[test]
    fn reserved_prefix_matches_whole_components() {
        assert!(check_target(&Mount::read_only("/usr", "/device")).is_ok());
        assert!(check_target(&Mount::read_only("/usr", "/system")).is_ok());
    }
}
