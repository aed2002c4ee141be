//! Egress rules (`allow_out`, `deny_out`) of sandboxes with internet
//! access: the policy routing rules PID 1 installs, their precedence, and
//! their checks at create.
//!
//! No test sends a packet to an outside address. A connect to a denied
//! address fails inside the sandbox with EACCES before anything is sent,
//! and allowed addresses are only looked up (`ip route get`), never
//! connected to.

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
