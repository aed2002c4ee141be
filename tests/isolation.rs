//! End-to-end checks that a sandbox cannot see or change the host: PID,
//! UTS, network and mount namespaces, the read-only system directories,
//! host secrets, the host environment, and other sandboxes' files.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;

use soulbox_core::{Error, Output};
use soulbox_tests::*;

/// Reads the host's mount table as a set of lines.
fn host_mountinfo_lines() -> HashSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read the host's /proc/self/mountinfo")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Splits `env -0` output into its `KEY=VALUE` entries.
fn env_entries(output: &Output) -> Vec<String> {
    output
        .stdout
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_is_init_and_host_hidden() {
    if !require_root("pid1_is_init_and_host_hidden") {
        return;
    }
    let sandbox = sandbox().await;

    let pid1 = sh(&sandbox, "cat /proc/1/comm").await;
    assert!(
        pid1.status.success(),
        "reading /proc/1/comm failed: {pid1:?}"
    );
    assert_eq!(
        stdout(&pid1).trim_end(),
        "soulbox-init",
        "PID 1 in the sandbox is not SoulBox's init"
    );

    // One "PID COMM" line per process the sandbox's /proc lists.
    let listing = sh(
        &sandbox,
        r#"for dir in /proc/[0-9]*; do echo "${dir#/proc/} $(cat "$dir/comm" 2>/dev/null)"; done"#,
    )
    .await;
    assert!(
        listing.status.success(),
        "listing the sandbox's /proc failed: {listing:?}"
    );
    let listing = stdout(&listing);
    let processes: Vec<(u32, String)> = listing
        .lines()
        .filter_map(|line| {
            let (pid, comm) = line.split_once(' ')?;
            Some((pid.parse().ok()?, comm.to_string()))
        })
        .collect();
    assert!(
        processes.iter().any(|(pid, _)| *pid == 1),
        "the sandbox's /proc does not list PID 1, so the listing is broken:\n{listing}"
    );
    // Inside there are only PID 1, the command's supervisor, bash and the
    // short-lived subshells of the loop.
    assert!(
        processes.len() < 10,
        "the sandbox's /proc lists {} processes, so host processes may be visible:\n{listing}",
        processes.len()
    );

    let host_pid = std::process::id();
    assert!(
        processes.iter().all(|(pid, _)| *pid != host_pid),
        "the sandbox's /proc lists pid {host_pid}, the test process's host pid:\n{listing}"
    );
    let test_comm = std::fs::read_to_string("/proc/self/comm").expect("read the test's comm");
    let test_comm = test_comm.trim_end();
    assert!(
        processes.iter().all(|(_, comm)| comm != test_comm),
        "a process in the sandbox has the test process's name {test_comm:?}:\n{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_is_sandbox_id() {
    if !require_root("hostname_is_sandbox_id") {
        return;
    }
    let sandbox = sandbox().await;

    let output = sh(&sandbox, "hostname").await;
    assert!(output.status.success(), "hostname failed: {output:?}");
    assert_eq!(
        stdout(&output).trim_end(),
        sandbox.id(),
        "hostname(1) differs from the sandbox id"
    );

    let output = sh(&sandbox, "cat /proc/sys/kernel/hostname").await;
    assert!(
        output.status.success(),
        "reading /proc/sys/kernel/hostname failed: {output:?}"
    );
    assert_eq!(
        stdout(&output).trim_end(),
        sandbox.id(),
        "/proc/sys/kernel/hostname differs from the sandbox id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_loopback_only() {
    if !require_root("network_is_loopback_only") {
        return;
    }
    // Bound before the sandbox exists, so a leak into the host's network
    // namespace would find it listening.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a host listener on loopback");
    let port = listener.local_addr().expect("host listener address").port();
    let sandbox = sandbox().await;

    // /proc/net/dev has two header lines, then one "name: counters" line
    // per interface.
    let dev = sh(&sandbox, "cat /proc/net/dev").await;
    assert!(
        dev.status.success(),
        "reading /proc/net/dev failed: {dev:?}"
    );
    let dev = stdout(&dev);
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "the sandbox has interfaces other than lo:\n{dev}"
    );

    let echo = sh(
        &sandbox,
        "python3 -c '
import socket
server = socket.socket()
server.bind((\"127.0.0.1\", 0))
server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=2)
conn, _ = server.accept()
client.sendall(b\"ping\")
print(conn.recv(4).decode())
'",
    )
    .await;
    assert!(
        echo.status.success(),
        "TCP over the sandbox's loopback failed, so lo may be down: {echo:?}"
    );
    assert_eq!(
        stdout(&echo),
        "ping\n",
        "TCP over the sandbox's loopback returned wrong data"
    );

    let escape = sh(
        &sandbox,
        &format!(
            "python3 -c '
import socket
try:
    socket.create_connection((\"127.0.0.1\", {port}), timeout=2)
except OSError as e:
    print(\"failed:\", repr(e))
else:
    print(\"connected\")
'"
        ),
    )
    .await;
    assert!(
        escape.status.success(),
        "the connection attempt did not run: {escape:?}"
    );
    let escape_stdout = stdout(&escape);
    assert!(
        escape_stdout.starts_with("failed:"),
        "a connection from the sandbox to host port 127.0.0.1:{port} did not fail: {escape_stdout}"
    );

    listener
        .set_nonblocking(true)
        .expect("make the host listener non-blocking");
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the host listener on port {port} has a pending connection or failed: {accepted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr_is_read_only() {
    if !require_root("usr_is_read_only") {
        return;
    }
    let sandbox = sandbox().await;
    let name = unique_name("usr-write");
    let host_file = Path::new("/usr").join(&name);
    let host_dir = Path::new("/usr/lib").join(&name);

    for user in ["user", "root"] {
        let touch = sandbox
            .shell(format!("touch /usr/{name}"))
            .user(user)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run touch as {user}: {e}"));
        assert!(
            !touch.status.success(),
            "touch /usr/{name} as {user} succeeded: {touch:?}"
        );

        let mkdir = sandbox
            .shell(format!("mkdir /usr/lib/{name}"))
            .user(user)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run mkdir as {user}: {e}"));
        assert!(
            !mkdir.status.success(),
            "mkdir /usr/lib/{name} as {user} succeeded: {mkdir:?}"
        );
    }

    assert!(
        !host_file.exists(),
        "a write in the sandbox created {} on the host",
        host_file.display()
    );
    assert!(
        !host_dir.exists(),
        "a write in the sandbox created {} on the host",
        host_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_secrets_invisible() {
    if !require_root("host_secrets_invisible") {
        return;
    }
    let name = unique_name("root-marker");
    let marker = HostFile::create(Path::new("/root").join(&name), "host secret\n");
    assert!(
        marker.path.exists(),
        "the host marker {} was not created",
        marker.path.display()
    );
    let sandbox = sandbox().await;

    let shadow = sh_as_root(&sandbox, "test -e /etc/shadow").await;
    assert_eq!(
        shadow.status.code(),
        Some(1),
        "/etc/shadow exists in the sandbox: {shadow:?}"
    );

    let as_user = sh(&sandbox, &format!("test -e /root/{name}")).await;
    assert_eq!(
        as_user.status.code(),
        Some(1),
        "the host marker /root/{name} is visible to the sandbox's user: {as_user:?}"
    );
    let as_root = sh_as_root(&sandbox, &format!("test -e /root/{name}")).await;
    assert_eq!(
        as_root.status.code(),
        Some(1),
        "the host marker /root/{name} is visible to the sandbox's root: {as_root:?}"
    );

    let root_home = sh_as_root(&sandbox, "ls -A /root").await;
    assert!(
        root_home.status.success(),
        "ls -A /root as root failed: {root_home:?}"
    );
    assert_eq!(stdout(&root_home), "", "the sandbox's /root is not empty");

    let homes = sh(&sandbox, "ls -A /home").await;
    assert!(homes.status.success(), "ls -A /home failed: {homes:?}");
    assert_eq!(
        stdout(&homes),
        "user\n",
        "the sandbox's /home holds more than user"
    );
}

/// Programs under /usr find the settings that their packages keep in the
/// host's /etc, while files that may hold credentials stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_template_carries_package_settings() {
    if !require_root("host_template_carries_package_settings") {
        return;
    }
    let sandbox = sandbox().await;

    let service = sh(
        &sandbox,
        "python3 -c \"import socket; print(socket.getservbyname('http'))\"",
    )
    .await;
    assert_eq!(
        stdout(&service),
        "80\n",
        "getservbyname in the sandbox: {service:?}"
    );

    for path in [
        "/etc/services",
        "/etc/fonts/fonts.conf",
        "/etc/matplotlibrc",
    ] {
        if Path::new(path).exists() {
            let copied = sh(&sandbox, &format!("test -r {path}")).await;
            assert!(
                copied.status.success(),
                "{path} of the host is missing in the sandbox"
            );
        }
    }
    for path in [
        "/etc/pip.conf",
        "/etc/npmrc",
        "/etc/gitconfig",
        "/etc/machine-id",
    ] {
        let absent = sh_as_root(&sandbox, &format!("test -e {path}")).await;
        assert_eq!(
            absent.status.code(),
            Some(1),
            "{path} is in the sandbox: {absent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_env_not_inherited() {
    if !require_root("host_env_not_inherited") {
        return;
    }
    // Variables that SoulBox or bash set inside and whose values may equal
    // the host's by coincidence. bash sets SHLVL itself.
    const MAY_COINCIDE: [&str; 8] = [
        "PATH", "HOME", "LANG", "USER", "LOGNAME", "SHELL", "TERM", "SHLVL",
    ];
    let host_entries: Vec<String> = std::env::vars_os()
        .filter(|(key, _)| !MAY_COINCIDE.iter().any(|k| key == *k))
        .map(|(key, value)| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
        .collect();
    let sandbox = sandbox().await;

    let direct = sandbox
        .command("env")
        .arg("-0")
        .output()
        .await
        .expect("run env -0");
    assert!(direct.status.success(), "env -0 failed: {direct:?}");
    let through_shell = sh(&sandbox, "env -0").await;
    assert!(
        through_shell.status.success(),
        "env -0 through the shell failed: {through_shell:?}"
    );

    for (how, output) in [
        ("directly", &direct),
        ("through the login shell", &through_shell),
    ] {
        let inside = env_entries(output);
        assert!(
            inside.iter().any(|entry| entry.starts_with("PATH=")),
            "env -0 run {how} printed no PATH, so its output was not parsed: {inside:?}"
        );

        let build_vars: Vec<&String> = inside
            .iter()
            .filter(|entry| entry.starts_with("CARGO_") || entry.starts_with("RUST_"))
            .collect();
        assert!(
            build_vars.is_empty(),
            "CARGO_ or RUST_ variables leaked into env run {how}: {build_vars:?}"
        );

        let leaked: Vec<&String> = host_entries
            .iter()
            .filter(|entry| inside.contains(entry))
            .collect();
        assert!(
            leaked.is_empty(),
            "host environment entries appear in env run {how}: {leaked:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_private_to_sandbox() {
    if !require_root("files_private_to_sandbox") {
        return;
    }
    let first = sandbox().await;
    let second = sandbox().await;

    let write = sh(&first, "echo a > /home/user/a.txt && echo b > /tmp/b.txt").await;
    assert!(
        write.status.success(),
        "writing the files in the first sandbox failed: {write:?}"
    );
    let present = sh(&first, "test -e /home/user/a.txt && test -e /tmp/b.txt").await;
    assert!(
        present.status.success(),
        "the first sandbox cannot see its own files: {present:?}"
    );

    for path in ["/home/user/a.txt", "/tmp/b.txt"] {
        let test = sh(&second, &format!("test -e {path}")).await;
        assert_eq!(
            test.status.code(),
            Some(1),
            "{path} of the first sandbox is visible in the second: {test:?}"
        );
    }

    let first_id = first.id().to_string();
    first.kill().await.expect("kill the first sandbox");
    for path in ["a.txt", "/tmp/b.txt"] {
        let read = first.files().read(path).await;
        assert!(
            matches!(&read, Err(Error::SandboxNotRunning { id }) if *id == first_id),
            "reading {path} after kill did not fail with SandboxNotRunning for {first_id}: {read:?}"
        );
    }
    let mounts = host_mounts_mentioning(&first_id);
    assert!(
        mounts.is_empty(),
        "host mounts mention the killed sandbox {first_id}: {mounts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_do_not_propagate() {
    if !require_root("mounts_do_not_propagate") {
        return;
    }
    let before = host_mountinfo_lines();
    let sandbox = sandbox().await;

    let inner_mount = sh_as_root(&sandbox, "mount -t tmpfs x /mnt").await;
    assert!(
        !inner_mount.status.success(),
        "sandbox root mounted a tmpfs, so it holds CAP_SYS_ADMIN: {inner_mount:?}"
    );
    let gained: Vec<String> = host_mountinfo_lines()
        .difference(&before)
        .cloned()
        .collect();
    assert!(
        gained.is_empty(),
        "the host's mount table gained lines while the sandbox ran: {gained:?}"
    );

    let source = unique_name("propagation");
    let host_mount = HostTmpfs::mount(&source, Path::new("/tmp").join(&source));
    assert!(
        !host_mounts_mentioning(&source).is_empty(),
        "the host tmpfs {source} on {} is missing from the host's mount table",
        host_mount.dir.display()
    );
    let inside = sh(&sandbox, "cat /proc/self/mountinfo").await;
    assert!(
        inside.status.success(),
        "reading the sandbox's mountinfo failed: {inside:?}"
    );
    let inside = stdout(&inside);
    assert!(
        !inside.contains(&source),
        "the host tmpfs {source}, mounted after creation, appears in the sandbox:\n{inside}"
    );
}

/// Lists `pid state ppid` of every process in the sandbox, from its /proc.
const PROCESS_TABLE: &str = r#"for s in /proc/[0-9]*/stat; do cut -d')' -f2 "$s" | awk -v p="${s#/proc/}" '{print p, $1, $2}'; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_reaped_by_pid1() {
    if !require_root("orphans_reaped_by_pid1") {
        return;
    }
    let sandbox = sandbox().await;
    // As root, kill the supervisor ($PPID of the shell) so the background
    // sleep is orphaned past it and reparented to PID 1, which must reap it.
    // The command's own result is lost with its supervisor.
    let orphaning = "sleep 0.3 & echo $! > /tmp/orphan; kill -9 $PPID";
    let result = sandbox.shell(orphaning).user("root").output().await;
    assert!(
        matches!(result, Err(soulbox_core::Error::Protocol(_))),
        "a command whose supervisor was killed should fail with a protocol error: {result:?}"
    );
    let orphan = sandbox
        .files()
        .read("/tmp/orphan")
        .await
        .expect("read the orphan's pid");
    let orphan = String::from_utf8_lossy(&orphan).trim().to_string();
    assert!(
        !orphan.is_empty(),
        "the shell should record the orphan's pid"
    );

    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let table = stdout(&sh(&sandbox, PROCESS_TABLE).await);
    let zombies: Vec<&str> = table
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("Z"))
        .collect();
    assert!(
        zombies.is_empty(),
        "zombies left in the sandbox: {zombies:?}\n{table}"
    );
    let orphan_left = table
        .lines()
        .any(|l| l.split(' ').next() == Some(orphan.as_str()));
    assert!(
        !orphan_left,
        "orphan {orphan} should have exited and been reaped:\n{table}"
    );
    sandbox.kill().await.expect("kill the sandbox");
}
