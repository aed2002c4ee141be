//! The zygote: one long-lived soulbox-init process per host process that
//! forks each sandbox's PID 1 on request. A create then skips the exec of
//! this program and glibc's start-up, which take most of a millisecond on
//! hosts where CPUID traps to the hypervisor.
//!
//! The host starts the zygote from the same sealed memfd as PID 1, with
//! `--zygote` as its first argument and its end of a `SOCK_SEQPACKET`
//! channel at fd 3. For each [`ForkRequest`] the zygote clones with
//! CLONE_PARENT, so the new PID 1 is the host's child and the host reaps it
//! and waits on its pidfd as if it had cloned it itself. The child moves
//! the control socket to fd 3 (over the channel) and continues where an
//! exec'd PID 1 starts, in [`crate::run`], which closes every other
//! descriptor and resets the signal state, session and stdio.
//!
//! The zygote also makes each sandbox's network namespace ahead of time.
//! Creating one is most of the cost of the clone (0.3 ms of its 0.45 ms on
//! a 2-core VM), so between requests the zygote moves itself into a fresh
//! namespace with its loopback interface up, and the next PID 1 is cloned
//! without CLONE_NEWNET into that namespace, which nothing has used. Right
//! after its reply the zygote makes the next one, while the host waits for
//! PID 1 to build the sandbox, unless the request was a warm pool's refill,
//! which must not compete with sandboxes in use. A namespace is never given
//! to two sandboxes: the zygote leaves each one at the fork that hands it
//! over.
//!
//! In the same way the zygote builds each sandbox's root ahead: the
//! overlay, the host binds, /dev and /tmp, in a mount namespace of its own
//! whose root it then switches to, as PID 1 would. A request carries the
//! plan of its root ([`RootPlan`]) when a root may be built ahead. When the
//! zygote has a namespace built for an equal plan, PID 1 is cloned without
//! CLONE_NEWNS and enters that namespace. Only /proc and the files that
//! name the sandbox are then left to do. Right after its reply the
//! zygote builds the next one for the same plan, again unless the request
//! was a refill. A namespace is handed to one PID 1 only: the zygote keeps
//! no reference to it after the fork. A root binds the host's paths as they
//! were mounted at its build. So the zygote watches the mount table of its
//! own namespace, the host's, and drops the root when a mount at, above or
//! below one of the root's sources changes there. Otherwise the root would
//! miss a file system mounted under `/usr` since, and keep one unmounted
//! since in use. Only roots made of SoulBox's own
//! layers are built ahead (the `host` template's and unpacked images'),
//! because nothing changes those in place. A directory template may change
//! between two creates, and its root must show it as it is at the create.
//!
//! Every PID 1 forked from one zygote shares the zygote's address-space
//! layout, stack canary and pointer guard instead of getting fresh ones
//! from an exec. Sandboxed code cannot read them: PID 1 runs no sandboxed
//! code, turns non-dumpable before it builds the sandbox, and takes
//! requests only from the host's sockets, which are not reachable inside.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use soulbox_proto::zygote::{ForkReply, ForkRequest, MAX_REQUEST_LEN, REQUEST_MAX_FDS};
use soulbox_proto::RootPlan;

use crate::{sys, CONTROL_FD, EXIT_FAILURE};

/// First argument that starts the zygote instead of PID 1.
pub const ZYGOTE_ARG: &std::ffi::CStr = c"--zygote";

/// The channel to the host, inherited at the same fd as PID 1's control
/// socket, which replaces it in each child.
const CHANNEL_FD: i32 = CONTROL_FD;

