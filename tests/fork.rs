//! Sandboxes created in a child that a host process forked after it had
//! created sandboxes itself. The child inherits SoulBox's process-wide
//! state (zygote, reaper) but none of its threads.
//!
//! One test per binary: the fork must not happen while another test's
//! thread holds a lock that the child would then wait on forever.

use std::io::Write;
use std::time::{Duration, Instant};

use soulbox_core::diagnostics::zygote_pid;
use soulbox_core::{Sandbox, SandboxOptions};
use soulbox_tests::*;

/// This process's open descriptors and what each refers to.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{}->{}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    fds
}

/// This process's children other than `except`, with their state letter.
fn children_except(except: Option<i32>) -> Vec<(i32, char)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| Some(pid) != except && host_ppid(pid) == Some(me))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim().chars().next()?;
            Some((pid, state))
        })
        .collect()
}

/// CPU time, in clock ticks, of this process's threads named `name`.
fn thread_ticks(name: &str) -> u64 {
    std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            if !head.ends_with(name) {
                return None;
            }
            // proc(5): utime and stime are fields 14 and 15; `rest` starts
            // at field 3.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Creates twenty sandboxes, kills ten and leaves ten to their timeout,
/// then returns what they left behind: descriptors or zombies.
async fn create_and_end_in_child() -> Vec<String> {
    // The first create restarts the zygote; its descriptors stay.
    Sandbox::create(options())
        .await
        .expect("create in the child")
        .kill()
        .await
        .expect("kill in the child");
    let before = open_fds();
    for i in 0..20 {
        let options = SandboxOptions::default().timeout(Duration::from_secs(2));
        let sandbox = Sandbox::create(options).await.expect("create in the child");
        assert_eq!(stdout(&sh(&sandbox, "echo x").await), "x\n");
        if i % 2 == 0 {
            sandbox.kill().await.expect("kill in the child");
        }
        // The others end at their 2 s timeout, and the reaper reaps them.
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fds = open_fds();
        let children = children_except(zygote_pid());
        if fds.len() <= before.len() && children.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline {
            return vec![format!(
                "open descriptors went from {before:?} to {fds:?}; children left: {children:?}"
            )];
        }
        // An async sleep, so that the runtime finishes the tasks that still
        // hold a command's pipes.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn forked_child_reaps_its_own_sandboxes() {
    if !require_root("forked_child_reaps_its_own_sandboxes") {
        return;
    }
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a runtime")
    };
    // Starts the zygote and the reaper thread in this process.
    runtime().block_on(async {
        let sandbox = sandbox().await;
        sandbox.kill().await.expect("kill in the parent");
    });
    let reaper_ticks = thread_ticks("soulbox-reaper");

    // SAFETY: this test binary runs only this test, and this thread holds
    // no lock, so the child's copy of every lock is free.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        let problems = std::panic::catch_unwind(|| runtime().block_on(create_and_end_in_child()))
            .unwrap_or_else(|_| vec!["the child panicked".to_string()]);
        // Straight to stderr: the test harness's capture of eprintln! is
        // lost with the child.
        for problem in &problems {
            let _ = writeln!(std::io::stderr(), "child: {problem}");
        }
        // SAFETY: ends the forked child without running the parent's
        // exit handlers twice.
        unsafe { libc::_exit(i32::from(!problems.is_empty())) };
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut status = 0;
    loop {
        // SAFETY: `status` is writable; `child` is this process's child.
        let reaped = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if reaped == child {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: `child` is unreaped, so its pid is still ours.
            unsafe { libc::kill(child, libc::SIGKILL) };
            panic!("the forked child did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The child shares the parent's epoll instance; its pidfds must not
    // wake, and spin, this process's reaper thread. 100 ticks is 1 s of CPU at the usual
    // USER_HZ of 100.
    let spun = thread_ticks("soulbox-reaper") - reaper_ticks;
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child left descriptors or zombies (status {status:#x}, see its stderr)"
    );
    assert!(
        spun < 100,
        "this process's reaper thread used {spun} clock ticks while the child ran"
    );
}
