//! Egress rules (`allow_out`, `deny_out`) of sandboxes with internet
//! access: the policy routing rules PID 1 installs, their precedence, and
//! their checks at create.
//!
//! No test sends a packet to an outside address. A connect to a denied
//! address fails inside the sandbox with EACCES before anything is sent,
//! and allowed addresses are only looked up (`ip route get`), never
//! connected to.
//!
//! Sockets bound to eth0 set SO_DONTROUTE and send only to addresses
//! outside 10.0.2.0/24, or to addresses that the nf_tables filter was just
//! seen to drop. A datagram the filter lets through then goes on-link and
//! waits for an ARP reply, which slirp4netns gives only for its own
//! addresses, so nothing but ARP reaches it. TEST-NET addresses alone are
//! not enough: the host may route them, as the CI machine routes
//! 192.0.2.0/24.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use soulbox_core::{Error, Network, Sandbox, SandboxOptions, SandboxPool, ALL_TRAFFIC, DNS_SERVER};
use soulbox_tests::*;

fn internet() -> SandboxOptions {
    options().network(Network::Internet)
}

/// Returns the route the sandbox's kernel picks for `address`, or the
/// lookup's error output prefixed with `error:`. No packet is sent.
async fn route_to(sandbox: &Sandbox, address: &str) -> String {
    let lookup = sh(sandbox, &format!("ip -4 route get {address} 2>&1")).await;
    let text = stdout(&lookup).trim().to_string();
    if lookup.status.success() {
        text
    } else {
        format!("error: {text}")
    }
}

/// Asserts that the sandbox routes `address` through the gateway.
async fn assert_routed(sandbox: &Sandbox, address: &str) {
    let route = route_to(sandbox, address).await;
    assert!(
        route.starts_with(&format!("{address} via 10.0.2.2 dev eth0")),
        "route to {address}: {route}"
    );
}

/// Asserts that a route lookup for `address` fails with EACCES, as for a
/// prohibit route or rule.
async fn assert_prohibited(sandbox: &Sandbox, address: &str) {
    let route = route_to(sandbox, address).await;
    assert!(
        route.starts_with("error: ") && route.contains("Permission denied"),
        "route to {address}: {route}"
    );
}

/// Connects a TCP and a UDP socket to `address` inside the sandbox and
/// returns the errno of each connect, 0 for success. Only call it for an
/// address that is denied: a TCP connect that succeeded would send a SYN,
/// while one that fails with EACCES sends nothing, and a UDP connect never
/// sends anything.
async fn connect_errnos(sandbox: &Sandbox, address: &str, port: u16) -> String {
    let program = format!(
        "python3 -c \"\nimport socket\nfor kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n    \
         s = socket.socket(socket.AF_INET, kind)\n    \
         print(s.connect_ex(('{address}', {port})), end=' ')\n\""
    );
    stdout(&sh(sandbox, &program).await).trim().to_string()
}

/// Python program that sends UDP datagrams to `argv[1]`:`argv[2]` from
/// sockets that name eth0 as their output interface, which skips the
/// policy routing rules. It prints the errno of each send, 0 for success,
/// in this order:
///
/// 1. SO_BINDTODEVICE, then `sendto`;
/// 2. IP_UNICAST_IF, then `sendto`;
/// 3. `sendmsg` with an IP_PKTINFO interface index;
/// 4. SO_BINDTODEVICE, then `connect` and `send`;
/// 5. SO_BINDTODEVICE on an IPv6 socket, then `sendto` to the IPv4-mapped
///    address.
///
/// Every socket sets SO_DONTROUTE, so that a datagram the filter lets
/// through goes to `argv[1]` on eth0's link and waits for an ARP reply,
/// which slirp4netns gives only for its own 10.0.2.x addresses. Without it
/// an allowed destination would be routed through the gateway 10.0.2.2,
/// and slirp4netns would relay the datagram to the real address.
///
/// A failed setsockopt is an uncaught exception.
const BOUND_SEND: &str = r#"
import socket, struct, sys
address, port = sys.argv[1], int(sys.argv[2])
index = socket.if_nametoindex("eth0")
IP_PKTINFO, IP_UNICAST_IF = 8, 50

