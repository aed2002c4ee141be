//! Internet access through slirp4netns: the sandbox's tap device, traffic
//! through the user-mode stack, the gateway kept off the host's loopback,
//! and the end of every slirp4netns with its sandbox.
//!
//! Every packet stays on the host's loopback, in the sandbox's network
//! namespace, or in a network namespace that a test creates: outbound
//! connections are tested with a slirp4netns that a wrapper starts inside
//! such a namespace (through `SOULBOX_SLIRP4NETNS`), where the test's
//! server listens. No test resolves a name.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use soulbox_core::{Network, Sandbox, SandboxPool};
use soulbox_tests::*;

/// How long the host's init may take to reap a slirp4netns that exited.
/// It reaps orphans some time after their exit, not at once.
const REAP_LIMIT: Duration = Duration::from_secs(20);

fn internet() -> soulbox_core::SandboxOptions {
    options().network(Network::Internet)
}

/// Inodes of the pipes that host process `pid` has open.
fn pipe_inodes(pid: i32) -> HashSet<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|link| link.to_string_lossy().into_owned())
        .filter(|link| link.starts_with("pipe:"))
        .collect()
}

/// Returns the pid and start time of the slirp4netns that serves the
/// sandbox whose PID 1 is host process `pid1`: the one that has the read
/// end of the exit pipe open whose write end PID 1 has open.
fn slirp4netns_of(pid1: i32) -> Option<(i32, u64)> {
    let pipes = pipe_inodes(pid1);
    let entries = std::fs::read_dir("/proc").expect("list the host's /proc");
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| host_comm(pid).as_deref() == Some("slirp4netns"))
        .find(|&pid| !pipe_inodes(pid).is_disjoint(&pipes))
        .and_then(|pid| Some((pid, start_time(pid)?)))
}

