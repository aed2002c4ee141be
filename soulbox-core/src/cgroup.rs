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
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use soulbox_proto::CommandMemory;

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
    /// Controllers the cgroup2 hierarchy has (its root's cgroup.controllers).
    v2_controllers: Vec<String>,
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
        let mut layout = parse_layout(&mountinfo);
        if let Some(v2) = &layout.v2 {
            let controllers = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
            layout.v2_controllers = controllers.split_whitespace().map(str::to_string).collect();
        }
        layout
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

/// Resource limits enforced through cgroups. `None` leaves a resource
/// unlimited and costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes, swap excluded (swap is closed where it can be).
    pub memory: Option<u64>,
    /// Number of processes and threads.
    pub pids: Option<u64>,
    /// CPU time in thousandths of a core (1000 = one core).
    pub cpu_millicores: Option<u64>,
}

impl Limits {
    /// Every limit set, for finding a dead sandbox's directories when its
    /// record of the limits in force is lost.
    pub(crate) const ANY: Self = Self {
        memory: Some(1),
        pids: Some(1),
        cpu_millicores: Some(1),
    };
}

/// CFS period for CPU limits, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// One sandbox's cgroup directories, removed by [`SandboxCgroup::remove`].
#[derive(Debug, Default)]
pub struct SandboxCgroup {
    /// The v2 directory, if any.
    v2: Option<PathBuf>,
    /// Every directory, v2 first.
    dirs: Vec<PathBuf>,
    /// Directory of the memory controller's files, for out-of-memory counts.
    memory: Option<(PathBuf, Version)>,
    /// The file with the out-of-memory count, opened at its first read and
    /// read again from its start for every command after that.
    oom_file: OnceLock<Option<fs::File>>,
    /// The limits actually written; a limit whose hierarchy this process
    /// may not write to (rootless without delegation) is missing here.
    enforced: Limits,
}

/// The `tasks` files of a sandbox's v1 directories, sent to PID 1.
///
/// With a v1 memory directory and another directory that keeps PID 1,
/// PID 1 joins the memory directory only to enter its cgroup namespace
/// there, and then moves to the directory above, SoulBox's own, which has
/// no limit. The supervisor of each command joins the sandbox's directory
/// before the command starts, so every process of the sandbox but PID 1 is
/// limited, and the OOM killer never picks PID 1. Where the memory
/// directory is the only one, PID 1 stays in it (see [`CommandMemory`]).
#[derive(Debug)]
pub struct TaskFiles {
    /// One file per v1 directory; with [`CommandMemory::JoinV1`], the
    /// memory directory's and then its parent's come last.
    pub files: Vec<OwnedFd>,
    /// The placement of the commands under the memory limit.
    pub command_memory: CommandMemory,
}

