//! Running commands in a sandbox.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use soulbox_proto::{Request, Spawn, SpawnStage, StatusRecord};

use crate::error::{Error, Result};
use crate::image::{Account, ImageDefaults};
use crate::process::{
    self, CommandExit, CommandHandle, OutputStream, ProcessInfo, Started, StatusPipe, StdinWriter,
};
use crate::sandbox::{Inner, Sandbox};
use crate::sys;
use crate::template::{USER_HOME, USER_UID};

/// Default timeout of [`Command::output`], as E2B's `commands.run`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `PATH` inside the sandbox.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Exit status of a command's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// This signal ended it.
    Signal(i32),
}

impl ExitStatus {
    /// Returns whether the leader exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }

    /// Returns the exit code, unless a signal ended the leader.
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Code(code) => Some(code),
            Self::Signal(_) => None,
        }
    }

    /// Returns the signal that ended the leader, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Code(_) => None,
            Self::Signal(signal) => Some(signal),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// The result of a command run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status of the command's first process; `Signal(9)` after a
    /// timeout.
    pub status: ExitStatus,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
    /// Whether the command's timeout ended it.
    pub timed_out: bool,
    /// Whether the sandbox's out-of-memory killer ended it.
    pub oom_killed: bool,
}

impl Output {
    pub(crate) fn new(exit: CommandExit, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        Self {
            status: exit.status,
            stdout,
            stderr,
            timed_out: exit.timed_out,
            oom_killed: exit.oom_killed,
        }
    }

    /// Returns the output if the command exited with code 0, and otherwise
    /// an error that still carries the output, as E2B's `commands.run`
    /// raises.
    ///
    /// # Errors
    ///
    /// [`Error::CommandTimedOut`] when the timeout ended the command;
    /// [`Error::CommandExit`] for any other non-zero exit.
    pub fn check(self) -> Result<Self> {
        if self.timed_out {
            return Err(Error::CommandTimedOut {
                stdout: self.stdout,
                stderr: self.stderr,
            });
        }
        if self.status.success() {
            return Ok(self);
        }
        Err(Error::CommandExit {
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
            oom_killed: self.oom_killed,
        })
    }
}

/// A command to run in a sandbox, configured like [`std::process::Command`].
///
/// The command runs as `user` (uid 1000) in `/home/user` unless
/// configured otherwise. Its environment is a default one (`PATH`, `HOME`, `USER`,
/// `LOGNAME`, `SHELL`, `LANG`), then the sandbox's envs, then the
/// command's own. Its stdin is /dev/null.
#[derive(Debug)]
pub struct Command {
    sandbox: Arc<Inner>,
    spec: CommandSpec,
    /// Whether [`Command::timeout`] was called; [`Command::start`] has no
    /// timeout otherwise.
    timeout_set: bool,
}

/// A command apart from any sandbox, for [`Sandbox::create_and_start`].
/// Each field means what the [`Command`] setter of the same name sets.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommandSpec {
    /// The program, then its arguments.
    pub argv: Vec<OsString>,
    /// Variables over the sandbox's; a later one wins.
    pub envs: Vec<(OsString, OsString)>,
    /// Working directory; a relative path starts at the user's home.
    pub cwd: Option<String>,
    /// `user` (the default) or `root`.
    pub user: Option<String>,
    /// How long the command may run before its process tree is killed;
    /// `None` for no limit.
    pub timeout: Option<Duration>,
    /// Keeps stdin open for [`CommandHandle::send_stdin`]; otherwise the
    /// command reads /dev/null.
    pub stdin: bool,
    /// A name for [`crate::Commands::connect`].
    pub tag: Option<String>,
    /// Ends the sandbox when the command's first process exits, once its
    /// exit is reported: PID 1 exits, and the kernel kills every process
    /// left in the sandbox. For a sandbox made to run one command. A
    /// command that cannot start leaves the sandbox running.
    pub ends_sandbox: bool,
}

