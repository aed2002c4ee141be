//! Helpers shared by SoulBox's end-to-end tests.
//!
//! Every test here creates real sandboxes, which needs root. Without root a
//! test prints why it is skipped and passes, except under CI (`CI=true`),
//! where CI runs as root and a skip is a failure.

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

/// Creates a sandbox with default options.
pub async fn sandbox() -> Sandbox {
    Sandbox::create(SandboxOptions::default())
        .await
        .expect("create a sandbox")
}

/// Runs a shell command line and returns its output, panicking if it could
/// not start.
pub async fn sh(sandbox: &Sandbox, command_line: &str) -> Output {
    sandbox
        .run(command_line)
        .await
        .unwrap_or_else(|e| panic!("run {command_line:?}: {e}"))
}

/// The command's stdout as text.
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

/// Whether the host process `pid` still exists (as anything but a zombie).
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
