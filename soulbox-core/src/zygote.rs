//! The host side of the zygote: one soulbox-init process per host process
//! that forks each sandbox's PID 1 on request, so that a create skips the
//! exec of PID 1 and its C library's start-up.
//!
//! The zygote starts on the first create, from the same executable as
//! PID 1, on a thread of its own that then waits for it to exit and reaps
//! it. The zygote has PR_SET_PDEATHSIG set, and Linux sends that signal
//! when the *thread* that started a process exits, so the thread lives
//! exactly as long as its zygote and the zygote dies with the host process.
//! It also exits on end of file on its channel. It lives in the host's
//! cgroup and namespaces and keeps no sandbox's descriptor after it replies.
//! Between requests it keeps the next sandbox's network namespace and, for
//! the root plan of the last request that sent one, the next sandbox's
//! root, built ahead in a mount namespace of its own (see
//! `soulbox_init::zygote`).
//!
//! Requests go one at a time under a mutex. The zygote clones with
//! CLONE_PARENT, so each PID 1 is this process's child, exactly as with
//! [`sys::clone_exec`]. When the zygote fails in any way, the create falls
//! back to [`sys::clone_exec`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{mpsc, Mutex};

use soulbox_proto::zygote::{ForkReply, ForkRequest, MAX_REQUEST_LEN, REPLY_LEN};
use soulbox_proto::RootPlan;

use crate::error::{Error, Result};
use crate::{init_binary, sys};

/// The way this process starts each sandbox's PID 1, set with
/// [`set_launcher`].
#[derive(Debug, Clone, Copy, Eq, Default)]
pub enum Launcher {
    /// Fork PID 1 from a zygote: a soulbox-init process that this process
    /// starts on its first create and keeps until it exits. Every create
    /// after the first saves the exec of PID 1 (about 0.8 ms on a VM
    /// where CPUID traps to the hypervisor). The default. Applies only
    /// where the effective uid is 0: rootless sandboxes always execute
    /// PID 1, because a forked PID 1 in a new user namespace would lock
    /// its unprivileged creator out of /proc/PID/root.
    #[default]
    Zygote,
    /// Execute PID 1 afresh for every create. Suits a program that creates
    /// one sandbox and exits but cannot use [`Launcher::Fork`], where a
    /// zygote would only add an exec.
    Exec,
    /// Clone PID 1 from this process itself, with no exec and no zygote.
    /// The child moves the control socket to fd 3 and calls the function,
    /// which must be `soulbox_init::run_cloned` from the same build as this
    /// library. Suits a program that creates one sandbox and exits, such as
    /// the `soulbox` command: its create saves the exec of PID 1 and the C
    /// library's start-up (about 0.8 ms on a VM where CPUID traps).
    ///
    /// A create uses it only where it is safe, and executes PID 1
    /// otherwise. The effective uid must be 0, and this process must have
    /// exactly one thread at the clone. In the child of a multi-threaded
    /// process, the allocator's and other locks may be held by threads
    /// that do not exist in it. SoulBox itself starts threads: the state
    /// sweep, after the clone of a create that sweeps, and the reaper once a
    /// sandbox outlives its handle. Tokio's blocking pool and multi-threaded runtime start
    /// threads too. So in practice only the first create of a program on
    /// a current-thread runtime, before any `spawn_blocking`, takes this
    /// path.
    ///
    /// PID 1 starts with a copy of this process's memory: arguments,
    /// environment and heap. It turns non-dumpable before it reads its
    /// configuration, so sandboxed code cannot read that memory through
    /// /proc/1/mem or /proc/1/environ. It also overwrites the argument and
    /// environment strings. /proc/1/cmdline, which any process may read,
    /// then shows its own name padded with NUL bytes to the length of this
    /// process's arguments. PID 1 keeps the copy and this program's
    /// file mapped for its whole life: a `soulbox create` sandbox's PID 1
    /// had 1.7 MiB resident (0.25 MiB anonymous) against 0.9 MiB (0.08)
    /// when executed, measured once on the benchmark VM.
    Fork(fn() -> !),
}