impl Default for TaskFiles {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            command_memory: CommandMemory::Unlimited,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl SandboxCgroup {
    /// Creates the sandbox's directories and writes `limits` into them:
    /// one directory in the v2 hierarchy, and one in each v1 hierarchy that
    /// binds a controller a limit needs and v2 lacks. Without write access
    /// to a hierarchy (rootless without delegation) it is skipped, and so
    /// are its limits.
    ///
    /// Each hierarchy costs a directory, its limit files and a join on
    /// every create, so only the controllers a limit needs are joined.
    ///
    /// The work comes in two parts. This makes the v2 directory, with the
    /// limits of the controllers v2 holds, which a process can start in
    /// (CLONE_INTO_CGROUP). [`SandboxCgroup::add_v1`] makes the v1
    /// directories, which PID 1 joins itself, so the host can make them
    /// while PID 1 builds the sandbox.
    pub fn create(id: &str, limits: &Limits) -> Result<Self> {
        let mut cgroup = Self {
            v2: None,
            dirs: Vec::new(),
            memory: None,
            oom_file: OnceLock::new(),
            enforced: Limits::default(),
        };
        if let Err(e) = cgroup.populate(layout(), id, limits, Version::V2) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Makes the v1 directories that `limits` need and writes the limits
    /// into them: the second part of [`SandboxCgroup::create`], given the
    /// same `id` and `limits`. On error, what was made stays listed for
    /// [`SandboxCgroup::remove`].
    pub fn add_v1(&mut self, id: &str, limits: &Limits) -> Result<()> {
        self.populate(layout(), id, limits, Version::V1)
    }

    /// Makes the directories of hierarchy version `part` and writes the
    /// limits that go there.
    fn populate(
        &mut self,
        layout: &Layout,
        id: &str,
        limits: &Limits,
        part: Version,
    ) -> Result<()> {
        if part == Version::V2 {
            if let Some(root) = &layout.v2 {
                self.v2 = make_dir(root, id)?;
                if let Some(dir) = &self.v2 {
                    self.dirs.push(dir.clone());
                }
            }
        }
        let wanted = [
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
            ("cpu", limits.cpu_millicores.is_some()),
        ];
        for (controller, needed) in wanted {
            if !needed {
                continue;
            }
            let in_v2 = layout.v2_controllers.iter().any(|c| c == controller);
            let v2_part = self.v2.is_some() && in_v2;
            if v2_part != (part == Version::V2) {
                continue;
            }
            let dir = match (&self.v2, in_v2) {
                (Some(dir), true) => {
                    enable_in_parent(dir, controller);
                    Some((dir.clone(), Version::V2))
                }
                _ => self
                    .v1_dir(layout, id, controller)?
                    .map(|dir| (dir, Version::V1)),
            };
            let Some((dir, version)) = dir else { continue };
            write_limit(&dir, version, controller, limits)?;
            match controller {
                "memory" => self.enforced.memory = limits.memory,
                "pids" => self.enforced.pids = limits.pids,
                _ => self.enforced.cpu_millicores = limits.cpu_millicores,
            }
            if controller == "memory" {
                self.memory = Some((dir, version));
            }
        }
        Ok(())
    }

    /// Returns the sandbox's directory in the v1 hierarchy of `controller`,
    /// creating it on first use.
    fn v1_dir(&mut self, layout: &Layout, id: &str, controller: &str) -> Result<Option<PathBuf>> {
        let Some((root, _)) = layout
            .v1
            .iter()
            .find(|(_, controllers)| controllers.iter().any(|c| c == controller))
        else {
            return Ok(None);
        };
        let wanted = root.join(PARENT).join(id);
        if self.dirs.contains(&wanted) {
            return Ok(Some(wanted));
        }
        let dir = make_dir(root, id)?;
        if let Some(dir) = &dir {
            self.dirs.push(dir.clone());
        }
        Ok(dir)
    }

    /// Returns the limits in force: those requested, less any whose cgroup
    /// hierarchy this process may not write to.
    pub fn enforced(&self) -> Limits {
        self.enforced
    }

    /// Returns how many processes the out-of-memory killer has killed in the
    /// sandbox, or `None` without a memory cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = self
            .oom_file
            .get_or_init(|| {
                let (dir, version) = self.memory.as_ref()?;
                let name = match version {
                    Version::V1 => "memory.oom_control",
                    Version::V2 => "memory.events",
                };
                fs::File::open(dir.join(name)).ok()
            })
            .as_ref()?;
        // Both files are a few short lines; a read from offset 0 makes the
        // kernel print them afresh.
        let mut buf = [0u8; 512];
        let len = file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..len])
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
    }

    /// Opens the v2 directory for clone3's CLONE_INTO_CGROUP, which starts a
    /// process in it. `None` without a v2 directory, or if it cannot be
    /// opened; the process is then moved by [`SandboxCgroup::attach`].
    pub fn open_v2(&self) -> Option<OwnedFd> {
        let dir = self.v2.as_ref()?;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .ok()
            .map(OwnedFd::from)
    }

    /// Opens the `tasks` file of every v1 directory, for PID 1 to join by
    /// writing "0" into each. A pid written into `cgroup.procs` by another
    /// process takes the kernel's global thread-group lock for writing,
    /// which waits for an RCU grace period (15 to 30 ms on an idle host);
    /// a single-threaded process moving itself through `tasks` does not.
    /// The memory directory's file and its parent's come last (see
    /// [`TaskFiles`]).
    pub fn open_v1_task_files(&self) -> Result<TaskFiles> {
        // PID 1 leaves a v1 memory directory only where another directory
        // contains it, which keeps the sweep off an idle sandbox's cgroups.
        let memory = match &self.memory {
            Some((dir, Version::V1)) if self.dirs.len() > 1 => Some(dir),
            _ => None,
        };
        let open = |dir: &PathBuf| open_for_writing(dir, "tasks", "open the tasks file of");
        let mut files = self
            .dirs
            .iter()
            .filter(|dir| self.v2.as_ref() != Some(*dir) && memory != Some(*dir))
            .map(open)
            .collect::<Result<Vec<_>>>()?;
        let command_memory = match (memory, &self.memory) {
            (Some(dir), _) => {
                files.push(open(dir)?);
                // SoulBox's own directory, which has no limit.
                let parent = dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf);
                files.push(open(&parent)?);
                CommandMemory::JoinV1
            }
            (None, Some(_)) => CommandMemory::RaiseScore,
            (None, None) => CommandMemory::Unlimited,
        };
        Ok(TaskFiles {
            files,
            command_memory,
        })
    }

    /// Moves `pid` into the v2 directory, unless it started there
    /// (`in_v2`). The v1 directories are joined by PID 1 itself, through
    /// [`SandboxCgroup::open_v1_task_files`].
    pub fn attach_v2(&self, pid: i32, in_v2: bool) -> Result<()> {
        let Some(dir) = self.v2.as_ref().filter(|_| !in_v2) else {
            return Ok(());
        };
        fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|source| Error::Cgroup {
            step: "attach to",
            path: dir.clone(),
            source,
        })
    }

    /// Removes every directory once the processes are gone. A busy directory
    /// is retried for up to a second. On cgroup v2 what is left in it is
    /// killed first, such as a process that joined from outside the sandbox.
    pub fn remove(&mut self) -> Result<()> {
        self.oom_file = OnceLock::new();
        let mut first_error = None;
        let v2 = self.v2.take();
        for dir in self.dirs.drain(..) {
            let kill = v2.as_deref() == Some(dir.as_path());
            if let Err(source) = remove_dir_retrying(&dir, kill) {
                first_error.get_or_insert(Error::Cgroup {
                    step: "remove",
                    path: dir,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Returns the cgroup directories, for tests and diagnostics.
    pub fn paths(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Finds the directories of sandbox `id` that another process created
    /// with `enforced` limits in force, as [`SandboxCgroup::create`] lays
    /// them out. Directories that do not exist are left out.
    pub fn reopen(id: &str, enforced: Limits) -> Self {
        let layout = layout();
        let mut cgroup = Self {
            v2: None,
            dirs: Vec::new(),
            memory: None,
            oom_file: OnceLock::new(),
            enforced,
        };
        if let Some(root) = &layout.v2 {
            let dir = root.join(PARENT).join(id);
            if dir.is_dir() {
                cgroup.dirs.push(dir.clone());
                cgroup.v2 = Some(dir);
            }
        }
        let wanted = [
            ("memory", enforced.memory.is_some()),
            ("pids", enforced.pids.is_some()),
            ("cpu", enforced.cpu_millicores.is_some()),
        ];
        for (controller, needed) in wanted {
            if !needed {
                continue;
            }
            let in_v2 = layout.v2_controllers.iter().any(|c| c == controller);
            let found = match (&cgroup.v2, in_v2) {
                (Some(dir), true) => Some((dir.clone(), Version::V2)),
                _ => layout
                    .v1
                    .iter()
                    .find(|(_, controllers)| controllers.iter().any(|c| c == controller))
                    .map(|(root, _)| (root.join(PARENT).join(id), Version::V1))
                    .filter(|(dir, _)| dir.is_dir()),
            };
            let Some((dir, version)) = found else {
                continue;
            };
            if !cgroup.dirs.contains(&dir) {
                cgroup.dirs.push(dir.clone());
            }
            if controller == "memory" {
                cgroup.memory = Some((dir, version));
            }
        }
        cgroup
    }

    /// Checks that the sandbox has the cgroup v2 directory whose
    /// `cgroup.freeze` pauses it.
    pub fn freezer_available(&self, operation: &'static str) -> Result<&PathBuf> {
        self.v2.as_ref().ok_or_else(|| Error::Unsupported {
            operation,
            reason: "the sandbox has no cgroup v2 directory, whose cgroup.freeze pauses it; \
                     a rootless caller needs a delegated cgroup v2 subtree"
                .to_string(),
        })
    }

    /// Opens the v2 directory's `cgroup.freeze` for writing, for a PID 1
    /// that freezes the sandbox at its deadline.
    pub fn open_freeze(&self, operation: &'static str) -> Result<OwnedFd> {
        let dir = self.freezer_available(operation)?;
        open_for_writing(dir, "cgroup.freeze", "open cgroup.freeze of")
    }

    /// Starts freezing (or thaws) every process of the sandbox. Freezing
    /// completes asynchronously: see [`SandboxCgroup::frozen_settled`].
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self.freezer_available(if frozen { "pause" } else { "resume" })?;
        fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }).map_err(|source| {
            Error::Cgroup {
                step: if frozen { "freeze" } else { "thaw" },
                path: dir.clone(),
                source,
            }
        })
    }

    /// Returns whether the kernel reports every task of the sandbox frozen.
    pub fn frozen_settled(&self) -> bool {
        self.v2.as_ref().is_some_and(|dir| {
            fs::read_to_string(dir.join("cgroup.events"))
                .is_ok_and(|events| events.lines().any(|line| line == "frozen 1"))
        })
    }

    /// Returns whether the sandbox is frozen or being frozen.
    pub fn is_frozen(&self) -> bool {
        self.v2.as_ref().is_some_and(|dir| {
            fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|text| text.trim() == "1")
        })
    }

    /// Returns the CPU time the sandbox's processes have used, from v2's
    /// `cpu.stat` (present without the cpu controller) or v1's cpuacct.
    pub fn cpu_usage(&self) -> Option<Duration> {
        if let Some(dir) = &self.v2 {
            let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
            let usec: u64 = stat
                .lines()
                .find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())?;
            return Some(Duration::from_micros(usec));
        }
        self.dirs.iter().find_map(|dir| {
            let ns: u64 = fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(Duration::from_nanos(ns))
        })
    }

    /// Returns the memory the sandbox uses, page cache and tmpfs included,
    /// or `None` without a memory cgroup.
    pub fn memory_usage(&self) -> Option<u64> {
        let (dir, version) = self.memory.as_ref()?;
        let file = match version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        fs::read_to_string(dir.join(file)).ok()?.trim().parse().ok()
    }
}

