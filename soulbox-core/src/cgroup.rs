//! Per-sandbox cgroups, on cgroup v2 and on hybrid hosts that still bind
//! controllers to v1 hierarchies.
//!
//! Every sandbox gets a directory named after its id below a `soulbox`
//! parent in each hierarchy SoulBox uses. The v2 directory, where a cgroup2
//! mount exists, works even without controllers: it provides `cgroup.kill`
//! and `cgroup.freeze`. Controllers bound to v1 (memory, pids, cpu) get a
//! directory in their own hierarchy. SoulBox writes only inside its
//! `soulbox` parents; it never changes an existing cgroup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Name of SoulBox's parent cgroup in each hierarchy.
pub const PARENT: &str = "soulbox";

/// v1 controllers SoulBox can place a sandbox in when the host binds them
/// to v1. Freezing uses v2's core `cgroup.freeze` instead of v1's freezer.
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The cgroup hierarchies of this host that SoulBox uses.
#[derive(Debug, Default)]
struct Layout {
    /// Mount point of the cgroup2 hierarchy, if any.
    v2: Option<PathBuf>,
    /// Mount points of the v1 hierarchies holding [`V1_CONTROLLERS`], with
    /// the controllers each binds (cpu and cpuacct may share one).
    v1: Vec<(PathBuf, Vec<String>)>,
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
            return Layout::default();
        };
        parse_layout(&mountinfo)
    })
}

/// Reads the hierarchies from /proc/self/mountinfo text (see proc(5): the
/// fields after " - " are fstype, source and super options, and a v1
/// hierarchy's super options list its controllers).
fn parse_layout(mountinfo: &str) -> Layout {
    let mut layout = Layout::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or_default();
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" if layout.v2.is_none() => layout.v2 = Some(PathBuf::from(mount_point)),
            "cgroup" => {
                let controllers: Vec<String> = options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect();
                let path = PathBuf::from(mount_point);
                if !controllers.is_empty() && !layout.v1.iter().any(|(p, _)| *p == path) {
                    layout.v1.push((path, controllers));
                }
            }
            _ => {}
        }
    }
    layout
}

/// One sandbox's cgroup directories, removed by [`SandboxCgroup::remove`].
#[derive(Debug)]
pub struct SandboxCgroup {
    /// The v2 directory, if any.
    v2: Option<PathBuf>,
    /// Every directory, v2 first.
    dirs: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// Creates the sandbox's directories: one in the v2 hierarchy, and one
    /// in each v1 hierarchy that binds a controller in `v1_controllers`.
    /// Without write access to a hierarchy (rootless without delegation)
    /// that hierarchy is skipped.
    ///
    /// Each hierarchy costs a `cgroup.procs` write on every create (about
    /// 150 µs on a v1 hierarchy), so only the controllers a limit needs are
    /// asked for.
    pub fn create(id: &str, v1_controllers: &[&str]) -> Result<Self> {
        let layout = layout();
        let mut cgroup = Self {
            v2: None,
            dirs: Vec::new(),
        };
        let v1_roots = layout.v1.iter().filter_map(|(root, controllers)| {
            controllers
                .iter()
                .any(|c| v1_controllers.contains(&c.as_str()))
                .then_some(root)
        });
        for root in layout.v2.iter().chain(v1_roots) {
            let parent = root.join(PARENT);
            if let Err(source) = fs::create_dir(&parent) {
                match source.kind() {
                    io::ErrorKind::AlreadyExists => {}
                    // Rootless without a delegated hierarchy: no cgroups.
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                        continue;
                    }
                    _ => {
                        let _ = cgroup.remove();
                        return Err(Error::Cgroup {
                            step: "create",
                            path: parent,
                            source,
                        });
                    }
                }
            }
            let dir = parent.join(id);
            if let Err(source) = fs::create_dir(&dir) {
                if source.kind() == io::ErrorKind::PermissionDenied {
                    continue;
                }
                let _ = cgroup.remove();
                return Err(Error::Cgroup {
                    step: "create",
                    path: dir,
                    source,
                });
            }
            if Some(root) == layout.v2.as_ref() {
                cgroup.v2 = Some(dir.clone());
            }
            cgroup.dirs.push(dir);
        }
        Ok(cgroup)
    }

    /// Moves `pid` into every directory of the set.
    pub fn attach(&self, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        for dir in &self.dirs {
            let procs = dir.join("cgroup.procs");
            fs::write(&procs, &pid).map_err(|source| Error::Cgroup {
                step: "attach to",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Kills every process in the v2 cgroup (kernel 5.14 and later). Returns
    /// false where that is not available.
    pub fn kill_all(&self) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|dir| fs::write(dir.join("cgroup.kill"), "1").is_ok())
    }

    /// Removes every directory. The processes must be gone; a directory that
    /// is still busy is retried for up to a second.
    pub fn remove(&mut self) -> Result<()> {
        let mut first_error = None;
        for dir in self.dirs.drain(..) {
            if let Err(source) = remove_dir_retrying(&dir) {
                first_error.get_or_insert(Error::Cgroup {
                    step: "remove",
                    path: dir,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The cgroup directories, for tests and diagnostics.
    pub fn paths(&self) -> &[PathBuf] {
        &self.dirs
    }
}

fn remove_dir_retrying(dir: &Path) -> io::Result<()> {
    let mut delay = Duration::from_micros(200);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // The last task's exit can lag the parent's wait by a moment.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(delay),
            Err(e) => return Err(e),
        }
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    fs::remove_dir(dir)
}

/// Every SoulBox parent directory on this host, for leak checks.
pub fn parent_dirs() -> Vec<PathBuf> {
    let layout = layout();
    let v1_roots = layout.v1.iter().map(|(root, _)| root);
    layout
        .v2
        .iter()
        .chain(v1_roots)
        .map(|root| root.join(PARENT))
        .collect()
}

/// Removes sandbox cgroups that hold no process and are older than
/// `min_age`: what a host process that died before its clean-up left. The
/// age keeps a sandbox being created right now (directory made, PID 1 not
/// yet attached) from being swept.
pub fn sweep_stale(min_age: Duration) {
    let now = SystemTime::now();
    for parent in parent_dirs() {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let is_sandbox = entry.file_type().is_ok_and(|t| t.is_dir())
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(crate::id::is_sandbox_id);
            if !is_sandbox {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= min_age);
            let empty = fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|procs| procs.trim().is_empty());
            if old_enough && empty {
                let _ = fs::remove_dir(&dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_layout_parsed() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
";
        let layout = parse_layout(text);
        assert_eq!(layout.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let roots: Vec<&PathBuf> = layout.v1.iter().map(|(root, _)| root).collect();
        assert_eq!(
            roots,
            [
                Path::new("/sys/fs/cgroup/memory"),
                Path::new("/sys/fs/cgroup/cpu,cpuacct")
            ]
        );
        assert_eq!(layout.v1[1].1, ["cpu"]);
    }

    #[test]
    fn pure_v2_layout_parsed() {
        let text = "40 1 0:35 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = parse_layout(text);
        assert_eq!(layout.v2, Some(PathBuf::from("/sys/fs/cgroup")));
        assert!(layout.v1.is_empty());
    }
}
