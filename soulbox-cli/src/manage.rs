//! Subcommands that manage sandboxes living beyond one `soulbox` process:
//! create, ls, info, kill, pause, resume, metrics and cp.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use soulbox_core::{
    Error, ListQuery, OnTimeout, Sandbox, SandboxInfo, SandboxOptions, SandboxState,
};

use crate::copy::{copy_in, CopySpec};
use crate::run::{parse_env, parse_secs, Signals};
use crate::{Failure, EXIT_NOT_FOUND};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  id=$(soulbox create --metadata job=42)\n  \
                        soulbox exec \"$id\" -- uname -a\n  soulbox kill \"$id\"")]
pub struct CreateArgs {
    /// Seconds the sandbox lives; 0 means until killed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        value_parser = parse_secs,
        allow_negative_numbers = true
    )]
    timeout: u64,

    /// Environment variable for every command, as KEY=VALUE; repeat for
    /// more.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    envs: Vec<(String, String)>,

    /// Label to list and filter by, as KEY=VALUE; repeat for more.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE", value_parser = parse_env)]
    metadata: Vec<(String, String)>,

    /// Copy a host file or directory into the new sandbox, as
    /// HOST_PATH:SANDBOX_PATH; repeat for more.
    #[arg(long = "copy", value_name = "HOST_PATH:SANDBOX_PATH", value_parser = CopySpec::parse)]
    copies: Vec<CopySpec>,

    /// The action of --timeout. `kill` ends the sandbox. `pause` freezes it,
    /// keeping its memory and files, until `soulbox resume` or a connect
    /// restarts it with a fresh timeout. Pausing needs a writable cgroup v2
    /// hierarchy.
    #[arg(long, value_enum, value_name = "ACTION", default_value = "kill")]
    on_timeout: OnTimeoutArg,

    /// With `--on-timeout pause`: calls that reach the paused sandbox by
    /// its id without resuming it, such as `soulbox cp`, resume it first.
    #[arg(long)]
    auto_resume: bool,

    #[command(flatten)]
    limits: crate::limits::LimitArgs,

    #[command(flatten)]
    network: crate::network::NetworkArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnTimeoutArg {
    Kill,
    Pause,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only sandboxes with this label, as KEY=VALUE; repeat to require
    /// several.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE", value_parser = parse_env)]
    metadata: Vec<(String, String)>,

    /// Only sandboxes in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,

    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Running,
    Paused,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The sandbox id.
    id: String,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The id of the sandbox to act on.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The sandbox id.
    id: String,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// The sandbox id.
    id: String,
    /// The port inside the sandbox.
    port: u16,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The sandbox id.
    id: String,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  soulbox cp ./data sb-abcdefghjkmn:data\n  \
                        soulbox cp sb-abcdefghjkmn:/home/user/out.csv ./out.csv")]
pub struct CpArgs {
    /// A host path, or ID:PATH in a sandbox.
    source: String,

    /// A host path, or ID:PATH in a sandbox.
    dest: String,

    /// Sandbox user whose permissions apply: `user` (the default) or
    /// `root`.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// Connects to sandbox `id`, turning "not found" into exit status 3.
pub async fn connect(id: &str) -> Result<Sandbox, Failure> {
    Sandbox::connect(id).await.map_err(failure)
}

/// Converts a core error into this command's failure: exit 3 when the
/// sandbox does not exist, 125 otherwise.
fn failure(error: Error) -> Failure {
    let code = match error {
        Error::SandboxNotFound { .. } | Error::SandboxNotRunning { .. } => EXIT_NOT_FOUND,
        _ => crate::EXIT_SOULBOX_FAILED,
    };
    Failure {
        message: crate::describe(&error),
        code,
    }
}

pub async fn create(args: CreateArgs) -> Result<u8, Failure> {
    for spec in &args.copies {
        spec.check_source()?;
    }
    let mut options = SandboxOptions::default().timeout(Duration::from_secs(args.timeout));
    options.envs = args.envs.into_iter().collect();
    options.metadata = args.metadata.into_iter().collect();
    options.on_timeout = match args.on_timeout {
        OnTimeoutArg::Kill => OnTimeout::Kill,
        OnTimeoutArg::Pause => OnTimeout::Pause,
    };
    options.auto_resume = args.auto_resume;
    args.limits.apply(&mut options);
    args.network.apply(&mut options);
    // The sandbox outlives this process once created. A signal before the
    // id is printed kills it too, because the caller never learns its id.
    let mut signals = Signals::new()?;
    let sandbox = tokio::select! {
        created = Sandbox::create(options) => created.map_err(failure)?,
        signal = signals.next() => return Ok(128 + signal as u8),
    };
    // NOTE: a SIGKILL during the copies still leaves the sandbox running
    // until its timeout, without its id printed.
    for spec in &args.copies {
        let copied = tokio::select! {
            copied = copy_in(&sandbox, spec, None) => copied.map_err(Failure::from),
            signal = signals.next() => Err(Failure {
                message: format!("interrupted by signal {signal} during --copy; killed the new sandbox"),
                code: 128 + signal as u8,
            }),
        };
        if let Err(failure) = copied {
            // A sandbox whose files did not arrive is of no use; end it.
            let _ = sandbox.kill().await;
            return Err(failure);
        }
    }
    println!("{}", sandbox.id());
    Ok(0)
}

pub async fn ls(args: LsArgs) -> Result<u8, Failure> {
    let mut query = ListQuery::default();
    for (key, value) in args.metadata {
        query = query.metadata(key, value);
    }
    if let Some(state) = args.state {
        query = query.state(match state {
            StateArg::Running => SandboxState::Running,
            StateArg::Paused => SandboxState::Paused,
        });
    }
    let infos = Sandbox::list(&query).await.map_err(failure)?;
    if args.json {
        let values: Vec<_> = infos.iter().map(info_json).collect();
        println!("{}", serde_json::Value::Array(values));
        return Ok(0);
    }
    println!(
        "{:<16} {:<8} {:<20} {:<20} METADATA",
        "ID", "STATE", "STARTED", "ENDS"
    );
    for info in &infos {
        println!(
            "{:<16} {:<8} {:<20} {:<20} {}",
            info.sandbox_id,
            info.state,
            rfc3339(info.started_at),
            info.ends_at.map_or_else(|| "-".to_string(), rfc3339),
            metadata_text(&info.metadata),
        );
    }
    Ok(0)
}

pub async fn info(args: InfoArgs) -> Result<u8, Failure> {
    let sandbox = open_without_resume(&args.id).await?;
    let info = sandbox.get_info().await.map_err(failure)?;
    if args.json {
        println!("{}", info_json(&info));
        return Ok(0);
    }
    println!("id:           {}", info.sandbox_id);
    println!("state:        {}", info.state);
    println!("template:     {}", info.template);
    println!("started at:   {}", rfc3339(info.started_at));
    println!(
        "ends at:      {}",
        info.ends_at.map_or_else(
            || match info.state {
                SandboxState::Paused => "- (paused; the clock is stopped)".to_string(),
                SandboxState::Running => "- (no timeout)".to_string(),
            },
            rfc3339
        )
    );
    println!(
        "on timeout:   {}{}",
        info.on_timeout,
        if info.auto_resume {
            " (auto-resume)"
        } else {
            ""
        }
    );
    println!("metadata:     {}", metadata_text(&info.metadata));
    println!(
        "memory limit: {}",
        info.memory_limit
            .map_or_else(|| "none".to_string(), |b| format!("{} MiB", b >> 20))
    );
    println!(
        "cpu limit:    {}",
        info.cpu_limit
            .map_or_else(|| "none".to_string(), |c| format!("{c} cores"))
    );
    println!("pid:          {}", info.pid);
    println!("network:      {}", info.network.as_str());
    if !info.allow_out.is_empty() {
        println!("allow out:    {}", info.allow_out.join(", "));
    }
    if !info.deny_out.is_empty() {
        println!("deny out:     {}", info.deny_out.join(", "));
    }
    Ok(0)
}

pub async fn kill(args: IdArgs) -> Result<u8, Failure> {
    if Sandbox::kill_id(&args.id).await.map_err(failure)? {
        Ok(0)
    } else {
        Err(failure(Error::SandboxNotFound { id: args.id }))
    }
}

pub async fn pause(args: IdArgs) -> Result<u8, Failure> {
    let sandbox = open_without_resume(&args.id).await?;
    if !sandbox.pause().await.map_err(failure)? {
        eprintln!("soulbox: sandbox {} was already paused", args.id);
    }
    Ok(0)
}

pub async fn resume(args: IdArgs) -> Result<u8, Failure> {
    // connect resumes a paused sandbox.
    connect(&args.id).await?;
    Ok(0)
}

pub async fn port(args: PortArgs) -> Result<u8, Failure> {
    use std::io::Write;
    use tokio::signal::unix::{signal, SignalKind};

    let sandbox = connect(&args.id).await?;
    let host = sandbox.get_host(args.port).map_err(failure)?;
    let mut stdout = std::io::stdout();
    // A reader such as `read` in a script needs the line before any
    // connection is made.
    writeln!(stdout, "{host}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("failed to print the address: {e}"))?;
    let listen = |kind| signal(kind).map_err(|e| format!("failed to handle signals: {e}"));
    let (mut interrupt, mut terminate) = (
        listen(SignalKind::interrupt())?,
        listen(SignalKind::terminate())?,
    );
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(0),
            _ = terminate.recv() => return Ok(0),
            _ = ticks.tick() => {
                if !sandbox.is_running() {
                    eprintln!("soulbox: sandbox {} has ended", args.id);
                    return Ok(0);
                }
            }
        }
    }
}

pub async fn metrics(args: MetricsArgs) -> Result<u8, Failure> {
    let sandbox = open_without_resume(&args.id).await?;
    let metrics = sandbox.metrics().await.map_err(failure)?;
    if args.json {
        let value = serde_json::json!({
            "timestamp": rfc3339(metrics.timestamp),
            "cpu_count": metrics.cpu_count,
            "cpu_used_pct": metrics.cpu_used_pct,
            "cpu_time_seconds": metrics.cpu_time.map(|d| d.as_secs_f64()),
            "mem_used": metrics.mem_used,
            "mem_total": metrics.mem_total,
            "disk_used": metrics.disk_used,
            "disk_total": metrics.disk_total,
        });
        println!("{value}");
        return Ok(0);
    }
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    println!("timestamp:  {}", rfc3339(metrics.timestamp));
    println!(
        "cpu:        {:.1}% of {} cores since creation, {}",
        metrics.cpu_used_pct,
        metrics.cpu_count,
        metrics.cpu_time.map_or_else(
            || "CPU time unknown".to_string(),
            |d| format!("{:.2} s CPU time", d.as_secs_f64())
        )
    );
    println!(
        "memory:     {} of {}",
        metrics.mem_used.map_or_else(|| "unknown".to_string(), mib),
        metrics
            .mem_total
            .map_or_else(|| "no limit".to_string(), mib)
    );
    println!(
        "disk:       {} of {}",
        mib(metrics.disk_used),
        mib(metrics.disk_total)
    );
    Ok(0)
}

pub async fn cp(args: CpArgs) -> Result<u8, Failure> {
    let (id, sandbox_path, host, into_sandbox) =
        match (split_remote(&args.source), split_remote(&args.dest)) {
            (None, Some((id, path))) => (id, path, PathBuf::from(&args.source), true),
            (Some((id, path)), None) => (id, path, PathBuf::from(&args.dest), false),
            (Some(_), Some(_)) => {
                return Err(String::from(
                    "both paths name a sandbox; copy through the host in two steps",
                )
                .into())
            }
            (None, None) => return Err(no_sandbox_path(&args.source, &args.dest).into()),
        };
    // The file API works on a paused sandbox, which stays paused.
    let sandbox = open_without_resume(id).await?;
    let files = match &args.user {
        Some(user) => sandbox.files().user(user.clone()),
        None => sandbox.files(),
    };
    let summary = if into_sandbox {
        files.copy_in(&host, sandbox_path).await
    } else {
        files.copy_out(sandbox_path, &host).await
    }
    .map_err(failure)?;
    for skipped in &summary.skipped {
        eprintln!(
            "soulbox: skipped {}: only regular files and directories are copied",
            skipped.display()
        );
    }
    Ok(0)
}

/// Splits `ID:PATH` when the part before the first ':' is a sandbox id.
/// Builds the error for a copy whose paths name no sandbox. A path with a
/// `:` was most likely meant as ID:PATH, so the message names its prefix.
fn no_sandbox_path(source: &str, dest: &str) -> String {
    let intended = [dest, source]
        .into_iter()
        .find_map(|path| path.split_once(':').map(|(prefix, _)| (path, prefix)));
    match intended {
        Some((path, prefix)) => format!(
            "neither path names a sandbox: {prefix:?} in {path:?} is not a sandbox id \
             (sb- and 12 lowercase letters and digits); `soulbox ls` lists this user's sandboxes"
        ),
        None => String::from("neither path names a sandbox; write one side as ID:PATH"),
    }
}

fn split_remote(text: &str) -> Option<(&str, &str)> {
    let (id, path) = text.split_once(':')?;
    soulbox_core::diagnostics::is_sandbox_id(id).then_some((id, path))
}

/// Opens a sandbox by id without resuming it when it is paused.
async fn open_without_resume(id: &str) -> Result<Sandbox, Failure> {
    Sandbox::connect_without_resume(id).await.map_err(failure)
}

fn metadata_text(metadata: &BTreeMap<String, String>) -> String {
    if metadata.is_empty() {
        return "-".to_string();
    }
    metadata
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn info_json(info: &SandboxInfo) -> serde_json::Value {
    serde_json::json!({
        "sandbox_id": info.sandbox_id,
        "template": info.template,
        "state": info.state.as_str(),
        "metadata": info.metadata,
        "started_at": rfc3339(info.started_at),
        "ends_at": info.ends_at.map(rfc3339),
        "cpu_limit": info.cpu_limit,
        "memory_limit": info.memory_limit,
        "pid": info.pid,
        "network": info.network.as_str(),
        "allow_out": info.allow_out,
        "deny_out": info.deny_out,
        "on_timeout": info.on_timeout.as_str(),
        "auto_resume": info.auto_resume,
    })
}

/// Formats a time as RFC 3339 in UTC, to the second.
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(leap_day), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn remote_paths_need_a_sandbox_id() {
        assert_eq!(
            split_remote("sb-abcdefghjkmn:/tmp/x"),
            Some(("sb-abcdefghjkmn", "/tmp/x"))
        );
        assert_eq!(split_remote("./local:file"), None);
        assert_eq!(split_remote("/abs/path"), None);
    }
}
