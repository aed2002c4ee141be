//! Helpers shared by SoulBox's end-to-end tests.
//!
//! Every test here creates real sandboxes, which needs root. Without root a
//! test prints why it is skipped and passes, except under CI (`CI=true`),
//! where CI runs as root and a skip is a failure.

pub mod image;

use std::path::PathBuf;

use soulbox_core::{Output, Sandbox, SandboxOptions};

/// Returns true when the test may run. Without root it prints the reason
/// and returns false, or panics when `CI` is set.
pub fn require_root(test: &str) -> bool {
    // The third field of the Uid: line is the effective uid.
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if euid == "0" {
        return true;
    }
    let reason = format!("{test}: skipped, creating sandboxes needs root (euid {euid})");
    assert!(
        std::env::var_os("CI").is_none(),
        "{reason}; CI must run every test as root"
    );
    eprintln!("{reason}");
    false
}

/// Upper bound for any single step of a test, so that a SoulBox bug shows
/// up as a failed assert instead of a hung test run.
pub const STEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `future`, panicking with `step` if it takes longer than
/// [`STEP_LIMIT`].
pub async fn within_limit<T>(step: &str, future: impl std::future::IntoFuture<Output = T>) -> T {
    match tokio::time::timeout(STEP_LIMIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{step} did not finish within {STEP_LIMIT:?}"),
    }
}

/// Creates a sandbox with [`options`].
pub async fn sandbox() -> Sandbox {
    Sandbox::create(options()).await.expect("create a sandbox")
}

/// Default options, except that the sandbox ends with its handle, so that a
/// failing test leaves nothing running.
pub fn options() -> SandboxOptions {
    SandboxOptions::default().kill_on_drop(true)
}

/// Runs a shell command line and returns its output, panicking if it could
/// not start.
pub async fn sh(sandbox: &Sandbox, command_line: &str) -> Output {
    sandbox
        .run(command_line)
        .await
        .unwrap_or_else(|e| panic!("run {command_line:?}: {e}"))
}

/// Runs a shell command line as the sandbox's root user.
pub async fn sh_as_root(sandbox: &Sandbox, command_line: &str) -> Output {
    sandbox
        .shell(command_line)
        .user("root")
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {command_line:?} as root: {e}"))
}

/// Runs a shell command line, asserts that it exited with code 0 and
/// returns its stdout.
pub async fn run_ok(sandbox: &Sandbox, command_line: &str) -> String {
    let output = sh(sandbox, command_line).await;
    assert!(
        output.status.success(),
        "{command_line:?} failed in the sandbox: {output:?}"
    );
    stdout(&output)
}

/// Returns the unprivileged uid and gid for rootless runs: those of the
/// account named by SOULBOX_ROOTLESS_USER (`.ci/run` creates one), else
/// 65534.
pub fn unprivileged_ids() -> (String, String) {
    let Some(name) = std::env::var_os("SOULBOX_ROOTLESS_USER") else {
        return ("65534".into(), "65534".into());
    };
    let id = |flag: &str| {
        let output = std::process::Command::new("id")
            .arg(flag)
            .arg(&name)
            .output()
            .unwrap();
        assert!(output.status.success(), "{name:?} is not an account");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    (id("-u"), id("-g"))
}

/// Returns the command's stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Cgroup directories that belong to sandbox `id` and still exist.
pub fn leftover_cgroups(id: &str) -> Vec<PathBuf> {
    soulbox_core::diagnostics::cgroup_parents()
        .into_iter()
        .map(|parent| parent.join(id))
        .filter(|dir| dir.exists())
        .collect()
}

/// Lines of the host's mount table that mention `needle`.
pub fn host_mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Returns whether the host process `pid` still exists (as anything but a zombie).
pub fn host_process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim().chars().next());
            state != Some('Z')
        }
        Err(_) => false,
    }
}

/// Reads the `comm` of host process `pid`, or returns `None` once it is gone.
pub fn host_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|comm| comm.trim_end().to_string())
}

/// Returns the parent pid of host process `pid`, if it still exists.
pub fn host_ppid(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // proc(5): "pid (comm) state ppid ...", and comm may contain spaces or
    // parentheses, so the fields after it start at the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Finds the host pids of this process's children whose `comm` is `name`.
pub fn host_children_named(name: &str) -> Vec<i32> {
    let me = std::process::id();
    let entries = std::fs::read_dir("/proc").expect("list the host's /proc");
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| host_ppid(pid) == Some(me))
        .filter(|&pid| host_comm(pid).as_deref() == Some(name))
        .collect()
}

/// Path of the `soulbox` binary built for these tests.
pub fn soulbox_bin() -> PathBuf {
    // Integration tests run from target/<profile>/deps; the binary is one up.
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("soulbox")
}

/// Builds a name unique to this process and call, for host files and
/// mounts that must not collide.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("soulbox-test-{tag}-{}-{nanos}-{n}", std::process::id())
}

/// A host file that exists for one test and is removed when the guard
/// drops, also when the test panics.
#[derive(Debug)]
pub struct HostFile {
    /// The file's path on the host.
    pub path: PathBuf,
}

impl HostFile {
    /// Creates `path` with `contents`.
    pub fn create(path: PathBuf, contents: &str) -> Self {
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("create host file {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("remove host file {}: {e}", self.path.display());
        }
    }
}

/// A tmpfs mounted on a new host directory for one test. The guard unmounts
/// and removes it when it drops, also when the test panics.
#[derive(Debug)]
pub struct HostTmpfs {
    /// The mount point on the host.
    pub dir: PathBuf,
    mounted: bool,
}

impl HostTmpfs {
    /// Mounts a tmpfs whose source name is `source` on the new directory
    /// `dir`, with the host's mount(8).
    pub fn mount(source: &str, dir: PathBuf) -> Self {
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("create mount point {}: {e}", dir.display()));
        let mut guard = Self {
            dir,
            mounted: false,
        };
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", source])
            .arg(&guard.dir)
            .status()
            .unwrap_or_else(|e| panic!("start the host's mount(8): {e}"));
        assert!(
            status.success(),
            "host mount of tmpfs {source} on {} failed: {status}",
            guard.dir.display()
        );
        guard.mounted = true;
        guard
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        if self.mounted {
            match std::process::Command::new("umount").arg(&self.dir).status() {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("umount {}: {status}", self.dir.display()),
                Err(e) => eprintln!("start umount for {}: {e}", self.dir.display()),
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("remove mount point {}: {e}", self.dir.display());
        }
    }
}

/// Copies the program `from` to `to` with permissions `mode`, for a test
/// that executes the copy. `cp` writes the copy, not this process. A child
/// that another test's thread forks while this process has the copy open
/// for writing keeps that descriptor until its own exec, and executing the
/// copy meanwhile fails with ETXTBSY.
pub fn copy_program(from: &std::path::Path, to: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let status = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp {} {} failed",
        from.display(),
        to.display()
    );
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", to.display()));
}