impl CommandSpec {
    /// Returns a command that runs `program` with no arguments and no time
    /// limit.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            argv: vec![program.as_ref().to_owned()],
            envs: Vec::new(),
            cwd: None,
            user: None,
            timeout: None,
            stdin: false,
            tag: None,
            ends_sandbox: false,
        }
    }
}

impl Sandbox {
    /// Prepares `program` to run with no shell involved.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut spec = CommandSpec::new(program);
        spec.timeout = Some(DEFAULT_COMMAND_TIMEOUT);
        Command {
            sandbox: Arc::clone(&self.inner),
            spec,
            timeout_set: false,
        }
    }

    /// Prepares a command line to run through `/bin/bash -l -c`, or
    /// `/bin/sh -c` where the template has no bash, as E2B does.
    pub fn shell(&self, command_line: impl AsRef<OsStr>) -> Command {
        let (program, rest) = self
            .inner
            .shell
            .split_first()
            .expect("shell prefix is not empty");
        let mut command = self.command(program);
        command.args(rest).arg(command_line);
        command
    }

    /// Prepares an interactive login shell for a PTY: `/bin/bash -i -l`, or
    /// `/bin/sh -i` where the template has no bash, with
    /// `TERM=xterm-256color` and a UTF-8 locale. Start it with
    /// [`Command::start_pty`].
    pub fn pty_shell(&self) -> Command {
        let mut command = if self.inner.shell[0] == "/bin/bash" {
            let mut command = self.command("/bin/bash");
            command.args(["-i", "-l"]);
            command
        } else {
            let mut command = self.command("/bin/sh");
            command.arg("-i");
            command
        };
        command
            .env("TERM", "xterm-256color")
            .env("LANG", "C.UTF-8")
            .timeout(None);
        command
    }

    /// Runs a command line through the shell (see [`Sandbox::shell`]) and
    /// returns its output.
    ///
    /// # Errors
    ///
    /// As [`Command::output`].
    pub async fn run(&self, command_line: impl AsRef<OsStr>) -> Result<Output> {
        self.shell(command_line).output().await
    }
}

impl Command {
    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.spec.argv.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spec
            .argv
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for this command, over the sandbox's.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.spec
            .envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets the working directory; a relative path is taken from the user's
    /// home. A directory that does not exist fails the start. The default
    /// is the user's home, or an image's `WorkingDir`.
    pub fn cwd(&mut self, dir: impl Into<String>) -> &mut Self {
        self.spec.cwd = Some(dir.into());
        self
    }

    /// Sets the user: `user` (the default) or `root`. In a rootless sandbox
    /// `root` is the only user and the default. In a sandbox built from an
    /// image, the image's `User` is the default, and a name from its
    /// /etc/passwd or `UID[:GID]` is accepted too.
    pub fn user(&mut self, name: impl Into<String>) -> &mut Self {
        self.spec.user = Some(name.into());
        self
    }

