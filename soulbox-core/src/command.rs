//! Running commands in a sandbox.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use soulbox_proto::{Request, Signal, Spawn, SpawnStage, StatusRecord, STATUS_RECORD_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

use crate::error::{Error, Result};
use crate::sandbox::{Inner, Sandbox};
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
    /// Exit status of the leader; `Signal(9)` after a timeout.
    pub status: ExitStatus,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
    /// Whether the command's timeout ended it.
    pub timed_out: bool,
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
    argv: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<String>,
    user: Option<String>,
    timeout: Option<Duration>,
}

impl Sandbox {
    /// Prepares `program` to run with no shell involved.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command {
            sandbox: Arc::clone(&self.inner),
            argv: vec![program.as_ref().to_owned()],
            envs: Vec::new(),
            cwd: None,
            user: None,
            timeout: Some(DEFAULT_COMMAND_TIMEOUT),
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
        self.argv.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for this command, over the sandbox's.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets the working directory; a relative path is taken from the user's
    /// home. A directory that does not exist fails the start.
    pub fn cwd(&mut self, dir: impl Into<String>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the user: `user` (the default) or `root`. In a rootless sandbox
    /// `root` is the only user and the default.
    pub fn user(&mut self, name: impl Into<String>) -> &mut Self {
        self.user = Some(name.into());
        self
    }

    /// Sets how long [`Command::output`] waits before it kills the
    /// command's whole process tree; `None` waits forever. Default 60 s.
    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Starts the command and returns a handle to it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad user, cwd or environment
    /// (nothing runs); [`Error::Spawn`] when the program cannot be executed;
    /// [`Error::SandboxNotRunning`] when the sandbox has ended.
    pub async fn spawn(&self) -> Result<Child> {
        let user = resolve_user(self.user.as_deref(), self.sandbox.rootless)?;
        let cwd = resolve_cwd(self.cwd.as_deref(), user)?;
        let env = self.environment(user)?;
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

        let (stdout_read, stdout_write) = pipe_pair()?;
        let (stderr_read, stderr_write) = pipe_pair()?;
        let (status_read, status_write) = pipe_pair()?;
        let stdin = std::fs::File::open("/dev/null").map_err(Error::os("open /dev/null"))?;

        let command_id = self.sandbox.next_command_id();
        let spawn = Spawn {
            command_id,
            argv,
            env,
            cwd: cwd.clone().into_bytes(),
            uid: user.uid,
            gid: user.uid,
        };
        let fds = [
            stdin.as_fd(),
            stdout_write.as_fd(),
            stderr_write.as_fd(),
            status_write.as_fd(),
        ];
        self.sandbox.request(&Request::Spawn(spawn), &fds).await?;
        // The sandbox holds its own copies now; closing these lets the reads
        // below see end of file when the command's side closes.
        drop((stdin, stdout_write, stderr_write, status_write));

        let mut status = StatusPipe::new(status_read)?;
        let pid = match status.next().await? {
            Some(StatusRecord::Started { pid }) => pid,
            Some(StatusRecord::SpawnFailed { stage, errno }) => {
                return Err(self.spawn_error(stage, errno, &cwd));
            }
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "expected a start report, got {other:?}"
                )))
            }
            None => return Err(self.sandbox.not_running()),
        };
        Ok(Child {
            sandbox: Arc::clone(&self.sandbox),
            command_id,
            pid,
            stdout: Some(receiver(stdout_read)?),
            stderr: Some(receiver(stderr_read)?),
            status,
            exit: None,
        })
    }

    /// Runs the command to completion and collects its output. When the
    /// timeout passes, every process the command started is killed and the
    /// output so far is returned with `timed_out` set.
    ///
    /// # Errors
    ///
    /// As [`Command::spawn`]. A non-zero exit is not an error here.
    pub async fn output(&self) -> Result<Output> {
        let mut child = self.spawn().await?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let collect = async {
            let (out, err, status) =
                tokio::join!(read_all(&mut stdout), read_all(&mut stderr), child.wait());
            Ok::<_, Error>((out?, err?, status?))
        };
        let outcome = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, collect).await,
            None => Ok(collect.await),
        };
        match outcome {
            Ok(result) => {
                let (stdout, stderr, status) = result?;
                Ok(Output {
                    status,
                    stdout,
                    stderr,
                    timed_out: false,
                })
            }
            Err(_elapsed) => {
                child.kill().await?;
                // The tree is dead, so the pipes reach end of file promptly.
                let (out, err, status) =
                    tokio::join!(read_all(&mut stdout), read_all(&mut stderr), child.wait());
                Ok(Output {
                    status: status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)),
                    stdout: out.unwrap_or_default(),
                    stderr: err.unwrap_or_default(),
                    timed_out: true,
                })
            }
        }
    }

    /// Builds the complete environment, each layer overriding the last.
    fn environment(&self, user: User) -> Result<Vec<Vec<u8>>> {
        let mut env: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"PATH".to_vec(), DEFAULT_PATH.into()),
            (b"HOME".to_vec(), user.home.into()),
            (b"USER".to_vec(), user.name.into()),
            (b"LOGNAME".to_vec(), user.name.into()),
            (b"SHELL".to_vec(), b"/bin/bash".to_vec()),
            (b"LANG".to_vec(), b"C.UTF-8".to_vec()),
        ];
        let mut set = |key: &[u8], value: &[u8]| match env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_vec(),
            None => env.push((key.to_vec(), value.to_vec())),
        };
        for (key, value) in &self.sandbox.envs {
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

    fn spawn_error(&self, stage: SpawnStage, errno: i32, cwd: &str) -> Error {
        let source = std::io::Error::from_raw_os_error(errno);
        let program = self.argv[0].to_string_lossy().into_owned();
        match stage {
            SpawnStage::Cwd => Error::InvalidArgument(format!(
                "working directory {cwd:?} cannot be used in sandbox {}: {source}; \
                 create it first or pick an existing directory",
                self.sandbox.id
            )),
            SpawnStage::Exec if errno == libc::ENOENT => Error::Spawn {
                program,
                reason: "no such program in the sandbox (checked PATH)".into(),
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
        }
    }
}

/// A running command.
#[derive(Debug)]
pub struct Child {
    sandbox: Arc<Inner>,
    command_id: u64,
    pid: u32,
    /// The command's stdout, until taken.
    pub stdout: Option<pipe::Receiver>,
    /// The command's stderr, until taken.
    pub stderr: Option<pipe::Receiver>,
    status: StatusPipe,
    exit: Option<ExitStatus>,
}

impl Child {
    /// Returns the leader's pid inside the sandbox's PID namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the leader to exit. Processes it started may live on.
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox ended first.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let exit = match self.status.next().await? {
            Some(StatusRecord::Exited { code }) => ExitStatus::Code(code),
            Some(StatusRecord::Signaled { signal }) => ExitStatus::Signal(signal),
            Some(other) => {
                return Err(Error::Protocol(format!(
                    "expected an exit report, got {other:?}"
                )))
            }
            None if self.sandbox.is_running() => {
                return Err(Error::Protocol(format!(
                    "the supervisor of command {} ended without reporting its exit; a process \
                     in the sandbox running as root may have killed it",
                    self.pid
                )))
            }
            None => return Err(self.sandbox.not_running()),
        };
        self.exit = Some(exit);
        Ok(exit)
    }

    /// Sends `signal` to the command's leader.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a signal number outside 1..=64;
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!(
                "signal {signal} is not a signal number (1 to 64)"
            )));
        }
        let request = Signal {
            command_id: self.command_id,
            pid: self.pid,
            signal,
            kill_tree: false,
        };
        self.sandbox.request(&Request::Signal(request), &[]).await
    }

    /// Kills the command's leader and every process it started, however
    /// they detached (new sessions, double forks).
    ///
    /// # Errors
    ///
    /// [`Error::SandboxNotRunning`] if the sandbox has ended.
    pub async fn kill(&self) -> Result<()> {
        let request = Signal {
            command_id: self.command_id,
            pid: self.pid,
            signal: libc::SIGKILL,
            kill_tree: true,
        };
        self.sandbox.request(&Request::Signal(request), &[]).await
    }
}

