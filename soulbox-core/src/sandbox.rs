//! Creating, tracking and ending a sandbox.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use soulbox_proto::{BindMount, Config, Reply, Request, SetupStage};
use tokio::io::unix::AsyncFd;
use tracing::debug;

use crate::cgroup::{self, Limits, SandboxCgroup};
use crate::error::{Error, Result};
use crate::seccomp::SeccompPolicy;
use crate::{id, init_binary, paths, sys, template};

/// Default sandbox lifetime, as in E2B.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default size limit of the writable layer (the root overlay's upper dir).
pub const DEFAULT_DISK_SIZE: u64 = 4 << 30;
/// Default size limit of the sandbox's /tmp.
pub const DEFAULT_TMP_SIZE: u64 = 1 << 30;
/// How long PID 1 may take to build the sandbox before create gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to build a sandbox. Start from [`SandboxOptions::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SandboxOptions {
    /// Template name. Only `host` exists so far.
    pub template: String,
    /// The sandbox ends this long after creation, enforced by its PID 1
    /// even if the host process dies. Zero means no limit.
    pub timeout: Duration,
    /// Environment variables for every command, below each command's own.
    pub envs: BTreeMap<String, String>,
    /// Size limit of the writable layer, in bytes.
    pub disk_size: u64,
    /// Size limit of /tmp, in bytes.
    pub tmp_size: u64,
    /// Maximum number of files and directories in the writable layer.
    pub disk_inodes: u64,
    /// Memory limit in bytes, swap closed; `None` for no limit. The
    /// writable layer and /tmp are in memory (tmpfs), and what sandboxed
    /// code writes there counts towards this limit too.
    pub memory_limit: Option<u64>,
    /// Maximum number of processes and threads; `None` for no limit.
    pub pids_limit: Option<u64>,
    /// CPU limit in cores (0.5 is half a core); `None` for no limit.
    pub cpu_limit: Option<f64>,
    /// Maximum open files per process (RLIMIT_NOFILE).
    pub open_files_limit: u64,
    /// Maximum size of a file a process may write, in bytes
    /// (RLIMIT_FSIZE); `None` for no limit.
    pub file_size_limit: Option<u64>,
    /// The system calls sandboxed code may make; see [`SeccompPolicy`].
    pub seccomp: SeccompPolicy,
}

/// Default memory limit: 2 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 2 << 30;
/// Default limit on processes and threads.
pub const DEFAULT_PIDS_LIMIT: u64 = 1024;
/// Default inode limit of the writable layer.
pub const DEFAULT_DISK_INODES: u64 = 256 * 1024;
/// Default open-files limit per process.
pub const DEFAULT_OPEN_FILES_LIMIT: u64 = 4096;

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            template: template::HOST.to_string(),
            timeout: DEFAULT_TIMEOUT,
            envs: BTreeMap::new(),
            disk_size: DEFAULT_DISK_SIZE,
            tmp_size: DEFAULT_TMP_SIZE,
            disk_inodes: DEFAULT_DISK_INODES,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT),
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            cpu_limit: None,
            open_files_limit: DEFAULT_OPEN_FILES_LIMIT,
            file_size_limit: None,
            seccomp: SeccompPolicy::default(),
        }
    }
}

