//! Requests to a sandbox around the protocol's 256 KiB message limit: from
//! the creating handle, a connected handle, `soulbox exec` and a pool,
//! many at once, and with large sandbox variables. Single arguments and
//! variables are tested around exec's limit for one string. A request up
//! to a limit must run, and one byte more must fail with an
//! `InvalidArgument` that names what to shrink. Neither may hang, leak
//! descriptors or break the sandbox.

use std::time::Duration;

use soulbox_core::{CommandSpec, Error, Output, Result, Sandbox, SandboxOptions, SandboxPool};
use soulbox_tests::*;

/// The protocol's largest message in bytes (`soulbox_proto::MAX_MESSAGE_LEN`).
const MAX_MESSAGE: usize = 256 * 1024;

/// Serializes the tests of this file, so that one test's descriptor
/// counts do not include another's sandboxes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Prints the lengths of its three positional arguments.
const SCRIPT: &str = "echo ${#1} ${#2} ${#3}";

/// Splits `total` bytes into three arguments of 'x', each below exec's
/// 128 KiB limit for one string.
fn padding(total: usize) -> [String; 3] {
    let third = total / 3;
    [
        "x".repeat(third),
        "x".repeat(third),
        "x".repeat(total - 2 * third),
    ]
}

/// Runs `SCRIPT` with `total` bytes of arguments.
async fn run_padded(sandbox: &Sandbox, total: usize) -> Result<Output> {
    let [a, b, c] = padding(total);
    sandbox
        .command("/bin/sh")
        .args(["-c", SCRIPT, "sh", &a, &b, &c])
        .output()
        .await
}

/// Returns the byte count that an oversized-request message reports.
fn reported_len(message: &str) -> usize {
    let after = message
        .split(" take ")
        .nth(1)
        .unwrap_or_else(|| panic!("no size in {message:?}"));
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {message:?}"))
}

/// Returns the encoded size of a request with no padding: the bytes that
/// are not arguments, measured from the error of an oversized request.
async fn request_overhead(sandbox: &Sandbox) -> usize {
    let probe = 300_000;
    match run_padded(sandbox, probe).await {
        Err(Error::InvalidArgument(message)) => reported_len(&message) - probe,
        other => panic!("a 300,000-byte request did not fail with InvalidArgument: {other:?}"),
    }
}

/// Returns the lengths `SCRIPT` prints for `total` bytes of padding.
fn expected_lengths(total: usize) -> String {
    let [a, b, c] = padding(total);
    format!("{} {} {}\n", a.len(), b.len(), c.len())
}

