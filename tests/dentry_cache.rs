//! Sandboxes leave nothing in the host kernel's dentry cache.
//!
//! Every sandbox has its own id, and its state files and cgroup
//! directories are named after it. On ext4 and cgroupfs, a name that is
//! unlinked while no one has it open, or looked up and not found, stays in
//! the cache as a negative dentry until memory runs short. The kill used
//! to leave eight per sandbox.
//!
//! This file is a test binary of its own, so that no other test creates
//! sandboxes while it counts. The count is host-wide, and a compiler that
//! creates and removes files meanwhile can add hundreds within a second.
//! So each test counts [`BATCHES`] batches separately and checks the
//! second-smallest count, which bursts in up to three batches do not move,
//! and which a negative burst (a removed directory takes its negative
//! dentries along) in one batch cannot hide.

use std::process::Command;
use std::time::Duration;

use soulbox_core::{ListQuery, Sandbox, SandboxPool};
use soulbox_tests::*;

const BATCHES: usize = 5;
/// Sandboxes in each batch. A leak of one negative dentry per sandbox adds
/// this many to a batch's count, and each test fails at half of that.
const BATCH_SIZE: usize = 20;

/// Lock that each test takes while it counts, because the count is
/// host-wide and the tests of this file run on parallel threads.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Returns the second-smallest of the counts.
fn second_smallest(mut counts: Vec<i64>) -> i64 {
    counts.sort_unstable();
    counts[1]
}

