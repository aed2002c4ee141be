//! Wire format between the SoulBox host library and the sandbox's PID 1.
//!
//! The host and PID 1 talk over a `SOCK_SEQPACKET` socket pair, so every
//! message arrives whole. A message is a four-byte header (magic, protocol
//! version, message kind) followed by fields in a fixed order. Integers are
//! little-endian; byte strings are a `u32` length and the bytes. Decoding
//! checks every length against the bytes received and against the limits
//! below, and rejects trailing bytes, so a truncated, oversized or garbled
//! message is an error and never a panic.
//!
//! A command's exit is not sent over the socket: the process that supervises
//! the command writes fixed-size [`StatusRecord`]s into a pipe whose read end
//! the host holds, so the host learns of exits without a round trip through
//! PID 1.

#![forbid(unsafe_code)]

use std::fmt;

pub mod zygote;

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"SB";
/// Protocol version; PID 1 rejects a message whose version differs.
pub const VERSION: u8 = 1;
/// Maximum size of one encoded message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// Maximum number of strings in one list (argv, env, mounts).
pub const MAX_LIST_LEN: usize = 4096;
/// Number of file descriptors sent with a [`Spawn`] message: stdin, stdout,
/// stderr and the status pipe, in that order.
pub const SPAWN_FD_COUNT: usize = 4;
/// Size in bytes of one BPF instruction in [`Config::seccomp_filter`].
pub const SOCK_FILTER_LEN: usize = 8;
/// Maximum number of instructions in [`Config::seccomp_filter`]: the
/// kernel's BPF_MAXINSNS from <linux/bpf_common.h>.
pub const MAX_SECCOMP_INSTRUCTIONS: usize = 4096;
/// Maximum number of egress rules, [`Config::allow_out`] and
/// [`Config::deny_out`] together, that PID 1 decodes. The host library
/// sends fewer: it takes at most 256 entries from the caller and may add
/// one rule of its own.
pub const MAX_EGRESS_RULES: usize = 512;

/// A decoding failure; the message is discarded whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended before the named field.
    Truncated(&'static str),
    /// The header's magic bytes are wrong.
    BadMagic,
    /// The header names a protocol version this side does not speak.
    UnsupportedVersion(u8),
    /// The message kind is unknown.
    UnknownKind(u8),
    /// A length or count exceeds the protocol's limits.
    TooLong(&'static str),
    /// Bytes remain after the last field.
    TrailingBytes(usize),
    /// A field contains a value outside its range.
    InvalidField(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(field) => write!(f, "message truncated at field {field}"),
            Self::BadMagic => write!(f, "message has bad magic bytes"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "protocol version {v} is not supported (expected {VERSION})"
                )
            }
            Self::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Self::TooLong(field) => write!(f, "field {field} exceeds the protocol limit"),
            Self::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the message"),
            Self::InvalidField(field) => write!(f, "field {field} holds an invalid value"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A bind mount of a host path into the sandbox root, made read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute host path.
    pub source: Vec<u8>,
    /// Absolute path inside the sandbox.
    pub target: Vec<u8>,
}

/// A host file or directory that the caller mounts into the sandbox. PID 1
/// clones it before it leaves the host's mount tree and attaches it at
/// `target` afterwards, so that `target` resolves inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    /// Absolute host path, resolved by the host.
    pub source: Vec<u8>,
    /// Absolute path inside the sandbox.
    pub target: Vec<u8>,
    /// Whether the sandbox may write to it; read-only otherwise.
    pub writable: bool,
}

/// An IPv4 network: the address's first `prefix_len` bits, with every
/// later bit zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The network address, most significant byte first.
    pub address: [u8; 4],
    /// Number of leading bits that name the network, 0 to 32.
    pub prefix_len: u8,
}

/// First message from the host: everything PID 1 needs to build the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Sandbox id, also used as the hostname.
    pub sandbox_id: Vec<u8>,
    /// Read-only lower layers of the root overlay, top first.
    pub lower_dirs: Vec<Vec<u8>>,
    /// Host paths bound read-only into the root.
    pub binds: Vec<BindMount>,
    /// Empty host directory that PID 1 mounts its scratch tmpfs on, inside
    /// its own mount namespace; the host never sees that mount.
    pub scratch_dir: Vec<u8>,
    /// Size of the tmpfs that contains the writable layer, in bytes.
    pub scratch_size: u64,
    /// Inode limit of that tmpfs.
    pub scratch_inodes: u64,
    /// Size of the sandbox's /tmp, in bytes.
    pub tmp_size: u64,
    /// RLIMIT_NOFILE for every process.
    pub open_files_limit: u64,
    /// RLIMIT_FSIZE for every process, in bytes; u64::MAX for none.
    pub file_size_limit: u64,
    /// Milliseconds from now until PID 1 ends the sandbox; 0 means no limit.
    pub timeout_ms: u64,
    /// The seccomp filter PID 1 installs last: classic BPF instructions
    /// (`struct sock_filter`), each [`SOCK_FILTER_LEN`] bytes of `code`
    /// (u16), `jt`, `jf` (u8 each) and `k` (u32), at most
    /// [`MAX_SECCOMP_INSTRUCTIONS`] of them. Empty installs no filter.
    pub seccomp_filter: Vec<u8>,
    /// Build the sandbox at the scheduler's idle priority (`SCHED_IDLE`),
    /// returning to the normal policy before reporting ready: a warm pool's
    /// refill then yields the CPU to the sandboxes already in use.
    pub background: bool,
    /// The caller's host paths to mount, in order.
    pub mounts: Vec<HostMount>,
    /// Contents that PID 1 writes to /etc/resolv.conf once the root is
    /// built; empty keeps the template's file.
    pub resolv_conf: Vec<u8>,
    /// Destinations that stay reachable even inside a `deny_out` network.
    pub allow_out: Vec<Ipv4Cidr>,
    /// Destinations that the sandbox may not send to, unless an
    /// `allow_out` network contains them. Together with `allow_out`, at
    /// most [`MAX_EGRESS_RULES`] networks.
    pub deny_out: Vec<Ipv4Cidr>,
    /// At the deadline, freeze the sandbox instead of ending it, by writing
    /// "1" to the sandbox's `cgroup.freeze` file, whose descriptor comes
    /// last with the configuration. The next [`Request::Resume`] then sets
    /// a deadline of `resume_timeout_ms` from the resume.
    pub pause_on_timeout: bool,
    /// Milliseconds until the deadline that a resume after a pause at the
    /// deadline sets; 0 means no limit. Unused without `pause_on_timeout`.
    pub resume_timeout_ms: u64,
    /// Send a descriptor of the overlay's upper directory (the writable
    /// layer) with [`Reply::Root`], after the root's. A template build
    /// copies the layer from it once the sandbox has ended.
    pub send_upper: bool,
}

