//! Resource limits: memory (with the out-of-memory kill reported), pids,
//! CPU, the writable layer's inodes, and rlimits.

use std::time::Duration;

use soulbox_core::{CommandSpec, Error, ExitStatus, Output, Sandbox, SandboxOptions};
use soulbox_tests::*;

async fn sandbox_with(options: SandboxOptions) -> Sandbox {
    Sandbox::create(options)
        .await
        .expect("create a sandbox with limits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_exhaustion_reported_as_oom() {
    if !require_root("memory_exhaustion_reported_as_oom") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.memory_limit = Some(256 << 20);
    let sandbox = sandbox_with(options).await;
    let hog = "python3 -c 'b = bytearray(64 << 30); print(len(b))'";
    let output = sandbox
        .shell(hog)
        .timeout(Some(Duration::from_secs(30)))
        .output()
        .await
        .expect("run the allocation");
    assert!(
        !output.timed_out,
        "the allocation should end quickly, not at the timeout"
    );
    assert!(
        !output.status.success(),
        "a 64 GiB allocation under 256 MiB must fail"
    );
    // Python either gets MemoryError (exit 1) or the kernel's OOM killer
    // ends it; only the latter is an out-of-memory kill.
    if output.status == ExitStatus::Signal(libc::SIGKILL) {
        assert!(
            output.oom_killed,
            "a SIGKILL under memory pressure should be reported as OOM"
        );
    }

    let touch =
        "python3 -c 'import mmap; m = mmap.mmap(-1, 1 << 30); m[::4096] = b\"x\" * (1 << 18)'";
    let output = sandbox
        .shell(touch)
        .output()
        .await
        .expect("run the page toucher");
    assert_eq!(
        output.status,
        ExitStatus::Signal(9),
        "touching 1 GiB under 256 MiB is OOM-killed"
    );
    assert!(
        output.oom_killed,
        "the OOM kill should be reported on the result"
    );
    let error = output
        .check()
        .expect_err("check() should turn the OOM kill into an error");
    assert!(
        matches!(
            error,
            Error::CommandExit {
                oom_killed: true,
                ..
            }
        ),
        "check() should report out of memory: {error}"
    );

    let alive = sh(&sandbox, "echo alive").await;
    assert_eq!(
        stdout(&alive),
        "alive\n",
        "the sandbox keeps working after an OOM kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_contained() {
    if !require_root("fork_bomb_contained") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.pids_limit = Some(64);
    let bombed = sandbox_with(options).await;
    let bystander = sandbox().await;
    let bomb = bombed
        .shell(":(){ :|:& };:")
        .start()
        .await
        .expect("start the fork bomb");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = sh(&bystander, "sh -c 'echo from-child'").await;
    assert_eq!(
        stdout(&other),
        "from-child\n",
        "another sandbox must still fork"
    );
    let host = std::process::Command::new("/bin/true")
        .status()
        .expect("fork on the host");
    assert!(host.success(), "the host must still fork");

    let pids = bombed.cgroup_paths();
    bomb.kill().await.expect("kill the fork bomb's tree");
    bombed.kill().await.expect("kill the bombed sandbox");
    for dir in pids {
        assert!(
            !dir.exists(),
            "cgroup {} should be gone after kill",
            dir.display()
        );
    }
    let init = bombed.pid();
    assert!(
        !host_process_alive(init),
        "PID 1 ({init}) should be gone after kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_fails_fork_inside() {
    if !require_root("pids_limit_fails_fork_inside") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.pids_limit = Some(16);
    let sandbox = sandbox_with(options).await;
    // Python forks sleeping children until fork fails, then reports how
    // many it made and the error; printing needs no further fork.
    let script = "import os, time\n\
                  made = 0\n\
                  while made < 40:\n\
                  \x20   try:\n\
                  \x20       pid = os.fork()\n\
                  \x20   except OSError as e:\n\
                  \x20       print(made, e.errno)\n\
                  \x20       break\n\
                  \x20   if pid == 0:\n\
                  \x20       time.sleep(5)\n\
                  \x20       os._exit(0)\n\
                  \x20   made += 1\n\
                  else:\n\
                  \x20   print(made, 0)\n";
    let output = sandbox
        .command("python3")
        .args(["-c", script])
        .output()
        .await
        .expect("run python3");
    let text = stdout(&output);
    let mut fields = text.split_whitespace();
    let count: usize = fields
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected a fork count: {output:?}"));
    let errno: i32 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(-1);
    assert_eq!(
        errno,
        libc::EAGAIN,
        "fork should fail with EAGAIN at the limit: {text}"
    );
    assert!(
        count < 16,
        "fewer than 16 forks fit under pids_limit 16, made {count}"
    );
    assert!(
        count >= 8,
        "most of the 16 pids should be usable, made {count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_at_pids_limit_names_it() {
    if !require_root("command_at_pids_limit_names_it") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.pids_limit = Some(8);
    let sandbox = sandbox_with(options).await;

    // The shell starts sleepers until fork fails, which fills the limit.
    let _filler = sandbox
        .shell("while sleep 30 & do :; done 2>/dev/null; wait")
        .start()
        .await
        .expect("start the filler");

    let mut failure = None;
    for _ in 0..200 {
        match sandbox.command("/bin/true").output().await {
            Err(error) => {
                failure = Some(error);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let error = failure.expect("every command started although the sandbox was at its limit");

    let message = error.to_string();
    assert!(
        matches!(error, Error::Spawn { .. }),
        "expected a Spawn error, got {message}"
    );
    assert!(
        message.contains("process limit"),
        "the error does not say the sandbox is at its limit: {message}"
    );
    assert!(
        message.contains("pids_limit"),
        "the error does not name pids_limit: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_throttles() {
    if !require_root("cpu_limit_throttles") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.cpu_limit = Some(0.2);
    let sandbox = sandbox_with(options).await;
    // Spin for 2 s of wall time, then print the CPU seconds used.
    let spin = "python3 -c 'import time, os\n\
                end = time.time() + 2\n\
                while time.time() < end: pass\n\
                print(os.times().user + os.times().system)'";
    let output = sh(&sandbox, spin).await;
    let used: f64 = stdout(&output).trim().parse().expect("CPU seconds");
    assert!(
        used < 0.8,
        "0.2 cores for 2 s allow about 0.4 s of CPU, used {used:.2} s"
    );
    assert!(
        used > 0.05,
        "the spin should have run at all, used {used:.2} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inode_limit_gives_enospc() {
    if !require_root("inode_limit_gives_enospc") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.disk_inodes = 2048;
    let sandbox = sandbox_with(options).await;
    let line = "mkdir -p /home/user/many && cd /home/user/many && \
                for i in $(seq 4000); do : > f$i || { echo failed-at $i; break; }; done 2>&1 | tail -2";
    let text = stdout(&sh(&sandbox, line).await);
    assert!(
        text.contains("No space left on device"),
        "expected ENOSPC: {text}"
    );
    assert!(
        text.contains("failed-at"),
        "creation should stop below 4000 files: {text}"
    );
    let alive = sh(
        &sandbox,
        "rm -rf /home/user/many && echo ok > /home/user/x && cat /home/user/x",
    )
    .await;
    assert_eq!(
        stdout(&alive),
        "ok\n",
        "the sandbox works again once files are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rlimits_applied() {
    if !require_root("rlimits_applied") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.open_files_limit = 256;
    options.file_size_limit = Some(1 << 20);
    let sandbox = sandbox_with(options).await;
    let limits = stdout(&sh(&sandbox, "ulimit -n; ulimit -c").await);
    assert_eq!(limits, "256\n0\n", "open files 256 and no core dumps");
    let big = sh(
        &sandbox,
        "head -c 2000000 /dev/zero > /tmp/big; echo $?; stat -c %s /tmp/big",
    )
    .await;
    let text = stdout(&big);
    let mut lines = text.lines();
    assert_ne!(
        lines.next(),
        Some("0"),
        "writing past the file size limit must fail: {text}"
    );
    assert_eq!(
        lines.next(),
        Some("1048576"),
        "the file stops at the 1 MiB limit: {text}"
    );
}

/// Queues real-time signals to itself as uid 54321, which nothing else on
/// the host uses, until the kernel refuses one, and prints how many it
/// queued and its RLIMIT_SIGPENDING and RLIMIT_MSGQUEUE.
const QUEUE_SIGNALS: &str = r#"
import ctypes, os, resource, signal
libc = ctypes.CDLL(None, use_errno=True)
os.setresgid(54321, 54321, 54321)
os.setresuid(54321, 54321, 54321)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
queued = 0
while queued < 200000 and libc.sigqueue(os.getpid(), signal.SIGRTMIN, 0) == 0:
    queued += 1
print(queued, resource.getrlimit(resource.RLIMIT_SIGPENDING)[1],
      resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1])
"#;

/// Queued signals and message queue bytes are counted per user across the
/// host, so a sandbox gets capped limits and cannot take what the host's
/// processes of the same user need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_kernel_counts_capped() {
    if !require_root("per_user_kernel_counts_capped") {
        return;
    }
    let sandbox = sandbox_with(soulbox_tests::options()).await;
    let output = sandbox
        .command("python3")
        .args(["-c", QUEUE_SIGNALS])
        .user("root")
        .output()
        .await
        .expect("run the signal queue");
    let text = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    let numbers: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert_eq!(numbers.len(), 3, "{text}");
    let (queued, sigpending, msgqueue) = (numbers[0], numbers[1], numbers[2]);
    assert!(sigpending <= 4096, "RLIMIT_SIGPENDING {sigpending}");
    assert!(msgqueue <= 409_600, "RLIMIT_MSGQUEUE {msgqueue}");
    assert!(
        queued > 0 && queued <= sigpending,
        "{queued} signals queued under a limit of {sigpending}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_limits_rejected() {
    if !require_root("invalid_limits_rejected") {
        return;
    }
    let with = |change: fn(&mut SandboxOptions)| {
        let mut options = soulbox_tests::options();
        change(&mut options);
        options
    };
    let cases: Vec<(&str, SandboxOptions)> = vec![
        ("memory_limit", with(|o| o.memory_limit = Some(1024))),
        ("pids_limit", with(|o| o.pids_limit = Some(1))),
        ("cpu_limit", with(|o| o.cpu_limit = Some(0.0))),
        ("disk_inodes", with(|o| o.disk_inodes = 10)),
        ("open_files_limit", with(|o| o.open_files_limit = 1)),
    ];
    for (name, options) in cases {
        match Sandbox::create(options).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(
                    message.contains(name),
                    "the message should name {name}: {message}"
                )
            }
            other => panic!("{name}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_limits_reported() {
    if !require_root("enforced_limits_reported") {
        return;
    }
    let sandbox = sandbox().await;
    let enforced = sandbox.enforced_limits();
    assert_eq!(
        enforced.memory,
        Some(soulbox_core::DEFAULT_MEMORY_LIMIT),
        "memory limit in force"
    );
    assert_eq!(
        enforced.pids,
        Some(soulbox_core::DEFAULT_PIDS_LIMIT),
        "pids limit in force"
    );
    assert_eq!(enforced.cpu_millicores, None, "no CPU limit by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_joins_every_limit_cgroup() {
    if !require_root("every_process_joins_every_limit_cgroup") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.memory_limit = Some(256 << 20);
    options.pids_limit = Some(64);
    options.cpu_limit = Some(0.5);
    let sandbox = sandbox_with(options).await;
    let dirs = sandbox.cgroup_paths();
    assert!(!dirs.is_empty(), "a sandbox with limits has cgroups");

    let sleep = sandbox
        .shell("sleep 30")
        .start()
        .await
        .expect("start sleep");
    let members = |dir: &std::path::Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_else(|e| panic!("read {}/cgroup.procs: {e}", dir.display()))
            .lines()
            .map(|line| line.parse().expect("a pid per line"))
            .collect()
    };

    for dir in &dirs {
        let pids = members(dir);
        // PID 1 leaves a v1 memory cgroup to its commands, so that files
        // filling the limit cannot get it killed.
        let v1_memory = dir.starts_with("/sys/fs/cgroup/memory");
        assert_eq!(
            pids.contains(&sandbox.pid()),
            !v1_memory,
            "whether PID 1 ({}) is in {}: {pids:?}",
            sandbox.pid(),
            dir.display()
        );
        // The command's supervisor and `sleep`, and PID 1.
        assert!(
            pids.len() >= if v1_memory { 2 } else { 3 },
            "the command's processes are in {} too: {pids:?}",
            dir.display()
        );
    }
    sleep.kill().await.expect("kill sleep");
}

/// Touches 512 MiB, which a 128 MiB sandbox's out-of-memory killer ends.
const TOUCH_512M: &str =
    "import mmap; m = mmap.mmap(-1, 512 << 20); m[::4096] = b'x' * (128 << 10)";

/// Checks that `output`, of the command `label`, ended with SIGKILL and is
/// reported as an out-of-memory kill exactly when `oom` is set.
fn assert_sigkill(output: &Output, label: &str, oom: bool) {
    assert_eq!(
        output.status,
        ExitStatus::Signal(libc::SIGKILL),
        "{label}: {output:?}"
    );
    assert_eq!(output.oom_killed, oom, "{label}: oom_killed");
}

/// Runs the 512 MiB toucher and a command that SIGKILLs itself in
/// `sandbox`: only the first is an out-of-memory kill.
async fn check_oom_reports(sandbox: &Sandbox, label: &str) {
    let mut touch = sandbox.command("python3");
    touch.args(["-c", TOUCH_512M]);
    let touched = within_limit(label, touch.output())
        .await
        .expect("run the toucher");
    assert_sigkill(&touched, &format!("the toucher {label}"), true);
    let mut kill = sandbox.command("sh");
    kill.args(["-c", "kill -9 $$"]);
    let killed = within_limit(label, kill.output())
        .await
        .expect("run kill -9");
    assert_sigkill(&killed, &format!("kill -9 {label}"), false);
}

/// The out-of-memory report of every command of one sandbox: the first,
/// started with the create, and later ones from the creating handle, after
/// a pause and resume, and from a second handle of `connect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_reported_for_every_command() {
    if !require_root("oom_reported_for_every_command") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.memory_limit = Some(128 << 20);
    let mut spec = CommandSpec::new("python3");
    spec.argv.extend(["-c", TOUCH_512M].map(Into::into));
    let (sandbox, mut first) = within_limit(
        "create_and_start",
        Sandbox::create_and_start(options, &spec),
    )
    .await
    .expect("create a 128 MiB sandbox and start the toucher");
    let output = within_limit("the first toucher", first.wait())
        .await
        .expect("wait for the first toucher");
    assert_sigkill(&output, "the first toucher", true);

    check_oom_reports(&sandbox, "from the creating handle").await;
    assert!(sandbox.pause().await.expect("pause"), "pause");
    assert!(sandbox.resume().await.expect("resume"), "resume");
    check_oom_reports(&sandbox, "after a pause and resume").await;
    let connected = Sandbox::connect(sandbox.id()).await.expect("connect");
    check_oom_reports(&connected, "from a connected handle").await;
    check_oom_reports(&sandbox, "from the creating handle again").await;
}

/// Files in the sandbox's tmpfs mounts count towards its memory limit but
/// belong to no process, so once they fill it the OOM killer chooses by
/// process size. A writer smaller than PID 1, busybox's `cat` here, left
/// PID 1 as the next victim, and the sandbox ended in 3 of 4 tries. PID 1
/// now stays out of the limited memory cgroup (v1) and below its
/// commands' OOM score (v2), so the sandbox survives and the files can be
/// removed from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_filling_memory_leave_pid1_running() {
    if !require_root("files_filling_memory_leave_pid1_running") {
        return;
    }
    for round in 1..=3 {
        let mut options = soulbox_tests::options();
        options.memory_limit = Some(64 << 20);
        let sandbox = sandbox_with(options).await;
        let fill = sandbox
            .command("/usr/bin/busybox")
            .args([
                "sh",
                "-c",
                "exec /usr/bin/busybox cat /dev/zero > /tmp/fill",
            ])
            .output()
            .await
            .expect("run the writer");
        assert!(
            fill.oom_killed,
            "round {round}: the writer should be OOM-killed: {fill:?}"
        );
        // Further commands may be OOM-killed too while the file is there,
        // their supervisors among them, and an error must name the cause.
        for _ in 0..3 {
            if let Err(e) = sandbox.shell("echo busy").output().await {
                assert!(
                    e.to_string().contains("memory limit"),
                    "round {round}: a command's error should name the memory limit: {e}"
                );
            }
        }
        assert!(
            sandbox.is_running(),
            "round {round}: PID 1 was killed, so the sandbox ended"
        );
        sandbox
            .files()
            .remove("/tmp/fill")
            .await
            .expect("remove the file from outside");
        let alive = sh(&sandbox, "echo alive").await;
        assert_eq!(stdout(&alive), "alive\n", "round {round}");
        // Commands in a v1 memory cgroup, which PID 1 leaves where another
        // cgroup keeps it, need no score. Where they share PID 1's cgroup
        // (v2, or a v1 memory cgroup alone), they rank above it.
        let dirs = sandbox.cgroup_paths();
        let v1_memory = dirs.len() > 1
            && dirs
                .iter()
                .any(|dir| dir.starts_with("/sys/fs/cgroup/memory"));
        let adj = sh(&sandbox, "cat /proc/self/oom_score_adj").await;
        let expected = if v1_memory { "0\n" } else { "500\n" };
        assert_eq!(stdout(&adj), expected, "round {round}: commands' OOM score");
        sandbox.kill().await.expect("kill the sandbox");
    }
}

/// With a v1 memory cgroup PID 1 is not in it, so an idle sandbox's memory
/// cgroup has no process. A list removes sandbox cgroups that are empty
/// and over a minute old, and must keep this one: the sandbox's commands
/// join it, and without it they would run without a memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keeps_idle_sandbox_cgroups() {
    if !require_root("list_keeps_idle_sandbox_cgroups") {
        return;
    }
    let mut options = soulbox_tests::options();
    options.memory_limit = Some(256 << 20);
    let sandbox = sandbox_with(options).await;
    let dirs = sandbox.cgroup_paths();
    assert!(!dirs.is_empty(), "a sandbox with limits has cgroups");
    let old = std::time::SystemTime::now() - Duration::from_secs(300);
    for dir in &dirs {
        std::fs::File::open(dir)
            .and_then(|file| file.set_modified(old))
            .unwrap_or_else(|e| panic!("backdate {}: {e}", dir.display()));
    }

    within_limit("list", Sandbox::list(&soulbox_core::ListQuery::default()))
        .await
        .expect("list the sandboxes");
    for dir in &dirs {
        assert!(dir.exists(), "the list removed {}", dir.display());
    }
    let memory = sh(&sandbox, "grep -c memory:/$ /proc/self/cgroup").await;
    assert_eq!(
        stdout(&memory),
        "1\n",
        "a command should be in the sandbox's memory cgroup"
    );
}