/// Returns the start time of host process `pid` in clock ticks after boot,
/// which distinguishes it from a later process with the same pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // proc(5): starttime is field 22, the 20th after the comm.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Waits until the process `(pid, start time)` has exited and been reaped,
/// and panics naming `when` if it is still there, running or a zombie,
/// after [`REAP_LIMIT`].
async fn assert_gone(process: (i32, u64), when: &str) {
    let (pid, started) = process;
    let deadline = Instant::now() + REAP_LIMIT;
    while start_time(pid) == Some(started) {
        if Instant::now() > deadline {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            panic!("slirp4netns {pid} is still there {REAP_LIMIT:?} {when}: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the slirp4netns of the sandbox whose PID 1 is `pid1`.
async fn wait_for_slirp4netns(pid1: i32) -> (i32, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = slirp4netns_of(pid1) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no slirp4netns holds an exit pipe of PID 1 ({pid1}) within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the `soulbox` command with `args` and `envs` and returns its output.
fn soulbox(args: &[&str], envs: &[(&str, &Path)]) -> std::process::Output {
    let mut command = Command::new(soulbox_bin());
    command.args(args).stdin(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("run soulbox")
}

/// Creates a persistent internet sandbox with `soulbox create` and the
/// extra `args`, with `SOULBOX_SLIRP4NETNS` set to `program`, and returns a
/// handle to it.
async fn create_with_program(program: &Path, args: &[&str]) -> Sandbox {
    let mut all_args = vec!["create", "--network", "internet", "--timeout", "120"];
    all_args.extend_from_slice(args);
    let output = soulbox(&all_args, &[("SOULBOX_SLIRP4NETNS", program)]);
    assert!(
        output.status.success(),
        "soulbox create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Sandbox::connect(&id).await.expect("connect to the sandbox")
}

/// Kills a sandbox with `soulbox kill`.
fn kill_with_cli(sandbox: &Sandbox) {
    let output = soulbox(&["kill", sandbox.id()], &[]);
    assert!(
        output.status.success(),
        "soulbox kill failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A shell script that SoulBox runs in place of slirp4netns; removed on
/// drop.
struct Wrapper(PathBuf);

impl Wrapper {
    fn new(body: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name("slirp4netns-wrapper"));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the wrapper executable");
        Self(path)
    }
}

impl Drop for Wrapper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A TCP server in a network namespace of its own, whose only interface is
/// its loopback with the extra address 192.0.2.1 (TEST-NET-1). It sends
/// each connection one line and is killed on drop.
struct NamespaceServer {
    child: Child,
    port: u16,
}

const NAMESPACE_ADDRESS: &str = "192.0.2.1";
const NAMESPACE_REPLY: &str = "hello from the test namespace";

impl NamespaceServer {
    fn start() -> Self {
        let program = format!(
            "import socket, sys\n\
             s = socket.socket()\n\
             s.bind(('{NAMESPACE_ADDRESS}', 0))\n\
             s.listen()\n\
             print(s.getsockname()[1], flush=True)\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   c.sendall(b'{NAMESPACE_REPLY}\\n')\n\
             \x20   c.close()\n"
        );
        let script = format!(
            "ip link set lo up && ip addr add {NAMESPACE_ADDRESS}/32 dev lo && exec python3 -c \"$0\""
        );
        let mut child = Command::new("unshare")
            .args(["--net", "sh", "-c", &script, &program])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server in a new network namespace");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the server's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the namespace server printed no port: {line:?}")
        });
        Self { child, port }
    }

    fn namespace_path(&self) -> String {
        format!("/proc/{}/ns/net", self.child.id())
    }
}

impl Drop for NamespaceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python that connects to `address`:`port` from inside the sandbox and
/// prints the first line it reads, or `error:` and the error's errno.
fn client(address: &str, port: u16) -> String {
    format!(
        "python3 -c \"\nimport socket\ntry:\n    c = socket.create_connection(('{address}', {port}), \
         timeout=5)\n    print(c.makefile().readline().strip())\nexcept OSError as e:\n    \
         print('error:', e.errno)\n\""
    )
}

/// Link-local addresses, where clouds serve instance metadata and
/// credentials, have prohibit routes that sandbox root cannot remove. Only
/// route lookups run here: no packet is sent to such an address.
#[tokio::test]
async fn metadata_addresses_are_blocked() {
    if !require_root("metadata_addresses_are_blocked") {
        return;
    }
    let sandbox = Sandbox::create(internet()).await.expect("create");
    let routes = stdout(&sh(&sandbox, "ip -4 route show").await);
    assert!(
        routes.contains("prohibit 169.254.0.0/16"),
        "routes: {routes}"
    );
    assert!(
        routes.contains("prohibit 100.100.100.200"),
        "routes: {routes}"
    );

    let lookup = sh(&sandbox, "ip route get 169.254.1.1").await;
    assert!(
        !lookup.status.success(),
        "a route lookup to 169.254.1.1: {lookup:?}"
    );

    let removal = sandbox
        .shell("ip route del prohibit 169.254.0.0/16")
        .user("root")
        .output()
        .await
        .expect("run ip route del as root");
    assert!(!removal.status.success(), "sandbox root removed the route");
    let routes = stdout(&sh(&sandbox, "ip -4 route show").await);
    assert!(
        routes.contains("prohibit 169.254.0.0/16"),
        "routes: {routes}"
    );

    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn internet_sandbox_has_tap_device() {
    if !require_root("internet_sandbox_has_tap_device") {
        return;
    }
    let sandbox = Sandbox::create(internet()).await.expect("create");
    let address = sh(&sandbox, "ip -o -4 addr show dev eth0").await;
    assert!(
        stdout(&address).contains("inet 10.0.2.100/24"),
        "eth0 address: {}",
        stdout(&address)
    );
    let route = sh(&sandbox, "ip route show default").await;
    assert!(
        stdout(&route).contains("default via 10.0.2.2 dev eth0"),
        "default route: {}",
        stdout(&route)
    );
    let resolv_conf = sh(&sandbox, "cat /etc/resolv.conf").await;
    assert!(
        stdout(&resolv_conf).contains("\nnameserver 10.0.2.3\n"),
        "resolv.conf: {}",
        stdout(&resolv_conf)
    );
    sandbox.kill().await.expect("kill");

    let sandbox = Sandbox::create(options()).await.expect("create");
    let devices = sh(
        &sandbox,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(stdout(&devices), "lo\n", "devices without internet access");
    let resolv_conf = sh(&sandbox, "cat /etc/resolv.conf").await;
    assert!(
        stdout(&resolv_conf).contains("no network but loopback"),
        "resolv.conf: {}",
        stdout(&resolv_conf)
    );
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn outbound_connection_leaves_through_slirp4netns() {
    if !require_root("outbound_connection_leaves_through_slirp4netns") {
        return;
    }
    let server = NamespaceServer::start();
    let wrapper = Wrapper::new(&format!(
        "exec nsenter --net={} slirp4netns \"$@\"",
        server.namespace_path()
    ));
    let sandbox = create_with_program(&wrapper.0, &[]).await;
    let slirp4netns = wait_for_slirp4netns(sandbox.pid()).await;

    let reply = sh(&sandbox, &client(NAMESPACE_ADDRESS, server.port)).await;
    assert_eq!(stdout(&reply).trim(), NAMESPACE_REPLY, "{reply:?}");

    // The persistent sandbox outlived `soulbox create`; `soulbox kill`
    // ends it, and its slirp4netns with it.
    kill_with_cli(&sandbox);
    assert_gone(slirp4netns, "after soulbox kill").await;
}

/// Egress rules with real connections, to the server in the test's own
/// namespace: an allowed address connects through slirp4netns, even
/// inside a more specific denied network, and a denied one fails with
/// EACCES (13) before any packet leaves.
#[tokio::test]
async fn egress_rules_apply_to_connections() {
    if !require_root("egress_rules_apply_to_connections") {
        return;
    }
    let server = NamespaceServer::start();
    let wrapper = Wrapper::new(&format!(
        "exec nsenter --net={} slirp4netns \"$@\"",
        server.namespace_path()
    ));
    let cases: [(&[&str], &str); 3] = [
        (
            &["--deny-out", "0.0.0.0/0", "--allow-out", NAMESPACE_ADDRESS],
            NAMESPACE_REPLY,
        ),
        (
            &[
                "--deny-out",
                NAMESPACE_ADDRESS,
                "--allow-out",
                "192.0.2.0/24",
            ],
            NAMESPACE_REPLY,
        ),
        (&["--deny-out", "192.0.2.0/24"], "error: 13"),
    ];
    for (args, expected) in cases {
        let sandbox = create_with_program(&wrapper.0, args).await;
        let reply = sh(&sandbox, &client(NAMESPACE_ADDRESS, server.port)).await;
        kill_with_cli(&sandbox);
        assert_eq!(stdout(&reply).trim(), expected, "{args:?}: {reply:?}");
    }
}

#[tokio::test]
async fn gateway_does_not_reach_host_loopback() {
    if !require_root("gateway_does_not_reach_host_loopback") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on the host's loopback");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let port = listener.local_addr().expect("listener address").port();
    let sandbox = Sandbox::create(internet()).await.expect("create");

    // slirp4netns 1.2.0 fails the connect with ENETUNREACH; any error
    // will do.
    let result = sh(&sandbox, &client("10.0.2.2", port)).await;
    assert!(
        stdout(&result).starts_with("error: "),
        "a connection to the gateway: {}",
        stdout(&result)
    );
    match listener.accept() {
        Err(error) => assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}"),
        Ok((_, peer)) => panic!("the host's loopback server accepted {peer} from the sandbox"),
    }
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn host_forward_reaches_sandbox_server() {
    if !require_root("host_forward_reaches_sandbox_server") {
        return;
    }
    // slirp4netns's API socket, for this test only, forwards a port of the
    // host's loopback to the sandbox's tap address.
    let api_socket = std::env::temp_dir().join(unique_name("slirp4netns-api"));
    let wrapper = Wrapper::new(&format!(
        "exec slirp4netns --api-socket {} \"$@\"",
        api_socket.display()
    ));
    let sandbox = create_with_program(&wrapper.0, &[]).await;
    let server =
        "python3 -c \"\nimport socket\ns = socket.socket()\ns.bind(('10.0.2.100', 8000))\n\
                  s.listen()\nwhile True:\n    c, a = s.accept()\n    \
                  c.sendall(('via slirp4netns from %s' % a[0]).encode())\n    c.close()\n\" &";
    sh(&sandbox, server).await;

    let free = TcpListener::bind("127.0.0.1:0").expect("find a free port");
    let host_port = free.local_addr().expect("address").port();
    drop(free);
    let request = format!(
        "{{\"execute\": \"add_hostfwd\", \"arguments\": {{\"proto\": \"tcp\", \
         \"host_addr\": \"127.0.0.1\", \"host_port\": {host_port}, \"guest_port\": 8000}}}}"
    );
    let mut api = std::os::unix::net::UnixStream::connect(&api_socket).expect("reach the API");
    api.write_all(request.as_bytes()).expect("send add_hostfwd");
    api.shutdown(std::net::Shutdown::Write)
        .expect("end the request");
    let mut answer = String::new();
    api.read_to_string(&mut answer)
        .expect("read the API's reply");
    assert!(answer.contains("\"return\""), "add_hostfwd: {answer}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match read_all(format!("127.0.0.1:{host_port}")).await {
            Ok(reply) if !reply.is_empty() => break reply,
            other => assert!(
                Instant::now() < deadline,
                "no reply through slirp4netns: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // slirp4netns connects from its gateway address, so the server saw the
    // connection come through the user-mode stack, not through loopback.
    assert_eq!(reply, "via slirp4netns from 10.0.2.2");
    kill_with_cli(&sandbox);
    let _ = std::fs::remove_file(&api_socket);
}

/// Reads what `address` sends until it closes the connection, for up to
/// 10 s, on a blocking thread: the runtime must stay free to run the
/// forwarding of `get_host`.
async fn read_all(address: String) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .await
    .expect("the reading thread panicked")
}

#[tokio::test]
async fn get_host_works_with_internet_access() {
    if !require_root("get_host_works_with_internet_access") {
        return;
    }
    let sandbox = Sandbox::create(internet()).await.expect("create");
    let server = "python3 -c \"\nimport socket\ns = socket.socket()\ns.bind(('127.0.0.1', 8001))\n\
                  s.listen()\nwhile True:\n    c, _ = s.accept()\n    c.sendall(b'forwarded')\n    \
                  c.close()\n\" &";
    sh(&sandbox, server).await;
    let host = sandbox.get_host(8001).expect("get_host");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = read_all(host.clone()).await;
        if matches!(&reply, Ok(text) if text == "forwarded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reply through get_host: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn slirp4netns_ends_with_kill_and_drop() {
    if !require_root("slirp4netns_ends_with_kill_and_drop") {
        return;
    }
    let sandbox = Sandbox::create(internet()).await.expect("create");
    let slirp4netns = wait_for_slirp4netns(sandbox.pid()).await;
    sandbox.kill().await.expect("kill");
    assert_gone(slirp4netns, "after kill()").await;

    let sandbox = Sandbox::create(internet()).await.expect("create");
    let slirp4netns = wait_for_slirp4netns(sandbox.pid()).await;
    drop(sandbox);
    assert_gone(slirp4netns, "after the kill_on_drop handle was dropped").await;
}

#[tokio::test]
async fn slirp4netns_ends_when_creator_dies() {
    if !require_root("slirp4netns_ends_when_creator_dies") {
        return;
    }
    let mut creator = Command::new(soulbox_bin())
        .args(["run", "--network", "internet", "--", "sleep", "100"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start soulbox run");
    let creator_pid = creator.id() as i32;
    // `soulbox run` clones PID 1 from itself, so PID 1 is its child.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (pid1, slirp4netns) = loop {
        let children: Vec<i32> = std::fs::read_dir("/proc")
            .expect("list /proc")
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| host_ppid(pid) == Some(creator_pid as u32))
            .filter(|&pid| host_comm(pid).as_deref() == Some("soulbox-init"))
            .collect();
        if let Some(found) = children
            .iter()
            .find_map(|&pid| Some((pid, slirp4netns_of(pid)?)))
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "soulbox run showed no PID 1 with a slirp4netns within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid1_started = start_time(pid1).expect("PID 1's start time");

    creator.kill().expect("kill soulbox run");
    creator.wait().expect("reap soulbox run");
    assert_gone(slirp4netns, "after its creating process was killed").await;
    let deadline = Instant::now() + REAP_LIMIT;
    while start_time(pid1) == Some(pid1_started) {
        assert!(
            Instant::now() < deadline,
            "PID 1 {pid1} outlived its creator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pooled_internet_sandbox_works() {
    if !require_root("pooled_internet_sandbox_works") {
        return;
    }
    let pool = SandboxPool::new(internet(), 1).expect("start a pool");
    let sandbox = pool.create().await.expect("take a sandbox");
    let slirp4netns = wait_for_slirp4netns(sandbox.pid()).await;
    let address = sh(&sandbox, "ip -o -4 addr show dev eth0").await;
    assert!(
        stdout(&address).contains("inet 10.0.2.100/24"),
        "eth0 address: {}",
        stdout(&address)
    );
    sandbox.kill().await.expect("kill");
    assert_gone(slirp4netns, "after a pooled sandbox was killed").await;
    pool.close().await;
}

#[tokio::test]
async fn missing_slirp4netns_is_named() {
    if !require_root("missing_slirp4netns_is_named") {
        return;
    }
    let empty = std::env::temp_dir().join(unique_name("empty-path"));
    std::fs::create_dir(&empty).expect("create an empty directory");
    let output = soulbox(
        &["run", "--network", "internet", "--", "true"],
        &[("PATH", &empty)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("slirp4netns was not found on PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install slirp4netns"), "{stderr}");

    let missing = empty.join("slirp4netns");
    let output = soulbox(
        &["run", "--network", "internet", "--", "true"],
        &[("SOULBOX_SLIRP4NETNS", &missing)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("is not an executable file"), "{stderr}");
    std::fs::remove_dir(&empty).expect("remove the empty directory");

    // Without internet access nothing looks for slirp4netns.
    let output = soulbox(&["run", "--", "true"], &[("PATH", &empty)]);
    assert!(output.status.success(), "{:?}", output);
}

#[tokio::test]
async fn failed_slirp4netns_output_reported() {
    if !require_root("failed_slirp4netns_output_reported") {
        return;
    }
    let wrapper = Wrapper::new("echo 'no tap device today' >&2\nexit 1");
    let output = soulbox(
        &["run", "--network", "internet", "--", "true"],
        &[("SOULBOX_SLIRP4NETNS", &wrapper.0)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("slirp4netns exited before it brought the tap device up"),
        "{stderr}"
    );
    assert!(stderr.contains("no tap device today"), "{stderr}");
}
