//! `soulbox run`: create a sandbox, copy files in, run one command with its
//! output streamed, destroy the sandbox; and `soulbox exec` and `soulbox
//! shell`, which run a command the same way in a sandbox that exists.

use std::os::fd::AsFd;
use std::time::Duration;

use clap::Args;
use soulbox_core::{
    CommandEvent, CommandHandle, CommandSpec, Commands, ExitStatus, Sandbox, SandboxOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::copy::{copy_in, CopySpec};
use crate::term;
use crate::Failure;

/// Exit code when the timeout ended the command, as in `timeout(1)`.
const EXIT_TIMED_OUT: u8 = 124;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  soulbox run --copy ./job:/home/user/job --cwd job -- python3 main.py"
)]
pub struct RunArgs {
    /// Copy a host file or directory into the sandbox before the command
    /// starts, as HOST_PATH:SANDBOX_PATH; repeat for more. The value is
    /// split at its last ':', so the sandbox path cannot contain one.
    /// Relative sandbox paths start at /home/user.
    #[arg(long = "copy", value_name = "HOST_PATH:SANDBOX_PATH", value_parser = CopySpec::parse)]
    copies: Vec<CopySpec>,

    #[command(flatten)]
    limits: crate::limits::LimitArgs,

    #[command(flatten)]
    network: crate::network::NetworkArgs,

    #[command(flatten)]
    command: CommandArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  soulbox exec sb-abcdefghjkmn -- python3 -c 'print(6*7)'")]
pub struct ExecArgs {
    /// The sandbox id, as `soulbox create` printed it.
    id: String,

    #[command(flatten)]
    command: CommandArgs,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The sandbox id.
    id: String,

    /// Sandbox user to run as: `user` (the default) or `root`.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// How to run one command: shared by `run` and `exec`.
#[derive(Debug, Args)]
pub struct CommandArgs {
    /// Seconds the command may run before it and every process it started
    /// are killed; 0 means no limit. The clock starts when the command
    /// starts (for `soulbox run`, after its --copy), and `soulbox run`
    /// also ends the sandbox 5 s after the timeout.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        value_parser = parse_secs,
        allow_negative_numbers = true
    )]
    timeout: u64,

    /// Environment variable for the command, as KEY=VALUE; repeat for more.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    envs: Vec<(String, String)>,

    /// Working directory inside the sandbox; relative paths start at the
    /// user's home. Default: the user's home (/home/user for `user`).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,

    /// Sandbox user to run as: `user` (uid 1000, the default) or `root`.
    /// Without host root, sandboxes have only `root`, which is the default.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,

    /// Run the command on an interactive pseudo-terminal the sandbox owns,
    /// sized like this one; needs a terminal on stdin. stderr is merged
    /// into stdout, as on any terminal.
    #[arg(long, short = 't')]
    tty: bool,

    /// The program to run and its arguments. `soulbox run` with an image
    /// template and no COMMAND runs the image's Entrypoint and Cmd.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn parse_secs(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))
}