impl SandboxOptions {
    /// Sets the sandbox lifetime.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a sandbox-wide environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Sets the seccomp policy, replacing the default one.
    pub fn seccomp(mut self, policy: SeccompPolicy) -> Self {
        self.seccomp = policy;
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            memory: self.memory_limit,
            pids: self.pids_limit,
            cpu_millicores: self.cpu_limit.map(|cores| (cores * 1000.0).round() as u64),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.template != template::HOST {
            return Err(Error::InvalidArgument(format!(
                "unknown template {:?}; only \"host\" is available",
                self.template
            )));
        }
        for (key, value) in &self.envs {
            crate::command::validate_env(key, value)?;
        }
        if let Some(memory) = self.memory_limit {
            if memory < 16 << 20 {
                return Err(Error::InvalidArgument(format!(
                    "memory_limit of {memory} bytes is below the 16 MiB minimum"
                )));
            }
        }
        if self.pids_limit.is_some_and(|pids| pids < 8) {
            return Err(Error::InvalidArgument(format!(
                "pids_limit of {} is below the minimum of 8 (PID 1, a supervisor and a shell \
                 need some)",
                self.pids_limit.unwrap_or_default()
            )));
        }
        if let Some(cpu) = self.cpu_limit {
            if !(0.01..=1024.0).contains(&cpu) {
                return Err(Error::InvalidArgument(format!(
                    "cpu_limit of {cpu} cores is outside 0.01 to 1024"
                )));
            }
        }
        if self.disk_inodes < 1024 {
            return Err(Error::InvalidArgument(format!(
                "disk_inodes of {} is below the minimum of 1024",
                self.disk_inodes
            )));
        }
        if !(64..=1 << 20).contains(&self.open_files_limit) {
            return Err(Error::InvalidArgument(format!(
                "open_files_limit of {} is outside 64 to 1048576",
                self.open_files_limit
            )));
        }
        const MIN_SIZE: u64 = 1 << 20;
        for (name, size) in [("disk_size", self.disk_size), ("tmp_size", self.tmp_size)] {
            if size < MIN_SIZE {
                return Err(Error::InvalidArgument(format!(
                    "{name} of {size} bytes is below the 1 MiB minimum"
                )));
            }
        }
        self.seccomp.validate()
    }
}

/// A running sandbox.
///
/// Dropping the last `Sandbox` handle kills the sandbox: every process in
/// it is killed, its mounts disappear with its mount namespace, and its
/// cgroups are removed before `drop` returns. [`Sandbox::kill`] does the
/// same explicitly. Clones of a `Sandbox` share one sandbox. Other handles
/// taken from it ([`crate::Files`], [`crate::Commands`],
/// [`crate::CommandHandle`]) do not keep it alive: once the last `Sandbox`
/// is gone, their calls fail with [`Error::SandboxNotRunning`].
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
    /// Shared by the clones of this `Sandbox` only; the last one to go
    /// ends the sandbox.
    _owner: Arc<Owner>,
}

/// Ends the sandbox when the last [`Sandbox`] clone is dropped.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Err(e) = self.0.terminate() {
            tracing::warn!(sandbox_id = %self.0.id, error = %e, "sandbox clean-up incomplete");
        }
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.inner.id)
            .field("pid", &self.inner.pid)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) id: String,
    /// Host pid of the sandbox's PID 1.
    pid: i32,
    pidfd: OwnedFd,
    control: AsyncFd<OwnedFd>,
    /// The sandbox's root directory, for host-side file access.
    pub(crate) root: OwnedFd,
    cgroup: Mutex<SandboxCgroup>,
    pub(crate) envs: BTreeMap<String, String>,
    /// Prefix that runs a command line through a shell.
    pub(crate) shell: &'static [&'static str],
    /// Whether the sandbox runs in its own user namespace (caller not root).
    pub(crate) rootless: bool,
    next_command_id: AtomicU64,
    ended: AtomicBool,
    /// Running commands by pid.
    pub(crate) commands: Mutex<crate::process::Registry>,
}