def bind_to_device(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")

def unicast_if(s):
    s.setsockopt(socket.IPPROTO_IP, IP_UNICAST_IF, struct.pack(">I", index))

def send(setup, how):
    family = socket.AF_INET6 if how == "mapped" else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
    setup(s)
    try:
        if how == "sendto":
            s.sendto(b"x", (address, port))
        elif how == "mapped":
            s.sendto(b"x", ("::ffff:" + address, port))
        elif how == "pktinfo":
            info = struct.pack("=I4s4s", index, bytes(4), bytes(4))
            s.sendmsg([b"x"], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (address, port))
        else:
            s.connect((address, port))
            s.send(b"x")
        return 0
    except OSError as e:
        return e.errno

print(
    send(bind_to_device, "sendto"),
    send(unicast_if, "sendto"),
    send(lambda s: None, "pktinfo"),
    send(bind_to_device, "connect"),
    send(bind_to_device, "mapped"),
)
"#;

/// Runs [`BOUND_SEND`] for port 53 of `address` and asserts that it
/// printed `expected`, five errnos. Only call it for an address outside
/// 10.0.2.0/24, for which slirp4netns gives no ARP reply, or for one that
/// the filter was just seen to drop. With [`ALL_SENT`] it also checks that
/// the datagrams went on-link rather than to the gateway.
async fn assert_bound_sends(sandbox: &Sandbox, address: &str, expected: &str, label: &str) {
    let output = sh(sandbox, &format!("python3 -c '{BOUND_SEND}' {address} 53")).await;
    assert!(
        output.status.success(),
        "{label}: bound sockets to {address}: {output:?}"
    );
    assert_eq!(
        stdout(&output).trim(),
        expected,
        "{label}: errnos of bound sockets' sends to {address}"
    );
    if expected == ALL_SENT {
        // The datagrams went on-link, to an address that gets no ARP
        // reply, and not through the gateway to slirp4netns.
        let neighbours = sh(sandbox, &format!("ip neigh show {address} dev eth0")).await;
        assert!(
            stdout(&neighbours).contains(address),
            "{label}: no ARP entry for {address}, so the sends took a route: {neighbours:?}"
        );
    }
}

/// The output of [`BOUND_SEND`] when the filter drops all five
/// datagrams.
const ALL_DROPPED: &str = "1 1 1 1 1";
/// The output of [`BOUND_SEND`] when every send succeeded. The datagrams
/// then wait on eth0 for an ARP reply that never comes.
const ALL_SENT: &str = "0 0 0 0 0";

/// Returns whether the sandbox's network namespace has the nf_tables table
/// `ip soulbox`, asked from the host with a GETTABLE request, because
/// sandbox root may not list tables. The request runs on a thread of its
/// own, which alone joins the namespace.
fn host_sees_filter(sandbox: &Sandbox) -> bool {
    let namespace = std::fs::File::open(format!("/proc/{}/ns/net", sandbox.pid()))
        .expect("open the sandbox's network namespace");
    std::thread::spawn(move || {
        // SAFETY: setns takes a descriptor and a flag, and moves only
        // this thread, which ends after the request.
        let joined = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
        // SAFETY: socket takes integers and returns a descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: socket returned a descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };

        // NFT_MSG_GETTABLE (subsystem 10, message 1) for family ip (2)
        // with NFTA_TABLE_NAME "soulbox".
        let mut request = Vec::new();
        request.extend_from_slice(&32u32.to_ne_bytes());
        request.extend_from_slice(&(10u16 << 8 | 1).to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        request.extend_from_slice(&flags.to_ne_bytes());
        request.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        request.extend_from_slice(&[2, 0, 0, 0]);
        request.extend_from_slice(&12u16.to_ne_bytes());
        request.extend_from_slice(&1u16.to_ne_bytes());
        request.extend_from_slice(b"soulbox\0");
        // SAFETY: `request` is valid for reads of its length.
        let sent = unsafe { libc::send(socket.as_raw_fd(), request.as_ptr().cast(), 32, 0) };
        assert_eq!(sent, 32, "send: {}", std::io::Error::last_os_error());

        // The table (NFT_MSG_NEWTABLE) and then an acknowledgement, or
        // only an error: ENOENT when there is no such table.
        let mut reply = [0u8; 4096];
        // SAFETY: `reply` is writable for its length.
        let received =
            unsafe { libc::recv(socket.as_raw_fd(), reply.as_mut_ptr().cast(), 4096, 0) };
        assert!(received >= 20, "recv: {}", std::io::Error::last_os_error());
        let kind = u16::from_ne_bytes([reply[4], reply[5]]);
        if kind == libc::NLMSG_ERROR as u16 {
            let error = i32::from_ne_bytes(reply[16..20].try_into().unwrap());
            assert_eq!(error, -libc::ENOENT, "GETTABLE failed");
            return false;
        }
        assert_eq!(kind, 10 << 8, "reply type");
        true
    })
    .join()
    .expect("the GETTABLE thread panicked")
}

#[tokio::test]
async fn deny_all_with_allowed_networks() {
    if !require_root("deny_all_with_allowed_networks") {
        return;
    }
    let sandbox = Sandbox::create(
        internet()
            .deny_out(ALL_TRAFFIC)
            .allow_out("192.0.2.0/24")
            .allow_out("198.51.100.7"),
    )
    .await
    .expect("create");

    let rules = run_ok(&sandbox, "ip -4 rule show").await;
    assert!(
        rules.contains("100:\tfrom all to 192.0.2.0/24 lookup main"),
        "rules: {rules}"
    );
    assert!(
        rules.contains("100:\tfrom all to 198.51.100.7 lookup main"),
        "rules: {rules}"
    );
    assert!(rules.contains("200:\tfrom all prohibit"), "rules: {rules}");

    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.network, Network::Internet);
    assert_eq!(info.allow_out, ["192.0.2.0/24", "198.51.100.7"]);
    assert_eq!(info.deny_out, [ALL_TRAFFIC]);

    assert_routed(&sandbox, "192.0.2.1").await;
    assert_routed(&sandbox, "192.0.2.255").await;
    assert_routed(&sandbox, "198.51.100.7").await;
    assert_prohibited(&sandbox, "198.51.100.8").await;
    assert_prohibited(&sandbox, "203.0.113.9").await;
    // EACCES (13) for TCP and UDP alike, before any packet is sent.
    assert_eq!(connect_errnos(&sandbox, "203.0.113.9", 80).await, "13 13");
    assert_eq!(connect_errnos(&sandbox, "198.51.100.8", 443).await, "13 13");

    // The sandbox's own addresses are in the local table, which the
    // kernel's rule at priority 0 looks up before any egress rule.
    let route = route_to(&sandbox, "127.0.0.1").await;
    assert!(route.starts_with("local 127.0.0.1 dev lo"), "{route}");
    let route = route_to(&sandbox, "10.0.2.100").await;
    assert!(route.starts_with("local 10.0.2.100 dev lo"), "{route}");
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn allow_wins_over_more_specific_deny() {
    if !require_root("allow_wins_over_more_specific_deny") {
        return;
    }
    let sandbox = Sandbox::create(
        internet()
            .allow_out("192.0.2.0/24")
            .deny_out("192.0.2.128/25")
            .deny_out("192.0.2.7")
            .deny_out("198.51.100.0/24"),
    )
    .await
    .expect("create");
    // A longest-prefix match would pick the /25 and the /32 here.
    assert_routed(&sandbox, "192.0.2.200").await;
    assert_routed(&sandbox, "192.0.2.7").await;
    assert_prohibited(&sandbox, "198.51.100.1").await;
    assert_eq!(connect_errnos(&sandbox, "198.51.100.1", 80).await, "13 13");
    // Destinations that no entry names keep the default route.
    assert_routed(&sandbox, "203.0.113.1").await;
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn allow_all_keeps_metadata_blocked() {
    if !require_root("allow_all_keeps_metadata_blocked") {
        return;
    }
    let sandbox = Sandbox::create(internet().allow_out(ALL_TRAFFIC).deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    let rules = run_ok(&sandbox, "ip -4 rule show").await;
    assert!(
        rules.contains("100:\tfrom all lookup main"),
        "rules: {rules}"
    );
    assert_routed(&sandbox, "203.0.113.1").await;
    // Route lookups only: no packet goes to a metadata address.
    assert_prohibited(&sandbox, "169.254.1.1").await;
    let routes = run_ok(&sandbox, "ip -4 route show").await;
    assert!(
        routes.contains("prohibit 100.100.100.200"),
        "routes: {routes}"
    );
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn dns_forwarder_follows_rules() {
    if !require_root("dns_forwarder_follows_rules") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    assert_prohibited(&sandbox, DNS_SERVER).await;
    assert_eq!(connect_errnos(&sandbox, DNS_SERVER, 53).await, "13 13");
    // The gateway stays routable, because the kernel checks the default
    // route's gateway against the rules when slirp4netns adds it.
    let rules = run_ok(&sandbox, "ip -4 rule show").await;
    assert!(
        rules.contains("100:\tfrom all to 10.0.2.2 lookup main"),
        "rules: {rules}"
    );
    let route = route_to(&sandbox, "10.0.2.2").await;
    assert!(route.starts_with("10.0.2.2 dev eth0"), "{route}");
    sandbox.kill().await.expect("kill");

    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC).allow_out(DNS_SERVER))
        .await
        .expect("create");
    let route = route_to(&sandbox, DNS_SERVER).await;
    assert!(
        route.starts_with(&format!("{DNS_SERVER} dev eth0")),
        "route to the DNS forwarder: {route}"
    );
    sandbox.kill().await.expect("kill");
}

/// Without the nf_tables filter, each send to the denied 192.0.2.1
/// succeeds: the kernel skips the failed route lookup and takes the
/// address to be on eth0's link.
#[tokio::test]
async fn bound_sockets_denied() {
    if !require_root("bound_sockets_denied") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    assert_bound_sends(
        &sandbox,
        "192.0.2.1",
        ALL_DROPPED,
        "denied TEST-NET address",
    )
    .await;
    // Only now that the filter is seen to drop packets: slirp4netns
    // answers ARP for the DNS forwarder and relays what reaches it.
    assert_bound_sends(&sandbox, DNS_SERVER, ALL_DROPPED, "denied DNS forwarder").await;
    // Sockets without an interface still fail the route lookup first.
    assert_eq!(connect_errnos(&sandbox, DNS_SERVER, 53).await, "13 13");
    sandbox.kill().await.expect("kill");
}

/// Python program that connects over TCP to `argv[1]`:`argv[2]` from a
/// socket bound to eth0 (with SO_DONTROUTE, as [`BOUND_SEND`]) and prints
/// the connect's errno, or `timeout` after 5 s.
const BOUND_CONNECT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(0)
except socket.timeout:
    print("timeout")
except OSError as e:
    print(e.errno)
"#;

/// The filter rejects a TCP connect to a denied network with a reset, so
/// a socket bound to eth0 gets ECONNREFUSED at once. A dropped SYN would
/// leave the connect waiting for its timeout.
#[tokio::test]
async fn bound_tcp_connects_refused() {
    if !require_root("bound_tcp_connects_refused") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    assert_bound_sends(
        &sandbox,
        "198.51.100.1",
        ALL_DROPPED,
        "denied TEST-NET address",
    )
    .await;
    // Only now that the filter is seen to drop packets, for the same
    // reason as in bound_sockets_denied.
    for (address, port) in [
        ("198.51.100.1", 80),
        (DNS_SERVER, 53),
        ("169.254.169.254", 80),
    ] {
        let output = sh(
            &sandbox,
            &format!("python3 -c '{BOUND_CONNECT}' {address} {port}"),
        )
        .await;
        assert_eq!(
            stdout(&output).trim(),
            libc::ECONNREFUSED.to_string(),
            "bound TCP connect to {address}:{port}: {output:?}"
        );
    }
    sandbox.kill().await.expect("kill");
}

/// Python program that sends UDP datagrams from sockets bound to eth0
/// in ways [`BOUND_SEND`] does not, and prints the errno of each, 0 for
/// success, in this order:
///
/// 1. `sendmmsg` of two datagrams to 192.0.2.1;
/// 2. UDP-Lite to 192.0.2.1;
/// 3. SO_BROADCAST to the broadcast address of eth0's network.
///
/// A source route (IP_OPTIONS with IPOPT_LSRR), which would put its first
/// hop in the IP header, is left out, because Linux 6.18 already rejects
/// that setsockopt with EPERM for sandbox root.
///
/// Every destination is a TEST-NET address except the last, so only run it
/// once the filter is seen to drop the others.
const OTHER_BOUND_SENDS: &str = r#"
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)

def bound(protocol=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, protocol)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    return s

def errno_of(send):
    try:
        send()
        return 0
    except OSError as e:
        return e.errno

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]

class mmsghdr(ctypes.Structure):
    _fields_ = [("header", msghdr), ("len", ctypes.c_uint)]

def sendmmsg():
    s = bound()
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(53), socket.inet_aton("192.0.2.1"))
    name = ctypes.create_string_buffer(address, len(address))
    data = ctypes.create_string_buffer(b"x")
    vector = iovec(ctypes.addressof(data), 1)
    messages = (mmsghdr * 2)()
    for message in messages:
        message.header.name = ctypes.addressof(name)
        message.header.namelen = len(address)
        message.header.iov = ctypes.addressof(vector)
        message.header.iovlen = 1
    if libc.sendmmsg(s.fileno(), messages, 2, 0) < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")