/// The part of a [`Config`] that decides the sandbox's root before /proc:
/// the overlay, the host binds, /dev and /tmp. Sandboxes whose plans are
/// equal get the same tree, so the zygote can build one ahead of the
/// create that needs it (see [`zygote::ForkRequest::root`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan {
    /// [`Config::lower_dirs`].
    pub lower_dirs: Vec<Vec<u8>>,
    /// [`Config::binds`].
    pub binds: Vec<BindMount>,
    /// [`Config::scratch_dir`].
    pub scratch_dir: Vec<u8>,
    /// [`Config::scratch_size`].
    pub scratch_size: u64,
    /// [`Config::scratch_inodes`].
    pub scratch_inodes: u64,
    /// [`Config::tmp_size`].
    pub tmp_size: u64,
}

impl Config {
    /// Returns the plan of this configuration's root.
    pub fn root_plan(&self) -> RootPlan {
        RootPlan {
            lower_dirs: self.lower_dirs.clone(),
            binds: self.binds.clone(),
            scratch_dir: self.scratch_dir.clone(),
            scratch_size: self.scratch_size,
            scratch_inodes: self.scratch_inodes,
            tmp_size: self.tmp_size,
        }
    }

    /// Returns whether this configuration's root matches `plan`.
    pub fn has_root_plan(&self, plan: &RootPlan) -> bool {
        self.lower_dirs == plan.lower_dirs
            && self.binds == plan.binds
            && self.scratch_dir == plan.scratch_dir
            && self.scratch_size == plan.scratch_size
            && self.scratch_inodes == plan.scratch_inodes
            && self.tmp_size == plan.tmp_size
    }
}

/// Starts a command. Sent with [`SPAWN_FD_COUNT`] file descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    /// Host-chosen id that later [`Signal`] messages refer to.
    pub command_id: u64,
    /// Program and arguments; a program without `/` is searched in `PATH`.
    pub argv: Vec<Vec<u8>>,
    /// Complete environment as `KEY=VALUE` entries.
    pub env: Vec<Vec<u8>>,
    /// Absolute working directory inside the sandbox.
    pub cwd: Vec<u8>,
    /// User id the command runs as.
    pub uid: u32,
    /// Group id the command runs as.
    pub gid: u32,
    /// When true, stdin is the subsidiary end of a pseudo-terminal, which
    /// becomes the command's controlling terminal.
    pub pty: bool,
    /// When true, the sandbox ends once the leader has exited and its exit
    /// is reported: PID 1 exits, and the kernel kills what is left.
    pub ends_sandbox: bool,
}

/// Sends a signal to a command's leader, or to its whole process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The id given in [`Spawn`].
    pub command_id: u64,
    /// The command's leader as reported in [`StatusRecord::Started`]. PID 1
    /// signals it only while it is still that command's leader.
    pub pid: u32,
    /// Signal number.
    pub signal: i32,
    /// When true, SIGKILL every process descended from the command and
    /// ignore `signal`.
    pub kill_tree: bool,
}

/// A message from the host to PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// See [`Config`].
    Config(Config),
    /// See [`Spawn`].
    Spawn(Spawn),
    /// See [`Signal`].
    Signal(Signal),
    /// Replaces the sandbox's deadline: milliseconds from now, 0 for none.
    SetTimeout(u64),
    /// Sent once after [`Config`]: the host has moved PID 1 into the
    /// sandbox's cgroups, so PID 1 may enter its cgroup namespace. It comes
    /// with the `tasks` files of the v1 cgroups that PID 1 joins itself.
    Attached {
        /// The placement of the commands under the memory limit, which
        /// keeps PID 1 from the OOM killer.
        command_memory: CommandMemory,
    },
    /// Sent on the creating connection once the host has recorded the
    /// sandbox: from then on the sandbox outlives that connection. Without
    /// it, PID 1 ends the sandbox when the creating connection closes.
    Persist,
    /// The host is about to freeze the sandbox. PID 1 stores the time left
    /// until its deadline and replies with [`Reply::Status`]; the deadline
    /// keeps running, so a host that dies before freezing leaks nothing.
    Pause,
    /// Queued by the host before it thaws the sandbox: the deadline becomes
    /// now plus the time left that [`Request::Pause`] stored, so frozen time
    /// does not count. Ignored when no pause is stored.
    Resume,
    /// Asks for a [`Reply::Status`] on the same connection.
    Status,
    /// Asks PID 1 for a TCP socket connecting to a port of the sandbox's
    /// loopback interface, for the host's port forwarding. PID 1 starts a
    /// non-blocking connect and replies on the same connection with
    /// [`Reply::Socket`] and the socket, or [`Reply::SocketFailed`].
    OpenTcp {
        /// The port inside the sandbox.
        port: u16,
        /// Connect to ::1 instead of 127.0.0.1.
        ipv6: bool,
    },
}

