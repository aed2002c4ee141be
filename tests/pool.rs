//! The warm pool: hand-over speed, that a handed-over sandbox is as fresh
//! as a new one, that waiting sandboxes stay hidden, and that closing or
//! dropping the pool leaves nothing behind.

use std::time::{Duration, Instant};

use soulbox_core::diagnostics::pool_waiting;
use soulbox_core::{Error, ListQuery, Sandbox, SandboxOptions, SandboxPool, MAX_POOL_SIZE};
use soulbox_tests::*;

/// Waits until every sandbox of `pool` is built.
async fn wait_full(pool: &SandboxPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.waiting() < pool.size() {
        assert!(
            Instant::now() < deadline,
            "pool filled only {} of {} within 60 s",
            pool.waiting(),
            pool.size()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Options with a label unique to one test, so `list` can find its
/// sandboxes among those of concurrent tests.
fn labelled(label: &str) -> SandboxOptions {
    options().metadata("pool-test", label)
}

fn listed_with(label: &str) -> ListQuery {
    ListQuery::default().metadata("pool-test", label)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn pool_hand_over_beats_create() {
    if !require_root("pool_hand_over_beats_create") {
        return;
    }
    let pool = SandboxPool::new(options(), 1).expect("start a pool");
    let mut hand_overs = Vec::new();
    let mut creates = Vec::new();
    for _ in 0..5 {
        wait_full(&pool).await;
        let start = Instant::now();
        let pooled = pool.create().await.expect("hand over");
        hand_overs.push(start.elapsed());
        pooled.kill().await.expect("kill the pooled sandbox");

        let start = Instant::now();
        let fresh = Sandbox::create(options()).await.expect("create");
        creates.push(start.elapsed());
        fresh.kill().await.expect("kill the fresh sandbox");
    }
    pool.close().await;
    let (hand_over, create) = (median(hand_overs), median(creates));
    assert!(
        hand_over < create,
        "median hand-over {hand_over:?} is not faster than a create {create:?}"
    );
}

#[tokio::test]
async fn pooled_sandbox_is_like_new() {
    if !require_root("pooled_sandbox_is_like_new") {
        return;
    }
    let pool = SandboxPool::new(options().env("POOL_ENV", "set"), 1).expect("start a pool");
    wait_full(&pool).await;
    let pooled = pool.create().await.expect("hand over");
    let fresh = Sandbox::create(options()).await.expect("create");
    for (what, sandbox) in [("pooled", &pooled), ("fresh", &fresh)] {
        let listing = sh(sandbox, "ls -A /tmp /home/user /var/tmp").await;
        assert_eq!(
            stdout(&listing),
            "/home/user:\n\n/tmp:\n\n/var/tmp:\n",
            "{what} sandbox has files"
        );
        // Nothing runs but SoulBox's own processes (PID 1, this command's
        // supervisor and maybe a spare one) and this listing.
        let listing = sh(
            sandbox,
            "for p in /proc/[0-9]*; do echo \"${p#/proc/} $(cat $p/comm)\"; done",
        )
        .await;
        let processes: Vec<(String, String)> = stdout(&listing)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(pid, comm)| (pid.to_string(), comm.to_string()))
            .collect();
        assert!(
            processes.contains(&("1".to_string(), "soulbox-init".to_string())),
            "{what}: no PID 1 in {processes:?}"
        );
        let others: Vec<&(String, String)> = processes
            .iter()
            .filter(|(_, comm)| !["soulbox-init", "bash", "sh", "cat"].contains(&comm.as_str()))
            .collect();
        assert!(others.is_empty(), "{what} sandbox runs {others:?}");
        let hostname = sh(sandbox, "hostname").await;
        assert_eq!(stdout(&hostname).trim(), sandbox.id(), "{what} hostname");
    }
    let env = sh(&pooled, "echo $POOL_ENV").await;
    assert_eq!(
        stdout(&env),
        "set\n",
        "pooled sandbox lacks the pool's envs"
    );
    pool.close().await;
}

#[tokio::test]
async fn pooled_timeout_starts_at_hand_over() {
    if !require_root("pooled_timeout_starts_at_hand_over") {
        return;
    }
    let timeout = Duration::from_secs(3);
    let pool = SandboxPool::new(options().timeout(timeout), 1).expect("start a pool");
    wait_full(&pool).await;
    // The waiting sandbox is now older than its timeout would allow.
    tokio::time::sleep(timeout + Duration::from_secs(1)).await;
    let handed_at = std::time::SystemTime::now();
    let sandbox = pool.create().await.expect("hand over");

    let info = sandbox.get_info().await.expect("get_info");
    let started = info
        .started_at
        .duration_since(handed_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        started < Duration::from_secs(1),
        "started_at {:?} is not the hand-over time {handed_at:?}",
        info.started_at
    );
    let ends_in = info
        .ends_at
        .expect("a deadline")
        .duration_since(handed_at)
        .expect("deadline after the hand-over");
    assert!(
        ends_in > Duration::from_secs(2) && ends_in <= timeout + Duration::from_secs(1),
        "deadline {ends_in:?} after the hand-over, expected about {timeout:?}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sandbox.is_running(), "ended before its timeout");
    tokio::time::sleep(timeout).await;
    assert!(!sandbox.is_running(), "still running after its timeout");
    pool.close().await;
}

#[tokio::test]
async fn waiting_sandboxes_are_hidden() {
    if !require_root("waiting_sandboxes_are_hidden") {
        return;
    }
    let label = unique_name("hidden");
    let pool = SandboxPool::new(labelled(&label), 2).expect("start a pool");
    wait_full(&pool).await;
    let listed = Sandbox::list(&listed_with(&label)).await.expect("list");
    assert!(listed.is_empty(), "waiting sandboxes listed: {listed:?}");
    for (id, _) in pool_waiting(&pool) {
        match Sandbox::connect(&id).await {
            Err(Error::SandboxNotFound { .. }) => {}
            other => panic!("connect to waiting sandbox {id}: {other:?}"),
        }
    }

    let sandbox = pool.create().await.expect("hand over");
    let listed = Sandbox::list(&listed_with(&label)).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|info| info.sandbox_id.as_str()).collect();
    assert_eq!(ids, [sandbox.id()], "after the hand-over");
    let connected = Sandbox::connect(sandbox.id()).await.expect("connect");
    let output = sh(&connected, "echo reached").await;
    assert_eq!(stdout(&output), "reached\n");
    pool.close().await;
}

/// Returns what is left of the sandboxes in `waiting`: live PID 1s and
/// cgroup directories.
fn leftovers(waiting: &[(String, i32)]) -> Vec<String> {
    let mut left = Vec::new();
    for (id, pid) in waiting {
        if host_process_alive(*pid) {
            left.push(format!("{id}: PID 1 {pid} alive"));
        }
        for dir in leftover_cgroups(id) {
            left.push(format!("{id}: cgroup {}", dir.display()));
        }
    }
    left
}

#[tokio::test]
async fn pool_drop_leaves_nothing() {
    if !require_root("pool_drop_leaves_nothing") {
        return;
    }
    let pool = SandboxPool::new(options(), 3).expect("start a pool");
    wait_full(&pool).await;
    let waiting = pool_waiting(&pool);
    assert_eq!(waiting.len(), 3);
    assert!(
        leftovers(&waiting).len() >= 3,
        "waiting sandboxes not found"
    );
    drop(pool);
    assert_eq!(leftovers(&waiting), Vec::<String>::new());
}

#[tokio::test]
async fn pool_close_leaves_nothing() {
    if !require_root("pool_close_leaves_nothing") {
        return;
    }
    let pool = SandboxPool::new(options(), 2).expect("start a pool");
    wait_full(&pool).await;
    let waiting = pool_waiting(&pool);
    let handed = pool.create().await.expect("hand over");
    // The refill is building a replacement; close interrupts it.
    pool.close().await;
    assert_eq!(leftovers(&waiting[1..]), Vec::<String>::new());
    let output = sh(&handed, "echo alive").await;
    assert_eq!(
        stdout(&output),
        "alive\n",
        "close ended a handed-over sandbox"
    );
    handed.kill().await.expect("kill");
    assert_eq!(leftovers(&waiting), Vec::<String>::new());
}

#[tokio::test]
async fn pool_skips_dead_sandbox() {
    if !require_root("pool_skips_dead_sandbox") {
        return;
    }
    let pool = SandboxPool::new(options(), 1).expect("start a pool");
    wait_full(&pool).await;
    let waiting = pool_waiting(&pool);
    let (_, pid) = waiting[0];
    // SAFETY: `pid` is the PID 1 of a sandbox this test owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    while host_process_alive(pid) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sandbox = pool.create().await.expect("create after a dead one");
    assert_ne!(sandbox.id(), waiting[0].0, "handed over the dead sandbox");
    let output = sh(&sandbox, "echo fine").await;
    assert_eq!(stdout(&output), "fine\n");
    pool.close().await;
    assert_eq!(leftovers(&waiting), Vec::<String>::new());
}

#[tokio::test]
async fn pool_rejects_bad_size() {
    for size in [0, MAX_POOL_SIZE + 1] {
        match SandboxPool::new(SandboxOptions::default(), size) {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(&size.to_string()), "{message}")
            }
            other => panic!("size {size}: {other:?}"),
        }
    }
    let mut bad = SandboxOptions::default();
    bad.disk_inodes = 1;
    assert!(matches!(
        SandboxPool::new(bad, 1),
        Err(Error::InvalidArgument(_))
    ));
}

/// Returns the scheduling policy of thread or process `tid`, without
/// `SCHED_RESET_ON_FORK`.
fn policy_of(tid: i32) -> i32 {
    // SAFETY: sched_getscheduler takes a plain thread id.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    assert!(
        policy >= 0,
        "sched_getscheduler({tid}): {}",
        std::io::Error::last_os_error()
    );
    policy & !libc::SCHED_RESET_ON_FORK
}