def udplite():
    bound(136).sendto(b"x", ("192.0.2.1", 53))

def broadcast():
    s = bound()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.sendto(b"x", ("10.0.2.255", 53))

print(errno_of(sendmmsg), errno_of(udplite), errno_of(broadcast))
"#;

/// The filter looks at each packet's IPv4 header, so batching, another
/// datagram protocol and broadcast get nothing past it.
#[tokio::test]
async fn other_bound_sends_denied() {
    if !require_root("other_bound_sends_denied") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    assert!(host_sees_filter(&sandbox), "no nf_tables table");
    assert_bound_sends(
        &sandbox,
        "192.0.2.1",
        ALL_DROPPED,
        "denied TEST-NET address",
    )
    .await;
    let output = sh(&sandbox, &format!("python3 -c '{OTHER_BOUND_SENDS}'")).await;
    assert!(output.status.success(), "other bound sends: {output:?}");
    assert_eq!(
        stdout(&output).trim(),
        "1 1 1",
        "errnos of sendmmsg, UDP-Lite and broadcast"
    );
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn bound_sockets_reach_allowed_networks() {
    if !require_root("bound_sockets_reach_allowed_networks") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC).allow_out("192.0.2.0/24"))
        .await
        .expect("create");
    assert_bound_sends(&sandbox, "198.51.100.1", ALL_DROPPED, "denied address").await;
    assert_bound_sends(&sandbox, "192.0.2.1", ALL_SENT, "allowed address").await;
    sandbox.kill().await.expect("kill");
}

