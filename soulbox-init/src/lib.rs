//! PID 1 of a SoulBox sandbox.
//!
//! The host library starts this program, from a read-only copy in its
//! state directory or from a sealed memfd, in fresh namespaces, with the creating connection as fd 3. PID 1 reads its
//! configuration, builds the sandbox (see `setup`), reports ready, and then
//! serves the host: it starts commands under a supervisor (see `supervise`),
//! delivers signals, reaps orphans, and ends the sandbox when its deadline
//! passes, or freezes it when the host asked for a pause at the deadline.
//! Other host processes reach it through a listening socket that the host
//! bound in its state directory and passed along with the configuration.
//! Until the host sends `Persist`, closing the creating connection ends the
//! sandbox too. When PID 1 exits, the kernel kills every other process of
//! the PID namespace.
//!
//! The same code is also a library: a one-shot host program such as the
//! `soulbox` command links it and clones PID 1 from its own process, which
//! continues in [`run_cloned`] instead of executing this program.

#![deny(unsafe_code)]

mod nftables;
mod seccomp;
mod setup;
mod supervise;
#[expect(unsafe_code, reason = "the one module that makes raw system calls")]
mod sys;
mod tree;
pub mod zygote;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use soulbox_proto::{
    CommandMemory, Config, Reply, Request, SetupStage, Signal, Spawn, NO_DEADLINE, SPAWN_FD_COUNT,
};

/// The creating connection, inherited from the host.
const CONTROL_FD: i32 = 3;

/// Number of descriptors sent with the configuration: the listening socket
/// for other connections, then the state entry's lock file, which PID 1
/// holds open (and so locked) for as long as it lives.
const CONFIG_FD_COUNT: usize = 2;

/// Most descriptors sent with the configuration. For a sandbox with
/// internet access, the write end of the pipe whose closing ends the
/// sandbox's slirp4netns follows. PID 1 keeps it open, never writes to it,
/// and the kernel closes it when PID 1 exits. With `pause_on_timeout`, the
/// sandbox's `cgroup.freeze` file, opened for writing by the host, comes
/// last.
const MAX_CONFIG_FD_COUNT: usize = CONFIG_FD_COUNT + 2;

/// Most v1 `tasks` files PID 1 accepts with the attached message: one per
/// v1 hierarchy a limit needs (memory, pids, cpu) and the memory one's
/// parent, with room to spare.
const MAX_TASK_FILES: usize = 8;

/// Most connections served at once besides the creating one; more are
/// accepted and closed at once. Each costs PID 1 one descriptor.
const MAX_CLIENTS: usize = 1024;

/// Address ranges that a sandbox with internet access may not reach:
/// link-local IPv4, where clouds serve instance metadata, and Alibaba
/// Cloud's metadata address.
const BLOCKED_ROUTES: [([u8; 4], u8); 2] = [([169, 254, 0, 0], 16), ([100, 100, 100, 200], 32)];

/// CAP_NET_RAW, from <linux/capability.h>.
const CAP_NET_RAW: u32 = 13;

/// Priority of the policy routing rules for `allow_out` networks, which
/// look the destination up in the main table. The kernel's own rules look
/// in the local table at priority 0, so the sandbox's own addresses and
/// loopback stay reachable, and in the main table at 32766.
const ALLOW_RULE_PRIORITY: u32 = 100;
/// Priority of the prohibit rules for `deny_out` networks: after every
/// allow rule, so that an allowed network wins even over a more specific
/// denied one.
const DENY_RULE_PRIORITY: u32 = 200;

/// Exit code when the sandbox's deadline passed.
const EXIT_TIMEOUT: i32 = 124;
/// Exit code when setup failed or the protocol broke.
const EXIT_FAILURE: i32 = 1;

/// Runs PID 1 in a process that the host executed: builds the sandbox from
/// the configuration on the control socket at fd 3, reports ready, and
/// serves the host until the sandbox ends.
pub fn run_executed() -> ! {
    run(Start::Exec)
}

/// The way PID 1 came to run.
enum Start {
    /// Executed by the host, or cloned from it by [`run_cloned`]: its
    /// signal state and stdio are the host thread's.
    Exec,
    /// Forked by the zygote, which reset its signal state when it started
    /// and does not change it, and which read the facts PID 1 needs.
    Zygote {
        facts: setup::KernelFacts,
        /// The plan of the root that the zygote built ahead and PID 1 now
        /// runs in, if it did (see [`setup::build_root_ahead`]).
        prebuilt: Option<soulbox_proto::RootPlan>,
    },
}