/// Serves fork requests until the host closes the channel or exits.
pub fn serve() -> ! {
    let _ = sys::set_name(c"soulbox-zygote");
    // The host starts the zygote from a thread that lives exactly as long
    // as the zygote, so this fires only when the host process dies. The
    // end of file on the channel covers a host that died before this call.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    // Out of the host's process group, so that a terminal's Ctrl-C aimed
    // at the host does not kill the zygote before the host.
    let _ = sys::setsid();
    sys::reset_signals();
    let _ = sys::close_range_from(CHANNEL_FD as u32 + 1, false);
    let _ = sys::redirect_stdio_to_null();

    let tid_address = sys::tid_address().ok();
    // The zygote's children share its user namespace: it never clones
    // with CLONE_NEWUSER (see `fork`).
    let facts = crate::setup::KernelFacts::read();
    // Each PID 1 drops the zygote's `--zygote` argument from its
    // /proc/PID/cmdline, which sandboxed code may read, so that it shows
    // "soulbox-init" exactly as an executed PID 1 does.
    let memory_map = sys::memory_map_with_first_argument().ok();
    let mut network = SpareNetwork::open();
    network.prepare();
    let mut roots = SpareRoot::open();
    // One byte more than the longest request, so that a longer message is
    // rejected rather than truncated to a valid one. Only the pages a
    // request fills are ever touched.
    let mut buf = vec![0u8; MAX_REQUEST_LEN + 1];
    loop {
        roots.wait_for_request();
        let (len, fds) = match sys::recv_with_fds(channel(), &mut buf, REQUEST_MAX_FDS) {
            Ok(Some(received)) => received,
            // End of file: the host closed the channel or exited. Any other
            // error breaks the protocol, and the host starts a new zygote.
            Ok(None) => sys::exit(0),
            Err(_) => sys::exit(EXIT_FAILURE),
        };
        let mut background = false;
        let mut plan = None;
        let sent = match ForkRequest::decode(&buf[..len]) {
            Ok(request) => {
                background = request.background;
                let spares = Spares {
                    network: &mut network,
                    roots: &mut roots,
                };
                let sent = fork(&request, fds, tid_address, memory_map, facts, spares);
                plan = request.root;
                sent
            }
            Err(_) => reply(ForkReply::Failed {
                errno: libc::EPROTO,
            }),
        };
        if sent.is_err() {
            sys::exit(EXIT_FAILURE);
        }
        // Not after a warm pool's refill: the zygote is back at the normal
        // priority by now, and would take the CPU from the sandboxes
        // already handed over. It leaves the namespace it handed over, and
        // the next clone makes its own, at the priority of its request.
        if background {
            network.leave_used();
        } else {
            network.prepare();
            // Not while another request waits: creates at once then build
            // their roots in parallel, each in its PID 1, instead of in
            // turn in the zygote.
            if let Some(plan) = plan.filter(|_| !request_waiting()) {
                roots.prepare(plan, facts);
            }
        }
    }
}

/// The namespaces the zygote makes ahead for the next PID 1.
struct Spares<'a> {
    network: &'a mut SpareNetwork,
    roots: &'a mut SpareRoot,
}

/// How long the zygote builds no root for a plan whose build failed. A
/// build may fail for a moment only, as when the scratch directory is
/// being made again, so it is tried again after this.
const RETRY_FAILED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The root the zygote has built for the next PID 1 whose request has an
/// equal plan.
struct SpareRoot {
    /// The mount namespace the zygote started in. `None` when it could not
    /// be opened, and every PID 1 then builds its own root.
    home: Option<HomeMounts>,
    /// The host's mount table as read after the last change that the
    /// watch reported, or `None` when it could not be read.
    table: Option<Rc<Vec<u8>>>,
    /// The root built last.
    built: Option<BuiltRoot>,
    /// The plan whose build failed last, and when. It is tried again only
    /// after [`RETRY_FAILED_AFTER`]: until then PID 1 builds its own root,
    /// and reports the failure if it meets the same one.
    failed: Option<(RootPlan, std::time::Instant)>,
}

/// The mount namespace the zygote started in, which it returns to after
/// each build, and that namespace's mount table.
struct HomeMounts {
    namespace: OwnedFd,
    /// /proc/self/mountinfo, opened in that namespace. poll reports
    /// POLLPRI on it once after any mount, unmount or move there, however
    /// deep, until the next poll.
    table: OwnedFd,
}

impl SpareRoot {
    fn open() -> Self {
        let home = match (
            sys::open_read_only(c"/proc/self/ns/mnt"),
            sys::open_read_only(c"/proc/self/mountinfo"),
        ) {
            (Ok(namespace), Ok(table)) => Some(HomeMounts { namespace, table }),
            _ => None,
        };
        Self {
            home,
            table: None,
            built: None,
            failed: None,
        }
    }

    /// Reads the host's mount table again after a change, and drops the
    /// built root if a mount that its plan depends on changed.
    fn reread_mounts(&mut self) {
        self.table = self.home.as_ref().and_then(|home| read_table(&home.table));
        let keep = match (&self.built, &self.table) {
            (Some(built), Some(table)) => {
                relevant_mounts(&built.table, &built.plan) == relevant_mounts(table, &built.plan)
            }
            _ => false,
        };
        match (&mut self.built, &self.table) {
            (Some(built), Some(table)) if keep => built.table = Rc::clone(table),
            _ => self.built = None,
        }
    }

