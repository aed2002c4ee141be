//! Spare supervisors: from a sandbox's second command on, a command's
//! supervisor stays once its command's tree has ended and takes the next
//! command, so that command starts without a fork. PID 1 forks one ahead
//! of time in a warm pool's sandboxes, and after a supervisor exits while
//! none waits. A killed spare only costs the next command its own fork.

use std::time::{Duration, Instant};

use soulbox_core::{
    CommandEvent, Error, Sandbox, SandboxOptions, SandboxPool, SeccompAction, SeccompPolicy,
};
use soulbox_tests::*;

/// Host pids in the sandbox's first cgroup, which contains every process.
fn members(sandbox: &Sandbox) -> Vec<i32> {
    let dir = sandbox
        .cgroup_paths()
        .into_iter()
        .next()
        .expect("a sandbox as root has cgroups");
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("read {}/cgroup.procs: {e}", dir.display()))
        .lines()
        .map(|line| line.parse().expect("a pid per line"))
        .collect()
}

/// Waits up to 10 s until the sandbox contains `count` processes.
async fn wait_for_members(sandbox: &Sandbox, count: usize) -> Vec<i32> {
    wait_for(sandbox, |pids| pids.len() == count).await
}

/// Waits up to 10 s until the sandbox's processes satisfy `done`, and
/// returns them as last read.
async fn wait_for(sandbox: &Sandbox, done: impl Fn(&[i32]) -> bool) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = members(sandbox);
        if done(&pids) || Instant::now() > deadline {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a supervisor waits for the next command: a process of the
/// sandbox other than PID 1 that is blocked in `recvmsg` on its channel.
/// Fails after 10 s. A fixed pause was not enough on a loaded host.
async fn wait_for_waiting_supervisor(sandbox: &Sandbox) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let receiving = format!("{} ", libc::SYS_recvmsg);
    loop {
        let waiting = members(sandbox).into_iter().any(|pid| {
            pid != sandbox.pid()
                && std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                    .is_ok_and(|call| call.starts_with(&receiving))
        });
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no supervisor waited for the next command within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits up to 10 s until two reads of the sandbox's processes 100 ms
/// apart agree, and returns them.
async fn wait_for_steady(sandbox: &Sandbox) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = members(sandbox);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pids = members(sandbox);
        if pids == last || Instant::now() > deadline {
            return pids;
        }
        last = pids;
    }
}

