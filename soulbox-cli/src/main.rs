//! The `soulbox` command.

#![deny(unsafe_code)]
// The unit tests keep the test harness's own entry point, so the code that
// only the C entry point below reaches is unused in them.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(
    test,
    expect(dead_code, reason = "the test harness replaces the entry point")
)]

mod copy;
mod limits;
mod manage;
mod network;
mod run;
mod template;
#[expect(unsafe_code, reason = "the one module that makes raw system calls")]
mod term;

use clap::{ArgMatches, Args, Command, FromArgMatches, Parser, Subcommand};

/// Run untrusted code in a disposable Linux sandbox.
///
/// Each sandbox has its own mount, PID, network (loopback only), UTS, IPC
/// and cgroup namespaces, and a writable overlay over the host's /usr with a
/// generated /etc. As root it also gets a cgroup; without root it runs in a
/// user namespace where the caller is the sandbox's only user, root.
#[derive(Debug, Parser)]
#[command(name = "soulbox", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Create a sandbox, run COMMAND in it, and destroy it.
    ///
    /// COMMAND runs directly, with no shell; use `-- sh -c '...'` for shell
    /// syntax. Its stdout and stderr stream to this terminal as they are
    /// written. When stdin is not a terminal it is forwarded to the command
    /// (`echo hi | soulbox run -- cat`); otherwise the command's stdin is empty,
    /// unless --tty gives it an interactive terminal. With an image
    /// template (--template ./image.tar) and no COMMAND, it runs the image's
    /// Entrypoint and Cmd.
    ///
    /// SIGINT, SIGTERM or SIGHUP is passed on to the command; a second one
    /// ends it and the sandbox at once.
    ///
    /// Exit status: the command's own exit code; 124 when --timeout ended it;
    /// 126 when COMMAND cannot be executed and 127 when it does not exist;
    /// 128+N when signal N killed it (141 when this command's output was
    /// closed); 125 when SoulBox itself failed, including a bad option.
    Run(Deferred<run::RunArgs>),
    /// Create a sandbox that keeps running, and print its id.
    ///
    /// The sandbox runs until --timeout passes or `soulbox kill ID`; any
    /// process of this user can reach it by its id. Exit status: 0; 125
    /// when SoulBox failed; 128+N when signal N (SIGINT, SIGTERM or SIGHUP)
    /// arrived before the id was printed, which kills the new sandbox.
    Create(Deferred<manage::CreateArgs>),
    /// Run COMMAND in the running sandbox ID.
    ///
    /// COMMAND runs directly, with no shell, its output streamed and its stdin
    /// forwarded as with `soulbox run`. The sandbox keeps running afterwards.
    ///
    /// Exit status: as `soulbox run`: the command's own exit code, 124 on
    /// --timeout, 126 or 127 when COMMAND cannot run, 128+N for signal N, 125
    /// when SoulBox failed; and 3 when no sandbox has the id ID.
    Exec(Deferred<run::ExecArgs>),
    /// Open an interactive shell in the running sandbox ID.
    ///
    /// Runs bash as a login shell (sh where the template has no bash) on a
    /// pseudo-terminal; needs a terminal on stdin. Exit status: the shell's,
    /// or 3 when no sandbox has the id ID.
    Shell(Deferred<run::ShellArgs>),
    /// List this user's sandboxes, oldest first.
    Ls(Deferred<manage::LsArgs>),
    /// Show one sandbox's id, template, metadata, times, state and limits.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Info(Deferred<manage::InfoArgs>),
    /// Kill a sandbox and remove everything it left.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Kill(Deferred<manage::IdArgs>),
    /// Freeze every process of a sandbox and stop its timeout clock.
    ///
    /// Pausing a paused sandbox changes nothing. A paused sandbox keeps its
    /// memory and files until resumed or killed; it does not survive a
    /// reboot. Exit status: 0, 3 when no sandbox has the id, 125 when
    /// SoulBox failed.
    Pause(Deferred<manage::IdArgs>),
    /// Thaw a paused sandbox; its timeout clock goes on where it stopped.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Resume(Deferred<manage::IdArgs>),
    /// Show one sandbox's CPU, memory and disk use.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Metrics(Deferred<manage::MetricsArgs>),
    /// Copy files and directories between the host and a sandbox.
    ///
    /// Exactly one of SOURCE and DEST names the sandbox side, as ID:PATH;
    /// relative sandbox paths start at /home/user. Directories are copied
    /// whole; symlinks and special files below them are skipped with a
    /// warning. Files copied in belong to the sandbox user --user.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Cp(Deferred<manage::CpArgs>),
    /// Forward a TCP port of a sandbox to the host's loopback interface.
    ///
    /// Prints an address such as 127.0.0.1:40123 whose connections reach
    /// PORT on the sandbox's loopback, and forwards them until SIGINT,
    /// SIGTERM or the end of the sandbox. Any process on the host can
    /// connect to the address. Exit status: 0, 3 when no sandbox has the
    /// id, 125 when SoulBox failed.
    Port(Deferred<manage::PortArgs>),
    /// Build templates from a soulbox.toml, list, remove and prune them.
    ///
    /// `soulbox template build [DIR|FILE] [--name NAME]` runs the file's
    /// steps in a sandbox and keeps what they wrote as a template, which
    /// `--template NAME` or `--template DIR` then uses. `soulbox template
    /// rm NAME...` removes templates, and `soulbox template prune` deletes
    /// the builds that nothing names. Exit status: 0, 125 when the build
    /// or SoulBox failed.
    Template(template::TemplateArgs),
}

