//! Creating, tracking and ending a sandbox.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use soulbox_proto::{BindMount, Config, Reply, Request, RootPlan, SetupStage, NO_DEADLINE};
use tokio::io::unix::AsyncFd;
use tracing::debug;

use crate::cgroup::{self, Limits, SandboxCgroup, TaskFiles};
use crate::command::{self, CommandSpec};
use crate::error::{Error, Result};
use crate::image::ImageDefaults;
use crate::mounts::{self, Mount};
use crate::network::{self, Network};
use crate::process::CommandHandle;
use crate::reaper::{self, Leftovers};
use crate::seccomp::SeccompPolicy;
use crate::state::{self, Liveness, Record};
use crate::zygote::{self, Launcher, Spawn};
use crate::{host_limits, id, init_binary, paths, sys, template};

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
    /// The template: `host` (the default), a directory or an image. A
    /// directory is the absolute path of a root file system, which becomes
    /// the read-only lower layer of the sandbox's root as it is and must not
    /// change while sandboxes use it. An image is the absolute path of an
    /// OCI image layout directory or image archive, optionally followed by
    /// `:NAME` to select one of several images (see [`crate::image`]). A
    /// template built from a `soulbox.toml` is the name it was built under,
    /// or the absolute path of the file or its folder (see
    /// [`crate::build`]).
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
    /// Caller-defined labels, returned by [`Sandbox::get_info`] and used to
    /// filter [`Sandbox::list`].
    pub metadata: BTreeMap<String, String>,
    /// When true, the sandbox ends when the last [`Sandbox`] handle that
    /// [`Sandbox::create`] returned is dropped, or when the creating process
    /// exits or dies. When false (the default, as in E2B), it runs until
    /// its timeout or a kill, and any process of the same user can reach
    /// it with [`Sandbox::connect`].
    pub kill_on_drop: bool,
    /// The system calls sandboxed code may make; see [`SeccompPolicy`].
    pub seccomp: SeccompPolicy,
    /// Host files and directories mounted into the sandbox, in order; see
    /// [`Mount`].
    pub mounts: Vec<Mount>,
    /// Loopback only (the default), or internet access through
    /// slirp4netns; see [`Network`].
    pub network: Network,
    /// IPv4 addresses and CIDR blocks that the sandbox may send to even
    /// when a `deny_out` entry contains them. Needs [`Network::Internet`].
    pub allow_out: Vec<String>,
    /// IPv4 addresses and CIDR blocks that the sandbox may not send to,
    /// TCP and UDP alike, unless an `allow_out` entry contains them:
    /// a connect fails with EACCES and no packet leaves. [`ALL_TRAFFIC`]
    /// denies every address. Needs [`Network::Internet`]. At most
    /// [`MAX_EGRESS_ENTRIES`] entries, with `allow_out`.
    ///
    /// [`ALL_TRAFFIC`]: crate::ALL_TRAFFIC
    /// [`MAX_EGRESS_ENTRIES`]: crate::MAX_EGRESS_ENTRIES
    pub deny_out: Vec<String>,
    /// What the timeout does: end the sandbox (the default) or pause it;
    /// see [`OnTimeout`].
    pub on_timeout: OnTimeout,
    /// Whether a call through a handle of a paused sandbox resumes it
    /// first: starting a command, a file operation, running code or
    /// forwarding a connection. Valid only with [`OnTimeout::Pause`].
    /// Without it such calls find the sandbox paused, as after
    /// [`Sandbox::pause`].
    pub auto_resume: bool,
    /// Whether PID 1 sends a descriptor of the writable layer, which a
    /// template build keeps; see [`crate::build`].
    pub(crate) send_upper: bool,
}

/// The action a sandbox's timeout takes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// PID 1 ends the sandbox: every process is killed, and its files are
    /// gone once a handle or the next sweep removes its entry.
    #[default]
    Kill,
    /// PID 1 freezes the sandbox as [`Sandbox::pause`] does, keeping its
    /// memory and files. [`Sandbox::connect`] or [`Sandbox::resume`] thaws
    /// it, and its timeout then starts again at its length at creation.
    /// Needs the sandbox's cgroup v2 directory, like [`Sandbox::pause`].
    Pause,
}

impl OnTimeout {
    /// Returns the lowercase name: `kill` or `pause`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
        }
    }
}

impl std::str::FromStr for OnTimeout {
    type Err = Error;

    /// Parses `kill` or `pause`.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "kill" => Ok(Self::Kill),
            "pause" => Ok(Self::Pause),
            other => Err(Error::InvalidArgument(format!(
                "on_timeout {other:?} is invalid; use \"kill\" or \"pause\""
            ))),
        }
    }
}

impl fmt::Display for OnTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
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
            metadata: BTreeMap::new(),
            kill_on_drop: false,
            seccomp: SeccompPolicy::default(),
            mounts: Vec::new(),
            network: Network::None,
            allow_out: Vec::new(),
            deny_out: Vec::new(),
            on_timeout: OnTimeout::Kill,
            auto_resume: false,
            send_upper: false,
        }
    }
}

impl SandboxOptions {
    /// Sets the template: `host`, the absolute path of a directory or
    /// image, or a built template (see [`SandboxOptions::template`]).
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

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

    /// Adds a host file or directory to mount into the sandbox; see
    /// [`Mount`].
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Adds a metadata label.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets whether the sandbox ends with its creating handle; see
    /// [`SandboxOptions::kill_on_drop`].
    pub fn kill_on_drop(mut self, kill_on_drop: bool) -> Self {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// Sets the seccomp policy, replacing the default one.
    pub fn seccomp(mut self, policy: SeccompPolicy) -> Self {
        self.seccomp = policy;
        self
    }

    /// Sets the sandbox's network; see [`Network`].
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Adds an IPv4 address or CIDR block to [`SandboxOptions::allow_out`].
    pub fn allow_out(mut self, network: impl Into<String>) -> Self {
        self.allow_out.push(network.into());
        self
    }

    /// Adds an IPv4 address or CIDR block to [`SandboxOptions::deny_out`].
    pub fn deny_out(mut self, network: impl Into<String>) -> Self {
        self.deny_out.push(network.into());
        self
    }

    /// Sets what the timeout does; see [`OnTimeout`].
    pub fn on_timeout(mut self, on_timeout: OnTimeout) -> Self {
        self.on_timeout = on_timeout;
        self
    }

    /// Sets whether calls through a handle resume a paused sandbox first;
    /// see [`SandboxOptions::auto_resume`].
    pub fn auto_resume(mut self, auto_resume: bool) -> Self {
        self.auto_resume = auto_resume;
        self
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            memory: self.memory_limit,
            pids: self.pids_limit,
            cpu_millicores: self.cpu_limit.map(|cores| (cores * 1000.0).round() as u64),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        template::check_name(&self.template)?;
        for (key, value) in &self.envs {
            crate::command::validate_env(key, value)?;
        }
        crate::command::validate_sandbox_envs_size(&self.envs)?;
        validate_metadata(&self.metadata)?;
        network::egress_networks(self.network, &self.allow_out, &self.deny_out)?;
        if !self.mounts.is_empty() {
            mounts::resolve(&self.mounts, &paths::state_dir())?;
        }
        if self.mounts.iter().any(|mount| mount.writable) {
            self.seccomp.program_guarding_host_writes()?;
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
        self.validate_lifecycle()?;
        self.seccomp.validate()
    }

    /// Checks `on_timeout` and `auto_resume`, and that a sandbox that
    /// pauses at its timeout will get the cgroup v2 directory it freezes.
    fn validate_lifecycle(&self) -> Result<()> {
        match self.on_timeout {
            OnTimeout::Kill if self.auto_resume => Err(Error::InvalidArgument(
                "auto_resume is valid only with on_timeout \"pause\"; set on_timeout to \
                 \"pause\" or auto_resume to false"
                    .into(),
            )),
            OnTimeout::Kill => Ok(()),
            OnTimeout::Pause => cgroup::check_freezer_writable("on_timeout \"pause\""),
        }
    }
}

/// Largest metadata map, and longest key and value, that a sandbox takes.
const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_LEN: usize = 1024;

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::InvalidArgument(format!(
            "metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_LEN || value.len() > MAX_METADATA_LEN {
            return Err(Error::InvalidArgument(format!(
                "metadata key {key:?} must be 1 to {MAX_METADATA_LEN} bytes long, and its \
                 value at most {MAX_METADATA_LEN}"
            )));
        }
        if key.contains(['=', ',']) {
            return Err(Error::InvalidArgument(format!(
                "metadata key {key:?} contains '=' or ','; remove them from the key"
            )));
        }
        if let Some(problem) = control_character(key) {
            return Err(Error::InvalidArgument(format!(
                "metadata key {key:?} contains {problem}"
            )));
        }
        if let Some(problem) = control_character(value) {
            return Err(Error::InvalidArgument(format!(
                "the value of metadata key {key:?} contains {problem}"
            )));
        }
    }
    Ok(())
}

/// Describes the control character that `text` contains, naming a NUL
/// byte as such, or returns `None` if it contains none.
fn control_character(text: &str) -> Option<&'static str> {
    if text.contains('\0') {
        Some("a NUL byte")
    } else if text.chars().any(char::is_control) {
        Some("a control character such as a newline")
    } else {
        None
    }
}

/// Whether a sandbox runs or is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    /// Its processes run.
    Running,
    /// Its processes are frozen, and its timeout clock is stopped.
    Paused,
}

impl SandboxState {
    /// Returns the lowercase name: `running` or `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }
}

impl std::str::FromStr for SandboxState {
    type Err = Error;

    /// Parses `running` or `paused`.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "running" => Ok(Self::Running),
            "paused" => Ok(Self::Paused),
            other => Err(Error::InvalidArgument(format!(
                "sandbox state {other:?} is invalid; use \"running\" or \"paused\""
            ))),
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A sandbox's description, as [`Sandbox::get_info`] and [`Sandbox::list`]
/// return it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SandboxInfo {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The template it was built from.
    pub template: String,
    /// Labels given at creation.
    pub metadata: BTreeMap<String, String>,
    /// Sandbox-wide environment variables given at creation.
    pub envs: BTreeMap<String, String>,
    /// When it was created.
    pub started_at: SystemTime,
    /// When its timeout ends it; `None` without a timeout, and while it is
    /// paused, because a paused sandbox's clock is stopped.
    pub ends_at: Option<SystemTime>,
    /// Running or paused.
    pub state: SandboxState,
    /// CPU limit in cores, if one is enforced.
    pub cpu_limit: Option<f64>,
    /// Memory limit in bytes, if one is enforced.
    pub memory_limit: Option<u64>,
    /// Host pid of its PID 1.
    pub pid: i32,
    /// Loopback only, or internet access.
    pub network: Network,
    /// The egress rules given at creation; see [`SandboxOptions::allow_out`].
    pub allow_out: Vec<String>,
    /// See [`SandboxOptions::deny_out`].
    pub deny_out: Vec<String>,
    /// The action its timeout takes.
    pub on_timeout: OnTimeout,
    /// Whether calls through a handle resume it first when it is paused.
    pub auto_resume: bool,
}