/// Two [`Launcher::Fork`] values are equal when their functions have the
/// same address.
impl PartialEq for Launcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Fork(a), Self::Fork(b)) => *a as usize == *b as usize,
            (Self::Zygote, Self::Zygote) | (Self::Exec, Self::Exec) => true,
            _ => false,
        }
    }
}

/// The launcher chosen with [`set_launcher`].
static LAUNCHER: Mutex<Launcher> = Mutex::new(Launcher::Zygote);

/// Chooses how this process starts each sandbox's PID 1 from now on.
/// Creates already under way finish with the launcher they started with.
/// Choosing [`Launcher::Exec`] or [`Launcher::Fork`] stops a running
/// zygote.
///
/// # Caveats
///
/// The zygote keeps the process attributes this process had when it
/// started (namespaces, cgroup, resource limits, umask, CPU affinity), and
/// sandboxes forked from it start with those, where exec'd ones take the
/// caller's at each create. PID 1 resets what it depends on (signals,
/// session, descriptors, the rlimits SoulBox sets), and a zygote is
/// restarted when this process's effective uid or gid changes. A program
/// that changes its namespaces or cgroup between creates should choose
/// [`Launcher::Exec`].
///
/// PID 1s forked from one zygote share its address-space layout, stack
/// canary and pointer-mangling key. No sandboxed code can read them:
/// PID 1 runs none, is not dumpable, and takes requests only from this
/// process.
pub fn set_launcher(launcher: Launcher) {
    *LAUNCHER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = launcher;
    if launcher != Launcher::Zygote {
        // Closing the channel ends the zygote; its thread reaps it.
        client().zygote = None;
    }
}

/// Returns the launcher chosen with [`set_launcher`].
pub fn launcher() -> Launcher {
    *LAUNCHER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Returns the pid of this process's running zygote, if it has one.
pub(crate) fn zygote_pid() -> Option<i32> {
    let mut client = client();
    client.drop_stale();
    client.zygote.as_ref().map(|zygote| zygote.pid)
}

/// Maximum number of zygote failures in a row (failed starts, lost or
/// refused requests) before this process stops using one. A successful
/// fork resets the count.
const MAX_FAILURES: u32 = 3;

/// How long a request may wait for the zygote's reply. A clone with new
/// namespaces normally takes well under a millisecond, but a network
/// namespace can take much longer while the kernel tears others down.
/// Requests wait in line behind the one in flight, so a zygote that stops
/// replying (stopped by a debugger or a signal on the host) stalls every
/// create of this process for this long before they fall back to exec.
const REPLY_TIMEOUT_MS: u16 = 2_000;

/// A PID 1 that the zygote forked.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    /// Whether PID 1 started in the cgroup v2 directory it was given.
    pub(crate) in_cgroup: bool,
}

/// The outcome of [`spawn`].
#[derive(Debug)]
pub(crate) enum Spawn {
    Started(Started),
    /// No PID 1 was started; the caller starts one itself with the same
    /// control socket.
    NotUsed,
    /// The zygote failed after it received the request, and may have
    /// forked a PID 1 holding a copy of the control socket. The caller
    /// must start PID 1 itself on a new socket pair.
    Lost,
}

