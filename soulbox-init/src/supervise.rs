//! The supervisor: one process per command, forked from PID 1.
//!
//! The supervisor is a child subreaper, so every process the command starts
//! stays its descendant even after its own parent exits. That makes "the
//! command's process tree" well defined: PID 1 kills a command by killing
//! every descendant of its supervisor. The supervisor reports the leader's
//! start and exit straight to the host through the status pipe.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use soulbox_proto::{Spawn, SpawnStage, StatusRecord};

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

/// Runs in the forked supervisor; never returns.
pub fn supervise(spawn: Spawn, fds: SpawnFds) -> ! {
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
        fail(&fds.status, SpawnStage::Fork, &e);
    }
    let (err_read, err_write) = match sys::pipe() {
        Ok(pair) => pair,
        Err(e) => fail(&fds.status, SpawnStage::Fork, &e),
    };
    let leader = match sys::fork() {
        Ok(sys::Fork::Child) => {
            drop(err_read);
            exec_leader(&spawn, &fds, &err_write)
        }
        Ok(sys::Fork::Parent(pid)) => pid,
        Err(e) => fail(&fds.status, SpawnStage::Fork, &e),
    };
    drop(err_write);
    let SpawnFds {
        stdin,
        stdout,
        stderr,
        status,
    } = fds;
    // The command holds its own copies; keeping these would delay the end of
    // file the host waits for.
    drop((stdin, stdout, stderr));

    // The leader writes (stage, errno) here if it fails before exec; a
    // close-on-exec pipe reads as end of file once exec succeeds.
    let mut buf = [0u8; 8];
    let failure = match sys::read(err_read.as_fd(), &mut buf) {
        Ok(8) => Some((buf[0], i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]))),
        _ => None,
    };
    drop(err_read);
    match failure {
        Some((stage, errno)) => {
            let stage = [
                SpawnStage::Cwd,
                SpawnStage::User,
                SpawnStage::Exec,
                SpawnStage::Stdio,
            ]
            .into_iter()
            .find(|s| *s as u8 == stage)
            .unwrap_or(SpawnStage::Exec);
            report(&status, StatusRecord::SpawnFailed { stage, errno });
        }
        None => report(&status, StatusRecord::Started { pid: leader as u32 }),
    }
    reap_tree(leader, &status, failure.is_none())
}

/// Reaps the leader, reports its exit, then reaps the rest of the tree until
/// no descendant is left.
fn reap_tree(leader: libc::pid_t, status: &OwnedFd, report_exit: bool) -> ! {
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
            }
            Ok(_) => {}
            Err(_) => sys::exit(0),
        }
    }
}

fn fail(status: &OwnedFd, stage: SpawnStage, error: &io::Error) -> ! {
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    report(status, StatusRecord::SpawnFailed { stage, errno });
    sys::exit(127)
}

/// Runs in the leader: prepares the process and executes the command.
fn exec_leader(spawn: &Spawn, fds: &SpawnFds, err_pipe: &OwnedFd) -> ! {
    let fail_leader = |stage: SpawnStage, error: io::Error| -> ! {
        let mut buf = [0u8; 8];
        buf[0] = stage as u8;
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        buf[4..8].copy_from_slice(&errno.to_le_bytes());
        let _ = sys::write_all(err_pipe.as_fd(), &buf);
        sys::exit(127)
    };

    // Ignored signals stay ignored across exec; SIGPIPE is the only one the
    // supervisor ignores, and the command starts with it at its default.
    sys::default_signal(libc::SIGPIPE);
    // A new session detaches the command from any terminal and makes it the
    // leader of its own process group.
    if let Err(e) = sys::setsid() {
        fail_leader(SpawnStage::Stdio, e);
    }
    for (fd, target) in [(&fds.stdin, 0), (&fds.stdout, 1), (&fds.stderr, 2)] {
        if let Err(e) = sys::dup2(fd.as_fd(), target) {
            fail_leader(SpawnStage::Stdio, e);
        }
    }
    if spawn.pty {
        // The new session has no controlling terminal yet; the PTY on
        // stdin becomes it, so job control and ^C work in the shell.
        if let Err(e) = sys::set_controlling_tty(0) {
            fail_leader(SpawnStage::Stdio, e);
        }
    }
    let cwd = match CString::new(spawn.cwd.clone()) {
        Ok(c) => c,
        Err(_) => fail_leader(SpawnStage::Cwd, io::Error::from_raw_os_error(libc::EINVAL)),
    };
    if let Err(e) = sys::chdir(&cwd) {
        fail_leader(SpawnStage::Cwd, e);
    }
    // The kernel reports a directory outside the root as "(unreachable)...";
    // refuse to start a command whose cwd escaped the sandbox.
    match sys::getcwd() {
        Ok(actual) if actual.starts_with(b"/") => {}
        Ok(_) => fail_leader(SpawnStage::Cwd, io::Error::from_raw_os_error(libc::EACCES)),
        Err(e) => fail_leader(SpawnStage::Cwd, e),
    }
    if let Err(e) = sys::switch_user(spawn.uid, spawn.gid) {
        fail_leader(SpawnStage::User, e);
    }
    if let Err(e) = sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) {
        fail_leader(SpawnStage::User, e);
    }
    sys::umask(0o022);
    // Everything above fd 2 is closed at exec, the error pipe included.
    if let Err(e) = sys::close_range_from(3, true) {
        fail_leader(SpawnStage::Stdio, e);
    }

    let to_c = |v: &Vec<u8>| CString::new(v.clone()).ok();
    let argv: Option<Vec<CString>> = spawn.argv.iter().map(to_c).collect();
    let env: Option<Vec<CString>> = spawn.env.iter().map(to_c).collect();
    let (Some(argv), Some(env)) = (argv, env) else {
        fail_leader(SpawnStage::Exec, io::Error::from_raw_os_error(libc::EINVAL));
    };
    let error = exec_search(&argv, &env);
    fail_leader(SpawnStage::Exec, error)
}

/// Executes `argv[0]`, searching the `PATH` of `env` when the name has no
/// slash, as execvpe does. Returns the most telling error.
fn exec_search(argv: &[CString], env: &[CString]) -> io::Error {
    let program = argv[0].as_bytes();
    if program.contains(&b'/') {
        return sys::execve(&argv[0], argv, env);
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    let mut error = io::Error::from_raw_os_error(libc::ENOENT);
    for dir in path.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut candidate = dir.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(program);
        let Ok(candidate) = CString::new(candidate) else {
            continue;
        };
        let e = sys::execve(&candidate, argv, env);
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