pub fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Runs the command; returns the exit code for this process, or a one-line
/// message when SoulBox failed.
pub async fn run(mut args: RunArgs) -> Result<u8, String> {
    let mut options = SandboxOptions::default().kill_on_drop(true);
    args.limits.apply(&mut options);
    args.network.apply(&mut options);
    if args.command.command.is_empty() {
        args.command.command = image_command(&options.template)?;
    }
    for spec in &args.copies {
        spec.check_source()?;
    }
    let stdin_is_terminal = term::stdin_is_terminal();
    if args.command.tty && !stdin_is_terminal {
        return Err("--tty needs a terminal on stdin; drop --tty to forward piped input".into());
    }
    let mut signals = Signals::new()?;
    // The sandbox outlives the command's timeout by a margin, so the
    // caller gets the command's own timeout, with full output.
    let sandbox_timeout = args
        .command
        .timeout()
        .map_or(Duration::ZERO, |t| t.saturating_add(Duration::from_secs(5)));
    // While files are copied in, the sandbox has no deadline of its own: it
    // ends with this process (kill_on_drop), and the copies must not eat
    // into the command's time. Without copies the command starts right
    // after the create, so the deadline is set at once, which saves a
    // request to PID 1.
    let copies_first = !args.copies.is_empty();
    let create_timeout = if copies_first {
        Duration::ZERO
    } else {
        sandbox_timeout
    };
    options.timeout = create_timeout;
    if !copies_first && !args.command.tty {
        // The common case: the command's start request goes out with the
        // create, and the command starts as soon as the sandbox is ready.
        // The sandbox ends with the command, so PID 1 exits while this
        // process still reads the exit status, and the kill after finds it
        // gone or going.
        let mut spec = args.command.spec(stdin_is_terminal);
        spec.ends_sandbox = true;
        let started = tokio::select! {
            started = Sandbox::create_and_start(options.clone(), &spec) => started,
            signal = signals.next() => return Ok(128 + signal as u8),
        };
        let (sandbox, handle) = match started {
            Ok(started) => started,
            Err(e) => return spawn_failure(&e),
        };
        report_unenforced_limits(&options, &sandbox);
        let result = follow(&sandbox, handle, spec.stdin, false, &mut signals).await;
        let killed = sandbox.kill().await.map_err(|e| crate::describe(&e));
        let code = result?;
        killed?;
        return Ok(code);
    }
    let sandbox = tokio::select! {
        created = Sandbox::create(options.clone()) => created.map_err(|e| crate::describe(&e))?,
        signal = signals.next() => return Ok(128 + signal as u8),
    };
    report_unenforced_limits(&options, &sandbox);
    let result = async {
        for spec in &args.copies {
            tokio::select! {
                copied = copy_in(&sandbox, spec, args.command.user.as_deref()) => copied?,
                signal = signals.next() => return Ok(128 + signal as u8),
            }
        }
        if copies_first {
            sandbox
                .set_timeout(sandbox_timeout)
                .await
                .map_err(|e| crate::describe(&e))?;
        }
        run_in(&sandbox, &args.command, stdin_is_terminal, &mut signals).await
    }
    .await;
    let killed = sandbox.kill().await.map_err(|e| crate::describe(&e));
    let code = result?;
    killed?;
    Ok(code)
}

/// Returns the command that `soulbox run` runs when none is given: the
/// image's Entrypoint followed by its Cmd.
fn image_command(template: &str) -> Result<Vec<String>, String> {
    match soulbox_core::image::default_command(template) {
        Ok(Some(command)) if !command.is_empty() => Ok(command),
        Ok(Some(_)) => Err(format!(
            "the argument <COMMAND> is missing, and the image {template:?} sets neither \
             Entrypoint nor Cmd; give one after --, as in `soulbox run --template IMAGE -- sh`"
        )),
        Ok(None) => Err(
            "the argument <COMMAND> is missing; give one after --, as in `soulbox run -- ls`. \
             Only an image template, or one built on an image, has a default command (its \
             Entrypoint and Cmd)"
                .into(),
        ),
        Err(e) => Err(crate::describe(&e)),
    }
}

/// Runs the command in a sandbox that exists, which keeps running.
pub async fn exec(args: ExecArgs) -> Result<u8, Failure> {
    if args.command.command.is_empty() {
        return Err(String::from(
            "the argument <COMMAND> is missing; give one after --, as in `soulbox exec ID -- ls`",
        )
        .into());
    }
    let stdin_is_terminal = term::stdin_is_terminal();
    if args.command.tty && !stdin_is_terminal {
        return Err(String::from(
            "--tty needs a terminal on stdin; drop --tty to forward piped input",
        )
        .into());
    }
    let mut signals = Signals::new()?;
    let sandbox = crate::manage::connect(&args.id).await?;
    Ok(run_in(&sandbox, &args.command, stdin_is_terminal, &mut signals).await?)
}

/// Runs a login shell on a terminal in a sandbox that exists.
pub async fn shell(args: ShellArgs) -> Result<u8, Failure> {
    let sandbox = crate::manage::connect(&args.id).await?;
    if !term::stdin_is_terminal() {
        return Err(String::from(
            "soulbox shell needs a terminal on stdin; use soulbox exec to pipe input",
        )
        .into());
    }
    let mut signals = Signals::new()?;
    let has_bash = sandbox
        .files()
        .user("root")
        .exists("/bin/bash")
        .await
        .unwrap_or(false);
    let program = if has_bash { "/bin/bash" } else { "/bin/sh" };
    let command = CommandArgs {
        timeout: 0,
        envs: Vec::new(),
        cwd: None,
        user: args.user,
        tty: true,
        command: vec![program.to_string(), "-l".to_string()],
    };
    Ok(run_in(&sandbox, &command, true, &mut signals).await?)
}