/// Checks, before anything is created, that [`SandboxCgroup::create`] will
/// make a cgroup v2 directory, whose `cgroup.freeze` pauses a sandbox: a
/// cgroup2 hierarchy is mounted, and this process may create directories
/// in SoulBox's parent there (or create that parent).
pub fn check_freezer_writable(operation: &'static str) -> Result<()> {
    use nix::unistd::{access, AccessFlags};
    let Some(root) = &layout().v2 else {
        return Err(Error::Unsupported {
            operation,
            reason: "this host has no cgroup2 hierarchy mounted, whose cgroup.freeze pauses a \
                     sandbox; mount one (cgroup2 on /sys/fs/cgroup/unified, for example) or use \
                     on_timeout \"kill\""
                .to_string(),
        });
    };
    let parent = root.join(PARENT);
    let checked = if parent.is_dir() {
        parent
    } else {
        root.clone()
    };
    if access(&checked, AccessFlags::W_OK | AccessFlags::X_OK).is_ok() {
        return Ok(());
    }
    Err(Error::Unsupported {
        operation,
        reason: format!(
            "this process may not create cgroups in {}, so the sandbox would have no cgroup \
             v2 directory, whose cgroup.freeze pauses it; run as root or as a user to whom \
             that cgroup is delegated, or use on_timeout \"kill\"",
            checked.display()
        ),
    })
}

