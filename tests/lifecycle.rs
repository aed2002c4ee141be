//! End-to-end checks of a sandbox's life: its timeout, kill and drop, many
//! sandboxes at once, option validation, and that nothing is left on the
//! host afterwards.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use soulbox_core::{CommandSpec, Error, ListQuery, Sandbox, SandboxOptions};
use soulbox_tests::*;

/// Tests that count host-wide state (every cgroup directory, every
/// `soulbox-init` child of this process) hold this lock exclusively. Every
/// other test of this file holds it shared while it has sandboxes.
///
/// This serializes the tests of this binary only. Other host processes
/// make and remove sandbox cgroups at any time, which
/// [`left_by_this_process`] allows for.
static HOST_STATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Reads the host pids of every process in the sandbox from its cgroups.
fn sandbox_host_pids(sandbox: &Sandbox) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in sandbox.cgroup_paths() {
        let procs = dir.join("cgroup.procs");
        let text = std::fs::read_to_string(&procs)
            .unwrap_or_else(|e| panic!("read {}: {e}", procs.display()));
        for pid in text.lines().filter_map(|line| line.trim().parse().ok()) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Finds the host pids of this process's children named `soulbox-init`.
fn soulbox_init_children() -> Vec<i32> {
    host_children_named("soulbox-init")
}

/// Lists every directory below SoulBox's cgroup parents.
fn sandbox_cgroup_dirs() -> HashSet<PathBuf> {
    let mut dirs = HashSet::new();
    for parent in soulbox_core::diagnostics::cgroup_parents() {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.insert(entry.path());
            }
        }
    }
    dirs
}

/// Returns true when cgroup `dir` contains processes but none that is a
/// child of this test process, which makes it another host process's sandbox.
fn belongs_to_other_process(dir: &Path) -> bool {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<i32> = procs
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let me = std::process::id();
    !pids.is_empty() && pids.iter().all(|&pid| host_ppid(pid) != Some(me))
}

/// How long a new cgroup directory of another process's sandbox may stay
/// empty: from its creation until its PID 1 joins it, or from the kill of
/// its processes until its removal. Both normally take milliseconds, and
/// the rest is room for a loaded host.
const FOREIGN_EMPTY_LIMIT: Duration = Duration::from_secs(10);