    /// Handles a change to the host's mounts since the last poll, if any.
    fn check_host_mounts(&mut self) {
        if self.host_mounts_changed() {
            self.reread_mounts();
        }
    }

    /// Returns whether a mount in the zygote's own namespace changed since
    /// the last call. An error counts as a change.
    fn host_mounts_changed(&self) -> bool {
        let Some(home) = &self.home else {
            return true;
        };
        let mut fds = [libc::pollfd {
            fd: home.table.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        }];
        match sys::poll(&mut fds, 0) {
            Ok(_) => fds[0].revents != 0,
            Err(_) => true,
        }
    }

    /// Waits for the next request on the channel. While the zygote keeps a
    /// built root, it also watches the host's mount table. A change that
    /// concerns the root drops it at once, so that a file system the host
    /// unmounts is not kept busy until the next create.
    fn wait_for_request(&mut self) {
        while let (Some(_), Some(home)) = (&self.built, &self.home) {
            let mut fds = [
                libc::pollfd {
                    fd: CHANNEL_FD,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: home.table.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                },
            ];
            let polled = sys::poll(&mut fds, -1);
            // Checked also when a request came in the same poll, because
            // this poll reset the watch and `take` would not see it again.
            if fds[1].revents != 0 {
                self.reread_mounts();
            }
            // An error here leaves the receive to report it.
            if polled.is_err() || fds[0].revents != 0 {
                return;
            }
        }
    }

    /// Takes the root built for `plan`, if the zygote has one whose layers
    /// and bind sources are still the files it was built from, and no
    /// mount that it depends on has changed since its build. A removed layer
    /// cache, for one, is unpacked again into the same paths, and a root
    /// built before would show the deleted layers. Such a root is dropped,
    /// and PID 1 builds its own.
    fn take(&mut self, plan: &RootPlan) -> Option<(RootPlan, OwnedFd)> {
        self.check_host_mounts();
        let built = self.built.take_if(|built| built.plan == *plan)?;
        (source_ids(plan).as_ref() == Some(&built.sources)).then_some((built.plan, built.namespace))
    }

    /// Builds a root for `plan` in a new mount namespace, unless the zygote
    /// has one for it already. A root built for another plan is dropped.
    fn prepare(&mut self, plan: RootPlan, facts: crate::setup::KernelFacts) {
        // Also the start of the watch for the build below: a change from
        // here on is compared with the table read here.
        self.check_host_mounts();
        if self.table.is_none() {
            self.reread_mounts();
        }
        let (Some(home), Some(table)) = (&self.home, &self.table) else {
            return;
        };
        let table = Rc::clone(table);
        let ready = self.built.as_ref().is_some_and(|built| built.plan == plan);
        let failed_lately = self
            .failed
            .as_ref()
            .is_some_and(|(failed, at)| *failed == plan && at.elapsed() < RETRY_FAILED_AFTER);
        if ready || failed_lately {
            return;
        }
        self.built = None;

        // Read before the build, so that a source replaced during it
        // differs at the hand-over.
        let Some(sources) = source_ids(&plan) else {
            return;
        };
        // The return below sets the zygote's root and working directory to
        // the namespace's root, which a host in a chroot does not have.
        let (Ok(root_dir), Ok(work_dir)) =
            (sys::open_path(None, c"/", 0), sys::open_path(None, c".", 0))
        else {
            return;
        };
        if sys::unshare(libc::CLONE_NEWNS).is_err() {
            return;
        }

        // Opened before the switch to the new root, which has no /proc.
        let namespace = sys::open_read_only(c"/proc/self/ns/mnt");
        // The zygote keeps the host process's umask, which PID 1 replaces
        // with this one before it builds. The tree must not depend on it.
        let umask = sys::umask(0o022);
        let built = crate::setup::build_root_ahead(&plan, facts);
        sys::umask(umask);
        let entered = match (&built, &namespace) {
            (Ok(()), Ok(namespace)) => enters_built_root(namespace),
            _ => false,
        };
        // Back to the namespace the zygote started in, and to its root and
        // working directory. A zygote that cannot return exits, so that no
        // PID 1 is forked from this tree, and the host starts a new one.
        if sys::setns(home.namespace.as_fd(), libc::CLONE_NEWNS).is_err()
            || return_to(&root_dir, &work_dir).is_err()
        {
            sys::exit(EXIT_FAILURE);
        }
        drop((root_dir, work_dir));
        // Moved to the lowest free descriptor, which the two just closed
        // had taken, so that the descriptors the zygote keeps between
        // requests do not depend on them.
        let namespace = namespace.and_then(|namespace| namespace.try_clone());
        match (built, namespace) {
            (Ok(()), Ok(namespace)) if entered => {
                self.built = Some(BuiltRoot {
                    plan,
                    sources,
                    namespace,
                    table,
                })
            }
            _ => self.failed = Some((plan, std::time::Instant::now())),
        }
    }
}