/// The filter accepts every packet through `lo` before any deny rule, as
/// the kernel's rule for the local table comes before the routing rules.
#[tokio::test]
async fn loopback_works_under_deny_all() {
    if !require_root("loopback_works_under_deny_all") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    // A TCP and a UDP exchange on 127.0.0.1 and on the sandbox's own
    // address, both routed through lo.
    let program = r#"
import socket
for address in ("127.0.0.1", "10.0.2.100"):
    server = socket.socket()
    server.bind((address, 0))
    server.listen()
    client = socket.create_connection(server.getsockname(), timeout=5)
    peer, _ = server.accept()
    client.sendall(b"tcp")
    print(peer.recv(3).decode(), end=" ")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((address, 0))
    receiver.settimeout(5)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"udp", receiver.getsockname())
    print(receiver.recv(3).decode(), end=" ")
"#;
    let output = run_ok(&sandbox, &format!("python3 -c '{program}'")).await;
    assert_eq!(output.trim(), "tcp udp tcp udp");
    assert_bound_sends(
        &sandbox,
        "192.0.2.1",
        ALL_DROPPED,
        "denied TEST-NET address",
    )
    .await;
    sandbox.kill().await.expect("kill");
}

/// An allow entry never reopens the metadata networks, for bound sockets
/// either. Without the filter, the kernel would take a metadata address to
/// be on eth0's link, and only the missing ARP reply would stop the packet,
/// so the test checks that the table exists before any send.
#[tokio::test]
async fn bound_sockets_keep_metadata_blocked() {
    if !require_root("bound_sockets_keep_metadata_blocked") {
        return;
    }
    let sandbox = Sandbox::create(
        internet()
            .allow_out(ALL_TRAFFIC)
            .deny_out("198.51.100.0/24"),
    )
    .await
    .expect("create");
    assert!(host_sees_filter(&sandbox), "no nf_tables table");
    for address in ["169.254.169.254", "100.100.100.200"] {
        assert_bound_sends(&sandbox, address, ALL_DROPPED, "metadata address").await;
    }
    // allow_out 0.0.0.0/0 reopens the denied network, as in the routing
    // rules.
    assert_bound_sends(
        &sandbox,
        "198.51.100.1",
        ALL_SENT,
        "address that allow_out reopens",
    )
    .await;
    sandbox.kill().await.expect("kill");
}