/// Asks the zygote for a PID 1 in new `namespaces` with `control` as its
/// fd 3, started in `cgroup` when given. With `root`, the zygote may hand
/// PID 1 a root it built ahead for that plan, and it builds the next one
/// after it replies. Pass it only for a root that is the same for every
/// sandbox of the plan. Starts the zygote when there is none, and restarts
/// it once when it died.
pub(crate) fn spawn(
    control: BorrowedFd<'_>,
    namespaces: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    background: bool,
    root: Option<RootPlan>,
) -> Spawn {
    // A forked PID 1 keeps the zygote's memory descriptor, which belongs
    // to the initial user namespace, so once PID 1 turns non-dumpable an
    // unprivileged host may no longer open /proc/PID/root. An exec'd PID 1
    // gets a memory descriptor of its own user namespace, where the host
    // has every capability, so rootless hosts keep executing PID 1.
    if launcher() != Launcher::Zygote || namespaces & libc::CLONE_NEWUSER != 0 {
        return Spawn::NotUsed;
    }
    let encoded = encode_request(ForkRequest {
        namespaces: u64::from(namespaces as u32),
        background,
        root,
    });
    let mut client = client();
    for _ in 0..2 {
        let Some(zygote) = client.ready_zygote() else {
            return Spawn::NotUsed;
        };
        let outcome = zygote.fork(control, &encoded, cgroup);
        match outcome {
            Ok(started) => {
                client.failures = 0;
                return Spawn::Started(started);
            }
            // The zygote closed its channel, so it never saw the request:
            // start a new one and ask again.
            Err(Failure::Gone(error)) => {
                tracing::debug!(pid = zygote.pid, %error, "the zygote exited; restarting it");
                client.fail();
            }
            Err(Failure::Refused(errno)) => {
                let error = std::io::Error::from_raw_os_error(errno);
                tracing::debug!(pid = zygote.pid, %error, "the zygote could not fork PID 1");
                client.fail();
                return Spawn::NotUsed;
            }
            Err(Failure::Lost(reason)) => {
                tracing::debug!(pid = zygote.pid, reason, "lost the zygote during a request");
                let _ = sys::pidfd_send_signal(zygote.pidfd.as_fd(), libc::SIGKILL);
                client.fail();
                return Spawn::Lost;
            }
        }
    }
    Spawn::NotUsed
}

/// Encodes `request`, without its root plan when the plan would make it
/// longer than the zygote accepts. A plan that long (hundreds of layers or
/// binds with long paths) is then built by PID 1 at the create, as without
/// a zygote.
fn encode_request(mut request: ForkRequest) -> Vec<u8> {
    let encoded = request.encode();
    if encoded.len() <= MAX_REQUEST_LEN {
        return encoded;
    }
    request.root = None;
    request.encode()
}

fn client() -> std::sync::MutexGuard<'static, Client> {
    static CLIENT: Mutex<Client> = Mutex::new(Client {
        zygote: None,
        failures: 0,
    });
    CLIENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Client {
    zygote: Option<Zygote>,
    /// Zygote failures since its last successful fork.
    failures: u32,
}

impl Client {
    /// Returns the running zygote, starting one when there is none and
    /// the failure count allows.
    fn ready_zygote(&mut self) -> Option<&Zygote> {
        self.drop_stale();
        if self.zygote.is_none() && self.failures < MAX_FAILURES {
            match Zygote::start() {
                Ok(zygote) => self.zygote = Some(zygote),
                Err(error) => {
                    tracing::debug!(%error, "cannot start the zygote");
                    self.fail();
                }
            }
        }
        self.zygote.as_ref()
    }

    /// Forgets a zygote this process cannot use: one started by the
    /// process this one was forked from, whose children would not be this
    /// process's, or one started with other credentials.
    fn drop_stale(&mut self) {
        let stale = self.zygote.as_ref().is_some_and(|zygote| {
            zygote.owner != std::process::id()
                || zygote.credentials != (sys::geteuid(), sys::getegid())
        });
        if stale {
            self.zygote = None;
        }
    }

    /// Drops the zygote after a failure and counts it.
    fn fail(&mut self) {
        self.zygote = None;
        self.failures += 1;
        if self.failures == MAX_FAILURES {
            tracing::warn!(
                failures = MAX_FAILURES,
                "the zygote failed too often; sandboxes in this process start by exec from now on"
            );
        }
    }
}

