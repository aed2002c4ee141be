//! Which memory cgroup each process of a sandbox is in. With a v1
//! memory cgroup, PID 1 moves to SoulBox's unlimited cgroup above the
//! sandbox's, and each command's supervisor joins the sandbox's cgroup
//! before the command starts. These tests check from the host that every
//! process but PID 1 is under the limit, however its command started.
//! Where the memory controller is in cgroup v2, PID 1 shares the commands'
//! cgroup, and the tests check the commands' raised OOM score instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use soulbox_core::{Launcher, Sandbox, SandboxOptions, SandboxPool};
use soulbox_tests::*;

const LIMIT: u64 = 64 << 20;

fn limited() -> SandboxOptions {
    let mut options = soulbox_tests::options();
    options.memory_limit = Some(LIMIT);
    options
}

/// Returns the sandbox's v1 memory cgroup directory, or `None` where the
/// memory controller is in cgroup v2 (PID 1 shares the cgroup there).
fn v1_memory_dir(sandbox: &Sandbox) -> Option<PathBuf> {
    sandbox
        .cgroup_paths()
        .into_iter()
        .find(|dir| dir.starts_with("/sys/fs/cgroup/memory"))
}

/// Returns the sandbox's v1 memory cgroup directory. Where it has none,
/// asserts the protection PID 1 gets where it shares the commands' memory
/// cgroup, an OOM score of 500 for the commands, and returns `None`.
async fn v1_memory_dir_or_score(sandbox: &Sandbox) -> Option<PathBuf> {
    let dir = v1_memory_dir(sandbox);
    if dir.is_none() {
        let score = sh(sandbox, "cat /proc/self/oom_score_adj").await;
        assert_eq!(
            stdout(&score),
            "500\n",
            "commands that share PID 1's memory cgroup should rank above it"
        );
    }
    dir
}

/// Returns the memory cgroup path of host process `pid` in the host's
/// cgroup namespace.
fn memory_cgroup(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        line.split_once(":memory:")
            .map(|(_, path)| path.to_string())
    })
}

/// Lists the host pids and names of the processes in the sandbox's PID
/// namespace, PID 1 left out.
fn sandbox_processes(sandbox: &Sandbox) -> Vec<(i32, String)> {
    let pid1 = sandbox.pid();
    let namespace = std::fs::read_link(format!("/proc/{pid1}/ns/pid")).expect("PID 1's namespace");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == pid1 {
            continue;
        }
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&namespace)
        {
            continue;
        }
        found.push((pid, host_comm(pid).unwrap_or_default()));
    }
    found
}

/// Asserts that PID 1 is in the cgroup above `memory_dir` and every other
/// process of the sandbox in `memory_dir`, once a process named `expected`
/// runs (it may still be executing). A supervisor PID 1 has just forked
/// is in PID 1's cgroup until its first step joins `memory_dir`, so a
/// misplaced process is looked at again before the assert.
async fn assert_placement(sandbox: &Sandbox, memory_dir: &Path, expected: &str, case: &str) {
    let relative = |dir: &Path| {
        let path = dir
            .strip_prefix("/sys/fs/cgroup/memory")
            .expect("a v1 memory path");
        format!("/{}", path.display())
    };
    let sandbox_path = relative(memory_dir);
    let parent_path = relative(memory_dir.parent().expect("a parent"));
    assert_eq!(
        memory_cgroup(sandbox.pid()).as_deref(),
        Some(parent_path.as_str()),
        "{case}: PID 1's memory cgroup"
    );
    let misplaced = |processes: &[(i32, String)]| -> Vec<(i32, String, Option<String>)> {
        processes
            .iter()
            .map(|(pid, name)| (*pid, name.clone(), memory_cgroup(*pid)))
            .filter(|(_, _, cgroup)| cgroup.as_ref().is_some_and(|path| *path != sandbox_path))
            .collect()
    };
    let mut processes = sandbox_processes(sandbox);
    for _ in 0..50 {
        let started = processes.iter().any(|(_, name)| name == expected);
        if started && misplaced(&processes).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        processes = sandbox_processes(sandbox);
    }
    assert!(
        processes.iter().any(|(_, name)| name == expected),
        "{case}: no {expected} among {processes:?}"
    );
    assert_eq!(
        misplaced(&processes),
        [],
        "{case}: processes outside {sandbox_path}"
    );
}