/// The maximum number of entries. These 256 /32 networks touch each
/// other, so the filter's set `denied` merges them into one range,
/// 198.51.100.0/24.
#[tokio::test]
async fn filter_takes_max_entries() {
    if !require_root("filter_takes_max_entries") {
        return;
    }
    let mut options = internet();
    for i in 0..soulbox_core::MAX_EGRESS_ENTRIES {
        options = options.deny_out(format!("198.51.100.{i}"));
    }
    let sandbox = Sandbox::create(options).await.expect("create");
    assert_bound_sends(
        &sandbox,
        "198.51.100.255",
        ALL_DROPPED,
        "last denied address",
    )
    .await;
    assert_bound_sends(
        &sandbox,
        "203.0.113.1",
        ALL_SENT,
        "address that no entry names",
    )
    .await;
    sandbox.kill().await.expect("kill");
}

/// Returns the nf_tables ruleset of the sandbox's network namespace as
/// `nft -j list ruleset` prints it on the host, because sandbox root may
/// not list it. Needs `nft` (Debian's package nftables).
fn host_ruleset(sandbox: &Sandbox) -> serde_json::Value {
    let output = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", sandbox.pid()))
        .args(["nft", "-j", "list", "ruleset"])
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter and nft; install nftables for nft");
    assert!(output.status.success(), "nft list ruleset: {output:?}");
    serde_json::from_slice(&output.stdout).expect("nft's JSON output")
}

/// Returns the objects of `kind` (`rule`, `set`, ...) in `ruleset`.
fn ruleset_objects<'a>(ruleset: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    ruleset["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|object| object.get(kind))
        .collect()
}

/// Returns the elements of set `name` in `ruleset` as `nft` prints them:
/// `ADDRESS/LEN` for a network, `FIRST-LAST` for another range, and the
/// bare address for a single one.
fn set_elements(ruleset: &serde_json::Value, name: &str) -> Vec<String> {
    let set = ruleset_objects(ruleset, "set")
        .into_iter()
        .find(|set| set["name"] == name)
        .unwrap_or_else(|| panic!("no set {name} in {ruleset}"));
    set["elem"]
        .as_array()
        .unwrap_or_else(|| panic!("set {name} has no elements: {set}"))
        .iter()
        .map(|element| match element {
            serde_json::Value::String(address) => address.clone(),
            _ if element.get("prefix").is_some() => {
                format!("{}/{}", element["prefix"]["addr"], element["prefix"]["len"])
                    .replace('"', "")
            }
            _ if element.get("range").is_some() => {
                format!("{}-{}", element["range"][0], element["range"][1]).replace('"', "")
            }
            _ => panic!("unknown element {element} in set {name}"),
        })
        .collect()
}

/// The chain has six rules whatever the number of entries, because each
/// group of networks is one interval set. The rules are lo, a reset and a
/// drop for the metadata set, an accept for the allowed set, and a reset
/// and a drop for the denied set. One rule per network would make 518.
#[tokio::test]
async fn filter_rules_fixed_with_max_entries() {
    if !require_root("filter_rules_fixed_with_max_entries") {
        return;
    }
    // Every other address of 198.18.0.0/23, so that no two touch and the
    // set keeps 256 ranges.
    let denied: Vec<String> = (0..soulbox_core::MAX_EGRESS_ENTRIES)
        .map(|i| format!("198.18.{}.{}", i / 128, i % 128 * 2))
        .collect();
    let mut options = internet();
    for network in &denied {
        options = options.deny_out(network.as_str());
    }
    let sandbox = Sandbox::create(options).await.expect("create");

    let ruleset = host_ruleset(&sandbox);
    let rules = ruleset_objects(&ruleset, "rule");
    assert_eq!(rules.len(), 6, "rules: {rules:?}");
    assert!(
        rules.iter().all(|rule| rule["chain"] == "egress"),
        "rules: {rules:?}"
    );
    assert_eq!(set_elements(&ruleset, "denied"), denied);
    assert_eq!(set_elements(&ruleset, "allowed"), ["10.0.2.2"]);
    assert_eq!(
        set_elements(&ruleset, "blocked"),
        ["100.100.100.200", "169.254.0.0/16"]
    );

    assert_bound_sends(&sandbox, "198.18.1.254", ALL_DROPPED, "last denied address").await;
    assert_bound_sends(&sandbox, "198.18.0.0", ALL_DROPPED, "first denied address").await;
    // The address between two denied ones is the end element of the
    // first range.
    assert_bound_sends(
        &sandbox,
        "198.18.0.1",
        ALL_SENT,
        "gap between denied addresses",
    )
    .await;
    sandbox.kill().await.expect("kill");
}

