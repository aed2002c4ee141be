//! The supervisor: one process per running command, forked from PID 1.
//! From a sandbox's second command on, a supervisor whose command's tree
//! has ended waits for the next command instead of exiting.
//!
//! The supervisor is a child subreaper, so every process the command starts
//! stays its descendant even after its own parent exits. That makes "the
//! command's process tree" well defined: PID 1 kills a command by killing
//! every descendant of its supervisor. The supervisor reports the leader's
//! start and exit straight to the host through the status pipe.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};

use soulbox_proto::{Request, Spawn, SpawnStage, StatusRecord, MAX_MESSAGE_LEN, SPAWN_FD_COUNT};

use crate::sys;

/// The descriptors a [`Spawn`] arrives with.
pub struct SpawnFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub status: OwnedFd,
}

fn report(status: &OwnedFd, record: StatusRecord) {
    // The host may have gone away; the command goes on regardless.
    let _ = sys::write_all(status.as_fd(), &record.encode());
}

/// A command to start: its descriptors and everything its leader needs.
/// PID 1 builds it before the fork, so that the supervisor only reads it and
/// takes no copy-on-write faults on the memory it was built in.
pub struct Command {
    leader: LeaderPlan,
    fds: SpawnFds,
    /// The supervisor exits once it has reported the leader's exit, and
    /// PID 1 then ends the sandbox.
    ends_sandbox: bool,
}

impl Command {
    pub fn new(spawn: Spawn, fds: SpawnFds) -> Self {
        Self {
            ends_sandbox: spawn.ends_sandbox,
            leader: LeaderPlan::new(spawn),
            fds,
        }
    }

    /// Reports that the supervisor could not be forked.
    pub fn report_fork_failure(&self, errno: i32) {
        let stage = SpawnStage::Fork;
        report(&self.fds.status, StatusRecord::SpawnFailed { stage, errno });
    }

    /// Reports that the supervisor could not join the sandbox's memory
    /// cgroup, so the command did not start.
    pub fn report_memory_cgroup_failure(&self, errno: i32) {
        let stage = SpawnStage::MemoryCgroup;
        report(&self.fds.status, StatusRecord::SpawnFailed { stage, errno });
    }
}

/// The placement of a supervisor, and so of its command, under the
/// sandbox's memory limit. It keeps files that fill the limit from leaving
/// PID 1 as the OOM killer's only choice (see `soulbox_proto::CommandMemory`).
pub enum MemoryPlacement {
    /// No memory limit.
    Unlimited,
    /// Joins the v1 memory cgroup whose `tasks` file this is, which PID 1
    /// has left.
    Join(OwnedFd),
    /// Stays in the memory cgroup it shares with PID 1 (v2, or a v1 one
    /// PID 1 stays in), with an OOM score above PID 1's.
    RaiseScore,
}

/// The `oom_score_adj` of supervisors that share PID 1's memory cgroup,
/// which their commands inherit. Raising a score needs no capability,
/// where lowering PID 1's needs CAP_SYS_RESOURCE. It also makes sandboxed
/// processes the first choice of the host's OOM killer, ahead of the
/// host's own processes.
const OOM_SCORE_ADJ: &[u8] = b"500";

/// Puts this supervisor, and every process it will start, under the
/// sandbox's memory limit as `placement` specifies. A supervisor that cannot
/// join the memory cgroup must not start its command. A score that cannot
/// be raised only loses PID 1's protection.
pub fn limit_memory(placement: &MemoryPlacement) -> io::Result<()> {
    match placement {
        MemoryPlacement::Unlimited => Ok(()),
        MemoryPlacement::Join(tasks) => sys::write_all(tasks.as_fd(), b"0"),
        MemoryPlacement::RaiseScore => {
            let _ = sys::write_existing(c"/proc/self/oom_score_adj", OOM_SCORE_ADJ);
            Ok(())
        }
    }
}

/// Runs in a spare supervisor, forked from PID 1 before its command: waits
/// for a spawn request on `channel` and supervises it. Unless [`ONCE`] came
/// before the request, it then supervises every later command that PID 1
/// hands it there. Exits when PID 1 closes the channel first. Never
/// returns.
pub fn wait_as_spare(channel: OwnedFd, memory: &MemoryPlacement) -> ! {
    // A spare that cannot join exits, and its command gets a supervisor
    // forked for it, which reports the failure.
    if limit_memory(memory).is_err() {
        sys::exit(0);
    }
    // The spare may wait a long time, and must not keep PID 1's connections
    // open meanwhile.
    if park(channel).is_err() {
        sys::exit(0);
    }
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    let Some((command, once)) = receive_command(&mut Vec::new()) else {
        sys::exit(0);
    };
    let channel = if once { Channel::None } else { Channel::Parked };
    supervise(command, channel)
}

