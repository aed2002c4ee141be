//! Limits of the host process that many sandboxes run into.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;

/// Raises this process's soft RLIMIT_NOFILE to its hard limit once `fd`,
/// a descriptor just opened, is past three quarters of the soft limit.
///
/// Each sandbox costs this process descriptors while it runs: a handle
/// keeps three open (PID 1's pidfd, the control socket and the root
/// directory), and the reaper keeps the pidfd of a sandbox whose handles
/// are gone. The
/// usual soft limit of 1024 therefore stops at a few hundred sandboxes,
/// while the hard limit is typically 524288 or more. The soft limit exists
/// for programs that use select(2), which cannot watch descriptors above
/// 1023; SoulBox does not use it. The raise happens only in a process that
/// holds that many descriptors, and programs it starts afterwards inherit
/// the raised limit.
pub(crate) fn ensure_fd_headroom(fd: RawFd) {
    static RAISED: AtomicBool = AtomicBool::new(false);
    if RAISED.load(Ordering::Relaxed) {
        return;
    }
    let Ok((soft, hard)) = sys::nofile_limits() else {
        return;
    };
    let Ok(fd) = u64::try_from(fd) else { return };
    if fd < soft / 4 * 3 {
        return;
    }
    if soft < hard && sys::set_nofile_soft_limit(hard, hard).is_ok() {
        tracing::debug!(
            from = soft,
            to = hard,
            "raised the soft limit on open files"
        );
    }
    // Already at the hard limit, or the raise failed: either way there is
    // nothing left to try, and a later EMFILE names the limit.
    RAISED.store(true, Ordering::Relaxed);
}
