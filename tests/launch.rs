//! How each sandbox's PID 1 starts: forked by this process's zygote (the
//! default launcher), executed afresh (`Launcher::Exec`), or executed
//! because `Launcher::Fork` cannot clone a multi-threaded process.

use std::process::Command;
use std::time::{Duration, Instant};

use soulbox_core::diagnostics::zygote_pid;
use soulbox_core::{set_launcher, Launcher, Sandbox};
use soulbox_tests::*;

/// The zygote and the launcher are process-wide, so the tests of this
/// binary take turns.
static LAUNCHER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn zygote_children() -> Vec<i32> {
    host_children_named("soulbox-zygote")
}

/// Returns the targets of host process `pid`'s open descriptors, by number.
fn fd_targets(pid: i32) -> Vec<(u32, String)> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {dir}: {e}"));
    let mut targets: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    targets.sort();
    targets
}

/// Returns whether descriptor `fd` of host process `pid` is the null
/// device (1:3).
fn is_null_device(pid: i32, fd: u32) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|meta| meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3))
}

/// Returns the line of /proc/PID/status that starts with `field`.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .to_string()
}

/// Returns the pids of this process's children, zombies included.
fn children_of_this_process() -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| host_ppid(pid) == Some(me))
        .collect()
}

/// Returns whether host process `pid` was executed rather than forked
/// from the zygote. After an exec the environment strings follow the
/// arguments on the stack. A PID 1 forked from the zygote ends its
/// arguments (as /proc/PID/cmdline shows them) before the zygote's
/// `--zygote`, which still lies between them and the environment.
fn was_executed(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat has a command name");
    // Fields after the command name, from 3 (state): 49 is arg_end and 50
    // env_start.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let arg_end = fields[49 - 3];
    let env_start = fields[50 - 3];
    assert_ne!(arg_end, "0", "/proc/{pid}/stat hides the argument range");
    arg_end == env_start
}