/// The descriptor of a waiting supervisor's channel to PID 1: fd 3, PID 1's
/// control socket in PID 1, whose copy a supervisor has no use for.
const CHANNEL_FD: i32 = 3;

/// The message a supervisor sends on its channel once its command's whole
/// tree has ended, before it waits for another command.
pub const IDLE: &[u8] = b"idle";

/// The message PID 1 sends a waiting supervisor just before a spawn
/// request, so that the supervisor exits after that command.
pub const ONCE: &[u8] = b"once";

/// A supervisor's channel to PID 1, on which it offers itself for another
/// command.
pub enum Channel {
    /// None: the supervisor exits once its command's tree has ended.
    None,
    /// Still where the fork left it, among the copies of PID 1's descriptors.
    Forked(OwnedFd),
    /// At [`CHANNEL_FD`], with every descriptor above it closed.
    Parked,
}

/// Moves `channel` to [`CHANNEL_FD`], close-on-exec, and closes every
/// descriptor above it: PID 1's sockets and lock among them.
fn park(channel: OwnedFd) -> io::Result<()> {
    let raw = channel.into_raw_fd();
    if raw == CHANNEL_FD {
        sys::set_cloexec(sys::borrow_raw(CHANNEL_FD))?;
    } else {
        sys::dup_cloexec(sys::borrow_raw(raw), CHANNEL_FD)?;
    }
    sys::close_range_from(CHANNEL_FD as u32 + 1, false)
}

/// Waits on the parked channel for PID 1's next spawn request and its
/// descriptors, and returns it with whether [`ONCE`] came before it.
/// `None` when PID 1 closed the channel or sent something else. `buf`
/// grows to the protocol's maximum once and is kept for later requests.
fn receive_command(buf: &mut Vec<u8>) -> Option<(Command, bool)> {
    buf.resize(MAX_MESSAGE_LEN, 0);
    let mut once = false;
    let (len, fds) = loop {
        let (len, fds) =
            sys::recv_with_fds(sys::borrow_raw(CHANNEL_FD), buf, SPAWN_FD_COUNT).ok()??;
        // Two arrive when the request after the first did not fit.
        if &buf[..len] != ONCE || !fds.is_empty() {
            break (len, fds);
        }
        once = true;
    };
    let (Ok(Request::Spawn(spawn)), Ok([stdin, stdout, stderr, status])) =
        (Request::decode(&buf[..len]), <[OwnedFd; 4]>::try_from(fds))
    else {
        return None;
    };
    let fds = SpawnFds {
        stdin,
        stdout,
        stderr,
        status,
    };
    Some((Command::new(spawn, fds), once))
}

/// Runs in the forked supervisor; never returns. With a channel, the
/// supervisor does not exit when its command's tree has ended: it sends
/// [`IDLE`] and waits there for the next command, which then starts
/// without a fork.
pub fn supervise(command: Command, channel: Channel) -> ! {
    // PID 1 installs no handler and blocks only SIGCHLD (for its signalfd),
    // so unblocking is all the reset a fork of it needs. SIGPIPE stays
    // ignored as in PID 1: a host that stopped reading the status pipe must
    // not kill the supervisor, or the command's orphans would lose their
    // subreaper.
    sys::unblock_all_signals();
    // If PID 1 dies the whole PID namespace goes with it, so this is only a
    // belt to that: no supervisor outlives PID 1.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if let Err(e) = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) {
        fail(&command.fds.status, SpawnStage::Fork, &e);
    }
    let mut command = command;
    let mut channel = channel;
    let mut buf = Vec::new();
    loop {
        match run(command) {
            Ended::TreeGone => {}
            Ended::EndsSandbox => sys::exit(0),
            Ended::NotStarted => sys::exit(EXIT_NOT_STARTED),
        }
        match channel {
            Channel::None => sys::exit(0),
            Channel::Forked(fd) => {
                if park(fd).is_err() {
                    sys::exit(0);
                }
            }
            Channel::Parked => {}
        }
        if sys::send(sys::borrow_raw(CHANNEL_FD), IDLE).is_err() {
            sys::exit(0);
        }
        (command, channel) = match receive_command(&mut buf) {
            Some((next, true)) => (next, Channel::None),
            Some((next, false)) => (next, Channel::Parked),
            None => sys::exit(0),
        };
    }
}