/// Nested, touching and overlapping networks would make the kernel reject
/// the set's elements with EEXIST or ENOTEMPTY, so PID 1 merges them.
#[tokio::test]
async fn overlapping_deny_entries_accepted() {
    if !require_root("overlapping_deny_entries_accepted") {
        return;
    }
    let sandbox = Sandbox::create(
        internet()
            .deny_out("198.51.100.0/25")
            .deny_out("198.51.100.0/24")
            .deny_out("198.51.100.128/25")
            .deny_out("198.51.100.7")
            .deny_out("198.51.100.7")
            .deny_out("203.0.113.0/26")
            .deny_out("203.0.113.64/26"),
    )
    .await
    .expect("create with overlapping deny_out entries");
    let ruleset = host_ruleset(&sandbox);
    assert_eq!(
        set_elements(&ruleset, "denied"),
        ["198.51.100.0/24", "203.0.113.0/25"]
    );
    for address in ["198.51.100.7", "198.51.100.200", "203.0.113.127"] {
        assert_bound_sends(&sandbox, address, ALL_DROPPED, "denied address").await;
    }
    assert_bound_sends(
        &sandbox,
        "203.0.113.128",
        ALL_SENT,
        "address after the ranges",
    )
    .await;
    sandbox.kill().await.expect("kill");
}

/// The allowed set comes before the denied set, so a network allowed
/// inside a denied one stays reachable, and the metadata set comes before
/// both, so an allowed metadata network stays blocked.
#[tokio::test]
async fn nested_allow_reopens_denied_part() {
    if !require_root("nested_allow_reopens_denied_part") {
        return;
    }
    let sandbox = Sandbox::create(
        internet()
            .deny_out("198.51.100.0/24")
            .allow_out("198.51.100.64/26")
            .allow_out("169.254.169.0/24"),
    )
    .await
    .expect("create");
    assert!(host_sees_filter(&sandbox), "no nf_tables table");

    assert_bound_sends(
        &sandbox,
        "198.51.100.1",
        ALL_DROPPED,
        "denied, below the allowed /26",
    )
    .await;
    assert_bound_sends(
        &sandbox,
        "198.51.100.128",
        ALL_DROPPED,
        "denied, after the allowed /26",
    )
    .await;
    assert_bound_sends(
        &sandbox,
        "169.254.169.254",
        ALL_DROPPED,
        "allowed metadata address",
    )
    .await;

    assert_bound_sends(&sandbox, "198.51.100.64", ALL_SENT, "first allowed address").await;
    assert_bound_sends(&sandbox, "198.51.100.127", ALL_SENT, "last allowed address").await;
    sandbox.kill().await.expect("kill");
}

/// `deny_out 0.0.0.0/0` is a range with no end element, since the address
/// after 255.255.255.255 does not exist, and a /32 allowed inside it
/// reopens exactly one address.
#[tokio::test]
async fn deny_all_reopens_single_address() {
    if !require_root("deny_all_reopens_single_address") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC).allow_out("192.0.2.9"))
        .await
        .expect("create");
    let ruleset = host_ruleset(&sandbox);
    assert_eq!(set_elements(&ruleset, "denied"), ["0.0.0.0/0"]);
    assert_eq!(set_elements(&ruleset, "allowed"), ["10.0.2.2", "192.0.2.9"]);
    for address in ["192.0.2.8", "192.0.2.10", "255.255.255.254"] {
        assert_bound_sends(&sandbox, address, ALL_DROPPED, "denied neighbour").await;
    }
    assert_bound_sends(&sandbox, "192.0.2.9", ALL_SENT, "allowed /32").await;
    sandbox.kill().await.expect("kill");
}

/// Sandbox root lacks CAP_NET_ADMIN, which every nf_tables request needs.
#[tokio::test]
async fn sandbox_root_cannot_remove_filter() {
    if !require_root("sandbox_root_cannot_remove_filter") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    assert!(host_sees_filter(&sandbox), "no nf_tables table");
    // Two batches: NFT_MSG_DELTABLE for `ip soulbox`, then one without a
    // family or name, which deletes every table (`nft flush ruleset`).
    // Each prints the errno of the kernel's reply.
    let program = r#"
import socket, struct

def message(kind, flags, family, sequence, body=b"", resource=0):
    payload = struct.pack("=BBH", family, 0, socket.htons(resource)) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, sequence, 0) + payload

