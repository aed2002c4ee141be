//! Rootless mode: `soulbox run` started by an unprivileged user creates its
//! sandbox in a user namespace that maps that user to sandbox root.

use std::process::Command;

/// The unprivileged uid and gid the tests switch to: those of the account
/// named by SOULBOX_ROOTLESS_USER (`.ci/run` creates `soulbox-ci`), or 65534
/// (`nobody` on Debian) without one.
fn unprivileged_ids() -> (String, String) {
    let Some(name) = std::env::var_os("SOULBOX_ROOTLESS_USER") else {
        return ("65534".into(), "65534".into());
    };
    let id = |flag: &str| {
        let output = Command::new("id")
            .arg(flag)
            .arg(&name)
            .output()
            .expect("run id");
        assert!(
            output.status.success(),
            "SOULBOX_ROOTLESS_USER={name:?} is not an account"
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    (id("-u"), id("-g"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A copy of the `soulbox` binary in a directory every user can reach,
/// removed on drop: the build directory may sit below a home directory
/// (mode 0700) that the unprivileged account cannot enter.
struct ReachableBinary {
    dir: std::path::PathBuf,
}

impl ReachableBinary {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("soulbox-rootless-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).expect("create a directory for the binary");
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(&dir, open.clone()).expect("open the directory to every user");
        let binary = dir.join("soulbox");
        // Copied by `cp`, not by this process: a child forked by another
        // test's thread while this process held the copy open for writing
        // would keep that descriptor until its exec, and executing the copy
        // meanwhile fails with ETXTBSY.
        let copied = std::process::Command::new("cp")
            .arg(env!("CARGO_BIN_EXE_soulbox"))
            .arg(&binary)
            .status()
            .expect("run cp");
        assert!(copied.success(), "cp of the soulbox binary failed");
        std::fs::set_permissions(&binary, open).expect("make the copy executable by every user");
        Self { dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("soulbox")
    }
}

impl Drop for ReachableBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `soulbox run ARGS` as the unprivileged account with an empty
/// environment.
fn run_as_nobody(args: &[&str]) -> std::process::Output {
    let binary = ReachableBinary::new();
    let mut run_args = vec!["run"];
    run_args.extend_from_slice(args);
    soulbox_as_nobody(&binary, &run_args)
}

/// Runs `soulbox ARGS` from `binary` as the unprivileged account with an
/// empty environment.
fn soulbox_as_nobody(binary: &ReachableBinary, args: &[&str]) -> std::process::Output {
    let (uid, gid) = unprivileged_ids();
    let binary = binary.path();
    Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--"])
        .args([
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            binary.to_str().expect("a UTF-8 temp path"),
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
        ["0", unprivileged_ids().0.as_str(), "1"],
        "uid map should map only the caller to root"
    );
    assert!(
        lines.get(2).is_some_and(|h| h.starts_with("sb-")),
        "hostname should be the sandbox id, got {stdout}"
    );
}

/// A caller that runs at idle priority (`chrt -i 0`) may not leave it
/// without privilege, and neither may its sandbox's PID 1: the sandbox
/// runs at idle priority too instead of failing.
#[test]
fn rootless_sandbox_starts_at_idle_priority() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!("rootless_sandbox_starts_at_idle_priority: skipped, needs root to switch users");
        return;
    }
    let binary = ReachableBinary::new();
    let (uid, gid) = unprivileged_ids();
    let output = Command::new("chrt")
        .args([
            "-i",
            "0",
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--clear-groups",
        ])
        .args(["--", "env", "-i", "PATH=/usr/bin:/bin"])
        .arg(binary.path())
        .args(["run", "--", "chrt", "-p", "1"])
        .output()
        .expect("run chrt and setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rootless run at idle priority failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SCHED_IDLE"), "PID 1's policy: {stdout}");
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

#[test]
fn rootless_sandbox_reports_unenforced_limits() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!(
            "rootless_sandbox_reports_unenforced_limits: skipped, needs root to switch users"
        );
        return;
    }
    let output = run_as_nobody(&["--", "true"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a rootless run should still work: {stderr}"
    );
    assert!(
        stderr.contains("memory and pids limits are not enforced"),
        "a rootless run without a delegated cgroup should say which limits are off: {stderr}"
    );
}

#[test]
fn rootless_sandbox_reachable_only_by_its_user() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!(
            "rootless_sandbox_reachable_only_by_its_user: skipped, needs root to switch users"
        );
        return;
    }
    let binary = ReachableBinary::new();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let created = soulbox_as_nobody(&binary, &["create", "--timeout", "60"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_string();

    let exec = soulbox_as_nobody(&binary, &["exec", &id, "--", "id", "-u"]);
    assert_eq!(text(&exec.stdout), "0\n", "{}", text(&exec.stderr));
    let listed = soulbox_as_nobody(&binary, &["ls"]);
    assert!(
        text(&listed.stdout).contains(&id),
        "{}",
        text(&listed.stdout)
    );

    // Root's state directory is another one: root does not see the sandbox.
    let from_root = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["exec", &id, "--", "true"])
        .output()
        .expect("run soulbox as root");
    assert_eq!(from_root.status.code(), Some(3));

    // Without a delegated cgroup there is no freezer to pause with.
    let pause = soulbox_as_nobody(&binary, &["pause", &id]);
    assert_eq!(pause.status.code(), Some(125));
    assert!(
        text(&pause.stderr).contains("cgroup v2"),
        "{}",
        text(&pause.stderr)
    );

    let kill = soulbox_as_nobody(&binary, &["kill", &id]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let gone = soulbox_as_nobody(&binary, &["exec", &id, "--", "true"]);
    assert_eq!(gone.status.code(), Some(3));
}

/// Attacks from the security suite that apply to a rootless sandbox, each
/// run inside as the unprivileged account's sandbox root. Each line the
/// probe prints is `NAME ERRNO`, where 0 means the attempt succeeded; the
/// last two lines count leaked host entries and variables instead.
const ROOTLESS_ATTACKS: &str = r#"
import ctypes, errno, fcntl, os
libc = ctypes.CDLL(None, use_errno=True)
def syscall(name, number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
    print(name, ctypes.get_errno() if result == -1 else 0)
def attempt(name, action):
    try:
        action()
        print(name, 0)
    except OSError as e:
        print(name, e.errno)
attempt("write_proc_1_exe", lambda: open("/proc/1/exe", "wb"))
attempt("write_proc_sys", lambda: open("/proc/sys/kernel/hostname", "w").write("x"))
syscall("ptrace_attach_pid1", 101, 16, 1, 0, 0)
syscall("unshare_user", 272, 0x10000000)
syscall("unshare_mount", 272, 0x00020000)
syscall("mount_tmpfs", 165, 0, 0, 0, 0, 0)
syscall("add_key", 248, 0, 0, 0, 0, 0)
syscall("keyctl", 250, 0, 0, 0, 0, 0)
syscall("userfaultfd", 323, 0)
syscall("io_uring_setup", 425, 1, 0)
syscall("perf_event_open", 298, 0, 0, -1, -1, 0)
syscall("bpf", 321, 0, 0, 0)
syscall("init_module", 175, 0, 0, 0)
syscall("open_by_handle_at", 304, 0, 0, 0)
syscall("tiocsti", 16, 0, 0x5412, 0)
attempt("read_shadow", lambda: open("/etc/shadow").read())
print("root_home_entries", len(os.listdir("/root")))
print("host_env", len([k for k in os.environ if k not in ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "PWD", "SHLVL", "_")]))
"#;

#[test]
fn rootless_sandbox_blocks_security_suite_attacks() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!(
            "rootless_sandbox_blocks_security_suite_attacks: skipped, needs root to switch users"
        );
        return;
    }
    let output = run_as_nobody(&["--", "python3", "-c", ROOTLESS_ATTACKS]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the probe failed: {stderr}");
    let mut seen = 0;
    for line in stdout.lines() {
        let (name, code) = line.split_once(' ').expect("NAME ERRNO lines");
        let code: i32 = code.parse().expect("a number");
        seen += 1;
        if name == "host_env" || name == "root_home_entries" {
            assert_eq!(code, 0, "{name}: the host's files or variables leaked in");
        } else {
            assert_ne!(code, 0, "{name} succeeded in a rootless sandbox");
        }
    }
    assert_eq!(seen, 18, "the probe stopped early: {stdout}{stderr}");
}

/// A rootless caller without a writable cgroup v2 hierarchy gets no
/// cgroup.freeze, so a sandbox that pauses at its timeout is rejected
/// before anything is created, with the reason and the fix.
#[test]
fn rootless_on_timeout_pause_rejected() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        eprintln!("rootless_on_timeout_pause_rejected: skipped, needs root to switch users");
        return;
    }
    let binary = ReachableBinary::new();
    let label = format!("suite=pause-{}", std::process::id());
    let output = soulbox_as_nobody(
        &binary,
        &["create", "--on-timeout", "pause", "--metadata", &label],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("on_timeout \"pause\""), "{stderr}");
    assert!(stderr.contains("cgroup.freeze"), "{stderr}");
    assert!(stderr.contains("delegated"), "{stderr}");
    let listed = soulbox_as_nobody(&binary, &["ls", "--metadata", &label, "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "[]",
        "a rejected create left a sandbox"
    );
}
