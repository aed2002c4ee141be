//! `OnTimeout::Pause`: PID 1 freezes the sandbox at its deadline instead of
//! ending it, a resume starts the timeout again at its length at creation,
//! and `auto_resume` resumes a paused sandbox before calls through a handle.

use std::time::{Duration, Instant, SystemTime};

use soulbox_core::{
    Error, ListQuery, Network, OnTimeout, Sandbox, SandboxOptions, SandboxPool, SandboxState,
};
use soulbox_tests::*;

/// The timeout of every sandbox here: short, so the tests pass it quickly.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// Options for a sandbox that pauses at [`TIMEOUT`] and ends with its
/// handle.
fn pausing() -> SandboxOptions {
    options().timeout(TIMEOUT).on_timeout(OnTimeout::Pause)
}

/// Starts a loop that writes a growing count to /tmp/count every 20 ms.
async fn start_counting(sandbox: &Sandbox) {
    sandbox
        .command("sh")
        .args([
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; \
             mv /tmp/count.new /tmp/count; sleep 0.02; done",
        ])
        .start()
        .await
        .expect("start the counting loop");
}

/// Reads the count through the file API, which works on a paused sandbox.
async fn read_count(sandbox: &Sandbox) -> u64 {
    let text = sandbox
        .files()
        .read("/tmp/count")
        .await
        .expect("read the count");
    String::from_utf8_lossy(&text).trim().parse().unwrap_or(0)
}

/// Returns whether `left`, the time until the deadline measured just after
/// a resume, is a fresh [`TIMEOUT`]: at most a few ms over it, because
/// `ends_at` is rounded to milliseconds, and at most 300 ms under it.
fn fresh_deadline(left: Duration) -> bool {
    left > TIMEOUT - Duration::from_millis(300) && left < TIMEOUT + Duration::from_millis(20)
}

/// Resumes the sandbox `id` through `connect` and returns the time left
/// until its deadline, measured just after the resume.
async fn connect_and_time_left(id: &str) -> Duration {
    let connected = Sandbox::connect(id).await.expect("connect");
    let resumed_at = SystemTime::now();
    let info = connected.get_info().await.expect("get_info");
    assert_eq!(info.state, SandboxState::Running);
    info.ends_at
        .expect("no deadline after the resume")
        .duration_since(resumed_at)
        .unwrap_or_default()
}

/// Returns the state that `get_info` reports.
async fn state(sandbox: &Sandbox) -> SandboxState {
    sandbox.get_info().await.expect("get_info").state
}

/// Creates a sandbox with `options`, which pause it at [`TIMEOUT`], and
/// waits until it is paused.
async fn create_paused(options: SandboxOptions) -> Sandbox {
    let sandbox = Sandbox::create(options).await.expect("create");
    tokio::time::sleep(TIMEOUT).await;
    wait_paused(&sandbox).await;
    sandbox
}