/// Removes `dir`, retrying while it is busy. With `kill`, the first busy
/// attempt writes `cgroup.kill` (cgroup v2) before the retries.
///
/// Keeps the directory open with O_PATH meanwhile, so that the kernel
/// drops its dentry. An rmdir of a directory that no one has open leaves a
/// negative dentry of the sandbox's name in the cache (see `state`).
fn remove_dir_retrying(dir: &Path, kill: bool) -> io::Result<()> {
    let opened = match open_dir_path(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        opened => opened,
    };
    let removed = remove_dir_retrying_open(dir, kill);
    drop(opened);
    removed
}

/// Removes `dir` once, while it is open with O_PATH, so that the kernel
/// drops its dentry (see [`remove_dir_retrying`]).
fn remove_dir_open(dir: &Path) -> io::Result<()> {
    let opened = open_dir_path(dir)?;
    let removed = fs::remove_dir(dir);
    drop(opened);
    removed
}

fn open_dir_path(dir: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
}

fn remove_dir_retrying_open(dir: &Path, mut kill: bool) -> io::Result<()> {
    let mut delay = Duration::from_micros(200);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // The last task's exit can lag the parent's wait by a moment.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if std::mem::take(&mut kill) {
                    let _ = fs::write(dir.join("cgroup.kill"), "1");
                }
                std::thread::sleep(delay);
            }
            Err(e) => return Err(e),
        }
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    fs::remove_dir(dir)
}