/// The step of sandbox setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SetupStage {
    /// Reading or decoding the configuration.
    Config = 1,
    /// Entering a fresh cgroup namespace.
    CgroupNamespace = 2,
    /// Making every mount private.
    MountPropagation = 3,
    /// Mounting the scratch tmpfs.
    Scratch = 4,
    /// Mounting the root overlay.
    Overlay = 5,
    /// Bind-mounting host directories.
    Binds = 6,
    /// Mounting /proc.
    Proc = 7,
    /// Building /dev.
    Dev = 8,
    /// Mounting /tmp.
    Tmp = 9,
    /// Writing generated files in /etc.
    EtcFiles = 10,
    /// Switching to the new root.
    PivotRoot = 11,
    /// Setting the hostname.
    Hostname = 12,
    /// Bringing up the loopback interface.
    Loopback = 13,
    /// Installing signal handling for the event loop.
    Signals = 14,
    /// Installing the seccomp filter.
    Seccomp = 15,
    /// Setting resource limits.
    Rlimits = 16,
    /// Joining the sandbox's v1 cgroups.
    Cgroup = 17,
    /// Leaving the idle scheduling priority of a background build.
    Scheduling = 18,
    /// Mounting the caller's host paths.
    Mounts = 19,
    /// Blocking link-local and metadata addresses of a sandbox with
    /// internet access.
    BlockedRoutes = 20,
    /// Installing the policy routing rules of `allow_out` and `deny_out`.
    EgressRules = 21,
    /// Installing the nf_tables table that applies `allow_out` and
    /// `deny_out` to every packet, including those of sockets bound to an
    /// interface.
    EgressFilter = 22,
}

impl SetupStage {
    /// Every stage, for decoding.
    pub const ALL: [SetupStage; 22] = [
        Self::Config,
        Self::CgroupNamespace,
        Self::MountPropagation,
        Self::Scratch,
        Self::Overlay,
        Self::Binds,
        Self::Proc,
        Self::Dev,
        Self::Tmp,
        Self::EtcFiles,
        Self::PivotRoot,
        Self::Hostname,
        Self::Loopback,
        Self::Signals,
        Self::Seccomp,
        Self::Rlimits,
        Self::Cgroup,
        Self::Scheduling,
        Self::Mounts,
        Self::BlockedRoutes,
        Self::EgressRules,
        Self::EgressFilter,
    ];

    /// Short lowercase name of the step, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Config => "read configuration",
            Self::CgroupNamespace => "enter cgroup namespace",
            Self::MountPropagation => "make mounts private",
            Self::Scratch => "mount scratch tmpfs",
            Self::Overlay => "mount root overlay",
            Self::Binds => "bind host directories",
            Self::Proc => "mount /proc",
            Self::Dev => "build /dev",
            Self::Tmp => "mount /tmp",
            Self::EtcFiles => "write /etc files",
            Self::PivotRoot => "pivot_root",
            Self::Hostname => "set hostname",
            Self::Loopback => "bring up loopback",
            Self::Signals => "set up signal handling",
            Self::Seccomp => "install the seccomp filter",
            Self::Rlimits => "set resource limits",
            Self::Cgroup => "join the v1 cgroups",
            Self::Scheduling => "return to the normal scheduling policy",
            Self::Mounts => "mount host paths",
            Self::BlockedRoutes => "block link-local and metadata addresses",
            Self::EgressRules => "install the egress rules",
            Self::EgressFilter => "install the nf_tables egress filter",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u8 == value)
    }
}

/// A message from PID 1 to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Comes with a descriptor of the sandbox's root directory, once PID 1
    /// has switched to it and before [`Reply::Ready`].
    Root,
    /// The sandbox is built and PID 1 accepts commands.
    Ready,
    /// Setup failed at `stage` with OS error `errno`; PID 1 exits after this.
    SetupFailed {
        /// The failed step.
        stage: SetupStage,
        /// The OS error number.
        errno: i32,
        /// Extra context, such as the path involved.
        detail: Vec<u8>,
    },
    /// Answer to [`Request::Status`] and [`Request::Pause`].
    Status {
        /// Milliseconds left until the deadline, [`NO_DEADLINE`] for none.
        remaining_ms: u64,
    },
    /// Reply to [`Request::OpenTcp`]. It comes with the socket, whose
    /// connect may still be in progress.
    Socket,
    /// Reply to [`Request::OpenTcp`] when no socket could be made or its
    /// connect failed at once.
    SocketFailed {
        /// The OS error number.
        errno: i32,
    },
}

/// [`Reply::Status`] value for a sandbox without a deadline.
pub const NO_DEADLINE: u64 = u64::MAX;