name = b"soulbox\0"
table = struct.pack("=HH", 4 + len(name), 1) + name
for family, body in ((2, table), (0, b"")):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    s.send(
        message(0x10, 1, 0, 1, resource=10)
        + message(10 << 8 | 2, 1 | 4, family, 2, body)
        + message(0x11, 1, 0, 3, resource=10)
    )
    reply = s.recv(65536)
    kind, = struct.unpack_from("=H", reply, 4)
    error, = struct.unpack_from("=i", reply, 16)
    print(-error if kind == 2 else "reply type %d" % kind, end=" ")
"#;
    let output = sh_as_root(&sandbox, &format!("python3 -c '{program}'")).await;
    assert!(output.status.success(), "{output:?}");
    let expected = format!("{} {}", libc::EPERM, libc::EPERM);
    assert_eq!(stdout(&output).trim(), expected, "errnos of the deletions");
    assert!(host_sees_filter(&sandbox), "the table is gone");
    assert_bound_sends(
        &sandbox,
        "192.0.2.1",
        ALL_DROPPED,
        "denied TEST-NET address",
    )
    .await;
    sandbox.kill().await.expect("kill");
}

/// slirp4netns adds the default route while PID 1 installs the rules, and
/// a rule that prohibited the gateway would make it fail. Each create
/// races the two afresh.
#[tokio::test]
async fn deny_all_creates_reliably() {
    if !require_root("deny_all_creates_reliably") {
        return;
    }
    for _ in 0..20 {
        let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
            .await
            .expect("create with deny_out 0.0.0.0/0");
        let route = run_ok(&sandbox, "ip route show default").await;
        assert!(route.contains("default via 10.0.2.2 dev eth0"), "{route}");
        sandbox.kill().await.expect("kill");
    }
}

#[tokio::test]
async fn sandbox_root_cannot_remove_rules() {
    if !require_root("sandbox_root_cannot_remove_rules") {
        return;
    }
    let sandbox = Sandbox::create(internet().deny_out(ALL_TRAFFIC))
        .await
        .expect("create");
    let removal = sh_as_root(&sandbox, "ip rule del priority 200").await;
    assert!(
        !removal.status.success(),
        "sandbox root removed the deny rule: {removal:?}"
    );
    let addition = sh_as_root(
        &sandbox,
        "ip rule add priority 50 to 203.0.113.0/24 lookup main",
    )
    .await;
    assert!(
        !addition.status.success(),
        "sandbox root added a rule before the deny rule: {addition:?}"
    );
    let rules = run_ok(&sandbox, "ip -4 rule show").await;
    assert!(rules.contains("200:\tfrom all prohibit"), "rules: {rules}");
    assert!(!rules.contains("50:"), "rules: {rules}");
    assert_prohibited(&sandbox, "203.0.113.1").await;
    sandbox.kill().await.expect("kill");
}

/// Returns the errno of `socket(family, SOCK_RAW, protocol)` for sandbox
/// root, 0 when the socket opened. Nothing is sent.
async fn raw_socket_errno(sandbox: &Sandbox, family: &str, protocol: &str) -> String {
    let program = format!(
        "python3 -c \"\nimport socket\ntry:\n    \
         socket.socket(socket.{family}, socket.SOCK_RAW, {protocol})\n    print(0)\n\
         except OSError as e:\n    print(e.errno)\n\""
    );
    stdout(&sh_as_root(sandbox, &program).await)
        .trim()
        .to_string()
}

/// A raw socket with IP_HDRINCL sends the destination of its own IP header
/// after a route lookup for the address given to `sendto` (an allowed one,
/// such as the gateway), and a packet socket skips the lookup. slirp4netns
/// forwards both, so sandbox root must not be able to open either.
#[tokio::test]
async fn raw_sockets_closed_to_sandbox_root() {
    if !require_root("raw_sockets_closed_to_sandbox_root") {
        return;
    }
    for (label, options) in [
        ("no entries", internet()),
        ("deny_out", internet().deny_out(ALL_TRAFFIC)),
    ] {
        let sandbox = Sandbox::create(options).await.expect("create");
        let status = stdout(&sh_as_root(&sandbox, "grep CapBnd /proc/self/status").await);
        let bounding = u64::from_str_radix(status.trim().trim_start_matches("CapBnd:").trim(), 16)
            .unwrap_or_else(|e| panic!("{label}: parse {status:?}: {e}"));
        assert_eq!(bounding & (1 << 13), 0, "{label}: CAP_NET_RAW in {status}");
        assert_eq!(
            raw_socket_errno(&sandbox, "AF_INET", "socket.IPPROTO_RAW").await,
            libc::EPERM.to_string(),
            "{label}: IPv4 raw socket"
        );
        assert_eq!(
            raw_socket_errno(&sandbox, "AF_PACKET", "0").await,
            libc::EPERM.to_string(),
            "{label}: packet socket"
        );
        sandbox.kill().await.expect("kill");
    }
}

