//! Commands in a real sandbox: exit statuses, output, environment, working
//! directory, users, timeouts, signals and killing whole process trees.

use std::time::Duration;

use soulbox_core::{CommandEvent, CommandHandle, CommandSpec, Error, ExitStatus, Sandbox};
use soulbox_tests::*;

/// Returns a description of every process in the sandbox whose command
/// name is `name`, as "pid state", zombies included.
async fn processes_named(sandbox: &Sandbox, name: &str) -> Vec<String> {
    // A process that exits during the scan makes cat print "No such file"
    // on stderr, which is dropped.
    let output = sh(sandbox, "cat /proc/[0-9]*/stat 2>/dev/null").await;
    let text = stdout(&output);
    let mut found = Vec::new();
    for line in text.lines() {
        // Format: "PID (COMM) STATE ...". COMM may contain ") ", so it
        // ends at the last ')'.
        let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
            continue;
        };
        let pid = line[..open].trim();
        let comm = &line[open + 1..close];
        let state = line[close + 1..].split_whitespace().next().unwrap_or("?");
        if comm == name {
            found.push(format!("{pid} {state}"));
        }
    }
    found
}

/// Waits up to 5 s for every process named `name` to be gone, and returns
/// those still present afterwards. The wait gives the sandbox's supervisor
/// time to reap the processes that a kill ended.
async fn leftover_processes(sandbox: &Sandbox, name: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let found = processes_named(sandbox, name).await;
        if found.is_empty() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to 5 s until `count` processes named `name` run, and returns
/// those found. A forked child takes a moment to exec its program, so a
/// shell can print or exit before its background jobs carry their names.
async fn started_processes(sandbox: &Sandbox, name: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let found = processes_named(sandbox, name).await;
        if found.len() >= count || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the command's stdout events until they contain `marker`, and
/// returns what was read.
async fn read_until(handle: &mut CommandHandle, marker: &str) -> String {
    let mut seen = Vec::new();
    let read = async {
        while !String::from_utf8_lossy(&seen).contains(marker) {
            match handle
                .next_event()
                .await
                .expect("read the command's events")
            {
                Some(CommandEvent::Stdout(bytes)) => seen.extend_from_slice(&bytes),
                Some(CommandEvent::Stderr(_)) => {}
                other => {
                    panic!("command ended before {marker:?} was printed: {other:?}; got {seen:?}")
                }
            }
        }
    };
    within_limit(&format!("waiting for {marker:?} on stdout"), read).await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_reported() {
    if !require_root("exit_codes_reported") {
        return;
    }
    let sbx = sandbox().await;
    for code in [0, 3, 255] {
        let output = sh(&sbx, &format!("exit {code}")).await;
        assert_eq!(
            output.status,
            ExitStatus::Code(code),
            "`exit {code}` should report Code({code})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_by_signal_reported() {
    if !require_root("killed_by_signal_reported") {
        return;
    }
    let sbx = sandbox().await;
    let kill = sh(&sbx, "kill -9 $$").await;
    assert_eq!(
        kill.status,
        ExitStatus::Signal(9),
        "a shell that sent itself SIGKILL"
    );
    assert_eq!(
        kill.status.code(),
        None,
        "a killed command has no exit code"
    );
    let term = sh(&sbx, "kill -TERM $$").await;
    assert_eq!(
        term.status,
        ExitStatus::Signal(15),
        "a shell that sent itself SIGTERM"
    );
    assert!(
        !term.timed_out,
        "a command that ended itself is not timed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_keeps_output() {
    if !require_root("nonzero_exit_keeps_output") {
        return;
    }
    let sbx = sandbox().await;
    let output = sh(&sbx, "echo out; echo err >&2; exit 3").await;
    assert_eq!(output.stdout, b"out\n", "stdout of a failing command");
    assert_eq!(output.stderr, b"err\n", "stderr of a failing command");
    assert_eq!(output.status, ExitStatus::Code(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_closed() {
    if !require_root("stdin_is_closed") {
        return;
    }
    let sbx = sandbox().await;
    let started = std::time::Instant::now();
    let output = sbx
        .shell("cat")
        .timeout(Some(Duration::from_secs(10)))
        .output()
        .await
        .expect("run cat");
    let elapsed = started.elapsed();
    assert!(
        !output.timed_out,
        "cat waited for input until the 10 s timeout, so stdin is open"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "cat took {elapsed:?} to see end of file"
    );
    assert_eq!(
        output.status,
        ExitStatus::Code(0),
        "cat on /dev/null; stderr: {:?}",
        output.stderr
    );
    assert!(
        output.stdout.is_empty(),
        "cat printed {:?} from stdin",
        output.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_layers_override() {
    if !require_root("env_layers_override") {
        return;
    }
    let options = soulbox_tests::options().env("FOO", "bar");
    let sbx = Sandbox::create(options)
        .await
        .expect("create a sandbox with FOO=bar");

    let sandbox_env = sh(&sbx, "echo $FOO").await;
    assert_eq!(
        stdout(&sandbox_env),
        "bar\n",
        "the sandbox's FOO should reach commands"
    );

    let command_env = sbx
        .shell("echo $FOO")
        .env("FOO", "baz")
        .output()
        .await
        .expect("run echo $FOO");
    assert_eq!(
        stdout(&command_env),
        "baz\n",
        "the command's FOO should override the sandbox's"
    );

    let defaults = sh(&sbx, "echo $HOME $USER").await;
    assert_eq!(
        stdout(&defaults),
        "/home/user user\n",
        "default HOME and USER"
    );

    let root = sbx
        .command("whoami")
        .user("root")
        .output()
        .await
        .expect("run whoami as root");
    assert_eq!(stdout(&root), "root\n", "whoami with user(\"root\")");
}

/// Sends a sandbox's and a command's environment of 230 KB each, larger
/// than a Unix socket's default send buffer (212,992 bytes on most hosts)
/// and smaller than the protocol's 256 KiB. Each uses two variables,
/// because exec rejects a single one of 128 KiB or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_near_protocol_limit() {
    if !require_root("environment_near_protocol_limit") {
        return;
    }
    let value = |letter: &str| letter.repeat(115_000);
    let options = soulbox_tests::options()
        .env("SANDBOX_A", value("a"))
        .env("SANDBOX_B", value("b"));
    let sbx = Sandbox::create(options)
        .await
        .expect("create a sandbox with a 230 KB environment");
    let lengths = sbx
        .shell("echo ${#SANDBOX_A} ${#SANDBOX_B}")
        .output()
        .await
        .expect("read the sandbox's environment");
    assert_eq!(
        stdout(&lengths),
        "115000 115000\n",
        "the sandbox's variables"
    );

    let lengths = sbx
        .shell("echo ${#COMMAND_A} ${#COMMAND_B} ${#SANDBOX_A}")
        .env("COMMAND_A", value("c"))
        .env("COMMAND_B", value("d"))
        .env("SANDBOX_A", "")
        .env("SANDBOX_B", "")
        .output()
        .await
        .expect("run a command with a 230 KB environment");
    assert_eq!(
        stdout(&lengths),
        "115000 115000 0\n",
        "the command's variables"
    );

    // Three variables of 115 KB: above 256 KiB.
    let oversized = sbx
        .shell("true")
        .env("COMMAND_A", value("c"))
        .env("COMMAND_B", value("d"))
        .env("COMMAND_C", value("e"))
        .output()
        .await;
    match oversized {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("arguments and environment"),
                "the message does not say what is too large: {message}"
            );
            assert!(
                message.contains("in a file or on stdin"),
                "the message does not say what to do instead: {message}"
            );
        }
        other => panic!("an oversized command did not fail with InvalidArgument: {other:?}"),
    }
    let after = sh(&sbx, "echo alive").await;
    assert_eq!(
        stdout(&after),
        "alive\n",
        "the sandbox after the rejected command"
    );
    sbx.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_cwd_rejected() {
    if !require_root("missing_cwd_rejected") {
        return;
    }
    let sbx = sandbox().await;
    match sbx.command("pwd").cwd("/nope").output().await {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("/nope"),
                "the message should name the directory: {message}"
            )
        }
        other => panic!("pwd in /nope should fail with InvalidArgument, got {other:?}"),
    }

    let touch = sbx.shell("touch /tmp/ran").cwd("/nope").output().await;
    assert!(
        touch.is_err(),
        "a command in a missing cwd should not start, got {touch:?}"
    );
    match sbx.files().read("/tmp/ran").await {
        Err(Error::FileNotFound { .. }) => {}
        other => panic!("/tmp/ran should not exist because nothing ran, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwd_relative_and_absolute() {
    if !require_root("cwd_relative_and_absolute") {
        return;
    }
    let sbx = sandbox().await;
    sbx.files()
        .make_dir("work/sub")
        .await
        .expect("make work/sub");

    let relative = sbx
        .command("pwd")
        .cwd("work/sub")
        .output()
        .await
        .expect("pwd in work/sub");
    assert_eq!(
        stdout(&relative),
        "/home/user/work/sub\n",
        "a relative cwd starts at the home"
    );

    let absolute = sbx
        .command("pwd")
        .cwd("/tmp")
        .output()
        .await
        .expect("pwd in /tmp");
    assert_eq!(stdout(&absolute), "/tmp\n", "an existing absolute cwd");

    let default = sbx.command("pwd").output().await.expect("pwd without cwd");
    assert_eq!(
        stdout(&default),
        "/home/user\n",
        "the default cwd is the user's home"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_rejected() {
    if !require_root("unknown_user_rejected") {
        return;
    }
    let sbx = sandbox().await;
    match sbx.command("true").user("bob").output().await {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("bob"),
                "the message should name the user: {message}"
            )
        }
        other => panic!("user bob should fail with InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_fails_spawn() {
    if !require_root("missing_program_fails_spawn") {
        return;
    }
    let sbx = sandbox().await;
    let program = "soulbox-no-such-program";
    match sbx.command(program).output().await {
        Err(Error::Spawn {
            program: reported, ..
        }) => {
            assert_eq!(reported, program, "Error::Spawn should name the program")
        }
        other => panic!("a missing program should fail with Error::Spawn, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_children() {
    if !require_root("timeout_kills_children") {
        return;
    }
    let sbx = sandbox().await;
    let started = std::time::Instant::now();
    let mut command = sbx.shell("sleep 300 & sleep 300 & wait");
    command.timeout(Some(Duration::from_secs(2)));
    let output = within_limit("a command with a 2 s timeout", command.output())
        .await
        .expect("run the sleeps");
    let elapsed = started.elapsed();

    assert!(
        output.timed_out,
        "the 2 s timeout should end `wait`; status {}",
        output.status
    );
    assert_eq!(
        output.status,
        ExitStatus::Signal(9),
        "status after a timeout"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "the timeout took {elapsed:?} to end the command"
    );

    let left = leftover_processes(&sbx, "sleep").await;
    assert!(
        left.is_empty(),
        "sleep processes survived the timeout (pid state): {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_detached() {
    if !require_root("timeout_kills_detached") {
        return;
    }
    let sbx = sandbox().await;
    // One sleep leads its own session. The other is orphaned by a subshell
    // that exits at once, so its parent is no longer the command's shell.
    let line = "setsid sleep 300 & (sleep 301 &); wait";
    let mut command = sbx.shell(line);
    command.timeout(Some(Duration::from_secs(2)));
    let output = within_limit("a command with a 2 s timeout", command.output())
        .await
        .expect("run the detached sleeps");
    assert!(
        output.timed_out,
        "the 2 s timeout should end `wait`; status {}",
        output.status
    );
    let left = leftover_processes(&sbx, "sleep").await;
    assert!(
        left.is_empty(),
        "detached sleep processes survived the timeout: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_kill_ends_tree() {
    if !require_root("child_kill_ends_tree") {
        return;
    }
    let sbx = sandbox().await;
    let line = "sleep 300 & setsid sleep 301 & (sleep 302 &); echo ready; wait";
    let mut child = sbx
        .shell(line)
        .timeout(None)
        .start()
        .await
        .expect("start the sleeps");
    read_until(&mut child, "ready").await;
    let before = started_processes(&sbx, "sleep", 3).await;
    assert_eq!(
        before.len(),
        3,
        "three sleeps should run before the kill: {before:?}"
    );

    child.kill().await.expect("kill the command's tree");
    let status = within_limit("wait after kill", child.wait())
        .await
        .expect("wait")
        .status;
    assert_eq!(
        status,
        ExitStatus::Signal(9),
        "the shell's status after CommandHandle::kill"
    );
    let left = leftover_processes(&sbx, "sleep").await;
    assert!(
        left.is_empty(),
        "sleep processes survived CommandHandle::kill: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_kill_after_leader_exit() {
    if !require_root("child_kill_after_leader_exit") {
        return;
    }
    let sbx = sandbox().await;
    // The shell exits at once and leaves both sleeps running in the
    // background, one of them in its own session.
    let line = "sleep 300 & setsid sleep 301 & echo ready";
    let mut child = sbx
        .shell(line)
        .timeout(None)
        .start()
        .await
        .expect("start the sleeps");
    let status = within_limit("wait for the shell", child.wait())
        .await
        .expect("wait")
        .status;
    assert_eq!(
        status,
        ExitStatus::Code(0),
        "the shell exits while its sleeps run on"
    );
    let before = started_processes(&sbx, "sleep", 2).await;
    assert_eq!(
        before.len(),
        2,
        "two sleeps should outlive the shell: {before:?}"
    );

    child.kill().await.expect("kill the command's tree");
    let left = leftover_processes(&sbx, "sleep").await;
    assert!(
        left.is_empty(),
        "sleeps left behind by the shell survived CommandHandle::kill: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_reaches_trap() {
    if !require_root("signal_reaches_trap") {
        return;
    }
    let sbx = sandbox().await;
    let line = "trap 'echo got; exit 5' TERM; echo ready; while :; do sleep 0.1; done";
    let mut child = sbx
        .shell(line)
        .timeout(None)
        .start()
        .await
        .expect("start the trap");
    let mut printed = read_until(&mut child, "ready").await;

    child.signal(15).await.expect("send SIGTERM");
    let output = within_limit("wait after SIGTERM", child.wait())
        .await
        .expect("wait");
    printed.push_str(&String::from_utf8_lossy(&output.stdout));
    let status = output.status;

    assert_eq!(status, ExitStatus::Code(5), "the TERM trap exits with 5");
    assert!(
        printed.contains("got"),
        "the TERM trap should print `got`; stdout: {printed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_collected() {
    if !require_root("large_output_collected") {
        return;
    }
    let sbx = sandbox().await;
    let counted = sh(&sbx, "yes | head -c 200000000 | wc -c").await;
    assert_eq!(
        stdout(&counted).trim(),
        "200000000",
        "wc -c over 200 MB from a pipe"
    );

    const LEN: usize = 50_000_000;
    let output = sh(&sbx, &format!("yes abcdefghi | head -c {LEN}")).await;
    assert!(!output.timed_out, "writing 50 MB timed out");
    assert_eq!(
        output.stdout.len(),
        LEN,
        "bytes collected from a 50 MB stdout"
    );
    let expected: Vec<u8> = b"abcdefghi\n".iter().copied().cycle().take(LEN).collect();
    assert!(
        output.stdout == expected,
        "the 50 MB stdout differs from `yes abcdefghi`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_raw_bytes() {
    if !require_root("output_is_raw_bytes") {
        return;
    }
    let sbx = sandbox().await;
    let lone = sh(&sbx, r"printf '\xe2'").await;
    assert_eq!(lone.stdout, [0xe2], "a lone UTF-8 lead byte on stdout");

    // 0xE2 starts a three-byte UTF-8 sequence. As byte 8192 it ends an 8 KiB
    // chunk (the default buffer size of std's BufReader), so a decoder that
    // works chunk by chunk sees half a character there.
    let line = r"head -c 8191 /dev/zero | tr '\0' a; printf '\xe2'";
    let long = sh(&sbx, line).await;
    let mut expected = vec![b'a'; 8191];
    expected.push(0xe2);
    assert_eq!(
        long.stdout.len(),
        expected.len(),
        "length of 8191 'a's and 0xE2"
    );
    assert!(
        long.stdout == expected,
        "8191 'a's then 0xE2 came back changed"
    );

    let err = sh(&sbx, r"printf '\xff\xfe' >&2").await;
    assert_eq!(err.stderr, [0xff, 0xfe], "invalid UTF-8 on stderr");
}

/// A command started with the create, with every setting a [`CommandSpec`]
/// contains, and the sandbox usable as any other afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_runs_the_first_command() {
    if !require_root("create_and_start_runs_the_first_command") {
        return;
    }
    let options = options().env("FROM_SANDBOX", "sandbox");
    let mut spec = CommandSpec::new("sh");
    spec.argv.extend(
        [
            "-c",
            "read line; echo \"$line $FROM_SANDBOX $FROM_COMMAND\"; pwd; id -u",
        ]
        .map(Into::into),
    );
    spec.envs.push(("FROM_COMMAND".into(), "command".into()));
    spec.cwd = Some("/tmp".into());
    spec.user = Some("root".into());
    spec.stdin = true;
    let (sandbox, mut handle) = within_limit(
        "create_and_start",
        Sandbox::create_and_start(options, &spec),
    )
    .await
    .expect("create a sandbox and start the command");
    handle.send_stdin(b"stdin\n").await.expect("send stdin");
    let output = within_limit("the first command", handle.wait())
        .await
        .expect("wait for the first command");
    assert_eq!(output.status, ExitStatus::Code(0));
    assert_eq!(stdout(&output), "stdin sandbox command\n/tmp\n0\n");

    // The sandbox is an ordinary one: more commands and files work.
    assert_eq!(stdout(&sh(&sandbox, "echo again").await), "again\n");
    sandbox
        .files()
        .write("/tmp/after", b"written")
        .await
        .expect("write a file");
    assert_eq!(
        sandbox.files().read("/tmp/after").await.expect("read it"),
        b"written"
    );
}

/// The first command's timeout kills it, and a program that does not
/// exist fails the call with the same error as [`Command::start`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_applies_timeout_and_reports_a_missing_program() {
    if !require_root("create_and_start_applies_timeout_and_reports_a_missing_program") {
        return;
    }
    let mut spec = CommandSpec::new("sleep");
    spec.argv.push("30".into());
    spec.timeout = Some(Duration::from_millis(300));
    let (_sandbox, mut handle) = within_limit(
        "create_and_start",
        Sandbox::create_and_start(options(), &spec),
    )
    .await
    .expect("create a sandbox and start sleep");
    let output = within_limit("the timed-out command", handle.wait())
        .await
        .expect("wait for sleep");
    assert!(
        output.timed_out,
        "sleep 30 ended without its timeout: {output:?}"
    );

    let missing = CommandSpec::new("/no/such/program");
    match within_limit(
        "create_and_start",
        Sandbox::create_and_start(options(), &missing),
    )
    .await
    {
        Err(error @ Error::Spawn { .. }) => {
            assert_eq!(error.errno(), Some(libc::ENOENT), "{error}");
        }
        other => panic!("a missing program gave {other:?}, not a Spawn error"),
    }
}

/// A command that ends the sandbox takes the sandbox and everything it
/// left running with it, after its own exit is reported; its output and
/// status still arrive in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_sandbox_takes_the_sandbox_with_it() {
    if !require_root("ends_sandbox_takes_the_sandbox_with_it") {
        return;
    }
    let mut spec = CommandSpec::new("sh");
    spec.argv
        .extend(["-c", "sleep 600 & echo left a sleeper; exit 3"].map(Into::into));
    spec.ends_sandbox = true;
    let (sandbox, mut handle) = within_limit(
        "create_and_start",
        Sandbox::create_and_start(options(), &spec),
    )
    .await
    .expect("create a sandbox and start the command");
    let pid1 = sandbox.pid();
    let cgroups = sandbox.cgroup_paths();
    let output = within_limit("the command", handle.wait())
        .await
        .expect("wait for the command");
    assert_eq!(output.status, ExitStatus::Code(3));
    assert_eq!(stdout(&output), "left a sleeper\n");

    // PID 1 exits on its own, and with it the sleeper.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host_process_alive(pid1) {
        assert!(
            std::time::Instant::now() < deadline,
            "PID 1 ({pid1}) still runs 10 s after the command that ends the sandbox"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for dir in &cgroups {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        assert!(
            procs.trim().is_empty(),
            "{} still has processes: {procs}",
            dir.display()
        );
    }
    sandbox.kill().await.expect("kill the ended sandbox");
    for dir in &cgroups {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

/// Without `ends_sandbox`, the same command leaves the sandbox running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ends_sandbox_the_sandbox_stays() {
    if !require_root("without_ends_sandbox_the_sandbox_stays") {
        return;
    }
    let sandbox = sandbox().await;
    let output = sandbox.command("true").output().await.expect("run true");
    assert_eq!(output.status, ExitStatus::Code(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sandbox.is_running(),
        "the sandbox ended with an ordinary command"
    );
    let mut command = sandbox.command("true");
    command.ends_sandbox(true);
    let output = command.output().await.expect("run true ending the sandbox");
    assert_eq!(output.status, ExitStatus::Code(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sandbox.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox still runs 10 s after a command that ends it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A first command that ends the sandbox may be done, and PID 1 gone,
/// before this process has finished taking over the sandbox. Every one of
/// many such calls must still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_survives_an_instant_end() {
    if !require_root("create_and_start_survives_an_instant_end") {
        return;
    }
    let mut spec = CommandSpec::new("/bin/true");
    spec.ends_sandbox = true;
    for round in 0..100 {
        let (sandbox, mut handle) = Sandbox::create_and_start(options(), &spec)
            .await
            .unwrap_or_else(|e| panic!("round {round}: create_and_start failed: {e}"));
        let output = handle.wait().await.expect("wait for /bin/true");
        assert_eq!(output.status, ExitStatus::Code(0), "round {round}");
        sandbox.kill().await.expect("kill the ended sandbox");
    }
}