/// Filters for [`Sandbox::list`]. The default lists every sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only sandboxes whose metadata contains every one of these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Only sandboxes in this state.
    pub state: Option<SandboxState>,
}

impl ListQuery {
    /// Adds a metadata pair that listed sandboxes must have.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Lists only sandboxes in `state`.
    pub fn state(mut self, state: SandboxState) -> Self {
        self.state = Some(state);
        self
    }
}

/// Resource use of a sandbox, from its cgroups and its writable layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SandboxMetrics {
    /// When the numbers were read.
    pub timestamp: SystemTime,
    /// CPUs the sandbox may use: its CPU limit in cores, or the host's CPU
    /// count without one.
    pub cpu_count: f64,
    /// CPU use in percent of `cpu_count`, averaged since the previous
    /// `metrics` call on this handle, or since creation for the first.
    pub cpu_used_pct: f64,
    /// CPU time used since creation; `None` where no cgroup counts it.
    pub cpu_time: Option<Duration>,
    /// Memory in use in bytes, page cache and the in-memory writable layer
    /// included; `None` without a memory cgroup.
    pub mem_used: Option<u64>,
    /// The memory limit in bytes; `None` without one.
    pub mem_total: Option<u64>,
    /// Bytes used in the writable layer.
    pub disk_used: u64,
    /// Size limit of the writable layer in bytes.
    pub disk_total: u64,
}

/// A running sandbox.
///
/// A sandbox runs until its timeout or [`Sandbox::kill`], independent of
/// the process that created it, and any process of the same user can reach
/// it through [`Sandbox::connect`]. With [`SandboxOptions::kill_on_drop`],
/// it instead ends when the last clone of the handle that
/// [`Sandbox::create`] returned is dropped: every process in it is killed,
/// its mounts disappear with its mount namespace, and its cgroups are
/// removed before `drop` returns. Other handles taken from a `Sandbox`
/// ([`crate::Files`], [`crate::Commands`], [`crate::CommandHandle`]) do not
/// keep such a sandbox alive: once it is gone, their calls fail with
/// [`Error::SandboxNotRunning`].
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
    /// Shared by the clones of this `Sandbox` only; the last one to go
    /// ends a `kill_on_drop` sandbox.
    pub(crate) owner: Arc<Owner>,
}

