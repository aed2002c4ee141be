//! Creates two sandboxes through the Rust API with the default launcher
//! and prints what `tests/launch.rs` checks, one `NAME VALUE` line each.
//! Per sandbox: `uid` (`id -u` inside), `uid_map` (its first line, fields
//! joined by commas) and `parent_is_me` (whether PID 1 is this process's
//! child). In the first sandbox a server replies on port 8004, and
//! `forwarded` is its reply as read through `Sandbox::get_host`. Then
//! `zygotes` (this process's children named soulbox-zygote)
//! and `zygote_pid` (from `diagnostics::zygote_pid`, or `none`). The
//! launch tests run it as an unprivileged user to check rootless mode.

use std::process::ExitCode;

use std::time::{Duration, Instant};

use soulbox_core::{Sandbox, SandboxOptions};
use soulbox_tests::{host_children_named, host_ppid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        if sandboxes.is_empty() {
            println!("forwarded {}", forwarded(&sandbox).await?);
        }
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

/// Starts a server on port 8004 in `sandbox` and returns its reply, read
/// through the host's forwarded port.
async fn forwarded(sandbox: &Sandbox) -> Result<String, String> {
    let server = "import socket\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', 8004))\n\
                  s.listen()\n\
                  c, _ = s.accept()\n\
                  c.recv(10)\n\
                  c.sendall(b'rootless')\n";
    sandbox
        .command("python3")
        .args(["-c", server])
        .start()
        .await
        .map_err(|e| format!("start a server in the sandbox: {e}"))?
        .disconnect();
    let host = sandbox
        .get_host(8004)
        .map_err(|e| format!("forward port 8004: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut reply = Vec::new();
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&host).await {
            let _ = stream.write_all(b"hi").await;
            let _ = stream.read_to_end(&mut reply).await;
        }
        if !reply.is_empty() {
            return Ok(String::from_utf8_lossy(&reply).into_owned());
        }
        if Instant::now() > deadline {
            return Err("no reply through the forwarded port within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