/// Counts this process's open descriptors. The reaper thread closes those
/// of sandboxes killed earlier a moment later, so counts can only be
/// compared with `<=`.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Waits up to 5 s for this process to hold at most `before` descriptors
/// and returns the count then. Background tasks close the descriptors of
/// finished commands and killed sandboxes a moment after the call that
/// ended them returns, while a leaked descriptor stays open.
async fn settled_descriptors(before: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = open_descriptors();
        if now <= before || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that a request of exactly the limit runs and that one byte more
/// is rejected, with the sandbox still working afterwards.
async fn check_limit(sandbox: &Sandbox, label: &str) {
    let overhead = request_overhead(sandbox).await;
    let fits = MAX_MESSAGE - overhead;

    let output = within_limit(label, run_padded(sandbox, fits))
        .await
        .unwrap_or_else(|e| panic!("{label}: a request of exactly {MAX_MESSAGE} bytes: {e}"));
    assert_eq!(
        stdout(&output),
        expected_lengths(fits),
        "{label}: the request of exactly the limit"
    );

    match within_limit(label, run_padded(sandbox, fits + 1)).await {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains(&format!("take {} bytes", MAX_MESSAGE + 1)),
                "{label}: the message does not give the size: {message}"
            );
            assert!(
                message.contains("arguments and environment"),
                "{label}: the message does not say what to shrink: {message}"
            );
        }
        other => panic!("{label}: one byte over the limit did not fail: {other:?}"),
    }
    let alive = sh(sandbox, "echo alive").await;
    assert_eq!(stdout(&alive), "alive\n", "{label}: after the rejection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_at_limit_from_creator() {
    if !require_root("request_at_limit_from_creator") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let sbx = sandbox().await;
    check_limit(&sbx, "creating handle").await;

    // Rejections and near-limit commands leave no descriptor behind.
    let before = open_descriptors();
    for _ in 0..20 {
        assert!(run_padded(&sbx, 300_000).await.is_err());
        run_padded(&sbx, 240_000).await.expect("a 240 KB request");
    }
    let after = settled_descriptors(before).await;
    assert!(
        after <= before,
        "{after} descriptors after 40 requests, {before} before"
    );
    sbx.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_at_limit_from_connected() {
    if !require_root("request_at_limit_from_connected") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let sbx = sandbox().await;
    let connected = Sandbox::connect(sbx.id()).await.expect("connect");
    check_limit(&connected, "connected handle").await;
    drop(connected);
    sbx.kill().await.expect("kill");
}

/// Sandbox variables count towards each command's request, so the limit
/// is the same with them, only reached with fewer arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_at_limit_with_sandbox_envs() {
    if !require_root("request_at_limit_with_sandbox_envs") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let options = options().env("BIG_SANDBOX_VAR", "v".repeat(100_000));
    let sbx = Sandbox::create(options).await.expect("create");
    check_limit(&sbx, "sandbox with a 100 KB variable").await;
    let connected = Sandbox::connect(sbx.id()).await.expect("connect");
    check_limit(&connected, "connected to a sandbox with a 100 KB variable").await;
    sbx.kill().await.expect("kill");
}

/// Sandbox variables that leave no room for any command are rejected when
/// the sandbox or pool is created, instead of by each command later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_sandbox_envs() {
    if !require_root("oversized_sandbox_envs") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let options = options()
        .env("BIG_A", "a".repeat(100_000))
        .env("BIG_B", "b".repeat(100_000))
        .env("BIG_C", "c".repeat(100_000));
    match within_limit("create", Sandbox::create(options.clone())).await {
        Err(Error::InvalidArgument(message)) => assert!(
            message.contains("the sandbox's environment variables take"),
            "the create's message does not name the variables: {message}"
        ),
        Err(other) => panic!("create failed with {other:?}"),
        Ok(sbx) => {
            let id = sbx.id().to_string();
            sbx.kill().await.expect("kill");
            panic!("sandbox {id} with 300 KB of variables was created");
        }
    }
    match SandboxPool::new(options, 1) {
        Err(Error::InvalidArgument(message)) => assert!(
            message.contains("the sandbox's environment variables take"),
            "the pool's message does not name the variables: {message}"
        ),
        Err(other) => panic!("the pool failed with {other:?}"),
        Ok(pool) => {
            pool.close().await;
            panic!("a pool with 300 KB of variables was created");
        }
    }
    // Variables that leave room for a command are accepted. Each stays
    // below exec's 128 KiB limit for one string.
    let options = soulbox_tests::options()
        .env("BIG_A", "a".repeat(100_000))
        .env("BIG_B", "b".repeat(100_000));
    let sbx = Sandbox::create(options)
        .await
        .expect("create with 200 KB of variables");
    let output = sh(&sbx, "echo ${#BIG_A} ${#BIG_B}").await;
    assert_eq!(stdout(&output), "100000 100000\n", "the 100 KB variables");
    sbx.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_requests_at_once() {
    if !require_root("many_large_requests_at_once") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let sbx = sandbox().await;
    let overhead = request_overhead(&sbx).await;
    let fits = MAX_MESSAGE - overhead;
    // The first command that starts opens the sandbox's out-of-memory
    // count file, which stays open until the kill, so it is not counted.
    sh(&sbx, "true").await;
    let before = open_descriptors();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let sbx = sbx.clone();
        // Every third request is one byte over the limit.
        let total = if i % 3 == 2 { fits + 1 } else { fits - i };
        tasks.spawn(async move { (total, run_padded(&sbx, total).await) });
    }

    let mut ran = 0;
    let mut rejected = 0;
    while let Some(joined) = within_limit("24 requests", tasks.join_next()).await {
        let (total, result) = joined.expect("join a request");
        match result {
            Ok(output) if total <= fits => {
                assert_eq!(stdout(&output), expected_lengths(total), "{total} bytes");
                ran += 1;
            }
            Err(Error::InvalidArgument(_)) if total > fits => rejected += 1,
            other => panic!("request of {total} bytes of arguments: {other:?}"),
        }
    }
    assert_eq!(ran, 16, "requests that ran");
    assert_eq!(rejected, 8, "requests rejected");

    let after = settled_descriptors(before).await;
    assert!(
        after <= before,
        "{after} descriptors after the requests, {before} before"
    );
    let alive = sh(&sbx, "echo alive").await;
    assert_eq!(stdout(&alive), "alive\n", "the sandbox afterwards");
    sbx.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stdin_write() {
    if !require_root("large_stdin_write") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let sbx = sandbox().await;
    let handle = sbx
        .command("/usr/bin/wc")
        .arg("-c")
        .stdin(true)
        .start()
        .await
        .expect("start wc");
    let data = vec![b'z'; 8 << 20];
    within_limit("write 8 MiB", handle.send_stdin(&data))
        .await
        .expect("write stdin");
    handle.close_stdin().await.expect("close stdin");
    let mut handle = handle;
    let output = within_limit("wait", handle.wait()).await.expect("wait");
    assert_eq!(stdout(&output).trim(), (8 << 20).to_string());
    sbx.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soulbox_exec_at_limit() {
    if !require_root("soulbox_exec_at_limit") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let sbx = sandbox().await;
    let exec = |total: usize| {
        let [a, b, c] = padding(total);
        std::process::Command::new(soulbox_bin())
            .args(["exec", sbx.id(), "--", "/bin/sh", "-c", SCRIPT, "sh"])
            .args([a, b, c])
            .output()
            .expect("start soulbox exec")
    };
    // Between a Unix socket's default send buffer and the limit.
    let output = exec(240_000);
    assert!(
        output.status.success(),
        "soulbox exec with 240 KB of arguments: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        expected_lengths(240_000)
    );

    let output = exec(270_000);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "270 KB of arguments ran");
    assert!(
        stderr.contains("in a file or on stdin"),
        "soulbox exec's error does not say what to do: {stderr}"
    );
    let alive = sh(&sbx, "echo alive").await;
    assert_eq!(stdout(&alive), "alive\n", "the sandbox afterwards");
    sbx.kill().await.expect("kill");
}