/// The part that the clones of one [`Sandbox`] share. It ends a
/// `kill_on_drop` sandbox when the last clone is dropped, and it owns their
/// code contexts and forwarded ports. Those refer to [`Inner`], so they
/// live here: in `Inner` they would keep it alive.
pub(crate) struct Owner {
    inner: Arc<Inner>,
    kill_on_drop: bool,
    pub(crate) code: crate::interpreter::Contexts,
    pub(crate) ports: crate::ports::Ports,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if !self.kill_on_drop {
            return;
        }
        if let Err(e) = self.inner.terminate() {
            tracing::warn!(sandbox_id = %self.inner.id, error = %e, "sandbox clean-up incomplete");
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
    /// Whether PID 1 is this process's child, which this process must reap.
    is_child: bool,
    /// This handle's connection to PID 1: the creating connection, or one
    /// accepted on the state socket for a handle from `connect`.
    control: AsyncFd<OwnedFd>,
    /// The sandbox's root directory, for host-side file access, until
    /// [`Inner::terminate`] closes it. While open, it keeps the sandbox's
    /// overlay, and the writable layer in memory, alive after every mount
    /// of the sandbox is gone.
    root: RwLock<Option<OwnedFd>>,
    cgroup: Mutex<SandboxCgroup>,
    pub(crate) envs: BTreeMap<String, String>,
    /// The command defaults of an image template; `None` for the others.
    pub(crate) image: Option<Arc<ImageDefaults>>,
    /// Prefix that runs a command line through a shell.
    pub(crate) shell: &'static [&'static str],
    /// Whether the sandbox runs in its own user namespace (caller not root).
    pub(crate) rootless: bool,
    /// The record that the creating process wrote.
    record: Record,
    /// The sandbox's entry in the state directory.
    entry: PathBuf,
    ended: AtomicBool,
    /// CPU time and wall time of the previous metrics call.
    cpu_sample: Mutex<Option<(Instant, Duration)>>,
    /// Running commands by pid.
    pub(crate) commands: Mutex<crate::process::Registry>,
    /// The out-of-memory kill count read before the last command start
    /// through this handle, or `u64::MAX` before the first.
    oom_baseline: AtomicU64,
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
        let prepared = Self::prepare(&options, options.timeout, false, None).await?;
        let startup = prepared.startup.clone();
        let sandbox = prepared.hand_over(&options, false).await?;
        if let Some(startup) = startup {
            sandbox.start_template_service(&startup).await?;
        }
        Ok(sandbox)
    }

    /// Creates a sandbox and starts `command` in it, as [`Sandbox::create`]
    /// and then [`Command::start`] do, but the start request goes to PID 1
    /// while it still builds the sandbox. So the command starts as soon as
    /// the sandbox is ready, without waiting for this process to hear of it
    /// and ask. The command's stdio are pipes; use [`Command::start_pty`]
    /// for a PTY.
    ///
    /// # Errors
    ///
    /// As [`Sandbox::create`], and as [`Command::start`] for the command.
    /// Nothing is left behind when either fails: a sandbox whose command
    /// could not start is killed, as is one whose call is dropped before it
    /// returns.
    ///
    /// [`Command::start`]: crate::Command::start
    /// [`Command::start_pty`]: crate::Command::start_pty
    pub async fn create_and_start(
        options: SandboxOptions,
        command: &CommandSpec,
    ) -> Result<(Self, CommandHandle)> {
        options.validate()?;
        let plan = |image: Option<&ImageDefaults>| {
            let context = command::Context {
                rootless: sys::geteuid() != 0,
                envs: &options.envs,
                image,
            };
            command.plan(&context, command::Stdio::pipes(command.stdin)?)
        };
        // The `host` template's command is planned first, so that a request
        // too large for the protocol fails before the state directory is
        // used. Other templates are resolved first, because an image's
        // configuration sets the command's defaults.
        let host_plan = if options.template == template::HOST {
            Some(plan(None)?)
        } else {
            None
        };
        let state_dir = paths::state_dir();
        let sandboxes = state::sandboxes_dir(&state_dir)?;
        let template = resolve_template(&options.template, &state_dir)?;
        let mut planned = match host_plan {
            Some(planned) => planned,
            None => plan(template.image.as_deref())?,
        };
        // A built template's command waits for its service to be ready,
        // so its start request cannot go ahead with the configuration.
        let first = match template.startup {
            Some(_) => None,
            None => Some(&planned),
        };
        let prepared = Self::prepare_from(
            &options,
            (&state_dir, &sandboxes),
            &template,
            (options.timeout, false),
            first,
        )
        .await?;
        // The overlay is mounted, so a built template's cache lock goes
        // before the wait for its service.
        let startup = template.startup.clone();
        drop(template);
        let sent_early = first.is_some();
        let sandbox = prepared.hand_over(&options, false).await?;
        // Until the call returns, the caller has no handle on the sandbox,
        // so a failed start or a dropped call kills it even when it would
        // outlive its handle.
        let unreturned = KillUnlessReturned(Some(&sandbox.inner));
        if let Some(startup) = &startup {
            sandbox.start_template_service(startup).await?;
        }
        if !sent_early {
            sandbox
                .inner
                .send_message(&planned.message, &planned.fds())
                .await?;
        }
        // The count of a cgroup made for this sandbox starts at zero. Read
        // now, it could already include a kill of the running command.
        planned.oom_kills_before = sandbox.inner.oom_kills().map(|_| 0);
        planned.oom_kills_earlier = sandbox.inner.oom_baseline(planned.oom_kills_before);
        let handle = planned
            .finish(command, &sandbox.inner, command.timeout)
            .await?;
        unreturned.defuse();
        Ok((sandbox, handle))
    }

    /// Builds a sandbox whose PID 1 ends it after `timeout` (zero: never),
    /// up to the point where it accepts commands. `options` must be valid.
    /// With `background` (a warm pool's refill), PID 1 builds at the
    /// scheduler's idle priority where the host is root. Elsewhere it could
    /// not return to the normal priority.
    ///
    /// With `first`, that command's start request follows the attached
    /// message, so PID 1 finds it waiting once the sandbox is ready.
    pub(crate) async fn prepare(
        options: &SandboxOptions,
        timeout: Duration,
        background: bool,
        first: Option<&command::Planned>,
    ) -> Result<Prepared> {
        let prepared = Self::prepare_if(options, (timeout, background), first, |_| true).await?;
        Ok(prepared.expect("a check that always passes"))
    }

    /// Does what [`Sandbox::prepare`] does once `check` has accepted the
    /// resolved template, and returns `None`, with nothing made, when it
    /// has not. A template build checks that its base is still the one
    /// its key was computed from.
    pub(crate) async fn prepare_if(
        options: &SandboxOptions,
        (timeout, background): (Duration, bool),
        first: Option<&command::Planned>,
        check: impl FnOnce(&template::Template) -> bool,
    ) -> Result<Option<Prepared>> {
        let state_dir = paths::state_dir();
        // First: it checks that the state directory is this user's alone.
        let sandboxes = state::sandboxes_dir(&state_dir)?;
        let template = resolve_template(&options.template, &state_dir)?;
        if !check(&template) {
            return Ok(None);
        }
        Self::prepare_from(
            options,
            (&state_dir, &sandboxes),
            &template,
            (timeout, background),
            first,
        )
        .await
        .map(Some)
    }

    /// Does [`Sandbox::prepare`]'s work once the state directory and its
    /// `sandboxes` directory are checked and the template is resolved. The
    /// last tuple is the timeout and the background flag.
    async fn prepare_from(
        options: &SandboxOptions,
        (state_dir, sandboxes): (&Path, &Path),
        template: &template::Template,
        (timeout, background): (Duration, bool),
        first: Option<&command::Planned>,
    ) -> Result<Prepared> {
        let options = &*with_template_resources(options, template.startup.as_deref());
        // Before anything is made, so that a missing slirp4netns leaves
        // nothing behind.
        let network = match options.network {
            Network::None => None,
            Network::Internet => Some(network::Plan::new()?),
        };
        let (allow_out, deny_out) =
            network::egress_networks(options.network, &options.allow_out, &options.deny_out)?;
        let scratch_dir = prepare_scratch_dir(state_dir)?;

        let new_entry = state::NewEntry::create(sandboxes)?;
        let entry_guard = EntryGuard::new(new_entry.path.clone());
        let id = new_entry.id.clone();
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
            timeout_ms: duration_ms(timeout),
            seccomp_filter: if options.mounts.iter().any(|mount| mount.writable) {
                options.seccomp.program_guarding_host_writes()?.to_vec()
            } else {
                options.seccomp.program()?.to_vec()
            },
            background: background && sys::geteuid() == 0,
            mounts: mounts::resolve(&options.mounts, state_dir)?,
            resolv_conf: match network {
                Some(_) => network::RESOLV_CONF.to_vec(),
                None => Vec::new(),
            },
            allow_out,
            deny_out,
            pause_on_timeout: options.on_timeout == OnTimeout::Pause,
            // The timeout at creation, also for a pool's sandbox, whose
            // deadline is set only at its hand-over.
            resume_timeout_ms: duration_ms(options.timeout),
            send_upper: options.send_upper,
        };
        // A root made of SoulBox's own layers, which nothing changes in
        // place, is the same for every sandbox of this plan, so the
        // zygote may build it ahead. The caller's host mounts and the
        // upper directory's descriptor need the host's tree at the build.
        let root = (config.mounts.is_empty()
            && !config.send_upper
            && template.layers_are_fixed(state_dir))
        .then(|| config.root_plan());
        let request = Request::Config(config);
        let config = request.encode().map_err(|e| oversized(&request, &e))?;
        let entry_fds = [new_entry.listener.as_fd(), new_entry.lock.as_fd()];
        let with_network_fd;
        let config_fds: &[BorrowedFd<'_>] = match &network {
            Some(plan) => {
                with_network_fd = [entry_fds[0], entry_fds[1], plan.pid1_end()];
                &with_network_fd
            }
            None => &entry_fds,
        };
        let pause_on_timeout = options.on_timeout == OnTimeout::Pause;
        let (launch, host_end) = Launch::start(
            &id,
            &options.limits(),
            (background, pause_on_timeout),
            (&config, config_fds),
            root,
        )?;
        // PID 1 has the exit pipe's write end now, queued with its
        // configuration, and slirp4netns starts while PID 1 builds.
        let network = match network {
            Some(plan) => Some(plan.start(launch.pidfd(), launch.pid, sys::geteuid() != 0)?),
            None => None,
        };
        // After the launch, whose clone under `Launcher::Fork` needs this
        // process to have one thread, and the sweep may start one.
        sweep_if_due(sandboxes);
        set_nonblocking(&host_end)?;
        let control = sys::async_fd(host_end).map_err(Error::os("register the control socket"))?;
        // PID 1 has copies of both now. Nothing else may keep the listening
        // socket open, because a connect after PID 1 died must fail, not hang.
        let state::NewEntry {
            path: entry,
            lock,
            listener,
            ..
        } = new_entry;
        drop(listener);
        drop(lock);
        // PID 1 joins its v1 cgroups itself, through the `tasks` files that
        // come with the attached message. The host moves it only into a v2
        // directory it did not start in, while PID 1 builds its mounts.
        let task_files = launch.open_v1_task_files()?;
        launch.attach()?;
        let task_fds: Vec<BorrowedFd<'_>> = task_files.files.iter().map(AsFd::as_fd).collect();
        let attached = Request::Attached {
            command_memory: task_files.command_memory,
        };
        let mut sent = send_request(&control, &attached, &task_fds).await;
        drop(task_fds);
        drop(task_files);
        if let (Ok(()), Some(first)) = (&sent, first) {
            sent = send_message(&control, &first.message, &first.fds()).await;
        }
        explain_send_failure(sent, &control, &launch)
            .await
            .map_err(blame_damaged_program)?;
        let (root, upper) = wait_ready(&control, &launch)
            .await
            .map_err(blame_damaged_program)?;
        if let Some(network) = network {
            network.wait().await?;
        }
        // PID 1 sends a descriptor of the sandbox's root before its ready
        // reply. /proc/PID/root is the fallback, which a first command that
        // ends the sandbox could already have made disappear.
        let root = match root {
            Some(root) => root,
            None => open_root(launch.pid)?,
        };
        let shell = pick_shell(&root);
        Ok(Prepared {
            id,
            launch,
            entry_guard,
            entry,
            control,
            root,
            shell,
            image: template.image.clone(),
            startup: template.startup.clone(),
            upper,
        })
    }

    fn from_inner(inner: Arc<Inner>, kill_on_drop: bool) -> Self {
        let owner = Arc::new(Owner {
            inner: Arc::clone(&inner),
            kill_on_drop,
            code: crate::interpreter::Contexts::default(),
            ports: crate::ports::Ports::default(),
        });
        Self { inner, owner }
    }

    /// Connects to a running sandbox of this user, created by this or any
    /// other process. A paused sandbox is resumed. Dropping the returned
    /// handle leaves the sandbox running.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotFound`] when no running or paused sandbox has
    /// this id.
    pub async fn connect(id: &str) -> Result<Self> {
        let sandbox = Self::connect_without_resume(id).await?;
        sandbox.resume().await?;
        Ok(sandbox)
    }

    /// Connects like [`Sandbox::connect`], but leaves a paused sandbox
    /// paused, for calls such as [`Sandbox::get_info`] and
    /// [`Sandbox::metrics`] that work on it as it is.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotFound`] when no running or paused sandbox has
    /// this id.
    pub async fn connect_without_resume(id: &str) -> Result<Self> {
        let sandboxes = state::sandboxes_dir(&paths::state_dir())?;
        sweep_if_due(&sandboxes);
        let not_found = || Error::SandboxNotFound { id: id.to_string() };
        let entry = state::entry_path(&sandboxes, id).ok_or_else(not_found)?;
        match state::probe(&entry) {
            (Liveness::Alive, _) => {}
            (Liveness::Dead, _lock) => {
                remove_dead(id, &entry);
                return Err(not_found());
            }
            (Liveness::Missing, _) => return Err(not_found()),
        }
        // No record yet: the sandbox is still being created.
        let record = state::read_record(&entry)?.ok_or_else(not_found)?;
        let connection = match connect_control(&entry).await {
            Ok(connection) => connection,
            Err(e) if is_gone(&e) => return Err(not_found()),
            Err(source) => {
                return Err(Error::State {
                    step: "connect to",
                    path: state::control_path(&entry),
                    source,
                })
            }
        };
        let pidfd = sys::peer_pidfd(connection.as_fd())
            .map_err(Error::os("read the sandbox's PID 1 from its socket"))?;
        let pid = sys::pidfd_pid(pidfd.as_fd()).map_err(|_| not_found())?;
        if pid != record.pid {
            return Err(Error::Protocol(format!(
                "the socket of sandbox {id} is served by pid {pid}, not by its PID 1 {}",
                record.pid
            )));
        }
        let root = open_root(pid)?;
        // The pidfd pins the pid: if PID 1 is still alive after the open,
        // /proc/PID/root was its root.
        if sys::pidfd_exited(pidfd.as_fd()) {
            return Err(not_found());
        }
        let shell = pick_shell(&root);
        let image = connected_image_defaults(&record);
        let cgroup = SandboxCgroup::reopen(id, record.limits());
        set_nonblocking(&connection)?;
        let control =
            sys::async_fd(connection).map_err(Error::os("register the control socket"))?;
        let inner = Arc::new(Inner {
            id: id.to_string(),
            pid,
            pidfd,
            is_child: false,
            control,
            root: RwLock::new(Some(root)),
            cgroup: Mutex::new(cgroup),
            envs: record.envs.clone(),
            image,
            shell,
            rootless: record.rootless,
            entry,
            record,
            ended: AtomicBool::new(false),
            cpu_sample: Mutex::new(None),
            commands: Mutex::default(),
            oom_baseline: AtomicU64::new(u64::MAX),
        });
        Ok(Self::from_inner(inner, false))
    }

    /// Lists this user's running and paused sandboxes that match `query`,
    /// oldest first. Removes what dead sandboxes left on the way.
    ///
    /// # Errors
    ///
    /// [`Error::State`] when the state directory cannot be read.
    pub async fn list(query: &ListQuery) -> Result<Vec<SandboxInfo>> {
        let sandboxes = state::sandboxes_dir(&paths::state_dir())?;
        let mut infos = Vec::new();
        for listed in state::entries(&sandboxes) {
            match state::probe(&listed.path) {
                (Liveness::Alive, _) => {}
                (Liveness::Dead, _lock) => {
                    remove_dead(&listed.id, &listed.path);
                    continue;
                }
                (Liveness::Missing, _) => continue,
            }
            let Ok(Some(record)) = state::read_record(&listed.path) else {
                continue;
            };
            if !query
                .metadata
                .iter()
                .all(|(key, value)| record.metadata.get(key) == Some(value))
            {
                continue;
            }
            let cgroup = SandboxCgroup::reopen(&listed.id, record.limits());
            let info = match info_from(&record, &listed.path, &cgroup).await {
                Ok(info) => info,
                // It ended while being listed.
                Err(Error::SandboxNotFound { .. }) => continue,
                // A sandbox whose PID 1 does not reply (stopped, or
                // overloaded) must not hide the others, so it is listed
                // without its end time.
                Err(e) => {
                    tracing::warn!(
                        sandbox_id = %listed.id,
                        error = %e,
                        "listing a sandbox without its end time: its PID 1 did not answer"
                    );
                    build_info(&record, cgroup.is_frozen(), None)
                }
            };
            if query.state.map_or(true, |state| state == info.state) {
                infos.push(info);
            }
        }
        cgroup::sweep_stale(Duration::from_secs(60));
        infos.sort_by(|a, b| (a.started_at, &a.sandbox_id).cmp(&(b.started_at, &b.sandbox_id)));
        Ok(infos)
    }

    /// Kills the sandbox `id`, running or paused, whichever process created
    /// it. Returns false when no such sandbox exists.
    ///
    /// # Errors
    ///
    /// [`Error::Cgroup`] if a cgroup directory could not be removed.
    pub async fn kill_id(id: &str) -> Result<bool> {
        match Self::connect_without_resume(id).await {
            Ok(sandbox) => {
                sandbox.inner.terminate()?;
                Ok(true)
            }
            Err(Error::SandboxNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
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
    /// removes the limit. For a paused sandbox, the new timeout counts from
    /// its resume.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn set_timeout(&self, timeout: Duration) -> Result<()> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.inner.request(&Request::SetTimeout(ms), &[]).await?;
        if state::read_paused(&self.inner.entry).is_some() {
            state::write_paused(&self.inner.entry, (ms > 0).then_some(timeout))?;
        }
        Ok(())
    }

    /// Returns the sandbox's id, template, metadata, times, state and limits.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn get_info(&self) -> Result<SandboxInfo> {
        let cgroup = self.inner.cgroup_snapshot();
        info_from(&self.inner.record, &self.inner.entry, &cgroup)
            .await
            .map_err(|e| match e {
                Error::SandboxNotFound { .. } => self.inner.not_running(),
                other => other,
            })
    }

    /// Freezes every process of the sandbox and stops its timeout clock.
    /// Returns false if it was already paused. A paused sandbox keeps its
    /// memory and files, and uses no CPU, until [`Sandbox::resume`],
    /// [`Sandbox::connect`] or a kill. It does not survive a host reboot.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a cgroup v2 directory (rootless without
    /// delegation); [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn pause(&self) -> Result<bool> {
        let inner = &self.inner;
        if !inner.is_running() {
            return Err(inner.not_running());
        }
        let cgroup = inner.cgroup_snapshot();
        if cgroup.is_frozen() {
            return Ok(false);
        }
        cgroup.freezer_available("pause")?;
        let remaining = match query_unless_frozen(&inner.entry, &Request::Pause, &cgroup).await {
            Ok(Some(remaining)) => remaining,
            Ok(None) => return Ok(false),
            Err(e) => return Err(inner.not_found_to_not_running(e)),
        };
        state::write_paused(&inner.entry, remaining)?;
        cgroup.set_frozen(true)?;
        // The kernel freezes asynchronously, and cgroup.events reports when
        // every task has stopped. A task in an uninterruptible sleep delays it.
        let started = Instant::now();
        let mut delay = Duration::from_micros(100);
        while !cgroup.frozen_settled() {
            if started.elapsed() >= FREEZE_TIMEOUT {
                let _ = cgroup.set_frozen(false);
                inner.request(&Request::Resume, &[]).await?;
                state::clear_paused(&inner.entry);
                return Err(Error::Os {
                    step: "freeze the sandbox within 5 s",
                    source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
        Ok(true)
    }

    /// Thaws a paused sandbox; its timeout clock goes on from where it
    /// stopped. After a pause at the timeout ([`OnTimeout::Pause`]), the
    /// timeout starts again at its length at creation. Returns false if it
    /// was not paused.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn resume(&self) -> Result<bool> {
        if !self.inner.is_running() {
            return Err(self.inner.not_running());
        }
        self.inner.resume().await
    }

    /// Returns the sandbox's CPU, memory and disk use.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn metrics(&self) -> Result<SandboxMetrics> {
        let inner = &self.inner;
        if !inner.is_running() {
            return Err(inner.not_running());
        }
        let cgroup = inner.cgroup_snapshot();
        let now = Instant::now();
        let cpu_time = cgroup.cpu_usage();
        let cpu_count = inner
            .record
            .cpu_millicores
            .map(|m| m as f64 / 1000.0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
            });
        let cpu_used_pct = {
            let mut sample = inner
                .cpu_sample
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let pct = match (cpu_time, *sample) {
                (Some(used), Some((at, before))) => {
                    percent(used.saturating_sub(before), now - at, cpu_count)
                }
                (Some(used), None) => {
                    let age = SystemTime::now()
                        .duration_since(inner.record.started_at())
                        .unwrap_or_default();
                    percent(used, age, cpu_count)
                }
                (None, _) => 0.0,
            };
            if let Some(used) = cpu_time {
                *sample = Some((now, used));
            }
            pct
        };
        let disk = inner
            .with_root(sys::fstatvfs)
            .map_err(Error::os("read the writable layer's usage"))?;
        let block = disk.f_frsize;
        Ok(SandboxMetrics {
            timestamp: SystemTime::now(),
            cpu_count,
            cpu_used_pct,
            cpu_time,
            mem_used: cgroup.memory_usage(),
            mem_total: inner.record.memory_limit,
            disk_used: disk.f_blocks.saturating_sub(disk.f_bfree) * block,
            disk_total: disk.f_blocks * block,
        })
    }

    /// Kills every process of the sandbox, removes its cgroups and state
    /// entry, and frees its files, which a sandbox that ended by itself
    /// keeps in memory until then. Calling it again, or dropping the handle
    /// afterwards, does nothing.
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
        self.inner.record.limits()
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

/// Returns a command id unique across every process that may reach the
/// sandbox: random high bits chosen once per process, and a counter.
pub(crate) fn next_command_id() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| id::random_u32().map_or(0, u64::from) << 32);
    prefix | (COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
}

