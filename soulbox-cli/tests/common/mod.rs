//! Helpers shared by the CLI's end-to-end tests.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one `soulbox` invocation may take before the test kills it and
/// fails, so that a hang is reported instead of stalling the test run.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Returns true when the test may run. Creating sandboxes needs root:
/// without it the test prints why it is skipped and passes, except under
/// CI (`CI` set), which runs as root and fails on a skip.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let reason = format!("{test}: skipped, creating sandboxes needs root (euid {euid})");
    assert!(
        std::env::var_os("CI").is_none(),
        "{reason}; CI must run every test as root"
    );
    eprintln!("{reason}");
    false
}

/// Waits for `child` to exit, killing it and failing after `RUN_LIMIT`.
pub fn wait_limited(child: &mut Child, description: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not exit within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `pipe` to its end on a thread of its own.
pub fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `soulbox` with `args` and stdin on /dev/null, killing it after
/// `RUN_LIMIT`.
pub fn soulbox_output(args: &[&str]) -> Output {
    soulbox_output_with(args, &[])
}

/// Like [`soulbox_output`], with `envs` added to the environment.
pub fn soulbox_output_with(args: &[&str], envs: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soulbox"));
    command.args(args).envs(envs.iter().copied());
    output_limited(command, &format!("soulbox {args:?}"))
}

/// Runs `command` with stdin on /dev/null and its output piped, killing it
/// after `RUN_LIMIT`.
pub fn output_limited(mut command: Command, description: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the soulbox binary");
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = wait_limited(&mut child, description);
    Output {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: stderr.join().expect("stderr reader thread"),
    }
}
