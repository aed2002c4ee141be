//! `soulbox run`: create a sandbox, copy files in, run one command with its
//! output streamed, destroy the sandbox.

use std::time::Duration;

use clap::Args;
use soulbox_core::{ExitStatus, Sandbox, SandboxOptions};
use tokio::io::AsyncWriteExt;

use crate::copy::{copy_in, CopySpec};

/// Exit code when the timeout ended the command, as in `timeout(1)`.
const EXIT_TIMED_OUT: u8 = 124;

/// Create a sandbox, run COMMAND in it, and destroy it.
///
/// COMMAND runs directly, with no shell; use `-- sh -c '...'` for shell
/// syntax. Its stdout and stderr stream to this terminal as they are
/// written; its stdin is empty.
///
/// Exit status: the command's own exit code; 124 when --timeout ended it;
/// 128+N when signal N killed it; 125 when SoulBox itself failed.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  soulbox run --copy ./job:/home/user/job --cwd job -- python3 main.py"
)]
pub struct RunArgs {
    /// Seconds the command may run before it and every process it started
    /// are killed; 0 means no limit. The sandbox itself ends 5 s later.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = parse_secs)]
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

    /// Copy a host file or directory into the sandbox before the command
    /// starts, as HOST_PATH:SANDBOX_PATH; repeat for more. Relative sandbox
    /// paths start at /home/user.
    #[arg(long = "copy", value_name = "HOST_PATH:SANDBOX_PATH", value_parser = CopySpec::parse)]
    copies: Vec<CopySpec>,

    /// The program to run and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_secs(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Runs the command; returns the exit code for this process, or a one-line
/// message when SoulBox failed.
pub async fn run(args: RunArgs) -> Result<u8, String> {
    for spec in &args.copies {
        spec.check_source()?;
    }
    let command_timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    // The sandbox outlives the command's own timeout by a margin, so the
    // command's timeout is what the caller sees, with full output.
    let sandbox_timeout = command_timeout.map_or(Duration::ZERO, |t| t + Duration::from_secs(5));
    let options = SandboxOptions::default().timeout(sandbox_timeout);
    let sandbox = Sandbox::create(options)
        .await
        .map_err(|e| crate::describe(&e))?;
    let result = run_in(&sandbox, &args, command_timeout).await;
    let killed = sandbox.kill().await.map_err(|e| crate::describe(&e));
    let code = result?;
    killed?;
    Ok(code)
}

async fn run_in(
    sandbox: &Sandbox,
    args: &RunArgs,
    timeout: Option<Duration>,
) -> Result<u8, String> {
    for spec in &args.copies {
        copy_in(sandbox, spec).await?;
    }
    let mut command = sandbox.command(&args.command[0]);
    command.args(&args.command[1..]).timeout(None);
    if let Some(user) = &args.user {
        command.user(user.clone());
    }
    if let Some(cwd) = &args.cwd {
        command.cwd(cwd.clone());
    }
    for (key, value) in &args.envs {
        command.env(key, value);
    }
    let mut child = command.spawn().await.map_err(|e| crate::describe(&e))?;
    let mut stdout = child.stdout.take().ok_or("command stdout missing")?;
    let mut stderr = child.stderr.take().ok_or("command stderr missing")?;

    let stream = async {
        let mut host_out = tokio::io::stdout();
        let mut host_err = tokio::io::stderr();
        // A closed host stdout (for example `| head`) must not stop the
        // command early, so copy errors are ignored.
        let (_, _, status) = tokio::join!(
            tokio::io::copy(&mut stdout, &mut host_out),
            tokio::io::copy(&mut stderr, &mut host_err),
            child.wait(),
        );
        let _ = host_out.flush().await;
        status
    };
    let deadline = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stream);
    tokio::select! {
        status = &mut stream => {
            let status = status.map_err(|e| crate::describe(&e))?;
            Ok(exit_code(status))
        }
        () = deadline => {
            child_kill(&mut stream).await;
            eprintln!("soulbox: command timed out after {} s; killed it and every process it started",
                timeout.map_or(0, |t| t.as_secs()));
            Ok(EXIT_TIMED_OUT)
        }
        _ = tokio::signal::ctrl_c() => {
            Ok(128 + libc::SIGINT as u8)
        }
    }
}

/// Nothing to do beyond dropping the stream: the caller kills the sandbox,
/// which ends every process in it.
async fn child_kill<F>(_stream: &mut F) {}

fn exit_code(status: ExitStatus) -> u8 {
    match status {
        ExitStatus::Code(code) => (code & 0xff) as u8,
        ExitStatus::Signal(signal) => 128u8.saturating_add(signal as u8),
    }
}