fn run(start: Start) -> ! {
    sys::set_mmap_threshold(64 * 1024);
    let _ = sys::set_name(PROGRAM_NAME);
    // A session of its own, so that signals aimed at the creating
    // program's process group or terminal never reach the sandbox.
    let _ = sys::setsid();
    if let Start::Exec = start {
        // The signal mask and ignored signals are inherited from the host
        // thread that started PID 1; start from the defaults.
        sys::reset_signals();
    }
    sys::ignore_signal(libc::SIGPIPE);
    // The umask is inherited from the host process too. Under a mask such
    // as 077 the overlay's root, its mount points and the files of /etc
    // would be closed to every sandbox user but root.
    sys::umask(0o022);
    // Any descriptor leaked from the host, other than the control socket,
    // is closed before anything else happens.
    let _ = sys::close_range_from(CONTROL_FD as u32 + 1, false);
    // The host's stdin, stdout and stderr (possibly its terminal) are
    // replaced by /dev/null. A forked PID 1 opens its own too: the
    // zygote's copies are files of the host's mount namespace, and PID 1
    // keeps no descriptor into that namespace.
    let _ = sys::redirect_stdio_to_null();

    let control = sys::borrow_raw(CONTROL_FD);
    regain_capabilities(control);
    // One buffer for every message PID 1 receives: freeing and mapping it
    // again for each would cost an unmap, which flushes the TLB of every
    // CPU PID 1 ran on, and a page fault. Only the pages a message fills
    // are ever touched.
    let mut buf = vec![0u8; soulbox_proto::MAX_MESSAGE_LEN];
    let Some(Configured {
        config,
        listener,
        lock,
        network_exit,
        freeze,
    }) = receive_config(control, &mut buf)
    else {
        fail_setup(control, SetupStage::Config, libc::EPROTO, b"")
    };
    if config.background {
        // A warm pool's refill: build at idle priority, so that the
        // sandboxes already handed over keep the CPU. Failing here only
        // costs that courtesy.
        let _ = sys::set_scheduler(libc::SCHED_IDLE);
    }
    // Not dumpable: no process inside may ptrace PID 1 or open its
    // /proc/1/mem, even as sandbox root. Forked supervisors inherit this.
    // It must wait until the configuration has arrived: a non-dumpable
    // process's /proc files belong to root, and a rootless host writes the
    // uid map there before it sends the configuration.
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    // The host makes the v1 cgroups and moves PID 1 into its v2 one while
    // the mounts are built.
    let (facts, prebuilt) = match start {
        Start::Exec => (setup::KernelFacts::read(), None),
        Start::Zygote { facts, prebuilt } => (facts, prebuilt),
    };
    if let Some(plan) = &prebuilt {
        // The zygote hands over a root only for an equal plan, which a
        // configuration with host mounts or a request for the upper
        // directory never has: both need the host's tree at the build.
        if !config.has_root_plan(plan) || !config.mounts.is_empty() || config.send_upper {
            fail_setup(
                control,
                SetupStage::Config,
                libc::EPROTO,
                b"the root built ahead does not match the configuration",
            );
        }
    }
    let built = setup::build(&config, facts, prebuilt.is_some()).and_then(|upper| {
        let attached = receive_attached(control, &mut buf).ok_or_else(|| setup::SetupError {
            stage: SetupStage::CgroupNamespace,
            error: std::io::Error::from_raw_os_error(libc::EPROTO),
            detail: b"expected the attached message".to_vec(),
        })?;
        let Attached {
            join,
            leave,
            memory,
        } = attached;
        join_v1_cgroups(control, join);
        setup::enter_cgroup_namespace()?;
        Ok((upper, leave, memory))
    });
    let (upper, leave, memory) = match built {
        Ok(built) => built,
        Err(e) => {
            let errno = e.error.raw_os_error().unwrap_or(libc::EIO);
            fail_setup(control, e.stage, errno, &e.detail);
        }
    };
    if let Some(parent) = leave {
        leave_memory_cgroup(control, &parent);
    }
    if network_exit.is_some() {
        if let Err((stage, e)) = restrict_egress(&config) {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            fail_setup(control, stage, errno, b"");
        }
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
    if let Err(e) = sys::listen(listener.as_fd(), MAX_CLIENTS as i32) {
        let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
        fail_setup(
            control,
            SetupStage::Config,
            errno,
            b"listen on the state socket",
        );
    }
    // Back to the normal policy before the filter, and before any command:
    // every process of the sandbox descends from PID 1 and would inherit
    // the idle one. A PID 1 forked by a background request of the zygote
    // starts with it too. An idle policy that a rootless creator ran under
    // stays where leaving it needs a privilege PID 1 lacks, as it would for
    // any program that creator starts.
    if config.background || sys::is_idle_priority() {
        if let Err(e) = sys::set_scheduler(libc::SCHED_OTHER) {
            if config.background {
                fail_setup(
                    control,
                    SetupStage::Scheduling,
                    e.raw_os_error().unwrap_or(libc::EPERM),
                    b"",
                );
            }
        }
    }
    send_root(control, upper);
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
        ending: HashSet::new(),
        deadline: deadline_from(config.timeout_ms),
        paused_remaining: None,
        freeze,
        resume_timeout_ms: config.resume_timeout_ms,
        paused_at_deadline: false,
        owner_open: true,
        persist: false,
        listener,
        clients: Vec::new(),
        _lock: lock,
        _network_exit: network_exit,
        spare: None,
        commands_started: 0,
        spare_due: false,
        memory,
    };
    if config.background {
        // A warm pool's sandbox: its first command, at the hand-over, finds
        // a supervisor waiting.
        init.fork_spare();
    }
    init.serve(sigchld.as_fd(), buf)
}

