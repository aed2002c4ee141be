//! Times SoulBox's Rust API, in-process.
//!
//! Usage: `soulbox-bench-api --task TASK --iterations N [--no-limits]
//! [--no-seccomp] [--shell] [--on-request] [--multi-thread]`
//!
//! Tasks, each printing one line per iteration with its wall time in
//! nanoseconds:
//! - `true`, `py`: `Sandbox::create`, running `/bin/true` (or
//!   `python3 -c 'print(1)'`) to completion, and `Sandbox::kill`.
//!   `benches/compare.sh` pools these lines with the peer runtimes'
//!   hyperfine results.
//! - `shell-true`: as `true`, but the command line `true` runs through
//!   `/bin/bash -l -c`, as `Sandbox::run` and E2B's `commands.run` do;
//!   `benches/python_create.py` compares it with the Python package.
//! - `connect`: `Sandbox::connect` to a sandbox created once beforehand,
//!   running `/bin/true`, and dropping the handle.
//! - `pause-resume`: `Sandbox::pause` then `Sandbox::resume` of a sandbox
//!   created once beforehand.
//!
//! `--no-limits` turns off the default memory and pids limits, to measure
//! what joining their cgroups costs. `--no-seccomp` creates sandboxes with
//! `SeccompPolicy::unconfined()`, to measure what the filter costs; never
//! run untrusted code that way. `--shell` runs the `true` and `py`
//! tasks' command line through the sandbox's shell (`/bin/bash -l -c`), as
//! E2B's `commands.run` and the Node binding do, instead of executing the
//! program directly. `--on-request` waits for a line on stdin before each iteration of `true`,
//! `py` and `shell-true`, so another program can interleave its own
//! iterations with these one by one. `--multi-thread` runs the tasks on
//! tokio's multi-thread runtime, as the Python and Node bindings do, in place
//! of a current-thread runtime.

use std::process::ExitCode;
use std::time::Instant;

use soulbox_core::{Sandbox, SandboxOptions, SeccompPolicy};

fn usage(message: &str) -> ExitCode {
    eprintln!("soulbox-bench-api: {message}");
    eprintln!(
        "usage: soulbox-bench-api --task true|py|shell-true|connect|pause-resume \
         --iterations N [--no-limits] [--no-seccomp] [--shell] [--on-request] [--multi-thread]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut task = None;
    let mut iterations = None;
    let mut options = SandboxOptions::default();
    let mut shell = false;
    let mut on_request = false;
    let mut multi_thread = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--on-request" {
            on_request = true;
            continue;
        }
        if flag == "--multi-thread" {
            multi_thread = true;
            continue;
        }
        if flag == "--no-limits" {
            options.memory_limit = None;
            options.pids_limit = None;
            continue;
        }
        if flag == "--no-seccomp" {
            options.seccomp = SeccompPolicy::unconfined();
            continue;
        }
        if flag == "--shell" {
            shell = true;
            continue;
        }
        match (flag.as_str(), rest.next()) {
            ("--task", Some(value)) => task = Some(value.clone()),
            ("--iterations", Some(value)) => match value.parse::<usize>() {
                Ok(n) if n > 0 => iterations = Some(n),
                _ => return usage(&format!("--iterations {value:?} is not a positive integer")),
            },
            (other, _) => return usage(&format!("unknown or incomplete option {other:?}")),
        }
    }
    let Some(iterations) = iterations else {
        return usage("--iterations is required");
    };
    // Each task as an argument vector and as the same command line for
    // `--shell`.
    let (argv, command_line): (&[&str], &str) = match task.as_deref() {
        Some("true" | "connect") => (&["/bin/true"], "/bin/true"),
        Some("py") => (
            &["/usr/bin/python3", "-c", "print(1)"],
            "/usr/bin/python3 -c 'print(1)'",
        ),
        Some("shell-true") => {
            shell = true;
            (&["true"], "true")
        }
        Some("pause-resume") => (&[], ""),
        Some(other) => return usage(&format!("unknown task {other:?}")),
        None => return usage("--task is required"),
    };
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return usage(&format!("cannot start the async runtime: {e}")),
    };
    match task.as_deref() {
        Some("connect") => return runtime.block_on(time_connect(options, iterations)),
        Some("pause-resume") => return runtime.block_on(time_pause_resume(options, iterations)),
        _ => {}
    }
    runtime.block_on(async {
        let mut requests = std::io::stdin().lines();
        for _ in 0..iterations {
            if on_request && !matches!(requests.next(), Some(Ok(_))) {
                return usage("stdin closed before all iterations were requested");
            }
            let start = Instant::now();
            let sandbox = match Sandbox::create(options.clone()).await {
                Ok(sandbox) => sandbox,
                Err(e) => return usage(&format!("create failed: {e}")),
            };
            let output = if shell {
                sandbox.shell(command_line).output().await
            } else {
                sandbox.command(argv[0]).args(&argv[1..]).output().await
            };
            let killed = sandbox.kill().await;
            let elapsed = start.elapsed();
            match (output, killed) {
                (Ok(output), Ok(())) if output.status.success() => {
                    println!("{}", elapsed.as_nanos());
                }
                (Ok(output), Ok(())) => return usage(&format!("task failed: {:?}", output.status)),
                (Err(e), _) | (_, Err(e)) => return usage(&format!("task failed: {e}")),
            }
        }
        ExitCode::SUCCESS
    })
}

/// Times connect + `/bin/true` + drop against one long-lived sandbox.
async fn time_connect(options: SandboxOptions, iterations: usize) -> ExitCode {
    let sandbox = match Sandbox::create(options.kill_on_drop(true)).await {
        Ok(sandbox) => sandbox,
        Err(e) => return usage(&format!("create failed: {e}")),
    };
    for _ in 0..iterations {
        let start = Instant::now();
        let connected = match Sandbox::connect(sandbox.id()).await {
            Ok(connected) => connected,
            Err(e) => return usage(&format!("connect failed: {e}")),
        };
        match connected.command("/bin/true").output().await {
            Ok(output) if output.status.success() => {}
            Ok(output) => return usage(&format!("task failed: {:?}", output.status)),
            Err(e) => return usage(&format!("task failed: {e}")),
        }
        drop(connected);
        println!("{}", start.elapsed().as_nanos());
    }
    ExitCode::SUCCESS
}

/// Times pause + resume of one sandbox.
async fn time_pause_resume(options: SandboxOptions, iterations: usize) -> ExitCode {
    let sandbox = match Sandbox::create(options.kill_on_drop(true)).await {
        Ok(sandbox) => sandbox,
        Err(e) => return usage(&format!("create failed: {e}")),
    };
    for _ in 0..iterations {
        let start = Instant::now();
        let paused = sandbox.pause().await;
        let resumed = sandbox.resume().await;
        match (paused, resumed) {
            (Ok(true), Ok(true)) => println!("{}", start.elapsed().as_nanos()),
            other => return usage(&format!("pause or resume failed: {other:?}")),
        }
    }
    ExitCode::SUCCESS
}
