//! Sandboxes that outlive their handles: connect by id, list with filters,
//! timeouts changed and expired, pause and resume, and metrics.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use soulbox_core::{Error, ListQuery, Sandbox, SandboxOptions, SandboxState};
use soulbox_tests::*;

/// Options for a sandbox that outlives its handle, ended by its timeout.
fn lasting(timeout: Duration) -> SandboxOptions {
    SandboxOptions::default().timeout(timeout)
}

/// Kills the sandbox when the test ends, even when it fails.
struct KillOnExit(String);

impl Drop for KillOnExit {
    fn drop(&mut self) {
        let id = self.0.clone();
        // A fresh runtime: the test's own may be shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(Sandbox::kill_id(&id)))
        })
        .join();
    }
}

async fn create_lasting(timeout: Duration) -> (Sandbox, KillOnExit) {
    let sandbox = Sandbox::create(lasting(timeout))
        .await
        .expect("create a sandbox");
    let guard = KillOnExit(sandbox.id().to_string());
    (sandbox, guard)
}

fn assert_not_found<T: std::fmt::Debug>(result: soulbox_core::Result<T>, id: &str) {
    match result {
        Err(Error::SandboxNotFound { id: missing }) => assert_eq!(missing, id),
        other => panic!("expected sandbox {id} not found, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_handle_leaves_sandbox_running_for_connect() {
    if !require_root("dropped_handle_leaves_sandbox_running_for_connect") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(60)).await;
    let id = sandbox.id().to_string();
    sandbox
        .files()
        .write("kept.txt", "written before the drop\n")
        .await
        .unwrap();
    drop(sandbox);

    let again = Sandbox::connect(&id).await.expect("connect after the drop");
    let output = sh(&again, "cat kept.txt; hostname").await;
    assert_eq!(stdout(&output), format!("written before the drop\n{id}\n"));
    assert!(
        Sandbox::kill_id(&id).await.unwrap(),
        "kill_id of a running sandbox"
    );
    assert_not_found(Sandbox::connect(&id).await, &id);
    assert!(
        !Sandbox::kill_id(&id).await.unwrap(),
        "kill_id after the kill"
    );
    assert!(
        leftover_cgroups(&id).is_empty(),
        "{:?}",
        leftover_cgroups(&id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_on_drop_sandbox_ends_with_its_handle() {
    if !require_root("kill_on_drop_sandbox_ends_with_its_handle") {
        return;
    }
    let sandbox = sandbox().await;
    let id = sandbox.id().to_string();
    drop(sandbox);
    assert_not_found(Sandbox::connect(&id).await, &id);
    assert!(leftover_cgroups(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rejects_unknown_and_malformed_ids() {
    if !require_root("connect_rejects_unknown_and_malformed_ids") {
        return;
    }
    for id in ["sb-aaaaaaaaaaaa", "../../etc", "", "sb-"] {
        assert_not_found(Sandbox::connect(id).await, id);
        assert!(!Sandbox::kill_id(id).await.unwrap(), "kill_id({id:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_metadata_and_state_oldest_first() {
    if !require_root("list_filters_by_metadata_and_state_oldest_first") {
        return;
    }
    let suite = unique_name("list");
    let mut sandboxes = Vec::new();
    let mut guards = Vec::new();
    for n in 0..3 {
        let options = lasting(Duration::from_secs(60))
            .metadata("suite", suite.clone())
            .metadata("n", n.to_string());
        let sandbox = Sandbox::create(options).await.expect("create");
        guards.push(KillOnExit(sandbox.id().to_string()));
        sandboxes.push(sandbox);
        // Start times are in milliseconds; keep them apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(sandboxes[1].pause().await.unwrap());

    let ids = |infos: &[soulbox_core::SandboxInfo]| -> Vec<String> {
        infos.iter().map(|i| i.sandbox_id.clone()).collect()
    };
    let all = Sandbox::list(&ListQuery::default().metadata("suite", suite.clone()))
        .await
        .unwrap();
    let expected: Vec<String> = sandboxes.iter().map(|s| s.id().to_string()).collect();
    assert_eq!(ids(&all), expected, "all three, oldest first");
    assert_eq!(
        all.iter().map(|i| i.state).collect::<Vec<_>>(),
        [
            SandboxState::Running,
            SandboxState::Paused,
            SandboxState::Running
        ]
    );
    let expected_metadata: BTreeMap<String, String> = [("n", "2"), ("suite", suite.as_str())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(all[2].metadata, expected_metadata);

    let second = Sandbox::list(
        &ListQuery::default()
            .metadata("suite", suite.clone())
            .metadata("n", "1"),
    )
    .await
    .unwrap();
    assert_eq!(ids(&second), [expected[1].clone()]);
    let paused = Sandbox::list(
        &ListQuery::default()
            .metadata("suite", suite.clone())
            .state(SandboxState::Paused),
    )
    .await
    .unwrap();
    assert_eq!(ids(&paused), [expected[1].clone()]);
    let none = Sandbox::list(&ListQuery::default().metadata("suite", "no such suite"))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    // The unfiltered list contains these three among any others.
    let everything = Sandbox::list(&ListQuery::default()).await.unwrap();
    for id in &expected {
        assert!(
            ids(&everything).contains(id),
            "{id} missing from the full list"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_timeout_extends_then_shortens() {
    if !require_root("set_timeout_extends_then_shortens") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(2)).await;
    let id = sandbox.id().to_string();
    sandbox.set_timeout(Duration::from_secs(30)).await.unwrap();
    let ends_at = sandbox
        .get_info()
        .await
        .unwrap()
        .ends_at
        .expect("a deadline");
    let ahead = ends_at.duration_since(SystemTime::now()).unwrap();
    assert!(
        (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&ahead),
        "ends in {ahead:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        sandbox.is_running(),
        "the extended sandbox ended at its first timeout"
    );

    sandbox
        .set_timeout(Duration::from_millis(500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !sandbox.is_running(),
        "the shortened timeout did not end it"
    );
    drop(sandbox);
    assert_not_found(Sandbox::connect(&id).await, &id);
    assert!(!Sandbox::kill_id(&id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sandbox_is_gone_with_its_leftovers() {
    if !require_root("expired_sandbox_is_gone_with_its_leftovers") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(1)).await;
    let id = sandbox.id().to_string();
    let cgroups = sandbox.cgroup_paths();
    assert!(!cgroups.is_empty());
    // Dropped while running: the reaper thread of this process reaps it
    // and removes its cgroups when the timeout ends it.
    drop(sandbox);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Checked before any other call, which would also remove them.
    for dir in cgroups {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert_not_found(Sandbox::connect(&id).await, &id);
    assert!(!Sandbox::kill_id(&id).await.unwrap());
    let ids: Vec<String> = Sandbox::list(&ListQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.sandbox_id)
        .collect();
    assert!(!ids.contains(&id));
}

/// Reads the counter that the counting loop writes.
async fn read_count(sandbox: &Sandbox) -> u64 {
    let text = sandbox.files().read("/tmp/count").await.unwrap();
    String::from_utf8_lossy(&text).trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_counting_loop() {
    if !require_root("pause_stops_counting_loop") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(60)).await;
    sandbox
        .command("sh")
        .args([
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; \
             mv /tmp/count.new /tmp/count; sleep 0.02; done",
        ])
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sandbox.pause().await.unwrap(), "first pause");
    assert!(!sandbox.pause().await.unwrap(), "pausing a paused sandbox");
    assert_eq!(
        sandbox.get_info().await.unwrap().state,
        SandboxState::Paused
    );
    // Files stay readable while paused: the file API works from the host.
    let frozen = read_count(&sandbox).await;
    assert!(frozen > 0, "the loop never counted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(read_count(&sandbox).await, frozen, "counted while paused");

    assert!(sandbox.resume().await.unwrap(), "resume");
    assert!(
        !sandbox.resume().await.unwrap(),
        "resuming a running sandbox"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resumed = read_count(&sandbox).await;
    assert!(
        resumed > frozen + 3,
        "{resumed} after resume, {frozen} before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sandbox_stops_cpu_and_clock() {
    if !require_root("paused_sandbox_stops_cpu_and_clock") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(3)).await;
    let id = sandbox.id().to_string();
    sandbox
        .command("sh")
        .args(["-c", "while :; do :; done"])
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sandbox.pause().await.unwrap());
    let before = sandbox.metrics().await.unwrap().cpu_time.expect("cpu time");
    // Longer than the whole timeout: a running clock would end it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = sandbox.metrics().await.unwrap().cpu_time.expect("cpu time");
    assert!(
        after - before < Duration::from_millis(20),
        "a paused busy loop used {:?} of CPU",
        after - before
    );
    let info = sandbox.get_info().await.unwrap();
    assert_eq!(info.state, SandboxState::Paused);
    assert_eq!(info.ends_at, None, "a paused sandbox's clock is stopped");

    // connect resumes it, with the time that was left (about 2.7 s).
    let connected = Sandbox::connect(&id).await.expect("connect resumes");
    let info = connected.get_info().await.unwrap();
    assert_eq!(info.state, SandboxState::Running);
    let left = info
        .ends_at
        .expect("a deadline")
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(3)).contains(&left),
        "{left:?} left after resume"
    );
    // The wall clock inside is the host's.
    let inside: u64 = stdout(&sh(&connected, "date +%s").await)
        .trim()
        .parse()
        .unwrap();
    let host = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(inside.abs_diff(host) <= 1, "inside {inside}, host {host}");
    // And it still ends at its timeout.
    tokio::time::sleep(left + Duration::from_millis(800)).await;
    assert!(
        !connected.is_running(),
        "the resumed sandbox outlived its timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cycles_keep_every_file() {
    if !require_root("pause_resume_cycles_keep_every_file") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(60)).await;
    for cycle in 0..3 {
        sh(&sandbox, &format!("echo cycle {cycle} > file{cycle}"))
            .await
            .check()
            .unwrap();
        sandbox
            .files()
            .write(&format!("api{cycle}"), format!("api {cycle}"))
            .await
            .unwrap();
        assert!(sandbox.pause().await.unwrap());
        assert!(sandbox.resume().await.unwrap());
    }
    let output = sh(&sandbox, "cat file0 file1 file2 api0 api1 api2").await;
    assert_eq!(
        stdout(&output),
        "cycle 0\ncycle 1\ncycle 2\napi 0api 1api 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_memory_and_disk_use() {
    if !require_root("metrics_reflect_memory_and_disk_use") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(60)).await;
    let idle = sandbox.metrics().await.unwrap();
    assert_eq!(idle.mem_total, Some(soulbox_core::DEFAULT_MEMORY_LIMIT));
    assert_eq!(idle.disk_total, soulbox_core::DEFAULT_DISK_SIZE);
    assert!(idle.cpu_count >= 1.0);
    let idle_memory = idle.mem_used.expect("memory use with a memory cgroup");

    sandbox
        .command("python3")
        .args([
            "-c",
            "import time; b = bytearray(300 << 20); print('ready', flush=True); time.sleep(30)",
        ])
        .start()
        .await
        .unwrap();
    let mut busy = idle.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy = sandbox.metrics().await.unwrap();
        if busy.mem_used.unwrap_or(0) > idle_memory + (250 << 20) {
            break;
        }
    }
    assert!(
        busy.mem_used.unwrap_or(0) > idle_memory + (250 << 20),
        "memory use went from {idle_memory} to {:?} bytes",
        busy.mem_used
    );

    sh(&sandbox, "head -c 50000000 /dev/zero > big")
        .await
        .check()
        .unwrap();
    let written = sandbox.metrics().await.unwrap();
    assert!(
        written.disk_used >= idle.disk_used + 45_000_000,
        "disk use went from {} to {} bytes",
        idle.disk_used,
        written.disk_used
    );
    assert!(written.timestamp >= idle.timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_info_reports_what_create_was_given() {
    if !require_root("get_info_reports_what_create_was_given") {
        return;
    }
    let mut options = lasting(Duration::from_secs(60))
        .metadata("owner", "tests")
        .env("GREETING", "hello");
    options.cpu_limit = Some(0.5);
    let before = SystemTime::now();
    let sandbox = Sandbox::create(options).await.expect("create");
    let _guard = KillOnExit(sandbox.id().to_string());
    let info = sandbox.get_info().await.unwrap();
    assert_eq!(info.sandbox_id, sandbox.id());
    assert_eq!(info.template, "host");
    assert_eq!(
        info.metadata.get("owner").map(String::as_str),
        Some("tests")
    );
    assert_eq!(info.envs.get("GREETING").map(String::as_str), Some("hello"));
    assert_eq!(info.state, SandboxState::Running);
    assert_eq!(info.cpu_limit, Some(0.5));
    assert_eq!(info.memory_limit, Some(soulbox_core::DEFAULT_MEMORY_LIMIT));
    assert!(info.started_at + Duration::from_secs(1) >= before);
    let ends_in = info
        .ends_at
        .unwrap()
        .duration_since(info.started_at)
        .unwrap();
    assert!(
        (Duration::from_secs(58)..=Duration::from_secs(61)).contains(&ends_in),
        "ends {ends_in:?} after its start"
    );

    // Another handle reads the same info, and its commands get the sandbox
    // envs.
    let other = Sandbox::connect(sandbox.id()).await.unwrap();
    assert_eq!(other.get_info().await.unwrap().metadata, info.metadata);
    assert_eq!(stdout(&sh(&other, "echo $GREETING").await), "hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_metadata_rejected_before_create() {
    if !require_root("invalid_metadata_rejected_before_create") {
        return;
    }
    for options in [
        lasting(Duration::from_secs(5)).metadata("", "empty key"),
        lasting(Duration::from_secs(5)).metadata("a=b", "equals in key"),
        lasting(Duration::from_secs(5)).metadata("nul", "a\0b"),
        lasting(Duration::from_secs(5)).metadata("newline", "a\nb"),
        lasting(Duration::from_secs(5)).metadata("a,b", "comma in key"),
        lasting(Duration::from_secs(5)).metadata("long", "x".repeat(2000)),
    ] {
        match Sandbox::create(options).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("metadata"), "{message}")
            }
            other => panic!("expected an invalid-argument error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_by_id_reaps_while_creating_handle_lives() {
    if !require_root("kill_by_id_reaps_while_creating_handle_lives") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(60)).await;
    let pid = sandbox.pid();
    assert!(Sandbox::kill_id(sandbox.id()).await.unwrap());
    // The creating handle still exists, yet PID 1 is not left a zombie.
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "PID 1 ({pid}) is still in /proc: {:?}",
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
    );
    assert!(!sandbox.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_survives_a_sandbox_that_does_not_answer() {
    if !require_root("list_survives_a_sandbox_that_does_not_answer") {
        return;
    }
    let suite = unique_name("stopped");
    let options = lasting(Duration::from_secs(60)).metadata("suite", suite.clone());
    let sandbox = Sandbox::create(options).await.expect("create");
    let _guard = KillOnExit(sandbox.id().to_string());
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &sandbox.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} failed");
    };
    // A stopped PID 1 replies to no status query.
    signal("-STOP");
    let listed = Sandbox::list(&ListQuery::default().metadata("suite", suite.clone())).await;
    signal("-CONT");
    let listed = listed.expect("list with one sandbox not answering");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].sandbox_id, sandbox.id());
    assert_eq!(listed[0].ends_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_a_paused_sandbox_and_removes_its_cgroups() {
    if !require_root("kill_ends_a_paused_sandbox_and_removes_its_cgroups") {
        return;
    }
    let (sandbox, _guard) = create_lasting(Duration::from_secs(60)).await;
    // A busy loop and a sleeper: both are frozen, neither may survive.
    for script in ["while :; do :; done", "sleep 600"] {
        sandbox
            .command("sh")
            .args(["-c", script])
            .start()
            .await
            .unwrap();
    }
    let pid = sandbox.pid();
    let cgroups = sandbox.cgroup_paths();
    assert!(!cgroups.is_empty(), "the sandbox has no cgroup");
    assert!(sandbox.pause().await.unwrap(), "pause");
    assert_eq!(
        sandbox.get_info().await.unwrap().state,
        SandboxState::Paused
    );

    // Killed without a thaw first: the kill must still end every process.
    // The kill blocks its thread while it waits for PID 1, so it runs on
    // a thread of its own, where a hang fails the test instead of stalling
    // it.
    let (done, finished) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Handle::current();
    let killer = std::thread::spawn(move || {
        let killed = runtime.block_on(sandbox.kill());
        let _ = done.send(killed);
        sandbox
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the kill of a paused sandbox did not return within 10 s")
        .expect("kill a paused sandbox");
    let sandbox = killer.join().unwrap();
    assert!(!sandbox.is_running());
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "PID 1 ({pid}) is still in /proc"
    );
    for dir in &cgroups {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
    assert_not_found(Sandbox::connect(sandbox.id()).await, sandbox.id());
}

/// Pause and resume both fail with SandboxNotRunning on a sandbox that
/// has ended, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_after_kill_fail() {
    if !require_root("pause_and_resume_after_kill_fail") {
        return;
    }
    let sandbox = sandbox().await;
    sandbox.kill().await.expect("kill the sandbox");
    let paused = sandbox.pause().await;
    assert!(
        matches!(&paused, Err(Error::SandboxNotRunning { id }) if id == sandbox.id()),
        "pause after kill should fail with SandboxNotRunning, got {paused:?}"
    );
    let resumed = sandbox.resume().await;
    assert!(
        matches!(&resumed, Err(Error::SandboxNotRunning { id }) if id == sandbox.id()),
        "resume after kill should fail with SandboxNotRunning, got {resumed:?}"
    );
}