/// Blocks, in a sandbox with internet access, link-local addresses
/// (169.254.0.0/16, where clouds serve instance metadata and credentials)
/// and Alibaba Cloud's metadata address with prohibit routes in the main
/// table, then adds the rules of the caller's `allow_out` and `deny_out`.
/// An allow rule only sends the lookup on to the main table, so it never
/// reopens a blocked address. Sandbox root lacks CAP_NET_ADMIN, so it can
/// remove neither routes nor rules.
///
/// With any `deny_out` entry, it then installs the nf_tables egress filter
/// (see `nftables`), which applies the same entries to sockets bound to an
/// interface, whose packets get past routes and rules.
///
/// Last, it drops CAP_NET_RAW from the bounding set. Routes and rules act
/// on the route lookup only: a raw socket with IP_HDRINCL looks up the
/// address given to `sendto` but sends the destination written in its own
/// IP header, and a packet socket skips the lookup entirely. slirp4netns
/// forwards either packet to the address in its header.
fn restrict_egress(config: &Config) -> Result<(), (SetupStage, std::io::Error)> {
    let netlink = sys::Rtnetlink::open().map_err(|e| (SetupStage::BlockedRoutes, e))?;
    for (prefix, len) in BLOCKED_ROUTES {
        netlink
            .add_prohibit_route(prefix, len)
            .map_err(|e| (SetupStage::BlockedRoutes, e))?;
    }
    let rules = config
        .allow_out
        .iter()
        .map(|network| (ALLOW_RULE_PRIORITY, network, sys::RuleAction::LookupMain))
        .chain(
            config
                .deny_out
                .iter()
                .map(|network| (DENY_RULE_PRIORITY, network, sys::RuleAction::Prohibit)),
        );
    for (priority, network, action) in rules {
        netlink
            .add_rule(priority, network.address, network.prefix_len, action)
            .map_err(|e| (SetupStage::EgressRules, e))?;
    }
    if !config.deny_out.is_empty() {
        install_egress_filter(config).map_err(|e| (SetupStage::EgressFilter, e))?;
    }
    sys::drop_bounding_cap(CAP_NET_RAW).map_err(|e| (SetupStage::EgressRules, e))
}

/// Installs the nf_tables egress filter in PID 1's network namespace, in
/// one batch that the kernel applies whole or not at all. Sandbox root
/// lacks CAP_NET_ADMIN, which every nf_tables request needs, so it can
/// neither list nor change the table.
fn install_egress_filter(config: &Config) -> std::io::Result<()> {
    let blocked = BLOCKED_ROUTES.map(|(address, prefix_len)| soulbox_proto::Ipv4Cidr {
        address,
        prefix_len,
    });
    let (batch, acknowledged) =
        nftables::egress_batch(&blocked, &config.allow_out, &config.deny_out);
    sys::Nfnetlink::open()?.send_batch(&batch, acknowledged)
}

/// Runs PID 1 in a child that its host cloned from itself without an exec,
/// with the control socket at fd 3.
///
/// The host must have had effective uid 0 and one thread at the clone, so
/// that no lock of its memory can be held in the child. The child runs on
/// a copy of the host's memory, with its arguments, environment and heap. So
/// before anything else it turns non-dumpable, which keeps sandboxed code
/// from reading /proc/1/mem and /proc/1/environ, and it overwrites the
/// argument and environment strings, because any process may read
/// /proc/1/cmdline. That then shows "soulbox-init" padded with NUL bytes
/// to the length of the host's arguments. [`run`] resets what an exec
/// would have: descriptors, signal handlers and mask, session, stdio and
/// name. A panic ends the process with status 1 instead of unwinding into
/// the host's code.
pub fn run_cloned() -> ! {
    let control = sys::borrow_raw(CONTROL_FD);
    if let Err(e) = sys::prctl(libc::PR_SET_DUMPABLE, 0) {
        let errno = e.raw_os_error().unwrap_or(libc::EPERM);
        fail_setup(
            control,
            SetupStage::Config,
            errno,
            b"make PID 1 non-dumpable",
        );
    }
    if let Err(e) = sys::overwrite_arguments_and_environment(PROGRAM_NAME) {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        fail_setup(
            control,
            SetupStage::Config,
            errno,
            b"overwrite the host's arguments and environment in PID 1",
        );
    }
    let _ = std::panic::catch_unwind(|| {
        run(Start::Exec);
    });
    sys::exit(EXIT_FAILURE)
}

/// PID 1's name and only argument, as an exec'd PID 1 gets it.
const PROGRAM_NAME: &std::ffi::CStr = c"soulbox-init";

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
    let argv = [PROGRAM_NAME.to_owned(), REEXEC_ARG_C.to_owned()];
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