const KIND_CONFIG: u8 = 1;
const KIND_SPAWN: u8 = 2;
const KIND_SIGNAL: u8 = 3;
const KIND_SET_TIMEOUT: u8 = 4;
const KIND_ATTACHED: u8 = 5;
const KIND_PERSIST: u8 = 6;
const KIND_PAUSE: u8 = 7;
const KIND_RESUME: u8 = 8;
const KIND_STATUS: u8 = 9;
const KIND_OPEN_TCP: u8 = 10;
const KIND_READY: u8 = 64;
const KIND_SETUP_FAILED: u8 = 65;
const KIND_STATUS_REPLY: u8 = 66;
const KIND_ROOT: u8 = 67;
const KIND_SOCKET: u8 = 68;
const KIND_SOCKET_FAILED: u8 = 69;

/// Appends fields to a message buffer.
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn new(kind: u8) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(kind);
        Self { buf }
    }

    /// Returns an encoder for fields that follow a header of another form.
    fn headless(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn binds(&mut self, binds: &[BindMount]) {
        self.u32(u32::try_from(binds.len()).unwrap_or(u32::MAX));
        for b in binds {
            self.bytes(&b.source);
            self.bytes(&b.target);
        }
    }

    fn root_plan(&mut self, plan: &RootPlan) {
        self.list(&plan.lower_dirs);
        self.binds(&plan.binds);
        self.bytes(&plan.scratch_dir);
        self.u64(plan.scratch_size);
        self.u64(plan.scratch_inodes);
        self.u64(plan.tmp_size);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        // Lengths above u32::MAX cannot pass the MAX_MESSAGE_LEN check in
        // `finish`, so saturating here only keeps the arithmetic total.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
    }

    fn list(&mut self, items: &[Vec<u8>]) {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for item in items {
            self.bytes(item);
        }
    }

    fn cidrs(&mut self, networks: &[Ipv4Cidr]) {
        self.u32(u32::try_from(networks.len()).unwrap_or(u32::MAX));
        for network in networks {
            self.buf.extend_from_slice(&network.address);
            self.u8(network.prefix_len);
        }
    }

    fn finish(self) -> Result<Vec<u8>, EncodeError> {
        if self.buf.len() > MAX_MESSAGE_LEN {
            return Err(EncodeError {
                len: self.buf.len(),
            });
        }
        Ok(self.buf)
    }
}

/// The encoded message would exceed [`MAX_MESSAGE_LEN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    /// Encoded length in bytes.
    pub len: usize,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message of {} bytes exceeds the {MAX_MESSAGE_LEN}-byte protocol limit",
            self.len
        )
    }
}

impl std::error::Error for EncodeError {}

/// Reads fields from a received message, checking every bound.
struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Checks the header and returns the decoder and the message kind.
    fn new(msg: &'a [u8]) -> Result<(Self, u8), DecodeError> {
        if msg.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong("message"));
        }
        let mut d = Self { rest: msg };
        let magic = d.take(2, "magic")?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = d.u8("kind")?;
        Ok((d, kind))
    }

    /// Returns a decoder for fields that follow a header of another form.
    fn headless(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn binds(&mut self) -> Result<Vec<BindMount>, DecodeError> {
        let count = self.u32("binds")? as usize;
        if count > MAX_LIST_LEN {
            return Err(DecodeError::TooLong("binds"));
        }
        let mut binds = Vec::new();
        for _ in 0..count {
            let source = self.bytes("bind source")?;
            let target = self.bytes("bind target")?;
            binds.push(BindMount { source, target });
        }
        Ok(binds)
    }

    fn root_plan(&mut self) -> Result<RootPlan, DecodeError> {
        Ok(RootPlan {
            lower_dirs: self.list("lower_dirs")?,
            binds: self.binds()?,
            scratch_dir: self.bytes("scratch_dir")?,
            scratch_size: self.u64("scratch_size")?,
            scratch_inodes: self.u64("scratch_inodes")?,
            tmp_size: self.u64("tmp_size")?,
        })
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidField(field)),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(field)? as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong(field));
        }
        Ok(self.take(len, field)?.to_vec())
    }

    fn list(&mut self, field: &'static str) -> Result<Vec<Vec<u8>>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > MAX_LIST_LEN {
            return Err(DecodeError::TooLong(field));
        }
        // Each entry needs at least its 4-byte length, so a count larger than
        // the remaining bytes allow is rejected before allocating.
        if count > self.rest.len() / 4 {
            return Err(DecodeError::Truncated(field));
        }
        (0..count).map(|_| self.bytes(field)).collect()
    }

    /// Reads a list of IPv4 networks of at most `limit` entries, each with
    /// a prefix length of at most 32 and no bit set after it.
    fn cidrs(&mut self, field: &'static str, limit: usize) -> Result<Vec<Ipv4Cidr>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > limit {
            return Err(DecodeError::TooLong(field));
        }
        let mut networks = Vec::with_capacity(count);
        for _ in 0..count {
            let address = self.array::<4>(field)?;
            let prefix_len = self.u8(field)?;
            if prefix_len > 32 {
                return Err(DecodeError::InvalidField(field));
            }
            let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
            if u32::from_be_bytes(address) & host_bits != 0 {
                return Err(DecodeError::InvalidField(field));
            }
            networks.push(Ipv4Cidr {
                address,
                prefix_len,
            });
        }
        Ok(networks)
    }

    /// Reads a BPF program: whole instructions, at most the kernel's limit.
    fn seccomp_filter(&mut self) -> Result<Vec<u8>, DecodeError> {
        const FIELD: &str = "seccomp_filter";
        let program = self.bytes(FIELD)?;
        if program.len() > MAX_SECCOMP_INSTRUCTIONS * SOCK_FILTER_LEN {
            return Err(DecodeError::TooLong(FIELD));
        }
        if program.len() % SOCK_FILTER_LEN != 0 {
            return Err(DecodeError::InvalidField(FIELD));
        }
        Ok(program)
    }

    fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError::TrailingBytes(self.rest.len()))
        }
    }
}