/// A pool's variables reach each handed-over sandbox's commands, with the
/// same limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_request_at_limit() {
    if !require_root("pooled_request_at_limit") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let options: SandboxOptions = options().env("POOL_VAR", "p".repeat(50_000));
    let pool = SandboxPool::new(options, 1).expect("start a pool");
    let sbx = within_limit("hand over", pool.create())
        .await
        .expect("hand over");
    check_limit(&sbx, "pooled sandbox").await;
    sbx.kill().await.expect("kill");
    pool.close().await;
}

/// Returns the longest single argument or `KEY=VALUE` string that exec
/// takes: Linux's MAX_ARG_STRLEN, 32 pages, without the terminating NUL.
fn exec_string_limit() -> usize {
    // SAFETY: sysconf takes a plain constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).expect("page size") * 32 - 1
}

/// Rejects one argument or variable longer than exec takes before the
/// request, with a message that names it. One of exactly that length runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_string_at_exec_limit() {
    if !require_root("single_string_at_exec_limit") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let limit = exec_string_limit();
    let sbx = sandbox().await;

    let longest = sbx
        .command("sh")
        .args(["-c", "echo ${#1}", "sh", &"x".repeat(limit)])
        .output()
        .await
        .expect("an argument of exactly the limit");
    assert_eq!(
        stdout(&longest),
        format!("{limit}\n"),
        "the longest argument"
    );

    match sbx
        .command("sh")
        .args(["-c", "true", "sh", &"x".repeat(limit + 1)])
        .output()
        .await
    {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("argument 4"),
                "the message does not name the argument: {message}"
            );
            assert!(
                message.contains("exec takes"),
                "the message does not give the limit: {message}"
            );
        }
        other => panic!("an argument over the limit did not fail: {other:?}"),
    }

    // KEY=VALUE counts as one string: "V=" takes two bytes.
    let variable = sbx
        .command("sh")
        .args(["-c", "echo ${#V}"])
        .env("V", "v".repeat(limit - 2))
        .output()
        .await
        .expect("a variable of exactly the limit");
    assert_eq!(
        stdout(&variable),
        format!("{}\n", limit - 2),
        "the longest variable"
    );

    match sbx
        .command("true")
        .env("V", "v".repeat(limit - 1))
        .output()
        .await
    {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains("\"V\""),
                "the message does not name the variable: {message}"
            );
            assert!(
                message.contains("exec takes"),
                "the message does not give the limit: {message}"
            );
        }
        other => panic!("a variable over the limit did not fail: {other:?}"),
    }
    let alive = sh(&sbx, "echo alive").await;
    assert_eq!(stdout(&alive), "alive\n", "the sandbox afterwards");
    sbx.kill().await.expect("kill");

    let created = Sandbox::create(options().env("V", "v".repeat(limit - 1))).await;
    match created {
        Err(Error::InvalidArgument(message)) => assert!(
            message.contains("\"V\""),
            "the create's message does not name the variable: {message}"
        ),
        other => panic!("a sandbox variable over the limit did not fail: {other:?}"),
    }
}