/// Sends the host a descriptor of the sandbox's root directory. Through it
/// the host reaches the sandbox's files, as it would through
/// /proc/PID/root, even once a command that ends the sandbox has made
/// PID 1 exit. It goes before the seccomp filter. Without it the host
/// opens /proc/PID/root. `upper`, the overlay's upper directory that a
/// template build asked for, goes with it as the second descriptor and is
/// closed here, so no sandboxed process inherits it.
fn send_root(control: BorrowedFd<'_>, upper: Option<OwnedFd>) {
    let (Ok(msg), Ok(root)) = (Reply::Root.encode(), sys::open_read_only(c"/")) else {
        return;
    };
    let _ = match &upper {
        Some(upper) => sys::send_with_fds(control, &msg, &[root.as_fd(), upper.as_fd()]),
        None => sys::send_with_fd(control, &msg, root.as_fd()),
    };
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

/// The configuration and the descriptors sent with it.
struct Configured {
    config: Config,
    listener: OwnedFd,
    lock: OwnedFd,
    /// The slirp4netns exit pipe of a sandbox with internet access.
    network_exit: Option<OwnedFd>,
    /// The sandbox's `cgroup.freeze` file, with `pause_on_timeout`.
    freeze: Option<OwnedFd>,
}

/// Receives the configuration and the descriptors sent with it: the
/// listening socket, the lock file, optionally the write end of the
/// slirp4netns exit pipe, and with `pause_on_timeout` the `cgroup.freeze`
/// file. A configuration with `pause_on_timeout` but without that file is
/// rejected.
fn receive_config(control: BorrowedFd<'_>, buf: &mut [u8]) -> Option<Configured> {
    let (len, fds) = sys::recv_with_fds(control, buf, MAX_CONFIG_FD_COUNT).ok()??;
    let Ok(Request::Config(config)) = Request::decode(&buf[..len]) else {
        return None;
    };
    let mut fds = fds.into_iter();
    let (Some(listener), Some(lock)) = (fds.next(), fds.next()) else {
        return None;
    };
    let (network_exit, freeze) = match (config.pause_on_timeout, fds.next(), fds.next()) {
        (false, network_exit, None) => (network_exit, None),
        (true, Some(freeze), None) => (None, Some(freeze)),
        (true, Some(network_exit), Some(freeze)) => (Some(network_exit), Some(freeze)),
        _ => return None,
    };
    Some(Configured {
        config,
        listener,
        lock,
        network_exit,
        freeze,
    })
}

/// The `tasks` files of the sandbox's v1 cgroups, from the attached
/// message.
struct Attached {
    /// The files PID 1 writes "0" into, the memory cgroup's among them.
    join: Vec<OwnedFd>,
    /// With a v1 memory cgroup, its parent's file, which PID 1 moves to
    /// once it has entered its cgroup namespace.
    leave: Option<OwnedFd>,
    /// The placement of the supervisors under the memory limit.
    memory: supervise::MemoryPlacement,
}

/// Receives the message that the host has made and attached the sandbox's
/// cgroups, with the `tasks` files of its v1 cgroups.
fn receive_attached(control: BorrowedFd<'_>, buf: &mut [u8]) -> Option<Attached> {
    let (len, mut join) = sys::recv_with_fds(control, buf, MAX_TASK_FILES).ok()??;
    let Ok(Request::Attached { command_memory }) = Request::decode(&buf[..len]) else {
        return None;
    };
    let (leave, memory) = match command_memory {
        CommandMemory::Unlimited => (None, supervise::MemoryPlacement::Unlimited),
        CommandMemory::RaiseScore => (None, supervise::MemoryPlacement::RaiseScore),
        CommandMemory::JoinV1 => {
            let parent = join.pop()?;
            let memory = join.last()?.try_clone().ok()?;
            (Some(parent), supervise::MemoryPlacement::Join(memory))
        }
    };
    Some(Attached {
        join,
        leave,
        memory,
    })
}

/// Moves PID 1 into the v1 cgroups whose `tasks` files the host opened.
///
/// The host could write PID 1's pid into each `cgroup.procs`, but such a
/// write takes the kernel's global lock on thread groups for writing, which
/// first waits for an RCU grace period: 15 to 30 ms on an idle host. A
/// single-threaded process writing "0" into `tasks` moves only itself and
/// skips that lock. PID 1 has one thread, and every process of the sandbox
/// descends from it, so this joins the whole sandbox. It runs once the
/// mounts are built, because the host makes these cgroups meanwhile, and
/// before anything inside runs. What the build itself allocates (mount
/// structures, the few pages of /etc/hostname and /etc/hosts) stays charged
/// to the cgroups PID 1 started in.
fn join_v1_cgroups(control: BorrowedFd<'_>, task_files: Vec<OwnedFd>) {
    for file in task_files {
        if let Err(e) = sys::write_all(file.as_fd(), b"0") {
            fail_setup(
                control,
                SetupStage::Cgroup,
                e.raw_os_error().unwrap_or(libc::EIO),
                b"join a v1 cgroup through its tasks file",
            );
        }
    }
}

/// Moves PID 1, which has entered its cgroup namespace, from the sandbox's
/// v1 memory cgroup to the one above it through that one's `tasks` file
/// `parent`. Each command's supervisor joins the sandbox's instead.
fn leave_memory_cgroup(control: BorrowedFd<'_>, parent: &OwnedFd) {
    if let Err(e) = sys::write_all(parent.as_fd(), b"0") {
        fail_setup(
            control,
            SetupStage::Cgroup,
            e.raw_os_error().unwrap_or(libc::EIO),
            b"leave the memory cgroup to the sandbox's commands",
        );
    }
}

/// The connection a request came from, so that a reply goes back on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// The creating connection, fd 3.
    Owner,
    /// A connection accepted on the listening socket, by index.
    Client(usize),
}