/// Waits up to 5 s for the sandbox to be reported paused.
async fn wait_paused(sandbox: &Sandbox) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = sandbox.get_info().await.expect("get the sandbox's info");
        if info.state == SandboxState::Paused {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox {} still {} 5 s after its timeout",
            info.sandbox_id,
            info.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_freezes_instead_of_killing() {
    if !require_root("timeout_freezes_instead_of_killing") {
        return;
    }
    let sandbox = Sandbox::create(pausing()).await.expect("create");
    let id = sandbox.id().to_string();
    start_counting(&sandbox).await;
    tokio::time::sleep(TIMEOUT + Duration::from_millis(500)).await;

    assert!(sandbox.is_running(), "the timeout ended the sandbox");
    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.state, SandboxState::Paused);
    assert_eq!(info.ends_at, None, "a paused sandbox's clock is stopped");
    assert_eq!(info.on_timeout, OnTimeout::Pause);
    let paused = Sandbox::list(&ListQuery::default().state(SandboxState::Paused))
        .await
        .expect("list paused sandboxes");
    assert!(
        paused.iter().any(|info| info.sandbox_id == id),
        "{id} is not listed as paused"
    );

    let frozen = read_count(&sandbox).await;
    assert!(frozen > 0, "the loop never counted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read_count(&sandbox).await, frozen, "counted while paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_restarts_original_timeout() {
    if !require_root("resume_restarts_original_timeout") {
        return;
    }
    let sandbox = Sandbox::create(pausing()).await.expect("create");
    start_counting(&sandbox).await;
    tokio::time::sleep(TIMEOUT).await;
    wait_paused(&sandbox).await;
    let frozen = read_count(&sandbox).await;

    // connect resumes, as for a sandbox that `pause` froze.
    let left = connect_and_time_left(sandbox.id()).await;
    assert!(
        fresh_deadline(left),
        "{left:?} left after the resume; the timeout at creation is {TIMEOUT:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counted = read_count(&sandbox).await;
    assert!(
        counted > frozen + 3,
        "the loop did not go on after the resume: {counted}, {frozen} before"
    );

    // The fresh deadline pauses it again, and resume() thaws it too.
    tokio::time::sleep(TIMEOUT).await;
    wait_paused(&sandbox).await;
    assert!(sandbox.resume().await.expect("resume"), "resume");
    assert_eq!(state(&sandbox).await, SandboxState::Running);
}

/// Sends `Pause` to the sandbox's PID 1 on a connection of its own and
/// closes it without waiting for the reply, as a `pause()` that gave up
/// does. Python sends it, because the standard library of Rust has no
/// SOCK_SEQPACKET sockets.
fn send_pause_and_close(id: &str) {
    let socket = soulbox_core::diagnostics::state_dir()
        .join("sandboxes")
        .join(format!("{id}.sock"));
    let message = soulbox_proto::Request::Pause
        .encode()
        .expect("encode a Pause request");
    let hex: String = message.iter().map(|byte| format!("{byte:02x}")).collect();
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
                  s.connect(sys.argv[1])\n\
                  s.send(bytes.fromhex(sys.argv[2]))\n\
                  s.close()\n";
    let status = std::process::Command::new("python3")
        .args(["-c", script, socket.to_str().expect("a UTF-8 path"), &hex])
        .status()
        .expect("run python3");
    assert!(status.success(), "python3 could not send Pause: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pause_keeps_fresh_deadline() {
    if !require_root("stale_pause_keeps_fresh_deadline") {
        return;
    }
    let sandbox = create_paused(pausing()).await;
    // Queued while PID 1 is frozen, and so handled at the thaw, before
    // the Resume of the connect below, whose connection comes later.
    send_pause_and_close(sandbox.id());
    let left = connect_and_time_left(sandbox.id()).await;
    assert!(fresh_deadline(left), "{left:?} left after the resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_timeout_still_kills() {
    if !require_root("default_timeout_still_kills") {
        return;
    }
    let killed = Sandbox::create(options().timeout(TIMEOUT))
        .await
        .expect("create with the default on_timeout");
    let paused = Sandbox::create(pausing())
        .await
        .expect("create with on_timeout pause");
    tokio::time::sleep(TIMEOUT + Duration::from_millis(800)).await;
    assert!(
        !killed.is_running(),
        "the default on_timeout must end the sandbox"
    );
    assert!(
        paused.is_running(),
        "on_timeout pause must not end the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resume_on_command_start() {
    if !require_root("auto_resume_on_command_start") {
        return;
    }
    let sandbox = create_paused(pausing().auto_resume(true)).await;

    let output = within_limit("a command in the paused sandbox", sandbox.run("echo hi"))
        .await
        .expect("run a command, which resumes the sandbox");
    assert_eq!(stdout(&output), "hi\n");
    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.state, SandboxState::Running);
    assert!(info.auto_resume);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resume_on_file_write() {
    if !require_root("auto_resume_on_file_write") {
        return;
    }
    let sandbox = create_paused(pausing().auto_resume(true)).await;
    // A handle from connect_without_resume learns auto_resume from the
    // sandbox's record.
    let other = Sandbox::connect_without_resume(sandbox.id())
        .await
        .expect("connect without resuming");
    other
        .files()
        .write("woken.txt", "yes")
        .await
        .expect("write a file");
    assert_eq!(state(&sandbox).await, SandboxState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_command_waits_without_auto_resume() {
    if !require_root("paused_command_waits_without_auto_resume") {
        return;
    }
    let sandbox = create_paused(pausing()).await;

    // As after pause(): the start waits in the frozen PID 1's queue, and
    // the file API works on the sandbox as it is.
    let waiting = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move { sandbox.run("echo late").await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a command started in a paused sandbox without auto_resume"
    );
    sandbox
        .files()
        .write("while-paused.txt", "x")
        .await
        .expect("write a file while paused");
    assert_eq!(
        state(&sandbox).await,
        SandboxState::Paused,
        "a file call without auto_resume resumed the sandbox"
    );

    assert!(sandbox.resume().await.expect("resume"));
    let output = within_limit("the waiting command", waiting)
        .await
        .expect("join the waiting command")
        .expect("the waiting command runs after the resume");
    assert_eq!(stdout(&output), "late\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sandbox_pauses_at_timeout() {
    if !require_root("pooled_sandbox_pauses_at_timeout") {
        return;
    }
    let pool = SandboxPool::new(pausing(), 1).expect("start a pool");
    let sandbox = within_limit("a pooled create", pool.create())
        .await
        .expect("take a sandbox from the pool");
    tokio::time::sleep(TIMEOUT).await;
    wait_paused(&sandbox).await;
    assert!(sandbox.resume().await.expect("resume"));
    let left = sandbox
        .get_info()
        .await
        .expect("get_info")
        .ends_at
        .expect("a deadline after the resume")
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        fresh_deadline(left),
        "{left:?} left after the resume; the pool's timeout is {TIMEOUT:?}"
    );
    drop(sandbox);
    pool.close().await;
}

/// With internet access PID 1 gets slirp4netns's exit pipe too, before the
/// `cgroup.freeze` file. Mixing them up would write "1" to the pipe and
/// never pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_sandbox_pauses_at_timeout() {
    if !require_root("internet_sandbox_pauses_at_timeout") {
        return;
    }
    let sandbox = create_paused(pausing().network(Network::Internet)).await;
    assert!(sandbox.resume().await.expect("resume"));
    let address = sh(&sandbox, "ip -o -4 addr show dev eth0").await;
    assert!(
        stdout(&address).contains("10.0.2."),
        "no eth0 address after the resume: {}",
        String::from_utf8_lossy(&address.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_descriptor_unreachable_inside() {
    if !require_root("freeze_descriptor_unreachable_inside") {
        return;
    }
    let sandbox = Sandbox::create(pausing().timeout(Duration::from_secs(30)))
        .await
        .expect("create");

    // PID 1 is not dumpable, so sandbox root may list its descriptors
    // (their directory belongs to root) but not open them, because an open
    // needs ptrace access. The cgroup.freeze descriptor is among them.
    let written = sh_as_root(
        &sandbox,
        "ls /proc/1/fd | wc -l; for fd in /proc/1/fd/*; do (echo 1 > $fd) 2>&1 && echo wrote $fd; done",
    )
    .await;
    let output = stdout(&written);
    let listed: usize = output
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or(0);

    // One more than in a sandbox that ends at its timeout: cgroup.freeze.
    let killing = Sandbox::create(options()).await.expect("create");
    let without = sh_as_root(&killing, "ls /proc/1/fd | wc -l").await;
    assert_eq!(
        stdout(&without).trim().parse::<usize>().ok(),
        listed.checked_sub(1),
        "PID 1 of a sandbox that pauses at its timeout should hold one more \
         descriptor: {output}"
    );

    assert!(
        !output.contains("wrote"),
        "sandbox root wrote to a descriptor of PID 1: {output}"
    );
    assert_eq!(
        output.matches("Permission denied").count(),
        listed,
        "every open of PID 1's descriptors must be denied: {output}"
    );
    assert_eq!(state(&sandbox).await, SandboxState::Running);
}

#[tokio::test]
async fn auto_resume_without_pause_rejected() {
    let error = Sandbox::create(options().auto_resume(true))
        .await
        .expect_err("auto_resume with on_timeout kill");
    match error {
        Error::InvalidArgument(message) => {
            assert!(message.contains("auto_resume"), "{message}");
            assert!(message.contains("\"pause\""), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn on_timeout_parses_names() {
    assert_eq!("kill".parse::<OnTimeout>().unwrap(), OnTimeout::Kill);
    assert_eq!("pause".parse::<OnTimeout>().unwrap(), OnTimeout::Pause);
    let error = "stop".parse::<OnTimeout>().unwrap_err().to_string();
    assert!(error.contains("\"stop\""), "{error}");
    assert!(error.contains("\"kill\" or \"pause\""), "{error}");
    assert_eq!(OnTimeout::default(), OnTimeout::Kill);
}

/// Offsets around the deadline at which the race tests act, so that some
/// calls come before PID 1 freezes the sandbox and some after.
const RACE_OFFSETS_MS: [i64; 8] = [-20, -10, -5, -2, 0, 2, 5, 10];

/// Sleeps until `offset_ms` from [`TIMEOUT`] after `created`.
async fn sleep_until_offset(created: Instant, offset_ms: i64) {
    let target = TIMEOUT.as_millis() as i64 + offset_ms;
    let at = created + Duration::from_millis(target.max(0) as u64);
    tokio::time::sleep_until(at.into()).await;
}

/// A `pause()` racing PID 1's own pause at the deadline: whichever wins,
/// the sandbox ends up paused, and a resume after a pause at the deadline
/// restarts the full timeout. A `pause()` that won keeps the few ms that
/// were left, so the sandbox may pause again soon after its resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_call_at_deadline() {
    if !require_root("pause_call_at_deadline") {
        return;
    }
    for offset in RACE_OFFSETS_MS {
        let created = Instant::now();
        let sandbox = Sandbox::create(pausing()).await.expect("create");
        sleep_until_offset(created, offset).await;
        let paused = within_limit("pause at the deadline", sandbox.pause())
            .await
            .unwrap_or_else(|e| panic!("offset {offset} ms: pause: {e}"));
        wait_paused(&sandbox).await;
        let resumed = within_limit("resume", sandbox.resume()).await;
        let resumed_at = SystemTime::now();
        assert_eq!(resumed.ok(), Some(true), "offset {offset} ms: resume");
        let info = sandbox.get_info().await.expect("get_info");
        if paused {
            // Paused before PID 1 did: the clock goes on where it stopped,
            // unless PID 1's deadline passed between its reply and the
            // host's freeze, which restarts the full timeout.
            assert!(
                info.state == SandboxState::Paused
                    || info
                        .ends_at
                        .is_some_and(|ends| ends.duration_since(resumed_at).unwrap_or_default()
                            < TIMEOUT + Duration::from_millis(20)),
                "offset {offset} ms: {info:?}"
            );
        } else {
            assert_eq!(info.state, SandboxState::Running, "offset {offset} ms");
            let left = info
                .ends_at
                .expect("no deadline after the resume")
                .duration_since(resumed_at)
                .unwrap_or_default();
            assert!(fresh_deadline(left), "offset {offset} ms: {left:?} left");
        }
        sandbox.kill().await.expect("kill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_call_at_deadline() {
    if !require_root("resume_call_at_deadline") {
        return;
    }
    for offset in RACE_OFFSETS_MS {
        let created = Instant::now();
        let sandbox = Sandbox::create(pausing()).await.expect("create");
        sleep_until_offset(created, offset).await;
        let resumed = within_limit("resume at the deadline", sandbox.resume()).await;
        assert!(resumed.is_ok(), "offset {offset} ms: resume: {resumed:?}");
        // Whatever the resume met, the sandbox is either paused or running
        // with a deadline, and a further resume makes it run.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = within_limit("second resume", sandbox.resume()).await;
        let output = within_limit("a command after the resume", sandbox.run("echo ok"))
            .await
            .expect("run after the resume");
        assert_eq!(stdout(&output), "ok\n", "offset {offset} ms");
        let info = sandbox.get_info().await.expect("get_info");
        assert_eq!(info.state, SandboxState::Running, "offset {offset} ms");
        assert!(info.ends_at.is_some(), "offset {offset} ms: no deadline");
        sandbox.kill().await.expect("kill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_at_deadline_leaves_nothing() {
    if !require_root("kill_at_deadline_leaves_nothing") {
        return;
    }
    for offset in RACE_OFFSETS_MS {
        let created = Instant::now();
        let sandbox = Sandbox::create(pausing()).await.expect("create");
        let id = sandbox.id().to_string();
        let pid = sandbox.pid();
        sleep_until_offset(created, offset).await;
        within_limit("kill at the deadline", sandbox.kill())
            .await
            .expect("kill");
        assert!(
            leftover_cgroups(&id).is_empty(),
            "offset {offset} ms: {:?}",
            leftover_cgroups(&id)
        );
        assert!(!host_process_alive(pid), "offset {offset} ms: PID 1 alive");
        assert!(
            host_mounts_mentioning(&id).is_empty(),
            "offset {offset} ms: {:?}",
            host_mounts_mentioning(&id)
        );
        assert!(
            matches!(
                Sandbox::connect(&id).await,
                Err(Error::SandboxNotFound { .. })
            ),
            "offset {offset} ms: still connectable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_auto_resume_calls() {
    if !require_root("concurrent_auto_resume_calls") {
        return;
    }
    let sandbox = create_paused(pausing().auto_resume(true)).await;
    let mut runs = tokio::task::JoinSet::new();
    for i in 0..8 {
        let sandbox = sandbox.clone();
        runs.spawn(async move { (i, sandbox.run(&format!("echo {i}")).await) });
    }
    let outputs = within_limit("8 concurrent commands in a paused sandbox", runs.join_all()).await;
    for (i, output) in outputs {
        let output = output.unwrap_or_else(|e| panic!("command {i}: {e}"));
        assert_eq!(stdout(&output), format!("{i}\n"));
    }
    assert_eq!(state(&sandbox).await, SandboxState::Running);
}
