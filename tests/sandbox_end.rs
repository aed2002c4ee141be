//! How the end of a sandbox reaches its callers: commands that end it
//! (`ends_sandbox`), the other commands running when it ends, and calls
//! made on it afterwards.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use soulbox_core::{CommandHandle, CommandSpec, Error, ExitStatus, Sandbox, SandboxOptions};
use soulbox_tests::*;

/// Tests that count this process's descriptors and children hold this lock
/// exclusively, and every other test of this file holds it shared.
static HOST_STATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Waits up to 10 s for the sandbox's PID 1 to exit. `cause` names what
/// should have ended the sandbox.
async fn wait_for_end(sandbox: &Sandbox, cause: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.is_running() {
        assert!(
            Instant::now() < deadline,
            "sandbox {} still runs 10 s after {cause}",
            sandbox.id()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `true` as a command that ends the sandbox, and waits for the end.
async fn end_with_command(sandbox: &Sandbox) {
    let mut ending = sandbox.command("true");
    ending.ends_sandbox(true);
    let output = ending
        .output()
        .await
        .expect("run a command that ends the sandbox");
    assert_eq!(output.status, ExitStatus::Code(0));
    wait_for_end(sandbox, "a command that ends it exited").await;
}

/// Starts `sleep 600` in the sandbox.
async fn start_sleeper(sandbox: &Sandbox) -> CommandHandle {
    sandbox
        .command("sleep")
        .arg("600")
        .start()
        .await
        .expect("start sleep 600")
}

/// Of two running commands that end the sandbox, the first to exit ends
/// it, whichever of them started last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_ending_command_ends_sandbox() {
    if !require_root("first_ending_command_ends_sandbox") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let mut first = sandbox.command("sh");
    first
        .args(["-c", "read line; exit 4"])
        .stdin(true)
        .ends_sandbox(true);
    let mut first = first.start().await.expect("start the first command");
    let mut second = sandbox.command("sleep");
    second.arg("600").ends_sandbox(true);
    let _second = second.start().await.expect("start the second command");

    first
        .close_stdin()
        .await
        .expect("close the first command's stdin");
    let output = within_limit("the first command", first.wait())
        .await
        .expect("wait for the first command");
    assert_eq!(output.status, ExitStatus::Code(4));
    wait_for_end(&sandbox, "the first of two commands that end it exited").await;
}

/// A command with `ends_sandbox` that cannot start (a missing program, a
/// missing working directory) fails as any command would, and the sandbox
/// stays: no exit status of the command was reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_command_failing_to_start_keeps_sandbox() {
    if !require_root("ending_command_failing_to_start_keeps_sandbox") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let mut missing_program = sandbox.command("/no/such/program");
    missing_program.ends_sandbox(true);
    let mut missing_cwd = sandbox.command("true");
    missing_cwd.cwd("/no/such/dir").ends_sandbox(true);
    for (what, command) in [
        ("a missing program", missing_program),
        ("a missing working directory", missing_cwd),
    ] {
        let started = command.start().await;
        assert!(
            started.is_err(),
            "a command with {what} started: {:?}",
            started.map(|handle| handle.pid())
        );
        // PID 1 would exit within milliseconds of the failed start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            sandbox.is_running(),
            "a command with {what} that could not start ended the sandbox"
        );
    }
    let output = sh(&sandbox, "echo still here").await;
    assert_eq!(stdout(&output), "still here\n");
}

/// A `create_and_start` of a sandbox that outlives its handle (the
/// default) sends Persist after the command has started. The call must
/// return the command's handle even when the command has ended the sandbox
/// by then. Four calls at a time make that common on a 2-core host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_persisting_survives_instant_end() {
    if !require_root("create_and_start_persisting_survives_instant_end") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let mut spec = CommandSpec::new("/bin/true");
    spec.ends_sandbox = true;
    // No kill_on_drop, so that the call sends Persist. The timeout bounds
    // what a failing run leaves behind.
    let options = SandboxOptions::default().timeout(Duration::from_secs(30));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        let spec = spec.clone();
        let options = options.clone();
        tasks.spawn(async move {
            for round in 0..50 {
                let call = format!("call {round} of task {task}");
                let (sandbox, mut handle) = Sandbox::create_and_start(options.clone(), &spec)
                    .await
                    .unwrap_or_else(|e| panic!("{call}: create_and_start failed: {e}"));
                let output = handle.wait().await;
                let killed = sandbox.kill().await;
                let output = output.unwrap_or_else(|e| panic!("{call}: wait failed: {e}"));
                assert_eq!(output.status, ExitStatus::Code(0), "{call}");
                killed.unwrap_or_else(|e| panic!("{call}: kill failed: {e}"));
            }
        });
    }
    while let Some(joined) = within_limit("200 calls", tasks.join_next()).await {
        joined.expect("join a task of calls");
    }
}