impl Request {
    /// Encodes the request into one message.
    ///
    /// # Errors
    ///
    /// Returns [`EncodeError`] when the message would exceed
    /// [`MAX_MESSAGE_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Self::Config(c) => {
                let mut e = Encoder::new(KIND_CONFIG);
                e.bytes(&c.sandbox_id);
                e.list(&c.lower_dirs);
                e.binds(&c.binds);
                e.bytes(&c.scratch_dir);
                e.u64(c.scratch_size);
                e.u64(c.scratch_inodes);
                e.u64(c.tmp_size);
                e.u64(c.open_files_limit);
                e.u64(c.file_size_limit);
                e.u64(c.timeout_ms);
                e.bytes(&c.seccomp_filter);
                e.u8(u8::from(c.background));
                e.bytes(&c.resolv_conf);
                e.u8(u8::from(c.send_upper));
                e.u32(u32::try_from(c.mounts.len()).unwrap_or(u32::MAX));
                for m in &c.mounts {
                    e.bytes(&m.source);
                    e.bytes(&m.target);
                    e.u8(u8::from(m.writable));
                }
                e.cidrs(&c.allow_out);
                e.cidrs(&c.deny_out);
                e.u8(u8::from(c.pause_on_timeout));
                e.u64(c.resume_timeout_ms);
                e.finish()
            }
            Self::Spawn(s) => {
                let mut e = Encoder::new(KIND_SPAWN);
                e.u64(s.command_id);
                e.list(&s.argv);
                e.list(&s.env);
                e.bytes(&s.cwd);
                e.u32(s.uid);
                e.u32(s.gid);
                e.u8(u8::from(s.pty));
                e.u8(u8::from(s.ends_sandbox));
                e.finish()
            }
            Self::Signal(s) => {
                let mut e = Encoder::new(KIND_SIGNAL);
                e.u64(s.command_id);
                e.u32(s.pid);
                e.i32(s.signal);
                e.u8(u8::from(s.kill_tree));
                e.finish()
            }
            Self::SetTimeout(ms) => {
                let mut e = Encoder::new(KIND_SET_TIMEOUT);
                e.u64(*ms);
                e.finish()
            }
            Self::Attached { command_memory } => {
                let mut e = Encoder::new(KIND_ATTACHED);
                e.u8(*command_memory as u8);
                e.finish()
            }
            Self::Persist => Encoder::new(KIND_PERSIST).finish(),
            Self::Pause => Encoder::new(KIND_PAUSE).finish(),
            Self::Resume => Encoder::new(KIND_RESUME).finish(),
            Self::Status => Encoder::new(KIND_STATUS).finish(),
            Self::OpenTcp { port, ipv6 } => {
                let mut e = Encoder::new(KIND_OPEN_TCP);
                e.u32(u32::from(*port));
                e.u8(u8::from(*ipv6));
                e.finish()
            }
        }
    }

    /// Decodes one message.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] for any message that is not exactly one valid
    /// request.
    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let (mut d, kind) = Decoder::new(msg)?;
        match kind {
            KIND_CONFIG => {
                let sandbox_id = d.bytes("sandbox_id")?;
                let lower_dirs = d.list("lower_dirs")?;
                let binds = d.binds()?;
                let config = Config {
                    sandbox_id,
                    lower_dirs,
                    binds,
                    scratch_dir: d.bytes("scratch_dir")?,
                    scratch_size: d.u64("scratch_size")?,
                    scratch_inodes: d.u64("scratch_inodes")?,
                    tmp_size: d.u64("tmp_size")?,
                    open_files_limit: d.u64("open_files_limit")?,
                    file_size_limit: d.u64("file_size_limit")?,
                    timeout_ms: d.u64("timeout_ms")?,
                    seccomp_filter: d.seccomp_filter()?,
                    background: d.bool("background")?,
                    resolv_conf: d.bytes("resolv_conf")?,
                    send_upper: d.bool("send_upper")?,
                    mounts: Vec::new(),
                    allow_out: Vec::new(),
                    deny_out: Vec::new(),
                    pause_on_timeout: false,
                    resume_timeout_ms: 0,
                };
                let count = d.u32("mounts")? as usize;
                if count > MAX_LIST_LEN {
                    return Err(DecodeError::TooLong("mounts"));
                }
                let mut config = config;
                for _ in 0..count {
                    config.mounts.push(HostMount {
                        source: d.bytes("mount source")?,
                        target: d.bytes("mount target")?,
                        writable: d.bool("mount writable")?,
                    });
                }
                config.allow_out = d.cidrs("allow_out", MAX_EGRESS_RULES)?;
                let remaining = MAX_EGRESS_RULES - config.allow_out.len();
                config.deny_out = d.cidrs("deny_out", remaining)?;
                config.pause_on_timeout = d.bool("pause_on_timeout")?;
                config.resume_timeout_ms = d.u64("resume_timeout_ms")?;
                d.finish(Self::Config(config))
            }
            KIND_SPAWN => {
                let spawn = Spawn {
                    command_id: d.u64("command_id")?,
                    argv: d.list("argv")?,
                    env: d.list("env")?,
                    cwd: d.bytes("cwd")?,
                    uid: d.u32("uid")?,
                    gid: d.u32("gid")?,
                    pty: d.bool("pty")?,
                    ends_sandbox: d.bool("ends_sandbox")?,
                };
                if spawn.argv.is_empty() {
                    return Err(DecodeError::InvalidField("argv"));
                }
                d.finish(Self::Spawn(spawn))
            }
            KIND_SIGNAL => {
                let signal = Signal {
                    command_id: d.u64("command_id")?,
                    pid: d.u32("pid")?,
                    signal: d.i32("signal")?,
                    kill_tree: d.bool("kill_tree")?,
                };
                d.finish(Self::Signal(signal))
            }
            KIND_SET_TIMEOUT => {
                let ms = d.u64("timeout_ms")?;
                d.finish(Self::SetTimeout(ms))
            }
            KIND_ATTACHED => {
                let command_memory = CommandMemory::from_u8(d.u8("command_memory")?)
                    .ok_or(DecodeError::InvalidField("command_memory"))?;
                d.finish(Self::Attached { command_memory })
            }
            KIND_PERSIST => d.finish(Self::Persist),
            KIND_PAUSE => d.finish(Self::Pause),
            KIND_RESUME => d.finish(Self::Resume),
            KIND_STATUS => d.finish(Self::Status),
            KIND_OPEN_TCP => {
                let port =
                    u16::try_from(d.u32("port")?).map_err(|_| DecodeError::InvalidField("port"))?;
                let ipv6 = d.bool("ipv6")?;
                d.finish(Self::OpenTcp { port, ipv6 })
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

impl Reply {
    /// Encodes the reply into one message.
    ///
    /// # Errors
    ///
    /// Returns [`EncodeError`] when the message would exceed
    /// [`MAX_MESSAGE_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Self::Ready => Encoder::new(KIND_READY).finish(),
            Self::Root => Encoder::new(KIND_ROOT).finish(),
            Self::SetupFailed {
                stage,
                errno,
                detail,
            } => {
                let mut e = Encoder::new(KIND_SETUP_FAILED);
                e.u8(*stage as u8);
                e.i32(*errno);
                e.bytes(detail);
                e.finish()
            }
            Self::Status { remaining_ms } => {
                let mut e = Encoder::new(KIND_STATUS_REPLY);
                e.u64(*remaining_ms);
                e.finish()
            }
            Self::Socket => Encoder::new(KIND_SOCKET).finish(),
            Self::SocketFailed { errno } => {
                let mut e = Encoder::new(KIND_SOCKET_FAILED);
                e.i32(*errno);
                e.finish()
            }
        }
    }

    /// Decodes one message.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] for any message that is not exactly one valid
    /// reply.
    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let (mut d, kind) = Decoder::new(msg)?;
        match kind {
            KIND_READY => d.finish(Self::Ready),
            KIND_ROOT => d.finish(Self::Root),
            KIND_SETUP_FAILED => {
                let stage = SetupStage::from_u8(d.u8("stage")?)
                    .ok_or(DecodeError::InvalidField("stage"))?;
                let errno = d.i32("errno")?;
                let detail = d.bytes("detail")?;
                d.finish(Self::SetupFailed {
                    stage,
                    errno,
                    detail,
                })
            }
            KIND_STATUS_REPLY => {
                let remaining_ms = d.u64("remaining_ms")?;
                d.finish(Self::Status { remaining_ms })
            }
            KIND_SOCKET => d.finish(Self::Socket),
            KIND_SOCKET_FAILED => {
                let errno = d.i32("errno")?;
                d.finish(Self::SocketFailed { errno })
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Size in bytes of one [`StatusRecord`] on the status pipe. It is below
/// `PIPE_BUF`, so each record is written atomically.
pub const STATUS_RECORD_LEN: usize = 12;

/// The placement of a sandbox's commands under its memory limit, which
/// keeps files that fill the limit from leaving PID 1 as the OOM killer's
/// only choice.
/// Such files belong to no process, so the killer then chooses by process
/// size, and PID 1 outweighs a small writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CommandMemory {
    /// No memory limit.
    Unlimited = 0,
    /// A v1 memory cgroup. The last two `tasks` files of
    /// [`Request::Attached`] are its and its parent's. PID 1 moves to the
    /// parent once it has entered its cgroup namespace, and each command's
    /// supervisor joins the sandbox's memory cgroup.
    JoinV1 = 1,
    /// A memory cgroup that PID 1 shares with its commands, so each
    /// supervisor raises its OOM score above PID 1's. It is a v2 cgroup, or
    /// a v1 memory cgroup that is the sandbox's only cgroup directory, which
    /// PID 1 stays in so that the sweep of empty cgroups keeps it.
    RaiseScore = 2,
}

impl CommandMemory {
    fn from_u8(value: u8) -> Option<Self> {
        [Self::Unlimited, Self::JoinV1, Self::RaiseScore]
            .into_iter()
            .find(|m| *m as u8 == value)
    }
}

/// The stage at which starting a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpawnStage {
    /// Creating the supervising process.
    Fork = 1,
    /// Changing into the working directory.
    Cwd = 2,
    /// Switching to the requested user and group.
    User = 3,
    /// Executing the program.
    Exec = 4,
    /// Preparing the standard streams.
    Stdio = 5,
    /// Joining the sandbox's v1 memory cgroup (see [`CommandMemory::JoinV1`]).
    MemoryCgroup = 6,
}

impl SpawnStage {
    fn from_u8(value: u8) -> Option<Self> {
        [
            Self::Fork,
            Self::Cwd,
            Self::User,
            Self::Exec,
            Self::Stdio,
            Self::MemoryCgroup,
        ]
        .into_iter()
        .find(|s| *s as u8 == value)
    }
}

/// A record written by a command's supervisor to the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRecord {
    /// The command is running with this pid (in the sandbox's PID namespace).
    Started {
        /// Process id of the command's leader.
        pid: u32,
    },
    /// The command could not start; no user code ran.
    SpawnFailed {
        /// The failed step.
        stage: SpawnStage,
        /// The OS error number.
        errno: i32,
    },
    /// The command's leader exited with this code.
    Exited {
        /// Exit code, 0 to 255.
        code: i32,
    },
    /// A signal ended the command's leader.
    Signaled {
        /// Signal number.
        signal: i32,
    },
}