/// A subcommand's arguments, which clap builds only when that subcommand
/// runs or prints its help. Building every subcommand's arguments added
/// about 0.05 ms to each start on the benchmark host.
///
/// A subcommand's description must be on its variant of [`Commands`], so
/// that the list of subcommands shows it without building the arguments.
#[derive(Debug)]
struct Deferred<T>(T);

impl<T: Args> Args for Deferred<T> {
    fn augment_args(cmd: Command) -> Command {
        cmd.defer(|cmd| keep_description(cmd, T::augment_args))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(|cmd| keep_description(cmd, T::augment_args_for_update))
    }
}

/// Adds the arguments, keeping the description that the variant gave the
/// subcommand before them.
fn keep_description(cmd: Command, augment: fn(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let Some(about) = about else {
        return cmd;
    };
    let cmd = cmd.about(about);
    match long_about {
        Some(long_about) => cmd.long_about(long_about),
        None => cmd.long_about(None::<&'static str>),
    }
}

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Self)
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Self)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

/// Exit code when SoulBox itself failed, as in `timeout(1)` and Docker.
pub const EXIT_SOULBOX_FAILED: u8 = 125;

/// Exit code when no sandbox has the id given.
pub const EXIT_NOT_FOUND: u8 = 3;

/// A failed subcommand: the one-line message and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            code: EXIT_SOULBOX_FAILED,
        }
    }
}

/// Formats an error with its chain of causes on one line.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The C entry point, in place of Rust's `main`, whose start-up took about
/// 0.1 ms of every run here, among it a read of /proc/self/maps to place a
/// stack guard. This does what of it the program needs: SIGPIPE is
/// ignored, closed standard descriptors are opened on /dev/null, a panic
/// exits with status 101, and stdout is flushed at the end.
#[cfg(not(test))]
#[expect(unsafe_code, reason = "the C entry point needs an unmangled name")]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    if let Err(e) = term::prepare_process() {
        eprintln!("soulbox: failed to open /dev/null on a closed standard descriptor: {e}");
        return libc::c_int::from(EXIT_SOULBOX_FAILED);
    }
    let code = std::panic::catch_unwind(run).unwrap_or(EXIT_PANIC);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    libc::c_int::from(code)
}

/// Exit code after a panic, as Rust's own start-up returns it.
const EXIT_PANIC: u8 = 101;

