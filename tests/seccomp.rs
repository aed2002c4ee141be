//! The seccomp policy in real sandboxes: the default allow-list runs
//! common programs, callers can add a rule, replace the policy or choose
//! kill, and invalid policies are rejected before anything is created.
//!
//! The attacks the default policy stops have their tests in `security.rs`.
//! As there, raw system calls from Python use x86-64's numbers, and the
//! names in [`CAT_SYSCALLS`] are x86-64's.

use std::time::Duration;

use soulbox_core::{
    ArgCondition, Error, ExitStatus, Output, Sandbox, SeccompAction, SeccompPolicy,
};
use soulbox_tests::*;

/// Timeout of each command. Python's multiprocessing with the spawn and
/// forkserver methods starts several interpreters, which is slow on a
/// loaded two-core machine.
const TIMEOUT: Duration = Duration::from_secs(120);

const SIGSYS: i32 = 31;

/// Creates a sandbox with `policy` that ends with its handle.
async fn sandbox_with(policy: SeccompPolicy) -> Sandbox {
    Sandbox::create(options().seccomp(policy))
        .await
        .expect("create a sandbox with a custom seccomp policy")
}

/// Runs `program args` directly (no shell) as `user`.
async fn run_as(sandbox: &Sandbox, user: &str, program: &str, args: &[&str]) -> Output {
    sandbox
        .command(program)
        .args(args)
        .user(user)
        .timeout(Some(TIMEOUT))
        .output()
        .await
        .unwrap_or_else(|e| panic!("start {program} {args:?}: {e}"))
}