impl StatusRecord {
    /// Encodes the record into its fixed-size form.
    pub fn encode(&self) -> [u8; STATUS_RECORD_LEN] {
        let (kind, a, b): (u32, i32, i32) = match *self {
            Self::Started { pid } => (1, pid as i32, 0),
            Self::SpawnFailed { stage, errno } => (2, i32::from(stage as u8), errno),
            Self::Exited { code } => (3, code, 0),
            Self::Signaled { signal } => (4, signal, 0),
        };
        let mut out = [0u8; STATUS_RECORD_LEN];
        out[0..4].copy_from_slice(&kind.to_le_bytes());
        out[4..8].copy_from_slice(&a.to_le_bytes());
        out[8..12].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Decodes one fixed-size record.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError`] for an unknown kind or out-of-range field.
    pub fn decode(raw: &[u8; STATUS_RECORD_LEN]) -> Result<Self, DecodeError> {
        let word = |i: usize| [raw[i], raw[i + 1], raw[i + 2], raw[i + 3]];
        let kind = u32::from_le_bytes(word(0));
        let a = i32::from_le_bytes(word(4));
        let b = i32::from_le_bytes(word(8));
        match kind {
            1 => {
                let pid = u32::try_from(a).map_err(|_| DecodeError::InvalidField("pid"))?;
                Ok(Self::Started { pid })
            }
            2 => {
                let stage = u8::try_from(a)
                    .ok()
                    .and_then(SpawnStage::from_u8)
                    .ok_or(DecodeError::InvalidField("stage"))?;
                Ok(Self::SpawnFailed { stage, errno: b })
            }
            3 if (0..=255).contains(&a) => Ok(Self::Exited { code: a }),
            4 if (1..=64).contains(&a) => Ok(Self::Signaled { signal: a }),
            3 => Err(DecodeError::InvalidField("code")),
            4 => Err(DecodeError::InvalidField("signal")),
            other => Err(DecodeError::UnknownKind(other as u8)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_config() -> Config {
        Config {
            sandbox_id: b"sb-abc".to_vec(),
            lower_dirs: vec![b"/run/soulbox/templates/host".to_vec()],
            binds: vec![BindMount {
                source: b"/usr".to_vec(),
                target: b"/usr".to_vec(),
            }],
            scratch_dir: b"/run/soulbox/scratch".to_vec(),
            scratch_size: 1 << 30,
            scratch_inodes: 1 << 16,
            tmp_size: 1 << 28,
            open_files_limit: 1024,
            file_size_limit: u64::MAX,
            timeout_ms: 300_000,
            // Two instructions: load the syscall number, allow.
            seccomp_filter: vec![0x20, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f],
            background: true,
            mounts: vec![HostMount {
                source: b"/srv/data".to_vec(),
                target: b"/home/user/data".to_vec(),
                writable: true,
            }],
            resolv_conf: b"nameserver 10.0.2.3\n".to_vec(),
            allow_out: vec![Ipv4Cidr {
                address: [10, 0, 2, 3],
                prefix_len: 32,
            }],
            deny_out: vec![Ipv4Cidr {
                address: [0, 0, 0, 0],
                prefix_len: 0,
            }],
            pause_on_timeout: true,
            resume_timeout_ms: 2_000,
            send_upper: true,
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Config(sample_config()),
            Request::Spawn(Spawn {
                command_id: 7,
                argv: vec![b"/bin/true".to_vec()],
                env: vec![b"A=1".to_vec()],
                cwd: b"/home/user".to_vec(),
                uid: 1000,
                gid: 1000,
                pty: false,
                ends_sandbox: true,
            }),
            Request::Signal(Signal {
                command_id: 7,
                pid: 2,
                signal: 15,
                kill_tree: true,
            }),
            Request::SetTimeout(5),
            Request::Attached {
                command_memory: CommandMemory::Unlimited,
            },
            Request::Attached {
                command_memory: CommandMemory::JoinV1,
            },
            Request::Attached {
                command_memory: CommandMemory::RaiseScore,
            },
            Request::Persist,
            Request::Pause,
            Request::Resume,
            Request::Status,
            Request::OpenTcp {
                port: 8080,
                ipv6: true,
            },
        ];
        for request in requests {
            let encoded = request.encode().unwrap();
            assert_eq!(Request::decode(&encoded).unwrap(), request);
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Ready,
            Reply::Root,
            Reply::SetupFailed {
                stage: SetupStage::Overlay,
                errno: 22,
                detail: b"x".to_vec(),
            },
            Reply::Status { remaining_ms: 42 },
            Reply::Status {
                remaining_ms: NO_DEADLINE,
            },
            Reply::Socket,
            Reply::SocketFailed { errno: 111 },
        ];
        for reply in replies {
            let encoded = reply.encode().unwrap();
            assert_eq!(Reply::decode(&encoded).unwrap(), reply);
        }
    }

    #[test]
    fn every_truncation_rejected() {
        let encoded = Request::Config(sample_config()).encode().unwrap();
        for len in 0..encoded.len() {
            assert!(
                Request::decode(&encoded[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn seccomp_filter_bounds_checked() {
        let max = MAX_SECCOMP_INSTRUCTIONS * SOCK_FILTER_LEN;
        let cases = [
            (0, Ok(())),
            (SOCK_FILTER_LEN, Ok(())),
            (max, Ok(())),
            (
                SOCK_FILTER_LEN + 1,
                Err(DecodeError::InvalidField("seccomp_filter")),
            ),
            (7, Err(DecodeError::InvalidField("seccomp_filter"))),
            (
                max + SOCK_FILTER_LEN,
                Err(DecodeError::TooLong("seccomp_filter")),
            ),
        ];
        for (len, expected) in cases {
            let config = Config {
                seccomp_filter: vec![0; len],
                ..sample_config()
            };
            let encoded = Request::Config(config.clone()).encode().unwrap();
            let decoded = Request::decode(&encoded);
            match expected {
                Ok(()) => assert_eq!(decoded, Ok(Request::Config(config)), "{len} bytes"),
                Err(e) => assert_eq!(decoded, Err(e), "{len} bytes"),
            }
        }
    }

    #[test]
    fn egress_rules_checked() {
        let network = |address, prefix_len| Ipv4Cidr {
            address,
            prefix_len,
        };
        let decode = |allow_out: Vec<Ipv4Cidr>, deny_out: Vec<Ipv4Cidr>| {
            let config = Config {
                allow_out,
                deny_out,
                ..sample_config()
            };
            Request::decode(&Request::Config(config).encode().unwrap())
        };
        let all = network([0, 0, 0, 0], 0);
        assert!(decode(vec![network([192, 0, 2, 1], 32)], vec![all]).is_ok());
        assert_eq!(
            decode(vec![network([10, 0, 0, 0], 33)], vec![]),
            Err(DecodeError::InvalidField("allow_out"))
        );
        assert_eq!(
            decode(vec![], vec![network([10, 0, 0, 1], 8)]),
            Err(DecodeError::InvalidField("deny_out"))
        );
        assert_eq!(
            decode(vec![], vec![network([128, 0, 0, 0], 0)]),
            Err(DecodeError::InvalidField("deny_out"))
        );
        let half = MAX_EGRESS_RULES / 2;
        assert!(decode(vec![all; half], vec![all; half]).is_ok());
        assert_eq!(
            decode(vec![all; half], vec![all; half + 1]),
            Err(DecodeError::TooLong("deny_out"))
        );
        assert_eq!(
            decode(vec![all; MAX_EGRESS_RULES + 1], vec![]),
            Err(DecodeError::TooLong("allow_out"))
        );
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut encoded = Request::SetTimeout(1).encode().unwrap();
        encoded.push(0);
        assert_eq!(
            Request::decode(&encoded),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn wrong_version_rejected() {
        let mut encoded = Request::SetTimeout(1).encode().unwrap();
        encoded[2] = VERSION + 1;
        assert_eq!(
            Request::decode(&encoded),
            Err(DecodeError::UnsupportedVersion(VERSION + 1))
        );
    }

    #[test]
    fn huge_list_count_rejected_before_allocating() {
        let mut e = Encoder::new(KIND_SPAWN);
        e.u64(1);
        e.u32(u32::MAX);
        let encoded = e.finish().unwrap();
        assert_eq!(Request::decode(&encoded), Err(DecodeError::TooLong("argv")));
    }

    #[test]
    fn empty_argv_rejected() {
        let spawn = Spawn {
            command_id: 1,
            argv: vec![],
            env: vec![],
            cwd: b"/".to_vec(),
            uid: 0,
            gid: 0,
            pty: false,
            ends_sandbox: false,
        };
        let encoded = Request::Spawn(spawn).encode().unwrap();
        assert_eq!(
            Request::decode(&encoded),
            Err(DecodeError::InvalidField("argv"))
        );
    }

    #[test]
    fn oversized_message_not_encoded() {
        let spawn = Spawn {
            command_id: 1,
            argv: vec![vec![b'a'; MAX_MESSAGE_LEN]],
            env: vec![],
            cwd: b"/".to_vec(),
            uid: 0,
            gid: 0,
            pty: false,
            ends_sandbox: false,
        };
        assert!(Request::Spawn(spawn).encode().is_err());
    }

    #[test]
    fn status_records_round_trip() {
        let records = [
            StatusRecord::Started { pid: 42 },
            StatusRecord::SpawnFailed {
                stage: SpawnStage::Cwd,
                errno: 2,
            },
            StatusRecord::SpawnFailed {
                stage: SpawnStage::MemoryCgroup,
                errno: 19,
            },
            StatusRecord::Exited { code: 3 },
            StatusRecord::Signaled { signal: 9 },
        ];
        for record in records {
            assert_eq!(StatusRecord::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn status_record_out_of_range_rejected() {
        let mut raw = StatusRecord::Exited { code: 0 }.encode();
        raw[4..8].copy_from_slice(&300i32.to_le_bytes());
        assert!(StatusRecord::decode(&raw).is_err());
    }
}