struct Init {
    /// The supervisor of every running command, by command id.
    supervisors: HashMap<u64, Supervisor>,
    /// Supervisors of the commands that end the sandbox when they exit.
    /// The first of them to exit ends it.
    ending: HashSet<libc::pid_t>,
    /// Monotonic milliseconds at which the sandbox ends.
    deadline: Option<u64>,
    /// Time left until the deadline when the host last paused the sandbox
    /// (`Some(None)` for no deadline); [`Request::Resume`] applies it.
    /// After a pause at the deadline it is `resume_timeout_ms`.
    paused_remaining: Option<Option<u64>>,
    /// The sandbox's `cgroup.freeze` file when the sandbox pauses at its
    /// deadline instead of ending. PID 1 is not dumpable, so no process
    /// inside can reach this descriptor through /proc/1/fd or ptrace.
    freeze: Option<OwnedFd>,
    /// Milliseconds until the deadline that a resume after a pause at the
    /// deadline sets; 0 for none.
    resume_timeout_ms: u64,
    /// Whether PID 1 froze the sandbox at its deadline and no `Resume` has
    /// come since.
    paused_at_deadline: bool,
    /// Whether the creating connection is still open.
    owner_open: bool,
    /// Whether the sandbox outlives the creating connection.
    persist: bool,
    listener: OwnedFd,
    clients: Vec<OwnedFd>,
    /// Held open so that the state entry's lock stays taken while PID 1
    /// lives; the host reads a free lock as a dead sandbox.
    _lock: OwnedFd,
    /// Held open so that the sandbox's slirp4netns, which waits for this
    /// pipe to close, ends when PID 1 exits.
    _network_exit: Option<OwnedFd>,
    /// The supervisor waiting for the next command, which then starts
    /// without a fork. PID 1 forked it ahead, or its last command's tree
    /// has ended.
    spare: Option<Spare>,
    /// Commands started so far. A sandbox gets a spare supervisor once it
    /// has run two, so that one-command sandboxes never pay for it.
    commands_started: u64,
    /// Whether a spare is due once PID 1 has been idle for
    /// [`SPARE_IDLE_MS`]. Set when a command ends.
    spare_due: bool,
    /// The placement of each supervisor under the memory limit.
    memory: supervise::MemoryPlacement,
}

/// A supervisor waiting for a command: forked ahead of one, or done with
/// its last. It takes the next [`Spawn`] request, forwarded with its
/// descriptors on `channel`.
struct Spare {
    pid: libc::pid_t,
    channel: OwnedFd,
}

/// The supervisor of a running command.
struct Supervisor {
    pid: libc::pid_t,
    /// The socket on which the supervisor reports that its command's tree
    /// has ended (see [`supervise::IDLE`]), after which it becomes the
    /// spare. `None` for one that exits then.
    channel: Option<OwnedFd>,
}

/// Commands a sandbox starts before it keeps a spare supervisor: from the
/// second on, a command's supervisor stays for the next one once its tree
/// has ended.
const COMMANDS_BEFORE_SPARE: u64 = 2;

/// How long PID 1 waits, idle, after a command ends before it forks the
/// next spare. A command started back to back with the last one comes
/// sooner, and a fork then would compete with its start. On a 2-core VM,
/// forking at once made a loop of `/bin/true` commands slower (0.81 ms
/// each against 0.76 to 0.78 ms). With this wait the loop took as long as
/// without spares.
const SPARE_IDLE_MS: libc::c_int = 1;

impl Init {
    fn serve(&mut self, sigchld: BorrowedFd<'_>, mut buf: Vec<u8>) -> ! {
        let mut fds = Vec::with_capacity(3 + self.clients.len());
        let mut channel_ids = Vec::new();
        loop {
            let mut timeout = self.poll_timeout(&mut buf);
            if self.spare_due && !(0..SPARE_IDLE_MS).contains(&timeout) {
                timeout = SPARE_IDLE_MS;
            }
            fds.clear();
            fds.push(pollfd(sigchld.as_raw_fd()));
            fds.push(pollfd(self.listener.as_raw_fd()));
            fds.push(pollfd(if self.owner_open { CONTROL_FD } else { -1 }));
            fds.extend(self.clients.iter().map(|c| pollfd(c.as_raw_fd())));
            let first_channel = fds.len();
            channel_ids.clear();
            for (&command_id, supervisor) in &self.supervisors {
                if let Some(channel) = &supervisor.channel {
                    fds.push(pollfd(channel.as_raw_fd()));
                    channel_ids.push(command_id);
                }
            }
            let events = match sys::poll(&mut fds, timeout) {
                Ok(events) => events,
                Err(_) => continue,
            };
            if events == 0 && self.spare_due {
                self.spare_due = false;
                self.fork_spare();
                continue;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                sys::drain_signalfd(sigchld);
                self.reap();
            }
            // Before the requests, so that a start request that came with
            // a supervisor's idle report finds that supervisor waiting.
            for (fd, &command_id) in fds[first_channel..].iter().zip(&channel_ids) {
                if fd.revents != 0 {
                    self.take_idle(command_id);
                }
            }
            let ready = ready_peers(
                &fds[2..first_channel],
                libc::POLLIN | libc::POLLHUP | libc::POLLERR,
            );
            self.serve_peers(&ready, &mut buf);
            if fds[1].revents & libc::POLLIN != 0 {
                self.accept();
            }
        }
    }

    /// Returns how long the next poll may wait, ending or pausing the
    /// sandbox when its deadline has passed. Requests already queued are
    /// handled first: a host that resumes a frozen sandbox queues `Resume`
    /// before it thaws PID 1, and that must move the deadline before it is
    /// checked.
    fn poll_timeout(&mut self, buf: &mut [u8]) -> libc::c_int {
        let Some(deadline) = self.deadline else {
            return -1;
        };
        let now = sys::monotonic_ms();
        if now < deadline {
            return (deadline - now).min(i32::MAX as u64) as i32;
        }
        self.serve_queued(buf);
        match self.deadline {
            Some(deadline) if sys::monotonic_ms() >= deadline => {
                self.pause_at_deadline();
                0
            }
            _ => 0,
        }
    }

