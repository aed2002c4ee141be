//! Rootless mode: `soulbox run` started by an unprivileged user creates its
//! sandbox in a user namespace that maps that user to sandbox root.

use std::process::Command;

/// The unprivileged uid and gid the test switches to (`nobody` on Debian).
const NOBODY: &str = "65534";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Runs `soulbox run ARGS` as uid and gid 65534 with an empty environment.
fn run_as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .args([
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            env!("CARGO_BIN_EXE_soulbox"),
            "run",
        ])
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn rootless_sandbox_maps_caller_to_root() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!(
            "rootless_sandbox_maps_caller_to_root: skipped, needs root to switch to uid 65534"
        );
        return;
    }
    let output = run_as_nobody(&["--", "sh", "-c", "id -u; cat /proc/self/uid_map; hostname"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rootless run failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"0"),
        "sandbox root expected inside, got {stdout}"
    );
    let map: Vec<&str> = lines
        .get(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        map,
        ["0", NOBODY, "1"],
        "uid map should map only the caller to root"
    );
    assert!(
        lines.get(2).is_some_and(|h| h.starts_with("sb-")),
        "hostname should be the sandbox id, got {stdout}"
    );
}

#[test]
fn rootless_sandbox_rejects_user_account() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!("rootless_sandbox_rejects_user_account: skipped, needs root to switch users");
        return;
    }
    let output = run_as_nobody(&["--user", "user", "--", "true"]);
    assert_eq!(
        output.status.code(),
        Some(125),
        "unknown user must be a SoulBox failure"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rootless"),
        "message should explain rootless mode: {stderr}"
    );
}

#[test]
fn rootless_sandbox_cannot_write_usr() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!("rootless_sandbox_cannot_write_usr: skipped, needs root to switch users");
        return;
    }
    let output = run_as_nobody(&["--", "touch", "/usr/soulbox-rootless-probe"]);
    assert_ne!(
        output.status.code(),
        Some(0),
        "writing /usr must fail in a rootless sandbox"
    );
    assert!(
        !std::path::Path::new("/usr/soulbox-rootless-probe").exists(),
        "the host's /usr must be unchanged"
    );
}
