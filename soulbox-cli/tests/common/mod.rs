//! Helpers shared by the CLI's end-to-end tests.

use std::time::Duration;

/// How long one `soulbox` invocation may take before the test kills it and
/// fails, so that a hang is reported instead of stalling the test run.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Returns true when the test may run. Creating sandboxes needs root:
/// without it the test prints why it is skipped and passes, except under
/// CI (`CI` set), which runs as root and fails on a skip.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
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