    /// Sets how long the command may run before its whole process tree is
    /// killed; `None` for no limit. [`Command::output`] defaults to 60 s,
    /// [`Command::start`] to no limit.
    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.spec.timeout = timeout;
        self.timeout_set = true;
        self
    }

    /// Keeps the command's stdin open for [`CommandHandle::send_stdin`];
    /// otherwise it reads /dev/null.
    pub fn stdin(&mut self, open: bool) -> &mut Self {
        self.spec.stdin = open;
        self
    }

    /// Tags the command, so [`crate::Commands::connect`] can find it by name.
    pub fn tag(&mut self, tag: impl Into<String>) -> &mut Self {
        self.spec.tag = Some(tag.into());
        self
    }

    /// Makes the sandbox end when this command's first process exits, once
    /// its exit is reported: PID 1 exits, and the kernel kills every
    /// process left in the sandbox. A command that cannot start leaves the
    /// sandbox running.
    pub fn ends_sandbox(&mut self, ends: bool) -> &mut Self {
        self.spec.ends_sandbox = ends;
        self
    }

    /// Starts the command in the background and returns a handle that
    /// streams its output. A command started this way has no timeout unless
    /// [`Command::timeout`] was called.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad user, cwd, environment or tag
    /// (nothing runs); [`Error::Spawn`] when the program cannot be executed;
    /// [`Error::SandboxNotRunning`] when the sandbox has ended.
    pub async fn start(&self) -> Result<CommandHandle> {
        let timeout = if self.timeout_set {
            self.spec.timeout
        } else {
            None
        };
        self.launch(timeout, None).await
    }

    /// Starts the command on a new pseudo-terminal of `rows` x `cols`,
    /// which becomes its controlling terminal, stdin, stdout and stderr.
    /// The PTY comes from the sandbox's own devpts, so the command never
    /// holds the caller's terminal. Output arrives as
    /// [`crate::CommandEvent::Stdout`]; input goes through
    /// [`CommandHandle::send_stdin`]; [`CommandHandle::resize`] resizes it.
    ///
    /// # Errors
    ///
    /// As [`Command::start`]; [`Error::InvalidArgument`] for a zero size.
    pub async fn start_pty(&self, rows: u16, cols: u16) -> Result<CommandHandle> {
        let timeout = if self.timeout_set {
            self.spec.timeout
        } else {
            None
        };
        self.launch(timeout, Some((rows, cols))).await
    }

    /// Starts the command and waits for it. When the timeout (default 60 s)
    /// passes, every process the command started is killed and the output
    /// so far is returned with `timed_out` set.
    ///
    /// # Errors
    ///
    /// As [`Command::start`]. A non-zero exit is not an error here; see
    /// [`Output::check`].
    pub async fn output(&self) -> Result<Output> {
        self.launch(self.spec.timeout, None).await?.wait().await
    }

    /// Starts the command with stdio as given (a PTY when `pty` is set) and
    /// registers it.
    pub(crate) async fn launch(
        &self,
        timeout: Option<Duration>,
        pty: Option<(u16, u16)>,
    ) -> Result<CommandHandle> {
        self.sandbox.resume_if_auto().await?;
        if let Some(tag) = &self.spec.tag {
            if self.sandbox.commands_tagged(tag) {
                return Err(Error::InvalidArgument(format!(
                    "a running command already has tag {tag:?}; tags must be unique"
                )));
            }
        }
        let context = Context {
            rootless: self.sandbox.rootless,
            envs: &self.sandbox.envs,
            image: self.sandbox.image.as_deref(),
        };
        let stdio = match pty {
            // Once the sandbox has ended, the open fails because its
            // /dev/pts is unmounted or a kill closed its root, and
            // SandboxNotRunning explains that better.
            Some((rows, cols)) => Stdio::pty(&self.sandbox, rows, cols).map_err(|e| {
                if self.sandbox.is_running() {
                    e
                } else {
                    self.sandbox.not_running()
                }
            })?,
            None => Stdio::pipes(self.spec.stdin)?,
        };
        let mut planned = self.spec.plan(&context, stdio)?;
        planned.oom_kills_before = self.sandbox.oom_kills();
        planned.oom_kills_earlier = self.sandbox.oom_baseline(planned.oom_kills_before);
        self.sandbox
            .send_message(&planned.message, &planned.fds())
            .await?;
        planned.finish(&self.spec, &self.sandbox, timeout).await
    }
}

/// The settings of a sandbox that a command's start request is built from.
pub(crate) struct Context<'a> {
    /// Whether the sandbox runs in a user namespace of its own.
    pub(crate) rootless: bool,
    /// The sandbox's variables.
    pub(crate) envs: &'a BTreeMap<String, String>,
    /// The command defaults of an image template; `None` for the others.
    pub(crate) image: Option<&'a ImageDefaults>,
}