/// Waits until host process `pid` is gone and reaped, for up to 10 s.
fn wait_until_reaped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "process {pid} was not reaped within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_share_one_zygote() {
    if !require_root("creates_share_one_zygote") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    let first = sandbox().await;
    let second = sandbox().await;

    let zygote = zygote_pid().expect("a zygote runs after a create");
    assert_eq!(
        zygote_children(),
        vec![zygote],
        "this process should have exactly one zygote"
    );
    let me = std::process::id();
    for sandbox in [&first, &second] {
        assert_eq!(
            host_ppid(sandbox.pid()),
            Some(me),
            "PID 1 of {} should be this process's child",
            sandbox.id()
        );
        assert_eq!(host_comm(sandbox.pid()).as_deref(), Some("soulbox-init"));
        let output = sh(sandbox, "echo ready").await;
        assert_eq!(stdout(&output), "ready\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zygote_keeps_no_sandbox_state() {
    if !require_root("zygote_keeps_no_sandbox_state") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    let sandbox = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");

    let cgroup = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        cgroup(&zygote.to_string()),
        cgroup("self"),
        "the zygote should stay in this process's cgroups"
    );
    // After its reply the zygote makes the next network namespace and
    // builds the next root, with descriptors of their own for a moment.
    // Then the root's mount namespace stays, last, after the host's mount
    // table, which the zygote watches while it keeps that root.
    let expected = [0, 1, 2, 3, 4, 5, 6, 7];
    let deadline = Instant::now() + Duration::from_secs(5);
    let targets = loop {
        let targets = fd_targets(zygote);
        let fds: Vec<u32> = targets.iter().map(|(fd, _)| *fd).collect();
        if fds == expected || Instant::now() > deadline {
            break targets;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let fds: Vec<u32> = targets.iter().map(|(fd, _)| *fd).collect();
    assert_eq!(
        fds, expected,
        "the zygote should keep only stdio, its channel, the host's network and mount \
         namespaces, the host's mount table and the next sandbox's root: {targets:?}"
    );
    assert_eq!(targets[4].1, namespace_of("self", "net"));
    assert_eq!(targets[5].1, namespace_of("self", "mnt"));
    assert_eq!(targets[6].1, format!("/proc/{zygote}/mountinfo"));
    let next_root = &targets[7].1;
    assert!(next_root.starts_with("mnt:"), "{targets:?}");
    assert_ne!(
        *next_root,
        namespace_of(&sandbox.pid().to_string(), "mnt"),
        "the zygote keeps the sandbox's own mount namespace"
    );
    let _ = sandbox.kill().await;
}

/// Returns the namespace of process `pid` ("self" for this one) of `kind`,
/// such as "net:[4026531840]".
fn namespace_of(pid: &str, kind: &str) -> String {
    let link = format!("/proc/{pid}/ns/{kind}");
    std::fs::read_link(&link)
        .unwrap_or_else(|e| panic!("read {link}: {e}"))
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sandbox_gets_an_unused_network_namespace() {
    if !require_root("each_sandbox_gets_an_unused_network_namespace") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    let first = sandbox().await;
    let second = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");

    let host = namespace_of("self", "net");
    let first_net = namespace_of(&first.pid().to_string(), "net");
    let second_net = namespace_of(&second.pid().to_string(), "net");
    assert_ne!(
        first_net, host,
        "the first sandbox shares the host's network"
    );
    assert_ne!(
        second_net, host,
        "the second sandbox shares the host's network"
    );
    assert_ne!(
        first_net, second_net,
        "two sandboxes share one network namespace"
    );

    // The zygote makes the next namespace after its reply, so it may still
    // be in the second sandbox's for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let spare = loop {
        let spare = namespace_of(&zygote.to_string(), "net");
        if spare != second_net || Instant::now() > deadline {
            break spare;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_ne!(
        spare, second_net,
        "the zygote stayed in the namespace it handed over"
    );
    assert_ne!(
        spare, first_net,
        "the zygote is in the first sandbox's namespace"
    );
    assert_ne!(
        spare, host,
        "the zygote holds no network namespace for the next sandbox"
    );

    let third = sandbox().await;
    assert_eq!(
        namespace_of(&third.pid().to_string(), "net"),
        spare,
        "the next sandbox should start in the namespace the zygote prepared"
    );
    for sandbox in [&first, &second, &third] {
        let _ = sandbox.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_has_only_its_descriptors() {
    if !require_root("pid1_has_only_its_descriptors") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    let _warm = sandbox().await;
    let sandbox = sandbox().await;
    let zygote = zygote_pid().expect("a zygote runs after a create");

    let targets = fd_targets(sandbox.pid());
    let kinds: Vec<&str> = targets
        .iter()
        .map(|(_, target)| match target.as_str() {
            t if t.ends_with("null") => "null",
            t if t.starts_with("socket:") => "socket",
            t if t.ends_with(".lock") => "lock",
            "anon_inode:[signalfd]" => "signalfd",
            t if t.starts_with("/sys/fs/cgroup/memory/") && t.ends_with("/tasks") => "tasks",
            _ => "other",
        })
        .collect();
    // With a v1 memory cgroup PID 1 keeps its tasks file, through which
    // each command's supervisor joins it.
    let mut expected = vec![
        "null", "null", "null", "socket", "socket", "lock", "signalfd",
    ];
    if sandbox
        .cgroup_paths()
        .iter()
        .any(|dir| dir.starts_with("/sys/fs/cgroup/memory"))
    {
        expected.push("tasks");
    }
    assert_eq!(kinds, expected, "PID 1's descriptors: {targets:?}");
    let channel = fd_targets(zygote)
        .into_iter()
        .find(|(fd, _)| *fd == 3)
        .expect("the zygote's channel at fd 3")
        .1;
    assert!(
        targets.iter().all(|(_, target)| *target != channel),
        "PID 1 holds the zygote's channel {channel}: {targets:?}"
    );
}

/// Runs on the test's own thread, which therefore starts the zygote, so
/// that the signal mask set here is the one the zygote inherits.
#[tokio::test(flavor = "current_thread")]
async fn pid1_starts_clean() {
    if !require_root("pid1_starts_clean") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    // A zygote started before this test would not see the changes below.
    set_launcher(Launcher::Exec);
    set_launcher(Launcher::Zygote);
    // SAFETY: signal and pthread_sigmask take plain integers and a valid
    // sigset. The changes are undone below, and the other tests of this
    // binary wait for LAUNCHER meanwhile.
    let blocked = unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGRTMAX(), libc::SIG_IGN);
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let _warm = sandbox().await;
    let sandbox = sandbox().await;
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_DFL);
        libc::signal(libc::SIGRTMAX(), libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &blocked, std::ptr::null_mut());
    }
    let pid = sandbox.pid();
    let zygote = zygote_pid().expect("the sandboxes came from a zygote");
    assert_eq!(status_field(zygote, "SigBlk:"), "SigBlk:\t0000000000000000");
    let ignored = status_field(zygote, "SigIgn:");
    let ignored = u64::from_str_radix(ignored.trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ignored & 0x7fff_ffff, 0, "the zygote ignores {ignored:#x}");
    let rtmax_bit = 1u64 << (libc::SIGRTMAX() - 1);
    assert_eq!(ignored & rtmax_bit, 0, "the zygote ignores SIGRTMAX");

    // Only SIGCHLD (bit 17) is blocked, for PID 1's signalfd. Of the
    // standard signals only SIGPIPE (bit 13) is ignored; glibc reserves
    // signals 32 and 33 and keeps whatever the host set for them.
    assert_eq!(status_field(pid, "SigBlk:"), "SigBlk:\t0000000000010000");
    let ignored = status_field(pid, "SigIgn:");
    let ignored = u64::from_str_radix(ignored.trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ignored & 0x7fff_ffff, 0x1000, "PID 1 ignores {ignored:#x}");
    assert_eq!(ignored & rtmax_bit, 0, "PID 1 ignores SIGRTMAX");
    let command = stdout(&sh(&sandbox, "grep SigIgn /proc/self/status").await);
    let command_ignored =
        u64::from_str_radix(command.trim().trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(
        command_ignored & rtmax_bit,
        0,
        "a command ignores SIGRTMAX: {command}"
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let session: i32 = rest.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, pid, "PID 1 should lead a session of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_survives_killed_zygote() {
    if !require_root("create_survives_killed_zygote") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    drop(sandbox().await);
    let old = zygote_pid().expect("a zygote runs after a create");
    // SAFETY: kill takes plain integers; `old` is this process's child,
    // which its own thread reaps, so the pid is not reused before this.
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    wait_until_reaped(old);

    let first = sandbox().await;
    assert_eq!(stdout(&sh(&first, "echo one").await), "one\n");
    let second = sandbox().await;
    assert_eq!(stdout(&sh(&second, "echo two").await), "two\n");
    let new = zygote_pid().expect("a new zygote runs after the restart");
    assert_ne!(new, old);
    assert_eq!(zygote_children(), vec![new]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_launcher_stops_zygote() {
    if !require_root("exec_launcher_stops_zygote") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    drop(sandbox().await);
    let zygote = zygote_pid().expect("a zygote runs after a create");

    set_launcher(Launcher::Exec);
    let sandbox = sandbox().await;
    let output = sh(&sandbox, "echo exec").await;
    set_launcher(Launcher::Zygote);

    assert_eq!(stdout(&output), "exec\n");
    assert_eq!(zygote_pid(), None, "Launcher::Exec should stop the zygote");
    wait_until_reaped(zygote);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sandbox.pid())).unwrap();
    assert_eq!(
        cmdline, b"soulbox-init\0",
        "PID 1 should have been executed without the zygote's argument"
    );
    assert!(
        was_executed(sandbox.pid()),
        "PID 1 should have been executed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_launcher_executes_when_threaded() {
    if !require_root("fork_launcher_executes_when_threaded") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    // This test process runs the harness's and tokio's threads, so a clone
    // of it could hold their locks: the create must execute PID 1.
    set_launcher(Launcher::Fork(soulbox_init::run_cloned));
    let created = Sandbox::create(options()).await;
    let zygote = zygote_pid();
    set_launcher(Launcher::Zygote);

    let sandbox = created.expect("create a sandbox with Launcher::Fork");
    assert_eq!(stdout(&sh(&sandbox, "echo fork").await), "fork\n");
    assert_eq!(zygote, None, "Launcher::Fork should not start a zygote");
    let exe = std::fs::read_link(format!("/proc/{}/exe", sandbox.pid())).unwrap();
    assert_ne!(
        exe,
        std::env::current_exe().unwrap(),
        "PID 1 was cloned from a multi-threaded process"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sandbox.pid())).unwrap();
    assert_eq!(
        cmdline, b"soulbox-init\0",
        "PID 1 should have been executed"
    );
}

#[test]
fn rootless_creates_without_zygote() {
    if !require_root("rootless_creates_without_zygote") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // The build directory may sit below a home directory that the
    // unprivileged account cannot enter, so the probe runs from a copy.
    let dir = std::env::temp_dir().join(unique_name("launch-probe"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = dir.join("soulbox-launch-probe");
    copy_program(
        std::path::Path::new(env!("CARGO_BIN_EXE_soulbox-launch-probe")),
        &probe,
        0o755,
    );

    let (uid, gid) = unprivileged_ids();
    let output = Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"])
        .args(["env", "-i", "PATH=/usr/bin:/bin"])
        .arg(&probe)
        .output()
        .expect("run setpriv (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the probe failed: {stderr}");

    let values = |name: &str| -> Vec<&str> {
        stdout
            .lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .collect()
    };
    assert_eq!(values("uid"), ["0", "0"], "{stdout}");
    let map = format!("0,{uid},1");
    assert_eq!(values("uid_map"), [map.as_str(), map.as_str()], "{stdout}");
    assert_eq!(values("parent_is_me"), ["true", "true"], "{stdout}");
    assert_eq!(values("forwarded"), ["rootless"], "{stdout}");
    // A rootless PID 1 is always executed: see `Launcher::Zygote`.
    assert_eq!(values("zygotes"), ["0"], "{stdout}");
    assert_eq!(values("zygote_pid"), ["none"], "{stdout}");
}

/// Set in the environment of the test process that
/// `create_storm_survives_zygote_kills` starts for the storm itself.
const STORM_PROCESS: &str = "SOULBOX_TEST_STORM_PROCESS";

/// Sixty creates at once while the zygote is killed five times: every
/// create succeeds, and once the sandboxes are killed or dropped and the
/// zygote is stopped, the process has no descriptor that it did not have
/// before, no children and no cgroups left.
///
/// The storm runs in a test process of its own, started from this
/// executable, because its checks cover the whole process. In this one
/// the other tests change what they see at any moment. Each builds its
/// tokio runtime (four descriptors with tokio 1.54) when it starts, before
/// it waits for `LAUNCHER`. `rootless_creates_without_zygote` runs a child
/// with piped output and does not wait for `LAUNCHER` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_storm_survives_zygote_kills() {
    if !require_root("create_storm_survives_zygote_kills") {
        return;
    }
    // The storm's process is this process's child while it runs, and
    // create_survives_stopped_zygote counts this process's children.
    let _turn = LAUNCHER.lock().await;
    if std::env::var_os(STORM_PROCESS).is_none() {
        run_storm_process();
        return;
    }
    drop(sandbox().await);
    // The zygote's channel and pidfds come and go as it is killed and
    // restarted, so both sets of descriptors are taken without a zygote.
    stop_zygote();
    let before = descriptors_without_sandboxes();
    // The storm starts with a zygote running, for the first kill.
    drop(sandbox().await);
    let killer = std::thread::spawn(|| {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(40));
            if let Some(pid) = zygote_pid() {
                // SAFETY: kill takes plain integers; the zygote is this
                // process's child, reaped only by its own thread.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    });
    let creates: Vec<_> = (0..60)
        .map(|i| {
            tokio::spawn(async move {
                let sandbox = sandbox().await;
                assert_eq!(stdout(&sh(&sandbox, "echo hi").await), "hi\n");
                let id = sandbox.id().to_string();
                if i % 2 == 0 {
                    sandbox.kill().await.expect("kill");
                }
                id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for create in creates {
        ids.push(create.await.expect("a create panicked"));
    }
    killer.join().expect("the killer thread panicked");

    stop_zygote();
    let deadline = Instant::now() + Duration::from_secs(10);
    let leftovers = || {
        let children = children_of_this_process();
        let cgroups: Vec<_> = ids.iter().flat_map(|id| leftover_cgroups(id)).collect();
        (new_descriptors(&before), children, cgroups)
    };
    let mut left = leftovers();
    while (!left.0.is_empty() || !left.1.is_empty() || !left.2.is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        left = leftovers();
    }
    let (descriptors, children, cgroups) = left;
    assert!(
        descriptors.is_empty(),
        "descriptors opened during the storm are still open: {descriptors:?}"
    );
    assert!(children.is_empty(), "children left: {children:?}");
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}

/// Stops this process's zygote: its thread reaps it and closes its pidfd
/// soon after.
fn stop_zygote() {
    set_launcher(Launcher::Exec);
    set_launcher(Launcher::Zygote);
}

/// Returns the targets of this process's open descriptors.
fn descriptor_targets() -> Vec<String> {
    let me = std::process::id() as i32;
    fd_targets(me)
        .into_iter()
        .map(|(_, target)| target)
        .collect()
}

/// Waits up to 10 s until this process has no pidfd and no mount
/// namespace open, as it should with no sandbox and no zygote once the
/// reaper has closed the namespaces that kills hand it. Returns the
/// targets of its descriptors then.
fn descriptors_without_sandboxes() -> Vec<String> {
    let settled = |targets: &[String]| {
        !targets
            .iter()
            .any(|target| target == "anon_inode:[pidfd]" || target.starts_with("mnt:"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut targets = descriptor_targets();
    while !settled(&targets) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        targets = descriptor_targets();
    }
    assert!(
        settled(&targets),
        "a pidfd or mount namespace stayed open for 10 s without a sandbox or zygote: \
         {targets:?}"
    );
    targets
}

/// Returns the targets of this process's open descriptors that `before`
/// lacks, counting each target as often as it is open: a second
/// descriptor of one socket is new.
fn new_descriptors(before: &[String]) -> Vec<String> {
    let mut unmatched = before.to_vec();
    descriptor_targets()
        .into_iter()
        .filter(|target| match unmatched.iter().position(|t| t == target) {
            Some(index) => {
                unmatched.swap_remove(index);
                false
            }
            None => true,
        })
        .collect()
}

/// Runs `create_storm_survives_zygote_kills` alone in a new process of
/// this test executable, and checks that it ran and passed there.
fn run_storm_process() {
    let test = "create_storm_survives_zygote_kills";
    let output = Command::new(std::env::current_exe().expect("path of this test executable"))
        .args(["--exact", test, "--test-threads=1"])
        .env(STORM_PROCESS, "1")
        .output()
        .expect("start the storm's test process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the storm failed in its own process ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(&format!("test {test} ... ok")),
        "the storm's process did not run {test}:\n{stdout}"
    );
}

/// Returns what a process's start decides, from /proc/PID/status, stat,
/// limits and its descriptors: signal state, capabilities, bounding set,
/// seccomp, umask, CPU affinity, scheduling, session, rlimits and the kinds
/// of its open descriptors. Pending signals are left out: a SIGCHLD from
/// an ended command waits in PID 1 until it next polls.
fn start_state(pid: i32) -> Vec<String> {
    const FIELDS: [&str; 15] = [
        "Umask:",
        "SigBlk:",
        "SigIgn:",
        "SigCgt:",
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
        "Seccomp:",
        "Seccomp_filters:",
        "Cpus_allowed_list:",
        "Mems_allowed_list:",
        "Speculation_Store_Bypass:",
    ];
    let mut state: Vec<String> = FIELDS
        .iter()
        .map(|field| status_field(pid, field))
        .collect();

    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat has a command name");
    // Fields after the command name, from 3 (state): 6 is the session,
    // 18 the priority, 19 the nice value, 41 the scheduling policy.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    state.push(format!(
        "session leader: {}",
        fields[6 - 3] == pid.to_string()
    ));
    state.push(format!("priority: {}", fields[18 - 3]));
    state.push(format!("nice: {}", fields[19 - 3]));
    state.push(format!("policy: {}", fields[41 - 3]));

    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    state.extend(limits.lines().map(str::to_string));

    for (fd, target) in fd_targets(pid) {
        let kind = match target.as_str() {
            // PID 1's stdio: the host's /dev/null, which shows as "/null"
            // once the host's tree is detached, or the sandbox's own in a
            // root the zygote built ahead. Either is the null device.
            _ if is_null_device(pid, fd) => "the null device",
            t if t.starts_with("socket:") => "socket",
            t if t.starts_with("anon_inode:") => t,
            t if t.ends_with(".lock") => "lock",
            t if t.starts_with("/sys/fs/cgroup/memory/") && t.ends_with("/tasks") => {
                "the memory cgroup's tasks file"
            }
            t => t,
        };
        state.push(format!("fd {fd}: {kind}"));
    }
    state
}

/// A shell command that prints what a command's start decides, read from
/// the command's own /proc entries. SigQ is left out: it counts the
/// signals queued for the user id across every sandbox.
const COMMAND_STATE: &str = "grep -E '^(Umask|Sig(Pnd|Blk|Ign|Cgt)|Shd|Cap|NoNewPrivs|Seccomp|Cpus_allowed_list)' \
     /proc/self/status; cat /proc/self/limits; ls -l /proc/self/fd | sed -e 's/.* [0-9][0-9]:[0-9][0-9] //' -e 's/:\\[[0-9]*\\]//'; \
     cut -d' ' -f6,18,19,41 /proc/self/stat; id; umask";

/// A PID 1 forked from the zygote starts exactly as an executed one, and
/// so do the commands run under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_pid1_matches_executed() {
    if !require_root("forked_pid1_matches_executed") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    set_launcher(Launcher::Exec);
    let executed = sandbox().await;
    let executed_command = stdout(&sh(&executed, COMMAND_STATE).await);
    set_launcher(Launcher::Zygote);
    let _warm = sandbox().await;
    let forked = sandbox().await;
    let forked_command = stdout(&sh(&forked, COMMAND_STATE).await);
    assert!(
        zygote_pid().is_some(),
        "the second sandbox should come from a zygote"
    );
    assert_eq!(
        host_comm(forked.pid()).as_deref(),
        Some("soulbox-init"),
        "forked PID 1's name"
    );

    let executed_state = start_state(executed.pid());
    let forked_state = start_state(forked.pid());
    let differences: Vec<_> = executed_state
        .iter()
        .zip(&forked_state)
        .filter(|(executed, forked)| executed != forked)
        .collect();
    assert!(
        differences.is_empty(),
        "PID 1's state differs (executed, forked): {differences:#?}"
    );
    assert_eq!(executed_state.len(), forked_state.len(), "{forked_state:?}");
    assert_eq!(
        executed_command, forked_command,
        "a command's start state differs"
    );
    let _ = executed.kill().await;
    let _ = forked.kill().await;
}

/// What [`lose_zygote_after_fork`] saw of the PID 1 that the zygote forked
/// before it was killed.
struct Orphan {
    pid: i32,
    /// What the orphan's descriptors pointed at just before the zygote was
    /// killed.
    fd_targets: Vec<String>,
}

/// Traces `zygote` from a forked helper process until the zygote forks a
/// PID 1, lets that child run for `head_start` while the zygote stays
/// stopped before its reply, then kills the zygote. Sends `None` once the
/// zygote is traced, then the orphan.
///
/// The tracer is another process because a tracer thread of this process
/// would share its wait queue: the thread that waits for the zygote's exit
/// would take the zygote's ptrace stops as its end.
fn lose_zygote_after_fork(
    zygote: i32,
    head_start: Duration,
    report: std::sync::mpsc::Sender<Option<Orphan>>,
) {
    let mut to_test = [0; 2];
    let mut to_helper = [0; 2];
    // SAFETY: pipe writes two descriptors into each array.
    unsafe {
        assert_eq!(libc::pipe2(to_test.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(libc::pipe2(to_helper.as_mut_ptr(), libc::O_CLOEXEC), 0);
    }

    // SAFETY: the child makes only async-signal-safe system calls (ptrace,
    // waitpid, read, write, kill) and ends with _exit.
    let helper = unsafe { libc::fork() };
    assert!(helper >= 0, "fork the tracer");
    if helper == 0 {
        trace_zygote(zygote, to_test[1], to_helper[0]);
    }
    // SAFETY: close takes the descriptors this process no longer uses.
    unsafe {
        libc::close(to_test[1]);
        libc::close(to_helper[0]);
    }

    let read_pid = || {
        let mut pid = 0i32;
        // SAFETY: read writes at most four bytes into `pid`.
        let len = unsafe { libc::read(to_test[0], (&mut pid as *mut i32).cast(), 4) };
        (len == 4).then_some(pid)
    };
    assert_eq!(read_pid(), Some(0), "the tracer failed to seize the zygote");
    report.send(None).expect("the test waits for the report");
    let child = read_pid().expect("the tracer saw no fork");

    std::thread::sleep(head_start);
    let fd_targets = fd_targets(child)
        .into_iter()
        .map(|(_, target)| target)
        .collect();

    // SAFETY: write reads one byte; waitpid writes a status.
    let status = unsafe {
        libc::write(to_helper[1], b"k".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(helper, &mut status, 0);
        libc::close(to_test[0]);
        libc::close(to_helper[1]);
        status
    };
    assert_eq!(status, 0, "the tracer failed: {status:#x}");
    report
        .send(Some(Orphan {
            pid: child,
            fd_targets,
        }))
        .expect("the test waits for the report");
}

/// Runs the tracer process of [`lose_zygote_after_fork`]: seizes `zygote`,
/// writes 0 to `report`, then the pid of the zygote's first child once the
/// child runs, and kills the zygote when `go` is readable. Runs in a child
/// forked from a threaded process, so it makes only async-signal-safe
/// calls.
fn trace_zygote(zygote: i32, report: i32, go: i32) -> ! {
    // SAFETY: ptrace, waitpid, read, write, kill and _exit take plain
    // integers and pointers to local integers that outlive each call.
    unsafe {
        let send = |pid: i32| {
            if libc::write(report, (&pid as *const i32).cast(), 4) != 4 {
                libc::_exit(2);
            }
        };
        let options =
            libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEVFORK;
        if libc::ptrace(libc::PTRACE_SEIZE, zygote, 0, options) != 0 {
            libc::_exit(3);
        }
        send(0);
        loop {
            let mut status = 0;
            let waited = libc::waitpid(zygote, &mut status, libc::__WALL);
            if waited != zygote || !libc::WIFSTOPPED(status) {
                libc::_exit(4);
            }
            let event = status >> 16;
            if [
                libc::PTRACE_EVENT_FORK,
                libc::PTRACE_EVENT_CLONE,
                libc::PTRACE_EVENT_VFORK,
            ]
            .contains(&event)
            {
                break;
            }
            let signal = if event == 0 {
                libc::WSTOPSIG(status)
            } else {
                0
            };
            libc::ptrace(libc::PTRACE_CONT, zygote, 0, signal);
        }
        let mut child: libc::c_ulong = 0;
        libc::ptrace(libc::PTRACE_GETEVENTMSG, zygote, 0, &mut child);
        let child = child as i32;
        // The child starts traced and stopped; release it.
        let mut status = 0;
        if libc::waitpid(child, &mut status, libc::__WALL) != child {
            libc::_exit(5);
        }
        libc::ptrace(libc::PTRACE_DETACH, child, 0, 0);
        send(child);
        let mut byte = 0u8;
        libc::read(go, (&mut byte as *mut u8).cast(), 1);
        libc::kill(zygote, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Kills the zygote between its clone and its reply, `head_start` after
/// the PID 1 it forked started to run. Checks that the create succeeds and
/// that nothing is left of the orphan once the sandbox is gone, and returns
/// whether the orphan had read the queued configuration.
async fn lose_zygote_during_create(head_start: Duration) -> bool {
    drop(sandbox().await);
    let zygote = zygote_pid().expect("a zygote runs after a create");
    let (sender, receiver) = std::sync::mpsc::channel();
    let tracer = std::thread::spawn(move || lose_zygote_after_fork(zygote, head_start, sender));
    assert!(receiver.recv().expect("the tracer started").is_none());

    let sandbox = sandbox().await;
    let orphan = receiver
        .recv()
        .expect("the tracer reports the orphan")
        .expect("an orphan");
    tracer.join().expect("the tracer panicked");
    assert_ne!(orphan.pid, sandbox.pid(), "the create used the orphan");
    assert_eq!(stdout(&sh(&sandbox, "echo hi").await), "hi\n");
    let id = sandbox.id().to_string();
    // The state entry's lock file comes with the configuration.
    let read_configuration = orphan
        .fd_targets
        .iter()
        .any(|target| target.ends_with(&format!("{id}.lock")));
    sandbox.kill().await.expect("kill");
    drop(sandbox);

    let deadline = Instant::now() + Duration::from_secs(10);
    while host_process_alive(orphan.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = std::fs::read_to_string(format!("/proc/{}/stat", orphan.pid)).unwrap_or_default();
    assert!(
        state.is_empty(),
        "the orphan PID 1 {} is still there: {state}",
        orphan.pid
    );
    assert_eq!(leftover_cgroups(&id), Vec::<std::path::PathBuf>::new());
    read_configuration
}

/// The PID 1 forked before the zygote died reads the queued
/// configuration, with this sandbox's state socket and lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_survives_orphan_with_configuration() {
    if !require_root("create_survives_orphan_with_configuration") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    let read = lose_zygote_during_create(Duration::from_millis(300)).await;
    assert!(read, "the orphan did not read the configuration in 300 ms");
}

/// The zygote dies right after its clone, so the host usually takes the
/// queued configuration back before the orphan reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_survives_orphan_without_configuration() {
    if !require_root("create_survives_orphan_without_configuration") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    for _ in 0..5 {
        lose_zygote_during_create(Duration::ZERO).await;
    }
}

/// Returns whether network namespace file `net` (such as
/// /proc/PID/net/tcp) lists a listening socket on port 7777.
fn listens_on_probe_port(net: &str) -> bool {
    std::fs::read_to_string(net)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is hex "ADDR:PORT" and state 0A is LISTEN.
            fields.get(1).is_some_and(|local| local.ends_with(":1E61"))
                && fields.get(3) == Some(&"0A")
        })
}

/// A server in one sandbox, on TCP port 7777 and an abstract Unix socket,
/// is out of reach of the sandboxes the zygote forks next and of the
/// namespace it prepares for the one after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_server_unreachable_from_next() {
    if !require_root("sandbox_server_unreachable_from_next") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    let server = sandbox().await;
    let serving = server.clone();
    let serve = tokio::spawn(async move {
        serving
            .run(
                "python3 -c '
import socket, time
tcp = socket.socket()
tcp.bind((\"127.0.0.1\", 7777))
tcp.listen(8)
unix = socket.socket(socket.AF_UNIX)
unix.bind(\"\\0soulbox-launch-probe\")
unix.listen(8)
time.sleep(30)
'",
            )
            .await
    });
    // The server binds its abstract socket after its TCP listen, so the
    // loop waits for both.
    let server_tcp_path = format!("/proc/{}/net/tcp", server.pid());
    let server_unix_path = format!("/proc/{}/net/unix", server.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let unix_sockets =
            std::fs::read_to_string(&server_unix_path).expect("read the server's unix sockets");
        if listens_on_probe_port(&server_tcp_path) && unix_sockets.contains("@soulbox-launch-probe")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not listen on both sockets within 10 s: {unix_sockets}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let zygote = zygote_pid().expect("a zygote runs after a create");
    for _ in 0..3 {
        let next = sandbox().await;
        let pid = next.pid();
        assert!(
            !listens_on_probe_port(&format!("/proc/{pid}/net/tcp")),
            "sandbox {} sees the server's TCP socket",
            next.id()
        );
        let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
        assert!(
            !unix.contains("soulbox-launch-probe"),
            "sandbox {} sees the server's abstract socket: {unix}",
            next.id()
        );
        let probe = sh(
            &next,
            "python3 -c '
import socket
for family, address in ((socket.AF_INET, (\"127.0.0.1\", 7777)),
                        (socket.AF_UNIX, \"\\0soulbox-launch-probe\")):
    client = socket.socket(family)
    client.settimeout(2)
    try:
        client.connect(address)
    except OSError as e:
        print(\"failed\", e.errno)
    else:
        print(\"connected\")
own = socket.socket()
own.bind((\"127.0.0.1\", 7777))
print(\"bound\")
'",
        )
        .await;
        assert_eq!(
            stdout(&probe),
            format!(
                "failed {}\nfailed {}\nbound\n",
                libc::ECONNREFUSED,
                libc::ECONNREFUSED
            ),
            "sandbox {} reached the server or could not use its loopback: {probe:?}",
            next.id()
        );
        let spare_tcp = format!("/proc/{zygote}/net/tcp");
        assert!(
            !listens_on_probe_port(&spare_tcp),
            "the zygote's spare namespace has the server's socket"
        );
    }
    let _ = server.kill().await;
    let _ = serve.await;
}

/// A zygote stopped with SIGSTOP before a request never replies: the
/// create falls back to an exec after the reply timeout, the stopped
/// zygote is killed and reaped, and the next create starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_survives_stopped_zygote() {
    if !require_root("create_survives_stopped_zygote") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    drop(sandbox().await);
    let stopped = zygote_pid().expect("a zygote runs after a create");
    // SAFETY: kill takes plain integers; the zygote is this process's
    // child, reaped only by its own thread.
    assert_eq!(unsafe { libc::kill(stopped, libc::SIGSTOP) }, 0);

    let fallback = sandbox().await;
    assert_eq!(stdout(&sh(&fallback, "echo fallback").await), "fallback\n");
    assert_eq!(
        std::fs::read(format!("/proc/{}/cmdline", fallback.pid())).unwrap(),
        b"soulbox-init\0",
        "the create after the lost zygote should show PID 1's name only"
    );
    assert!(
        was_executed(fallback.pid()),
        "the create after the lost zygote should execute PID 1"
    );
    wait_until_reaped(stopped);
    let next = sandbox().await;
    assert_eq!(stdout(&sh(&next, "echo next").await), "next\n");
    let restarted = zygote_pid().expect("a new zygote runs after the next create");
    assert_ne!(restarted, stopped);
    assert_eq!(zygote_children(), vec![restarted]);

    let children: Vec<i32> = children_of_this_process()
        .into_iter()
        .filter(|&pid| ![restarted, fallback.pid(), next.pid()].contains(&pid))
        .collect();
    assert!(children.is_empty(), "children left: {children:?}");
}

/// Sandboxed code may read /proc/1/cmdline: a PID 1 forked from the zygote
/// shows the name an executed one shows, not the zygote's `--zygote`. It
/// relies on PR_SET_MM_MAP, which needs a kernel built with
/// CONFIG_CHECKPOINT_RESTORE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_pid1_cmdline_matches_executed() {
    if !require_root("forked_pid1_cmdline_matches_executed") {
        return;
    }
    let _turn = LAUNCHER.lock().await;
    drop(sandbox().await);
    let forked = sandbox().await;
    assert!(
        zygote_pid().is_some(),
        "the second create should fork PID 1 from the zygote"
    );
    let inside = sh(&forked, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert_eq!(stdout(&inside), "soulbox-init ");
    // The argument range now ends before the zygote's own arguments.
    assert!(
        !was_executed(forked.pid()),
        "PID 1's arguments end where an executed one's would"
    );
    let _ = forked.kill().await;
}
