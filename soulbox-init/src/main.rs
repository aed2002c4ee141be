//! PID 1 of a SoulBox sandbox.
//!
//! The host library starts this program from a sealed memfd in fresh
//! namespaces, with the control socket as fd 3. PID 1 reads its
//! configuration, builds the sandbox (see `setup`), reports ready, and then
//! serves the host: it starts commands under a supervisor (see `supervise`),
//! delivers signals, reaps orphans, and ends the sandbox when its deadline
//! passes or the host closes the socket. When PID 1 exits, the kernel kills
//! every other process of the PID namespace.

#![deny(unsafe_code)]

mod seccomp;
mod setup;
mod supervise;
#[expect(unsafe_code, reason = "the one module that makes raw system calls")]
mod sys;
mod tree;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use soulbox_proto::{Reply, Request, SetupStage, Signal, Spawn, SPAWN_FD_COUNT};

/// The control socket, inherited from the host.
const CONTROL_FD: i32 = 3;

/// Exit code when the sandbox's deadline passed.
const EXIT_TIMEOUT: i32 = 124;
/// Exit code when setup failed or the protocol broke.
const EXIT_FAILURE: i32 = 1;

fn main() {
    let _ = sys::set_name(c"soulbox-init");
    // The signal mask and ignored signals are inherited from the host
    // thread that started PID 1; start from the defaults.
    sys::reset_signals();
    sys::ignore_signal(libc::SIGPIPE);
    // Any descriptor leaked from the host, other than the control socket,
    // is closed before anything else happens.
    let _ = sys::close_range_from(CONTROL_FD as u32 + 1, false);
    // The host's stdin, stdout and stderr (possibly its terminal) are
    // replaced by /dev/null.
    let _ = sys::redirect_stdio_to_null();

    let control = sys::borrow_raw(CONTROL_FD);
    regain_capabilities(control);
    let config = match receive(control) {
        Some(Request::Config(config)) => config,
        _ => fail_setup(control, SetupStage::Config, libc::EPROTO, b""),
    };
    // Not dumpable: no process inside may ptrace PID 1 or open its
    // /proc/1/mem, even as sandbox root. Forked supervisors inherit this.
    // It must wait until the configuration has arrived: a non-dumpable
    // process's /proc files belong to root, and a rootless host writes the
    // uid map there before it sends the configuration.
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    // The host moves PID 1 into its cgroups while the mounts are built.
    let built = setup::build(&config).and_then(|()| match receive(control) {
        Some(Request::Attached) => setup::enter_cgroup_namespace(),
        _ => Err(setup::SetupError {
            stage: SetupStage::CgroupNamespace,
            error: std::io::Error::from_raw_os_error(libc::EPROTO),
            detail: b"expected the attached message".to_vec(),
        }),
    });
    if let Err(e) = built {
        let errno = e.error.raw_os_error().unwrap_or(libc::EIO);
        fail_setup(control, e.stage, errno, &e.detail);
    }
    if sys::block_signals(&[libc::SIGCHLD]).is_err() {
        fail_setup(control, SetupStage::Signals, libc::EINVAL, b"");
    }
    let sigchld = match sys::signalfd(&[libc::SIGCHLD]) {
        Ok(fd) => fd,
        Err(e) => fail_setup(
            control,
            SetupStage::Signals,
            e.raw_os_error().unwrap_or(0),
            b"",
        ),
    };
    // Last, so that setup runs unfiltered and the policy only needs what
    // PID 1 does from here on.
    if let Err(e) = seccomp::install(&config.seccomp_filter) {
        let instructions = config.seccomp_filter.len() / soulbox_proto::SOCK_FILTER_LEN;
        fail_setup(
            control,
            SetupStage::Seccomp,
            e.raw_os_error().unwrap_or(libc::EINVAL),
            format!("{instructions}-instruction BPF program").as_bytes(),
        );
    }
    if send_reply(control, &Reply::Ready).is_err() {
        sys::exit(EXIT_FAILURE);
    }
    let mut init = Init {
        supervisors: HashMap::new(),
        deadline: deadline_from(config.timeout_ms),
    };
    init.serve(control, sigchld.as_fd())
}

/// Re-executes PID 1 once when it started without capabilities.
///
/// In rootless mode the host writes the new user namespace's uid map only
/// after PID 1 has exec'd, and an exec by a process whose uid is not yet
/// mapped drops every capability. The host sends the configuration after
/// the map is written, so once a message is waiting, a second exec runs as
/// mapped root with full capabilities in the namespace. The message is only
/// peeked, so the new image reads it normally.
fn regain_capabilities(control: BorrowedFd<'_>) {
    if sys::has_effective_caps() {
        return;
    }
    if std::env::args().nth(1).as_deref() == Some(REEXEC_ARG) {
        fail_setup(
            control,
            SetupStage::Config,
            libc::EPERM,
            b"no capabilities after re-exec",
        );
    }
    if sys::peek(control).is_err() {
        sys::exit(EXIT_FAILURE);
    }
    let argv = [c"soulbox-init".to_owned(), REEXEC_ARG_C.to_owned()];
    let error = sys::execve(c"/proc/self/exe", &argv, &[]);
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    fail_setup(
        control,
        SetupStage::Config,
        errno,
        b"re-exec /proc/self/exe",
    );
}