/// A command whose start request is built but not yet sent.
pub(crate) struct Planned {
    /// The encoded start request, checked against the protocol's limit.
    pub(crate) message: Vec<u8>,
    stdio: Stdio,
    status_read: OwnedFd,
    status_write: OwnedFd,
    cwd: String,
    command_id: u64,
    /// The sandbox's out-of-memory kill count before the command started.
    pub(crate) oom_kills_before: Option<u64>,
    /// The lower of that count and the one before the previous command's
    /// start; see [`Inner::oom_baseline`].
    pub(crate) oom_kills_earlier: Option<u64>,
}

impl Planned {
    /// Returns the descriptors that go with the request: stdin, stdout,
    /// stderr and the status pipe's write end.
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 4] {
        [
            self.stdio.child_stdin.as_fd(),
            self.stdio.child_stdout.as_fd(),
            self.stdio.child_stderr.as_fd(),
            self.status_write.as_fd(),
        ]
    }

    /// Once the request is sent: waits for the supervisor's start report
    /// and registers the command with `sandbox`.
    pub(crate) async fn finish(
        self,
        spec: &CommandSpec,
        sandbox: &Arc<Inner>,
        timeout: Option<Duration>,
    ) -> Result<CommandHandle> {
        // The sandbox has its own copies now. Closing these lets the pump
        // see end of file when the command's side closes.
        let Self {
            stdio,
            status_read,
            status_write,
            cwd,
            command_id,
            oom_kills_before,
            oom_kills_earlier,
            ..
        } = self;
        let Stdio {
            stdout,
            stderr,
            stdin,
            pty: pty_fd,
            ..
        } = stdio;
        drop(status_write);

        let mut status = StatusPipe::new(status_read)?;
        let (first_record, start_timed_out) = match timeout {
            Some(limit) => match tokio::time::timeout(limit, status.next()).await {
                Ok(record) => (record?, false),
                Err(_) => (
                    kill_unstarted(spec, sandbox, command_id, limit, &mut status).await?,
                    true,
                ),
            },
            None => (status.next().await?, false),
        };
        let pid = match first_record {
            Some(StatusRecord::Started { pid }) => pid,
            Some(StatusRecord::SpawnFailed { stage, errno }) => {
                return Err(spec.spawn_error(stage, errno, &cwd, &sandbox.id));
            }
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "expected a start report, got {other:?}"
                )))
            }
            None if sandbox.has_ended().await => return Err(sandbox.not_running()),
            // A supervisor that waited for this command may have been
            // killed since the previous start, before this one's count.
            None if matches!((oom_kills_earlier, sandbox.oom_kills()), (Some(before), Some(now)) if now > before) =>
            {
                return Err(Error::Spawn {
                    program: spec.argv[0].to_string_lossy().into_owned(),
                    reason: format!(
                        "the out-of-memory killer ended its supervisor before it started: {}",
                        crate::process::OUT_OF_MEMORY
                    ),
                    source: std::io::Error::from_raw_os_error(libc::ENOMEM),
                });
            }
            None => {
                return Err(Error::Protocol(format!(
                    "the supervisor of {:?} ended before reporting its start; a process in \
                     the sandbox running as root may have killed it",
                    spec.argv[0]
                )))
            }
        };
        let info = ProcessInfo {
            pid,
            tag: spec.tag.clone(),
            cmd: spec.argv[0].to_string_lossy().into_owned(),
            args: spec.argv[1..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            envs: spec
                .envs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            cwd,
        };
        let started = Started {
            oom_kills_before,
            info,
            command_id,
            stdout,
            stderr,
            stdin,
            status,
            timeout,
            start_timed_out,
            pty: pty_fd,
        };
        Ok(process::register(sandbox, started))
    }
}