/// Returns a [`CommandSpec`] that runs `SCRIPT` with `total` bytes of
/// arguments.
fn padded_spec(total: usize) -> CommandSpec {
    let mut spec = CommandSpec::new("/bin/sh");
    spec.argv
        .extend(["-c", SCRIPT, "sh"].into_iter().map(Into::into));
    spec.argv.extend(padding(total).into_iter().map(Into::into));
    spec
}

/// A first command sent with the create runs up to the limit, and one
/// byte more is rejected before anything is created: `soulbox run` with an
/// unusable state directory still reports the request's size, not the
/// state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_start_at_limit() {
    if !require_root("create_and_start_at_limit") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let sbx = sandbox().await;
    let overhead = request_overhead(&sbx).await;
    sbx.kill().await.expect("kill");
    let fits = MAX_MESSAGE - overhead;

    let started = Sandbox::create_and_start(options(), &padded_spec(fits)).await;
    let (sandbox, mut handle) = started
        .unwrap_or_else(|e| panic!("create_and_start with a request of {MAX_MESSAGE} bytes: {e}"));
    let output = within_limit("the padded command", handle.wait())
        .await
        .expect("wait for the padded command");
    assert_eq!(stdout(&output), expected_lengths(fits));
    sandbox.kill().await.expect("kill");

    let before = open_descriptors();
    match Sandbox::create_and_start(options(), &padded_spec(fits + 1)).await {
        Err(Error::InvalidArgument(message)) => assert!(
            message.contains(&format!("take {} bytes", MAX_MESSAGE + 1)),
            "the message does not give the size: {message}"
        ),
        other => panic!("one byte over the limit did not fail with InvalidArgument: {other:?}"),
    }
    let after = settled_descriptors(before).await;
    assert!(
        after <= before,
        "{after} descriptors after the rejected create_and_start, {before} before"
    );

    // A regular file as the state directory fails any create that gets as
    // far as the state directory.
    let not_a_dir = std::env::temp_dir().join(unique_name("state-file"));
    std::fs::write(&not_a_dir, b"").expect("create the state file");
    let [a, b, c] = padding(300_000);
    let output = std::process::Command::new(soulbox_bin())
        .env("SOULBOX_STATE_DIR", &not_a_dir)
        .args(["run", "--", "/bin/sh", "-c", SCRIPT, "sh"])
        .args([a, b, c])
        .output()
        .expect("start soulbox run");
    let _ = std::fs::remove_file(&not_a_dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "soulbox run: {stderr}");
    assert!(
        stderr.contains("in a file or on stdin"),
        "soulbox run did not reject the request before it used the state directory: {stderr}"
    );
}