/// Maximum wait for the kernel to report a sandbox frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum wait for PID 1's exit once its end of the control socket or a
/// command's status pipe has closed. The supervisors hold those ends, and
/// an exiting PID 1 has the kernel kill and reap them before its pidfd
/// reports the exit. The full wait only happens while PID 1 still runs.
const PID1_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Waits up to `limit` for the process behind `pidfd` to exit, and returns
/// whether it has.
async fn exited_within(pidfd: BorrowedFd<'_>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_micros(100);
    loop {
        if sys::pidfd_exited(pidfd) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

fn percent(used: Duration, elapsed: Duration, cpus: f64) -> f64 {
    let elapsed = elapsed.as_secs_f64();
    if elapsed <= 0.0 || cpus <= 0.0 {
        return 0.0;
    }
    (used.as_secs_f64() / elapsed / cpus * 100.0).clamp(0.0, 100.0)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Builds a sandbox's info. It queries PID 1 for its deadline unless the
/// sandbox is paused, because a frozen PID 1 cannot reply.
async fn info_from(record: &Record, entry: &Path, cgroup: &SandboxCgroup) -> Result<SandboxInfo> {
    if cgroup.is_frozen() {
        return Ok(build_info(record, true, None));
    }
    let now = SystemTime::now();
    match query_unless_frozen(entry, &Request::Status, cgroup).await? {
        Some(remaining) => Ok(build_info(
            record,
            false,
            remaining.map(|remaining| now + remaining),
        )),
        None => Ok(build_info(record, true, None)),
    }
}

/// How often [`query_unless_frozen`] checks whether the sandbox froze
/// while it waits for PID 1's reply.
const FROZEN_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Sends `request` as [`query_status`] does, but returns `None` once the
/// sandbox is frozen while the reply is awaited. PID 1 of a sandbox that
/// pauses at its deadline (`OnTimeout::Pause`) may freeze itself between
/// the caller's check and the request, and a frozen PID 1 does not reply.
/// A reply comes within microseconds, so the check usually never runs.
async fn query_unless_frozen(
    entry: &Path,
    request: &Request,
    cgroup: &SandboxCgroup,
) -> Result<Option<Option<Duration>>> {
    let query = query_status(entry, request);
    tokio::pin!(query);
    loop {
        tokio::select! {
            result = &mut query => return result.map(Some),
            () = tokio::time::sleep(FROZEN_CHECK_INTERVAL) => {
                if cgroup.is_frozen() {
                    return Ok(None);
                }
            }
        }
    }
}

fn build_info(record: &Record, paused: bool, ends_at: Option<SystemTime>) -> SandboxInfo {
    SandboxInfo {
        sandbox_id: record.id.clone(),
        template: record.template.clone(),
        metadata: record.metadata.clone(),
        envs: record.envs.clone(),
        started_at: record.started_at(),
        ends_at,
        state: if paused {
            SandboxState::Paused
        } else {
            SandboxState::Running
        },
        cpu_limit: record.cpu_millicores.map(|m| m as f64 / 1000.0),
        memory_limit: record.memory_limit,
        pid: record.pid,
        network: if record.internet {
            Network::Internet
        } else {
            Network::None
        },
        allow_out: record.allow_out.clone(),
        deny_out: record.deny_out.clone(),
        on_timeout: record.on_timeout,
        auto_resume: record.auto_resume,
    }
}

/// How long a status query waits for PID 1's reply.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` on a new connection to the sandbox of `entry` and returns
/// the time left until its deadline from the [`Reply::Status`].
async fn query_status(entry: &Path, request: &Request) -> Result<Option<Duration>> {
    let id = entry
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let connection = match connect_control(entry).await {
        Ok(connection) => connection,
        Err(e) if is_gone(&e) => return Err(Error::SandboxNotFound { id }),
        Err(source) => {
            return Err(Error::State {
                step: "connect to",
                path: state::control_path(entry),
                source,
            })
        }
    };
    set_nonblocking(&connection)?;
    let connection = sys::async_fd(connection).map_err(Error::os("register a query connection"))?;
    // PID 1 may die after accepting the connection: a list then skips the
    // sandbox instead of failing.
    let gone_is_not_found = |error: Error| match &error {
        Error::Os { source, .. }
            if is_gone(source) || source.raw_os_error() == Some(libc::EPIPE) =>
        {
            Error::SandboxNotFound { id: id.clone() }
        }
        _ => error,
    };
    send_request(&connection, request, &[])
        .await
        .map_err(gone_is_not_found)?;
    let mut buf = vec![0u8; 64];
    let len = match tokio::time::timeout(QUERY_TIMEOUT, receive(&connection, &mut buf)).await {
        Ok(result) => result.map_err(gone_is_not_found)?,
        Err(_) => {
            return Err(Error::Os {
                step: "read the sandbox's status within 5 s",
                source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            })
        }
    };
    if len == 0 {
        return Err(Error::SandboxNotFound { id });
    }
    match Reply::decode(&buf[..len]).map_err(|e| Error::Protocol(e.to_string()))? {
        Reply::Status { remaining_ms } => {
            Ok((remaining_ms != NO_DEADLINE).then(|| Duration::from_millis(remaining_ms)))
        }
        other => Err(Error::Protocol(format!(
            "expected a status reply, got {other:?}"
        ))),
    }
}

/// Connects to the socket PID 1 listens on. The connect does not block:
/// while PID 1's queue of connections is full (a paused sandbox accepts
/// none), it is retried until [`CONNECT_CONTROL_TIMEOUT`] and then fails
/// with ETIMEDOUT, so that no runtime thread waits on a frozen PID 1.
async fn connect_control(entry: &Path) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{connect, socket, UnixAddr};
    let path = state::control_path(entry);
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let address = UnixAddr::new(&path)?;
    let deadline = Instant::now() + CONNECT_CONTROL_TIMEOUT;
    let mut delay = Duration::from_micros(200);
    loop {
        match connect(socket.as_raw_fd(), &address) {
            Ok(()) => break,
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(20));
            }
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
            }
            Err(e) => return Err(e.into()),
        }
    }
    sys::fit_largest_message(socket.as_fd())?;
    Ok(socket)
}