/// A command still running when another command ends the sandbox, or when
/// the sandbox's timeout does, fails with `SandboxNotRunning` naming the
/// sandbox, not with the protocol error of a supervisor killed from inside.
/// Each case runs five times, because the two differ only in timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_command_sees_sandbox_end() {
    if !require_root("running_command_sees_sandbox_end") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    for round in 0..5 {
        let sandbox = sandbox().await;
        let mut sleeper = start_sleeper(&sandbox).await;
        let mut ending = sandbox.command("true");
        ending.ends_sandbox(true);
        ending
            .output()
            .await
            .expect("run a command that ends the sandbox");
        let result = within_limit("sleep 600", sleeper.wait()).await;
        assert!(
            matches!(&result, Err(Error::SandboxNotRunning { id }) if id == sandbox.id()),
            "round {round}: a command ended by another command's end of sandbox {} gave \
             {result:?}",
            sandbox.id()
        );
    }
    for round in 0..5 {
        let options = options().timeout(Duration::from_millis(300));
        let sandbox = Sandbox::create(options).await.expect("create a sandbox");
        let mut sleeper = start_sleeper(&sandbox).await;
        let result = within_limit("sleep 600", sleeper.wait()).await;
        assert!(
            matches!(&result, Err(Error::SandboxNotRunning { id }) if id == sandbox.id()),
            "round {round}: a command ended by the timeout of sandbox {} gave {result:?}",
            sandbox.id()
        );
    }
}

/// After a command has ended the sandbox, every call that needs it fails
/// with `SandboxNotRunning` naming it, and `kill` still cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_end_name_sandbox() {
    if !require_root("calls_after_end_name_sandbox") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let id = sandbox.id().to_string();
    end_with_command(&sandbox).await;

    let not_running = |result: &Result<(), Error>| match result {
        Err(Error::SandboxNotRunning { id: named }) => *named == id,
        _ => false,
    };
    let set_timeout = sandbox.set_timeout(Duration::from_secs(5)).await;
    assert!(not_running(&set_timeout), "set_timeout: {set_timeout:?}");
    let pause = sandbox.pause().await.map(drop);
    assert!(not_running(&pause), "pause: {pause:?}");
    let info = sandbox.get_info().await.map(drop);
    assert!(not_running(&info), "get_info: {info:?}");
    let metrics = sandbox.metrics().await.map(drop);
    assert!(not_running(&metrics), "metrics: {metrics:?}");
    let read = sandbox.files().read("/etc/hostname").await.map(drop);
    assert!(not_running(&read), "files().read: {read:?}");
    let start = sandbox.command("true").start().await.map(drop);
    assert!(not_running(&start), "start: {start:?}");
    let pty = sandbox.command("true").start_pty(24, 80).await.map(drop);
    assert!(not_running(&pty), "start_pty: {pty:?}");
    assert!(!sandbox.is_running(), "is_running after the end");

    let cgroups = sandbox.cgroup_paths();
    sandbox.kill().await.expect("kill the ended sandbox");
    for dir in &cgroups {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
    let mounts = host_mounts_mentioning(&id);
    assert!(mounts.is_empty(), "host mounts of {id}: {mounts:?}");
    sandbox.kill().await.expect("kill the ended sandbox again");
    let connected = Sandbox::connect(&id).await.map(drop);
    assert!(
        matches!(&connected, Err(Error::SandboxNotFound { id: named }) if *named == id),
        "connect after kill: {connected:?}"
    );
}

/// Returns the path of sandbox `id`'s state entry on a root host.
fn state_entry(id: &str) -> PathBuf {
    let state_dir =
        std::env::var_os("SOULBOX_STATE_DIR").map_or_else(|| "/run/soulbox".into(), PathBuf::from);
    state_dir.join("sandboxes").join(id)
}