impl Sandbox {
    /// Creates a sandbox and waits until it accepts commands.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for bad options (nothing is created);
    /// [`Error::Setup`] when PID 1 could not build the sandbox; other
    /// variants for failed system calls. A failed create leaves nothing
    /// behind.
    pub async fn create(options: SandboxOptions) -> Result<Self> {
        options.validate()?;
        let state_dir = paths::state_dir();
        let template = template::host(&state_dir)?;
        let scratch_dir = prepare_scratch_dir(&state_dir)?;
        sweep_once();

        let id = id::new_sandbox_id().map_err(Error::os("read random bytes for a sandbox id"))?;
        let (host_end, init_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::os("create the control socket")(e.into()))?;

        let launch = Launch::start(&id, init_end, &options.limits())?;
        let config = Config {
            sandbox_id: id.clone().into_bytes(),
            lower_dirs: template
                .lower_dirs
                .iter()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .collect(),
            binds: template
                .binds
                .iter()
                .map(|p| BindMount {
                    source: p.as_os_str().as_bytes().to_vec(),
                    target: p.as_os_str().as_bytes().to_vec(),
                })
                .collect(),
            scratch_dir: scratch_dir.as_os_str().as_bytes().to_vec(),
            scratch_size: options.disk_size,
            scratch_inodes: options.disk_inodes,
            tmp_size: options.tmp_size,
            open_files_limit: options.open_files_limit,
            file_size_limit: options.file_size_limit.unwrap_or(u64::MAX),
            timeout_ms: u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX),
            seccomp_filter: options.seccomp.program()?.to_vec(),
        };
        set_nonblocking(&host_end)?;
        let control = sys::async_fd(host_end).map_err(Error::os("register the control socket"))?;
        send_request(&control, &Request::Config(config), &[]).await?;
        // PID 1 builds its mounts while the host moves it into its cgroups;
        // on two cores the two overlap.
        launch.attach()?;
        send_request(&control, &Request::Attached, &[]).await?;
        wait_ready(&control, &launch).await?;

        let root = open_root(launch.pid)?;
        let shell = pick_shell(&root);
        let (pid, pidfd, cgroup) = launch.defuse();
        if cgroup.enforced() != options.limits() {
            tracing::warn!(
                sandbox_id = %id,
                requested = ?options.limits(),
                enforced = ?cgroup.enforced(),
                "some resource limits are not enforced: their cgroup hierarchy is not writable"
            );
        }
        debug!(sandbox_id = %id, pid, "sandbox ready");
        let inner = Arc::new(Inner {
            id,
            pid,
            pidfd,
            control,
            root,
            cgroup: Mutex::new(cgroup),
            envs: options.envs,
            shell,
            rootless: sys::geteuid() != 0,
            next_command_id: AtomicU64::new(1),
            ended: AtomicBool::new(false),
            commands: Mutex::default(),
        });
        let owner = Arc::new(Owner(Arc::clone(&inner)));
        Ok(Self {
            inner,
            _owner: owner,
        })
    }

    /// Returns the sandbox id, which is also its hostname.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Host pid of the sandbox's PID 1.
    pub fn pid(&self) -> i32 {
        self.inner.pid
    }

    /// Returns whether the sandbox is still running: not killed, and its PID 1 has
    /// not exited (for example at its timeout).
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// Changes the sandbox's remaining lifetime to `timeout` from now; zero
    /// removes the limit.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn set_timeout(&self, timeout: Duration) -> Result<()> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.inner.request(&Request::SetTimeout(ms), &[]).await
    }

    /// Kills every process of the sandbox and removes its cgroups. Calling
    /// it again, or dropping the handle afterwards, does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Cgroup`] if a cgroup directory could not be removed.
    pub async fn kill(&self) -> Result<()> {
        self.inner.terminate()
    }

    /// Returns the resource limits in force. A limit that was requested but
    /// is missing here could not be applied: in rootless mode the caller
    /// may not write to any cgroup hierarchy that is not delegated to it.
    pub fn enforced_limits(&self) -> Limits {
        self.inner
            .cgroup
            .lock()
            .map(|c| c.enforced())
            .unwrap_or_default()
    }

    /// Paths of the sandbox's cgroup directories, for diagnostics and leak
    /// checks; empty once the sandbox is killed.
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.inner
            .cgroup
            .lock()
            .map(|c| c.paths().to_vec())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn is_running(&self) -> bool {
        !self.ended.load(Ordering::Acquire) && !sys::pidfd_exited(self.pidfd.as_fd())
    }

    /// Returns the sandbox's out-of-memory kill count so far, if it has a
    /// memory cgroup.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        self.cgroup.lock().ok()?.oom_kills()
    }

    pub(crate) fn next_command_id(&self) -> u64 {
        self.next_command_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn not_running(&self) -> Error {
        Error::SandboxNotRunning {
            id: self.id.clone(),
        }
    }

    /// Sends a request to PID 1, with descriptors attached.
    pub(crate) async fn request(
        &self,
        request: &Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<()> {
        if self.ended.load(Ordering::Acquire) {
            return Err(self.not_running());
        }
        send_request(&self.control, request, fds)
            .await
            .map_err(|e| match e {
                Error::Os { source, .. } if source.raw_os_error() == Some(libc::EPIPE) => {
                    self.not_running()
                }
                other => other,
            })
    }

    /// Kills PID 1 (and with it the whole PID namespace), reaps it, and
    /// removes the cgroups. Idempotent.
    fn terminate(&self) -> Result<()> {
        if self.ended.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut cgroup = self
            .cgroup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        end_init(self.pidfd.as_fd(), &cgroup);
        cgroup.remove()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            tracing::warn!(sandbox_id = %self.id, error = %e, "sandbox clean-up incomplete");
        }
    }
}