/// How long [`connect_control`] waits for room in PID 1's queue.
const CONNECT_CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns whether a connect error means that no process serves the socket.
fn is_gone(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOENT | libc::ECONNRESET)
    )
}

/// Removes what the dead sandbox `id` left: its cgroups, then its entry.
fn remove_dead(id: &str, entry: &Path) {
    let limits = state::read_record(entry)
        .ok()
        .flatten()
        .map_or(Limits::ANY, |record| record.limits());
    let leftovers = Leftovers {
        cgroup: SandboxCgroup::reopen(id, limits),
        entry: entry.to_path_buf(),
    };
    debug!(sandbox_id = id, "removing a dead sandbox's leftovers");
    leftovers.remove();
}

/// Removes what dead sandboxes of this user left, at most about once a
/// second across the user's processes: entries whose PID 1 is gone (with
/// their cgroups), half-built entries, and empty sandbox cgroups without an
/// entry. A stamp file in the state directory records the last sweep, so
/// that a short-lived process such as the `soulbox` command rarely sweeps.
///
/// The sweep runs on a thread of its own, because it probes every entry
/// and cgroup: with a thousand sandboxes that takes tens of milliseconds,
/// which create and connect need not wait for. Where the thread cannot
/// start, it runs here.
fn sweep_if_due(sandboxes: &Path) {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    static RUNNING: AtomicBool = AtomicBool::new(false);
    {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < SWEEP_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
    }
    if RUNNING.load(Ordering::Acquire) || !state::claim_sweep(sandboxes, SWEEP_INTERVAL) {
        return;
    }
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let dir = sandboxes.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("soulbox-sweep".into())
        .spawn(move || {
            sweep(&dir);
            RUNNING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        sweep(sandboxes);
        RUNNING.store(false, Ordering::Release);
    }
}

fn sweep(sandboxes: &Path) {
    for listed in state::entries(sandboxes) {
        if let (Liveness::Dead, _lock) = state::probe(&listed.path) {
            remove_dead(&listed.id, &listed.path);
        }
    }
    cgroup::sweep_stale(Duration::from_secs(60));
}

const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Removes a half-built state entry unless defused.
struct EntryGuard {
    entry: Option<PathBuf>,
    /// Whether the entry's record was written. Without one, the removal
    /// skips the record's name, because a lookup of a missing name leaves
    /// a negative dentry.
    has_record: bool,
}

impl EntryGuard {
    fn new(entry: PathBuf) -> Self {
        Self {
            entry: Some(entry),
            has_record: false,
        }
    }

    fn record_written(&mut self) {
        self.has_record = true;
    }

    fn defuse(mut self) {
        self.entry = None;
    }
}

/// Kills a sandbox on drop unless defused: the sandbox of a
/// [`Sandbox::create_and_start`], or of a create from a built template
/// whose service fails to start, that fails or is dropped before it
/// returns.
pub(crate) struct KillUnlessReturned<'a>(pub(crate) Option<&'a Inner>);

impl KillUnlessReturned<'_> {
    pub(crate) fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for KillUnlessReturned<'_> {
    fn drop(&mut self) {
        let Some(inner) = self.0 else { return };
        if let Err(e) = inner.terminate() {
            tracing::warn!(sandbox_id = %inner.id, error = %e, "sandbox clean-up incomplete");
        }
    }
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        match &self.entry {
            Some(entry) if self.has_record => {
                let _ = state::remove_entry(entry);
            }
            Some(entry) => {
                let _ = state::remove_entry_without_record(entry);
            }
            None => {}
        }
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
    /// Thaws the sandbox if it is paused; see [`Sandbox::resume`].
    async fn resume(&self) -> Result<bool> {
        let cgroup = self.cgroup_snapshot();
        if !cgroup.is_frozen() {
            return Ok(false);
        }
        // Queued before the thaw, so PID 1 moves its deadline before it
        // checks it (see soulbox-init's poll loop).
        self.request(&Request::Resume, &[]).await?;
        cgroup.set_frozen(false)?;
        state::clear_paused(&self.entry);
        Ok(true)
    }

    /// Resumes a paused sandbox created with
    /// [`SandboxOptions::auto_resume`], before a call that needs it
    /// running. Without that option it does nothing, not even a system
    /// call.
    pub(crate) async fn resume_if_auto(&self) -> Result<()> {
        if self.record.auto_resume {
            self.resume().await?;
        }
        Ok(())
    }

    pub(crate) fn is_running(&self) -> bool {
        !self.ended.load(Ordering::Acquire) && !sys::pidfd_exited(self.pidfd.as_fd())
    }

    /// Returns whether the sandbox has ended, waiting up to
    /// [`PID1_EXIT_GRACE`] for PID 1 to finish exiting. For a caller that
    /// found a supervisor gone, which the end of the sandbox can explain.
    pub(crate) async fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
            || exited_within(self.pidfd.as_fd(), PID1_EXIT_GRACE).await
    }

    /// Runs `f` on the sandbox's root directory. Fails with ESRCH once
    /// [`Inner::terminate`] has closed it.
    pub(crate) fn with_root<T>(
        &self,
        f: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let root = self
            .root
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match root.as_ref() {
            Some(root) => f(root.as_fd()),
            None => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }

    /// Returns the sandbox's out-of-memory kill count so far, if it has a
    /// memory cgroup.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        self.cgroup.lock().ok()?.oom_kills()
    }

    /// Records `count`, the out-of-memory kill count read before a command
    /// start, and returns the lower of it and the one recorded before the
    /// previous start. A kill between two starts, of a supervisor that
    /// waited for the next command, shows against the earlier count.
    pub(crate) fn oom_baseline(&self, count: Option<u64>) -> Option<u64> {
        let count = count?;
        let previous = self.oom_baseline.swap(count, Ordering::AcqRel);
        Some(count.min(previous))
    }

    /// Asks PID 1, on a connection of its own, for a TCP socket whose
    /// connect to `port` on the sandbox's loopback address (::1 with
    /// `ipv6`) has started. The caller waits for the connect to finish.
    pub(crate) async fn open_tcp(&self, port: u16, ipv6: bool) -> Result<OwnedFd> {
        if !self.is_running() {
            return Err(self.not_running());
        }
        self.resume_if_auto().await?;
        // A paused PID 1 accepts no connection. Every forwarded connection
        // would wait in its queue, and a full queue would keep everything
        // else, `soulbox kill` included, from reaching it until the resume.
        let paused = self
            .cgroup
            .lock()
            .map(|cgroup| cgroup.is_frozen())
            .unwrap_or(false);
        if paused {
            return Err(Error::Unsupported {
                operation: "forwarding a connection",
                reason: format!("sandbox {} is paused; resume it first", self.id),
            });
        }

        let connect_failed = |source: std::io::Error| {
            if is_gone(&source) || source.raw_os_error() == Some(libc::EPIPE) {
                self.not_running()
            } else {
                Error::Os {
                    step: "reach the sandbox's PID 1",
                    source,
                }
            }
        };
        let connection = connect_control(&self.entry).await.map_err(connect_failed)?;
        set_nonblocking(&connection)?;
        let connection =
            sys::async_fd(connection).map_err(Error::os("register a port connection"))?;
        let request = Request::OpenTcp { port, ipv6 };
        send_request(&connection, &request, &[])
            .await
            .map_err(|e| self.not_found_to_not_running(e))?;

        let mut buf = vec![0u8; 64];
        let received = tokio::time::timeout(QUERY_TIMEOUT, receive_with_fds(&connection, &mut buf));
        let (len, fds) = match received.await {
            Ok(Ok(received)) => received,
            Ok(Err(_)) | Err(_) if !self.is_running() => return Err(self.not_running()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Os {
                    step: "receive a socket from the sandbox's PID 1 within 5 s",
                    source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
                })
            }
        };
        if len == 0 {
            // NOTE: PID 1 also closes a new connection at once when it
            // already serves 1,024, and a running sandbox is then reported
            // as not running.
            return Err(self.not_running());
        }
        match (Reply::decode(&buf[..len]), fds.into_iter().next()) {
            (Ok(Reply::Socket), Some(socket)) => Ok(socket),
            (Ok(Reply::SocketFailed { errno }), _) => Err(Error::Os {
                step: "open a TCP socket in the sandbox",
                source: std::io::Error::from_raw_os_error(errno),
            }),
            (other, _) => Err(Error::Protocol(format!(
                "expected a socket from the sandbox's PID 1, got {other:?}"
            ))),
        }
    }

    pub(crate) fn not_running(&self) -> Error {
        Error::SandboxNotRunning {
            id: self.id.clone(),
        }
    }

    fn not_found_to_not_running(&self, error: Error) -> Error {
        match error {
            Error::SandboxNotFound { .. } => self.not_running(),
            other => other,
        }
    }

    /// Returns a copy of the cgroup paths, so that no lock is held across an
    /// await.
    fn cgroup_snapshot(&self) -> SandboxCgroup {
        SandboxCgroup::reopen(&self.id, self.record.limits())
    }

    /// Sends a request to PID 1, with descriptors attached.
    pub(crate) async fn request(
        &self,
        request: &Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<()> {
        let message = request.encode().map_err(|e| oversized(request, &e))?;
        self.send_message(&message, fds).await
    }

    /// Sends an encoded request to PID 1, with descriptors attached.
    pub(crate) async fn send_message(
        &self,
        message: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<()> {
        if self.ended.load(Ordering::Acquire) {
            return Err(self.not_running());
        }
        send_message(&self.control, message, fds)
            .await
            .map_err(|e| match e {
                Error::Os { source, .. }
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
                    ) =>
                {
                    self.not_running()
                }
                other => other,
            })
    }

    /// Kills PID 1 (and with it the whole PID namespace), waits for it to
    /// end, and removes the cgroups and the state entry. Idempotent.
    fn terminate(&self) -> Result<()> {
        if self.ended.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut cgroup = self
            .cgroup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // While this reference is open, PID 1's exit does not tear the mount
        // namespace down. The reaper thread closes it after the kill, so the
        // unmounts and the RCU grace period they wait for run off this path.
        // If it cannot be opened, the kill waits for the teardown as before.
        // A one-shot program (`Launcher::Fork`) skips it: a thread started
        // to close it later would only make its exit, which follows, slower.
        let one_shot = matches!(zygote::launcher(), Launcher::Fork(_));
        let mount_namespace = if one_shot {
            None
        } else {
            sys::pidfd_namespace(self.pidfd.as_fd(), self.pid, sys::Namespace::Mount).ok()
        };
        // A paused sandbox needs no thaw first: a fatal signal ends a task of
        // a frozen v2 cgroup.
        let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
        // While PID 1 exits, possibly on the other CPU, the state entry goes
        // but for its lock file. Were this process to die before the end,
        // the next sweep would find the entry by that file, dead, and
        // remove it with the cgroups.
        let _ = state::remove_entry_files(&self.entry);
        // The wait returns once PID 1 has reaped every other process of its
        // namespace, so the cgroups are empty afterwards. Should one still
        // be busy, its removal kills what is left (cgroup v2).
        if self.is_child {
            let _ = sys::pidfd_wait(self.pidfd.as_fd(), true);
        } else {
            sys::pidfd_wait_exit(self.pidfd.as_fd(), -1);
            // A handle from connect in the process that created the sandbox:
            // reap PID 1 here rather than leave a zombie until the creating
            // handle drops. In any other process this finds no child.
            let _ = sys::pidfd_wait(self.pidfd.as_fd(), false);
        }
        let removed = cgroup.remove();
        let _ = state::remove_entry_lock(&self.entry);
        // The sandbox's files are freed once the file calls in progress,
        // which hold descriptors of their own, have finished.
        let root = self
            .root
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(root);
        if let Some(namespace) = mount_namespace {
            reaper::close_later(namespace);
        }
        removed
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        let cgroup = std::mem::take(
            &mut *self
                .cgroup
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let leftovers = Leftovers {
            cgroup,
            entry: self.entry.clone(),
        };
        if self.is_child {
            // The sandbox runs on; whenever it ends, this process reaps it.
            match self.pidfd.try_clone() {
                Ok(pidfd) => reaper::adopt(pidfd, leftovers),
                Err(e) => {
                    tracing::warn!(sandbox_id = %self.id, error = %e, "cannot watch the sandbox's PID 1")
                }
            }
        } else if sys::pidfd_exited(self.pidfd.as_fd()) {
            if let (Liveness::Dead, _lock) = state::probe(&self.entry) {
                leftovers.remove();
            }
        }
    }
}

/// A sandbox that is built and accepts commands but has no owner yet. It
/// has no record in the state directory, so [`Sandbox::list`] and
/// [`Sandbox::connect`] do not see it. Dropping it kills it and removes its
/// cgroups and state entry, and if this process dies first, PID 1 ends the
/// sandbox when its creating connection closes.
pub(crate) struct Prepared {
    id: String,
    // Dropped before the entry guard, so that the entry outlives PID 1.
    launch: Launch,
    entry_guard: EntryGuard,
    entry: PathBuf,
    control: AsyncFd<OwnedFd>,
    root: OwnedFd,
    shell: &'static [&'static str],
    image: Option<Arc<ImageDefaults>>,
    /// The start and ready commands of a built template.
    pub(crate) startup: Option<Arc<crate::build::Startup>>,
    /// The writable layer, where the options asked for it.
    upper: Option<OwnedFd>,
}