/// Creates `root/soulbox/id`. Returns `None` when the hierarchy is not
/// writable (rootless without delegation). The parent is made only when
/// the first attempt finds it missing, which saves a system call on every
/// create but the first.
///
/// A caller other than root checks first that it may write to the
/// parent. A mkdir that fails with EACCES has already looked the name up,
/// so it would leave a negative dentry of the sandbox's id in the cache,
/// one per hierarchy and rootless create.
fn make_dir(root: &Path, id: &str) -> Result<Option<PathBuf>> {
    let parent = root.join(PARENT);
    let dir = parent.join(id);
    let error = |path: &Path, source| Error::Cgroup {
        step: "create",
        path: path.to_path_buf(),
        source,
    };
    if crate::sys::geteuid() != 0 && !may_create_in(&parent) {
        return Ok(None);
    }
    match fs::create_dir(&dir) {
        Ok(()) => return Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if is_not_writable(&e) => return Ok(None),
        Err(source) => return Err(error(&dir, source)),
    }
    match fs::create_dir(&parent) {
        // Another process may have made it since.
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if is_not_writable(&e) => return Ok(None),
        Err(source) => return Err(error(&parent, source)),
    }
    match fs::create_dir(&dir) {
        Ok(()) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(None),
        Err(source) => Err(error(&dir, source)),
    }
}

/// Returns false when this process's effective ids may not create entries
/// in `dir`. A missing `dir`, or another failure of the check, returns
/// true, so that the mkdir reports it.
fn may_create_in(dir: &Path) -> bool {
    use nix::fcntl::AtFlags;
    use nix::unistd::{faccessat, AccessFlags};
    match faccessat(
        None,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    ) {
        Err(errno) => !is_not_writable(&io::Error::from(errno)),
        Ok(()) => true,
    }
}

/// Returns whether creating a cgroup directory failed because the caller
/// may not write to the hierarchy.
fn is_not_writable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Lets the sandbox directories below SoulBox's v2 parent use `controller`.
/// It fails quietly where the root does not delegate the controller; the
/// limit write that follows then reports the problem.
fn enable_in_parent(dir: &Path, controller: &str) {
    if let Some(parent) = dir.parent() {
        let _ = fs::write(
            parent.join("cgroup.subtree_control"),
            format!("+{controller}"),
        );
    }
}