/// Kills the tree of a command whose start was not reported within its
/// timeout `limit`, and waits up to `limit` again for the report that
/// follows.
///
/// Sandbox root can stop (SIGSTOP) a command's first process between the
/// supervisor's clone and the exec. The supervisor then waits in vfork,
/// where it reports nothing, and PID 1 gets no notice of the stop because
/// the stopped process is not its child. The kill reaches the stopped
/// process, and the supervisor reports its start and its death.
///
/// # Errors
///
/// [`Error::Spawn`] with ETIMEDOUT when no report follows the kill either.
async fn kill_unstarted(
    spec: &CommandSpec,
    sandbox: &Inner,
    command_id: u64,
    limit: Duration,
    status: &mut StatusPipe,
) -> Result<Option<StatusRecord>> {
    let kill = soulbox_proto::Signal {
        command_id,
        pid: 0,
        signal: libc::SIGKILL,
        kill_tree: true,
    };
    // A sandbox that has ended closes the status pipe, which the read
    // below reports.
    let _ = sandbox.request(&Request::Signal(kill), &[]).await;
    match tokio::time::timeout(limit, status.next()).await {
        Ok(record) => record,
        Err(_) => Err(Error::Spawn {
            program: spec.argv[0].to_string_lossy().into_owned(),
            reason: format!(
                "its supervisor reported nothing within twice its timeout of {limit:?}, \
                 although its process tree was killed after the first timeout"
            ),
            source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
        }),
    }
}

impl CommandSpec {
    /// Builds the start request, with `stdio` and a new status pipe.
    pub(crate) fn plan(&self, context: &Context<'_>, stdio: Stdio) -> Result<Planned> {
        let user = resolve_user(self.user.as_deref(), context.rootless, context.image)?;
        let cwd = resolve_cwd(self.cwd.as_deref(), &user, context.image)?;
        let env = self.environment(&user, context)?;
        let argv = self.checked_argv()?;
        if self.tag.as_deref() == Some("") {
            return Err(Error::InvalidArgument("command tag is empty".into()));
        }
        let (status_read, status_write) = pipe_pair()?;
        let command_id = crate::sandbox::next_command_id();
        let spawn = Spawn {
            command_id,
            argv,
            env,
            cwd: cwd.clone().into_bytes(),
            uid: user.uid,
            gid: user.gid,
            pty: stdio.pty.is_some(),
            ends_sandbox: self.ends_sandbox,
        };
        // Encoded here, so that an oversized request fails before a
        // create_and_start makes anything.
        let request = Request::Spawn(spawn);
        let message = request
            .encode()
            .map_err(|e| crate::sandbox::oversized(&request, &e))?;
        Ok(Planned {
            message,
            stdio,
            status_read,
            status_write,
            cwd,
            command_id,
            oom_kills_before: None,
            oom_kills_earlier: None,
        })
    }

    fn checked_argv(&self) -> Result<Vec<Vec<u8>>> {
        if self.argv.is_empty() {
            return Err(Error::InvalidArgument("the command has no program".into()));
        }
        let argv: Vec<Vec<u8>> = self.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        if argv.iter().any(|a| a.contains(&0)) {
            return Err(Error::InvalidArgument(format!(
                "argument list {:?} contains a NUL byte",
                self.argv
            )));
        }
        if argv[0].is_empty() {
            return Err(Error::InvalidArgument("program name is empty".into()));
        }
        let limit = crate::sys::exec_string_limit();
        if let Some((index, arg)) = argv.iter().enumerate().find(|(_, a)| a.len() > limit) {
            return Err(Error::InvalidArgument(format!(
                "argument {index} of the command is {} bytes, more than the {limit} bytes \
                 exec takes for one argument; pass large data in a file or on stdin instead",
                arg.len()
            )));
        }
        Ok(argv)
    }

