//! The security suite: one test per attack that has worked against some
//! sandbox or container runtime, each passing only when the attack fails.
//!
//! Attack code runs inside the sandbox as its root unless a test states
//! otherwise. Raw system calls go through Python's ctypes with x86-64
//! syscall numbers, and every probe prints `name: outcome` lines, where the
//! outcome is `ok` or the errno's name, so a failed assert shows what the
//! kernel returned.
//!
//! The fork bomb, memory and inode tests run their attack only when the
//! sandbox has a limit that contains it. Otherwise they fail with a message
//! and run nothing that could hurt the host.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use soulbox_core::{CommandEvent, Error, ExitStatus, Output, Sandbox};
use soulbox_tests::*;

/// Timeout of every probe command.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Python helpers every probe starts with.
const PRELUDE: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def errname(code):
    return errno.errorcode.get(code, f"errno {code}")

def raw(nr, *args):
    # Integers pass as unsigned 64-bit words, so high bits reach the kernel.
    words = [ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *words)
    return -ctypes.get_errno() if ret == -1 else ret

def outcome(ret):
    return "ok" if ret >= 0 else errname(-ret)

def call(nr, *args):
    return outcome(raw(nr, *args))

def report(name, value):
    print(f"{name}: {value}", flush=True)

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as e:
        return errname(e.errno)

def try_open(path, flags):
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return errname(e.errno)
    os.close(fd)
    return "ok"
"#;

/// The output of a Python probe, with its `name: outcome` lines parsed.
struct Probe {
    label: String,
    output: Output,
    outcomes: BTreeMap<String, String>,
}

impl Probe {
    fn outcome(&self, name: &str) -> Option<&str> {
        self.outcomes.get(name).map(String::as_str)
    }

    /// Asserts that the probe ran to its last line, so no outcome is missing
    /// because the process died (a seccomp kill, for instance).
    fn assert_completed(&self) {
        assert!(
            self.output.status.success() && !self.output.timed_out,
            "probe {} did not exit cleanly:\n{self}",
            self.label
        );
        assert_eq!(
            self.outcome("end"),
            Some("reached"),
            "probe {} stopped before its end:\n{self}",
            self.label
        );
    }

    /// Asserts that `name` has outcome `expected`.
    fn expect(&self, name: &str, expected: &str) {
        assert_eq!(
            self.outcome(name),
            Some(expected),
            "{name} (probe {}): expected {expected}:\n{self}",
            self.label
        );
    }

    /// Asserts that `name` has one of the `allowed` outcomes.
    fn expect_one_of(&self, name: &str, allowed: &[&str]) {
        let actual = self.outcome(name);
        assert!(
            actual.is_some_and(|a| allowed.contains(&a)),
            "{name} (probe {}): expected one of {allowed:?}, got {actual:?}:\n{self}",
            self.label
        );
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {}, timed out {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.output.status,
            self.output.timed_out,
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// Parses `name: outcome` lines and ignores the rest. On a terminal
/// a carriage return moves back to the line's start, so only the text after
/// the last one counts.
fn parse_outcomes(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            line.rsplit('\r').next().unwrap_or(line).split_once(": ")
        })
        .map(|(name, value)| (name.to_string(), value.trim().to_string()))
        .collect()
}

/// Runs `body` after [`PRELUDE`] with `python3 -c` (no shell involved) as
/// `user`, with `cwd` as working directory when given.
async fn python_in(sandbox: &Sandbox, user: &str, cwd: Option<&str>, body: &str) -> Probe {
    let program = format!("{PRELUDE}\n{body}\nreport(\"end\", \"reached\")\n");
    let mut command = sandbox.command("python3");
    command
        .args(["-c", &program])
        .user(user)
        .timeout(Some(PROBE_TIMEOUT));
    if let Some(dir) = cwd {
        command.cwd(dir);
    }
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("start a Python probe as {user}: {e}"));
    let outcomes = parse_outcomes(&String::from_utf8_lossy(&output.stdout));
    Probe {
        label: format!("as {user}"),
        output,
        outcomes,
    }
}

async fn python(sandbox: &Sandbox, user: &str, body: &str) -> Probe {
    python_in(sandbox, user, None, body).await
}

/// Runs a shell command line as `user` and returns its output.
async fn sh_as(sandbox: &Sandbox, user: &str, command_line: &str) -> Output {
    sandbox
        .shell(command_line)
        .user(user)
        .timeout(Some(PROBE_TIMEOUT))
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {command_line:?} as {user}: {e}"))
}

/// Writes `contents` to `path` inside the sandbox as root, through a
/// command's stdin, so the bytes never appear on a command line.
async fn write_inside(sandbox: &Sandbox, path: &str, contents: &[u8]) {
    let mut handle = sandbox
        .command("sh")
        .args(["-c", "cat > \"$1\"", "sh", path])
        .user("root")
        .stdin(true)
        .timeout(Some(PROBE_TIMEOUT))
        .start()
        .await
        .unwrap_or_else(|e| panic!("start cat > {path}: {e}"));
    handle
        .send_stdin(contents)
        .await
        .unwrap_or_else(|e| panic!("send {path} to cat: {e}"));
    handle.close_stdin().await.expect("close cat's stdin");
    let output = handle.wait().await.expect("wait for cat");
    assert!(output.status.success(), "writing {path} failed: {output:?}");
}