/// Marks the second image started by [`regain_capabilities`].
const REEXEC_ARG: &str = "--reexec";
const REEXEC_ARG_C: &std::ffi::CStr = c"--reexec";

fn deadline_from(timeout_ms: u64) -> Option<u64> {
    (timeout_ms > 0).then(|| sys::monotonic_ms().saturating_add(timeout_ms))
}

fn send_reply(control: BorrowedFd<'_>, reply: &Reply) -> std::io::Result<()> {
    let msg = reply
        .encode()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EMSGSIZE))?;
    sys::send(control, &msg)
}

fn fail_setup(control: BorrowedFd<'_>, stage: SetupStage, errno: i32, detail: &[u8]) -> ! {
    let _ = send_reply(
        control,
        &Reply::SetupFailed {
            stage,
            errno,
            detail: detail.to_vec(),
        },
    );
    sys::exit(EXIT_FAILURE)
}

/// Receives one request without descriptors; `None` on end of file or a
/// malformed message.
fn receive(control: BorrowedFd<'_>) -> Option<Request> {
    let mut buf = vec![0u8; soulbox_proto::MAX_MESSAGE_LEN];
    let (len, _fds) = sys::recv_with_fds(control, &mut buf, 0).ok()??;
    Request::decode(&buf[..len]).ok()
}

struct Init {
    /// Supervisor pid of every running command, by command id.
    supervisors: HashMap<u64, libc::pid_t>,
    /// Monotonic milliseconds at which the sandbox ends.
    deadline: Option<u64>,
}

impl Init {
    fn serve(&mut self, control: BorrowedFd<'_>, sigchld: BorrowedFd<'_>) -> ! {
        let mut buf = vec![0u8; soulbox_proto::MAX_MESSAGE_LEN];
        loop {
            let timeout = match self.deadline {
                None => -1,
                Some(deadline) => {
                    let now = sys::monotonic_ms();
                    if now >= deadline {
                        sys::exit(EXIT_TIMEOUT);
                    }
                    (deadline - now).min(i32::MAX as u64) as i32
                }
            };
            let mut fds = [
                libc::pollfd {
                    fd: CONTROL_FD,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sigchld_raw(sigchld),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if sys::poll(&mut fds, timeout).is_err() {
                continue;
            }
            if fds[1].revents & libc::POLLIN != 0 {
                sys::drain_signalfd(sigchld);
                self.reap();
            }
            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match sys::recv_with_fds(control, &mut buf, SPAWN_FD_COUNT) {
                    // The host closed its end: the sandbox ends with it.
                    Ok(None) | Err(_) => sys::exit(0),
                    Ok(Some((len, fds))) => self.handle(&buf[..len], fds),
                }
            }
        }
    }

    /// Reaps every exited child: supervisors and orphans reparented to PID 1.
    fn reap(&mut self) {
        while let Ok(Some((pid, _))) = sys::waitpid(-1, libc::WNOHANG) {
            self.supervisors.retain(|_, supervisor| *supervisor != pid);
        }
    }

    /// Handles one request. A malformed request is dropped: the host is the
    /// only peer and a bad message is its bug, not a reason to end the
    /// sandbox.
    fn handle(&mut self, msg: &[u8], fds: Vec<OwnedFd>) {
        match Request::decode(msg) {
            Ok(Request::Spawn(spawn)) => self.spawn(spawn, fds),
            Ok(Request::Signal(signal)) => self.signal(signal),
            Ok(Request::SetTimeout(ms)) => self.deadline = deadline_from(ms),
            Ok(Request::Config(_)) | Ok(Request::Attached) | Err(_) => {}
        }
    }

    fn spawn(&mut self, spawn: Spawn, fds: Vec<OwnedFd>) {
        let Ok([stdin, stdout, stderr, status]) = <[OwnedFd; 4]>::try_from(fds) else {
            return;
        };
        let command_id = spawn.command_id;
        let fds = supervise::SpawnFds {
            stdin,
            stdout,
            stderr,
            status,
        };
        match sys::fork() {
            Ok(sys::Fork::Child) => supervise::supervise(spawn, fds),
            Ok(sys::Fork::Parent(pid)) => {
                self.supervisors.insert(command_id, pid);
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EAGAIN);
                let record = soulbox_proto::StatusRecord::SpawnFailed {
                    stage: soulbox_proto::SpawnStage::Fork,
                    errno,
                };
                let _ = sys::write_all(fds.status.as_fd(), &record.encode());
            }
        }
    }

    fn signal(&mut self, signal: Signal) {
        let Some(&supervisor) = self.supervisors.get(&signal.command_id) else {
            return;
        };
        if signal.kill_tree {
            tree::kill_descendants(supervisor);
            return;
        }
        // Signal the leader only while it is still the supervisor's child, so
        // a stale pid never reaches an unrelated process.
        let Ok(pid) = libc::pid_t::try_from(signal.pid) else {
            return;
        };
        if tree::parent_of(pid) == Some(supervisor) {
            let _ = sys::kill(pid, signal.signal);
        }
    }
}

fn sigchld_raw(fd: BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}
