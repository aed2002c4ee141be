//! Port forwarding: `get_host` gives an address on the host's loopback
//! interface whose connections reach a server on the sandbox's loopback.
//! Every connection here stays on the host's loopback and in the sandbox's
//! own network namespace.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use soulbox_core::{Error, Sandbox};
use soulbox_tests::*;

/// Sends `request` to `address` and returns everything read back, or the
/// error of the connection.
fn exchange(address: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// Exchanges with `address` until the reply is not empty (the server in
/// the sandbox may still be starting), for up to 20 s.
async fn exchange_when_up(address: &str, request: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let address = address.to_string();
        let request = request.to_vec();
        let result = tokio::task::spawn_blocking(move || exchange(&address, &request))
            .await
            .expect("the exchange thread panicked");
        match result {
            Ok(reply) if !reply.is_empty() => return reply,
            other if Instant::now() > deadline => {
                panic!("no reply from the sandbox's server within 20 s: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Starts a Python server in the background that listens on `address`
/// (`127.0.0.1` or `::1`) and `port` and replies to each connection with
/// `answer`.
async fn serve(sandbox: &Sandbox, family: &str, address: &str, port: u16, answer: &str) {
    let program = format!(
        "import socket\n\
         s = socket.socket(socket.{family})\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{address}', {port}))\n\
         s.listen()\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   c.recv(100)\n\
         \x20   c.sendall(b'{answer}')\n\
         \x20   c.close()\n"
    );
    sandbox
        .command("python3")
        .args(["-c", &program])
        .timeout(None)
        .start()
        .await
        .expect("start the server")
        .disconnect();
}

#[tokio::test(flavor = "multi_thread")]
async fn http_server_in_sandbox_reached_from_host() {
    if !require_root("http_server_in_sandbox_reached_from_host") {
        return;
    }
    let sandbox = sandbox().await;
    sandbox
        .files()
        .write("/tmp/hello.txt", "hello from the sandbox")
        .await
        .expect("write the page");
    sandbox
        .command("python3")
        .args(["-m", "http.server", "8000", "--bind", "127.0.0.1"])
        .cwd("/tmp")
        .timeout(None)
        .start()
        .await
        .expect("start the server")
        .disconnect();
    let host = sandbox.get_host(8000).expect("forward port 8000");
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    let reply = exchange_when_up(&host, b"GET /hello.txt HTTP/1.0\r\n\r\n").await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.ends_with("hello from the sandbox"), "{reply}");

    let again = sandbox.get_host(8000).expect("forward port 8000 again");
    assert_eq!(again, host, "a port keeps its address");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_on_ipv6_loopback_is_reached() {
    if !require_root("server_on_ipv6_loopback_is_reached") {
        return;
    }
    let sandbox = sandbox().await;
    serve(&sandbox, "AF_INET6", "::1", 8001, "over v6").await;
    let host = sandbox.get_host(8001).expect("forward port 8001");
    assert_eq!(exchange_when_up(&host, b"hi").await, b"over v6");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_to_closed_port_is_reset() {
    if !require_root("connection_to_closed_port_is_reset") {
        return;
    }
    let sandbox = sandbox().await;
    let host = sandbox.get_host(8002).expect("forward port 8002");
    let result = tokio::task::spawn_blocking(move || exchange(&host, b"hi"))
        .await
        .expect("the exchange thread panicked");
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(reply) => panic!("expected a reset, got a reply of {} bytes", reply.len()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_ends_with_the_sandbox() {
    if !require_root("forwarding_ends_with_the_sandbox") {
        return;
    }
    let sandbox = sandbox().await;
    serve(&sandbox, "AF_INET", "127.0.0.1", 8003, "up").await;
    let host = sandbox.get_host(8003).expect("forward port 8003");
    assert_eq!(exchange_when_up(&host, b"hi").await, b"up");

    sandbox.kill().await.expect("kill the sandbox");
    let after = sandbox.get_host(8003);
    assert!(
        matches!(after, Err(Error::SandboxNotRunning { .. })),
        "{after:?}"
    );
    // The listener closes with the sandbox, without a further connection.
    // Binding its address, which std does with SO_REUSEADDR, fails while
    // it listens.
    let deadline = Instant::now() + Duration::from_secs(5);
    let freed = loop {
        match std::net::TcpListener::bind(&host) {
            Ok(_) => break true,
            Err(_) if Instant::now() > deadline => break false,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(freed, "{host} still listens 5 s after the kill");
}

#[tokio::test]
async fn port_zero_is_rejected() {
    if !require_root("port_zero_is_rejected") {
        return;
    }
    let sandbox = sandbox().await;
    let result = sandbox.get_host(0);
    assert!(
        matches!(result, Err(Error::InvalidArgument(_))),
        "{result:?}"
    );
}

#[test]
fn call_outside_a_runtime_is_rejected() {
    if !require_root("call_outside_a_runtime_is_rejected") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("start a tokio runtime");
    let sandbox = runtime.block_on(sandbox());
    let outside = sandbox.get_host(8005);
    match outside {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("tokio runtime"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let _entered = runtime.enter();
    assert!(sandbox.get_host(8005).is_ok());
}

/// A paused sandbox accepts no connection on its control socket, so its
/// forwarded connections are reset at once. Were they queued, 1,024 of them
/// would fill the queue and keep `kill_id` from reaching PID 1, and the
/// connects waiting for room would hold the caller's runtime threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sandbox_resets_forwarded_connections() {
    if !require_root("paused_sandbox_resets_forwarded_connections") {
        return;
    }
    let sandbox = sandbox().await;
    serve(&sandbox, "AF_INET", "127.0.0.1", 8007, "awake").await;
    let host = sandbox.get_host(8007).expect("forward port 8007");
    assert_eq!(exchange_when_up(&host, b"hi").await, b"awake");
    assert!(within_limit("pause", sandbox.pause())
        .await
        .expect("pause the sandbox (needs a writable cgroup v2 hierarchy)"));
    let target = host.clone();
    let results = tokio::task::spawn_blocking(move || {
        (0..1100)
            .map(|_| exchange(&target, b"hi"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("the exchange thread panicked");
    let answered = results
        .iter()
        .filter(|result| matches!(result, Ok(reply) if !reply.is_empty()))
        .count();
    assert_eq!(answered, 0, "a paused sandbox answered");

    let killed = within_limit("kill_id", Sandbox::kill_id(sandbox.id())).await;
    assert!(
        matches!(killed, Ok(true)),
        "kill_id of the paused sandbox: {killed:?}"
    );
}