/// Says on stderr which default limits could not be applied, as happens
/// in rootless mode when no cgroup is delegated to the caller.
fn report_unenforced_limits(options: &SandboxOptions, sandbox: &Sandbox) {
    let enforced = sandbox.enforced_limits();
    let mut missing = Vec::new();
    if options.memory_limit.is_some() && enforced.memory.is_none() {
        missing.push("memory");
    }
    if options.pids_limit.is_some() && enforced.pids.is_none() {
        missing.push("pids");
    }
    let subject = match missing.as_slice() {
        [] => return,
        [one] => format!("the {one} limit is"),
        many => format!("the {} limits are", many.join(" and ")),
    };
    eprintln!(
        "soulbox: note: {subject} not enforced: this user may not write to SoulBox's cgroups \
         (rootless without a delegated cgroup)"
    );
}

/// The signals that end `soulbox run` and `soulbox create`: SIGINT,
/// SIGTERM and SIGHUP.
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind| {
            signal(kind).map_err(|e| format!("failed to install a signal handler: {e}"))
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal and returns its number.
    pub(crate) async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

impl CommandArgs {
    fn timeout(&self) -> Option<Duration> {
        (self.timeout > 0).then(|| Duration::from_secs(self.timeout))
    }
}

/// Runs one command with its output streamed and signals forwarded;
/// returns the exit code to report.
async fn run_in(
    sandbox: &Sandbox,
    args: &CommandArgs,
    stdin_is_terminal: bool,
    signals: &mut Signals,
) -> Result<u8, String> {
    let spec = args.spec(stdin_is_terminal);
    let mut command = sandbox.command(&spec.argv[0]);
    command.args(&spec.argv[1..]).timeout(spec.timeout);
    if let Some(user) = &spec.user {
        command.user(user.clone());
    }
    if let Some(cwd) = &spec.cwd {
        command.cwd(cwd.clone());
    }
    for (key, value) in &spec.envs {
        command.env(key, value);
    }
    // A start can wait long, up to its timeout or without end when there is
    // none, if sandboxed code stops the command's first process before its
    // exec. A signal meanwhile ends this process as a second signal would
    // once the command runs.
    let (handle, _raw_mode) = if args.tty {
        let (rows, cols) = term::window_size(std::io::stdout().as_fd());
        command.env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        );
        let handle = tokio::select! {
            started = command.start_pty(rows, cols) => started.map_err(|e| crate::describe(&e))?,
            signal = signals.next() => return Ok(128 + signal as u8),
        };
        let raw = term::RawMode::enable()
            .map_err(|e| format!("failed to put the terminal in raw mode: {e}"))?;
        (handle, Some(raw))
    } else {
        command.stdin(spec.stdin);
        let started = tokio::select! {
            started = command.start() => started,
            signal = signals.next() => return Ok(128 + signal as u8),
        };
        match started {
            Ok(handle) => (handle, None),
            Err(e) => return spawn_failure(&e),
        }
    };
    follow(sandbox, handle, spec.stdin, args.tty, signals).await
}

impl CommandArgs {
    /// Returns the command these options describe. Its stdin stays open
    /// when this process's stdin is forwarded: on a PTY, or from a pipe or
    /// file that is not empty. An empty stdin would end at once, so the
    /// command gets its own /dev/null instead, and no thread reads this one.
    fn spec(&self, stdin_is_terminal: bool) -> CommandSpec {
        let mut spec = CommandSpec::new(&self.command[0]);
        spec.argv.extend(self.command[1..].iter().map(Into::into));
        spec.timeout = self.timeout();
        spec.user.clone_from(&self.user);
        spec.cwd.clone_from(&self.cwd);
        spec.envs = self
            .envs
            .iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        spec.stdin = self.tty || !(stdin_is_terminal || term::stdin_is_empty());
        spec
    }
}

