//! Times create + run + destroy through the Rust API, in-process.
//!
//! Usage: `soulbox-bench-api --task true|py --iterations N [--no-limits]
//! [--no-seccomp]`
//!
//! `--no-limits` turns off the default memory and pids limits, to measure
//! what joining their cgroups costs. `--no-seccomp` creates sandboxes with
//! `SeccompPolicy::unconfined()`, to measure what the filter costs; never
//! run untrusted code that way.
//!
//! Prints one line per iteration: the wall time in nanoseconds of
//! `Sandbox::create`, running the task's command to completion, and
//! `Sandbox::kill`. `benches/compare.sh` pools these lines with the peer
//! runtimes' hyperfine results.

use std::process::ExitCode;
use std::time::Instant;

use soulbox_core::{Sandbox, SandboxOptions, SeccompPolicy};

fn usage(message: &str) -> ExitCode {
    eprintln!("soulbox-bench-api: {message}");
    eprintln!(
        "usage: soulbox-bench-api --task true|py --iterations N [--no-limits] [--no-seccomp]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut task = None;
    let mut iterations = None;
    let mut options = SandboxOptions::default();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-limits" {
            options.memory_limit = None;
            options.pids_limit = None;
            continue;
        }
        if flag == "--no-seccomp" {
            options.seccomp = SeccompPolicy::unconfined();
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
    let argv: &[&str] = match task.as_deref() {
        Some("true") => &["/bin/true"],
        Some("py") => &["/usr/bin/python3", "-c", "print(1)"],
        Some(other) => return usage(&format!("unknown task {other:?}")),
        None => return usage("--task is required"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        for _ in 0..iterations {
            let start = Instant::now();
            let sandbox = match Sandbox::create(options.clone()).await {
                Ok(sandbox) => sandbox,
                Err(e) => return usage(&format!("create failed: {e}")),
            };
            let output = sandbox.command(argv[0]).args(&argv[1..]).output().await;
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
