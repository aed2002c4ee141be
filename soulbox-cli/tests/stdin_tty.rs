//! `soulbox run` with piped stdin and with `--tty`: piped input reaches the
//! command byte for byte, `--tty` without a terminal fails cleanly, and
//! `--tty` under a terminal runs the command on a PTY whose exit code comes
//! back.
//!
//! Tests that create a sandbox need root. Without root they print why they
//! are skipped and pass, except under CI (`CI` set), where a skip is a
//! failure.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

mod common;

use common::{read_in_background, require_root, soulbox_output, wait_limited};

/// What one invocation produced.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `soulbox` with `args` and stdin on /dev/null.
fn soulbox_without_input(args: &[&str]) -> Outcome {
    let output = soulbox_output(args);
    Outcome {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `program` with `args`, writes `input` to its stdin from a thread
/// after `delay`, and returns what it printed. The stdin pipe closes only
/// once `program` has exited, because script(1) of util-linux 2.38 passes
/// end of file on its stdin on to the terminal of the command it runs.
fn run_with_input(program: &str, args: &[&str], input: Vec<u8>, delay: Duration) -> Outcome {
    let description = format!("{program} {args:?}");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {description}: {e}"));
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let (exited_tx, exited_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        // A write error means the program exited without reading it all;
        // the asserts on its output report that.
        let _ = stdin.write_all(&input);
        let _ = stdin.flush();
        let _ = exited_rx.recv();
        drop(stdin);
    });
    let status = wait_limited(&mut child, &description);
    let _ = exited_tx.send(());
    writer.join().expect("stdin writer thread");
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader thread")).into_owned(),
    }
}

/// Runs `soulbox run -- <command>` with `input` piped to its stdin, which
/// is closed as soon as all of `input` is written.
fn soulbox_with_pipe(command: &[&str], input: Vec<u8>) -> Outcome {
    let description = format!("soulbox run -- {command:?}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .arg("run")
        .arg("--")
        .args(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the soulbox binary");
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = wait_limited(&mut child, &description);
    writer.join().expect("stdin writer thread");
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader thread")).into_owned(),
    }
}

#[test]
fn piped_stdin_forwarded() {
    if !require_root("piped_stdin_forwarded") {
        return;
    }
    let outcome = soulbox_with_pipe(&["cat"], b"hi\n".to_vec());
    assert_eq!(
        outcome.status.code(),
        Some(0),
        "`echo hi | soulbox run -- cat`; stderr: {:?}",
        outcome.stderr
    );
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        "hi\n",
        "cat should print the piped line"
    );
}

#[test]
fn null_stdin_stays_null() {
    if !require_root("null_stdin_stays_null") {
        return;
    }
    let script = "stat -L -c %F /proc/self/fd/0; cat; echo end";
    let outcome = soulbox_without_input(&["run", "--", "sh", "-c", script]);
    let stderr = &outcome.stderr;
    assert_eq!(outcome.status.code(), Some(0), "stderr: {stderr:?}");
    // Nothing is forwarded from /dev/null: the command reads a /dev/null
    // of its own, not a pipe that ends at once.
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        "character special file\nend\n",
        "stderr: {stderr:?}"
    );
}

#[test]
fn piped_binary_round_trip() {
    if !require_root("piped_binary_round_trip") {
        return;
    }
    const LEN: usize = 5 * 1024 * 1024;
    let mut input = vec![0u8; LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut input))
        .expect("read 5 MiB from /dev/urandom");

    let outcome = soulbox_with_pipe(&["cat"], input.clone());
    assert_eq!(
        outcome.status.code(),
        Some(0),
        "`soulbox run -- cat` with 5 MiB piped in; stderr: {:?}",
        outcome.stderr
    );
    assert_eq!(
        outcome.stdout.len(),
        LEN,
        "bytes cat returned of the 5 MiB piped in"
    );
    let first_difference = outcome
        .stdout
        .iter()
        .zip(&input)
        .position(|(got, sent)| got != sent);
    assert_eq!(
        first_difference, None,
        "cat's output differs from the random input at this offset"
    );
}

#[test]
fn tty_without_terminal_rejected() {
    // Needs no root: the check comes before any sandbox is created.
    let Outcome {
        status,
        stdout,
        stderr,
    } = soulbox_without_input(&["run", "--tty", "--", "true"]);

    assert_eq!(
        status.code(),
        Some(125),
        "--tty with stdin on /dev/null should fail as SoulBox's own error; stderr: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr should be one line: {stderr:?}");
    assert!(
        lines[0].starts_with("soulbox: "),
        "stderr should start with `soulbox: `: {:?}",
        lines[0]
    );
    assert!(
        lines[0].contains("--tty"),
        "the message should name --tty: {:?}",
        lines[0]
    );
    assert!(
        stdout.is_empty(),
        "nothing should run, but stdout got {:?}",
        String::from_utf8_lossy(&stdout)
    );
}

#[test]
fn tty_runs_on_pty() {
    if !require_root("tty_runs_on_pty") {
        return;
    }
    // script(1) from util-linux gives the CLI a terminal: its own PTY, set
    // to 30x100 so the sandbox's PTY size can be checked against it. -e
    // makes script exit with the child's code.
    let inner = format!(
        "stty rows 30 cols 100; exec {} run --tty -- sh",
        env!("CARGO_BIN_EXE_soulbox")
    );
    let outcome = run_with_input(
        "script",
        &["-qec", &inner, "/dev/null"],
        b"tty; stty size; exit 7\n".to_vec(),
        Duration::from_millis(500),
    );
    let printed = String::from_utf8_lossy(&outcome.stdout).replace('\r', "");

    assert_eq!(
        outcome.status.code(),
        Some(7),
        "`exit 7` on the PTY should come back through soulbox and script -e; output: \
         {printed:?}; stderr: {:?}",
        outcome.stderr
    );
    assert!(
        printed
            .lines()
            .any(|line| line.trim().starts_with("/dev/pts/")),
        "`tty` inside `soulbox run --tty` should print a /dev/pts/ path: {printed:?}"
    );
    assert!(
        printed.lines().any(|line| line.trim() == "30 100"),
        "`stty size` in the sandbox should match the caller's 30x100 terminal: {printed:?}"
    );
}
