//! How `soulbox` starts a sandbox's PID 1: cloned from its own process,
//! the default as root, or executed with `SOULBOX_LAUNCHER=exec` and by
//! default for `soulbox create`. Both
//! must leave PID 1 in the same state, and sandboxed code must not read
//! the copy of the command's memory that a cloned PID 1 holds.
//!
//! Every test except the invalid-value one creates sandboxes, which needs
//! root. Without root they print why they are skipped and pass, except
//! under CI (`CI` set), where a skip is a failure.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[expect(dead_code, reason = "these tests need only some of the shared helpers")]
mod common;

use common::{require_root, soulbox_output_with, wait_limited};

/// The variable that chooses the launcher.
const LAUNCHER_VAR: &str = "SOULBOX_LAUNCHER";

/// How long the sandbox may take to print that its command started.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A `soulbox run` whose command prints `ready` and then sleeps, so that
/// the test can inspect the sandbox's PID 1 from the host.
struct Running {
    child: Child,
}

impl Running {
    /// Starts `soulbox run`, with `launcher` as SOULBOX_LAUNCHER when
    /// given, and waits until the command runs.
    fn start(launcher: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_soulbox"));
        command
            .args(["run", "--", "sh", "-c", "echo ready; exec sleep 60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove(LAUNCHER_VAR);
        if let Some(launcher) = launcher {
            command.env(LAUNCHER_VAR, launcher);
        }
        let mut child = command.spawn().expect("start the soulbox binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        // Sends the first line, then drains the pipe until soulbox exits.
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = sender.send(line);
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let running = Self { child };
        let line = receiver.recv_timeout(READY_LIMIT);
        assert_eq!(
            line.as_deref(),
            Ok("ready\n"),
            "the command did not start within {READY_LIMIT:?} (launcher {launcher:?})"
        );
        running
    }

    /// Returns the host pid of the sandbox's PID 1, the only child of the
    /// `soulbox` process.
    fn pid1(&self) -> i32 {
        let pid = self.child.id();
        let path = format!("/proc/{pid}/task/{pid}/children");
        let children =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let children: Vec<i32> = children
            .split_whitespace()
            .map(|child| child.parse().expect("a pid"))
            .collect();
        let [pid1] = children.as_slice() else {
            panic!("soulbox {pid} should have one child, PID 1, not {children:?}");
        };
        *pid1
    }

    /// Ends the command with SIGTERM, which `soulbox run` passes on, and
    /// waits for `soulbox` to exit.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill takes plain integers; the child is not reaped yet,
        // so its pid is still its own.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = wait_limited(&mut self.child, "soulbox run after SIGTERM");
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // After a failed assertion: closing the creating connection ends
        // the sandbox too.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the tests compare of a PID 1, read from the host's /proc.
#[derive(Debug, PartialEq, Eq)]
struct Pid1State {
    comm: String,
    threads: String,
    blocked: String,
    /// Ignored standard signals; glibc reserves 32 and 33 and keeps
    /// whatever the host set for them.
    ignored: u64,
    caught: String,
    session_leader: bool,
    /// Each descriptor's number and kind.
    descriptors: Vec<(u32, &'static str)>,
}

fn pid1_state(pid: i32) -> Pid1State {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
            .to_string()
    };
    let ignored = u64::from_str_radix(&field("SigIgn:"), 16).expect("a hex mask");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, fields) = stat.rsplit_once(')').expect("a stat line");
    let session: i32 = fields
        .split_whitespace()
        .nth(3)
        .and_then(|field| field.parse().ok())
        .expect("a session id");
    Pid1State {
        comm: std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("read comm"),
        threads: field("Threads:"),
        blocked: field("SigBlk:"),
        ignored: ignored & 0x7fff_ffff,
        caught: field("SigCgt:"),
        session_leader: session == pid,
        descriptors: descriptors(pid),
    }
}

fn descriptors(pid: i32) -> Vec<(u32, &'static str)> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {dir}: {e}"));
    let mut descriptors: Vec<(u32, &'static str)> = entries
        .flatten()
        .map(|entry| {
            let fd = entry
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("a number");
            let target = std::fs::read_link(entry.path()).expect("read a descriptor's link");
            let target = target.to_string_lossy();
            let kind = match target.as_ref() {
                t if t.ends_with("null") => "null",
                t if t.starts_with("socket:") => "socket",
                t if t.ends_with(".lock") => "lock",
                "anon_inode:[signalfd]" => "signalfd",
                t if t.starts_with("/sys/fs/cgroup/memory/") && t.ends_with("/tasks") => {
                    "memory tasks"
                }
                _ => "other",
            };
            (fd, kind)
        })
        .collect();
    descriptors.sort();
    descriptors
}

/// Returns the state every PID 1 should have when its command runs. Its
/// stdio is on /dev/null, and the control socket at 3 is followed by the
/// listening socket, the state entry's lock and the signalfd. Only SIGCHLD
/// (bit 17) is blocked, for the signalfd, and of the standard signals only
/// SIGPIPE (bit 13) is ignored. It has no handlers and leads a session.
/// With a v1 memory cgroup it also keeps that cgroup's `tasks` file, which
/// each command's supervisor joins. Only the number of that descriptor is
/// taken from `actual`.
fn expected_state(actual: &Pid1State) -> Pid1State {
    let mut expected = Pid1State {
        comm: "soulbox-init\n".to_string(),
        threads: "1".to_string(),
        blocked: "0000000000010000".to_string(),
        ignored: 0x1000,
        caught: "0000000000000000".to_string(),
        session_leader: true,
        descriptors: vec![
            (0, "null"),
            (1, "null"),
            (2, "null"),
            (3, "socket"),
            (4, "socket"),
            (5, "lock"),
            (6, "signalfd"),
        ],
    };
    if Path::new("/sys/fs/cgroup/memory/soulbox").is_dir() {
        let fd = actual
            .descriptors
            .iter()
            .find(|(_, kind)| *kind == "memory tasks")
            .map_or(u32::MAX, |(fd, _)| *fd);
        expected.descriptors.push((fd, "memory tasks"));
    }
    expected
}

fn exe(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("read PID 1's executable")
}

fn soulbox_path() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_soulbox")).expect("resolve the soulbox binary")
}

#[test]
fn run_clones_pid1_by_default() {
    if !require_root("run_clones_pid1_by_default") {
        return;
    }
    let running = Running::start(None);
    let pid1 = running.pid1();
    // A PID 1 that was executed runs soulbox-init's copy or memfd; this
    // one runs the code linked into soulbox, with no exec.
    assert_eq!(
        exe(pid1),
        soulbox_path(),
        "soulbox run executed PID 1 instead of cloning it from its own process"
    );
    let state = pid1_state(pid1);
    assert_eq!(state, expected_state(&state));
    let cmdline = std::fs::read(format!("/proc/{pid1}/cmdline")).expect("read cmdline");
    let name: Vec<u8> = cmdline.iter().copied().filter(|&b| b != 0).collect();
    assert_eq!(String::from_utf8_lossy(&name), "soulbox-init");
    assert!(
        cmdline.starts_with(b"soulbox-init\0"),
        "PID 1's arguments: {cmdline:?}"
    );
    let environ = std::fs::read(format!("/proc/{pid1}/environ")).expect("read environ");
    assert!(
        environ.iter().all(|&b| b == 0),
        "PID 1's environment was not overwritten: {:?}",
        String::from_utf8_lossy(&environ)
    );
    running.stop();
}

#[test]
fn exec_launcher_executes_pid1() {
    if !require_root("exec_launcher_executes_pid1") {
        return;
    }
    let running = Running::start(Some("exec"));
    let pid1 = running.pid1();
    assert_ne!(
        exe(pid1),
        soulbox_path(),
        "SOULBOX_LAUNCHER=exec still cloned PID 1 from soulbox"
    );
    let state = pid1_state(pid1);
    assert_eq!(state, expected_state(&state));
    let cmdline = std::fs::read(format!("/proc/{pid1}/cmdline")).expect("read cmdline");
    assert_eq!(cmdline, b"soulbox-init\0");
    running.stop();
}

#[test]
fn invalid_launcher_exits_125() {
    let output = soulbox_output_with(
        &["run", "--", "true"],
        &[(LAUNCHER_VAR, OsStr::new("zygote"))],
    );
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid SOULBOX_LAUNCHER value \"zygote\""),
        "the error does not name the value: {stderr}"
    );
}

/// Tries, as sandbox root, to read PID 1's arguments, environment, memory
/// map and memory. Each line is NAME=RESULT.
const READ_PID1: &str = r#"
printf 'cmdline=%s\n' "$(tr -d '\000' < /proc/1/cmdline)"
for file in environ maps mem; do
    head -c 4096 /proc/1/$file | tr '\000' ' '
    echo "$file=$?"
done
if head -c 1 /proc/1/environ >/dev/null 2>&1; then echo environ_open=yes; else echo environ_open=no; fi
if head -c 1 /proc/1/mem >/dev/null 2>&1; then echo mem_open=yes; else echo mem_open=no; fi
if readlink /proc/1/exe >/dev/null 2>&1; then echo exe_open=yes; else echo exe_open=no; fi
"#;

#[test]
fn pid1_memory_hidden_inside() {
    if !require_root("pid1_memory_hidden_inside") {
        return;
    }
    let argument_secret = "argument-secret-5f3a9c";
    let environment_secret = "environment-secret-8e1d27";
    let env_option = format!("SECRET_OPTION={argument_secret}");
    for launcher in ["fork", "exec"] {
        let output = soulbox_output_with(
            &[
                "run",
                "--user",
                "root",
                "--env",
                &env_option,
                "--",
                "sh",
                "-c",
                READ_PID1,
            ],
            &[
                (LAUNCHER_VAR, OsStr::new(launcher)),
                ("SOULBOX_TEST_SECRET", OsStr::new(environment_secret)),
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{launcher}: {stderr}");
        for secret in [argument_secret, environment_secret] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{launcher}: sandbox root read {secret:?} from PID 1: {stdout}{stderr}"
            );
        }
        let lines: Vec<&str> = stdout.lines().collect();
        for expected in [
            "cmdline=soulbox-init",
            "environ_open=no",
            "mem_open=no",
            "exe_open=no",
        ] {
            assert!(
                lines.contains(&expected),
                "{launcher}: missing {expected:?} in {stdout}"
            );
        }
    }
}

/// Returns the host pid that `soulbox info ID` prints.
fn info_pid(id: &str) -> i32 {
    let output = soulbox_output_with(&["info", id], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "soulbox info {id}: {output:?}"
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("pid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in soulbox info {id}: {stdout}"))
}

#[test]
fn create_does_not_pin_soulbox_binary() {
    if !require_root("create_does_not_pin_soulbox_binary") {
        return;
    }
    let output = soulbox_output_with(&["create", "--timeout", "60"], &[]);
    assert_eq!(output.status.code(), Some(0), "soulbox create: {output:?}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let pid1 = info_pid(&id);
    let pid1_exe = exe(pid1);
    let _ = soulbox_output_with(&["kill", &id], &[]);
    // A PID 1 cloned from `soulbox create` would keep the command's binary
    // mapped, and so its file busy and its mount pinned, for as long as the
    // sandbox lives after the command exits.
    assert_ne!(
        pid1_exe,
        soulbox_path(),
        "soulbox create cloned PID 1 from itself, so the sandbox pins the soulbox binary"
    );
}
