//! The `soulbox` command.

#![deny(unsafe_code)]

mod copy;
mod limits;
mod manage;
mod run;
#[expect(unsafe_code, reason = "the one module that makes raw system calls")]
mod term;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Run(run::RunArgs),
    Create(manage::CreateArgs),
    Exec(run::ExecArgs),
    Shell(run::ShellArgs),
    Ls(manage::LsArgs),
    Info(manage::InfoArgs),
    /// Kill a sandbox and remove everything it left.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Kill(manage::IdArgs),
    /// Freeze every process of a sandbox and stop its timeout clock.
    ///
    /// Pausing a paused sandbox changes nothing. A paused sandbox keeps its
    /// memory and files until resumed or killed; it does not survive a
    /// reboot. Exit status: 0, 3 when no sandbox has the id, 125 when
    /// SoulBox failed.
    Pause(manage::IdArgs),
    /// Thaw a paused sandbox; its timeout clock goes on where it stopped.
    ///
    /// Exit status: 0, 3 when no sandbox has the id, 125 when SoulBox failed.
    Resume(manage::IdArgs),
    Metrics(manage::MetricsArgs),
    Cp(manage::CpArgs),
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print them and succeed.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A usage error is a SoulBox failure, exit 125, so it cannot be
            // mistaken for the command's own exit code 2.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("soulbox: {first} (see soulbox --help)");
            return ExitCode::from(EXIT_SOULBOX_FAILED);
        }
    };
    // One sandbox per process: a zygote would cost an exec of its own and
    // save nothing.
    soulbox_core::set_launcher(soulbox_core::Launcher::Exec);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soulbox: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_SOULBOX_FAILED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Run(args) => run::run(args).await.map_err(Failure::from),
            Commands::Create(args) => manage::create(args).await,
            Commands::Exec(args) => run::exec(args).await,
            Commands::Shell(args) => run::shell(args).await,
            Commands::Ls(args) => manage::ls(args).await,
            Commands::Info(args) => manage::info(args).await,
            Commands::Kill(args) => manage::kill(args).await,
            Commands::Pause(args) => manage::pause(args).await,
            Commands::Resume(args) => manage::resume(args).await,
            Commands::Metrics(args) => manage::metrics(args).await,
            Commands::Cp(args) => manage::cp(args).await,
        }
    });
    // A read of this process's stdin may still be blocked in a runtime
    // thread; it must not hold up the exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("soulbox: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