async fn python(sandbox: &Sandbox, code: &str) -> Output {
    run_as(sandbox, "user", "python3", &["-c", code]).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "status {}, timed out {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        output.timed_out,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Asserts that each of `expected` is a whole line of the output's stdout.
fn assert_lines(output: &Output, expected: &[&str]) {
    let stdout = text(&output.stdout);
    for line in expected {
        assert!(
            stdout.lines().any(|l| l == *line),
            "expected {line:?}:\n{stdout}"
        );
    }
}

fn assert_ok(workload: &str, output: &Output) {
    assert!(
        output.status.success() && !output.timed_out,
        "{workload} failed under the seccomp policy: {}",
        describe(output)
    );
}

/// Returns the `Seccomp:` mode of `/proc/PID/status` inside the sandbox:
/// 0 for none, 2 for a filter.
async fn seccomp_mode(sandbox: &Sandbox, pid: &str) -> String {
    let output = run_as(
        sandbox,
        "user",
        "sed",
        &["-n", "s/^Seccomp:\\s*//p", &format!("/proc/{pid}/status")],
    )
    .await;
    assert_ok("reading the seccomp mode", &output);
    text(&output.stdout).trim().to_string()
}

/// Threads, every multiprocessing start method, process pools, asyncio
/// with a subprocess and a loopback server, subprocess, sockets, SQLite,
/// TLS set-up and file operations.
const PYTHON_WORKLOAD: &str = r#"
import asyncio, concurrent.futures, fcntl, hashlib, mmap, multiprocessing as mp, os, select
import shutil, signal, socket, sqlite3, ssl, subprocess, tempfile, threading, time, zlib

def square(x):
    return x * x

def main():
    results = []
    threads = [threading.Thread(target=lambda: results.append(sum(range(10000)))) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(results) == 4, results
    for method in ("fork", "spawn", "forkserver"):
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            assert pool.map(square, [1, 2, 3]) == [1, 4, 9], method
        queue = ctx.Queue()
        child = ctx.Process(target=queue.put, args=(5,))
        child.start()
        assert queue.get(timeout=30) == 5, method
        child.join()
        print(f"multiprocessing {method}: ok", flush=True)
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        assert list(pool.map(square, range(4))) == [0, 1, 4, 9]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(square, range(4))) == [0, 1, 4, 9]

    async def with_asyncio():
        proc = await asyncio.create_subprocess_exec("echo", "hi", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        server.close()
        await asyncio.sleep(0.01)
        return out
    assert asyncio.run(with_asyncio()) == b"hi\n"
    print("asyncio: ok", flush=True)

    subprocess.run(["true"], check=True)
    assert subprocess.check_output("echo a | tr a b", shell=True) == b"b\n"
    a, b = socket.socketpair()
    a.send(b"x")
    assert b.recv(1) == b"x"
    socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(b"x", ("127.0.0.1", 9))
    udp.close()
    socket.getaddrinfo("localhost", 80)
    db = sqlite3.connect(":memory:")
    db.execute("create table t(x)")
    db.commit()
    hashlib.sha256(b"x").hexdigest()
    ssl.create_default_context()
    zlib.compress(b"x" * 1000)
    with tempfile.TemporaryDirectory() as d:
        with open(d + "/f", "w") as f:
            f.write("x")
        os.rename(d + "/f", d + "/g")
        os.symlink(d + "/g", d + "/h")
        shutil.copy(d + "/g", d + "/i")
        os.chmod(d + "/i", 0o600)
        os.utime(d + "/i")
        with open(d + "/g", "r+b") as f:
            mmap.mmap(f.fileno(), 0).close()
            fcntl.flock(f, fcntl.LOCK_EX)
    signal.signal(signal.SIGALRM, lambda *args: None)
    signal.setitimer(signal.ITIMER_REAL, 0.01)
    time.sleep(0.05)
    os.sched_getaffinity(0)
    os.urandom(8)
    select.epoll().close()
    print("python: ok", flush=True)

if __name__ == "__main__":
    main()
"#;

/// A shell script of pipelines and common tools.
const SHELL_WORKLOAD: &str = r#"
set -e
ls -R /usr/lib > /dev/null
test "$(echo hello | tr a-z A-Z | sed s/H/J/ | awk '{print $1}' | sort | uniq | wc -l)" = 1
find /usr/share -maxdepth 2 -name '*.gz' | head -5 | xargs -r stat -c %s > /dev/null
cd "$(mktemp -d)"
cp /etc/hostname a; mv a b; ln -s b c
tar czf t.tgz b c; mkdir x; tar xzf t.tgz -C x; gzip -k b; cmp b x/b
du -s . > /dev/null; df . > /dev/null; grep -q root /etc/passwd
date > /dev/null; id > /dev/null; env > /dev/null; nproc > /dev/null; uname -a > /dev/null
timeout 5 sleep 0.1
ps aux > /dev/null
(sleep 0.05 &); wait
perl -e 'print "perl\n"' > /dev/null
echo shell-ok
"#;

const C_PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>
static void *run(void *arg) { return arg; }
int main(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, run, NULL) != 0) return 1;
    pthread_join(thread, NULL);
    puts("compiled-ok");
    return 0;
}
"#;

