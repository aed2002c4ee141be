//! Times create + run + destroy through the Rust API, in-process.
//!
//! Usage: `soulbox-bench-api --task true|py --iterations N [--no-limits] [--shell]`
//!
//! `--no-limits` turns off the default memory and pids limits, to measure
//! what joining their cgroups costs. `--shell` runs the task's command line
//! through the sandbox's shell (`/bin/bash -l -c`), as E2B's
//! `commands.run` and the Python and Node bindings do, instead of executing
//! the program directly.
//!
//! Prints one line per iteration: the wall time in nanoseconds of
//! `Sandbox::create`, running the task's command to completion, and
//! `Sandbox::kill`. `benches/compare.sh` pools these lines with the peer
//! runtimes' hyperfine results.

use std::process::ExitCode;
use std::time::Instant;

use soulbox_core::{Sandbox, SandboxOptions};

fn usage(message: &str) -> ExitCode {
    eprintln!("soulbox-bench-api: {message}");
    eprintln!("usage: soulbox-bench-api --task true|py --iterations N [--no-limits] [--shell]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut task = None;
    let mut iterations = None;
    let mut options = SandboxOptions::default();
    let mut shell = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-limits" {
            options.memory_limit = None;
            options.pids_limit = None;
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
    // the shell.
    let (argv, command_line): (&[&str], &str) = match task.as_deref() {
        Some("true") => (&["/bin/true"], "/bin/true"),
        Some("py") => (
            &["/usr/bin/python3", "-c", "print(1)"],
            "/usr/bin/python3 -c 'print(1)'",
        ),
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