    /// Builds the complete environment, each layer overriding the last:
    /// SoulBox's defaults, an image's `Env`, the sandbox's variables, then
    /// the command's own.
    fn environment(&self, user: &User, context: &Context<'_>) -> Result<Vec<Vec<u8>>> {
        let mut env: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"PATH".to_vec(), DEFAULT_PATH.into()),
            (b"HOME".to_vec(), user.home.as_bytes().to_vec()),
        ];
        if let Some(name) = &user.name {
            env.push((b"USER".to_vec(), name.as_bytes().to_vec()));
            env.push((b"LOGNAME".to_vec(), name.as_bytes().to_vec()));
        }
        env.push((b"SHELL".to_vec(), user.shell.as_bytes().to_vec()));
        env.push((b"LANG".to_vec(), b"C.UTF-8".to_vec()));
        let mut set = |key: &[u8], value: &[u8]| match env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_vec(),
            None => env.push((key.to_vec(), value.to_vec())),
        };
        if let Some(image) = context.image {
            for (key, value) in &image.env {
                set(key.as_bytes(), value.as_bytes());
            }
        }
        for (key, value) in context.envs {
            set(key.as_bytes(), value.as_bytes());
        }
        for (key, value) in &self.envs {
            validate_env_bytes(key.as_bytes(), value.as_bytes())?;
            set(key.as_bytes(), value.as_bytes());
        }
        Ok(env
            .into_iter()
            .map(|(mut k, v)| {
                k.push(b'=');
                k.extend_from_slice(&v);
                k
            })
            .collect())
    }

    fn spawn_error(&self, stage: SpawnStage, errno: i32, cwd: &str, sandbox_id: &str) -> Error {
        let source = std::io::Error::from_raw_os_error(errno);
        let program = self.argv[0].to_string_lossy().into_owned();
        match stage {
            SpawnStage::Cwd => Error::InvalidArgument(format!(
                "working directory {cwd:?} cannot be used in sandbox {sandbox_id}: {source}; \
                 create it first or pick an existing directory",
            )),
            SpawnStage::Exec if errno == libc::ENOENT && program.contains('/') => Error::Spawn {
                program,
                reason: "no such program in the sandbox".into(),
                source,
            },
            SpawnStage::Exec if errno == libc::ENOENT => Error::Spawn {
                program,
                reason: "no such program in the sandbox (searched PATH)".into(),
                source,
            },
            SpawnStage::Exec => Error::Spawn {
                program,
                reason: "exec failed".into(),
                source,
            },
            SpawnStage::User => Error::Spawn {
                program,
                reason: "switching user failed".into(),
                source,
            },
            SpawnStage::Fork if errno == libc::EAGAIN => Error::Spawn {
                program,
                reason: "fork failed: the sandbox is at its process limit \
                         (pids_limit, which counts PID 1 and its supervisors) \
                         or the host's; wait for processes to exit or raise the limit"
                    .into(),
                source,
            },
            SpawnStage::Fork => Error::Spawn {
                program,
                reason: "fork failed".into(),
                source,
            },
            SpawnStage::Stdio => Error::Spawn {
                program,
                reason: "setting up stdio failed".into(),
                source,
            },
            SpawnStage::MemoryCgroup => Error::Spawn {
                program,
                reason: format!(
                    "joining the memory cgroup of sandbox {sandbox_id} failed, and the command \
                     would otherwise run without its memory limit; if its cgroup directory was \
                     removed from outside, create a new sandbox"
                ),
                source,
            },
        }
    }
}

/// The descriptors a command starts with: the ends the sandbox gets and
/// the ends this process keeps.
pub(crate) struct Stdio {
    child_stdin: OwnedFd,
    child_stdout: OwnedFd,
    child_stderr: OwnedFd,
    stdout: OutputStream,
    stderr: Option<OutputStream>,
    stdin: Option<StdinWriter>,
    pty: Option<Arc<tokio::io::unix::AsyncFd<OwnedFd>>>,
}

impl Stdio {
    /// Pipes for stdout and stderr; a pipe or /dev/null for stdin.
    pub(crate) fn pipes(open_stdin: bool) -> Result<Self> {
        let (stdout_read, child_stdout) = pipe_pair()?;
        let (stderr_read, child_stderr) = pipe_pair()?;
        let (child_stdin, stdin) = if open_stdin {
            let (read, write) = pipe_pair()?;
            let writer = process::pipe_sender(write)?;
            (read, Some(StdinWriter::Pipe(writer)))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(Error::os("open /dev/null"))?;
            (OwnedFd::from(null), None)
        };
        Ok(Self {
            child_stdin,
            child_stdout,
            child_stderr,
            stdout: OutputStream::Pipe(process::pipe_receiver(stdout_read)?),
            stderr: Some(OutputStream::Pipe(process::pipe_receiver(stderr_read)?)),
            stdin,
            pty: None,
        })
    }