/// SIGKILLs PID 1, which makes the kernel kill every process of its PID
/// namespace, and waits until all of them are gone.
fn end_init(pidfd: std::os::fd::BorrowedFd<'_>, cgroup: &SandboxCgroup) {
    let _ = sys::pidfd_send_signal(pidfd, libc::SIGKILL);
    // Belt to the PID namespace: on cgroup v2 every process of the sandbox
    // is killed even if one escaped the namespace's teardown.
    cgroup.kill_all();
    // The wait returns once PID 1 has reaped every other process of its
    // namespace, so the cgroups are empty afterwards.
    let _ = sys::pidfd_wait(pidfd, true);
}

/// The part of a create that owns PID 1 and the cgroups until the sandbox
/// is ready; dropping it undoes both.
struct Launch {
    pid: i32,
    pidfd: Option<OwnedFd>,
    cgroup: Option<SandboxCgroup>,
}

impl Launch {
    fn start(id: &str, init_end: OwnedFd, limits: &Limits) -> Result<Self> {
        let cgroup = SandboxCgroup::create(id, limits)?;
        let rootless = sys::geteuid() != 0;
        let mut namespaces = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC;
        if rootless {
            namespaces |= libc::CLONE_NEWUSER;
        }
        let memfd = init_binary::memfd()?;
        let spawned = sys::clone_exec(memfd, init_end.as_fd(), namespaces);
        drop(init_end);
        let (pid, pidfd) = match spawned {
            Ok(pair) => pair,
            Err(source) => {
                let mut cgroup = cgroup;
                let _ = cgroup.remove();
                return Err(Error::Os {
                    step: "start the sandbox's PID 1 (clone)",
                    source,
                });
            }
        };
        let launch = Self {
            pid,
            pidfd: Some(pidfd),
            cgroup: Some(cgroup),
        };
        if rootless {
            sys::write_id_maps(pid, sys::geteuid(), sys::getegid())
                .map_err(Error::os("write the user namespace's uid and gid maps"))?;
        }
        Ok(launch)
    }

    /// Moves PID 1 into the sandbox's cgroups.
    fn attach(&self) -> Result<()> {
        match &self.cgroup {
            Some(cgroup) => cgroup.attach(self.pid),
            None => Ok(()),
        }
    }

    fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd
            .as_ref()
            .expect("pidfd is present until defused")
            .as_fd()
    }

    fn defuse(mut self) -> (i32, OwnedFd, SandboxCgroup) {
        let pidfd = self.pidfd.take().expect("pidfd is present until defused");
        let cgroup = self.cgroup.take().expect("cgroup is present until defused");
        (self.pid, pidfd, cgroup)
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let (Some(pidfd), Some(cgroup)) = (&self.pidfd, &mut self.cgroup) {
            end_init(pidfd.as_fd(), cgroup);
            let _ = cgroup.remove();
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)
        .map_err(|e| Error::os("read the control socket's flags")(e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))
        .map_err(|e| Error::os("make the control socket non-blocking")(e.into()))?;
    Ok(())
}