/// Starts `sleep 30` as a background command and checks the placement.
async fn check_background(sandbox: &Sandbox, memory_dir: &Path, case: &str) {
    let handle = sandbox
        .command("sleep")
        .arg("30")
        .start()
        .await
        .expect("start sleep");
    assert_placement(sandbox, memory_dir, "sleep", case).await;
    handle.kill().await.expect("kill sleep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_join_memory_cgroup_every_way() {
    if !require_root("commands_join_memory_cgroup_every_way") {
        return;
    }
    let sandbox = Sandbox::create(limited()).await.expect("create");
    let Some(memory_dir) = v1_memory_dir_or_score(&sandbox).await else {
        return;
    };
    let first = sh(
        &sandbox,
        "grep -h :memory: /proc/self/cgroup /proc/1/cgroup | cut -d: -f3",
    )
    .await;
    assert_eq!(
        stdout(&first),
        "/\n/..\n",
        "a command sees itself at its cgroup namespace's root, PID 1 above it"
    );
    check_background(&sandbox, &memory_dir, "a background command").await;

    // Orphans of a command that exited, and a grandchild.
    run_ok(
        &sandbox,
        "setsid sh -c 'sleep 30 & sleep 30' > /dev/null 2>&1 &",
    )
    .await;
    assert_placement(&sandbox, &memory_dir, "sleep", "orphans").await;

    let pty = sandbox
        .pty_shell()
        .start_pty(24, 80)
        .await
        .expect("start a PTY shell");
    assert_placement(&sandbox, &memory_dir, "sh", "a PTY shell").await;
    pty.kill().await.expect("kill the PTY shell");

    // Several commands, so that a spare supervisor waits, and a command
    // that one takes.
    for _ in 0..4 {
        run_ok(&sandbox, "true").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_background(&sandbox, &memory_dir, "a command a spare took").await;

    assert!(sandbox.pause().await.expect("pause"), "pause");
    assert!(sandbox.resume().await.expect("resume"), "resume");
    check_background(&sandbox, &memory_dir, "after a pause and resume").await;

    let connected = Sandbox::connect(sandbox.id()).await.expect("connect");
    check_background(&connected, &memory_dir, "from a connected handle").await;

    let execution = within_limit("run_code", sandbox.run_code("6 * 7"))
        .await
        .expect("run_code");
    assert!(execution.error.is_none(), "run_code: {execution:?}");
    assert_placement(&sandbox, &memory_dir, "python3", "the run_code kernel").await;

    let hog = sandbox
        .shell("python3 -c 'b = bytearray(256 << 20)'")
        .output()
        .await
        .expect("run the hog");
    assert!(hog.oom_killed, "a 256 MiB hog under 64 MiB: {hog:?}");
    sandbox.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_and_pooled_commands_join_memory_cgroup() {
    if !require_root("first_and_pooled_commands_join_memory_cgroup") {
        return;
    }
    let mut spec = soulbox_core::CommandSpec::new("sleep");
    spec.argv.push("30".into());
    let (sandbox, first) = within_limit(
        "create_and_start",
        Sandbox::create_and_start(limited(), &spec),
    )
    .await
    .expect("create_and_start");
    let Some(memory_dir) = v1_memory_dir_or_score(&sandbox).await else {
        return;
    };
    assert_placement(&sandbox, &memory_dir, "sleep", "create_and_start").await;
    first.kill().await.expect("kill the first command");
    sandbox.kill().await.expect("kill");

    let pool = SandboxPool::new(limited(), 1).expect("start a pool");
    let pooled = within_limit("hand-over", pool.create())
        .await
        .expect("hand over");
    let memory_dir = v1_memory_dir(&pooled).expect("a pooled sandbox's memory cgroup");
    check_background(&pooled, &memory_dir, "a pooled sandbox's first command").await;
    check_background(&pooled, &memory_dir, "a pooled sandbox's second command").await;
    pooled.kill().await.expect("kill the pooled sandbox");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executed_pid1_leaves_memory_cgroup() {
    if !require_root("executed_pid1_leaves_memory_cgroup") {
        return;
    }
    let before = soulbox_core::launcher();
    soulbox_core::set_launcher(Launcher::Exec);
    let created = Sandbox::create(limited()).await;
    soulbox_core::set_launcher(before);
    let sandbox = created.expect("create with an executed PID 1");
    let Some(memory_dir) = v1_memory_dir_or_score(&sandbox).await else {
        return;
    };
    check_background(&sandbox, &memory_dir, "an executed PID 1").await;
    sandbox.kill().await.expect("kill");
}

/// A supervisor that cannot join the sandbox's memory cgroup must not start
/// its command, and the error must name the memory cgroup rather than a
/// failed fork. The cgroup of a sandbox that has run no command contains no
/// process (PID 1 has left it), so it can be removed from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_memory_cgroup_fails_start() {
    if !require_root("removed_memory_cgroup_fails_start") {
        return;
    }
    let sandbox = Sandbox::create(limited()).await.expect("create");
    let Some(memory_dir) = v1_memory_dir_or_score(&sandbox).await else {
        return;
    };
    std::fs::remove_dir(&memory_dir)
        .unwrap_or_else(|e| panic!("remove {}: {e}", memory_dir.display()));

    for attempt in 1..=3 {
        let result = within_limit("a command", sandbox.shell("echo started").output()).await;
        let error = result.expect_err("a command started outside the memory cgroup");
        let message = error.to_string();
        assert!(
            message.contains("memory cgroup"),
            "attempt {attempt}: the error should name the memory cgroup: {message}"
        );
        assert!(
            !message.contains("fork failed"),
            "attempt {attempt}: the error blames the fork: {message}"
        );
    }
    assert!(sandbox.is_running(), "the sandbox ended");
    sandbox.kill().await.expect("kill");
}