async fn run_true(sandbox: &Sandbox) {
    let output = sandbox
        .command("/bin/true")
        .output()
        .await
        .expect("run /bin/true");
    assert!(output.status.success(), "/bin/true failed: {output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_waits_after_two_commands() {
    if !require_root("spare_waits_after_two_commands") {
        return;
    }
    let sandbox = sandbox().await;

    run_true(&sandbox).await;
    // One command: PID 1 alone.
    assert_eq!(wait_for_members(&sandbox, 1).await.len(), 1);
    run_true(&sandbox).await;
    // The second command's supervisor stays, as the spare.
    let pids = wait_for_steady(&sandbox).await;
    assert_eq!(
        pids.len(),
        2,
        "no spare supervisor after two commands: {pids:?}"
    );
    let spare = *pids
        .iter()
        .find(|&&pid| pid != sandbox.pid())
        .expect("a process besides PID 1");
    assert_eq!(host_comm(spare).as_deref(), Some("soulbox-init"));

    // The next command runs under the spare, which then waits again.
    let output = sh(&sandbox, "cat /proc/$PPID/status").await;
    assert!(output.status.success(), "{output:?}");
    let after = wait_for_steady(&sandbox).await;
    assert_eq!(
        after, pids,
        "the spare {spare} should wait again after the third command"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

/// Runs `echo $PPID` in the sandbox and returns the shell's parent, its
/// supervisor, as the sandbox's PID namespace numbers it.
async fn supervisor_of_next_command(sandbox: &Sandbox) -> String {
    let output = sh(sandbox, "echo $PPID").await;
    assert!(output.status.success(), "{output:?}");
    stdout(&output).trim().to_string()
}

/// The first command's supervisor exits by design. When it exits late,
/// while the second command's supervisor still runs, PID 1 forks no spare
/// for it, so the second command's supervisor is the one that waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_first_supervisor_forks_no_spare() {
    if !require_root("late_first_supervisor_forks_no_spare") {
        return;
    }
    let sandbox = sandbox().await;
    // A background sleep keeps the first supervisor, its subreaper, for
    // 0.3 s after the command's exit.
    let first = sh(&sandbox, "sleep 0.3 >/dev/null 2>&1 & echo $PPID").await;
    assert!(first.status.success(), "{first:?}");
    // Still running when the first supervisor exits.
    let second = sh(&sandbox, "echo $PPID; sleep 0.8").await;
    assert!(second.status.success(), "{second:?}");
    let second = stdout(&second).trim().to_string();
    wait_for_waiting_supervisor(&sandbox).await;
    let third = supervisor_of_next_command(&sandbox).await;
    assert_eq!(
        third, second,
        "the second command's supervisor should take the third"
    );
    // PID 1 and the one waiting supervisor, no spare beside it.
    let pids = wait_for_steady(&sandbox).await;
    assert_eq!(pids.len(), 2, "{pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_supervisor_serves_commands_in_turn() {
    if !require_root("one_supervisor_serves_commands_in_turn") {
        return;
    }
    let sandbox = sandbox().await;
    let first = supervisor_of_next_command(&sandbox).await;
    let mut later = Vec::new();
    for round in 0..5 {
        // From the second command on, a supervisor waits, and PID 1 reads
        // its idle report before the next request.
        if round > 0 {
            wait_for_waiting_supervisor(&sandbox).await;
        }
        later.push(supervisor_of_next_command(&sandbox).await);
    }
    assert!(
        !later.contains(&first),
        "the first command's supervisor should exit: {first} then {later:?}"
    );
    assert!(
        later.iter().all(|pid| *pid == later[0]),
        "the second command's supervisor should start every later one: {later:?}"
    );
    assert_eq!(
        wait_for_steady(&sandbox).await.len(),
        2,
        "expected PID 1 and one waiting supervisor"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_leave_one_spare() {
    if !require_root("concurrent_commands_leave_one_spare") {
        return;
    }
    let sandbox = sandbox().await;
    let mut handles = Vec::new();
    for _ in 0..4 {
        let handle = sandbox
            .command("sleep")
            .arg("0.3")
            .start()
            .await
            .expect("start sleep");
        handles.push(handle);
    }
    for mut handle in handles {
        let output = within_limit("sleep 0.3", handle.wait())
            .await
            .expect("wait for sleep");
        assert!(output.status.success(), "{output:?}");
    }
    let pids = wait_for_steady(&sandbox).await;
    assert_eq!(
        pids.len(),
        2,
        "four commands at once should leave PID 1 and one spare: {pids:?}"
    );
    for _ in 0..3 {
        let output = sh(&sandbox, "echo still runs").await;
        assert_eq!(stdout(&output), "still runs\n", "{output:?}");
    }
    sandbox.kill().await.expect("kill the sandbox");
}

/// A command that left a process running keeps its supervisor, which is
/// that process's subreaper: the next command gets another one, and
/// killing that command's tree leaves the process alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_with_orphans_takes_no_command() {
    if !require_root("supervisor_with_orphans_takes_no_command") {
        return;
    }
    let sandbox = sandbox().await;
    run_true(&sandbox).await;
    run_true(&sandbox).await;
    let output = sh(
        &sandbox,
        "sleep 30 < /dev/null > /dev/null 2>&1 & echo $PPID $!",
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let printed = stdout(&output);
    let (busy, orphan) = printed
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("expected two pids: {printed:?}"));

    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut next = sandbox
        .command("sh")
        .args(["-c", "echo $PPID; exec sleep 30"])
        .start()
        .await
        .expect("start the next command");
    let first_line = within_limit("the next command's output", async {
        let mut text = String::new();
        while !text.contains('\n') {
            match next.next_event().await {
                Ok(Some(CommandEvent::Stdout(chunk))) => {
                    text.push_str(&String::from_utf8_lossy(&chunk))
                }
                Ok(Some(_)) => {}
                other => panic!("the next command ended before its output: {other:?}"),
            }
        }
        text
    })
    .await;
    assert_ne!(
        first_line.trim(),
        busy,
        "the next command ran under the supervisor of a running process"
    );

    next.kill().await.expect("kill the next command");
    let _ = within_limit("the killed command", next.wait()).await;
    let output = sh(&sandbox, &format!("kill -0 {orphan} && echo alive")).await;
    assert_eq!(
        stdout(&output),
        "alive\n",
        "killing the next command ended the earlier one's process: {output:?}"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

/// A kill sent through the handle of a command that has ended must not
/// reach the command that its supervisor runs next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_ended_command_spares_the_next() {
    if !require_root("kill_of_ended_command_spares_the_next") {
        return;
    }
    let sandbox = sandbox().await;
    run_true(&sandbox).await;
    let mut ended = sandbox
        .command("/bin/true")
        .start()
        .await
        .expect("start /bin/true");
    let output = within_limit("/bin/true", ended.wait())
        .await
        .expect("wait for /bin/true");
    assert!(output.status.success(), "{output:?}");

    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut running = sandbox
        .command("sleep")
        .arg("30")
        .start()
        .await
        .expect("start sleep");
    let pids = wait_for_steady(&sandbox).await;
    assert_eq!(
        pids.len(),
        3,
        "expected PID 1, the ended command's supervisor running sleep, and sleep: {pids:?}"
    );
    ended.kill().await.expect("kill the ended command");

    let output = sh(
        &sandbox,
        &format!("kill -0 {} && echo alive", running.pid()),
    )
    .await;
    assert_eq!(
        stdout(&output),
        "alive\n",
        "the kill of an ended command reached the next one: {output:?}"
    );
    running.kill().await.expect("kill sleep");
    let _ = within_limit("the killed sleep", running.wait()).await;
    sandbox.kill().await.expect("kill the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_spare_is_replaced() {
    if !require_root("killed_spare_is_replaced") {
        return;
    }
    let sandbox = sandbox().await;
    run_true(&sandbox).await;
    run_true(&sandbox).await;
    assert_eq!(wait_for_steady(&sandbox).await.len(), 2);

    // The kill comes from the host, as an out-of-memory kill would. Sandbox
    // root can signal a spare too (see `stopped_spare_resumed`).
    let pids = members(&sandbox);
    let spare = *pids
        .iter()
        .find(|&&pid| pid != sandbox.pid())
        .expect("a spare besides PID 1");
    assert_eq!(host_comm(spare).as_deref(), Some("soulbox-init"));
    // SAFETY: kill takes plain integers; the spare belongs to this test's
    // sandbox.
    assert_eq!(unsafe { libc::kill(spare, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_process_alive(spare) {
        assert!(
            Instant::now() < deadline,
            "the killed spare {spare} was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for _ in 0..3 {
        let output = sh(&sandbox, "echo still runs").await;
        assert_eq!(stdout(&output), "still runs\n", "{output:?}");
    }
    sandbox.kill().await.expect("kill the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sandbox_has_a_spare() {
    if !require_root("pooled_sandbox_has_a_spare") {
        return;
    }
    let pool = SandboxPool::new(options(), 1).expect("start a pool");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.waiting() < 1 {
        assert!(
            Instant::now() < deadline,
            "the pool did not fill within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sandbox = pool.create().await.expect("hand over a sandbox");
    pool.close().await;
    let pids = wait_for_members(&sandbox, 2).await;
    assert_eq!(pids.len(), 2, "a pooled sandbox has no spare: {pids:?}");
    let output = sh(&sandbox, "echo from the spare").await;
    assert_eq!(stdout(&output), "from the spare\n", "{output:?}");
    // After one command the spare exits, as a first command's supervisor
    // does in any sandbox.
    let pids = wait_for_steady(&sandbox).await;
    assert_eq!(
        pids,
        vec![sandbox.pid()],
        "the spare should exit after the first command"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

/// Returns the state letter of host process `pid` (`T` when stopped), or
/// `None` once it is gone.
fn host_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // proc(5): the state follows the last ')', which ends the comm field.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Waits for a line on stdin, then stops (SIGSTOP) every `soulbox-init`
/// process but PID 1 and its own supervisor, and prints their pids.
const STOP_OTHER_SUPERVISORS: &str = r#"read go
for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    if [ "$pid" = 1 ] || [ "$pid" = "$PPID" ]; then continue; fi
    if [ "$(cat "$dir/comm" 2>/dev/null)" = soulbox-init ]; then
        kill -STOP "$pid" && echo "$pid"
    fi
done"#;

/// Returns the host pid, among `pids`, of the process whose pid in the
/// sandbox's PID namespace is `sandbox_pid`: the last field of its `NSpid`
/// line.
fn host_pid_in(pids: &[i32], sandbox_pid: &str) -> Option<i32> {
    pids.iter().copied().find(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            == Some(sandbox_pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_spare_resumed() {
    if !require_root("stopped_spare_resumed") {
        return;
    }
    let sandbox = sandbox().await;
    run_true(&sandbox).await;
    run_true(&sandbox).await;
    assert_eq!(wait_for_steady(&sandbox).await.len(), 2);
    // A process that sandbox root left running: it takes the waiting spare
    // as its supervisor, so no new spare comes until another command ends.
    let mut stopper = sandbox
        .command("sh")
        .args(["-c", STOP_OTHER_SUPERVISORS])
        .user("root")
        .stdin(true)
        .start()
        .await
        .expect("start the stopping script");
    run_true(&sandbox).await;
    let before = wait_for_steady(&sandbox).await;
    assert_eq!(
        before.len(),
        4,
        "expected PID 1, the script, its supervisor and a new spare: {before:?}"
    );

    stopper
        .send_stdin(b"go\n")
        .await
        .expect("write to the script");
    let output = within_limit("the stopping script", stopper.wait())
        .await
        .expect("wait for the stopping script");
    assert!(output.status.success(), "{output:?}");
    let stopped = stdout(&output);
    assert_eq!(
        stopped.lines().count(),
        1,
        "the script should stop exactly the spare: {output:?}"
    );
    let spare_in_sandbox = stopped.trim();
    let spare = host_pid_in(&before, spare_in_sandbox)
        .unwrap_or_else(|| panic!("no process {spare_in_sandbox} in the sandbox: {before:?}"));
    assert_eq!(host_comm(spare).as_deref(), Some("soulbox-init"));

    // PID 1 continues the spare, which then waits for a command again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_state(spare) == Some('T') && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(
        host_state(spare),
        Some('T'),
        "the spare {spare} is still stopped 10 s after the stop"
    );

    // The next command runs under the resumed spare: the shell's parent.
    let output = within_limit(
        "a command after the spare was stopped",
        sh(&sandbox, "echo $PPID"),
    )
    .await;
    assert_eq!(
        stdout(&output).trim(),
        spare_in_sandbox,
        "the command should run under the resumed spare: {output:?}"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

/// Under `minimal()` with a default action that kills, PID 1 must make no
/// call outside `SOULBOX_SYSCALLS`, also when it forks a spare and hands it
/// a command. The command is a program that does not exist, so its start
/// fails with ENOENT before it could make a call of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_under_minimal_kill_policy() {
    if !require_root("spare_under_minimal_kill_policy") {
        return;
    }
    let policy = SeccompPolicy::minimal().default_action(SeccompAction::KillProcess);
    let options = SandboxOptions::default().kill_on_drop(true).seccomp(policy);
    let sandbox = Sandbox::create(options)
        .await
        .expect("create a sandbox with a minimal policy");
    let missing = "/nonexistent/program";
    for round in 0..4 {
        let result = sandbox.command(missing).output().await;
        match result {
            Err(Error::Spawn { source, .. }) => assert_eq!(
                source.raw_os_error(),
                Some(libc::ENOENT),
                "round {round}: {source}"
            ),
            other => panic!("round {round}: expected a spawn error, got {other:?}"),
        }
        if round == 1 {
            // After two commands PID 1 forks a spare. The sandbox's cgroup
            // goes away with PID 1, so that is checked before each read.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(sandbox.is_running(), "PID 1 died forking a spare");
                let pids = members(&sandbox);
                if pids.len() == 2 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no spare 10 s after two commands: {pids:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(sandbox.is_running(), "PID 1 died handing over a command");

    // `/bin/true` starts and dies of SIGSYS at its first call outside the
    // policy. Its supervisor then reports idle and takes the next one.
    let mut waiting = Vec::new();
    for round in 0..4 {
        let output = within_limit("/bin/true under the minimal policy", async {
            sandbox.command("/bin/true").output().await
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: run /bin/true: {e}"));
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGSYS),
            "round {round}: {output:?}"
        );
        assert!(sandbox.is_running(), "round {round}: PID 1 died");
        let pids = wait_for_steady(&sandbox).await;
        assert_eq!(
            pids.len(),
            2,
            "round {round}: expected PID 1 and the waiting supervisor: {pids:?}"
        );
        waiting.extend(pids.into_iter().filter(|&pid| pid != sandbox.pid()));
    }
    assert!(
        waiting.iter().all(|&pid| pid == waiting[0]),
        "one supervisor should start every /bin/true: {waiting:?}"
    );
    sandbox.kill().await.expect("kill the sandbox");
}

/// A shell command that prints what a command's start sets up, read from
/// the shell's own /proc entries, leaving out what depends on its pid:
/// for the session and process group, only whether the shell leads them.
const START_STATE: &str =
    "grep -E '^(Umask|Sig(Blk|Ign|Cgt)|Cap|NoNewPrivs|Seccomp)' /proc/$$/status; \
    cat /proc/$$/limits /proc/$$/oom_score_adj /proc/$$/cgroup; ls /proc/$$/fd; \
    awk -v pid=$$ '{ print ($6 == pid), ($5 == pid), $7 }' /proc/$$/stat; id; pwd; env | sort";

/// Runs [`START_STATE`] and returns the shell's supervisor, as the
/// sandbox's PID namespace numbers it, and what the command printed.
async fn start_state(sandbox: &Sandbox) -> (String, String) {
    let output = sh(sandbox, &format!("echo $PPID; {START_STATE}")).await;
    assert!(output.status.success(), "{output:?}");
    let printed = stdout(&output);
    let (supervisor, state) = printed
        .split_once('\n')
        .unwrap_or_else(|| panic!("no state after the supervisor's pid: {printed:?}"));
    (supervisor.to_string(), state.to_string())
}

/// Commands that a waiting supervisor starts begin as the first command
/// of a sandbox does, also after a PTY command and a command as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_supervisor_starts_commands_alike() {
    if !require_root("reused_supervisor_starts_commands_alike") {
        return;
    }
    let sandbox = sandbox().await;
    let (first_supervisor, first) = start_state(&sandbox).await;
    assert!(first.contains("NoNewPrivs:\t1"), "{first}");

    let mut states = Vec::new();
    for round in 0..3 {
        // The first command's supervisor exits; later ones wait.
        if round > 0 {
            wait_for_waiting_supervisor(&sandbox).await;
        }
        states.push((round, start_state(&sandbox).await));
    }
    let mut pty = sandbox
        .command("sh")
        .args(["-c", "exit 3"])
        .start_pty(24, 80)
        .await
        .expect("start a command on a PTY");
    let output = within_limit("the PTY command", pty.wait())
        .await
        .expect("wait for the PTY command");
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let output = sandbox
        .command("sh")
        .args([
            "-c",
            "umask 077; ulimit -n 64; trap '' TERM; cd /tmp; exit 0",
        ])
        .user("root")
        .output()
        .await
        .expect("run a command as root");
    assert!(output.status.success(), "{output:?}");
    for round in 3..6 {
        wait_for_waiting_supervisor(&sandbox).await;
        states.push((round, start_state(&sandbox).await));
    }

    let reused = states[0].1 .0.clone();
    assert_ne!(reused, first_supervisor, "the first supervisor should exit");
    for (round, (supervisor, state)) in states {
        assert_eq!(
            supervisor, reused,
            "command {round} after the first should run under the waiting supervisor"
        );
        assert_eq!(
            state, first,
            "command {round} after the first starts differently"
        );
    }
    sandbox.kill().await.expect("kill the sandbox");
}