#[tokio::test]
async fn pooled_sandbox_has_rules() {
    if !require_root("pooled_sandbox_has_rules") {
        return;
    }
    let pool = SandboxPool::new(internet().deny_out("198.51.100.0/24"), 1).expect("start a pool");
    let sandbox = pool.create().await.expect("take a sandbox");
    assert_prohibited(&sandbox, "198.51.100.1").await;
    assert_routed(&sandbox, "203.0.113.1").await;
    assert_bound_sends(
        &sandbox,
        "198.51.100.1",
        ALL_DROPPED,
        "pooled sandbox, denied address",
    )
    .await;
    let info = sandbox.get_info().await.expect("get_info");
    assert_eq!(info.deny_out, ["198.51.100.0/24"]);
    assert_eq!(
        raw_socket_errno(&sandbox, "AF_INET", "socket.IPPROTO_RAW").await,
        libc::EPERM.to_string(),
        "IPv4 raw socket in a pooled sandbox"
    );
    sandbox.kill().await.expect("kill");
    pool.close().await;

    let Err(error) = SandboxPool::new(internet().allow_out("example.com"), 1) else {
        panic!("a pool took a domain name");
    };
    assert!(error.to_string().contains("is a domain name"), "{error}");
}

#[tokio::test]
async fn no_rules_without_entries() {
    if !require_root("no_rules_without_entries") {
        return;
    }
    let sandbox = Sandbox::create(internet()).await.expect("create");
    let rules = run_ok(&sandbox, "ip -4 rule show").await;
    let priorities: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.split(':').next())
        .collect();
    assert_eq!(priorities, ["0", "32766", "32767"], "rules: {rules}");
    assert!(
        !host_sees_filter(&sandbox),
        "an nf_tables table without entries"
    );
    sandbox.kill().await.expect("kill");

    // allow_out alone denies nothing, so it needs no filter either.
    let sandbox = Sandbox::create(internet().allow_out("192.0.2.0/24"))
        .await
        .expect("create");
    assert!(
        !host_sees_filter(&sandbox),
        "an nf_tables table without deny_out"
    );
    sandbox.kill().await.expect("kill");
}

#[tokio::test]
async fn invalid_entries_rejected_at_create() {
    let cases = [
        (
            internet().allow_out("example.com"),
            "allow_out entry \"example.com\" is a domain name",
        ),
        (
            internet().deny_out("2001:db8::/32"),
            "deny_out entry \"2001:db8::/32\" is an IPv6",
        ),
        (
            internet().deny_out("10.1.2.3/16"),
            "has host bits set (0.0.2.3 lies beyond the /16 prefix); use 10.1.0.0/16",
        ),
        (
            internet().deny_out("10.0.0.0/40"),
            "invalid prefix length \"40\"",
        ),
        (
            options().deny_out(ALL_TRAFFIC),
            "set the network to internet",
        ),
    ];
    for (options, expected) in cases {
        match Sandbox::create(options).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(expected), "{message}")
            }
            Err(other) => panic!("expected an invalid argument ({expected}), got {other}"),
            Ok(_) => panic!("a sandbox was created despite: {expected}"),
        }
    }
    let mut too_many = internet();
    for i in 0..=soulbox_core::MAX_EGRESS_ENTRIES {
        too_many = too_many.deny_out(format!("10.0.{}.{}", i / 256, i % 256));
    }
    let Err(error) = Sandbox::create(too_many).await else {
        panic!("a sandbox with 257 egress rules was created");
    };
    assert!(error.to_string().contains("257 entries"), "{error}");
}

#[tokio::test]
async fn cli_takes_egress_flags() {
    if !require_root("cli_takes_egress_flags") {
        return;
    }
    let output = Command::new(soulbox_bin())
        .args([
            "run",
            "--network",
            "internet",
            "--deny-out",
            ALL_TRAFFIC,
            "--allow-out",
            "192.0.2.0/24",
            "--allow-out",
            "198.51.100.7",
            "--",
            "ip",
            "-4",
            "rule",
            "show",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run soulbox");
    let rules = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(rules.contains("to 192.0.2.0/24 lookup main"), "{rules}");
    assert!(rules.contains("to 198.51.100.7 lookup main"), "{rules}");
    assert!(rules.contains("200:\tfrom all prohibit"), "{rules}");

    let output = Command::new(soulbox_bin())
        .args([
            "create",
            "--network",
            "internet",
            "--deny-out",
            "198.51.100.0/24",
            "--timeout",
            "60",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run soulbox create");
    assert!(output.status.success(), "{output:?}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let info = Command::new(soulbox_bin())
        .args(["info", "--json", &id])
        .output()
        .expect("run soulbox info");
    let killed = Command::new(soulbox_bin())
        .args(["kill", &id])
        .output()
        .expect("run soulbox kill");
    assert!(killed.status.success(), "{killed:?}");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("info JSON");
    assert_eq!(info["network"], "internet", "{info}");
    assert_eq!(info["allow_out"], serde_json::json!([]), "{info}");
    assert_eq!(
        info["deny_out"],
        serde_json::json!(["198.51.100.0/24"]),
        "{info}"
    );

    let output = Command::new(soulbox_bin())
        .args(["run", "--deny-out", "example.com", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run soulbox");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("deny_out entry \"example.com\" is a domain name"),
        "{stderr}"
    );
}