impl Prepared {
    /// Takes the descriptor of the writable layer, which PID 1 sends when
    /// the options' `send_upper` is set.
    pub(crate) fn take_upper(&mut self) -> Option<OwnedFd> {
        self.upper.take()
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("id", &self.id)
            .field("pid", &self.launch.pid)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of PID 1.
    pub(crate) fn pid(&self) -> i32 {
        self.launch.pid
    }

    /// Returns whether PID 1 still runs.
    pub(crate) fn is_running(&self) -> bool {
        !sys::pidfd_exited(self.launch.pidfd())
    }

    /// Makes this the caller's sandbox: records it with the metadata and
    /// envs of `options` and the current time as its start, so that other
    /// processes can reach it, and makes it persist unless
    /// `options.kill_on_drop`. With `from_pool`, the sandbox was prepared
    /// without a deadline on another thread's runtime: its control socket
    /// moves to the caller's runtime, and PID 1's deadline becomes
    /// `options.timeout` from now.
    pub(crate) async fn hand_over(
        self,
        options: &SandboxOptions,
        from_pool: bool,
    ) -> Result<Sandbox> {
        let Self {
            id,
            launch,
            mut entry_guard,
            entry,
            control,
            root,
            shell,
            image,
            startup,
            upper: _,
        } = self;
        let options = &*with_template_resources(options, startup.as_deref());
        let enforced = launch.enforced();
        let rootless = sys::geteuid() != 0;
        let record = Record {
            id: id.clone(),
            template: options.template.clone(),
            metadata: options.metadata.clone(),
            envs: options.envs.clone(),
            started_at_ms: unix_ms(SystemTime::now()),
            pid: launch.pid,
            rootless,
            memory_limit: enforced.memory,
            pids_limit: enforced.pids,
            cpu_millicores: enforced.cpu_millicores,
            disk_size: options.disk_size,
            internet: options.network == Network::Internet,
            allow_out: options.allow_out.clone(),
            deny_out: options.deny_out.clone(),
            on_timeout: options.on_timeout,
            auto_resume: options.auto_resume,
        };
        let control = if from_pool {
            let control = sys::async_fd(control.into_inner())
                .map_err(Error::os("register the control socket"))?;
            let timeout_ms = duration_ms(options.timeout);
            send_request(&control, &Request::SetTimeout(timeout_ms), &[]).await?;
            control
        } else {
            control
        };
        state::write_record(&entry, &record)?;
        entry_guard.record_written();
        if !options.kill_on_drop {
            if let Err(error) = send_request(&control, &Request::Persist, &[]).await {
                // A first command with ends_sandbox may have ended the
                // sandbox already. Then there is nothing left to persist,
                // and the handle reports the sandbox as ended.
                if !exited_within(launch.pidfd(), PID1_EXIT_GRACE).await {
                    return Err(error);
                }
            }
        }
        let (pid, pidfd, cgroup) = launch.defuse();
        entry_guard.defuse();
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
            is_child: true,
            control,
            root: RwLock::new(Some(root)),
            cgroup: Mutex::new(cgroup),
            envs: options.envs.clone(),
            image,
            shell,
            rootless,
            record,
            entry,
            ended: AtomicBool::new(false),
            cpu_sample: Mutex::new(None),
            commands: Mutex::default(),
            oom_baseline: AtomicU64::new(u64::MAX),
        });
        Ok(Sandbox::from_inner(inner, options.kill_on_drop))
    }
}

/// The part of a create that owns PID 1 and the cgroups until the sandbox
/// is ready; dropping it undoes both.
struct Launch {
    pid: i32,
    pidfd: Option<OwnedFd>,
    cgroup: Option<SandboxCgroup>,
    /// Whether PID 1 started in its cgroup v2 directory.
    in_v2: bool,
}

impl Launch {
    /// Creates the sandbox's cgroups and starts its PID 1 in new
    /// namespaces, at idle priority with `background` where the zygote
    /// forks it, and in a root the zygote built ahead for `root` where it
    /// has one. With `pause_on_timeout`, the sandbox's `cgroup.freeze`
    /// file, opened for writing, goes to PID 1 after `config_fds`. Returns
    /// the launch and the host's end of the control socket.
    ///
    /// The encoded configuration `config` goes out with `config_fds` before
    /// PID 1 starts, so PID 1 finds it waiting instead of the host sending
    /// it once the zygote replies. A rootless PID 1 gets it after its uid
    /// map is written, because PID 1 takes its arrival as the sign that the
    /// map is there. The v1 cgroup directories are made after the start, while
    /// PID 1 builds the sandbox, and PID 1 joins them when the host reports
    /// [`Request::Attached`].
    fn start(
        id: &str,
        limits: &Limits,
        (background, pause_on_timeout): (bool, bool),
        (config, config_fds): (&[u8], &[BorrowedFd<'_>]),
        root: Option<RootPlan>,
    ) -> Result<(Self, OwnedFd)> {
        let mut cgroup = SandboxCgroup::create(id, limits)?;
        let freeze = if pause_on_timeout {
            match cgroup.open_freeze("on_timeout \"pause\"") {
                Ok(freeze) => Some(freeze),
                Err(error) => {
                    let _ = cgroup.remove();
                    return Err(error);
                }
            }
        } else {
            None
        };
        let with_freeze: Vec<BorrowedFd<'_>>;
        let config_fds = match &freeze {
            Some(freeze) => {
                with_freeze = config_fds.iter().copied().chain([freeze.as_fd()]).collect();
                &with_freeze
            }
            None => config_fds,
        };
        let send_config = |host_end: BorrowedFd<'_>| {
            sys::send_with_fds(host_end, config, config_fds)
                .map_err(Error::os("send the configuration to the sandbox's PID 1"))
        };
        let rootless = sys::geteuid() != 0;
        let mut namespaces = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC;
        if rootless {
            namespaces |= libc::CLONE_NEWUSER;
        }
        let cgroup_fd = cgroup.open_v2();
        let queued: Option<&SendConfig<'_>> = (!rootless).then_some(&send_config);
        let started = start_pid1(
            namespaces,
            cgroup_fd.as_ref().map(AsFd::as_fd),
            (background, root),
            queued,
        );
        let (host_end, pid, pidfd, in_v2) = match started {
            Ok(started) => started,
            Err(error) => {
                let _ = cgroup.remove();
                return Err(error);
            }
        };
        let mut launch = Self {
            pid,
            pidfd: Some(pidfd),
            cgroup: Some(cgroup),
            in_v2,
        };
        if rootless {
            sys::write_id_maps(pid, sys::geteuid(), sys::getegid())
                .map_err(Error::os("write the user namespace's uid and gid maps"))?;
            send_config(host_end.as_fd())?;
        }
        if let Some(cgroup) = &mut launch.cgroup {
            cgroup.add_v1(id, limits)?;
        }
        Ok((launch, host_end))
    }

    /// Opens the `tasks` files through which PID 1 joins its v1 cgroups.
    fn open_v1_task_files(&self) -> Result<TaskFiles> {
        match &self.cgroup {
            Some(cgroup) => cgroup.open_v1_task_files(),
            None => Ok(TaskFiles::default()),
        }
    }

    /// Moves PID 1 into the sandbox's v2 cgroup, unless it started there.
    fn attach(&self) -> Result<()> {
        match &self.cgroup {
            Some(cgroup) => cgroup.attach_v2(self.pid, self.in_v2),
            None => Ok(()),
        }
    }

    fn enforced(&self) -> Limits {
        self.cgroup
            .as_ref()
            .map(SandboxCgroup::enforced)
            .unwrap_or_default()
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
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::pidfd_wait(pidfd.as_fd(), true);
            let _ = cgroup.remove();
        }
    }
}