async fn send_request(
    control: &AsyncFd<OwnedFd>,
    request: &Request,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<()> {
    let msg = request
        .encode()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    loop {
        let mut guard = control
            .writable()
            .await
            .map_err(Error::os("wait on the control socket"))?;
        match guard.try_io(|fd| sys::send_with_fds(fd.as_fd(), &msg, fds)) {
            Ok(result) => {
                return result.map_err(Error::os("send a request to the sandbox's PID 1"))
            }
            Err(_would_block) => continue,
        }
    }
}

/// Waits for PID 1's first reply: ready, or the step that failed.
async fn wait_ready(control: &AsyncFd<OwnedFd>, launch: &Launch) -> Result<()> {
    let mut buf = vec![0u8; soulbox_proto::MAX_MESSAGE_LEN];
    let receive = async {
        loop {
            let mut guard = control
                .readable()
                .await
                .map_err(Error::os("wait on the control socket"))?;
            let result = guard.try_io(|fd| {
                nix::sys::socket::recv(
                    fd.as_raw_fd(),
                    &mut buf,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .map_err(std::io::Error::from)
            });
            match result {
                Ok(Ok(len)) => return Ok(len),
                Ok(Err(e)) => return Err(Error::os("read the sandbox's ready message")(e)),
                Err(_would_block) => continue,
            }
        }
    };
    let len = match tokio::time::timeout(SETUP_TIMEOUT, receive).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Os {
                step: "build the sandbox within 30 s",
                source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            })
        }
    };
    if len == 0 {
        let status = sys::pidfd_wait(launch.pidfd(), false).ok().flatten();
        return Err(Error::Protocol(format!(
            "PID 1 exited before it was ready ({status:?}); the kernel may lack a namespace \
             or overlayfs"
        )));
    }
    match Reply::decode(&buf[..len]).map_err(|e| Error::Protocol(e.to_string()))? {
        Reply::Ready => Ok(()),
        Reply::SetupFailed {
            stage,
            errno,
            detail,
        } => Err(setup_error(stage, errno, &detail)),
    }
}

fn setup_error(stage: SetupStage, errno: i32, detail: &[u8]) -> Error {
    Error::Setup {
        stage: stage.name(),
        detail: String::from_utf8_lossy(detail).into_owned(),
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// Opens the sandbox's root directory through /proc. The pid cannot have
/// been reused: PID 1 is this process's child and is not reaped yet.
fn open_root(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/root");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_dir()
        .open(&path)
        .map_err(Error::os("open the sandbox's root directory"))?;
    Ok(OwnedFd::from(file))
}

trait DirOpen {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirOpen for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
    }
}

/// Runs command lines through bash as a login shell, like E2B, or through
/// sh where the template has no bash.
fn pick_shell(root: &OwnedFd) -> &'static [&'static str] {
    let has_bash = sys::openat2_in_root(root.as_fd(), c"/bin/bash", libc::O_PATH, 0).is_ok();
    if has_bash {
        &["/bin/bash", "-l", "-c"]
    } else {
        &["/bin/sh", "-c"]
    }
}

/// Makes the empty directory PID 1 mounts its scratch tmpfs on. All
/// sandboxes share it: each mounts over it in its own mount namespace.
fn prepare_scratch_dir(state_dir: &std::path::Path) -> Result<PathBuf> {
    let dir = state_dir.join("scratch");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Template {
            name: template::HOST.into(),
            path: dir.clone(),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(dir)
}

/// Once per host process, removes what sandboxes of dead host processes
/// left behind.
fn sweep_once() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| cgroup::sweep_stale(Duration::from_secs(60)));
}

impl Inner {
    /// Returns the pidfd of the sandbox's PID 1. It turns readable when PID 1
    /// exits, which ends the file API's directory watches.
    pub(crate) fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}
