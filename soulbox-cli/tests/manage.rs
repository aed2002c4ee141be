//! The subcommands that manage sandboxes across processes. One `soulbox`
//! process creates a sandbox, others exec, cp, ls, info, pause, resume,
//! forward a port and read metrics, and a third kills it. An unknown id gives exit status 3.

mod common;

use common::{require_root, soulbox_output as soulbox};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Kills the sandbox when the test ends, pass or fail.
struct Created(String);

impl Created {
    fn new(extra: &[&str]) -> Self {
        let mut args = vec!["create", "--timeout", "120"];
        args.extend_from_slice(extra);
        let output = soulbox(&args);
        assert!(
            output.status.success(),
            "soulbox create failed: {}",
            text(&output.stderr)
        );
        let id = text(&output.stdout).trim().to_string();
        assert!(soulbox_core::diagnostics::is_sandbox_id(&id), "{id:?}");
        Self(id)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        let _ = soulbox(&["kill", &self.0]);
    }
}

#[test]
fn create_exec_cp_and_kill_from_separate_processes() {
    if !require_root("create_exec_cp_and_kill_from_separate_processes") {
        return;
    }
    let sandbox = Created::new(&["--env", "GREETING=hi", "--metadata", "suite=manage"]);
    let id = sandbox.0.as_str();

    let exec = soulbox(&[
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "echo $GREETING > note.txt; exit 5",
    ]);
    assert_eq!(exec.status.code(), Some(5), "{}", text(&exec.stderr));

    let host_dir = std::env::temp_dir().join(format!("soulbox-cp-{}", std::process::id()));
    std::fs::create_dir_all(&host_dir).unwrap();
    let copied_out = host_dir.join("note.txt");
    let out = soulbox(&[
        "cp",
        &format!("{id}:note.txt"),
        copied_out.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&copied_out).unwrap(), "hi\n");

    let to_copy = host_dir.join("input.txt");
    std::fs::write(&to_copy, "from the host\n").unwrap();
    let into = soulbox(&[
        "cp",
        to_copy.to_str().unwrap(),
        &format!("{id}:/home/user/in.txt"),
    ]);
    assert!(into.status.success(), "{}", text(&into.stderr));
    let cat = soulbox(&["exec", id, "--", "cat", "in.txt"]);
    assert_eq!(text(&cat.stdout), "from the host\n");
    let _ = std::fs::remove_dir_all(&host_dir);

    let ls = soulbox(&["ls", "--metadata", "suite=manage", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["sandbox_id"].as_str())
        .collect();
    assert!(ids.contains(&id), "{ids:?}");

    let kill = soulbox(&["kill", id]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let after_kill = soulbox(&["exec", id, "--", "true"]);
    assert_eq!(after_kill.status.code(), Some(3));
}

#[test]
fn pause_resume_info_and_metrics() {
    if !require_root("pause_resume_info_and_metrics") {
        return;
    }
    let sandbox = Created::new(&["--metadata", "suite=pause"]);
    let id = sandbox.0.as_str();

    assert!(soulbox(&["pause", id]).status.success());
    let again = soulbox(&["pause", id]);
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("already paused"),
        "{}",
        text(&again.stderr)
    );

    let info = soulbox(&["info", id, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info --json");
    assert_eq!(info["state"], "paused");
    assert_eq!(info["ends_at"], serde_json::Value::Null);
    assert_eq!(info["metadata"]["suite"], "pause");

    // The file API works on a paused sandbox and leaves it paused.
    let host_file = std::env::temp_dir().join(format!("soulbox-cp-paused-{}", std::process::id()));
    std::fs::write(&host_file, "while paused\n").unwrap();
    let copied = soulbox(&[
        "cp",
        host_file.to_str().unwrap(),
        &format!("{id}:paused.txt"),
    ]);
    let _ = std::fs::remove_file(&host_file);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let still = soulbox(&["info", id, "--json"]);
    let still: serde_json::Value = serde_json::from_slice(&still.stdout).unwrap();
    assert_eq!(still["state"], "paused", "cp resumed the sandbox");

    let paused = soulbox(&["ls", "--state", "paused", "--metadata", "suite=pause"]);
    assert!(
        text(&paused.stdout).contains(id),
        "{}",
        text(&paused.stdout)
    );

    let metrics = soulbox(&["metrics", id, "--json"]);
    let metrics: serde_json::Value =
        serde_json::from_slice(&metrics.stdout).expect("metrics --json");
    assert!(metrics["disk_total"].as_u64().unwrap() > 0);
    assert!(metrics["mem_total"].as_u64().unwrap() > 0);

    assert!(soulbox(&["resume", id]).status.success());
    let info = soulbox(&["info", id, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["state"], "running");
    assert!(info["ends_at"].is_string());
}

/// Reads `soulbox info ID --json`.
fn info_json(id: &str) -> serde_json::Value {
    let info = soulbox(&["info", id, "--json"]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    serde_json::from_slice(&info.stdout).expect("info --json")
}

#[test]
fn on_timeout_pause_outlives_creator() {
    if !require_root("on_timeout_pause_outlives_creator") {
        return;
    }
    let created = soulbox(&[
        "create",
        "--timeout",
        "1",
        "--on-timeout",
        "pause",
        "--auto-resume",
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let sandbox = Created(text(&created.stdout).trim().to_string());
    let id = sandbox.0.as_str();

    // The creating process has exited: PID 1 pauses the sandbox itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while info_json(id)["state"] != "paused" {
        assert!(
            std::time::Instant::now() < deadline,
            "not paused 5 s after its 1 s timeout: {}",
            info_json(id)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let info = info_json(id);
    assert_eq!(info["on_timeout"], "pause");
    assert_eq!(info["auto_resume"], true);
    let text_info = soulbox(&["info", id]);
    assert!(
        text(&text_info.stdout).contains("on timeout:   pause (auto-resume)"),
        "{}",
        text(&text_info.stdout)
    );

    // With --auto-resume, a file call from another process resumes it.
    let host_file = std::env::temp_dir().join(format!("soulbox-cp-auto-{}", std::process::id()));
    std::fs::write(&host_file, "wakes it\n").unwrap();
    let copied = soulbox(&[
        "cp",
        host_file.to_str().unwrap(),
        &format!("{id}:woken.txt"),
    ]);
    let _ = std::fs::remove_file(&host_file);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    assert_eq!(info_json(id)["state"], "running", "cp left it paused");
}

#[test]
fn auto_resume_needs_on_timeout_pause() {
    let output = soulbox(&["create", "--auto-resume"]);
    assert_eq!(output.status.code(), Some(125));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("auto_resume"), "{stderr}");
    assert!(stderr.contains("\"pause\""), "{stderr}");
}

#[test]
fn unknown_id_exits_with_status_3() {
    if !require_root("unknown_id_exits_with_status_3") {
        return;
    }
    let missing = "sb-aaaaaaaaaaaa";
    let cases: [&[&str]; 10] = [
        &["exec", missing, "--", "true"],
        &["shell", missing],
        &["info", missing],
        &["kill", missing],
        &["pause", missing],
        &["resume", missing],
        &["metrics", missing],
        &["port", missing, "8000"],
        &["cp", "/etc/hostname", "sb-aaaaaaaaaaaa:/tmp/x"],
        &["info", "not-an-id"],
    ];
    for args in cases {
        let output = soulbox(args);
        assert_eq!(output.status.code(), Some(3), "soulbox {args:?}");
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "soulbox {args:?}: {stderr}");
        assert!(stderr.contains("not found"), "soulbox {args:?}: {stderr}");
    }
}

#[test]
fn cp_names_an_invalid_id() {
    // Rejected before any sandbox is looked up, so no root is needed.
    let cases: [&[&str]; 2] = [
        &["cp", "/etc/hostname", "nosuch:/tmp/x"],
        &["cp", "nosuch:/etc/hostname", "/tmp/x"],
    ];
    for args in cases {
        let output = soulbox(args);
        assert_eq!(output.status.code(), Some(125), "soulbox {args:?}");
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "soulbox {args:?}: {stderr}");
        assert!(
            stderr.contains("\"nosuch\" in "),
            "soulbox {args:?}: {stderr}"
        );
        assert!(
            stderr.contains("is not a sandbox id"),
            "soulbox {args:?}: {stderr}"
        );
        assert!(stderr.contains("soulbox ls"), "soulbox {args:?}: {stderr}");
    }
}

#[test]
fn limit_options_are_enforced_and_validated() {
    if !require_root("limit_options_are_enforced_and_validated") {
        return;
    }
    let oom = soulbox(&[
        "run",
        "--memory",
        "64M",
        "--",
        "python3",
        "-c",
        "b = bytearray(256 << 20)",
    ]);
    assert_eq!(oom.status.code(), Some(137), "{}", text(&oom.stderr));

    let forks = soulbox(&[
        "run",
        "--pids",
        "16",
        "--",
        "python3",
        "-c",
        "import os, time\nfailed = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n    \
         except OSError:\n        failed += 1\n        continue\n    if pid == 0:\n        \
         time.sleep(1)\n        os._exit(0)\nprint(failed)",
    ]);
    let failed_forks: u32 = text(&forks.stdout).trim().parse().unwrap_or(0);
    assert!(
        failed_forks > 0,
        "no fork failed under --pids 16: {}",
        text(&forks.stdout)
    );

    let full = soulbox(&[
        "run",
        "--disk",
        "4M",
        "--",
        "sh",
        "-c",
        "head -c 8388608 /dev/zero > /home/user/big",
    ]);
    assert_ne!(full.status.code(), Some(0));
    assert!(
        text(&full.stderr).contains("No space left"),
        "{}",
        text(&full.stderr)
    );

    let sandbox = Created::new(&["--memory", "256M", "--cpus", "0.5", "--pids", "none"]);
    let info = soulbox(&["info", &sandbox.0, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["memory_limit"], 256u64 << 20);
    assert_eq!(info["cpu_limit"], 0.5);

    for (args, named) in [
        (&["run", "--memory", "12X", "--", "true"][..], "--memory"),
        (&["run", "--cpus", "0", "--", "true"][..], "--cpus"),
        (&["create", "--disk", "lots"][..], "--disk"),
        (&["run", "--memory", "1M", "--", "true"][..], "memory_limit"),
    ] {
        let rejected = soulbox(args);
        assert_eq!(rejected.status.code(), Some(125), "soulbox {args:?}");
        assert!(
            text(&rejected.stderr).contains(named),
            "soulbox {args:?}: {}",
            text(&rejected.stderr)
        );
    }
}

/// Returns the ids that `soulbox ls --json` lists in `state_dir`.
fn listed_ids(state_dir: &std::path::Path) -> Vec<String> {
    let output = common::soulbox_output_with(
        &["ls", "--json"],
        &[("SOULBOX_STATE_DIR", state_dir.as_os_str())],
    );
    assert!(output.status.success(), "soulbox ls: {output:?}");
    let listed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("soulbox ls --json prints JSON");
    listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|info| {
            info["sandbox_id"]
                .as_str()
                .expect("a sandbox_id")
                .to_string()
        })
        .collect()
}

#[test]
fn create_interrupted_during_copy_leaves_nothing() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    if !require_root("create_interrupted_during_copy_leaves_nothing") {
        return;
    }
    let base = std::env::temp_dir().join(format!("soulbox-create-signal-{}", std::process::id()));
    let state_dir = base.join("state");
    let source = base.join("files");
    std::fs::create_dir_all(&state_dir).unwrap();
    // Enough files that the copy takes seconds, so the signal lands in it.
    for dir in 0..40 {
        let dir_path = source.join(format!("d{dir}"));
        std::fs::create_dir_all(&dir_path).unwrap();
        for file in 0..500 {
            std::fs::write(dir_path.join(format!("f{file}")), b"x").unwrap();
        }
    }
    let copy = format!("{}:/home/user/files", source.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["create", "--timeout", "120", "--copy", &copy])
        .env("SOULBOX_STATE_DIR", &state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the soulbox binary");
    let stdout = common::read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = common::read_in_background(child.stderr.take().expect("stderr is piped"));

    // The state entry exists from the end of the create, before the copy.
    let started = Instant::now();
    while listed_ids(&state_dir).is_empty() {
        assert!(
            child.try_wait().expect("poll soulbox create").is_none(),
            "soulbox create exited before its sandbox was listed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sandbox was not listed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill takes plain integers; the child is not reaped yet, so
    // its pid is still its own.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = common::wait_limited(&mut child, "soulbox create after SIGTERM");
    let printed = text(&stdout.join().unwrap());
    let errors = text(&stderr.join().unwrap());
    let left = listed_ids(&state_dir);
    for id in &left {
        let _ = common::soulbox_output_with(
            &["kill", id],
            &[("SOULBOX_STATE_DIR", state_dir.as_os_str())],
        );
    }
    let _ = std::fs::remove_dir_all(&base);

    assert!(
        left.is_empty(),
        "an interrupted create left sandboxes running: {left:?}"
    );
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "{status:?}: {errors}"
    );
    assert_eq!(printed, "", "an interrupted create printed an id");
}

#[test]
fn port_forwards_until_interrupted() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};

    if !require_root("port_forwards_until_interrupted") {
        return;
    }
    let sandbox = Created::new(&[]);
    let id = sandbox.0.as_str();
    // A server that replies to one connection, started in the background
    // through `soulbox exec`, which returns when the server exits.
    let server = "import socket\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', 8006))\n\
                  s.listen()\n\
                  c, _ = s.accept()\n\
                  c.recv(10)\n\
                  c.sendall(b'through the port')\n";
    let mut exec = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["exec", id, "--", "python3", "-c", server])
        .stdin(Stdio::null())
        .spawn()
        .expect("start soulbox exec");
    let mut port = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["port", id, "8006"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start soulbox port");
    let mut line = String::new();
    BufReader::new(port.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("read the address");
    let address = line.trim().to_string();
    assert!(address.starts_with("127.0.0.1:"), "{line:?}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reply = loop {
        let mut reply = Vec::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.write_all(b"hi");
            let _ = stream.read_to_end(&mut reply);
        }
        if !reply.is_empty() || std::time::Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(text(&reply), "through the port");
    let exec_status = common::wait_limited(&mut exec, "soulbox exec of the server");
    assert!(exec_status.success(), "{exec_status:?}");

    let pid = i32::try_from(port.id()).expect("a pid fits i32");
    // SAFETY: kill takes integers; `pid` is the child started above, not
    // yet waited for, so it cannot have been reused.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = common::wait_limited(&mut port, "soulbox port");
    assert_eq!(status.code(), Some(0), "{status:?}");
}
