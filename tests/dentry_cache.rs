//! Sandboxes leave nothing in the host kernel's dentry cache.
//!
//! Every sandbox has its own id, and its state files and cgroup
//! directories are named after it. A name that is unlinked while no one
//! has it open, or looked up and not found, stays in the cache as a
//! negative dentry until memory runs short. The kill used to leave eight
//! per sandbox.
//!
//! This file is a test binary of its own, so that no other test creates
//! sandboxes while it counts.

use std::time::Duration;

use soulbox_core::Sandbox;
use soulbox_tests::*;

const SANDBOXES: usize = 100;

/// Returns the kernel's count of negative dentries, host-wide: the fifth
/// field of /proc/sys/fs/dentry-state.
fn negative_dentries() -> i64 {
    let state = std::fs::read_to_string("/proc/sys/fs/dentry-state").expect("read dentry-state");
    state
        .split_whitespace()
        .nth(4)
        .and_then(|field| field.parse().ok())
        .expect("a count of negative dentries in dentry-state")
}

async fn create_use_and_kill(pause: bool) {
    let sandbox = within_limit("create", Sandbox::create(options()))
        .await
        .expect("create a sandbox");
    let output = within_limit("run /bin/true", sandbox.command("/bin/true").output())
        .await
        .expect("run /bin/true");
    assert!(output.status.success(), "/bin/true: {:?}", output.status);
    // Looks up the paused marker, which does not exist.
    within_limit("get the info", sandbox.get_info())
        .await
        .expect("get the info");
    if pause {
        assert!(within_limit("pause", sandbox.pause()).await.expect("pause"));
        assert!(within_limit("resume", sandbox.resume())
            .await
            .expect("resume"));
        // Paused again, so that the kill removes the marker.
        assert!(within_limit("pause", sandbox.pause()).await.expect("pause"));
    }
    within_limit("kill", sandbox.kill()).await.expect("kill");
}

#[tokio::test]
async fn sandboxes_leave_no_negative_dentries() {
    if !require_root("sandboxes_leave_no_negative_dentries") {
        return;
    }
    // The first sandbox starts the zygote and makes the state and cgroup
    // parent directories, none of which repeats.
    create_use_and_kill(true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = negative_dentries();
    for i in 0..SANDBOXES {
        create_use_and_kill(i % 10 == 0).await;
    }
    let left = negative_dentries() - before;
    // Other processes on the host may add a few meanwhile. Eight per
    // sandbox would be 800.
    assert!(
        left < SANDBOXES as i64 / 4,
        "{SANDBOXES} sandboxes left {left} negative dentries in the host's dentry cache"
    );
}