const NODE_WORKLOAD: &str = r#"
const fs = require('fs'), cp = require('child_process'), http = require('http');
const crypto = require('crypto'), zlib = require('zlib'), { Worker } = require('worker_threads');
fs.writeFileSync('/tmp/node.txt', 'x');
fs.readFileSync('/tmp/node.txt');
crypto.createHash('sha256').update('x').digest('hex');
zlib.gzipSync('xxxx');
if (cp.execSync('echo hi').toString() !== 'hi\n') throw new Error('execSync');
const worker = new Worker('require("worker_threads").parentPort.postMessage(1)', { eval: true });
worker.on('message', () => {
  worker.terminate();
  const server = http.createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1', () => {
    http.get({ host: '127.0.0.1', port: server.address().port }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        server.close();
        fs.promises.readFile('/etc/hostname').then(() => console.log('node-' + body));
      });
    });
  });
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_installed_by_default() {
    if !require_root("filter_installed_by_default") {
        return;
    }
    let sandbox = sandbox().await;
    assert_eq!(seccomp_mode(&sandbox, "self").await, "2", "command");
    assert_eq!(seccomp_mode(&sandbox, "1").await, "2", "PID 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_runs_common_programs() {
    if !require_root("default_policy_runs_common_programs") {
        return;
    }
    let sandbox = sandbox().await;

    // A file, not `-c`: the spawn and forkserver methods re-import the
    // main module in each worker.
    sandbox
        .files()
        .write("/tmp/workload.py", PYTHON_WORKLOAD)
        .await
        .expect("write the Python workload");
    let output = run_as(&sandbox, "user", "python3", &["/tmp/workload.py"]).await;
    assert_ok("the Python workload", &output);
    assert!(
        text(&output.stdout).contains("python: ok"),
        "{}",
        describe(&output)
    );

    let output = run_as(&sandbox, "user", "bash", &["-c", SHELL_WORKLOAD]).await;
    assert_ok("the shell workload", &output);
    assert_eq!(text(&output.stdout), "shell-ok\n");

    sandbox
        .files()
        .write("/tmp/threads.c", C_PROGRAM)
        .await
        .expect("write the C program");
    let output = run_as(
        &sandbox,
        "user",
        "sh",
        &[
            "-c",
            "cc -O2 -pthread -o /tmp/threads /tmp/threads.c && /tmp/threads",
        ],
    )
    .await;
    assert_ok("compiling and running C", &output);
    assert_eq!(text(&output.stdout), "compiled-ok\n");

    let output = run_as(&sandbox, "user", "node", &["-e", NODE_WORKLOAD]).await;
    assert_ok("the Node workload", &output);
    assert_eq!(text(&output.stdout), "node-ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_rule_applies() {
    if !require_root("caller_rule_applies") {
        return;
    }
    let policy = SeccompPolicy::default()
        .deny("mkdir", libc::EACCES)
        .deny("mkdirat", libc::EACCES);
    let sandbox = sandbox_with(policy).await;

    for user in ["user", "root"] {
        let output = run_as(&sandbox, user, "mkdir", &["/tmp/denied"]).await;
        assert!(
            !output.status.success(),
            "mkdir as {user} succeeded: {}",
            describe(&output)
        );
        assert!(
            text(&output.stderr).contains("Permission denied"),
            "mkdir as {user} failed otherwise: {}",
            describe(&output)
        );
    }
    let output = python(
        &sandbox,
        "import os\ntry:\n    os.mkdir('/tmp/p')\nexcept PermissionError as e:\n    print(e.errno)",
    )
    .await;
    assert_eq!(text(&output.stdout), format!("{}\n", libc::EACCES));

    // The rest of the default policy still applies.
    let output = run_as(&sandbox, "user", "sh", &["-c", "touch /tmp/f && echo ok"]).await;
    assert_eq!(text(&output.stdout), "ok\n", "{}", describe(&output));
    let output = python(
        &sandbox,
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n\
         print(libc.syscall(250, 0, -3, 1), ctypes.get_errno())",
    )
    .await;
    assert_eq!(
        text(&output.stdout),
        format!("-1 {}\n", libc::EPERM),
        "keyctl"
    );
}

/// What `cat` and the dynamic loader call on x86-64 with glibc 2.36,
/// beyond [`soulbox_core::SOULBOX_SYSCALLS`].
const CAT_SYSCALLS: &[&str] = &[
    "access",
    "arch_prctl",
    "fadvise64",
    "futex",
    "mprotect",
    "newfstatat",
    "pread64",
    "prlimit64",
    "rseq",
    "set_tid_address",
    "exit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_policy_applies() {
    if !require_root("replaced_policy_applies") {
        return;
    }
    let policy = SeccompPolicy::minimal().allow_all(CAT_SYSCALLS.iter().copied());
    let sandbox = sandbox_with(policy).await;
    let output = run_as(&sandbox, "user", "cat", &["/etc/hostname"]).await;
    assert_ok("cat under the replaced policy", &output);
    assert_eq!(text(&output.stdout).trim_end(), sandbox.id());
    // mkdir is in the default policy but not in this one.
    let output = run_as(&sandbox, "user", "mkdir", &["/tmp/d"]).await;
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("Function not implemented"),
        "mkdir failed otherwise: {}",
        describe(&output)
    );

    // PID 1 still serves new connections, pauses and resumes.
    assert!(sandbox.pause().await.expect("pause"), "pause did nothing");
    let connected = Sandbox::connect(sandbox.id())
        .await
        .expect("connect to the sandbox, which resumes it");
    let output = run_as(&connected, "user", "cat", &["/etc/hostname"]).await;
    assert_ok("cat through a second handle", &output);
    sandbox.kill().await.expect("kill the sandbox");
}

/// Calls lookup_dcookie, which no policy here names, and prints the errno.
const UNLISTED_CALL: &str = "import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n\
    print(libc.syscall(212, None, None, 0), ctypes.get_errno(), flush=True)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_action_kills_process() {
    if !require_root("kill_action_kills_process") {
        return;
    }
    let default = sandbox().await;
    let output = python(&default, UNLISTED_CALL).await;
    assert_eq!(
        text(&output.stdout),
        format!("-1 {}\n", libc::ENOSYS),
        "{}",
        describe(&output)
    );

    let policy = SeccompPolicy::default().default_action(SeccompAction::KillProcess);
    let sandbox = sandbox_with(policy).await;
    let output = python(&sandbox, UNLISTED_CALL).await;
    assert_eq!(
        output.status,
        ExitStatus::Signal(SIGSYS),
        "{}",
        describe(&output)
    );
    assert!(output.stdout.is_empty(), "{}", describe(&output));

    // Explicit denials keep their errno, and common programs still run.
    let output = python(
        &sandbox,
        "import ctypes, threading, subprocess\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
         subprocess.run(['true'], check=True)\n\
         print(libc.syscall(425, 8, None), ctypes.get_errno())",
    )
    .await;
    assert_eq!(
        text(&output.stdout),
        format!("-1 {}\n", libc::EPERM),
        "io_uring_setup under kill: {}",
        describe(&output)
    );
    let output = run_as(&sandbox, "user", "bash", &["-c", "echo ok | cat"]).await;
    assert_eq!(text(&output.stdout), "ok\n", "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_policy_installs_no_filter() {
    if !require_root("unconfined_policy_installs_no_filter") {
        return;
    }
    let sandbox = sandbox_with(SeccompPolicy::unconfined()).await;
    assert_eq!(seccomp_mode(&sandbox, "self").await, "0", "command");
    assert_eq!(seccomp_mode(&sandbox, "1").await, "0", "PID 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_rejected_before_create() {
    if !require_root("invalid_policy_rejected_before_create") {
        return;
    }
    let cases = [
        (SeccompPolicy::default().allow("mkdirr"), "\"mkdirr\""),
        (
            SeccompPolicy::default().deny("clone", libc::EPERM),
            "must allow clone",
        ),
        (SeccompPolicy::default().deny("mkdir", 0), "errno 0"),
    ];
    for (policy, expected) in cases {
        // Validation runs before anything is created, so the error comes
        // back without a sandbox, a cgroup or a PID 1 behind it.
        match Sandbox::create(options().seccomp(policy)).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(
                    message.contains(expected),
                    "{expected:?} not in {message:?}"
                )
            }
            other => panic!("{expected:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

/// Address families outside the allowed list and unusual execution
/// domains fail with an errno.
const SOCKET_PROBE: &str = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(nr, *[ctypes.c_ulong(a) for a in args])
    return "ok" if ret >= 0 else errno.errorcode[ctypes.get_errno()]
for name, family in (("AF_UNIX", 1), ("AF_INET", 2), ("AF_INET6", 10), ("AF_NETLINK", 16),
                     ("AF_ALG", 38), ("AF_VSOCK", 40), ("AF_VSOCK high bits", (1 << 32) | 40)):
    kind = 3 if name == "AF_NETLINK" else 2  # SOCK_RAW for netlink, else SOCK_DGRAM
    if name == "AF_ALG":
        kind = 5  # SOCK_SEQPACKET
    print(f"socket {name}: {call(41, family, kind, 0)}")
print(f"personality query: {call(135, 0xFFFFFFFF)}")
print(f"personality ADDR_NO_RANDOMIZE: {call(135, 0x0040000)}")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_families_limited() {
    if !require_root("socket_families_limited") {
        return;
    }
    let sandbox = sandbox().await;
    let output = python(&sandbox, SOCKET_PROBE).await;
    assert_ok("the socket probe", &output);
    let expected = [
        "socket AF_UNIX: ok",
        "socket AF_INET: ok",
        "socket AF_INET6: ok",
        "socket AF_NETLINK: ok",
        "socket AF_ALG: EAFNOSUPPORT",
        "socket AF_VSOCK: EAFNOSUPPORT",
        "socket AF_VSOCK high bits: EAFNOSUPPORT",
        "personality query: ok",
        "personality ADDR_NO_RANDOMIZE: EPERM",
    ];
    assert_lines(&output, &expected);
}

/// Calls getpgid (121), setfsuid (122), setfsgid (123) and getsid (124),
/// neighbours in x86-64's table, with the values that the rules of
/// [`neighbour_rules`] test, and prints each result or errno name.
const NEIGHBOUR_PROBE: &str = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, arg):
    ctypes.set_errno(0)
    ret = libc.syscall(nr, ctypes.c_ulong(arg))
    return "ok" if ret >= 0 else errno.errorcode[ctypes.get_errno()]
for name, nr in (("getpgid", 121), ("setfsuid", 122), ("setfsgid", 123), ("getsid", 124)):
    for arg in (0, 7777, 5555, 0x10000):
        print(f"{name} {arg}: {call(nr, arg)}")
"#;

/// Returns the default policy with argument rules on getpgid and setfsgid,
/// whose neighbours setfsuid and getsid have none.
fn neighbour_rules() -> SeccompPolicy {
    SeccompPolicy::default()
        .deny_if("getpgid", ArgCondition::equals(0, 7777), libc::EBUSY)
        .deny_if("getpgid", ArgCondition::equals(0, 7777), libc::EACCES)
        .rule_if(
            "getpgid",
            ArgCondition::equals(0, 9999),
            SeccompAction::KillProcess,
        )
        .deny_if("getpgid", ArgCondition::equals(0, 9999), libc::EPERM)
        .deny("setfsgid", libc::EPERM)
        .allow_if("setfsgid", ArgCondition::masked_equals(0, 0xffff_0000, 0))
        .deny_if("setfsgid", ArgCondition::equals(0, 5555), libc::ENOTTY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_rules_apply_to_their_call() {
    if !require_root("argument_rules_apply_to_their_call") {
        return;
    }
    let sandbox = sandbox_with(neighbour_rules()).await;
    let output = python(&sandbox, NEIGHBOUR_PROBE).await;
    assert_ok("the neighbour probe", &output);
    // The sandbox's PID namespace has no process 7777 or 5555 or 65536.
    let expected = [
        "getpgid 0: ok",
        "getpgid 7777: EACCES",
        "getpgid 5555: ESRCH",
        "getpgid 65536: ESRCH",
        "setfsuid 0: ok",
        "setfsuid 7777: ok",
        "setfsuid 5555: ok",
        "setfsuid 65536: ok",
        "setfsgid 0: ok",
        "setfsgid 7777: ok",
        "setfsgid 5555: ENOTTY",
        "setfsgid 65536: EPERM",
        "getsid 0: ok",
        "getsid 7777: ESRCH",
        "getsid 5555: ESRCH",
        "getsid 65536: ESRCH",
    ];
    assert_lines(&output, &expected);

    // A kill rule wins over an errno rule that matches as well.
    let output = python(
        &sandbox,
        "import ctypes; libc = ctypes.CDLL(None)\n\
         print('reached', flush=True)\n\
         print(libc.syscall(121, 9999), flush=True)",
    )
    .await;
    assert_eq!(
        output.status,
        ExitStatus::Signal(SIGSYS),
        "{}",
        describe(&output)
    );
    assert_eq!(text(&output.stdout), "reached\n", "{}", describe(&output));
}

/// Makes getpid through x86's 32-bit entry point (`int 0x80`) from
/// machine code in an executable page.
const INT80_PROBE: &str = r#"
import ctypes, mmap, os
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
getpid32 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("reached", flush=True)
print(getpid32(), os.getpid(), flush=True)
"#;

#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i386_entry_point_killed() {
    if !require_root("i386_entry_point_killed") {
        return;
    }
    let sandbox = sandbox().await;
    let output = python(&sandbox, INT80_PROBE).await;
    assert_eq!(
        text(&output.stdout),
        "reached\n",
        "the probe did not reach the call, or the call returned: {}",
        describe(&output)
    );
    // SIGSEGV instead would mean a kernel built without 32-bit support,
    // where the entry point does not exist at all.
    assert_eq!(
        output.status,
        ExitStatus::Signal(SIGSYS),
        "{}",
        describe(&output)
    );
}

/// x32 system calls (bit 30 set in the number) reach the filter with
/// x86-64's architecture, and get the default action even where the same
/// call without the bit is allowed.
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x32_calls_get_default_action() {
    if !require_root("x32_calls_get_default_action") {
        return;
    }
    let errno_default = sandbox_with(SeccompPolicy::default()).await;
    // getpid is 39, and x32's numbers are x86-64's with bit 30 set.
    let code = "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n\
                print('reached', flush=True)\n\
                print(libc.syscall(39) == os.getpid(), flush=True)\n\
                print(libc.syscall(0x40000000 | 39), ctypes.get_errno(), flush=True)";
    let output = python(&errno_default, code).await;
    assert_ok("the x32 probe", &output);
    assert_eq!(
        text(&output.stdout),
        format!("reached\nTrue\n-1 {}\n", libc::ENOSYS),
        "{}",
        describe(&output)
    );

    let kill_default =
        sandbox_with(SeccompPolicy::default().default_action(SeccompAction::KillProcess)).await;
    let output = python(&kill_default, code).await;
    assert_eq!(
        output.status,
        ExitStatus::Signal(SIGSYS),
        "{}",
        describe(&output)
    );
    assert_eq!(
        text(&output.stdout),
        "reached\nTrue\n",
        "{}",
        describe(&output)
    );
}

/// Bytes of one BPF instruction in [`SeccompPolicy::bpf_program`].
const SOCK_FILTER_LEN: usize = 8;

/// Returns the default policy with `count` ioctl rules on its request
/// number, from 0x9000 up, each failing with EIO, and a rule on its
/// third argument failing with ENXIO.
fn ioctl_rules(count: u32) -> SeccompPolicy {
    (0..count)
        .fold(SeccompPolicy::default(), |policy, value| {
            policy.deny_if("ioctl", ArgCondition::equals(1, 0x9000 + value), libc::EIO)
        })
        .deny_if("ioctl", ArgCondition::equals(2, 7), libc::ENXIO)
}

/// A policy that compiles to the kernel's maximum of 4096 instructions is
/// accepted and installed, and its last rules apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_program_installs() {
    if !require_root("largest_program_installs") {
        return;
    }
    let length = |policy: &SeccompPolicy| {
        policy
            .bpf_program()
            .map(|program| program.len() / SOCK_FILTER_LEN)
    };
    let (count, policy) = (1800..2100)
        .map(|count| (count, ioctl_rules(count)))
        .find(|(_, policy)| matches!(length(policy), Ok(4096)))
        .expect("no number of ioctl rules compiles to exactly 4096 instructions");
    let over = ioctl_rules(count + 1);
    match Sandbox::create(options().seccomp(over)).await {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("4096"), "{message}")
        }
        other => panic!("a policy over 4096 instructions: expected InvalidArgument, got {other:?}"),
    }

    let sandbox = sandbox_with(policy).await;
    let probe = format!(
        "import errno, fcntl\n\
         for request, arg in ((0x9000, 0), (0x9000 + {last}, 0), (0x9000 + {count}, 0), (0x9000 + {count}, 7)):\n\
         \x20   try:\n\
         \x20       fcntl.ioctl(0, request, arg)\n\
         \x20   except OSError as e:\n\
         \x20       print(hex(request), arg, errno.errorcode[e.errno])\n\
         \x20   else:\n\
         \x20       print(hex(request), arg, 'ok')",
        last = count - 1
    );
    let output = python(&sandbox, &probe).await;
    assert_ok("the ioctl probe", &output);
    // stdin is /dev/null, for which an unknown request fails with ENOTTY.
    let expected = [
        "0x9000 0 EIO".to_string(),
        format!("{:#x} 0 EIO", 0x9000 + count - 1),
        format!("{:#x} 0 ENOTTY", 0x9000 + count),
        format!("{:#x} 7 ENXIO", 0x9000 + count),
    ];
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_lines(&output, &expected);
}