/// Returns whether a process that enters `namespace`, as PID 1 does, gets
/// the root that the zygote has just built and switched to there. setns
/// gives it the top mount on the namespace's root, which is the built
/// root only if the zygote's root was the namespace's. Under a host
/// process's chroot it is the host's own root file system instead.
fn enters_built_root(namespace: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root_id = || {
        let metadata = std::fs::metadata("/").ok()?;
        Some((metadata.dev(), metadata.ino()))
    };
    let built = root_id();
    built.is_some()
        && sys::setns(namespace.as_fd(), libc::CLONE_NEWNS).is_ok()
        && root_id() == built
}

/// Makes `root_dir` the root directory and `work_dir` the working
/// directory again.
fn return_to(root_dir: &OwnedFd, work_dir: &OwnedFd) -> std::io::Result<()> {
    sys::fchdir(root_dir.as_fd())?;
    sys::chroot(c".")?;
    sys::fchdir(work_dir.as_fd())
}

/// A root that the zygote built ahead, in a mount namespace of its own.
struct BuiltRoot {
    plan: RootPlan,
    /// Device and inode numbers of the plan's layers and bind sources,
    /// read by [`source_ids`] before the build.
    sources: Vec<(u64, u64)>,
    namespace: OwnedFd,
    /// The host's mount table read before the build.
    table: Rc<Vec<u8>>,
}

/// Reads the whole mount table from `table`, /proc/self/mountinfo.
fn read_table(table: &OwnedFd) -> Option<Rc<Vec<u8>>> {
    let mut contents = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match sys::pread(table.as_fd(), &mut chunk, contents.len()) {
            Ok(0) => return Some(Rc::new(contents)),
            Ok(read) => contents.extend_from_slice(&chunk[..read]),
            Err(_) => return None,
        }
    }
}

/// Returns the lines of the mount table `table` whose mount point is at,
/// above or below one of `plan`'s layers, bind sources or scratch
/// directory: the mounts that a root built for `plan` depends on.
fn relevant_mounts<'a>(table: &'a [u8], plan: &RootPlan) -> Vec<&'a [u8]> {
    let sources: Vec<&[u8]> = plan
        .lower_dirs
        .iter()
        .chain(plan.binds.iter().map(|bind| &bind.source))
        .chain(std::iter::once(&plan.scratch_dir))
        .map(Vec::as_slice)
        .collect();
    table
        .split(|&byte| byte == b'\n')
        .filter(|line| {
            // The fifth field is the mount point, with octal escapes.
            let Some(point) = line.split(|&byte| byte == b' ').nth(4) else {
                return false;
            };
            let point = unescape_octal(point);
            sources
                .iter()
                .any(|source| is_within(source, &point) || is_within(&point, source))
        })
        .collect()
}