/// The end of a command's supervision.
enum Ended {
    /// The leader's exit is reported and no process of its tree is left.
    TreeGone,
    /// The leader's exit is reported and it ends the sandbox: PID 1 does
    /// that when it reaps this process, so the rest of the tree is not
    /// waited for.
    EndsSandbox,
    /// The leader failed before its exec, and the rest is reaped.
    NotStarted,
}

/// Starts the command's leader, reports its start, then reaps its tree.
fn run(command: Command) -> Ended {
    let Command {
        leader: leader_plan,
        fds,
        ends_sandbox,
    } = command;
    // Written by the leader when it fails before exec; the supervisor
    // reads it once clone_vfork returns, after the exec or the exit.
    let mut failure: Option<(SpawnStage, i32)> = None;
    // A mapping of its own, so that only the pages the leader uses are
    // touched. An array of this size in this frame would be touched whole
    // on entry by the compiler's stack probes, one page fault per page.
    let mut stack = match sys::AnonymousMap::new(LEADER_STACK_SIZE) {
        Ok(stack) => stack,
        Err(e) => fail(&fds.status, SpawnStage::Fork, &e),
    };
    let mut leader_main = || {
        let stdio = [fds.stdin.as_fd(), fds.stdout.as_fd(), fds.stderr.as_fd()];
        let (stage, error) = leader_plan.exec(stdio);
        failure = Some((stage, error.raw_os_error().unwrap_or(libc::EIO)));
        127
    };
    let leader = match sys::clone_vfork(stack.as_uninit_mut(), &mut leader_main) {
        Ok(pid) => pid,
        Err(e) => fail(&fds.status, SpawnStage::Fork, &e),
    };
    let SpawnFds {
        stdin,
        stdout,
        stderr,
        status,
    } = fds;
    // The command holds its own copies; keeping these would delay the end of
    // file the host waits for.
    drop((stdin, stdout, stderr));
    match failure {
        Some((stage, errno)) => report(&status, StatusRecord::SpawnFailed { stage, errno }),
        None => report(&status, StatusRecord::Started { pid: leader as u32 }),
    }
    reap_tree(leader, &status, failure.is_none(), ends_sandbox)
}

/// Reaps the leader, reports its exit, then reaps the rest of the tree until
/// no descendant is left. With `ends_sandbox` it returns right after the
/// report instead. Without `report_exit` (the leader failed before its
/// exec) nothing more is reported.
fn reap_tree(
    leader: libc::pid_t,
    status: &OwnedFd,
    report_exit: bool,
    ends_sandbox: bool,
) -> Ended {
    loop {
        match sys::waitpid(-1, 0) {
            Ok(Some((pid, raw))) if pid == leader && report_exit => {
                let record = if libc::WIFSIGNALED(raw) {
                    StatusRecord::Signaled {
                        signal: libc::WTERMSIG(raw),
                    }
                } else {
                    StatusRecord::Exited {
                        code: libc::WEXITSTATUS(raw),
                    }
                };
                report(status, record);
                if ends_sandbox {
                    return Ended::EndsSandbox;
                }
            }
            Ok(_) => {}
            Err(_) if report_exit => return Ended::TreeGone,
            Err(_) => return Ended::NotStarted,
        }
    }
}

/// Exit status of a supervisor whose command could not start. PID 1 does
/// not end the sandbox for it, even for a command with `ends_sandbox`,
/// because no exit status of that command was reported.
pub const EXIT_NOT_STARTED: i32 = 127;

fn fail(status: &OwnedFd, stage: SpawnStage, error: &io::Error) -> ! {
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    report(status, StatusRecord::SpawnFailed { stage, errno });
    sys::exit(EXIT_NOT_STARTED)
}

/// Bytes of stack for the leader until its exec. The leader runs a few
/// system calls and keeps a PATH_MAX buffer for getcwd on it.
const LEADER_STACK_SIZE: usize = 64 * 1024;

/// Everything the leader needs besides its descriptors, built ahead so
/// that the leader, which runs in the supervisor's memory until its exec,
/// allocates nothing. A request with a NUL byte in a string fails at the
/// step that uses it, in the order the leader takes them.
struct LeaderPlan {
    pty: bool,
    cwd: Option<CString>,
    uid: u32,
    gid: u32,
    argv: Option<sys::CStringArray>,
    env: Option<sys::CStringArray>,
    /// The paths to try for argv[0], in order: argv[0] itself when it
    /// contains a slash, else each directory of the `PATH` in `env`.
    candidates: Vec<CString>,
}