/// Sandboxes that their command ended leave nothing once killed or
/// dropped: no process, cgroup, mount, state entry or descriptor of this
/// process. Each command leaves processes in the background that ignore
/// SIGTERM and SIGHUP, one of them in a session of its own. Half of the
/// sandboxes are dropped without a kill and outlive their handle, so the
/// reaper thread cleans up after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sandboxes_leave_nothing() {
    if !require_root("ended_sandboxes_leave_nothing") {
        return;
    }
    let _exclusive = HOST_STATE.write().await;
    // The zygote and the reaper thread start with this process's first
    // sandbox and keep their descriptors.
    let warm_up = sandbox().await;
    warm_up.kill().await.expect("kill the first sandbox");
    drop(warm_up);
    let descriptors_before = std::fs::read_dir("/proc/self/fd").unwrap().count();

    let mut spec = CommandSpec::new("sh");
    spec.argv.extend(
        [
            "-c",
            "trap '' TERM HUP; (setsid sh -c 'trap \"\" TERM HUP; sleep 600' &); \
             sleep 600 & echo started; exit 5",
        ]
        .map(Into::into),
    );
    spec.ends_sandbox = true;
    let options = SandboxOptions::default().timeout(Duration::from_secs(60));
    let mut ended = Vec::new();
    for round in 0..10 {
        let (sandbox, mut handle) = Sandbox::create_and_start(options.clone(), &spec)
            .await
            .unwrap_or_else(|e| panic!("round {round}: create_and_start failed: {e}"));
        let output = within_limit("the command", handle.wait())
            .await
            .unwrap_or_else(|e| panic!("round {round}: wait failed: {e}"));
        assert_eq!(output.status, ExitStatus::Code(5), "round {round}");
        assert_eq!(stdout(&output), "started\n", "round {round}");
        wait_for_end(&sandbox, "its command exited").await;
        ended.push((sandbox.id().to_string(), sandbox.pid()));
        if round % 2 == 0 {
            sandbox.kill().await.expect("kill an ended sandbox");
        }
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let mut left = Vec::new();
        for (id, pid1) in &ended {
            if host_process_alive(*pid1) || host_comm(*pid1).is_some() {
                left.push(format!("{id}: PID 1 at host pid {pid1}"));
            }
            for dir in leftover_cgroups(id) {
                left.push(format!("{id}: cgroup {}", dir.display()));
            }
            for mount in host_mounts_mentioning(id) {
                left.push(format!("{id}: mount {mount}"));
            }
            if state_entry(id).exists() {
                left.push(format!("{id}: state entry {}", state_entry(id).display()));
            }
        }
        let descriptors = std::fs::read_dir("/proc/self/fd").unwrap().count();
        if descriptors > descriptors_before {
            left.push(format!(
                "{descriptors} descriptors, {descriptors_before} before"
            ));
        }
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(left.is_empty(), "left after 5 s: {left:#?}");
}

/// A command on a PTY that ends the sandbox delivers everything it wrote
/// before its exit, and its exit status, although PID 1's exit closes the
/// PTY's other holders right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_pty_command_keeps_output() {
    if !require_root("ending_pty_command_keeps_output") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    for round in 0..5 {
        let sandbox = sandbox().await;
        let mut command = sandbox.command("sh");
        command
            .args(["-c", "seq 1 20000; sleep 600 & exit 7"])
            .ends_sandbox(true);
        let mut handle = command.start_pty(24, 80).await.expect("start on a PTY");
        let output = within_limit("the PTY command", handle.wait())
            .await
            .expect("wait for the PTY command");
        assert_eq!(output.status, ExitStatus::Code(7), "round {round}");
        let text = stdout(&output);
        assert!(
            text.ends_with("19999\r\n20000\r\n"),
            "round {round}: the PTY output ends with {:?}",
            &text[text.len().saturating_sub(40)..]
        );
        wait_for_end(&sandbox, "its PTY command exited").await;
    }
}

/// Lists this process's descriptors whose file lies on device `device`.
fn descriptors_on_device(device: u64) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd");
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(metadata) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if metadata.dev() == device {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            found.push(format!(
                "fd {:?} -> {}",
                entry.file_name(),
                target.display()
            ));
        }
    }
    found
}

/// `kill` closes this process's descriptor of the sandbox's root, also
/// while the handle lives on. That descriptor keeps the sandbox's overlay,
/// and its writable layer in memory, alive after every mount of the
/// sandbox is gone. Checked for a running sandbox and for one that its
/// command ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_root_descriptor() {
    use std::os::unix::fs::MetadataExt;
    if !require_root("kill_closes_root_descriptor") {
        return;
    }
    let _exclusive = HOST_STATE.write().await;
    for ended_by_command in [false, true] {
        let sandbox = sandbox().await;
        let root = std::fs::metadata(format!("/proc/{}/root/", sandbox.pid()))
            .expect("stat the sandbox's root through /proc");
        if ended_by_command {
            end_with_command(&sandbox).await;
        }
        let before_kill = descriptors_on_device(root.dev());
        assert!(
            !before_kill.is_empty(),
            "no descriptor on the sandbox's root file system before the kill, so this test \
             checks nothing"
        );
        sandbox.kill().await.expect("kill the sandbox");
        let after_kill = descriptors_on_device(root.dev());
        assert!(
            after_kill.is_empty(),
            "ended by its command: {ended_by_command}; descriptors on the root file system of \
             {} after kill: {after_kill:?}",
            sandbox.id()
        );
    }
}