/// A failed request to the zygote, by cause.
enum Failure {
    /// The zygote had closed its channel before the request was sent.
    Gone(std::io::Error),
    /// The zygote's clone failed with this errno; nothing was started.
    Refused(i32),
    /// The zygote took the request but sent no valid reply.
    Lost(&'static str),
}

/// A running zygote. Dropping it closes the channel, which ends the zygote.
struct Zygote {
    channel: OwnedFd,
    pid: i32,
    /// Kept to kill a zygote that stops replying; the zygote's own thread
    /// reaps it.
    pidfd: OwnedFd,
    /// The process that started the zygote.
    owner: u32,
    /// Effective uid and gid of this process when the zygote started.
    credentials: (u32, u32),
}

impl Zygote {
    /// Starts a zygote from a thread that then waits for it to exit.
    fn start() -> Result<Self> {
        let program = init_binary::executable()?;
        let (channel, zygote_end) =
            sys::seqpacket_pair().map_err(Error::os("create the zygote's channel"))?;
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("soulbox-zygote".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let started =
                    sys::clone_exec(program, Some(c"--zygote"), zygote_end.as_fd(), 0, None);
                drop(zygote_end);
                let pidfd = match started {
                    Ok((pid, pidfd, _)) => {
                        let _ = sender.send(pidfd.try_clone().map(|copy| (pid, copy)));
                        pidfd
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                };
                // Keeps this thread, and so the zygote's parent-death
                // signal, alive until the zygote exits, then reaps it.
                let _ = sys::pidfd_wait(pidfd.as_fd(), true);
            })
            .map_err(Error::os("start the zygote's thread"))?;
        let started = receiver
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the zygote's thread ended early")));
        let (pid, pidfd) = started.map_err(Error::os("start the zygote (clone)"))?;
        tracing::debug!(pid, "zygote started");
        Ok(Self {
            channel,
            pid,
            pidfd,
            owner: std::process::id(),
            credentials: (sys::geteuid(), sys::getegid()),
        })
    }

    /// Sends one encoded fork request and waits for the reply.
    fn fork(
        &self,
        control: BorrowedFd<'_>,
        request: &[u8],
        cgroup: Option<BorrowedFd<'_>>,
    ) -> std::result::Result<Started, Failure> {
        let mut fds = vec![control];
        fds.extend(cgroup);
        sys::send_with_fds(self.channel.as_fd(), request, &fds).map_err(Failure::Gone)?;
        match sys::poll_readable(self.channel.as_fd(), i32::from(REPLY_TIMEOUT_MS)) {
            Ok(true) => {}
            Ok(false) => return Err(Failure::Lost("no reply within 2 s")),
            Err(_) => return Err(Failure::Lost("poll on the channel failed")),
        }
        let mut buf = [0u8; REPLY_LEN + 1];
        let (len, mut fds) = sys::recv_with_fds(self.channel.as_fd(), &mut buf)
            .map_err(|_| Failure::Lost("reading the reply failed"))?;
        if len == 0 && fds.is_empty() {
            return Err(Failure::Lost("the zygote exited before it replied"));
        }
        match ForkReply::decode(&buf[..len]) {
            Ok(ForkReply::Started { pid, in_cgroup }) if fds.len() == 1 => Ok(Started {
                pid,
                pidfd: fds.remove(0),
                in_cgroup,
            }),
            Ok(ForkReply::Failed { errno }) if fds.is_empty() => Err(Failure::Refused(errno)),
            _ => Err(Failure::Lost("malformed reply")),
        }
    }
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote")
            .field("pid", &self.pid)
            .field("channel", &self.channel.as_raw_fd())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with_layers(count: usize) -> ForkRequest {
        let layer = |i: usize| format!("/var/lib/soulbox/layers/{i:0>100}").into_bytes();
        ForkRequest {
            namespaces: libc::CLONE_NEWNS as u64,
            background: false,
            root: Some(RootPlan {
                lower_dirs: (0..count).map(layer).collect(),
                binds: Vec::new(),
                scratch_dir: b"/run/soulbox/scratch".to_vec(),
                scratch_size: 1 << 30,
                scratch_inodes: 1 << 20,
                tmp_size: 1 << 30,
            }),
        }
    }

    #[test]
    fn request_keeps_plan_that_fits() {
        let request = request_with_layers(3);
        let decoded = ForkRequest::decode(&encode_request(request.clone())).expect("decode");
        assert_eq!(decoded, request);
    }

    #[test]
    fn request_drops_plan_over_limit() {
        let request = request_with_layers(1000);
        assert!(request.encode().len() > MAX_REQUEST_LEN);
        let encoded = encode_request(request.clone());
        assert!(encoded.len() <= MAX_REQUEST_LEN);
        let decoded = ForkRequest::decode(&encoded).expect("decode");
        assert_eq!(decoded.root, None);
        assert_eq!(decoded.namespaces, request.namespaces);
        assert_eq!(decoded.background, request.background);
    }
}