    /// Pauses the sandbox at its deadline by writing "1" to its
    /// `cgroup.freeze`, which freezes PID 1 too, on its way back from the
    /// write. PID 1 goes on from here once the host thaws the sandbox, and
    /// the `Resume` that the host queues before the thaw sets a fresh
    /// deadline of `resume_timeout_ms`. Without that file, or when the
    /// write fails, the sandbox ends, as at any other deadline.
    fn pause_at_deadline(&mut self) {
        let Some(freeze) = &self.freeze else {
            sys::exit(EXIT_TIMEOUT)
        };
        // Set before the write, after which PID 1 runs no more code until
        // the thaw.
        self.deadline = None;
        self.paused_remaining =
            Some((self.resume_timeout_ms > 0).then_some(self.resume_timeout_ms));
        self.paused_at_deadline = true;
        if sys::write_all(freeze.as_fd(), b"1").is_err() {
            sys::exit(EXIT_TIMEOUT);
        }
    }

    /// Handles every request already waiting, without blocking, including
    /// those on connections still waiting to be accepted: a host that
    /// connects to a frozen sandbox to resume it sends `Resume` on one.
    fn serve_queued(&mut self, buf: &mut [u8]) {
        // A bound keeps a peer that sends without pause from holding the
        // deadline off.
        for _ in 0..64 {
            let mut fds = vec![
                pollfd(self.listener.as_raw_fd()),
                pollfd(if self.owner_open { CONTROL_FD } else { -1 }),
            ];
            fds.extend(self.clients.iter().map(|c| pollfd(c.as_raw_fd())));
            if !matches!(sys::poll(&mut fds, 0), Ok(n) if n > 0) {
                return;
            }
            // Any event, so that a hung-up peer is served and dropped too.
            let ready = ready_peers(&fds[1..], !0);
            self.serve_peers(&ready, buf);
            if fds[0].revents & libc::POLLIN != 0 {
                self.accept();
            }
        }
    }

    /// Reads one message from each ready peer, then drops the clients that
    /// closed. Indexes stay valid because removal waits until the end.
    fn serve_peers(&mut self, ready: &[Peer], buf: &mut [u8]) {
        let mut closed = Vec::new();
        for &peer in ready {
            let fd = match peer {
                Peer::Owner => sys::borrow_raw(CONTROL_FD),
                Peer::Client(i) => self.clients[i].as_fd(),
            };
            match sys::recv_with_fds(fd, buf, SPAWN_FD_COUNT) {
                Ok(Some((len, fds))) => {
                    let msg = buf[..len].to_vec();
                    self.handle(peer, &msg, fds);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // End of file, or a broken message (too many descriptors).
                Ok(None) | Err(_) => closed.push(peer),
            }
        }
        for peer in closed.into_iter().rev() {
            match peer {
                Peer::Owner => self.close_owner(),
                Peer::Client(i) => {
                    self.clients.remove(i);
                }
            }
        }
    }

    /// Handles the close of the creating connection: the sandbox ends with
    /// it unless the host sent `Persist`.
    fn close_owner(&mut self) {
        if !self.persist {
            sys::exit(0);
        }
        self.owner_open = false;
        let _ = sys::close(CONTROL_FD);
    }

    fn accept(&mut self) {
        let Ok(client) = sys::accept(self.listener.as_fd()) else {
            return;
        };
        if self.clients.len() < MAX_CLIENTS {
            self.clients.push(client);
        }
    }

    /// Reaps every exited child: supervisors and orphans reparented to PID 1.
    /// Continues a supervisor that was stopped (see [`Init::resume_stopped`]).
    fn reap(&mut self) {
        let mut reusable_lost = false;
        while let Ok(Some((pid, status))) = sys::waitpid(-1, libc::WNOHANG | libc::WUNTRACED) {
            if libc::WIFSTOPPED(status) {
                self.resume_stopped(pid);
                continue;
            }
            if self.spare.as_ref().is_some_and(|spare| spare.pid == pid) {
                // Killed from inside, or it lost its channel.
                self.spare = None;
                continue;
            }
            // A supervisor without a channel, such as the first command's,
            // exits by design. One with a channel would have waited for the
            // next command, so sandboxed code ended it, and a spare replaces
            // it.
            self.supervisors.retain(|_, supervisor| {
                let exited = supervisor.pid == pid;
                reusable_lost |= exited && supervisor.channel.is_some();
                !exited
            });
            let not_started =
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == supervise::EXIT_NOT_STARTED;
            if self.ending.remove(&pid) && !not_started {
                // The command that ends the sandbox has exited, and its
                // supervisor reported that first, or the supervisor was
                // killed. The kernel kills every other process of the
                // namespace when PID 1 exits.
                sys::exit(0);
            }
        }
        if reusable_lost && self.spare.is_none() {
            self.spare_due = true;
        }
    }

    /// Continues (SIGCONT) the stopped child `pid` if it is a supervisor or
    /// the spare. Sandbox root can stop one. A stopped supervisor never
    /// reports its command's start or exit, so the host would wait for them
    /// forever, even past the command's timeout, whose kill of the tree
    /// also ends in that report. Other stopped children, orphans
    /// reparented to PID 1, stay stopped because they are the sandboxed
    /// code's own processes.
    fn resume_stopped(&self, pid: libc::pid_t) {
        let is_spare = self.spare.as_ref().is_some_and(|spare| spare.pid == pid);
        let is_supervisor = self.supervisors.values().any(|running| running.pid == pid);
        if is_spare || is_supervisor {
            let _ = sys::kill(pid, libc::SIGCONT);
        }
    }

    /// Forks a spare supervisor unless one is waiting. A failed fork leaves
    /// none, and the next command forks its own.
    fn fork_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let Ok((own_end, spare_end)) = sys::seqpacket_pair() else {
            return;
        };
        match sys::fork() {
            Ok(sys::Fork::Child) => {
                drop(own_end);
                supervise::wait_as_spare(spare_end, &self.memory)
            }
            Ok(sys::Fork::Parent(pid)) => {
                self.spare = Some(Spare {
                    pid,
                    channel: own_end,
                });
            }
            Err(_) => {}
        }
    }

