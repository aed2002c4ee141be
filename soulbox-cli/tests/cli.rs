//! The `soulbox` binary end to end: exit-code contract, output streams,
//! `--copy`, `--env`, `--cwd`, `--user` and the help text.
//!
//! Every test except the help tests creates a sandbox, which needs root.
//! Without root they print why they are skipped and pass, except under CI
//! (`CI` set), where a skip is a failure.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    output_limited, read_in_background, require_root, soulbox_output, soulbox_output_with,
    wait_limited,
};

/// What one `soulbox` invocation produced.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `soulbox` with `args`, killing it after `RUN_LIMIT`.
fn soulbox(args: &[&str]) -> Outcome {
    let started = Instant::now();
    let output = soulbox_output(args);
    Outcome {
        status: output.status,
        stdout: text(output.stdout),
        stderr: text(output.stderr),
        elapsed: started.elapsed(),
    }
}

/// Runs `command` as [`output_limited`] does and collects its outcome.
fn outcome_of(command: Command, description: &str) -> Outcome {
    let started = Instant::now();
    let output = output_limited(command, description);
    Outcome {
        status: output.status,
        stdout: text(output.stdout),
        stderr: text(output.stderr),
        elapsed: started.elapsed(),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A host directory for one test, removed on drop.
struct HostDir {
    path: PathBuf,
}

impl HostDir {
    fn create(test: &str) -> Self {
        let name = format!("soulbox-cli-{test}-{}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a host temp directory");
        Self { path }
    }

    fn write(&self, relative: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.path.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a host directory");
        }
        std::fs::write(&path, contents).expect("write a host file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("set a host file's mode");
        path
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Asserts that SoulBox itself failed: exit code 125 and exactly one
/// `soulbox: ` line on stderr that contains `expected`.
fn assert_soulbox_failed(outcome: &Outcome, expected: &str) {
    assert_eq!(
        outcome.code(),
        Some(125),
        "exit code when SoulBox failed; stderr: {:?}",
        outcome.stderr
    );
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr should be one line, got {:?}",
        outcome.stderr
    );
    assert!(
        lines[0].starts_with("soulbox: "),
        "stderr should start with `soulbox: `: {:?}",
        lines[0]
    );
    assert!(
        lines[0].contains(expected),
        "stderr should mention {expected:?}: {:?}",
        lines[0]
    );
}

#[test]
fn exit_code_passed_through() {
    if !require_root("exit_code_passed_through") {
        return;
    }
    let seven = soulbox(&["run", "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        seven.code(),
        Some(7),
        "`exit 7`; stderr: {:?}",
        seven.stderr
    );
    let zero = soulbox(&["run", "--", "true"]);
    assert_eq!(zero.code(), Some(0), "`true`; stderr: {:?}", zero.stderr);
}

#[test]
fn timeout_exits_124() {
    if !require_root("timeout_exits_124") {
        return;
    }
    let outcome = soulbox(&["run", "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(
        outcome.code(),
        Some(124),
        "exit code after --timeout; stderr: {:?}",
        outcome.stderr
    );
    assert!(
        outcome.elapsed < Duration::from_secs(15),
        "--timeout 1 took {:?} to end `sleep 30`",
        outcome.elapsed
    );
}

#[test]
fn timeout_keeps_earlier_output() {
    if !require_root("timeout_keeps_earlier_output") {
        return;
    }
    let outcome = soulbox(&[
        "run",
        "--timeout",
        "2",
        "--",
        "sh",
        "-c",
        "echo before; sleep 30",
    ]);
    assert_eq!(
        outcome.code(),
        Some(124),
        "exit code after --timeout; stderr: {:?}",
        outcome.stderr
    );
    assert_eq!(
        outcome.stdout, "before\n",
        "output written before the timeout should reach stdout"
    );
}

#[test]
fn output_streams_live() {
    if !require_root("output_streams_live") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args([
            "run",
            "--timeout",
            "30",
            "--",
            "sh",
            "-c",
            "echo first; sleep 3; echo second",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the soulbox binary");
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).expect("read the first line");
    let first_seen = Instant::now();
    let mut rest = String::new();
    reader
        .read_to_string(&mut rest)
        .expect("read the rest of stdout");
    let status = child.wait().expect("wait for soulbox");
    let gap = first_seen.elapsed();

    assert_eq!(
        status.code(),
        Some(0),
        "soulbox run of `echo first; sleep 3; echo second`"
    );
    assert_eq!(first, "first\n", "first line of stdout");
    assert_eq!(rest, "second\n", "rest of stdout");
    assert!(
        gap >= Duration::from_secs(2),
        "`first` arrived only {gap:?} before soulbox exited, so stdout was not streamed live"
    );
}

#[test]
fn signal_exits_128_plus() {
    if !require_root("signal_exits_128_plus") {
        return;
    }
    let term = soulbox(&["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        term.code(),
        Some(143),
        "SIGTERM should give 128+15; stderr: {:?}",
        term.stderr
    );
    let kill = soulbox(&["run", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(
        kill.code(),
        Some(137),
        "SIGKILL should give 128+9; stderr: {:?}",
        kill.stderr
    );
}

/// A command that prints a few MiB and exits at once gets all of its
/// output out before `soulbox run` exits. It leaves a process behind with
/// its stdout and stderr open, which must not delay the exit. Three runs,
/// because a lost tail would depend on timing.
#[test]
fn large_output_arrives_whole() {
    if !require_root("large_output_arrives_whole") {
        return;
    }
    let script = "sleep 600 & head -c 5000000 /dev/zero | tr '\\0' a; \
                  head -c 1000000 /dev/zero | tr '\\0' b >&2; exit 3";
    for round in 0..3 {
        let outcome = soulbox(&["run", "--", "sh", "-c", script]);
        assert_eq!(outcome.code(), Some(3), "round {round}");
        let streams = [
            ("stdout", &outcome.stdout, 5_000_000, b'a'),
            ("stderr", &outcome.stderr, 1_000_000, b'b'),
        ];
        for (name, text, expected_len, byte) in streams {
            assert_eq!(text.len(), expected_len, "round {round}: {name} bytes");
            assert!(
                text.bytes().all(|b| b == byte),
                "round {round}: {name} has bytes other than {:?}",
                byte as char
            );
        }
        assert!(
            outcome.elapsed < Duration::from_secs(30),
            "round {round}: soulbox run took {:?}",
            outcome.elapsed
        );
    }
}

#[test]
fn binary_loads_no_libgcc_s() {
    // build.rs links libgcc's static unwinder instead; the library's name
    // would appear in the binary as a dynamic dependency.
    let binary = std::fs::read(env!("CARGO_BIN_EXE_soulbox")).expect("read the soulbox binary");
    let name = b"libgcc_s.so";
    assert!(
        !binary.windows(name.len()).any(|window| window == name),
        "the soulbox binary still names libgcc_s.so as a dependency"
    );
}

#[test]
fn closed_output_exits_141() {
    if !require_root("closed_output_exits_141") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["run", "--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the soulbox binary");
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut first = [0u8; 2];
    stdout
        .read_exact(&mut first)
        .expect("read the first line of `yes`");
    assert_eq!(&first, b"y\n");
    // The reader goes away, as `head -1` would.
    drop(stdout);
    let status = wait_limited(&mut child, "soulbox run -- yes after its reader closed");
    let stderr = text(stderr.join().expect("stderr reader thread"));
    // A write to the closed pipe fails with EPIPE, which soulbox turns into
    // 128 + SIGPIPE; SIGPIPE itself must not kill soulbox.
    assert_eq!(status.code(), Some(141), "{status:?}; stderr: {stderr:?}");
}

#[test]
fn missing_copy_source_exits_125() {
    if !require_root("missing_copy_source_exits_125") {
        return;
    }
    let outcome = soulbox(&["run", "--copy", "/nonexistent/x:/y", "--", "true"]);
    assert_soulbox_failed(&outcome, "/nonexistent/x");
}

#[test]
fn unknown_user_exits_125() {
    if !require_root("unknown_user_exits_125") {
        return;
    }
    let outcome = soulbox(&["run", "--user", "bob", "--", "true"]);
    assert_soulbox_failed(&outcome, "bob");
}

#[test]
fn missing_cwd_exits_125() {
    if !require_root("missing_cwd_exits_125") {
        return;
    }
    let outcome = soulbox(&["run", "--cwd", "/nope", "--", "true"]);
    assert_soulbox_failed(&outcome, "/nope");
}

#[test]
fn negative_limits_named_in_errors() {
    let cases = [
        ("--cpus", "-1", "positive number of cores"),
        ("--pids", "-2", "whole number of processes"),
        ("--memory", "-5", "size such as"),
        ("--disk", "-1G", "size such as"),
    ];
    for (option, value, expected) in cases {
        let outcome = soulbox(&["run", option, value, "--", "true"]);
        assert_soulbox_failed(&outcome, &format!("'{value}' for '{option}"));
        assert_soulbox_failed(&outcome, expected);
    }
}

#[test]
fn negative_timeout_named_in_errors() {
    // The id is never looked up, because clap rejects the value while
    // parsing the arguments.
    let invocations: [&[&str]; 3] = [
        &["run", "--timeout", "-1", "--", "true"],
        &["exec", "sb-000000000000", "--timeout", "-1", "--", "true"],
        &["create", "--timeout", "-1"],
    ];
    for args in invocations {
        let outcome = soulbox(args);
        assert_soulbox_failed(&outcome, "'-1' for '--timeout");
        assert_soulbox_failed(&outcome, "whole number of seconds");
    }
}

#[test]
fn output_streams_separate() {
    if !require_root("output_streams_separate") {
        return;
    }
    let outcome = soulbox(&["run", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(outcome.code(), Some(0), "stderr: {:?}", outcome.stderr);
    assert_eq!(outcome.stdout, "out\n", "the command's stdout");
    assert_eq!(outcome.stderr, "err\n", "the command's stderr");
}

#[test]
fn copy_env_cwd_work() {
    if !require_root("copy_env_cwd_work") {
        return;
    }
    let host = HostDir::create("copy_env_cwd_work");
    let script = "#!/bin/sh\n\
                  echo \"greeting=$GREETING\"\n\
                  echo \"cwd=$(pwd)\"\n\
                  echo \"user=$(id -un)\"\n\
                  echo \"data=$(cat data/input.txt)\"\n\
                  echo \"notes=$(cat /home/user/notes.txt)\"\n";
    host.write("job/run.sh", script, 0o755);
    host.write("job/data/input.txt", "from a nested file", 0o644);
    let notes = host.write("notes.txt", "from a single file", 0o644);

    let job_copy = format!("{}:/home/user/job", path_text(&host.path.join("job")));
    let notes_copy = format!("{}:notes.txt", path_text(&notes));
    let outcome = soulbox(&[
        "run",
        "--copy",
        &job_copy,
        "--copy",
        &notes_copy,
        "--env",
        "GREETING=hello there",
        "--cwd",
        "job",
        "--",
        "./run.sh",
    ]);
    assert_eq!(
        outcome.code(),
        Some(0),
        "run.sh failed; stderr: {:?}",
        outcome.stderr
    );
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    let expected = [
        "greeting=hello there",
        "cwd=/home/user/job",
        "user=user",
        "data=from a nested file",
        "notes=from a single file",
    ];
    for line in expected {
        assert!(
            lines.contains(&line),
            "stdout should contain {line:?}: {:?}",
            outcome.stdout
        );
    }
}

#[test]
fn user_root_works() {
    if !require_root("user_root_works") {
        return;
    }
    let outcome = soulbox(&[
        "run",
        "--user",
        "root",
        "--cwd",
        "/tmp",
        "--",
        "sh",
        "-c",
        "id -un; pwd",
    ]);
    assert_eq!(outcome.code(), Some(0), "stderr: {:?}", outcome.stderr);
    assert_eq!(
        outcome.stdout, "root\n/tmp\n",
        "user and cwd with --user root --cwd /tmp"
    );
}

#[test]
fn top_help_lists_run() {
    let outcome = soulbox(&["--help"]);
    assert_eq!(
        outcome.code(),
        Some(0),
        "soulbox --help; stderr: {:?}",
        outcome.stderr
    );
    assert!(
        outcome.stdout.contains("run"),
        "soulbox --help should list `run`: {}",
        outcome.stdout
    );
}

#[test]
fn run_help_lists_options() {
    for flag in ["--help", "-h"] {
        let outcome = soulbox(&["run", flag]);
        assert_eq!(
            outcome.code(),
            Some(0),
            "soulbox run {flag}; stderr: {:?}",
            outcome.stderr
        );
        let help = &outcome.stdout;
        for option in ["--timeout", "--env", "--cwd", "--user", "--copy", "SECS"] {
            assert!(
                help.contains(option),
                "soulbox run {flag} should mention {option}:\n{help}"
            );
        }
        assert!(
            help.to_lowercase().contains("seconds"),
            "soulbox run {flag} should say that --timeout is in seconds:\n{help}"
        );
    }
}

#[test]
fn missing_program_exits_127() {
    if !require_root("missing_program_exits_127") {
        return;
    }
    let outcome = soulbox(&["run", "--", "/soulbox-no-such-program"]);
    assert_eq!(
        outcome.code(),
        Some(127),
        "a missing program exits 127: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("/soulbox-no-such-program"),
        "stderr: {}",
        outcome.stderr
    );
}

#[test]
fn directory_program_exits_126() {
    if !require_root("directory_program_exits_126") {
        return;
    }
    let outcome = soulbox(&["run", "--", "/etc"]);
    assert_eq!(
        outcome.code(),
        Some(126),
        "a directory cannot be executed: {}",
        outcome.stderr
    );
}

#[test]
fn copy_follows_user_option() {
    if !require_root("copy_follows_user_option") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("soulbox-cli-copy-root-{}", std::process::id()));
    std::fs::write(&dir, "for root\n").expect("write the host file");
    let spec = format!("{}:/root/copied", dir.display());
    let outcome = soulbox(&[
        "run",
        "--user",
        "root",
        "--copy",
        &spec,
        "--",
        "cat",
        "/root/copied",
    ]);
    let _ = std::fs::remove_file(&dir);
    assert_eq!(
        outcome.code(),
        Some(0),
        "copy into /root as root should work: {}",
        outcome.stderr
    );
    assert_eq!(
        outcome.stdout, "for root\n",
        "the copied file should be readable"
    );
}

#[test]
fn missing_argument_is_named() {
    for (args, missing) in [
        (&["run"][..], "<COMMAND>"),
        (&["kill"][..], "<ID>"),
        (&["exec", "sb-0000000000000"][..], "<COMMAND>"),
    ] {
        let outcome = soulbox(args);
        assert_soulbox_failed(&outcome, missing);
    }
}

#[test]
fn no_subcommand_prints_the_usage() {
    let outcome = soulbox(&[]);
    assert_eq!(outcome.code(), Some(125), "stderr: {:?}", outcome.stderr);
    assert!(
        outcome.stderr.contains("Usage:") && outcome.stderr.contains("run"),
        "soulbox with no arguments should print the usage and the subcommands: {:?}",
        outcome.stderr
    );
}

/// Runs `soulbox run -- echo hi` with `state` as the state directory,
/// executing PID 1 from its copy there.
fn run_echo_in(state: &Path) -> std::process::Output {
    soulbox_output_with(
        &["run", "--", "echo", "hi"],
        &[
            ("SOULBOX_STATE_DIR", state.as_os_str()),
            ("SOULBOX_LAUNCHER", std::ffi::OsStr::new("exec")),
        ],
    )
}

#[test]
fn damaged_program_copy_removed_and_rewritten() {
    if !require_root("damaged_program_copy_removed_and_rewritten") {
        return;
    }
    let state = HostDir::create("damaged-copy");
    std::fs::set_permissions(&state.path, std::fs::Permissions::from_mode(0o700))
        .expect("make the state directory private");
    let first = run_echo_in(&state.path);
    assert_eq!(
        text(first.stdout.clone()),
        "hi\n",
        "the first run failed: {first:?}"
    );
    let copies: Vec<PathBuf> = std::fs::read_dir(state.path.join("init"))
        .expect("list the program's copies")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    let [copy] = copies.as_slice() else {
        panic!("expected one copy of PID 1's program, found {copies:?}");
    };
    // Same size, owner and mode, other bytes: /bin/true padded with zeros.
    let size = std::fs::metadata(copy).expect("stat the copy").len();
    let mut other = std::fs::read("/bin/true").expect("read /bin/true");
    other.resize(size as usize, 0);
    std::fs::set_permissions(copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(copy, &other).expect("overwrite the copy");
    std::fs::set_permissions(copy, std::fs::Permissions::from_mode(0o500)).unwrap();

    let damaged = run_echo_in(&state.path);
    assert_eq!(damaged.status.code(), Some(125), "{damaged:?}");
    let message = text(damaged.stderr);
    assert!(
        message.contains("did not match this build and was removed"),
        "the error does not name the damaged copy: {message}"
    );
    let repaired = run_echo_in(&state.path);
    assert_eq!(
        text(repaired.stdout.clone()),
        "hi\n",
        "the run after the removal failed: {repaired:?}"
    );
}

/// Runs, as `user`, checks that need the sandbox's tree readable by others:
/// a program from /usr, the name lookups in /etc, and a file in /tmp.
const USER_CHECKS: &str = "id -un && ls / >/dev/null && echo note > /tmp/note && cat /tmp/note";

#[test]
fn host_umask_does_not_lock_out_user() {
    if !require_root("host_umask_does_not_lock_out_user") {
        return;
    }
    let soulbox = env!("CARGO_BIN_EXE_soulbox");
    for launcher in ["fork", "exec"] {
        // A fresh state directory, so the template is built under the
        // caller's umask too.
        let state =
            std::env::temp_dir().join(format!("soulbox-umask-{launcher}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "umask 077 && exec \"$0\" run -- sh -c \"$1\""])
            .args([soulbox, USER_CHECKS])
            .env("SOULBOX_STATE_DIR", &state)
            .env("SOULBOX_LAUNCHER", launcher)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sh");
        let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
        let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
        let status = wait_limited(&mut child, "soulbox run under umask 077");
        let stdout = text(stdout.join().unwrap());
        let stderr = text(stderr.join().unwrap());
        let _ = std::fs::remove_dir_all(&state);
        assert_eq!(status.code(), Some(0), "{launcher}: {stderr}");
        assert_eq!(stdout, "user\nnote\n", "{launcher}: {stderr}");
    }
}

#[test]
fn full_state_dir_keeps_no_staging() {
    if !require_root("full_state_dir_keeps_no_staging") {
        return;
    }
    let state = std::env::temp_dir().join(format!("soulbox-full-state-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    // An 8 KiB tmpfs, mounted in a mount namespace of its own, is too small
    // for the template. The listing runs before that namespace ends.
    let script = "mount -t tmpfs -o size=8k,mode=755 soulbox-test \"$1\" || exit 99
SOULBOX_STATE_DIR=\"$1\" \"$0\" run -- true
echo \"status=$?\"
ls -A \"$1/templates\"";
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_soulbox"))
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .expect("start unshare");
    let _ = std::fs::remove_dir(&state);
    let stdout = text(output.stdout);
    let stderr = text(output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the error does not name the cause: {stderr}"
    );
    assert_eq!(
        stdout, "status=125\n",
        "a failed template build left files in the state directory: {stdout}"
    );
}

/// Copies `program` and the libraries `ldd` lists for it to the same paths
/// under `root`.
fn copy_with_libraries(root: &Path, program: &str) {
    let ldd = Command::new("ldd")
        .arg(program)
        .output()
        .expect("run the host's ldd");
    let listed = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libraries = listed
        .lines()
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')));
    for file in std::iter::once(program).chain(libraries) {
        let target = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a file has a parent"))
            .expect("create a directory in the root file system");
        std::fs::copy(file, &target).expect("copy a file into the root file system");
    }
}

#[test]
fn template_directory_given_relative() {
    if !require_root("template_directory_given_relative") {
        return;
    }
    let dir = HostDir::create("template");
    let root = dir.path.join("rootfs");
    copy_with_libraries(&root, "/bin/cat");
    dir.write("rootfs/srv/marker", "from the directory\n", 0o644);
    let run = |template: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_soulbox"));
        command
            .args([
                "run",
                "--template",
                template,
                "--",
                "/bin/cat",
                "/srv/marker",
            ])
            .current_dir(&dir.path);
        outcome_of(command, "soulbox run --template")
    };
    let outcome = run("./rootfs");
    assert_eq!(outcome.code(), Some(0), "stderr: {:?}", outcome.stderr);
    assert_eq!(outcome.stdout, "from the directory\n");

    let missing = run("./nowhere");
    assert_soulbox_failed(&missing, "\"./nowhere\" is neither `host` nor a directory");
    let file = run("rootfs/srv/marker");
    assert_soulbox_failed(&file, "is not a directory");
}

#[test]
fn template_relative_under_non_utf8_directory() {
    if !require_root("template_relative_under_non_utf8_directory") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = HostDir::create("template-non-utf8");
    let parent = dir.path.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    copy_with_libraries(&parent.join("rootfs"), "/bin/cat");

    let mut command = Command::new(env!("CARGO_BIN_EXE_soulbox"));
    command
        .args([
            "run",
            "--template",
            "./rootfs",
            "--",
            "/bin/cat",
            "/dev/null",
        ])
        .current_dir(&parent);
    let outcome = outcome_of(command, "soulbox run --template under a non-UTF-8 path");
    // Made lossy, the path would name another directory, one that is missing.
    assert_soulbox_failed(&outcome, "bad\\xFFname/rootfs");
    assert!(
        outcome.stderr.contains("is not valid UTF-8"),
        "the error does not name the cause: {:?}",
        outcome.stderr
    );
}

#[test]
fn template_bind_mount_of_root_rejected() {
    if !require_root("template_bind_mount_of_root_rejected") {
        return;
    }
    // The bind mount lives in a mount namespace of its own, which ends with
    // the shell, so the host keeps no mount even when the test fails.
    let dir = HostDir::create("template-root-bind");
    let script = "mount --bind / \"$1\" || exit 99
\"$0\" run --template \"$1\" -- /bin/true";
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_soulbox"))
        .arg(&dir.path);
    let outcome = outcome_of(command, "soulbox run --template on a bind mount of /");
    assert_soulbox_failed(&outcome, "is the host's root");
}