async fn create_use_and_kill(pause: bool) {
    let sandbox = within_limit("create", Sandbox::create(options()))
        .await
        .expect("create a sandbox");
    let output = within_limit("run /bin/true", sandbox.command("/bin/true").output())
        .await
        .expect("run /bin/true");
    assert!(output.status.success(), "/bin/true: {:?}", output.status);
    within_limit("get the info", sandbox.get_info())
        .await
        .expect("get the info");
    // Looks up the paused marker, which does not exist, so its name is
    // cached as a negative dentry until the kill renames the record over it.
    within_limit(
        "set the timeout",
        sandbox.set_timeout(Duration::from_secs(300)),
    )
    .await
    .expect("set the timeout");
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
    let _counting = COUNTING.lock().await;
    // The first sandbox starts the zygote and makes the state and cgroup
    // parent directories, none of which repeats.
    create_use_and_kill(true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut counts = Vec::new();
    for _ in 0..BATCHES {
        let before = negative_dentries();
        for i in 0..BATCH_SIZE {
            create_use_and_kill(i % 10 == 0).await;
        }
        counts.push(negative_dentries() - before);
    }
    // Eight per sandbox would be 160 a batch.
    assert!(
        second_smallest(counts.clone()) < BATCH_SIZE as i64 / 2,
        "batches of {BATCH_SIZE} sandboxes left {counts:?} negative dentries in the host's \
         dentry cache"
    );
}

/// A rootless create may not write to the host's cgroups. Each failed
/// mkdir of a cgroup directory named after the sandbox used to leave a
/// negative dentry, three per `soulbox run` on a host with the memory and
/// pids controllers on cgroup v1.
#[test]
fn rootless_runs_leave_no_negative_dentries() {
    if !require_root("rootless_runs_leave_no_negative_dentries") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // The build directory may sit below a home directory that the
    // unprivileged account cannot enter, so the CLI runs from a copy.
    let dir = std::env::temp_dir().join(unique_name("dentry-rootless"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let soulbox = dir.join("soulbox");
    copy_program(&soulbox_bin(), &soulbox, 0o755);
    let (uid, gid) = unprivileged_ids();
    let run_true = || {
        let output = Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"])
            .args(["env", "-i", "PATH=/usr/bin:/bin"])
            .arg(&soulbox)
            .args(["run", "--", "/bin/true"])
            .output()
            .expect("run setpriv (util-linux)");
        assert!(
            output.status.success(),
            "soulbox run as uid {uid} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let _counting = COUNTING.blocking_lock();
    // The first run makes the state directory, which does not repeat.
    run_true();
    let mut counts = Vec::new();
    for _ in 0..BATCHES {
        let before = negative_dentries();
        for _ in 0..BATCH_SIZE {
            run_true();
        }
        counts.push(negative_dentries() - before);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        second_smallest(counts.clone()) < BATCH_SIZE as i64 / 2,
        "batches of {BATCH_SIZE} rootless runs left {counts:?} negative dentries in the \
         host's dentry cache"
    );
}

/// Sandboxes that wait in a pool have no record yet. Each one that the
/// pool's close kills used to leave a negative dentry of its record's name.
#[tokio::test]
async fn pool_discards_leave_no_negative_dentries() {
    if !require_root("pool_discards_leave_no_negative_dentries") {
        return;
    }
    const POOL_SIZE: usize = BATCH_SIZE;
    let fill = |pool: &SandboxPool| {
        let deadline = std::time::Instant::now() + STEP_LIMIT;
        while pool.waiting() < POOL_SIZE {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool filled only {} of {POOL_SIZE} sandboxes within {STEP_LIMIT:?}",
                pool.waiting()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let _counting = COUNTING.lock().await;
    // The first round starts the zygote and makes the parent directories.
    let pool = SandboxPool::new(options(), POOL_SIZE).expect("start a pool");
    fill(&pool);
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut counts = Vec::new();
    for _ in 0..BATCHES {
        let before = negative_dentries();
        let pool = SandboxPool::new(options(), POOL_SIZE).expect("start a pool");
        fill(&pool);
        let sandbox = within_limit("take a sandbox", pool.create())
            .await
            .expect("take a sandbox from the pool");
        within_limit("kill", sandbox.kill()).await.expect("kill");
        fill(&pool);
        within_limit("close the pool", pool.close()).await;
        counts.push(negative_dentries() - before);
    }
    assert!(
        second_smallest(counts.clone()) < POOL_SIZE as i64 / 2,
        "pools that discarded {POOL_SIZE} sandboxes each left {counts:?} negative dentries \
         in the host's dentry cache"
    );
}

/// The next list removes files of an entry without a lock file once they
/// are 5 s old, such as a paused marker that a pause racing a kill wrote
/// after the kill. It removes empty sandbox cgroups once they are 60 s
/// old. Each removal used to leave a negative dentry.
#[tokio::test]
async fn swept_leftovers_leave_no_negative_dentries() {
    if !require_root("swept_leftovers_leave_no_negative_dentries") {
        return;
    }
    const LEFTOVERS: usize = 100;
    const CGROUPS_PER_PARENT: usize = 20;
    let _counting = COUNTING.lock().await;
    // Makes the state directory where no sandbox has made it yet.
    within_limit("list", Sandbox::list(&ListQuery::default()))
        .await
        .expect("list the sandboxes");
    let sandboxes = soulbox_core::diagnostics::state_dir().join("sandboxes");
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    // Sandbox ids: "sb-" and 12 characters of this alphabet.
    let alphabet = b"abcdefghijkmnpqrstuvwxyz23456789";
    let leftovers: Vec<_> = (0..LEFTOVERS)
        .map(|i| {
            let high = alphabet[i / alphabet.len()] as char;
            let low = alphabet[i % alphabet.len()] as char;
            sandboxes.join(format!("sb-dentrycach{high}{low}.paused"))
        })
        .collect();
    for path in &leftovers {
        std::fs::File::create(path)
            .and_then(|file| file.set_modified(old))
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    }
    let mut cgroups = Vec::new();
    for parent in soulbox_core::diagnostics::cgroup_parents() {
        // SoulBox makes a hierarchy's parent at the first sandbox that
        // needs it, so on a new host no sandbox may have made it yet.
        std::fs::create_dir_all(&parent)
            .unwrap_or_else(|e| panic!("create the cgroup parent {}: {e}", parent.display()));
        for &letter in alphabet.iter().take(CGROUPS_PER_PARENT) {
            let dir = parent.join(format!("sb-dentrycgrp{}a", letter as char));
            std::fs::create_dir(&dir)
                .and_then(|()| std::fs::File::open(&dir))
                .and_then(|file| file.set_modified(old))
                .unwrap_or_else(|e| panic!("create the cgroup {}: {e}", dir.display()));
            cgroups.push(dir);
        }
    }
    let removed = (leftovers.len() + cgroups.len()) as i64;

    let before = negative_dentries();
    within_limit("list", Sandbox::list(&ListQuery::default()))
        .await
        .expect("list the sandboxes");
    let left = negative_dentries() - before;
    let remaining: Vec<_> = leftovers.iter().filter(|path| path.exists()).collect();
    assert!(remaining.is_empty(), "the list left {remaining:?}");
    let remaining: Vec<_> = cgroups.iter().filter(|dir| dir.exists()).collect();
    for dir in &remaining {
        let _ = std::fs::remove_dir(dir);
    }
    assert!(
        remaining.is_empty(),
        "the list left the cgroups {remaining:?}"
    );
    // Other processes on the host may add a few meanwhile.
    assert!(
        left < removed / 4,
        "removing {removed} leftover files and cgroups left {left} negative dentries in \
         the host's dentry cache"
    );
}