/// Streams a started command's output until it ends, and returns the exit
/// code to report. Meanwhile it forwards signals, this process's stdin when
/// `forward_stdin` is set, and the terminal's size changes when `tty` is.
async fn follow(
    sandbox: &Sandbox,
    handle: CommandHandle,
    forward_stdin: bool,
    tty: bool,
    signals: &mut Signals,
) -> Result<u8, String> {
    let pid = handle.pid();
    if forward_stdin {
        tokio::spawn(forward_input(sandbox.commands(), pid, !tty));
    }
    if tty {
        tokio::spawn(forward_resizes(sandbox.commands(), pid));
    }
    let output = stream_output(handle);
    tokio::pin!(output);
    let mut forwarded = false;
    loop {
        tokio::select! {
            code = &mut output => return code,
            signal = signals.next() => {
                // The first signal goes to the command, which may handle it;
                // a second one ends everything.
                if forwarded || sandbox.commands().signal(pid, signal).await.is_err() {
                    return Ok(128 + signal as u8);
                }
                forwarded = true;
            }
        }
    }
}

/// Exit code when this process's stdout or stderr was closed, as a
/// pipeline's writer that SIGPIPE ends (128 + 13).
const EXIT_BROKEN_PIPE: u8 = 141;

/// Copies the command's output to this process's stdout and stderr until
/// it ends; returns the exit code to report. If the reader of this process's
/// output goes away (`soulbox run -- yes | head -1`), the command is killed
/// as SIGPIPE would end it outside a sandbox.
async fn stream_output(mut handle: CommandHandle) -> Result<u8, String> {
    let mut host_out = tokio::io::stdout();
    let mut host_err = tokio::io::stderr();
    loop {
        let written = match handle.next_event().await.map_err(|e| crate::describe(&e))? {
            Some(CommandEvent::Stdout(bytes)) => {
                let result = host_out.write_all(&bytes).await;
                result.and(host_out.flush().await)
            }
            // tokio writes stdout and stderr on a blocking thread, so only
            // the flush makes sure that a chunk is out before this process
            // exits.
            Some(CommandEvent::Stderr(bytes)) => {
                let result = host_err.write_all(&bytes).await;
                result.and(host_err.flush().await)
            }
            Some(CommandEvent::Exit(exit)) if exit.timed_out => {
                eprintln!("soulbox: command timed out; killed it and every process it started");
                return Ok(EXIT_TIMED_OUT);
            }
            Some(CommandEvent::Exit(exit)) => return Ok(exit_code(exit.status)),
            None => return Err("command output ended without an exit status".into()),
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                let _ = handle.kill().await;
                return Ok(EXIT_BROKEN_PIPE);
            }
        }
    }
}

/// Forwards this process's stdin to the command; at end of file it closes
/// the command's stdin, unless the command runs on a PTY.
async fn forward_input(commands: Commands, pid: u32, close_at_end: bool) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if commands.send_stdin(pid, &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    if close_at_end {
        if let Ok(handle) = commands.connect(pid) {
            let _ = handle.close_stdin().await;
        }
    }
}

/// Passes this terminal's size changes on to the command's PTY.
async fn forward_resizes(commands: Commands, pid: u32) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        let (rows, cols) = term::window_size(std::io::stdout().as_fd());
        let Ok(handle) = commands.connect(pid) else {
            return;
        };
        let _ = handle.resize(rows, cols);
    }
}

/// Exit codes when the program cannot run, as a shell reports them: 127
/// when it does not exist, 126 when it exists but cannot be executed.
const EXIT_NOT_FOUND: u8 = 127;
const EXIT_NOT_EXECUTABLE: u8 = 126;

/// Reports a command that could not start: a missing or non-executable
/// program exits 127 or 126 like a shell, so a typo is not mistaken for a
/// SoulBox failure (125); anything else is a SoulBox failure.
fn spawn_failure(error: &soulbox_core::Error) -> Result<u8, String> {
    if let soulbox_core::Error::Spawn { .. } = error {
        let code = match error.errno() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Some(EXIT_NOT_FOUND),
            Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
                Some(EXIT_NOT_EXECUTABLE)
            }
            _ => None,
        };
        if let Some(code) = code {
            eprintln!("soulbox: {}", crate::describe(error));
            return Ok(code);
        }
    }
    Err(crate::describe(error))
}

fn exit_code(status: ExitStatus) -> u8 {
    match status {
        ExitStatus::Code(code) => (code & 0xff) as u8,
        ExitStatus::Signal(signal) => 128u8.saturating_add(signal as u8),
    }
}