/// Writes the limit for `controller` in `dir`.
fn write_limit(dir: &Path, version: Version, controller: &str, limits: &Limits) -> Result<()> {
    let files: Vec<(&str, String)> = match (controller, version) {
        ("memory", Version::V1) => {
            let bytes = limits.memory.unwrap_or(0).to_string();
            // memsw (memory + swap) exists only with swap accounting; where
            // it does, making it equal to the memory limit closes swap.
            // Swap accounting is set at boot, so one look serves every create.
            static SWAP_ACCOUNTED: OnceLock<bool> = OnceLock::new();
            let mut files = vec![("memory.limit_in_bytes", bytes.clone())];
            if *SWAP_ACCOUNTED.get_or_init(|| dir.join("memory.memsw.limit_in_bytes").exists()) {
                files.push(("memory.memsw.limit_in_bytes", bytes));
            }
            files
        }
        ("memory", Version::V2) => vec![
            ("memory.max", limits.memory.unwrap_or(0).to_string()),
            ("memory.swap.max", "0".to_string()),
        ],
        ("pids", _) => vec![("pids.max", limits.pids.unwrap_or(0).to_string())],
        ("cpu", Version::V1) => {
            let quota = limits.cpu_millicores.unwrap_or(0) * CPU_PERIOD_US / 1000;
            vec![
                ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ]
        }
        ("cpu", Version::V2) => {
            let quota = limits.cpu_millicores.unwrap_or(0) * CPU_PERIOD_US / 1000;
            vec![("cpu.max", format!("{quota} {CPU_PERIOD_US}"))]
        }
        _ => Vec::new(),
    };
    for (name, value) in files {
        let path = dir.join(name);
        fs::write(&path, &value).map_err(|source| Error::Cgroup {
            step: "set a limit in",
            path,
            source,
        })?;
    }
    Ok(())
}

/// Opens the file `name` of the cgroup directory `dir` for writing,
/// close-on-exec. `step` names the step in the error.
fn open_for_writing(dir: &Path, name: &str, step: &'static str) -> Result<OwnedFd> {
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(name))
        .map(OwnedFd::from)
        .map_err(|source| Error::Cgroup {
            step,
            path: dir.to_path_buf(),
            source,
        })
}

/// Returns every SoulBox parent directory on this host, for leak checks.
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
/// yet attached) from being swept. A sandbox's directories go only when
/// every one of them is empty: an idle sandbox's v1 memory cgroup has no
/// process, because PID 1 leaves it to the commands (see [`TaskFiles`]).
pub fn sweep_stale(min_age: Duration) {
    let now = SystemTime::now();
    let mut stale = Vec::new();
    let mut busy = std::collections::HashSet::new();
    for parent in parent_dirs() {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().filter(|name| crate::id::is_sandbox_id(name)) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = entry.path();
            let empty = fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|procs| procs.trim().is_empty());
            if !empty {
                busy.insert(id.to_string());
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= min_age);
            if old_enough {
                stale.push((id.to_string(), dir));
            }
        }
    }
    for (id, dir) in stale {
        if !busy.contains(&id) {
            let _ = remove_dir_open(&dir);
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

    #[test]
    fn make_dir_creates_missing_parent() {
        let root = std::env::temp_dir().join(format!(
            "soulbox-cgroup-make-dir-{}-{}",
            std::process::id(),
            crate::id::random_u32().unwrap()
        ));
        fs::create_dir(&root).unwrap();
        let first = make_dir(&root, "sb-first");
        let second = make_dir(&root, "sb-second");
        let parent_made = root.join(PARENT).is_dir();
        let _ = fs::remove_dir_all(&root);

        assert_eq!(first.unwrap(), Some(root.join(PARENT).join("sb-first")));
        assert_eq!(second.unwrap(), Some(root.join(PARENT).join("sb-second")));
        assert!(parent_made);
    }

    #[test]
    fn make_dir_rejects_existing_id() {
        let root = std::env::temp_dir().join(format!(
            "soulbox-cgroup-existing-{}-{}",
            std::process::id(),
            crate::id::random_u32().unwrap()
        ));
        fs::create_dir_all(root.join(PARENT).join("sb-existing")).unwrap();
        let existing = make_dir(&root, "sb-existing");
        let _ = fs::remove_dir_all(&root);

        assert!(matches!(
            existing,
            Err(Error::Cgroup { step: "create", .. })
        ));
    }
}