/// Runs a command line as root with `input` on its stdin.
async fn sh_with_stdin(sandbox: &Sandbox, command_line: &str, input: &[u8]) -> Output {
    let mut handle = sandbox
        .shell(command_line)
        .user("root")
        .stdin(true)
        .timeout(Some(PROBE_TIMEOUT))
        .start()
        .await
        .unwrap_or_else(|e| panic!("start {command_line:?}: {e}"));
    handle
        .send_stdin(input)
        .await
        .unwrap_or_else(|e| panic!("send stdin to {command_line:?}: {e}"));
    handle.close_stdin().await.expect("close stdin");
    handle
        .wait()
        .await
        .unwrap_or_else(|e| panic!("wait for {command_line:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Returns the SHA-256 of a host file, as sha256sum(1) prints it.
fn sha256_of(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("start sha256sum for {}: {e}", path.display()));
    assert!(
        output.status.success(),
        "sha256sum {} failed: {}",
        path.display(),
        text(&output.stderr)
    );
    text(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Reads a `/proc/meminfo` field, in KiB.
fn meminfo_kib(field: &str) -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("/proc/meminfo has no {field} field"))
}

fn mem_available_bytes() -> u64 {
    meminfo_kib("MemAvailable") * 1024
}

/// Samples the host's MemAvailable every 50 ms until dropped and keeps the
/// lowest value seen.
struct MemorySampler {
    lowest: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl MemorySampler {
    fn start() -> Self {
        let lowest = Arc::new(AtomicU64::new(mem_available_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_lowest, task_stop) = (Arc::clone(&lowest), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !task_stop.load(Ordering::Relaxed) {
                task_lowest.fetch_min(mem_available_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { lowest, stop }
    }

    fn lowest(&self) -> u64 {
        self.lowest
            .load(Ordering::Relaxed)
            .min(mem_available_bytes())
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serializes the tests that load the host's memory (fork bomb, memory and
/// disk fills), so that one test's load does not trip another's
/// MemAvailable floor.
static HOST_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Values of the first present file in `files` in every cgroup directory
/// that could limit the sandbox: its own directories in each hierarchy and
/// their `soulbox` parents.
fn cgroup_settings(sandbox: &Sandbox, files: &[&str]) -> Vec<(PathBuf, String)> {
    let mut dirs: Vec<PathBuf> = sandbox.cgroup_paths();
    let parents = soulbox_core::diagnostics::cgroup_parents();
    let v1_parents =
        ["pids", "memory"].map(|c| Path::new("/sys/fs/cgroup").join(c).join("soulbox"));
    for parent in parents.into_iter().chain(v1_parents) {
        dirs.push(parent.join(sandbox.id()));
        dirs.push(parent);
    }
    let mut seen = HashSet::new();
    dirs.retain(|dir| seen.insert(dir.clone()));
    let mut settings = Vec::new();
    for dir in dirs {
        for file in files {
            let path = dir.join(file);
            if let Ok(value) = std::fs::read_to_string(&path) {
                settings.push((path, value.trim().to_string()));
            }
        }
    }
    settings
}

/// Mounts of a `/proc/PID/mountinfo` text: mount point, per-mount options,
/// optional fields and filesystem type.
struct MountLine {
    mount_point: String,
    options: Vec<String>,
    optional: Vec<String>,
    fstype: String,
}

/// Parses mountinfo lines (proc(5)): field 5 is the mount point, field 6
/// the per-mount options, then optional fields up to a lone "-", then the
/// filesystem type.
fn parse_mountinfo(mountinfo: &str) -> Vec<MountLine> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            Some(MountLine {
                mount_point: fields.get(4)?.to_string(),
                options: fields.get(5)?.split(',').map(str::to_string).collect(),
                optional: fields[6..].iter().map(|s| s.to_string()).collect(),
                fstype: right.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// Descriptor numbers and targets of `ls -l /proc/.../fd` output.
fn listed_fds(listing: &str) -> Vec<(u32, String)> {
    listing
        .lines()
        .filter(|line| line.starts_with('l'))
        .filter_map(|line| {
            let (left, target) = line.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect()
}

/// Returns whether `target` is a `/proc/N/fd` directory, which is the
/// descriptor `ls` opens on the directory it lists.
fn is_listing_dir(target: &str) -> bool {
    target
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix("/fd"))
        .is_some_and(|pid| pid == "self" || pid.parse::<u32>().is_ok())
}

// 1. Overwriting the host's executable through /proc.

const EXE_OVERWRITE_PROBE: &str = r#"
O_PATH = 0o10000000
me = os.getpid()
report("supervisor pid", os.getppid())
pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
report("pids", " ".join(map(str, pids)))
for pid in pids:
    exe = "/proc/self/exe" if pid == me else f"/proc/{pid}/exe"
    # Opening for writing is the attack; nothing is ever written or
    # truncated, because a bug here would reach a host binary.
    for name, flags in (("O_WRONLY", os.O_WRONLY), ("O_RDWR", os.O_RDWR)):
        report(f"open {exe} {name}", try_open(exe, flags))
    # The retry: open without write access, then reopen the descriptor's
    # /proc/self/fd link for writing.
    for name, flags in (("O_PATH", O_PATH), ("O_RDONLY", os.O_RDONLY)):
        try:
            fd = os.open(exe, flags)
        except OSError as e:
            report(f"open {exe} {name}", errname(e.errno))
            continue
        report(f"open {exe} {name}", "ok")
        report(f"reopen {exe} from {name} for writing",
               try_open(f"/proc/self/fd/{fd}", os.O_WRONLY))
        os.close(fd)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exe_overwrite_blocked() {
    if !require_root("proc_exe_overwrite_blocked") {
        return;
    }
    let test_binary = std::env::current_exe().expect("path of the test binary");
    let test_binary_hash = sha256_of(&test_binary);
    let sandbox = sandbox().await;
    let init_exe = PathBuf::from(format!("/proc/{}/exe", sandbox.pid()));

    let link = std::fs::read_link(&init_exe).expect("read PID 1's exe link from the host");
    let exe = std::fs::File::open(&init_exe).expect("open PID 1's executable from the host");
    if link.to_string_lossy().starts_with("/memfd:") {
        // SAFETY: F_GET_SEALS takes no argument and only reads the seals of
        // an open descriptor.
        let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(
            seals >= 0 && seals & libc::F_SEAL_WRITE != 0,
            "PID 1's memfd lacks F_SEAL_WRITE (F_GET_SEALS returned {seals:#x})"
        );
    } else {
        // The state directory's shared copy: read-only, and in a directory
        // only its owner, root here, can enter.
        let file = exe.metadata().expect("stat PID 1's executable");
        let dir = link.parent().expect("the copy's directory");
        let dir_meta = std::fs::symlink_metadata(dir).expect("stat the copy's directory");
        assert!(
            file.is_file()
                && file.uid() == 0
                && file.mode() & 0o7777 == 0o500
                && file.nlink() == 1
                && dir_meta.is_dir()
                && dir_meta.uid() == 0
                && dir_meta.mode() & 0o077 == 0,
            "PID 1 runs from {} (mode {:o}, uid {}, {} links) in a directory of mode {:o}, \
             uid {}: not a private read-only copy",
            link.display(),
            file.mode(),
            file.uid(),
            file.nlink(),
            dir_meta.mode(),
            dir_meta.uid()
        );
    }
    drop(exe);
    // Not even host root may open it for writing while PID 1 runs it,
    // whichever file it is.
    let opened = std::fs::OpenOptions::new().write(true).open(&init_exe);
    assert_eq!(
        opened.as_ref().err().and_then(std::io::Error::raw_os_error),
        Some(libc::ETXTBSY),
        "opening PID 1's executable {} for writing from the host: {opened:?}",
        link.display()
    );
    let init_hash = sha256_of(&init_exe);

    let probe = python(&sandbox, "root", EXE_OVERWRITE_PROBE).await;
    probe.assert_completed();
    let supervisor = probe
        .outcome("supervisor pid")
        .expect("the probe reports its supervisor's pid")
        .to_string();
    let pids = probe.outcome("pids").unwrap_or_default().to_string();
    for helper in ["1", supervisor.as_str()] {
        assert!(
            pids.split(' ').any(|pid| pid == helper),
            "the probe did not see helper pid {helper} in /proc:\n{probe}"
        );
        let exe = format!("/proc/{helper}/exe");
        for open_flags in ["O_WRONLY", "O_RDWR", "O_PATH", "O_RDONLY"] {
            // A helper is not dumpable, so even the path of its executable
            // stays hidden from sandbox root.
            probe.expect(&format!("open {exe} {open_flags}"), "EACCES");
        }
    }
    let writable: Vec<(&String, &String)> = probe
        .outcomes
        .iter()
        .filter(|(name, outcome)| {
            (name.starts_with("reopen ") || (name.starts_with("open ") && name.contains("WR")))
                && outcome.as_str() == "ok"
        })
        .collect();
    assert!(
        writable.is_empty(),
        "an executable in the sandbox was opened for writing: {writable:?}\n{probe}"
    );

    assert_eq!(
        sha256_of(&init_exe),
        init_hash,
        "PID 1's executable changed while sandbox root attacked it"
    );
    assert_eq!(
        sha256_of(&test_binary),
        test_binary_hash,
        "the test binary {} changed while the sandbox ran",
        test_binary.display()
    );
}

// 2. A leaked host directory descriptor as working directory.

const CWD_PROBE: &str = r#"
try:
    cwd = os.getcwd()
except OSError as e:
    cwd = errname(e.errno)
report("cwd", cwd)
try:
    dot, resolved = os.stat("."), os.stat(cwd)
    reachable = (dot.st_dev, dot.st_ino) == (resolved.st_dev, resolved.st_ino)
except (OSError, ValueError):
    reachable = False
report("reachable from root", "yes" if reachable else "no")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_fd_cwd_blocked() {
    if !require_root("leaked_fd_cwd_blocked") {
        return;
    }
    let sandbox = sandbox().await;

    let plant = sh_as(
        &sandbox,
        "root",
        "ln -s /proc/1/cwd /tmp/link-init-cwd && ln -s /proc/self/fd/3 /tmp/link-fd3 \
         && ln -s /proc/1/root /home/user/link-init-root \
         && ln -s ../../proc/1/cwd /home/user/link-relative",
    )
    .await;
    assert!(
        plant.status.success(),
        "planting symlinks failed: {plant:?}"
    );

    let mut cwds: Vec<String> = (3..=20).map(|n| format!("/proc/self/fd/{n}")).collect();
    for pid in ["1", "2", "3", "self", "thread-self"] {
        for link in ["cwd", "root"] {
            cwds.push(format!("/proc/{pid}/{link}"));
        }
    }
    cwds.extend(
        [
            "/dev/fd/3",
            "/proc/self/fd/3/..",
            "/tmp/link-init-cwd",
            "/tmp/link-fd3",
            "/home/user/link-init-root",
            "/home/user/link-relative",
        ]
        .map(String::from),
    );

    for user in ["root", "user"] {
        for cwd in &cwds {
            let mut command = sandbox.command("python3");
            command
                .args(["-c", &format!("{PRELUDE}\n{CWD_PROBE}")])
                .cwd(cwd.as_str())
                .user(user)
                .timeout(Some(PROBE_TIMEOUT));
            match command.output().await {
                Err(Error::InvalidArgument(_)) => {}
                Err(other) => {
                    panic!("cwd {cwd} as {user} failed with an unexpected error: {other}")
                }
                Ok(output) => {
                    let outcomes = parse_outcomes(&text(&output.stdout));
                    let landed = outcomes.get("cwd").cloned().unwrap_or_default();
                    assert!(
                        output.status.success(),
                        "the cwd probe in {cwd} as {user} failed: {output:?}"
                    );
                    assert!(
                        landed.starts_with('/'),
                        "a command started in {cwd} as {user} runs outside the root: \
                         getcwd returned {landed:?}"
                    );
                    assert_eq!(
                        outcomes.get("reachable from root").map(String::as_str),
                        Some("yes"),
                        "a command started in {cwd} as {user} has a cwd ({landed}) that the \
                         sandbox's root does not reach: {output:?}"
                    );
                }
            }
        }
    }

    // What a command inherits: only stdio, plus the descriptor of the
    // directory ls is listing.
    for user in ["root", "user"] {
        let direct = sandbox
            .command("ls")
            .args(["-l", "/proc/self/fd"])
            .user(user)
            .output()
            .await
            .expect("run ls -l /proc/self/fd");
        let shell = sh_as(&sandbox, user, "ls -l /proc/self/fd").await;
        for (route, output) in [("directly", &direct), ("through the shell", &shell)] {
            assert!(
                output.status.success(),
                "ls /proc/self/fd {route} as {user} failed: {output:?}"
            );
            let listing = text(&output.stdout);
            let fds = listed_fds(&listing);
            assert!(
                fds.iter().any(|(fd, _)| *fd == 0),
                "no fd 0 in the listing {route} as {user}, so it was not parsed:\n{listing}"
            );
            let extra: Vec<&(u32, String)> = fds
                .iter()
                .filter(|(fd, target)| *fd > 2 && !is_listing_dir(target))
                .collect();
            assert!(
                extra.is_empty(),
                "a command run {route} as {user} holds descriptors beyond stdio: {extra:?}\n{listing}"
            );
        }
    }

    // The same, seen from outside a running program, so descriptors that
    // ls itself might close do not hide. It runs as root because sandbox
    // root lacks CAP_SYS_PTRACE and reads only its own uid's fd links.
    let mut sleeper = sandbox
        .command("sleep")
        .arg("10")
        .user("root")
        .start()
        .await
        .expect("start sleep");
    let listing = sh_as(
        &sandbox,
        "root",
        &format!("ls -l /proc/{}/fd", sleeper.pid()),
    )
    .await;
    sleeper.kill().await.expect("kill sleep");
    let _ = sleeper.wait().await;
    assert!(
        listing.status.success(),
        "listing the descriptors of sleep failed: {listing:?}"
    );
    let listing = text(&listing.stdout);
    let fds: BTreeSet<u32> = listed_fds(&listing).into_iter().map(|(fd, _)| fd).collect();
    assert_eq!(
        fds,
        BTreeSet::from([0, 1, 2]),
        "a running command holds descriptors beyond stdio:\n{listing}"
    );
}

// 3. ptrace of a helper.

const PTRACE_LOOP: &str = r#"
import time
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206
me = os.getpid()
seen = set()
counts = {}
attached = []
deadline = time.monotonic() + 14
report("ready", "yes")
while not os.path.exists("/tmp/stop-ptrace") and time.monotonic() < deadline:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (me,) or int(name) in seen:
            continue
        pid = int(name)
        seen.add(pid)
        for request_name, request in (("PTRACE_ATTACH", PTRACE_ATTACH), ("PTRACE_SEIZE", PTRACE_SEIZE)):
            result = call(101, request, pid, 0, 0)
            counts[result] = counts.get(result, 0) + 1
            if result == "ok":
                attached.append(f"{request_name} {pid}")
                call(101, PTRACE_DETACH, pid, 0, 0)
report("pids attacked", len(seen))
report("outcomes", " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
report("attached", " ".join(attached) or "none")
# With zero-length vectors these succeed unless something denies them.
report("process_vm_readv", call(310, 1, None, 0, None, 0, 0))
report("process_vm_writev", call(311, 1, None, 0, None, 0, 0))
report("kcmp", call(312, me, me, 0, 0, 0))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptrace_of_helpers_denied() {
    if !require_root("ptrace_of_helpers_denied") {
        return;
    }
    let sandbox = sandbox().await;
    let program = format!("{PRELUDE}\n{PTRACE_LOOP}\nreport(\"end\", \"reached\")\n");
    let mut attacker = sandbox
        .command("python3")
        .args(["-c", &program])
        .user("root")
        .timeout(Some(PROBE_TIMEOUT))
        .start()
        .await
        .expect("start the ptrace loop");

    let mut stdout = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while !text(&stdout).contains("ready: yes") {
            match attacker.next_event().await {
                Ok(Some(CommandEvent::Stdout(bytes))) => stdout.extend_from_slice(&bytes),
                Ok(Some(CommandEvent::Stderr(_))) => {}
                other => return Err(format!("{other:?}")),
            }
        }
        Ok(())
    })
    .await;
    assert!(
        matches!(ready, Ok(Ok(()))),
        "the ptrace loop did not start: {ready:?}, stdout {}",
        text(&stdout)
    );

    for i in 0..20 {
        let output = sandbox
            .command("sleep")
            .arg("0.2")
            .output()
            .await
            .unwrap_or_else(|e| panic!("start command {i} during the ptrace loop: {e}"));
        assert!(
            output.status.success(),
            "command {i} during the ptrace loop failed: {output:?}"
        );
    }
    let stop = sh_as(&sandbox, "root", "touch /tmp/stop-ptrace").await;
    assert!(stop.status.success(), "stopping the loop failed: {stop:?}");

    let rest = attacker.wait().await.expect("wait for the ptrace loop");
    stdout.extend_from_slice(&rest.stdout);
    let probe = Probe {
        label: "ptrace loop as root".into(),
        outcomes: parse_outcomes(&text(&stdout)),
        output: Output { stdout, ..rest },
    };
    probe.assert_completed();

    let attacked: u32 = probe
        .outcome("pids attacked")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        attacked >= 20,
        "the loop attacked only {attacked} pids while 20 commands started:\n{probe}"
    );
    probe.expect("attached", "none");
    let outcomes = probe.outcome("outcomes").unwrap_or_default();
    assert!(
        outcomes.starts_with("EPERM=") && !outcomes.contains(' '),
        "some PTRACE_ATTACH or PTRACE_SEIZE did not fail with EPERM: {outcomes}\n{probe}"
    );
    for call in ["process_vm_readv", "process_vm_writev", "kcmp"] {
        probe.expect(call, "EPERM");
    }
}

/// Sends SIGSTOP, until it is killed, to every process named soulbox-init
/// except PID 1: the supervisors, and each command's first process until
/// its exec.
const STOP_LOOP: &str = r#"
me = os.getpid()
report("ready", "yes")
while True:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, me):
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                if f.read().strip() != "soulbox-init":
                    continue
            os.kill(int(name), 19)
        except OSError:
            pass
"#;

/// Commands started while sandbox root stops SoulBox's processes. Each
/// must return once its timeout has passed, even one whose first process
/// was stopped before its exec, where its supervisor waits in vfork and
/// reports no start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_start_ends_at_timeout() {
    if !require_root("stopped_start_ends_at_timeout") {
        return;
    }
    let sandbox = sandbox().await;
    // Two commands first, so that later ones meet a waiting supervisor too.
    for _ in 0..2 {
        sh(&sandbox, "true").await;
    }
    let program = format!("{PRELUDE}\n{STOP_LOOP}\n");
    let mut attacker = sandbox
        .command("python3")
        .args(["-c", &program])
        .user("root")
        .timeout(Some(Duration::from_secs(120)))
        .start()
        .await
        .expect("start the stop loop");
    let mut stdout = Vec::new();
    while !text(&stdout).contains("ready: yes") {
        match within_limit("the stop loop's start", attacker.next_event()).await {
            Ok(Some(CommandEvent::Stdout(bytes))) => stdout.extend_from_slice(&bytes),
            Ok(Some(CommandEvent::Stderr(_))) => {}
            other => panic!("the stop loop did not start: {other:?}"),
        }
    }

    // Each missing directory of PATH costs the first process a failed
    // execve before it finds `true`, which keeps it named soulbox-init long
    // enough for the loop to find and stop it.
    let mut path: String = (0..10_000).map(|i| format!("/m{i}:")).collect();
    path.push_str("/usr/bin:/bin");
    let command_timeout = Duration::from_secs(2);
    for i in 0..5 {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            sandbox
                .command("true")
                .env("PATH", &path)
                .timeout(Some(command_timeout))
                .output(),
        )
        .await;
        let Ok(output) = output else {
            panic!(
                "command {i} with a {command_timeout:?} timeout was still waiting after 30 s \
                 while the stop loop ran"
            );
        };
        let output = output.unwrap_or_else(|e| panic!("command {i} failed: {e}"));
        assert!(
            output.status.success() || output.timed_out,
            "command {i} neither succeeded nor timed out: {output:?}"
        );
    }

    // `soulbox exec` without a timeout waits for such a start without end,
    // and a SIGTERM must still end it. A try whose command got through
    // before the loop stopped it proves nothing, so there are three.
    let env = format!("PATH={path}");
    let mut stuck = false;
    for _ in 0..3 {
        let mut exec = std::process::Command::new(soulbox_bin())
            .args(["exec", "--env", &env, sandbox.id(), "--", "true"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("run soulbox exec");
        tokio::time::sleep(Duration::from_secs(2)).await;
        if exec.try_wait().expect("poll soulbox exec").is_some() {
            continue;
        }
        stuck = true;
        // SAFETY: kill on the pid of a child this test started.
        unsafe { libc::kill(exec.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = exec.try_wait().expect("poll soulbox exec") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = exec.kill();
                let _ = exec.wait();
                panic!("soulbox exec ignored SIGTERM while its start waited");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
        break;
    }
    assert!(stuck, "the stop loop stopped none of three starts");
    attacker.kill().await.expect("kill the stop loop");
    within_limit("the stop loop's end", attacker.wait())
        .await
        .expect("wait for the stop loop");
    let after = sh(&sandbox, "echo after").await;
    assert_eq!(
        text(&after.stdout),
        "after\n",
        "a command after the stop loop failed: {after:?}"
    );
}

// 4. Terminal injection.

/// Pushes a command into the terminal with every TIOCSTI variant, and
/// tries TIOCLINUX's paste. Stops pushing at the first refused byte.
const TIOCSTI_PROBE: &str = r#"
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
payload = b"touch /tmp/injected\n"
ttys = [("stdin", 0)]
try:
    ttys.append(("/dev/tty", os.open("/dev/tty", os.O_RDWR)))
    report("open /dev/tty", "ok")
except OSError as e:
    report("open /dev/tty", errname(e.errno))
with open("/proc/self/stat") as f:
    report("tty_nr", f.read().rsplit(")", 1)[1].split()[4])
for tty_name, fd in ttys:
    for variant, request in (("TIOCSTI", TIOCSTI),
                             ("TIOCSTI high 0x1", (1 << 32) | TIOCSTI),
                             ("TIOCSTI high 0xdeadbeef", (0xDEADBEEF << 32) | TIOCSTI)):
        first = None
        for byte in payload:
            result = call(16, fd, request, ctypes.byref(ctypes.c_char(byte)))
            first = first or result
            if result != "ok":
                break
        report(f"{variant} on {tty_name}", first)
    for variant, request in (("TIOCLINUX", TIOCLINUX),
                             ("TIOCLINUX high 0xdeadbeef", (0xDEADBEEF << 32) | TIOCLINUX)):
        # Subcode 3 (TIOCL_PASTESEL) pastes the console selection as input.
        report(f"{variant} on {tty_name}", call(16, fd, request, ctypes.byref(ctypes.c_char(3))))
"#;

/// Removes CSI escape sequences (`ESC [` ... final byte), such as the
/// bracketed-paste switches bash writes around each prompt.
fn strip_escapes(screen: &str) -> String {
    let mut out = String::with_capacity(screen.len());
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const TIOCSTI_VARIANTS: [&str; 5] = [
    "TIOCSTI",
    "TIOCSTI high 0x1",
    "TIOCSTI high 0xdeadbeef",
    "TIOCLINUX",
    "TIOCLINUX high 0xdeadbeef",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_injection_denied() {
    if !require_root("terminal_injection_denied") {
        return;
    }
    let sandbox = sandbox().await;
    let script = format!("{PRELUDE}\n{TIOCSTI_PROBE}\nreport(\"end\", \"reached\")\n");
    write_inside(&sandbox, "/tmp/tiocsti.py", script.as_bytes()).await;

    // On a PTY the sandbox owns, where the shell reads what TIOCSTI pushes.
    let mut shell = sandbox
        .pty_shell()
        .user("root")
        .start_pty(24, 80)
        .await
        .expect("start a shell on a PTY");
    shell
        .send_stdin(b"python3 /tmp/tiocsti.py; echo probe-done-$((40 + 2))\n")
        .await
        .expect("type the probe into the PTY");
    let mut screen = Vec::new();
    let finished = tokio::time::timeout(PROBE_TIMEOUT, async {
        while !text(&screen).contains("probe-done-42") {
            match shell.next_event().await {
                Ok(Some(CommandEvent::Stdout(bytes))) => screen.extend_from_slice(&bytes),
                Ok(Some(_)) => {}
                other => return Err(format!("{other:?}")),
            }
        }
        Ok(())
    })
    .await;
    // Time for anything pushed into the input queue to run before `exit`
    // reaches the shell.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = shell.send_stdin(b"exit\n").await;
    if tokio::time::timeout(Duration::from_secs(5), shell.wait())
        .await
        .is_err()
    {
        let _ = shell.kill().await;
    }
    let screen = strip_escapes(&text(&screen));
    assert!(
        matches!(finished, Ok(Ok(()))),
        "the probe on the PTY did not finish: {finished:?}\n{screen}"
    );
    let outcomes = parse_outcomes(&screen);
    assert_eq!(
        outcomes.get("end").map(String::as_str),
        Some("reached"),
        "the probe on the PTY stopped early:\n{screen}"
    );
    assert_eq!(
        outcomes.get("open /dev/tty").map(String::as_str),
        Some("ok"),
        "the PTY shell has no controlling terminal, so the probe tested nothing:\n{screen}"
    );
    for tty in ["stdin", "/dev/tty"] {
        for variant in TIOCSTI_VARIANTS {
            let name = format!("{variant} on {tty}");
            assert_eq!(
                outcomes.get(&name).map(String::as_str),
                Some("EPERM"),
                "{name} on the sandbox's PTY did not fail with EPERM:\n{screen}"
            );
        }
    }
    let injected = sh_as(&sandbox, "root", "test -e /tmp/injected").await;
    assert_eq!(
        injected.status.code(),
        Some(1),
        "text pushed into the PTY ran as a command (/tmp/injected exists)"
    );

    // A plain command has no terminal at all: the host's /dev/tty does not
    // open, and TIOCSTI on its stdin fails in seccomp, before the kernel
    // could return ENOTTY.
    for user in ["root", "user"] {
        let probe = python(&sandbox, user, TIOCSTI_PROBE).await;
        probe.assert_completed();
        probe.expect("open /dev/tty", "ENXIO");
        probe.expect("tty_nr", "0");
        for variant in TIOCSTI_VARIANTS {
            probe.expect(&format!("{variant} on stdin"), "EPERM");
        }
    }
}

// 5. Writing kernel settings through /proc.

const PROC_KNOBS_PROBE: &str = r#"
# Opening for writing is the whole attack here: nothing is ever written,
# because these knobs are global to the host.
for path in ("/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
             "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
             "/proc/sys/kernel/hostname", "/proc/irq/default_smp_affinity",
             "/proc/self/root/proc/sys/kernel/core_pattern"):
    report(f"open {path} for writing", try_open(path, os.O_WRONLY))
for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/kallsyms",
             "/proc/sched_debug", "/proc/vmallocinfo", "/proc/slabinfo"):
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
        report(f"read {path}", "empty" if not data else f"{len(data)} bytes")
    except FileNotFoundError:
        report(f"read {path}", "absent")
    except OSError as e:
        report(f"read {path}", errname(e.errno))
with open("/proc/self/mountinfo") as f:
    sysfs = [line.split(" - ")[0].split()[4] for line in f if " - sysfs " in line]
report("sysfs mounts", " ".join(sysfs) or "none")
report("/sys/kernel exists", "yes" if os.path.exists("/sys/kernel") else "no")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_kernel_knobs_read_only() {
    if !require_root("proc_kernel_knobs_read_only") {
        return;
    }
    let sandbox = sandbox().await;
    let knobs = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/hostname",
        "/proc/irq/default_smp_affinity",
        "/proc/self/root/proc/sys/kernel/core_pattern",
    ];
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/kallsyms",
        "/proc/sched_debug",
        "/proc/vmallocinfo",
        "/proc/slabinfo",
    ];

    // A knob the host kernel lacks (built without magic SysRq or modules,
    // for example) is absent from the sandbox's procfs too.
    let expected = |knob: &str| {
        let host_path = knob.replace("/proc/self/root", "");
        if Path::new(&host_path).exists() {
            "EROFS"
        } else {
            "ENOENT"
        }
    };
    let root = python(&sandbox, "root", PROC_KNOBS_PROBE).await;
    root.assert_completed();
    for knob in knobs {
        root.expect(&format!("open {knob} for writing"), expected(knob));
    }
    for file in masked {
        root.expect_one_of(&format!("read {file}"), &["empty", "absent"]);
    }
    root.expect("sysfs mounts", "none");
    root.expect("/sys/kernel exists", "no");

    let user = python(&sandbox, "user", PROC_KNOBS_PROBE).await;
    user.assert_completed();
    for knob in knobs {
        let allowed: &[&str] = match expected(knob) {
            "ENOENT" => &["ENOENT"],
            _ => &["EACCES", "EROFS"],
        };
        user.expect_one_of(&format!("open {knob} for writing"), allowed);
    }
    for file in masked {
        user.expect_one_of(&format!("read {file}"), &["empty", "absent", "EACCES"]);
    }
}

// 6. Mount propagation.

async fn mountinfo_inside(sandbox: &Sandbox) -> String {
    let output = sh_as(sandbox, "root", "cat /proc/self/mountinfo").await;
    assert!(
        output.status.success(),
        "reading the sandbox's mountinfo failed: {output:?}"
    );
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_isolated() {
    if !require_root("mount_propagation_isolated") {
        return;
    }
    let sandbox = sandbox().await;

    let inside = mountinfo_inside(&sandbox).await;
    let mounts = parse_mountinfo(&inside);
    assert!(
        mounts.iter().any(|m| m.mount_point == "/"),
        "the sandbox's mountinfo has no root mount, so it was not parsed:\n{inside}"
    );
    let propagating: Vec<String> = mounts
        .iter()
        .filter(|m| {
            m.optional
                .iter()
                .any(|f| f.starts_with("shared:") || f.starts_with("master:"))
        })
        .map(|m| format!("{} {:?}", m.mount_point, m.optional))
        .collect();
    assert!(
        propagating.is_empty(),
        "mounts inside the sandbox share propagation with another namespace: {propagating:?}"
    );

    // A host mount made after creation.
    let host_source = unique_name("host-mount");
    let _host_mount = HostTmpfs::mount(&host_source, Path::new("/tmp").join(&host_source));
    assert!(
        !host_mounts_mentioning(&host_source).is_empty(),
        "the host tmpfs {host_source} is missing from the host's mount table"
    );
    let inside = mountinfo_inside(&sandbox).await;
    assert!(
        !inside.contains(&host_source),
        "the host tmpfs {host_source}, mounted after creation, appears in the sandbox:\n{inside}"
    );

    // A mount made inside. Sandbox root cannot mount, so the host's root
    // makes it in the sandbox's mount namespace with nsenter(1).
    let denied = sh_as(
        &sandbox,
        "root",
        "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
    )
    .await;
    assert!(
        !denied.status.success(),
        "sandbox root mounted a tmpfs: {denied:?}"
    );
    let inner_source = unique_name("inner-mount");
    let mkdir = sh_as(&sandbox, "root", "mkdir -p /tmp/inner-mount").await;
    assert!(mkdir.status.success(), "mkdir inside failed: {mkdir:?}");
    let nsenter = std::process::Command::new("nsenter")
        .args(["-t", &sandbox.pid().to_string(), "-m", "--"])
        .args(["mount", "-t", "tmpfs", "-o", "size=64k", &inner_source])
        .arg("/tmp/inner-mount")
        .output()
        .expect("start nsenter on the host");
    assert!(
        nsenter.status.success(),
        "nsenter mount into the sandbox's namespace failed: {}",
        text(&nsenter.stderr)
    );
    let inside = mountinfo_inside(&sandbox).await;
    assert!(
        inside.contains(&inner_source),
        "the mount made in the sandbox's namespace is not visible inside, so the check below \
         proves nothing:\n{inside}"
    );
    let leaked = host_mounts_mentioning(&inner_source);
    assert!(
        leaked.is_empty(),
        "a mount made inside the sandbox appears on the host: {leaked:?}"
    );
    let scratch = host_mounts_mentioning("/run/soulbox");
    assert!(
        scratch.is_empty(),
        "the sandbox's overlay or scratch mounts appear on the host: {scratch:?}"
    );

    let id = sandbox.id().to_string();
    sandbox.kill().await.expect("kill the sandbox");
    let left = host_mounts_mentioning(&id);
    assert!(
        left.is_empty(),
        "host mounts mention the killed sandbox {id}: {left:?}"
    );
}

// 7. Nested namespaces as a kernel attack surface.

const NAMESPACE_PROBE: &str = r#"
import subprocess, threading
NEWNS, NEWUSER, NEWNET, NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
NEWUTS, NEWIPC, NEWCGROUP, NEWTIME = 0x04000000, 0x08000000, 0x02000000, 0x80
SIGCHLD, AT_FDCWD = 17, -100

def child_safe(nr, *args):
    # If a clone is let through, the child leaves at once.
    ret = raw(nr, *args)
    if ret == 0:
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
    return outcome(ret)

for name, flags in (("NEWUSER|NEWNS", NEWUSER | NEWNS), ("NEWUSER|NEWNET", NEWUSER | NEWNET),
                    ("NEWNS", NEWNS), ("NEWNET", NEWNET), ("NEWPID", NEWPID),
                    ("NEWUTS", NEWUTS), ("NEWIPC", NEWIPC), ("NEWCGROUP", NEWCGROUP),
                    ("NEWTIME", NEWTIME), ("NEWUSER with high bits", (1 << 32) | NEWUSER)):
    report(f"unshare {name}", call(272, flags))
    report(f"clone {name}", child_safe(56, flags | SIGCHLD, 0, 0, 0, 0))
clone_args = ctypes.create_string_buffer(88)
ctypes.c_uint64.from_buffer(clone_args, 0).value = NEWUSER
ctypes.c_uint64.from_buffer(clone_args, 32).value = SIGCHLD
report("clone3", child_safe(435, clone_args, 88))
netns = os.open("/proc/self/ns/net", os.O_RDONLY)
report("setns", call(308, netns, 0))
os.makedirs("/tmp/probe-mnt", exist_ok=True)
report("mount tmpfs", call(165, b"none", b"/tmp/probe-mnt", b"tmpfs", 0, None))
report("mount overlay", call(165, b"overlay", b"/tmp/probe-mnt", b"overlay", 0,
                             b"lowerdir=/usr,upperdir=/tmp/u,workdir=/tmp/w"))
report("umount2", call(166, b"/proc/sys", 2))
report("pivot_root", call(155, b".", b"."))
report("open_tree", call(428, AT_FDCWD, b"/tmp", 1))
report("move_mount", call(429, -1, b"", AT_FDCWD, b"/tmp/probe-mnt", 0))
report("fsopen", call(430, b"tmpfs", 0))
report("fsconfig", call(431, -1, 0, None, None, 0))
report("fsmount", call(432, -1, 0, 0))
report("fspick", call(433, AT_FDCWD, b"/", 0))
report("mount_setattr", call(442, AT_FDCWD, b"/", 0, None, 0))

# What must keep working.
report("unshare CLONE_FS", call(272, 0x200))
pid = os.fork()
if pid == 0:
    os._exit(7)
_, status = os.waitpid(pid, 0)
report("fork", "ok" if os.waitstatus_to_exitcode(status) == 7 else f"status {status}")
result = []
thread = threading.Thread(target=lambda: result.append(1))
thread.start()
thread.join()
report("thread", "ok" if result == [1] else "did not run")
report("subprocess", "ok" if subprocess.run(["true"]).returncode == 0 else "failed")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_namespaces_denied() {
    if !require_root("nested_namespaces_denied") {
        return;
    }
    let sandbox = sandbox().await;
    let flags = [
        "NEWUSER|NEWNS",
        "NEWUSER|NEWNET",
        "NEWNS",
        "NEWNET",
        "NEWPID",
        "NEWUTS",
        "NEWIPC",
        "NEWCGROUP",
        "NEWTIME",
        "NEWUSER with high bits",
    ];
    let mount_calls = [
        "setns",
        "mount tmpfs",
        "mount overlay",
        "umount2",
        "pivot_root",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
    ];
    for user in ["root", "user"] {
        let probe = python(&sandbox, user, NAMESPACE_PROBE).await;
        probe.assert_completed();
        for flag in flags {
            probe.expect(&format!("unshare {flag}"), "EPERM");
            probe.expect(&format!("clone {flag}"), "EPERM");
        }
        probe.expect("clone3", "ENOSYS");
        for name in mount_calls {
            probe.expect(name, "EPERM");
        }
        for name in ["unshare CLONE_FS", "fork", "thread", "subprocess"] {
            probe.expect(name, "ok");
        }
    }

    // The same attacks through the usual tools.
    let tools = [
        ("root", "unshare -Urm true"),
        ("root", "unshare -Urn true"),
        ("root", "unshare -m true"),
        ("user", "unshare -Urm true"),
        ("user", "unshare -Ur true"),
        ("root", "mkdir -p /tmp/t && mount -t tmpfs none /tmp/t"),
        (
            "root",
            "mkdir -p /tmp/o /tmp/u /tmp/w && \
             mount -t overlay overlay -o lowerdir=/usr,upperdir=/tmp/u,workdir=/tmp/w /tmp/o",
        ),
    ];
    for (user, line) in tools {
        let output = sh_as(&sandbox, user, line).await;
        assert!(
            !output.status.success(),
            "{line:?} as {user} succeeded inside the sandbox: {output:?}"
        );
    }
}

// 8. Kernel keyrings.

const KEYRING_PROBE: &str = r#"
KEY_SPEC_PROCESS_KEYRING, KEY_SPEC_SESSION_KEYRING = -2, -3
report("keyctl get session keyring", call(250, 0, KEY_SPEC_SESSION_KEYRING, 1))
report("keyctl join session keyring", call(250, 1, None))
report("add_key", call(248, b"user", b"soulbox-probe", b"secret", 6, KEY_SPEC_PROCESS_KEYRING))
report("request_key", call(249, b"user", b"soulbox-probe", None, 0))
try:
    with open("/proc/keys", "rb") as f:
        report("read /proc/keys", "empty" if not f.read() else "has data")
except FileNotFoundError:
    report("read /proc/keys", "absent")
except OSError as e:
    report("read /proc/keys", errname(e.errno))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_denied() {
    if !require_root("keyrings_denied") {
        return;
    }
    let sandbox = sandbox().await;
    for user in ["root", "user"] {
        let probe = python(&sandbox, user, KEYRING_PROBE).await;
        probe.assert_completed();
        for name in [
            "keyctl get session keyring",
            "keyctl join session keyring",
            "add_key",
            "request_key",
        ] {
            probe.expect(name, "EPERM");
        }
        probe.expect_one_of("read /proc/keys", &["empty", "absent"]);
    }

    let tool = sh_as(&sandbox, "root", "command -v keyctl && keyctl show").await;
    assert!(
        !tool.status.success(),
        "keyctl show succeeded inside the sandbox: {tool:?}"
    );
}

// 9. userfaultfd and io_uring.

const URING_PROBE: &str = r#"
UFFD_USER_MODE_ONLY = 1
report("userfaultfd", call(323, 0))
report("userfaultfd user mode", call(323, UFFD_USER_MODE_ONLY))
params = ctypes.create_string_buffer(120)
report("io_uring_setup", call(425, 8, params))
report("io_uring_enter", call(426, -1, 0, 0, 0, None, 0))
report("io_uring_register", call(427, -1, 0, None, 0))
report("/dev/userfaultfd", "present" if os.path.exists("/dev/userfaultfd") else "absent")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userfaultfd_io_uring_denied() {
    if !require_root("userfaultfd_io_uring_denied") {
        return;
    }
    let sandbox = sandbox().await;
    for user in ["root", "user"] {
        // Completing proves the calls returned an errno instead of killing
        // the process.
        let probe = python(&sandbox, user, URING_PROBE).await;
        probe.assert_completed();
        for name in [
            "userfaultfd",
            "userfaultfd user mode",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ] {
            probe.expect(name, "EPERM");
        }
        probe.expect("/dev/userfaultfd", "absent");
    }

    // Runtimes that probe io_uring at start must fall back and run.
    let node = sandbox
        .command("node")
        .args([
            "-e",
            "require('fs').readFile('/etc/hostname', (e, d) => { if (e) throw e; \
             process.stdout.write(d) })",
        ])
        .timeout(Some(PROBE_TIMEOUT))
        .output()
        .await
        .expect("start node");
    assert!(node.status.success(), "node failed inside: {node:?}");
    assert_eq!(
        text(&node.stdout).trim_end(),
        sandbox.id(),
        "node's file read returned the wrong data"
    );
    let node_minimal = sandbox
        .command("node")
        .args(["-e", "1"])
        .output()
        .await
        .expect("start node -e 1");
    assert!(
        node_minimal.status.success(),
        "node -e 1 failed inside: {node_minimal:?}"
    );
    let python_minimal = sandbox
        .command("python3")
        .args(["-c", "1"])
        .output()
        .await
        .expect("start python3 -c 1");
    assert!(
        python_minimal.status.success(),
        "python3 -c 1 failed inside: {python_minimal:?}"
    );
}

// 10. Other whole-machine and kernel-surface system calls.

/// Each call has arguments that change nothing even where it is allowed:
/// bad flags, missing paths, NULL buffers or read-only queries.
const DANGEROUS_PROBE: &str = r#"
AT_FDCWD = -100
handle = ctypes.create_string_buffer(8 + 128)
ctypes.c_uint32.from_buffer(handle, 0).value = 128
mount_id = ctypes.c_int(0)
timex = ctypes.create_string_buffer(256)
calls = [
    ("perf_event_open", 298, (None, 0, -1, -1, 0)),
    ("bpf", 321, (999, None, 0)),
    ("kexec_load", 246, (0, 0, None, 0xFFFF0000)),
    ("kexec_file_load", 320, (-1, -1, 0, None, 0xFFFF0000)),
    ("init_module", 175, (None, 0, b"")),
    ("finit_module", 313, (-1, b"", 0)),
    ("delete_module", 176, (b"soulbox_no_such_module", os.O_NONBLOCK)),
    ("open_by_handle_at", 304, (-1, None, 0)),
    ("name_to_handle_at", 303, (AT_FDCWD, b"/", handle, ctypes.byref(mount_id), 0)),
    ("swapon", 167, (b"/nonexistent-swap", 0)),
    ("swapoff", 168, (b"/nonexistent-swap",)),
    ("reboot", 169, (0, 0, 0, None)),
    ("settimeofday", 164, (None, None)),
    ("clock_settime", 227, (0, None)),
    ("clock_adjtime", 305, (0, timex)),
    ("adjtimex", 159, (timex,)),
    ("acct", 163, (b"/nonexistent-acct",)),
    ("quotactl", 179, (0, None, 0, None)),
    ("quotactl_fd", 443, (-1, 0, 0, None)),
    ("syslog", 103, (10, None, 0)),
]
for name, nr, args in calls:
    report(name, call(nr, *args))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_syscalls_denied() {
    if !require_root("dangerous_syscalls_denied") {
        return;
    }
    let sandbox = sandbox().await;
    let probe = python(&sandbox, "root", DANGEROUS_PROBE).await;
    probe.assert_completed();
    for name in [
        "perf_event_open",
        "bpf",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "name_to_handle_at",
        "swapon",
        "swapoff",
        "reboot",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "acct",
        "quotactl",
        "quotactl_fd",
        "syslog",
    ] {
        probe.expect(name, "EPERM");
    }
}

// 11. Fork bomb.

/// Highest pids limit under which this suite runs a fork bomb.
const MAX_SAFE_PIDS_LIMIT: u64 = 16384;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_contained() {
    if !require_root("fork_bomb_contained") {
        return;
    }
    let _host_load = HOST_LOAD.lock().await;
    let sandbox = sandbox().await;
    let settings = cgroup_settings(&sandbox, &["pids.max"]);
    let limit = settings
        .iter()
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .min();
    let Some(limit) = limit else {
        panic!(
            "no pids limit: fork bomb not run. The sandbox's cgroups set no pids.max \
             (found {settings:?}); a fork bomb inside would exhaust the host's pids"
        );
    };
    assert!(
        limit <= MAX_SAFE_PIDS_LIMIT,
        "pids limit {limit} is above {MAX_SAFE_PIDS_LIMIT}: fork bomb not run ({settings:?})"
    );

    let other = soulbox_tests::sandbox().await;
    let started = Instant::now();
    // The leader exits at once and leaves the bomb running in the
    // background, where only the limit and the kill below stop it.
    let bomb = sandbox
        .shell(":(){ :|:& };:")
        .timeout(Some(Duration::from_secs(5)))
        .output()
        .await;
    assert!(bomb.is_ok(), "the fork bomb did not start: {bomb:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Each directory's pids.current must stay at or below its own pids.max.
    // The soulbox parents also count other sandboxes, so the sandbox's
    // limit is not compared with their counts.
    for (max_path, max) in &settings {
        let Ok(max) = max.parse::<u64>() else {
            continue;
        };
        let current_path = max_path.with_file_name("pids.current");
        let current: u64 = std::fs::read_to_string(&current_path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            current <= max,
            "{} reads {current}, above its pids.max {max}",
            current_path.display()
        );
    }
    let host_fork = std::process::Command::new("true").status();
    assert!(
        host_fork.is_ok_and(|s| s.success()),
        "the host could not fork while the bomb ran"
    );
    let other_fork = sh_as(&other, "user", "true & wait; echo forked").await;
    assert_eq!(
        text(&other_fork.stdout),
        "forked\n",
        "another sandbox could not fork while the bomb ran: {other_fork:?}"
    );

    let id = sandbox.id().to_string();
    let pid1 = sandbox.pid();
    sandbox.kill().await.expect("kill the bombed sandbox");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ending the fork bomb took {:?}",
        started.elapsed()
    );
    assert!(
        !host_process_alive(pid1),
        "PID 1 ({pid1}) of the bombed sandbox survived the kill"
    );
    let left = leftover_cgroups(&id);
    assert!(
        left.is_empty(),
        "cgroups of the bombed sandbox survived the kill, so processes may too: {left:?}"
    );
}

// 12. Memory exhaustion, also through tmpfs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_exhaustion_contained() {
    if !require_root("memory_exhaustion_contained") {
        return;
    }
    // The tmpfs sizes bound the fill below to about 7 GiB even if no limit
    // catches it, which exceeds the fall the host floor allows.
    let mut options = soulbox_tests::options();
    options.disk_size = 6 * GIB;
    options.tmp_size = GIB;
    let _host_load = HOST_LOAD.lock().await;
    let sandbox = Sandbox::create(options).await.expect("create a sandbox");
    let settings = cgroup_settings(&sandbox, &["memory.max", "memory.limit_in_bytes"]);
    let limit = settings
        .iter()
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .min()
        .filter(|limit| *limit <= 2 * GIB);
    let Some(limit) = limit else {
        panic!(
            "no memory limit of at most 2 GiB: memory exhaustion not run. The sandbox's cgroups \
             set {settings:?}; bytearray(1 << 34) inside would take 16 GiB of host memory"
        );
    };
    let swap_total = meminfo_kib("SwapTotal");
    let swap_settings = cgroup_settings(
        &sandbox,
        &["memory.swap.max", "memory.memsw.limit_in_bytes"],
    );
    let swap_bounded = swap_total == 0
        || swap_settings
            .iter()
            .any(|(_, value)| value == "0" || value.parse::<u64>().is_ok_and(|v| v <= limit));
    assert!(
        swap_bounded,
        "the host has {swap_total} KiB of swap and the sandbox's swap is unlimited: \
         {swap_settings:?}"
    );

    let before = mem_available_bytes();
    // The limit, plus room for other processes on a shared host.
    let floor = before.saturating_sub(limit + 2 * GIB).max(GIB);
    let sampler = MemorySampler::start();

    let hog = sandbox
        .command("python3")
        .args(["-c", "b = bytearray(1 << 34)\nprint('allocated')"])
        .user("root")
        .timeout(Some(PROBE_TIMEOUT))
        .output()
        .await
        .expect("start the allocation");
    assert!(
        hog.oom_killed,
        "bytearray(1 << 34) was not reported as killed by the OOM killer: {hog:?}"
    );
    assert_eq!(
        hog.status,
        ExitStatus::Signal(libc::SIGKILL),
        "the allocation did not end by SIGKILL: {hog:?}"
    );
    assert!(
        !text(&hog.stdout).contains("allocated"),
        "16 GiB were allocated inside a sandbox limited to {limit} bytes"
    );

    // tmpfs pages are memory too. Filling /dev/shm, /tmp and the writable
    // layer must stop at the memory limit (ENOSPC, ENOMEM or an OOM kill,
    // whichever comes first), so only the host's memory shows the outcome.
    // A full sandbox may fail to start even `du`, so nothing is measured
    // inside afterwards.
    for path in ["/dev/shm/fill", "/tmp/fill", "/home/user/fill"] {
        let fill = sandbox
            .command("dd")
            .args(["if=/dev/zero", &format!("of={path}"), "bs=1M", "count=6144"])
            .user("root")
            .timeout(Some(PROBE_TIMEOUT))
            .output()
            .await;
        // A sandbox at its limit may fail to start dd at all, which is
        // fine. Only a fill that runs into its timeout is wrong.
        assert!(
            !fill.as_ref().is_ok_and(|output| output.timed_out),
            "filling {path} did not end within {PROBE_TIMEOUT:?}: {fill:?}"
        );
    }
    let lowest = sampler.lowest();
    assert!(
        lowest >= floor,
        "host MemAvailable fell to {lowest} bytes, below the floor {floor} \
         (it was {before} before)"
    );
}

// 13. Disk and inode exhaustion.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_exhaustion_contained() {
    if !require_root("disk_exhaustion_contained") {
        return;
    }
    const DISK_SIZE: u64 = 64 * MIB;
    const TMP_SIZE: u64 = 32 * MIB;
    /// Size of every sandbox's /dev/shm, fixed by SoulBox's PID 1.
    const SHM_SIZE: u64 = 64 * MIB;
    /// The attack's number of empty files.
    const ATTACK_FILES: u64 = 1_000_000;

    let mut options = soulbox_tests::options();
    options.disk_size = DISK_SIZE;
    options.tmp_size = TMP_SIZE;
    let _host_load = HOST_LOAD.lock().await;
    let sandbox = Sandbox::create(options).await.expect("create a sandbox");

    // The writable layer is its own filesystem of DISK_SIZE bytes (overlayfs
    // reports its upper layer's statfs), so what is written there never
    // reaches the host's disk. Comparing the host disk's free space before
    // and after proves nothing on a shared host, whose other processes
    // write meanwhile.
    let statfs = python(
        &sandbox,
        "root",
        "st = os.statvfs('/')\nreport('inodes', st.f_files)\nreport('free inodes', st.f_ffree)\n\
         report('bytes', st.f_blocks * st.f_frsize)",
    )
    .await;
    statfs.assert_completed();
    let layer_bytes: u64 = statfs
        .outcome("bytes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        layer_bytes > 0 && layer_bytes <= DISK_SIZE,
        "statfs of / inside reports {layer_bytes} bytes, not the {DISK_SIZE}-byte writable layer"
    );

    let memory_before = mem_available_bytes();
    let sampler = MemorySampler::start();

    for (path, size) in [
        ("/home/user/big", DISK_SIZE),
        ("/tmp/big", TMP_SIZE),
        ("/dev/shm/big", SHM_SIZE),
    ] {
        let count = 4 * size / MIB;
        let fill = sh_as(
            &sandbox,
            "root",
            &format!(
                "dd if=/dev/zero of={path} bs=1M count={count} 2>&1; \
                 echo size: $(stat -c %s {path})"
            ),
        )
        .await;
        let output = text(&fill.stdout);
        assert!(
            output.contains("No space left on device"),
            "filling {path} with {count} MiB did not end in ENOSPC:\n{output}"
        );
        let written: u64 = parse_outcomes(&output)
            .get("size")
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(
            written <= size,
            "{path} grew to {written} bytes, above its {size}-byte limit"
        );
        assert!(
            written >= size / 2,
            "{path} stopped at {written} bytes, far below its {size}-byte limit:\n{output}"
        );
    }
    let removed = sh_as(&sandbox, "root", "rm /home/user/big /tmp/big /dev/shm/big").await;
    assert!(
        removed.status.success(),
        "removing the fills failed: {removed:?}"
    );

    let inodes: u64 = statfs
        .outcome("inodes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let free_inodes: u64 = statfs
        .outcome("free inodes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        inodes > 0 && inodes <= ATTACK_FILES,
        "no inode limit at or below {ATTACK_FILES} on the writable layer (statfs reports \
         {inodes} inodes, 0 meaning unlimited): the million-file attack was not run"
    );
    let create = python(
        &sandbox,
        "root",
        &format!(
            r#"
os.mkdir("/home/user/inodes")
created, result = 0, "no error"
while created < {bound}:
    try:
        fd = os.open(f"/home/user/inodes/{{created}}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError as e:
        result = errname(e.errno)
        break
    os.close(fd)
    created += 1
report("created", created)
report("create outcome", result)
"#,
            bound = free_inodes + 1000
        ),
    )
    .await;
    create.assert_completed();
    create.expect("create outcome", "ENOSPC");
    let created: u64 = create
        .outcome("created")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        created <= free_inodes,
        "{created} files were created with {free_inodes} inodes free"
    );

    // The fills take at most 160 MiB and the files their inodes; the rest
    // is room for other processes on a shared host.
    let lowest = sampler.lowest();
    let floor = memory_before.saturating_sub(2 * GIB);
    assert!(
        lowest >= floor,
        "host MemAvailable fell to {lowest} bytes, below the floor {floor} \
         (it was {memory_before} before)"
    );
}

// 14. setuid binaries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_binaries_neutralized() {
    if !require_root("setuid_binaries_neutralized") {
        return;
    }
    let sandbox = sandbox().await;
    let dirs = ["/home/user", "/tmp", "/dev/shm"];

    for dir in dirs {
        let prepare = sh_as(
            &sandbox,
            "root",
            &format!(
                "cp /usr/bin/id {dir}/rootid && chmod 4755 {dir}/rootid && \
                 cp /usr/bin/bash {dir}/rootsh && chmod 4755 {dir}/rootsh && \
                 stat -c '%a %U' {dir}/rootid {dir}/rootsh"
            ),
        )
        .await;
        assert_eq!(
            text(&prepare.stdout),
            "4755 root\n4755 root\n",
            "root could not make setuid copies in {dir}, so nothing was tested: {prepare:?}"
        );
        for (program, line) in [
            ("id", format!("{dir}/rootid -u")),
            ("bash -p", format!("{dir}/rootsh -p -c 'id -u'")),
        ] {
            let output = sh_as(&sandbox, "user", &line).await;
            assert!(
                output.status.success(),
                "the setuid {program} in {dir} did not run: {output:?}"
            );
            assert_eq!(
                text(&output.stdout),
                "1000\n",
                "the setuid-root {program} in {dir} gave user a privileged euid"
            );
        }
    }

    for user in ["user", "root"] {
        let status = sh_as(&sandbox, user, "grep NoNewPrivs /proc/self/status").await;
        assert_eq!(
            text(&status.stdout).split_whitespace().collect::<Vec<_>>(),
            ["NoNewPrivs:", "1"],
            "a command as {user} runs without no_new_privs"
        );
    }

    // nodev on every writable place: a node that root could make (SoulBox
    // drops CAP_MKNOD, so mknod fails) must not open.
    let mknod = python(
        &sandbox,
        "root",
        r#"
import stat
for d in ("/home/user", "/tmp", "/dev/shm"):
    node = f"{d}/null-copy"
    mknod_result = attempt(lambda: os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3)))
    report(f"mknod in {d}", mknod_result)
    report(f"open node in {d}", try_open(node, os.O_RDWR) if mknod_result == "ok" else "not created")
"#,
    )
    .await;
    mknod.assert_completed();
    for dir in dirs {
        mknod.expect_one_of(&format!("open node in {dir}"), &["EACCES", "not created"]);
    }

    let mountinfo = sh_as(&sandbox, "root", "cat /proc/self/mountinfo").await;
    let mountinfo = text(&mountinfo.stdout);
    let mounts = parse_mountinfo(&mountinfo);
    assert!(
        mounts.len() > 5,
        "the sandbox's mountinfo was not parsed:\n{mountinfo}"
    );
    let suid_allowed: Vec<String> = mounts
        .iter()
        .filter(|m| !m.options.iter().any(|o| o == "nosuid"))
        .map(|m| format!("{} ({})", m.mount_point, m.fstype))
        .collect();
    assert!(
        suid_allowed.is_empty(),
        "mounts inside lack nosuid: {suid_allowed:?}\n{mountinfo}"
    );
}

// 15. Host secrets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_secrets_invisible() {
    if !require_root("host_secrets_invisible") {
        return;
    }
    // Short or common values (versions, "true") could match inside by
    // chance, so only long ones serve as secrets.
    let env_secrets: Vec<(String, String)> = std::env::vars()
        .filter(|(key, value)| key.starts_with("CARGO") && value.len() >= 12)
        .collect();
    assert!(
        !env_secrets.is_empty(),
        "the test's environment has no CARGO* variable with a value of 12 bytes or more; \
         run it through cargo test"
    );
    let root_name = unique_name("root-secret");
    let home_name = unique_name("home-secret");
    let root_token = unique_name("root-token");
    let home_token = unique_name("home-token");
    let _root_marker = HostFile::create(Path::new("/root").join(&root_name), &root_token);
    let _home_marker = HostFile::create(Path::new("/home").join(&home_name), &home_token);
    let sandbox = sandbox().await;

    let mut patterns: Vec<String> = env_secrets.iter().map(|(_, value)| value.clone()).collect();
    patterns.extend([root_name.clone(), home_name.clone(), root_token, home_token]);
    // Patterns go through stdin, so no command line inside contains them
    // for the /proc search to find. /dev is left out of the recursive
    // search, because opening /dev/tty without a terminal fails, except for
    // /dev/shm, the one writable place in it.
    let pattern_file = format!("{}\n", patterns.join("\n"));

    let files = sh_with_stdin(
        &sandbox,
        "grep -r -l -F -s -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr \
         --exclude-dir=dev -f /dev/stdin / /dev/shm",
        pattern_file.as_bytes(),
    )
    .await;
    assert_eq!(
        text(&files.stdout),
        "",
        "files inside contain host secrets (CARGO values {:?} or markers): {files:?}",
        env_secrets.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    assert_eq!(
        files.status.code(),
        Some(1),
        "the recursive grep inside did not complete with 'no match': {files:?}"
    );

    let processes = sh_with_stdin(
        &sandbox,
        "grep -l -F -s -f /dev/stdin /proc/[0-9]*/environ /proc/[0-9]*/cmdline",
        pattern_file.as_bytes(),
    )
    .await;
    assert_eq!(
        text(&processes.stdout),
        "",
        "environments or command lines inside contain host secrets: {processes:?}"
    );

    let names = sh_as(
        &sandbox,
        "root",
        "find / -path /proc -prune -o -path /sys -prune -o -name 'soulbox-security-*' -print",
    )
    .await;
    assert_eq!(
        text(&names.stdout),
        "",
        "the host's marker files are visible inside: {names:?}"
    );

    for path in ["/etc/shadow", "/etc/gshadow"] {
        let exists = sh_as(&sandbox, "root", &format!("test -e {path}")).await;
        assert_eq!(exists.status.code(), Some(1), "{path} exists inside");
    }
    for dir in ["/root", "/home"] {
        let host: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("list the host's {dir}: {e}"))
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        let listing = sh_as(&sandbox, "root", &format!("ls -A {dir}")).await;
        let inside: BTreeSet<String> = text(&listing.stdout).lines().map(str::to_string).collect();
        let shared: Vec<&String> = host.intersection(&inside).collect();
        assert!(
            shared.is_empty(),
            "entries of the host's {dir} are visible inside: {shared:?}"
        );
    }

    let comm = sh_as(&sandbox, "root", "cat /proc/1/comm").await;
    assert_eq!(
        text(&comm.stdout),
        "soulbox-init\n",
        "/proc inside is not the sandbox's own procfs"
    );
    let host_pid = std::process::id();
    let visible = sh_as(
        &sandbox,
        "root",
        &format!("test -e /proc/{host_pid}/environ"),
    )
    .await;
    assert_eq!(
        visible.status.code(),
        Some(1),
        "the test process's host pid {host_pid} exists in the sandbox's /proc"
    );
}