/// Reader of the fixed-size records a command's supervisor writes.
#[derive(Debug)]
struct StatusPipe {
    pipe: pipe::Receiver,
}

impl StatusPipe {
    fn new(fd: OwnedFd) -> Result<Self> {
        Ok(Self {
            pipe: receiver(fd)?,
        })
    }

    /// Reads the next record; `None` when the supervisor is gone.
    async fn next(&mut self) -> Result<Option<StatusRecord>> {
        let mut raw = [0u8; STATUS_RECORD_LEN];
        match self.pipe.read_exact(&mut raw).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::os("read a command's status")(e)),
        }
        StatusRecord::decode(&raw)
            .map(Some)
            .map_err(|e| Error::Protocol(e.to_string()))
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::os("create a pipe")(e.into()))
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd).map_err(Error::os("register a pipe with the runtime"))
}

async fn read_all(reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .await
        .map_err(Error::os("read a command's output"))?;
    Ok(out)
}

/// A sandbox user a command can run as.
#[derive(Debug, Clone, Copy)]
struct User {
    name: &'static str,
    uid: u32,
    home: &'static str,
}

fn resolve_user(name: Option<&str>, rootless: bool) -> Result<User> {
    // A rootless sandbox's user namespace maps only the caller's uid, to
    // root, so root is its only user and the default.
    let default = if rootless { "root" } else { "user" };
    match name.unwrap_or(default) {
        "user" if rootless => Err(Error::InvalidArgument(
            "user \"user\" does not exist in a rootless sandbox, whose user namespace maps \
             only the caller's uid (to root); run as \"root\", which has no privileges on \
             the host"
                .into(),
        )),
        "user" => Ok(User {
            name: "user",
            uid: USER_UID,
            home: USER_HOME,
        }),
        "root" => Ok(User {
            name: "root",
            uid: 0,
            home: "/root",
        }),
        other => Err(Error::InvalidArgument(format!(
            "unknown user {other:?}; the host template has \"user\" and \"root\""
        ))),
    }
}

fn resolve_cwd(cwd: Option<&str>, user: User) -> Result<String> {
    let cwd = match cwd {
        None | Some("") => return Ok(user.home.to_string()),
        Some(dir) if dir.starts_with('/') => dir.to_string(),
        Some(dir) => format!("{}/{dir}", user.home),
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
    Ok(())
}