/// Returns the cgroup directories of `new` that this process left behind.
///
/// A new directory of another process's sandbox can be empty for a moment,
/// just made or with its processes just killed. It then gains processes
/// that are not this process's children, or its owner removes it. A
/// directory that this process left does neither, so one still empty after
/// [`FOREIGN_EMPTY_LIMIT`] counts as left here.
///
/// NOTE: a directory of another process that died between making it and
/// starting its PID 1 also stays empty, and counts as left here.
async fn left_by_this_process(new: Vec<PathBuf>) -> Vec<PathBuf> {
    let deadline = Instant::now() + FOREIGN_EMPTY_LIMIT;
    let mut unexplained = new;
    loop {
        unexplained.retain(|dir| dir.exists() && !belongs_to_other_process(dir));
        if unexplained.is_empty() || Instant::now() >= deadline {
            return unexplained;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts two `sleep 1000` processes that outlive the shell starting them,
/// one of them double-forked, and waits until both are in the sandbox's
/// cgroups. Returns the host pids of every process in the sandbox.
async fn start_background_sleeps(sandbox: &Sandbox) -> Vec<i32> {
    let mut child = sandbox
        .shell("(sleep 1000 &); sleep 1000 &")
        .start()
        .await
        .expect("start the background sleeps");
    let status = child.wait().await.expect("wait for the shell").status;
    assert!(
        status.success(),
        "the shell starting the sleeps ended with {status}"
    );
    drop(child);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = sandbox_host_pids(sandbox);
        let sleeps = pids
            .iter()
            .filter(|&&pid| host_comm(pid).as_deref() == Some("sleep"))
            .count();
        if sleeps == 2 {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "after 5 s the sandbox has {sleeps} sleep processes instead of 2 (host pids {pids:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that nothing of sandbox `id` with PID 1 at host pid `init_pid`
/// and processes `host_pids` is left on the host.
fn assert_nothing_left(id: &str, init_pid: i32, host_pids: &[i32]) {
    assert!(
        !host_process_alive(init_pid),
        "PID 1 of {id} (host pid {init_pid}) is still alive"
    );
    let alive: Vec<i32> = host_pids
        .iter()
        .copied()
        .filter(|&pid| host_process_alive(pid))
        .collect();
    assert!(
        alive.is_empty(),
        "processes of {id} are still alive at host pids {alive:?}"
    );
    let cgroups = leftover_cgroups(id);
    assert!(cgroups.is_empty(), "cgroups of {id} remain: {cgroups:?}");
    let mounts = host_mounts_mentioning(id);
    assert!(mounts.is_empty(), "host mounts mention {id}: {mounts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_sandbox() {
    if !require_root("timeout_ends_sandbox") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let options = soulbox_tests::options().timeout(Duration::from_secs(1));
    let sandbox = Sandbox::create(options)
        .await
        .expect("create a sandbox with a 1 s timeout");
    assert!(
        sandbox.is_running(),
        "the sandbox is not running right after create"
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !sandbox.is_running(),
        "the sandbox still runs 2.5 s after create with a 1 s timeout"
    );
    // Nothing has killed PID 1 from the host yet, so only PID 1's own
    // timer can have ended it. A zombie counts as ended.
    assert!(
        !host_process_alive(sandbox.pid()),
        "PID 1 (host pid {}) is alive after its 1 s timeout",
        sandbox.pid()
    );
    let run = sandbox.run("true").await;
    assert!(
        matches!(&run, Err(Error::SandboxNotRunning { id }) if id == sandbox.id()),
        "run after the timeout did not fail with SandboxNotRunning: {run:?}"
    );

    let kill = sandbox.kill().await;
    assert!(kill.is_ok(), "kill after the timeout failed: {kill:?}");
    let cgroups = leftover_cgroups(sandbox.id());
    assert!(
        cgroups.is_empty(),
        "cgroups remain after a timeout and kill: {cgroups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_timeout_extends() {
    if !require_root("set_timeout_extends") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let options = soulbox_tests::options().timeout(Duration::from_secs(1));
    let sandbox = Sandbox::create(options)
        .await
        .expect("create a sandbox with a 1 s timeout");
    sandbox
        .set_timeout(Duration::from_secs(30))
        .await
        .expect("set the timeout to 30 s");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sandbox.is_running(),
        "the sandbox ended 2 s after its timeout was extended to 30 s"
    );
    let output = sh(&sandbox, "true").await;
    assert!(
        output.status.success(),
        "a command after the extension failed: {output:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_every_process() {
    if !require_root("kill_ends_every_process") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let id = sandbox.id().to_string();
    let host_pids = start_background_sleeps(&sandbox).await;

    let first = sandbox.kill().await;
    assert!(first.is_ok(), "kill failed: {first:?}");
    assert_nothing_left(&id, sandbox.pid(), &host_pids);
    assert!(
        sandbox.cgroup_paths().is_empty(),
        "cgroup_paths still lists directories after kill: {:?}",
        sandbox.cgroup_paths()
    );
    assert!(!sandbox.is_running(), "is_running is true after kill");

    let second = sandbox.kill().await;
    assert!(second.is_ok(), "a second kill failed: {second:?}");
}

/// A process outside the sandbox's PID namespace that joins its cgroup v2
/// directory escapes the namespace's teardown. The kill still ends it and
/// removes the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_process_joined_from_outside() {
    if !require_root("kill_ends_process_joined_from_outside") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let v2_root = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .find(|line| line.contains(" - cgroup2 "))
        .and_then(|line| line.split(' ').nth(4).map(PathBuf::from))
        .expect("this test needs a cgroup2 mount, which SoulBox's hosts have");
    let dir = sandbox
        .cgroup_paths()
        .into_iter()
        .find(|dir| dir.starts_with(&v2_root))
        .expect("the sandbox has a cgroup v2 directory");
    let mut outsider = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("start sleep on the host");
    std::fs::write(dir.join("cgroup.procs"), outsider.id().to_string())
        .expect("move the host's sleep into the sandbox's cgroup");

    let killed = sandbox.kill().await;

    // Its cgroup is left a moment before its parent can reap it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = outsider.try_wait().expect("wait for the host's sleep");
        if status.is_some() || Instant::now() >= deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if status.is_none() {
        let _ = outsider.kill();
        let _ = outsider.wait();
    }
    assert!(killed.is_ok(), "kill failed: {killed:?}");
    assert!(
        status.is_some(),
        "the process that joined the sandbox's cgroup still runs after kill"
    );
    assert!(!dir.exists(), "{} is left after kill", dir.display());
}

/// Counts this process's descriptors that refer to the namespace `link`
/// (as /proc/PID/ns/mnt reads, e.g. `mnt:[4026532321]`).
fn descriptors_of_namespace(link: &Path) -> usize {
    let fds = std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd");
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == link))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_releases_mount_namespace() {
    if !require_root("kill_releases_mount_namespace") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let own = std::fs::read_link("/proc/self/ns/mnt").expect("read this process's mount ns");
    let mut namespaces = Vec::new();
    for round in 0..4 {
        let sandbox = sandbox().await;
        let init_pid = sandbox.pid();
        let link = std::fs::read_link(format!("/proc/{init_pid}/ns/mnt"))
            .expect("read the sandbox's mount namespace");
        assert_ne!(link, own, "the sandbox shares the host's mount namespace");
        // Half the sandboxes end by kill, half by dropping the handle.
        if round % 2 == 0 {
            sandbox.kill().await.expect("kill the sandbox");
        } else {
            drop(sandbox);
        }
        assert_nothing_left(&format!("round {round}"), init_pid, &[]);
        namespaces.push(link);
    }
    // The kill hands its namespace reference to the reaper thread, which
    // closes it at once; 10 s leaves room for a loaded host.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: Vec<&PathBuf> = namespaces
            .iter()
            .filter(|link| descriptors_of_namespace(link) > 0)
            .collect();
        if held.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "10 s after their kill, this process still holds descriptors of the mount \
             namespaces {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_ends_every_process() {
    if !require_root("drop_ends_every_process") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let id = sandbox.id().to_string();
    let init_pid = sandbox.pid();
    let host_pids = start_background_sleeps(&sandbox).await;

    drop(sandbox);
    assert_nothing_left(&id, init_pid, &host_pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sandboxes_distinct() {
    if !require_root("parallel_sandboxes_distinct") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    const COUNT: usize = 20;
    let tasks: Vec<_> = (0..COUNT)
        .map(|i| {
            tokio::spawn(async move {
                let sandbox = Sandbox::create(soulbox_tests::options())
                    .await
                    .unwrap_or_else(|e| panic!("create sandbox {i} of {COUNT}: {e}"));
                let output = sh(&sandbox, "hostname").await;
                (sandbox, output)
            })
        })
        .collect();
    let mut sandboxes = Vec::new();
    for task in tasks {
        let (sandbox, output) = task.await.expect("a sandbox task panicked");
        assert!(
            output.status.success(),
            "hostname failed in {}: {output:?}",
            sandbox.id()
        );
        assert_eq!(
            stdout(&output).trim_end(),
            sandbox.id(),
            "a sandbox returned another hostname than its own id"
        );
        sandboxes.push(sandbox);
    }

    let ids: HashSet<&str> = sandboxes.iter().map(Sandbox::id).collect();
    assert_eq!(
        ids.len(),
        COUNT,
        "{COUNT} sandboxes have only {} distinct ids",
        ids.len()
    );

    for sandbox in &sandboxes {
        let kill = sandbox.kill().await;
        assert!(kill.is_ok(), "kill of {} failed: {kill:?}", sandbox.id());
        assert_nothing_left(sandbox.id(), sandbox.pid(), &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_leaves_nothing() {
    if !require_root("batch_leaves_nothing") {
        return;
    }
    let _exclusive = HOST_STATE.write().await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let sandbox = sandbox().await;
        let output = sh(&sandbox, "echo data > file && cat file").await;
        assert!(
            output.status.success(),
            "a command in {} failed: {output:?}",
            sandbox.id()
        );
        ids.push(sandbox.id().to_string());
        sandbox.kill().await.expect("kill a sandbox of the batch");
    }

    let leftover_dirs: Vec<PathBuf> = sandbox_cgroup_dirs()
        .into_iter()
        .filter(|dir| {
            dir.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| ids.iter().any(|id| id == name))
        })
        .collect();
    assert!(
        leftover_dirs.is_empty(),
        "cgroup directories of the batch remain: {leftover_dirs:?}"
    );

    let scratch_mounts = host_mounts_mentioning("soulbox/scratch");
    assert!(
        scratch_mounts.is_empty(),
        "host mounts of a sandbox's scratch directory remain: {scratch_mounts:?}"
    );
    for id in &ids {
        let mounts = host_mounts_mentioning(id);
        assert!(mounts.is_empty(), "host mounts mention {id}: {mounts:?}");
    }

    let init_children = soulbox_init_children();
    assert!(
        init_children.is_empty(),
        "soulbox-init children of this test process remain at host pids {init_children:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_rejected() {
    if !require_root("invalid_options_rejected") {
        return;
    }
    let _exclusive = HOST_STATE.write().await;
    let before = sandbox_cgroup_dirs();

    let mut bad_template = soulbox_tests::options();
    bad_template.template = "nope".to_string();
    let bad_env = soulbox_tests::options().env("A=B", "value");
    let mut zero_disk = soulbox_tests::options();
    zero_disk.disk_size = 0;
    let mut zero_tmp = soulbox_tests::options();
    zero_tmp.tmp_size = 0;
    let mut nul_template = soulbox_tests::options();
    nul_template.template = "a\0b".to_string();
    let nul_metadata_key = soulbox_tests::options().metadata("bad\0key", "value");
    let nul_metadata_value = soulbox_tests::options().metadata("label", "bad\0value");
    let cases = [
        ("template \"nope\"", bad_template, "nope"),
        ("env key \"A=B\"", bad_env, "A=B"),
        ("disk_size 0", zero_disk, "disk_size"),
        ("tmp_size 0", zero_tmp, "tmp_size"),
        (
            "a NUL in the template",
            nul_template,
            "template \"a\\0b\" contains a NUL byte",
        ),
        (
            "a NUL in a metadata key",
            nul_metadata_key,
            "metadata key \"bad\\0key\" contains a NUL byte",
        ),
        (
            "a NUL in a metadata value",
            nul_metadata_value,
            "the value of metadata key \"label\" contains a NUL byte",
        ),
    ];

    for (case, options, named) in cases {
        let created = Sandbox::create(options).await;
        match &created {
            Err(Error::InvalidArgument(message)) => assert!(
                message.contains(named),
                "the InvalidArgument message for {case} does not name {named:?}: {message}"
            ),
            other => panic!("create with {case} did not fail with InvalidArgument: {other:?}"),
        }
    }

    let new_dirs: Vec<PathBuf> = sandbox_cgroup_dirs().difference(&before).cloned().collect();
    let left = left_by_this_process(new_dirs).await;
    assert!(
        left.is_empty(),
        "rejected creates left cgroup directories, still without another \
         process's sandbox in them after {FOREIGN_EMPTY_LIMIT:?}: {left:?}"
    );
    let init_children = soulbox_init_children();
    assert!(
        init_children.is_empty(),
        "rejected creates started soulbox-init at host pids {init_children:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_commands_share_layer() {
    if !require_root("files_and_commands_share_layer") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let from_host = format!("from-host-{}.txt", sandbox.id());
    let from_command = format!("from-command-{}.txt", sandbox.id());

    sandbox
        .files()
        .write(&from_host, "written by files().write\n")
        .await
        .expect("write a file through files()");
    let cat = sh(&sandbox, &format!("cat /home/user/{from_host}")).await;
    assert!(
        cat.status.success(),
        "cat of the file written through files() failed: {cat:?}"
    );
    assert_eq!(
        stdout(&cat),
        "written by files().write\n",
        "a command reads other contents than files().write wrote"
    );
    // files() makes new files belong to `user`, so the default user may
    // change them.
    let append = sh(&sandbox, &format!("echo appended >> {from_host}")).await;
    assert!(
        append.status.success(),
        "user cannot append to a file written through files(): {append:?}"
    );

    let write = sh(
        &sandbox,
        &format!("printf 'written by a command\\n' > {from_command}"),
    )
    .await;
    assert!(
        write.status.success(),
        "writing a file with a command failed: {write:?}"
    );
    let read = sandbox
        .files()
        .read(&from_command)
        .await
        .expect("read the command's file through files()");
    assert_eq!(
        read, b"written by a command\n",
        "files().read returns other contents than the command wrote"
    );

    for name in [&from_host, &from_command] {
        let host_path = PathBuf::from("/home/user").join(name);
        assert!(
            !host_path.exists(),
            "a sandbox file appeared on the host at {}",
            host_path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_ends_sandbox_despite_other_handles() {
    if !require_root("drop_ends_sandbox_despite_other_handles") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let sandbox = sandbox().await;
    let pid = sandbox.pid();
    let handle = sandbox
        .command("sleep")
        .arg("300")
        .start()
        .await
        .expect("start sleep");
    let files = sandbox.files();
    let commands = sandbox.commands();
    drop(sandbox);
    assert!(
        !host_process_alive(pid),
        "PID 1 ({pid}) should be gone once the Sandbox is dropped"
    );
    let written = files.write("after-drop", "x").await;
    assert!(
        matches!(written, Err(Error::SandboxNotRunning { .. })),
        "a Files handle must not outlive the sandbox: {written:?}"
    );
    let killed = handle.kill().await;
    assert!(
        matches!(killed, Err(Error::SandboxNotRunning { .. })),
        "a command handle must not reach a dropped sandbox: {killed:?}"
    );
    let sent = commands.send_stdin(handle.pid(), b"x").await;
    assert!(sent.is_err(), "commands() must not reach a dropped sandbox");
}

/// A [`Sandbox::create_and_start`] whose command is invalid creates
/// nothing, and one whose program is missing kills the sandbox it made:
/// neither leaves a cgroup directory or a PID 1 behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_failures_leave_nothing() {
    if !require_root("create_and_start_failures_leave_nothing") {
        return;
    }
    let _exclusive = HOST_STATE.write().await;
    let before = sandbox_cgroup_dirs();

    let mut no_program = CommandSpec::new("true");
    no_program.argv.clear();
    let mut unknown_user = CommandSpec::new("true");
    unknown_user.user = Some("nobody".into());
    let mut bad_env = CommandSpec::new("true");
    bad_env.envs.push(("A=B".into(), "value".into()));
    let mut bad_cwd = CommandSpec::new("true");
    bad_cwd.cwd = Some("/tmp/a\0b".into());
    let mut empty_tag = CommandSpec::new("true");
    empty_tag.tag = Some(String::new());
    let cases = [
        ("no program", no_program, "no program"),
        ("user \"nobody\"", unknown_user, "nobody"),
        ("env key \"A=B\"", bad_env, "A=B"),
        ("a NUL in the cwd", bad_cwd, "NUL"),
        ("an empty tag", empty_tag, "tag"),
    ];
    for (case, spec, named) in cases {
        match Sandbox::create_and_start(soulbox_tests::options(), &spec).await {
            Err(Error::InvalidArgument(message)) => assert!(
                message.contains(named),
                "the InvalidArgument message for {case} does not name {named:?}: {message}"
            ),
            other => {
                panic!("create_and_start with {case} did not fail with InvalidArgument: {other:?}")
            }
        }
    }
    let missing = CommandSpec::new("/no/such/program");
    match Sandbox::create_and_start(soulbox_tests::options(), &missing).await {
        Err(Error::Spawn { .. }) => {}
        other => panic!("a missing program did not fail with a Spawn error: {other:?}"),
    }

    let new_dirs: Vec<PathBuf> = sandbox_cgroup_dirs().difference(&before).cloned().collect();
    let left = left_by_this_process(new_dirs).await;
    assert!(
        left.is_empty(),
        "failed create_and_start calls left cgroup directories, still without another \
         process's sandbox in them after {FOREIGN_EMPTY_LIMIT:?}: {left:?}"
    );
    let init_children = soulbox_init_children();
    assert!(
        init_children.is_empty(),
        "failed create_and_start calls left soulbox-init at host pids {init_children:?}"
    );
}

/// Dropping a [`Sandbox::create_and_start`] future once the sandbox is
/// ready, but before its command's start report arrives, kills the
/// sandbox, even one made to outlive its handle: the caller never got its
/// id. Each round polls the call by hand and drops it as soon as the
/// sandbox is listed while the call is still pending.
#[tokio::test(flavor = "current_thread")]
async fn create_and_start_dropped_while_starting_leaves_nothing() {
    if !require_root("create_and_start_dropped_while_starting_leaves_nothing") {
        return;
    }
    let _shared = HOST_STATE.read().await;
    let rounds = 20;
    let mut dropped_while_starting = 0;
    let mut left = Vec::new();
    for _ in 0..rounds {
        let marker = unique_name("dropped-start");
        let query = ListQuery::default().metadata("test", marker.as_str());
        let options = SandboxOptions::default()
            .kill_on_drop(false)
            .metadata("test", marker.as_str());
        let spec = CommandSpec::new("/bin/true");
        let mut call = Box::pin(Sandbox::create_and_start(options, &spec));
        let started = std::time::Instant::now();
        loop {
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(call.as_mut(), cx))
            })
            .await;
            if let std::task::Poll::Ready(result) = polled {
                // Too late: the command had started. This round only cleans up.
                let (sandbox, _handle) = result.expect("create_and_start /bin/true");
                sandbox.kill().await.expect("kill the sandbox");
                break;
            }
            let listed = Sandbox::list(&query).await.expect("list sandboxes");
            if !listed.is_empty() {
                dropped_while_starting += 1;
                break;
            }
            assert!(
                started.elapsed() < STEP_LIMIT,
                "create_and_start did not finish within {STEP_LIMIT:?}"
            );
            tokio::task::yield_now().await;
        }
        drop(call);
        for info in Sandbox::list(&query).await.expect("list sandboxes") {
            let _ = Sandbox::kill_id(&info.sandbox_id).await;
            left.push(info.sandbox_id);
        }
    }
    assert!(
        dropped_while_starting > 0,
        "no round of {rounds} dropped the call between the sandbox's listing and the \
         command's start report, so this test checked nothing"
    );
    assert!(
        left.is_empty(),
        "dropped create_and_start calls left running sandboxes {left:?}"
    );
}

/// Thirty [`Sandbox::create_and_start`] calls at once, each with stdin
/// open, and thirty more cut off by a 1 ms deadline. Every command that
/// started runs to the end with its own input. Afterwards no cgroup
/// directory, `soulbox-init` child or descriptor of this process is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_many_at_once_leaves_nothing() {
    if !require_root("create_and_start_many_at_once_leaves_nothing") {
        return;
    }
    let _exclusive = HOST_STATE.write().await;
    // The zygote and the reaper thread start with this process's first
    // sandbox and keep their descriptors; one create and kill first keeps
    // them out of the count.
    let (warm_up, _) =
        Sandbox::create_and_start(soulbox_tests::options(), &CommandSpec::new("/bin/true"))
            .await
            .expect("create a first sandbox");
    warm_up.kill().await.expect("kill the first sandbox");
    drop(warm_up);
    let before = sandbox_cgroup_dirs();
    let descriptors_before = std::fs::read_dir("/proc/self/fd").unwrap().count();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        tasks.spawn(async move {
            let mut spec = CommandSpec::new("sh");
            spec.argv
                .extend(["-c", "read line; echo \"$line\"; exec cat"].map(Into::into));
            spec.stdin = true;
            let (sandbox, mut handle) =
                Sandbox::create_and_start(soulbox_tests::options(), &spec).await?;
            handle.send_stdin(format!("line {i}\n").as_bytes()).await?;
            handle.send_stdin(&vec![b'x'; 1 << 20]).await?;
            handle.close_stdin().await?;
            let output = handle.wait().await?;
            sandbox.kill().await?;
            Ok::<_, Error>((i, Some(output)))
        });
        tasks.spawn(async move {
            let spec = CommandSpec::new("/bin/true");
            let call = Sandbox::create_and_start(soulbox_tests::options(), &spec);
            // Cut off mid-way, or finished: either way the sandbox goes.
            let _ = tokio::time::timeout(Duration::from_millis(1), call).await;
            Ok((i, None))
        });
    }
    while let Some(joined) = within_limit("60 calls", tasks.join_next()).await {
        let (i, output) = joined
            .expect("join a call")
            .expect("a create_and_start call");
        let Some(output) = output else { continue };
        assert_eq!(output.status, soulbox_core::ExitStatus::Code(0), "call {i}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.starts_with(&format!("line {i}\n")),
            "call {i} printed {:?}",
            &text[..text.len().min(40)]
        );
        assert_eq!(output.stdout.len(), format!("line {i}\n").len() + (1 << 20));
    }

    let new_dirs: Vec<PathBuf> = sandbox_cgroup_dirs().difference(&before).cloned().collect();
    let left = left_by_this_process(new_dirs).await;
    assert!(
        left.is_empty(),
        "the calls left cgroup directories {left:?}"
    );
    let init_children = soulbox_init_children();
    assert!(
        init_children.is_empty(),
        "the calls left soulbox-init at host pids {init_children:?}"
    );
    // The reaper thread closes the descriptors of killed sandboxes a moment
    // after each kill.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut descriptors = std::fs::read_dir("/proc/self/fd").unwrap().count();
    while descriptors > descriptors_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        descriptors = std::fs::read_dir("/proc/self/fd").unwrap().count();
    }
    assert!(
        descriptors <= descriptors_before,
        "{descriptors} descriptors after the calls, {descriptors_before} before"
    );
}