    /// Handles one request. A malformed request is dropped: only processes
    /// of the host user can connect, and a bad message is their bug, not a
    /// reason to end the sandbox.
    fn handle(&mut self, peer: Peer, msg: &[u8], fds: Vec<OwnedFd>) {
        match Request::decode(msg) {
            Ok(Request::Spawn(spawn)) => self.spawn(spawn, msg, fds),
            Ok(Request::Signal(signal)) => self.signal(signal),
            Ok(Request::SetTimeout(ms)) => {
                self.deadline = deadline_from(ms);
                // A timeout set while paused counts from the resume.
                if self.paused_remaining.is_some() {
                    self.paused_remaining = Some(self.remaining());
                }
            }
            Ok(Request::Persist) if peer == Peer::Owner => self.persist = true,
            // A `Pause` that waited in the queue while the sandbox was
            // frozen at its deadline: its fresh deadline for the resume
            // stays.
            Ok(Request::Pause) if self.paused_at_deadline => {
                let remaining = self.paused_remaining.flatten();
                self.reply_status(peer, remaining);
            }
            Ok(Request::Pause) => {
                let remaining = self.remaining();
                self.paused_remaining = Some(remaining);
                self.reply_status(peer, remaining);
            }
            Ok(Request::Resume) => {
                self.paused_at_deadline = false;
                if let Some(remaining) = self.paused_remaining.take() {
                    self.deadline = remaining.map(|ms| sys::monotonic_ms().saturating_add(ms));
                }
            }
            Ok(Request::Status) => {
                let remaining = self.remaining();
                self.reply_status(peer, remaining);
            }
            Ok(Request::OpenTcp { port, ipv6 }) => self.open_tcp(peer, port, ipv6),
            Ok(Request::Config(_) | Request::Attached { .. } | Request::Persist) | Err(_) => {}
        }
    }

    /// Starts a connect to `port` on the sandbox's loopback interface and
    /// sends the socket to `peer`, which forwards a host connection to it.
    /// PID 1 does not wait for the connect: the host does.
    fn open_tcp(&mut self, peer: Peer, port: u16, ipv6: bool) {
        let fd = match peer {
            Peer::Owner => sys::borrow_raw(CONTROL_FD),
            Peer::Client(i) => self.clients[i].as_fd(),
        };
        // A peer that does not read its replies loses them.
        match sys::tcp_connect_loopback(port, ipv6) {
            Ok(socket) => {
                if let Ok(msg) = Reply::Socket.encode() {
                    let _ = sys::send_with_fds_nonblocking(fd, &msg, &[socket.as_fd()]);
                }
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                if let Ok(msg) = (Reply::SocketFailed { errno }).encode() {
                    let _ = sys::send_nonblocking(fd, &msg);
                }
            }
        }
    }

    /// Milliseconds left until the deadline, `None` without one.
    fn remaining(&self) -> Option<u64> {
        self.deadline
            .map(|deadline| deadline.saturating_sub(sys::monotonic_ms()))
    }

    fn reply_status(&mut self, peer: Peer, remaining: Option<u64>) {
        let reply = Reply::Status {
            remaining_ms: remaining.unwrap_or(NO_DEADLINE),
        };
        let Ok(msg) = reply.encode() else { return };
        let fd = match peer {
            Peer::Owner => sys::borrow_raw(CONTROL_FD),
            Peer::Client(i) => self.clients[i].as_fd(),
        };
        // A peer that does not read its replies loses them.
        let _ = sys::send_nonblocking(fd, &msg);
    }

    /// Starts a command: hands the request `msg` to the spare supervisor if
    /// one is waiting, or forks a supervisor for it.
    fn spawn(&mut self, spawn: Spawn, msg: &[u8], fds: Vec<OwnedFd>) {
        let Ok([stdin, stdout, stderr, status]) = <[OwnedFd; 4]>::try_from(fds) else {
            return;
        };
        self.commands_started += 1;
        let command_id = spawn.command_id;
        let ends_sandbox = spawn.ends_sandbox;
        let supervisor = match self.hand_to_spare(msg, [&stdin, &stdout, &stderr, &status]) {
            Some((pid, channel)) => Supervisor { pid, channel },
            None => {
                let fds = supervise::SpawnFds {
                    stdin,
                    stdout,
                    stderr,
                    status,
                };
                let command = supervise::Command::new(spawn, fds);
                // A command that ends the sandbox leaves no supervisor to
                // keep, and a failed socketpair only costs the next command
                // a fork.
                let channel = (self.commands_started >= COMMANDS_BEFORE_SPARE && !ends_sandbox)
                    .then(sys::seqpacket_pair)
                    .and_then(Result::ok);
                let (own_end, supervisor_end) = match channel {
                    Some((own_end, supervisor_end)) => (Some(own_end), Some(supervisor_end)),
                    None => (None, None),
                };
                match sys::fork() {
                    Ok(sys::Fork::Child) => {
                        drop(own_end);
                        if let Err(e) = supervise::limit_memory(&self.memory) {
                            let errno = e.raw_os_error().unwrap_or(libc::EIO);
                            command.report_memory_cgroup_failure(errno);
                            sys::exit(supervise::EXIT_NOT_STARTED);
                        }
                        let channel = match supervisor_end {
                            Some(fd) => supervise::Channel::Forked(fd),
                            None => supervise::Channel::None,
                        };
                        supervise::supervise(command, channel)
                    }
                    Ok(sys::Fork::Parent(pid)) => Supervisor {
                        pid,
                        channel: own_end,
                    },
                    Err(e) => {
                        command.report_fork_failure(e.raw_os_error().unwrap_or(libc::EAGAIN));
                        return;
                    }
                }
            }
        };
        if ends_sandbox {
            self.ending.insert(supervisor.pid);
        }
        self.supervisors.insert(command_id, supervisor);
    }