    /// A new PTY from the sandbox's own devpts instance, so the command's
    /// terminal is one the sandbox owns and never the caller's.
    fn pty(sandbox: &Inner, rows: u16, cols: u16) -> Result<Self> {
        process::check_size(rows, cols)?;
        let ptmx = sandbox
            .with_root(|root| {
                let flags = libc::O_RDWR | libc::O_NOCTTY;
                sys::openat2_in_root(root, c"/dev/pts/ptmx", flags, 0)
            })
            .map_err(Error::os("open the sandbox's /dev/pts/ptmx"))?;
        let (controller, subsidiary) =
            sys::open_pty_pair(ptmx, rows, cols).map_err(Error::os("open a PTY pair"))?;
        let copy = |fd: &OwnedFd| fd.try_clone().map_err(Error::os("duplicate the PTY"));
        let (child_stdout, child_stderr) = (copy(&subsidiary)?, copy(&subsidiary)?);
        let (reader, writer) = process::pty_streams(controller)?;
        let shared = reader.shared();
        Ok(Self {
            child_stdin: subsidiary,
            child_stdout,
            child_stderr,
            stdout: OutputStream::Pty(reader),
            stderr: None,
            stdin: Some(StdinWriter::Pty(writer)),
            pty: Some(shared),
        })
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::os("create a pipe")(e.into()))
}

/// A sandbox user a command can run as.
#[derive(Debug, Clone)]
struct User {
    /// The name, unless an image's user is a uid that its /etc/passwd
    /// lacks.
    name: Option<Cow<'static, str>>,
    uid: u32,
    gid: u32,
    home: Cow<'static, str>,
    shell: Cow<'static, str>,
}

impl User {
    const USER: Self = Self {
        name: Some(Cow::Borrowed("user")),
        uid: USER_UID,
        gid: USER_UID,
        home: Cow::Borrowed(USER_HOME),
        shell: Cow::Borrowed("/bin/bash"),
    };

    const ROOT: Self = Self {
        name: Some(Cow::Borrowed("root")),
        uid: 0,
        gid: 0,
        home: Cow::Borrowed("/root"),
        shell: Cow::Borrowed("/bin/bash"),
    };

    fn from_account(account: Account) -> Self {
        Self {
            name: account.name.map(Cow::Owned),
            uid: account.uid,
            gid: account.gid,
            home: Cow::Owned(account.home),
            shell: Cow::Owned(account.shell.unwrap_or_else(|| "/bin/sh".into())),
        }
    }
}

/// Returns the uid and gid that `name` (or the default user) has, as a
/// command would run: for the files API, which acts as the same users.
pub(crate) fn user_ids(
    name: Option<&str>,
    rootless: bool,
    image: Option<&ImageDefaults>,
) -> Result<(u32, u32)> {
    resolve_user(name, rootless, image).map(|user| (user.uid, user.gid))
}

fn resolve_user(name: Option<&str>, rootless: bool, image: Option<&ImageDefaults>) -> Result<User> {
    // A rootless sandbox's user namespace maps only the caller's uid, to
    // root, so root is its only user and the default, also for an image
    // whose `User` names another.
    let default = if rootless { "root" } else { "user" };
    match (name, image) {
        (None, Some(image)) if !rootless => return Ok(User::from_account(image.user.clone())),
        (Some(name), Some(image)) if !rootless => return resolve_image_user(name, image),
        _ => {}
    }
    match name.unwrap_or(default) {
        "user" if rootless => Err(Error::InvalidArgument(
            "user \"user\" does not exist in a rootless sandbox, whose user namespace maps \
             only the caller's uid (to root); run as \"root\", which has no privileges on \
             the host"
                .into(),
        )),
        "user" => Ok(User::USER),
        "root" => match image.and_then(|image| image.account_named("root")) {
            Some(account) => Ok(User::from_account(account)),
            None => Ok(User::ROOT),
        },
        other => Err(Error::InvalidArgument(format!(
            "unknown user {other:?}; the host template has \"user\" and \"root\""
        ))),
    }
}