impl LeaderPlan {
    fn new(spawn: Spawn) -> Self {
        let to_c = |v: Vec<u8>| CString::new(v).ok();
        let argv: Option<Vec<CString>> = spawn.argv.into_iter().map(to_c).collect();
        let env: Option<Vec<CString>> = spawn.env.into_iter().map(to_c).collect();
        let candidates = match (&argv, &env) {
            (Some(argv), Some(env)) => match argv.first() {
                Some(program) => search_path(program.as_bytes(), env),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        Self {
            pty: spawn.pty,
            cwd: CString::new(spawn.cwd).ok(),
            uid: spawn.uid,
            gid: spawn.gid,
            argv: argv.filter(|a| !a.is_empty()).map(sys::CStringArray::new),
            env: env.map(sys::CStringArray::new),
            candidates,
        }
    }

    /// Runs in the leader: prepares the process and executes the command
    /// with `stdio` as its stdin, stdout and stderr. Returns the failed step
    /// and its error; makes no allocation.
    fn exec(&self, stdio: [BorrowedFd<'_>; 3]) -> (SpawnStage, io::Error) {
        // Ignored signals stay ignored across exec; SIGPIPE is the only one
        // the supervisor ignores, and the command starts with it at its
        // default.
        sys::default_signal(libc::SIGPIPE);
        // A new session detaches the command from any terminal and makes it
        // the leader of its own process group.
        if let Err(e) = sys::setsid() {
            return (SpawnStage::Stdio, e);
        }
        for (target, fd) in (0..).zip(stdio) {
            if let Err(e) = sys::dup2(fd, target) {
                return (SpawnStage::Stdio, e);
            }
        }
        if self.pty {
            // The new session has no controlling terminal yet; the PTY on
            // stdin becomes it, so job control and ^C work in the shell.
            if let Err(e) = sys::set_controlling_tty(0) {
                return (SpawnStage::Stdio, e);
            }
        }
        let Some(cwd) = &self.cwd else {
            return (SpawnStage::Cwd, io::Error::from_raw_os_error(libc::EINVAL));
        };
        if let Err(e) = sys::chdir(cwd) {
            return (SpawnStage::Cwd, e);
        }
        // The kernel reports a directory outside the root as
        // "(unreachable)..."; refuse to start a command whose cwd escaped
        // the sandbox.
        let mut buf = [0u8; libc::PATH_MAX as usize + 1];
        match sys::getcwd(&mut buf) {
            Ok(actual) if actual.starts_with(b"/") => {}
            Ok(_) => return (SpawnStage::Cwd, io::Error::from_raw_os_error(libc::EACCES)),
            Err(e) => return (SpawnStage::Cwd, e),
        }
        if let Err(e) = sys::switch_user(self.uid, self.gid) {
            return (SpawnStage::User, e);
        }
        if let Err(e) = sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) {
            return (SpawnStage::User, e);
        }
        sys::umask(0o022);
        // Everything above fd 2 is closed here rather than marked
        // close-on-exec: the supervisor resumes, and reports the start, as
        // soon as the exec has replaced this process's memory, which is
        // before the kernel closes close-on-exec descriptors. The command
        // must already hold nothing but stdio when it is reported.
        if let Err(e) = sys::close_range_from(3, false) {
            return (SpawnStage::Stdio, e);
        }
        let (Some(argv), Some(env)) = (&self.argv, &self.env) else {
            return (SpawnStage::Exec, io::Error::from_raw_os_error(libc::EINVAL));
        };
        (SpawnStage::Exec, exec_search(&self.candidates, argv, env))
    }
}

/// Lists the paths execvpe would try for `program`: the name itself when it
/// contains a slash, else the name in each directory of the `PATH` in
/// `env` (a default when it has none).
fn search_path(program: &[u8], env: &[CString]) -> Vec<CString> {
    if program.contains(&b'/') {
        return CString::new(program).into_iter().collect();
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    path.split(|&b| b == b':')
        .filter_map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut candidate = dir.to_vec();
            candidate.push(b'/');
            candidate.extend_from_slice(program);
            CString::new(candidate).ok()
        })
        .collect()
}

/// Executes each of `candidates` in turn, as execvpe does. Returns the most
/// telling error; makes no allocation.
fn exec_search(
    candidates: &[CString],
    argv: &sys::CStringArray,
    env: &sys::CStringArray,
) -> io::Error {
    let mut error = io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in candidates {
        let e = sys::execve_prepared(candidate, argv, env);
        // Like execvpe: remember a permission error, keep searching on
        // "not found", and stop on anything else.
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::EACCES) => error = e,
            _ => return e,
        }
    }
    error
}