    /// Handles an event on the channel of `command_id`'s supervisor. On its
    /// idle report the command is over: its id no longer reaches the
    /// supervisor, which becomes the spare, or is killed when a spare
    /// already waits, so that a sandbox keeps one at most. A channel that
    /// closed belongs to a supervisor that exited, which [`Init::reap`]
    /// drops.
    fn take_idle(&mut self, command_id: u64) {
        let Some(supervisor) = self.supervisors.get_mut(&command_id) else {
            return;
        };
        let Some(channel) = &supervisor.channel else {
            return;
        };
        let mut report = [0u8; 8];
        match sys::recv_nonblocking(channel.as_fd(), &mut report) {
            Ok(len) if &report[..len] == supervise::IDLE => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            // Closed, or not a report a supervisor sends.
            _ => {
                supervisor.channel = None;
                return;
            }
        }
        let Some(Supervisor {
            pid,
            channel: Some(channel),
        }) = self.supervisors.remove(&command_id)
        else {
            return;
        };
        if self.spare.is_none() && !self.ending.contains(&pid) {
            self.spare = Some(Spare { pid, channel });
        } else {
            // Still a child of PID 1, not yet reaped, so the pid is its.
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }

    /// Forwards a spawn request to the spare supervisor and returns the
    /// spare's pid and the channel it reports on once idle, or `None` when
    /// there is no usable spare or the request did not fit its socket. The caller's
    /// descriptors close when it drops them.
    fn hand_to_spare(
        &mut self,
        msg: &[u8],
        fds: [&OwnedFd; 4],
    ) -> Option<(libc::pid_t, Option<OwnedFd>)> {
        if !self.spare_can_start() {
            return None;
        }
        let spare = self.spare.as_ref()?;
        let fds = fds.map(AsFd::as_fd);
        // A warm pool's spare is forked before the first command: it exits
        // after that one, as the first command's supervisor does anywhere.
        let once = self.commands_started < COMMANDS_BEFORE_SPARE;
        let mut sent = Ok(());
        if once {
            sent = sys::send_nonblocking(spare.channel.as_fd(), supervise::ONCE);
        }
        let sent =
            sent.and_then(|()| sys::send_with_fds_nonblocking(spare.channel.as_fd(), msg, &fds));
        match sent {
            Ok(()) => self
                .spare
                .take()
                .map(|spare| (spare.pid, (!once).then_some(spare.channel))),
            // Larger than the socket takes, or no room in its queue: this
            // command gets a supervisor of its own, and the spare waits for
            // the next one.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMSGSIZE | libc::EAGAIN | libc::ENOBUFS)
                ) =>
            {
                None
            }
            Err(_) => {
                // The spare died, or its socket broke: it is killed, so
                // that none waits on a channel PID 1 no longer uses, and
                // reaped as usual.
                if let Some(spare) = self.spare.take() {
                    let _ = sys::kill(spare.pid, libc::SIGKILL);
                }
                None
            }
        }
    }

    /// Returns whether a spare is waiting and can start a command now.
    ///
    /// Sandbox root can signal the spare from a process that an earlier
    /// command left running. A spare it stopped (SIGSTOP) whose stop
    /// [`Init::reap`] has not seen yet is continued here, so it can take
    /// the command. A stop that lands later is seen and continued by the
    /// next [`Init::reap`]. A spare that exited is reaped and dropped.
    fn spare_can_start(&mut self) -> bool {
        let Some(pid) = self.spare.as_ref().map(|spare| spare.pid) else {
            return false;
        };
        match sys::waitpid(pid, libc::WNOHANG | libc::WUNTRACED) {
            Ok(None) => true,
            Ok(Some((_, status))) if libc::WIFSTOPPED(status) => {
                self.resume_stopped(pid);
                true
            }
            Ok(Some(_)) => {
                self.spare = None;
                false
            }
            Err(_) => {
                // Not a child of PID 1 any more, so its pid may belong to
                // another process: it is not signalled. Dropping the
                // channel ends a spare that still waits.
                self.spare = None;
                false
            }
        }
    }

    fn signal(&mut self, signal: Signal) {
        let Some(supervisor) = self.supervisors.get(&signal.command_id).map(|s| s.pid) else {
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

/// Returns the peers whose entries in `fds` (the owner's, then one per
/// client) reported any of the `events` bits.
fn ready_peers(fds: &[libc::pollfd], events: libc::c_short) -> Vec<Peer> {
    fds.iter()
        .enumerate()
        .filter(|(_, fd)| fd.revents & events != 0)
        .map(|(i, _)| {
            if i == 0 {
                Peer::Owner
            } else {
                Peer::Client(i - 1)
            }
        })
        .collect()
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