/// Sends PID 1's configuration on the host's end of a control socket.
type SendConfig<'a> = dyn Fn(BorrowedFd<'_>) -> Result<()> + 'a;

/// Creates the control socket and queues the configuration on it with
/// `send_config` if given. Then starts PID 1 with the socket's other end as
/// fd 3. PID 1 is cloned from this process under [`Launcher::Fork`], forked
/// by the zygote when this process uses one (at idle priority with
/// `background`, and into a root built ahead for `root` where the zygote
/// has one), else started by an exec of soulbox-init. Returns the host's
/// end, PID 1's pid and pidfd, and whether PID 1 started in `cgroup`.
fn start_pid1(
    namespaces: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    (background, root): (bool, Option<RootPlan>),
    send_config: Option<&SendConfig<'_>>,
) -> Result<(OwnedFd, i32, OwnedFd, bool)> {
    let configured_socket = || {
        let (host_end, init_end) = control_socket()?;
        if let Some(send_config) = send_config {
            send_config(host_end.as_fd())?;
        }
        Ok::<_, Error>((host_end, init_end))
    };
    let (host_end, init_end) = configured_socket()?;
    if let Some((pid, pidfd, in_cgroup)) = fork_pid1(namespaces, cgroup, init_end.as_fd()) {
        return Ok((host_end, pid, pidfd, in_cgroup));
    }
    let spawned = zygote::spawn(init_end.as_fd(), namespaces, cgroup, background, root);
    let (host_end, init_end) = match spawned {
        Spawn::Started(started) => {
            return Ok((host_end, started.pid, started.pidfd, started.in_cgroup))
        }
        Spawn::NotUsed => (host_end, init_end),
        // A PID 1 the zygote may have forked before it failed is this
        // process's child, has a copy of `init_end`, and may have read the
        // queued configuration. It is found by that copy, killed and
        // reaped, and a new pair keeps anything else from reading this
        // sandbox's configuration.
        Spawn::Lost => {
            let _ = sys::recv_with_fds(init_end.as_fd(), &mut [0u8; 1]);
            reap_orphan_holding(init_end.as_fd());
            configured_socket()?
        }
    };
    let program = init_binary::executable()?;
    let (pid, pidfd, in_cgroup) =
        sys::clone_exec(program, None, init_end.as_fd(), namespaces, cgroup).map_err(|source| {
            Error::Os {
                step: "start the sandbox's PID 1 (clone)",
                source,
            }
        })?;
    Ok((host_end, pid, pidfd, in_cgroup))
}

/// Clones PID 1 from this process when the launcher is [`Launcher::Fork`]
/// and that is safe now. Returns `None` when it is not, or when the clone
/// failed, and the caller executes PID 1 instead, which reports any error
/// of its own clone.
fn fork_pid1(
    namespaces: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    control: BorrowedFd<'_>,
) -> Option<(i32, OwnedFd, bool)> {
    let Launcher::Fork(entry) = zygote::launcher() else {
        return None;
    };
    // Rootless hosts execute PID 1 for the reason the zygote gives.
    if sys::geteuid() != 0 || namespaces & libc::CLONE_NEWUSER != 0 {
        return None;
    }
    match sys::clone_into(namespaces, cgroup, control, entry) {
        Ok(Some(started)) => Some(started),
        Ok(None) => {
            debug!("this process has more than one thread; executing PID 1");
            None
        }
        Err(error) => {
            debug!(%error, "cloning PID 1 from this process failed; executing it");
            None
        }
    }
}

/// Kills and reaps the child of this process that has a descriptor of the
/// socket `socket`: a PID 1 forked by a zygote that died before it could
/// report it. No other process has PID 1's end of a control socket.
fn reap_orphan_holding(socket: BorrowedFd<'_>) {
    let Ok(inode) = nix::sys::stat::fstat(socket.as_raw_fd()).map(|stat| stat.st_ino) else {
        return;
    };
    let target = format!("socket:[{inode}]");
    let holds_socket = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
            })
        })
    };
    let Some(orphan) = sys::child_pids().into_iter().find(|&pid| holds_socket(pid)) else {
        return;
    };
    tracing::debug!(
        pid = orphan,
        "reaping a PID 1 whose zygote died before its reply"
    );
    if let Ok(pidfd) = sys::pidfd_open(orphan) {
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::pidfd_wait(pidfd.as_fd(), true);
    }
}

/// Creates the control socket: the host's end, then PID 1's.
fn control_socket() -> Result<(OwnedFd, OwnedFd)> {
    let (host_end, init_end) =
        sys::seqpacket_pair().map_err(Error::os("create the control socket"))?;
    sys::fit_largest_message(host_end.as_fd())
        .map_err(Error::os("size the control socket's send buffer"))?;
    host_limits::ensure_fd_headroom(init_end.as_raw_fd());
    Ok((host_end, init_end))
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
    let msg = request.encode().map_err(|e| oversized(request, &e))?;
    send_message(control, &msg, fds).await
}

