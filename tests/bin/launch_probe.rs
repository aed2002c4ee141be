//! Creates two sandboxes through the Rust API with the default launcher
//! and prints what `tests/launch.rs` checks, one `NAME VALUE` line each.
//! Per sandbox: `uid` (`id -u` inside), `uid_map` (its first line, fields
//! joined by commas) and `parent_is_me` (whether PID 1 is this process's
//! child). Then `zygotes` (this process's children named soulbox-zygote)
//! and `zygote_pid` (from `diagnostics::zygote_pid`, or `none`). The
//! launch tests run it as an unprivileged user to check rootless mode.

use std::process::ExitCode;

use soulbox_core::{Sandbox, SandboxOptions};
use soulbox_tests::{host_children_named, host_ppid};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start a tokio runtime");
    match runtime.block_on(probe()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("soulbox-launch-probe: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn probe() -> Result<(), String> {
    let mut sandboxes = Vec::new();
    for _ in 0..2 {
        let options = SandboxOptions::default().kill_on_drop(true);
        let sandbox = Sandbox::create(options)
            .await
            .map_err(|e| format!("create a sandbox: {e}"))?;
        let output = sandbox
            .run("id -u; head -n 1 /proc/self/uid_map")
            .await
            .map_err(|e| format!("run id in the sandbox: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines = text.lines();
        println!("uid {}", lines.next().unwrap_or("missing"));
        let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        println!("uid_map {}", map.join(","));
        let parent_is_me = host_ppid(sandbox.pid()) == Some(std::process::id());
        println!("parent_is_me {parent_is_me}");
        sandboxes.push(sandbox);
    }
    println!("zygotes {}", host_children_named("soulbox-zygote").len());
    match soulbox_core::diagnostics::zygote_pid() {
        Some(pid) => println!("zygote_pid {pid}"),
        None => println!("zygote_pid none"),
    }
    for sandbox in sandboxes {
        sandbox
            .kill()
            .await
            .map_err(|e| format!("kill a sandbox: {e}"))?;
    }
    Ok(())
}
