//! The warm pool's refill waits a moment after a hand-over, so that it does
//! not compete with the command a caller runs right after. This test is
//! alone in its binary because it counts the entries of the state
//! directory, which every sandbox of this process adds to.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use soulbox_core::SandboxPool;
use soulbox_tests::*;

/// Counts the sandboxes that have a state entry, built or being built: each
/// has a lock file, a socket and, once handed over, a record.
fn state_entries(dir: &Path) -> usize {
    let ids: HashSet<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let name = entry.expect("read a state entry").file_name();
            let name = name.to_string_lossy();
            name.split('.').next().unwrap_or_default().to_string()
        })
        .collect();
    ids.len()
}

async fn wait_full(pool: &SandboxPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.waiting() < pool.size() {
        assert!(
            Instant::now() < deadline,
            "the pool did not fill within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refill_waits_after_hand_over() {
    if !require_root("refill_waits_after_hand_over") {
        return;
    }
    let pool = SandboxPool::new(options(), 2).expect("start a pool");
    let entries_dir = soulbox_core::diagnostics::state_dir().join("sandboxes");
    // The check needs this test to look again within the refill's 5 ms
    // wait; on a busy host an attempt that took longer is repeated.
    let mut checked = false;
    for _ in 0..10 {
        wait_full(&pool).await;
        let before = state_entries(&entries_dir);
        let handed_over = Instant::now();
        let sandbox = pool.create().await.expect("hand over a sandbox");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let after = state_entries(&entries_dir);
        let elapsed = handed_over.elapsed();
        sandbox.kill().await.expect("kill the handed-over sandbox");
        if elapsed >= Duration::from_millis(4) {
            continue;
        }
        assert_eq!(
            after, before,
            "the refill started a build {elapsed:?} after a hand-over that left half the pool"
        );
        checked = true;
        break;
    }
    assert!(checked, "every attempt took 4 ms or more to look again");
    // The replacement comes once the wait is over.
    wait_full(&pool).await;
    pool.close().await;
}