/// Returns the user that `name` names in an image template: an account
/// of the image's /etc/passwd, or `UID[:GID]`. `user` and `root` exist in
/// every image, with uid 1000 and 0, as in the other templates.
fn resolve_image_user(name: &str, image: &ImageDefaults) -> Result<User> {
    if let Some(account) = image.account_named(name) {
        return Ok(User::from_account(account));
    }
    match name {
        "user" => Ok(User::USER),
        "root" => Ok(User::ROOT),
        spec => image
            .account(spec)
            .map(User::from_account)
            .map_err(|problem| Error::InvalidArgument(format!("invalid user {spec:?}: {problem}"))),
    }
}

/// Returns the working directory: `cwd`, relative to the user's home, or
/// by default the image's `WorkingDir` in an image template and the user's
/// home in the others.
fn resolve_cwd(cwd: Option<&str>, user: &User, image: Option<&ImageDefaults>) -> Result<String> {
    let cwd = match (cwd, image) {
        (None | Some(""), Some(image)) => return Ok(image.working_dir.clone()),
        (None | Some(""), None) => return Ok(user.home.to_string()),
        (Some(dir), _) if dir.starts_with('/') => dir.to_string(),
        (Some(dir), _) => format!("{}/{dir}", user.home.trim_end_matches('/')),
    };
    if cwd.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "working directory {cwd:?} contains a NUL byte"
        )));
    }
    Ok(cwd)
}

/// Checks one environment entry.
pub(crate) fn validate_env(key: &str, value: &str) -> Result<()> {
    validate_env_bytes(key.as_bytes(), value.as_bytes())
}

/// Rejects sandbox variables that leave no room for a command. Every
/// command's request to PID 1 carries them, and one request may hold at
/// most `MAX_MESSAGE_LEN` bytes, so without this check the sandbox would
/// start and then reject each command.
pub(crate) fn validate_sandbox_envs_size(
    envs: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    // Far below the limit, as almost every sandbox is, nothing is encoded.
    let total: usize = envs
        .iter()
        .map(|(key, value)| key.len() + value.len() + 8)
        .sum();
    if total < soulbox_proto::MAX_MESSAGE_LEN / 2 {
        return Ok(());
    }
    let env = envs
        .iter()
        .map(|(key, value)| format!("{key}={value}").into_bytes())
        .collect();
    let smallest_command = Spawn {
        command_id: 0,
        argv: vec![b"true".to_vec()],
        env,
        cwd: b"/".to_vec(),
        uid: 0,
        gid: 0,
        pty: false,
        ends_sandbox: false,
    };
    match Request::Spawn(smallest_command).encode() {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::InvalidArgument(format!(
            "the sandbox's environment variables take {} bytes in every command's request, \
             more than the {} bytes one request to the sandbox may carry; pass large data in \
             a file instead",
            e.len,
            soulbox_proto::MAX_MESSAGE_LEN
        ))),
    }
}

fn validate_env_bytes(key: &[u8], value: &[u8]) -> Result<()> {
    let key_text = String::from_utf8_lossy(key);
    if key.is_empty() || key.contains(&b'=') || key.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "environment variable name {key_text:?} is empty or contains '=' or a NUL byte"
        )));
    }
    if value.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "value of environment variable {key_text:?} contains a NUL byte"
        )));
    }
    let limit = crate::sys::exec_string_limit();
    let len = key.len() + 1 + value.len();
    if len > limit {
        return Err(Error::InvalidArgument(format!(
            "environment variable {key_text:?} is {len} bytes as KEY=VALUE, more than the \
             {limit} bytes exec takes for one variable; pass large data in a file instead"
        )));
    }
    Ok(())
}