/// Returns a usage error on one line: clap's message up to its usage
/// section. A missing argument's name is on the lines after the first.
fn usage_error(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    let message = message.join(" ");
    let message = message.trim_start_matches("error: ");
    if message.is_empty() {
        "invalid arguments".to_string()
    } else {
        message.to_string()
    }
}

/// Environment variable that chooses how PID 1 starts: `fork` or `exec`.
/// Unset, `create` executes PID 1 and the other subcommands clone it.
const LAUNCHER_VAR: &str = "SOULBOX_LAUNCHER";

/// Returns the launcher that [`LAUNCHER_VAR`] chooses, or without it the
/// default for a sandbox that `outlives_process` or not.
///
/// This process makes one sandbox, so a zygote would cost an exec of its
/// own and save nothing. By default PID 1 is cloned from this process
/// instead, where that is safe: with root, and while this process has one
/// thread. So nothing before the create may start a thread
/// (`spawn_blocking`, `tokio::fs`, a multi-threaded runtime), or every
/// create executes PID 1. A cloned PID 1 maps this program's binary for
/// as long as it lives, which keeps the file busy and its filesystem from
/// being unmounted. So the default for a sandbox that outlives this
/// process (`soulbox create`) is `exec`, which always executes PID 1, as a
/// host that does not link soulbox-init does.
fn launcher_from_env(outlives_process: bool) -> Result<soulbox_core::Launcher, String> {
    let Some(value) = std::env::var_os(LAUNCHER_VAR) else {
        return Ok(if outlives_process {
            soulbox_core::Launcher::Exec
        } else {
            soulbox_core::Launcher::Fork(soulbox_init::run_cloned)
        });
    };
    match value.to_str() {
        Some("fork") => Ok(soulbox_core::Launcher::Fork(soulbox_init::run_cloned)),
        Some("exec") => Ok(soulbox_core::Launcher::Exec),
        _ => Err(format!(
            "invalid {LAUNCHER_VAR} value {value:?}: expected fork or exec, or leave it unset"
        )),
    }
}

/// Runs the subcommand; returns the exit code.
fn run() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print them and succeed.
            let _ = e.print();
            return 0;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // No subcommand: the help is the message.
            let _ = e.print();
            return EXIT_SOULBOX_FAILED;
        }
        Err(e) => {
            // A usage error is a SoulBox failure, exit 125, so it cannot be
            // mistaken for the command's own exit code 2.
            eprintln!("soulbox: {} (see soulbox --help)", usage_error(&e));
            return EXIT_SOULBOX_FAILED;
        }
    };
    let outlives_process = matches!(cli.command, Commands::Create(_));
    match launcher_from_env(outlives_process) {
        Ok(launcher) => soulbox_core::set_launcher(launcher),
        Err(message) => {
            eprintln!("soulbox: {message}");
            return EXIT_SOULBOX_FAILED;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soulbox: failed to start the async runtime: {e}");
            return EXIT_SOULBOX_FAILED;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Run(Deferred(args)) => run::run(args).await.map_err(Failure::from),
            Commands::Create(Deferred(args)) => manage::create(args).await,
            Commands::Exec(Deferred(args)) => run::exec(args).await,
            Commands::Shell(Deferred(args)) => run::shell(args).await,
            Commands::Ls(Deferred(args)) => manage::ls(args).await,
            Commands::Info(Deferred(args)) => manage::info(args).await,
            Commands::Kill(Deferred(args)) => manage::kill(args).await,
            Commands::Pause(Deferred(args)) => manage::pause(args).await,
            Commands::Resume(Deferred(args)) => manage::resume(args).await,
            Commands::Metrics(Deferred(args)) => manage::metrics(args).await,
            Commands::Cp(Deferred(args)) => manage::cp(args).await,
            Commands::Port(Deferred(args)) => manage::port(args).await,
            Commands::Template(args) => template::run(args).await,
        }
    });
    // A read of this process's stdin may still be blocked in a runtime
    // thread; it must not hold up the exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("soulbox: {}", failure.message);
            failure.code
        }
    }
}