/// Sends an encoded request on a control socket, waiting while its send
/// buffer is full.
async fn send_message(
    control: &AsyncFd<OwnedFd>,
    msg: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<()> {
    loop {
        let mut guard = control
            .writable()
            .await
            .map_err(Error::os("wait on the control socket"))?;
        match guard.try_io(|fd| sys::send_with_fds(fd.as_fd(), msg, fds)) {
            Ok(result) => return result.map_err(|source| send_failure(source, msg.len())),
            Err(_would_block) => continue,
        }
    }
}

/// Smallest net.core.wmem_max with which a control socket fits the
/// protocol's largest message: the kernel doubles the capped value, and a
/// message must be 32 bytes smaller than the buffer.
const MIN_WMEM_MAX: usize = (soulbox_proto::MAX_MESSAGE_LEN + 32).div_ceil(2);

/// Returns the error for a request of `len` bytes that the control socket
/// did not take. EMSGSIZE means that its send buffer is smaller than the
/// request, although [`sys::fit_largest_message`] asked for enough:
/// net.core.wmem_max caps what it gets.
fn send_failure(source: std::io::Error, len: usize) -> Error {
    if source.raw_os_error() != Some(libc::EMSGSIZE) {
        return Error::os("send a request to the sandbox's PID 1")(source);
    }
    Error::Unsupported {
        operation: "a request of this size",
        reason: format!(
            "the control socket's send buffer is smaller than the request's {len} bytes, \
             because net.core.wmem_max caps it; raise net.core.wmem_max to at least \
             {MIN_WMEM_MAX} (sysctl -w net.core.wmem_max={MIN_WMEM_MAX}), or send less"
        ),
    }
}

/// Returns the error for `request`, whose encoding is larger than the
/// protocol allows, naming what the caller can shrink.
pub(crate) fn oversized(request: &Request, error: &soulbox_proto::EncodeError) -> Error {
    let subject = match request {
        Request::Spawn(_) => {
            "the command's program, arguments and environment (the sandbox's variables included)"
        }
        Request::Config(_) => {
            "the sandbox's configuration (template layers, host mounts and seccomp filter)"
        }
        _ => "the request",
    };
    let fix = match request {
        Request::Config(_) => "use fewer or shorter host mount paths, or fewer seccomp rules",
        _ => "pass large data in a file or on stdin instead",
    };
    Error::InvalidArgument(format!(
        "{subject} take {} bytes, more than the {} bytes one request to the sandbox may carry; \
         {fix}",
        error.len,
        soulbox_proto::MAX_MESSAGE_LEN
    ))
}

/// Receives one message into `buf`; 0 means the peer closed. Descriptors
/// attached to it are closed.
async fn receive(control: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> Result<usize> {
    receive_with_fds(control, buf).await.map(|(len, _fds)| len)
}

/// Returns whether `error` is the first ECONNRESET of a receive. A Unix
/// socket whose peer closed with messages of ours unread reports
/// ECONNRESET once, before the messages that the peer sent: PID 1's
/// report of a failed setup, for one. They are still queued, so the
/// receive goes on.
fn is_first_reset(error: &std::io::Error, reset_seen: &mut bool) -> bool {
    if error.raw_os_error() != Some(libc::ECONNRESET) || *reset_seen {
        return false;
    }
    *reset_seen = true;
    true
}

/// Receives one message into `buf`, with the descriptors attached to it;
/// 0 means the peer closed.
async fn receive_with_fds(
    control: &AsyncFd<OwnedFd>,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>)> {
    let mut reset_seen = false;
    loop {
        let mut guard = control
            .readable()
            .await
            .map_err(Error::os("wait on the control socket"))?;
        match guard.try_io(|fd| sys::recv_with_fds(fd.as_fd(), buf)) {
            Ok(Ok(received)) => return Ok(received),
            Ok(Err(e)) if is_first_reset(&e, &mut reset_seen) => continue,
            Ok(Err(e)) => return Err(Error::os("read a message from the sandbox's PID 1")(e)),
            Err(_would_block) => continue,
        }
    }
}

/// Passes on the result of a send to PID 1 during setup. When the send
/// failed because PID 1 already exited, PID 1's own report (the setup step
/// that failed, or that it exited early) says more than the broken pipe,
/// so that is returned instead.
async fn explain_send_failure(
    sent: Result<()>,
    control: &AsyncFd<OwnedFd>,
    launch: &Launch,
) -> Result<()> {
    let Err(error) = sent else {
        return Ok(());
    };
    match wait_ready(control, launch).await.map(drop) {
        Err(report) => Err(report),
        Ok(()) => Err(error),
    }
}

/// Adds to an error from a PID 1 that broke off before it was ready
/// whether its program's copy in the state directory was damaged (and is
/// now removed, so that the next create writes it again). A failure that
/// PID 1 reported itself is returned as it is.
fn blame_damaged_program(error: Error) -> Error {
    if matches!(error, Error::Setup { .. }) {
        return error;
    }
    let Some(path) = init_binary::remove_if_damaged() else {
        return error;
    };
    let cause = match error {
        Error::Protocol(message) => message,
        other => other.to_string(),
    };
    Error::Protocol(format!(
        "{cause}; the copy of SoulBox's PID 1 program at {} did not match this build and was \
         removed, so the next create writes it again",
        path.display()
    ))
}

/// Waits for PID 1's ready reply, or the step that failed. Returns the
/// descriptors that PID 1 sends before it is ready: the sandbox's root,
/// and its writable layer where the configuration asked for it.
async fn wait_ready(
    control: &AsyncFd<OwnedFd>,
    launch: &Launch,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let mut buf = vec![0u8; soulbox_proto::MAX_MESSAGE_LEN];
    let mut root = None;
    let mut upper = None;
    loop {
        match next_setup_reply(control, launch, deadline, &mut buf).await? {
            (Reply::Root, fds) => {
                let mut fds = fds.into_iter();
                root = fds.next();
                upper = fds.next();
            }
            (Reply::Ready, _) => return Ok((root, upper)),
            (
                Reply::SetupFailed {
                    stage,
                    errno,
                    detail,
                },
                _,
            ) => return Err(setup_error(stage, errno, &detail)),
            (other @ (Reply::Status { .. } | Reply::Socket | Reply::SocketFailed { .. }), _) => {
                return Err(Error::Protocol(format!(
                    "PID 1 sent {other:?} before it was ready"
                )))
            }
        }
    }
}

/// Receives PID 1's next reply during setup, with its descriptors, unless
/// `deadline` passes first.
async fn next_setup_reply(
    control: &AsyncFd<OwnedFd>,
    launch: &Launch,
    deadline: tokio::time::Instant,
    buf: &mut [u8],
) -> Result<(Reply, Vec<OwnedFd>)> {
    let received = tokio::time::timeout_at(deadline, receive_with_fds(control, buf)).await;
    let (len, fds) = match received {
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
    let reply = Reply::decode(&buf[..len]).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok((reply, fds))
}

fn setup_error(stage: SetupStage, errno: i32, detail: &[u8]) -> Error {
    let mut detail = String::from_utf8_lossy(detail).into_owned();
    if stage == SetupStage::Rlimits && errno == libc::EPERM {
        // PID 1 inherits this process's hard limits, and raising one needs
        // CAP_SYS_RESOURCE, which some hosts withhold even from root.
        detail.push_str(
            " is above the hard limit this process passed on, and raising it needs \
             CAP_SYS_RESOURCE: raise this process's hard limit (for open files, `ulimit -Hn` \
             in its shell) or ask for a lower limit (open_files_limit, file_size_limit)",
        );
    }
    if stage == SetupStage::Mounts && errno == libc::EROFS {
        // The mount point did not exist, and a directory on the way to it
        // is read-only, such as the `host` template's /usr.
        detail.push_str(
            ": a directory on the way to this target is read-only in the sandbox, as the \
             `host` template's /usr is, so its mount point cannot be made; choose a target \
             in a writable directory, such as one under /home/user or /mnt",
        );
    }
    if stage == SetupStage::EgressFilter
        && matches!(
            errno,
            libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::ENOENT
        )
    {
        // No nfnetlink (the socket), no nf_tables subsystem (the batch),
        // no IPv4 family (the table), no backend for interval sets (a
        // set), or no filter chain type or expression (the chain or a
        // rule). The set backends had their own options until they moved
        // into one module and then into nf_tables, in Linux 4.19 and 5.7
        // by the dates of the two netfilter patches.
        detail.push_str(
            "the kernel lacks nf_tables (CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV4 and \
             CONFIG_NFT_REJECT_IPV4, and for interval sets CONFIG_NF_TABLES_SET on Linux 4.19 \
             to 5.6 or CONFIG_NFT_SET_RBTREE before 4.19), which deny_out entries need to \
             filter sockets bound to an interface; use a kernel with nf_tables or create the \
             sandbox without deny_out entries",
        );
    }
    Error::Setup {
        stage: stage.name(),
        detail,
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

/// Resolves the template `name`. Preparing an image template reads and may
/// unpack large files, so on a multi-threaded runtime it runs in
/// `block_in_place`, which lets the runtime move its other tasks to
/// another thread meanwhile. The `host` template and directory templates
/// resolve in a few system calls and run directly.
/// Returns `options` with the resource defaults of a built template
/// applied where `options` keeps SoulBox's defaults; unchanged (and not
/// copied) for other templates.
fn with_template_resources<'a>(
    options: &'a SandboxOptions,
    startup: Option<&crate::build::Startup>,
) -> std::borrow::Cow<'a, SandboxOptions> {
    let Some(resources) = startup.map(|startup| &startup.resources) else {
        return std::borrow::Cow::Borrowed(options);
    };
    let mut options = options.clone();
    if let Some(memory) = resources.memory_mb {
        if options.memory_limit == Some(DEFAULT_MEMORY_LIMIT) {
            options.memory_limit = Some(memory << 20);
        }
    }
    if let Some(cpus) = resources.cpu_count {
        if options.cpu_limit.is_none() {
            options.cpu_limit = Some(cpus);
        }
    }
    if let Some(disk) = resources.disk_mb {
        if options.disk_size == DEFAULT_DISK_SIZE {
            options.disk_size = disk << 20;
        }
    }
    std::borrow::Cow::Owned(options)
}

pub(crate) fn resolve_template(
    name: &str,
    state_dir: &Path,
) -> Result<std::borrow::Cow<'static, template::Template>> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    template::resolve_in(name, state_dir, |prepare| match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(prepare)
        }
        _ => prepare(),
    })
}

/// Returns the command defaults of the image that the sandbox of `record`
/// was built from, for a handle from `connect`. The image is read again
/// from its template path. Where that fails, commands of this handle get
/// the defaults of the other templates, and a warning logs the reason.
fn connected_image_defaults(record: &Record) -> Option<Arc<ImageDefaults>> {
    if record.template == template::HOST {
        return None;
    }
    match template::image_defaults(&record.template) {
        Ok(image) => image,
        Err(error) => {
            // NOTE: the image may have changed or gone since the create;
            // commands then start as `user` in /home/user.
            tracing::warn!(
                sandbox_id = %record.id,
                template = %record.template,
                %error,
                "cannot read the sandbox's image again; its commands get SoulBox's defaults"
            );
            None
        }
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

impl Inner {
    /// Returns the pidfd of the sandbox's PID 1. It turns readable when PID 1
    /// exits, which ends the file API's directory watches.
    pub(crate) fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit above the inherited hard limit is explained in one
    /// readable sentence.
    #[test]
    fn rlimit_above_hard_limit_explained() {
        let message =
            setup_error(SetupStage::Rlimits, libc::EPERM, b"RLIMIT_NOFILE 1048576").to_string();
        assert!(
            message.contains("RLIMIT_NOFILE 1048576 is above the hard limit"),
            "{message}"
        );
        assert!(
            message.contains("needs CAP_SYS_RESOURCE: raise this process's hard limit"),
            "{message}"
        );
        assert!(!message.contains("  "), "{message}");
    }

    /// A kernel without nf_tables fails the egress filter with one of
    /// these errors, and the message must name the missing option.
    #[test]
    fn missing_nf_tables_named() {
        for errno in [
            libc::EPROTONOSUPPORT,
            libc::EAFNOSUPPORT,
            libc::EOPNOTSUPP,
            libc::ENOENT,
        ] {
            let message = setup_error(SetupStage::EgressFilter, errno, b"").to_string();
            assert!(
                message.contains("the kernel lacks nf_tables (CONFIG_NF_TABLES"),
                "errno {errno}: {message}"
            );
            assert!(
                message.contains("CONFIG_NFT_SET_RBTREE"),
                "errno {errno}: {message}"
            );
            assert!(
                message.contains("install the nf_tables egress filter"),
                "errno {errno}: {message}"
            );
        }
        let message = setup_error(SetupStage::EgressFilter, libc::ENOMEM, b"").to_string();
        assert!(!message.contains("lacks nf_tables"), "{message}");
    }

    /// A socket whose send buffer is below a request maps EMSGSIZE to an
    /// error that names net.core.wmem_max, as on a host that caps it low.
    #[test]
    fn small_send_buffer_names_wmem_max() {
        let (host_end, _init_end) = sys::seqpacket_pair().expect("socket pair");
        nix::sys::socket::setsockopt(&host_end, nix::sys::socket::sockopt::SndBuf, &4096)
            .expect("lower the send buffer");
        let request = vec![0u8; 64 * 1024];
        let error = sys::send_with_fds(host_end.as_fd(), &request, &[])
            .expect_err("a request above the send buffer");
        let message = send_failure(error, request.len()).to_string();
        assert!(
            message.contains("net.core.wmem_max"),
            "the message does not name the setting: {message}"
        );
        assert!(
            message.contains("65536 bytes"),
            "the message does not give the request's size: {message}"
        );
    }

    /// PID 1 may fail its setup and exit before it reads a message the
    /// host sent. Its report must still arrive, and then the end of file.
    #[tokio::test]
    async fn reply_survives_unread_request() {
        let (host_end, init_end) = sys::seqpacket_pair().expect("socket pair");
        sys::send_with_fds(host_end.as_fd(), b"unread request", &[]).expect("send the request");
        sys::send_with_fds(init_end.as_fd(), b"report", &[]).expect("send the report");
        drop(init_end);
        sys::set_nonblocking(host_end.as_fd()).expect("make the socket non-blocking");
        let control = sys::async_fd(host_end).expect("register the socket");
        let mut buf = [0u8; 64];
        let (len, _) = receive_with_fds(&control, &mut buf)
            .await
            .expect("the report");
        assert_eq!(&buf[..len], b"report");
        let (len, _) = receive_with_fds(&control, &mut buf)
            .await
            .expect("the end of file");
        assert_eq!(len, 0);
    }
}