/// Returns whether `path` is `dir` or lies below it.
fn is_within(path: &[u8], dir: &[u8]) -> bool {
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// Decodes the `\ooo` escapes with which the kernel writes spaces, tabs,
/// newlines and backslashes in a mount table's paths.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&byte, tail)) = rest.split_first() {
        let digits = tail
            .get(..3)
            .filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match digits {
            Some(digits) if byte == b'\\' => {
                let value = digits
                    .iter()
                    .fold(0u32, |value, d| value * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                rest = &tail[3..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    out
}

/// Returns the device and inode numbers of `plan`'s lower directories and
/// bind sources, in that order, or `None` if one of them is missing.
fn source_ids(plan: &RootPlan) -> Option<Vec<(u64, u64)>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let sources = plan.binds.iter().map(|bind| &bind.source);
    plan.lower_dirs
        .iter()
        .chain(sources)
        .map(|path| {
            let metadata = std::fs::metadata(std::ffi::OsStr::from_bytes(path)).ok()?;
            Some((metadata.dev(), metadata.ino()))
        })
        .collect()
}

/// The network namespace the zygote holds for the next PID 1.
struct SpareNetwork {
    /// The namespace the zygote started in, which it returns to whenever
    /// it has no unused one. `None` when it could not be opened, and every
    /// clone then makes its own namespace.
    home: Option<OwnedFd>,
    /// Whether the zygote is in a namespace that no sandbox has used.
    ready: bool,
}

impl SpareNetwork {
    fn open() -> Self {
        Self {
            home: sys::open_read_only(c"/proc/self/ns/net").ok(),
            ready: false,
        }
    }

    /// Moves the zygote into a fresh namespace unless it is in one.
    fn prepare(&mut self) {
        if self.ready || self.home.is_none() {
            return;
        }
        if sys::unshare(libc::CLONE_NEWNET).is_err() {
            // Out of namespaces, for example: the zygote may still be in
            // the namespace it just handed over, and must not stay there.
            self.go_home();
            return;
        }
        // PID 1 brings the interface up itself if this fails.
        let _ = sys::loopback_up();
        self.ready = true;
    }

    /// Returns the clone flags for `requested`: without CLONE_NEWNET when
    /// the zygote is in an unused namespace, which the child then takes.
    fn clone_flags(&mut self, requested: u64) -> u64 {
        let newnet = libc::CLONE_NEWNET as u64;
        if requested & newnet == 0 {
            // A child that shares the host's network must not get the
            // spare one.
            self.go_home();
            return requested;
        }
        if self.ready {
            requested & !newnet
        } else {
            requested
        }
    }

    /// Records that a child took the spare namespace (or the zygote's own,
    /// which it must not hand out again).
    fn handed_over(&mut self) {
        self.ready = false;
    }

    /// Returns to the namespace the zygote started in unless it is in an
    /// unused one.
    fn leave_used(&mut self) {
        if !self.ready {
            self.go_home();
        }
    }

    /// Returns to the namespace the zygote started in. A zygote that cannot
    /// exits rather than hand a used namespace to the next sandbox, and the
    /// host starts a new one.
    fn go_home(&mut self) {
        self.ready = false;
        if let Some(home) = &self.home {
            if sys::setns(home.as_fd(), libc::CLONE_NEWNET).is_err() {
                sys::exit(EXIT_FAILURE);
            }
        }
    }
}

/// Forks one PID 1 and replies with its pid and pidfd. The zygote's copies
/// of the descriptors it received close when this returns.
fn fork(
    request: &ForkRequest,
    fds: Vec<OwnedFd>,
    tid_address: Option<u64>,
    memory_map: Option<sys::MemoryMap>,
    facts: crate::setup::KernelFacts,
    spares: Spares<'_>,
) -> std::io::Result<()> {
    let Spares { network, roots } = spares;
    if request.namespaces & libc::CLONE_NEWUSER as u64 != 0 {
        // The host executes rootless PID 1s; a forked one would not be
        // able to rely on `facts`.
        return reply(ForkReply::Failed {
            errno: libc::EINVAL,
        });
    }
    let mut fds = fds.into_iter();
    let (Some(control), cgroup) = (fds.next(), fds.next()) else {
        return reply(ForkReply::Failed {
            errno: libc::EPROTO,
        });
    };

    let newns = libc::CLONE_NEWNS as u64;
    let root = match &request.root {
        Some(plan) if request.namespaces & newns != 0 => roots.take(plan),
        _ => None,
    };
    // A child that takes a built root enters its namespace instead of
    // copying the zygote's.
    let namespaces = match root {
        Some(_) => request.namespaces & !newns,
        None => request.namespaces,
    };
    let flags = libc::CLONE_PARENT as u64 | network.clone_flags(namespaces);
    let cgroup_fd = cgroup.as_ref().map(AsFd::as_fd);
    let mut in_cgroup = cgroup_fd.is_some();
    // A background fork (a warm pool's refill) clones at idle priority,
    // which the child keeps until its build is done; see `crate::run`.
    if request.background {
        let _ = sys::set_scheduler(libc::SCHED_IDLE);
    }
    let mut forked = sys::clone3_fork(flags, cgroup_fd, tid_address);
    if forked.is_err() && in_cgroup {
        // As on the host's own path: where CLONE_INTO_CGROUP fails, the
        // host moves PID 1 into its cgroup afterwards.
        in_cgroup = false;
        forked = sys::clone3_fork(flags, None, tid_address);
    }

    if !matches!(forked, Ok(sys::Forked::Child)) && request.background {
        // The zygote runs as root, so it may return to the normal policy.
        // If it cannot, it must not fork foreground sandboxes at idle
        // priority: it exits, and the host starts a new one.
        if sys::set_scheduler(libc::SCHED_OTHER).is_err() {
            sys::exit(EXIT_FAILURE);
        }
    }

    match forked {
        Ok(sys::Forked::Child) => become_pid1(control, memory_map, facts, root),
        Ok(sys::Forked::Parent { pid, pidfd }) => {
            network.handed_over();
            // Closed before the reply, so that the host never finds the
            // new sandbox's control socket or cgroup open in the zygote.
            drop((control, cgroup, fds));
            let started = ForkReply::Started { pid, in_cgroup }.encode();
            sys::send_with_fd(channel(), &started, pidfd.as_fd())
        }
        Err(e) => reply(ForkReply::Failed {
            errno: e.raw_os_error().unwrap_or(libc::EINVAL),
        }),
    }
}

/// Continues in a new child as PID 1 with `control` as fd 3, in the mount
/// namespace of `root` when given.
fn become_pid1(
    control: OwnedFd,
    memory_map: Option<sys::MemoryMap>,
    facts: crate::setup::KernelFacts,
    root: Option<(RootPlan, OwnedFd)>,
) -> ! {
    let prebuilt = match root {
        Some((plan, namespace)) => {
            if sys::setns(namespace.as_fd(), libc::CLONE_NEWNS).is_ok() {
                Some(plan)
            } else if sys::unshare(libc::CLONE_NEWNS).is_ok() {
                // The child was cloned without a mount namespace of its
                // own. Now it has one, and builds its root itself.
                None
            } else {
                sys::exit(EXIT_FAILURE)
            }
        }
        None => None,
    };
    if let Some(map) = &memory_map {
        // Failing here (a kernel without CONFIG_CHECKPOINT_RESTORE) leaves
        // "--zygote" in /proc/PID/cmdline, and nothing else differs.
        let _ = sys::set_memory_map(map);
    }
    // dup2 closes the child's copy of the channel at fd 3; `run` closes
    // every descriptor above it, the received ones included.
    let control = control.into_raw_fd();
    if sys::dup2(sys::borrow_raw(control), CONTROL_FD).is_err() {
        sys::exit(EXIT_FAILURE);
    }
    crate::run(crate::Start::Zygote { facts, prebuilt })
}

/// Returns whether the next request has arrived already.
fn request_waiting() -> bool {
    let mut fds = [libc::pollfd {
        fd: CHANNEL_FD,
        events: libc::POLLIN,
        revents: 0,
    }];
    sys::poll(&mut fds, 0).is_ok_and(|ready| ready > 0)
}

fn channel() -> std::os::fd::BorrowedFd<'static> {
    sys::borrow_raw(CHANNEL_FD)
}

fn reply(reply: ForkReply) -> std::io::Result<()> {
    sys::send(channel(), &reply.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use soulbox_proto::BindMount;

    fn plan() -> RootPlan {
        RootPlan {
            lower_dirs: vec![b"/run/soulbox/templates/host".to_vec()],
            binds: vec![BindMount {
                source: b"/usr".to_vec(),
                target: b"/usr".to_vec(),
            }],
            scratch_dir: b"/run/soulbox/scratch".to_vec(),
            scratch_size: 1 << 30,
            scratch_inodes: 1 << 20,
            tmp_size: 1 << 30,
        }
    }

    fn line(id: u32, point: &str) -> String {
        format!("{id} 1 0:{id} / {point} rw,relatime - tmpfs tmpfs rw\n")
    }

    #[test]
    fn mounts_at_above_and_below_sources_are_relevant() {
        let points = [
            "/",
            "/usr",
            "/usr/local",
            "/run",
            "/mnt",
            "/usrx",
            "/home/user",
        ];
        let table: String = (1..)
            .zip(points)
            .map(|(id, point)| line(id, point))
            .collect();
        let relevant: Vec<String> = relevant_mounts(table.as_bytes(), &plan())
            .iter()
            .map(|line| {
                String::from_utf8_lossy(line)
                    .split(' ')
                    .nth(4)
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(relevant, ["/", "/usr", "/usr/local", "/run"]);
    }

    #[test]
    fn mount_point_escapes_decoded() {
        assert_eq!(unescape_octal(br"/usr/my\040dir"), b"/usr/my dir");
        assert_eq!(unescape_octal(br"/a\134b\011c\012d"), b"/a\\b\tc\nd");
        assert_eq!(unescape_octal(br"/no\escape\08"), br"/no\escape\08");
    }
}