#[tokio::test]
async fn pool_refill_runs_idle() {
    if !require_root("pool_refill_runs_idle") {
        return;
    }
    let pool = SandboxPool::new(options(), 1).expect("start a pool");
    wait_full(&pool).await;

    let refill_threads: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .expect("list this process's threads")
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|c| c.trim() == "soulbox-pool")
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect();
    assert!(!refill_threads.is_empty(), "no soulbox-pool thread");
    for tid in refill_threads {
        assert_eq!(
            policy_of(tid),
            libc::SCHED_IDLE,
            "the refill thread {tid} builds at the normal priority"
        );
    }

    let pooled = pool.create().await.expect("hand over");
    assert_eq!(
        policy_of(pooled.pid()),
        libc::SCHED_OTHER,
        "the handed-over PID 1 kept the idle priority"
    );
    let inside = sh(
        &pooled,
        "python3 -c 'import os; print(os.sched_getscheduler(0))'",
    )
    .await;
    assert_eq!(
        stdout(&inside),
        format!("{}\n", libc::SCHED_OTHER),
        "a command in a handed-over sandbox runs at another priority"
    );
    pool.close().await;
}

/// A handed-over sandbox that a command of its own ended is replaced like
/// any other, and the pool hands over a working sandbox next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sandbox_ended_by_command() {
    if !require_root("pooled_sandbox_ended_by_command") {
        return;
    }
    let pool = SandboxPool::new(options(), 1).expect("start a pool");
    for round in 0..3 {
        wait_full(&pool).await;
        let pooled = pool.create().await.expect("hand over");
        let id = pooled.id().to_string();
        let mut ending = pooled.command("sh");
        ending
            .args(["-c", "sleep 600 & echo round $0", &round.to_string()])
            .ends_sandbox(true);
        let output = ending
            .output()
            .await
            .expect("run a command that ends the sandbox");
        assert_eq!(stdout(&output), format!("round {round}\n"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while pooled.is_running() {
            assert!(
                Instant::now() < deadline,
                "{id} runs 10 s after its command ended it"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pooled.kill().await.expect("kill the ended sandbox");
        let cgroups = leftover_cgroups(&id);
        assert!(cgroups.is_empty(), "cgroups of {id} remain: {cgroups:?}");
    }
    wait_full(&pool).await;
    let next = pool.create().await.expect("hand over after the ended ones");
    assert_eq!(stdout(&sh(&next, "echo fine").await), "fine\n");
    next.kill().await.expect("kill the last sandbox");
    let waiting = pool_waiting(&pool);
    pool.close().await;
    for (id, pid1) in waiting {
        let cgroups = leftover_cgroups(&id);
        assert!(
            cgroups.is_empty(),
            "cgroups of waiting {id} remain: {cgroups:?}"
        );
        assert!(
            !host_process_alive(pid1),
            "PID 1 of waiting {id} runs after close"
        );
    }
}

/// Set in the copy of this program that `rootless_pool_fills` starts as
/// an unprivileged user, where that test runs its rootless half.
const ROOTLESS_CHILD: &str = "SOULBOX_TEST_ROOTLESS_POOL";

/// An unprivileged user's pool fills and hands over working sandboxes. As
/// root, the test runs a copy of this program as uid 65534, with a state
/// directory that uid owns, and that copy runs this test again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootless_pool_fills() {
    if std::env::var_os(ROOTLESS_CHILD).is_some() {
        fill_pool_rootless().await;
        return;
    }
    if !require_root("rootless_pool_fills") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // The build directory may sit below a directory that uid 65534 cannot
    // enter, so the copy goes to a new directory of its own.
    let dir = std::env::temp_dir().join(unique_name("rootless-pool"));
    std::fs::create_dir(&dir).expect("create the test directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("open the test directory to uid 65534");
    let program = dir.join("pool-test");
    let this = std::env::current_exe().expect("find this test program");
    copy_program(&this, &program, 0o755);
    let state = dir.join("state");
    std::fs::create_dir(&state).expect("create the state directory");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534))
        .expect("give the state directory to uid 65534");

    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(["env", "-i", "PATH=/usr/bin:/bin"])
        .arg(format!("SOULBOX_STATE_DIR={}", state.display()))
        .arg(format!("{ROOTLESS_CHILD}=1"))
        .arg(&program)
        .args(["--exact", "rootless_pool_fills", "--nocapture"])
        .output()
        .expect("run setpriv (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the rootless run failed: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("test rootless_pool_fills ... ok"),
        "the rootless run did not run the test: {stdout}{stderr}"
    );
}

/// Fills a pool of one as an unprivileged user and checks the sandbox it
/// hands over: the rootless half of `rootless_pool_fills`.
async fn fill_pool_rootless() {
    let pool = SandboxPool::new(options(), 1).expect("start a rootless pool");
    wait_full(&pool).await;
    let pooled = pool.create().await.expect("hand over");
    let output = sh(&pooled, "id -u; head -n 1 /proc/self/uid_map").await;
    let text = stdout(&output);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "uid inside: {output:?}");
    let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(map, ["0", "65534", "1"], "uid map: {output:?}");
    pooled.kill().await.expect("kill the pooled sandbox");
    pool.close().await;
}
