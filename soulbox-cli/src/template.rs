//! `soulbox template build`, `list`, `rm` and `prune`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use soulbox_core::build::{BuildEvent, BuildOptions, LayerOutcome};

use crate::{describe, Failure, EXIT_SOULBOX_FAILED};

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Build a template from a soulbox.toml.
    ///
    /// Copies the file's `[[files]]` into a sandbox made from its `base`,
    /// runs its `run` steps in order with their output shown here, and
    /// keeps what they wrote as a new layer. Stops at the first step that
    /// exits non-zero and keeps nothing. A build whose file, files and base
    /// have not changed is cached and returns at once.
    Build(BuildArgs),
    /// List the built templates that have a name.
    List(ListArgs),
    /// Remove built templates by name and delete their layers.
    ///
    /// Removes each NAME, and its soulbox.toml's path stops naming the
    /// build unless another name still does. The build's layer is deleted
    /// unless another name or a template built on it needs it. A layer
    /// that a running sandbox or a warm pool's waiting sandbox still mounts
    /// stays until `soulbox template prune` runs after that mount is gone.
    /// Prints one line per removed template and then the disk space freed
    /// (nothing when none was removed). Exit status: 0, 125 when a NAME is
    /// unknown or SoulBox failed.
    Rm(RmArgs),
    /// Delete every build that nothing keeps.
    ///
    /// Deletes the builds that no name or soulbox.toml points to and that
    /// no kept template is built on, such as the earlier builds of a
    /// changed soulbox.toml. Keeps those that a mount still uses and
    /// leaves running builds alone. Prints one line per deleted build and
    /// then the disk space freed. Exit status: 0, 125 when SoulBox failed.
    Prune,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The soulbox.toml, or the directory that contains it.
    #[arg(default_value = ".")]
    path: PathBuf,

    /// Name to register the template under, in place of the file's `name`
    /// key; `--template NAME` then uses it.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Print no step output, only the result.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RmArgs {
    /// The names of the templates, as `soulbox template list` shows them.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print JSON, one object per template, instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TemplateArgs) -> Result<u8, Failure> {
    match args.command {
        TemplateCommand::Build(args) => build(args).await,
        TemplateCommand::List(args) => list(&args),
        TemplateCommand::Rm(args) => Ok(remove(&args)),
        TemplateCommand::Prune => prune(),
    }
}

async fn build(args: BuildArgs) -> Result<u8, Failure> {
    let mut options = BuildOptions::default();
    if let Some(name) = args.name {
        options = options.name(name);
    }
    let quiet = args.quiet;
    let started = std::time::Instant::now();
    let mut on_event = |event: BuildEvent<'_>| {
        if quiet {
            return;
        }
        // Step output goes to stderr as written; stdout keeps the result.
        let mut stderr = std::io::stderr().lock();
        let _ = match event {
            BuildEvent::Cached { key } => {
                writeln!(stderr, "cached: nothing changed since build {}", &key[..12])
            }
            BuildEvent::File { from, to } => {
                writeln!(stderr, "==> copy {} to {to}", from.display())
            }
            BuildEvent::Step {
                number,
                count,
                command,
            } => writeln!(stderr, "==> step {number}/{count}: {command}"),
            BuildEvent::Stdout(data) | BuildEvent::Stderr(data) => stderr.write_all(data),
            BuildEvent::Saving => writeln!(stderr, "==> saving the layer"),
            _ => Ok(()),
        };
    };
    let built = soulbox_core::build::build(&args.path, &options, &mut on_event)
        .await
        .map_err(|e| Failure::from(describe(&e)))?;
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = if built.cached { "cached" } else { "built" };
    match &built.name {
        Some(name) => println!(
            "{outcome} template {name} ({}) in {elapsed:.1} s; use --template {name}",
            built.source.display()
        ),
        None => println!(
            "{outcome} template {} in {elapsed:.1} s; use --template {}",
            built.source.display(),
            built.source.display()
        ),
    }
    Ok(0)
}

fn list(args: &ListArgs) -> Result<u8, Failure> {
    let templates = soulbox_core::build::list().map_err(|e| Failure::from(describe(&e)))?;
    if args.json {
        for template in &templates {
            let line = serde_json::json!({
                "name": template.name,
                "key": template.key,
                "source": template.source,
                "base": template.base,
                "built_at_ms": template.built_at_ms,
            });
            println!("{line}");
        }
        return Ok(0);
    }
    if templates.is_empty() {
        return Ok(0);
    }
    println!("{:<24} {:<12} {:<24} SOURCE", "NAME", "KEY", "BASE");
    for template in &templates {
        println!(
            "{:<24} {:<12} {:<24} {}",
            template.name,
            &template.key[..template.key.len().min(12)],
            template.base,
            template.source.display()
        );
    }
    Ok(0)
}

/// Removes each name, going on past a failed one, and returns the exit
/// status: 125 when any failed.
fn remove(args: &RmArgs) -> u8 {
    let mut freed = 0;
    let mut removed_any = false;
    let mut status = 0;
    for name in &args.names {
        let removed = match soulbox_core::build::remove(name) {
            Ok(removed) => removed,
            Err(error) => {
                eprintln!("soulbox: {}", describe(&error));
                status = EXIT_SOULBOX_FAILED;
                continue;
            }
        };
        removed_any = true;
        let key = short_key(&removed.key);
        match removed.layer {
            LayerOutcome::Deleted { bytes } => {
                freed += bytes;
                println!(
                    "removed template {name}: deleted build {key} ({})",
                    size(bytes)
                );
            }
            LayerOutcome::InUse => println!(
                "removed template {name}: build {key} stays until no sandbox uses it; then \
                 `soulbox template prune` deletes it"
            ),
            LayerOutcome::Kept => println!(
                "removed template {name}: build {key} stays because another name or a \
                 template built on it needs it"
            ),
            LayerOutcome::Missing => {
                println!("removed template {name}: its build {key} was already gone");
            }
            _ => println!("removed template {name}"),
        }
    }
    if removed_any {
        println!("freed {}", size(freed));
    }
    status
}

fn prune() -> Result<u8, Failure> {
    let report = soulbox_core::build::prune().map_err(|e| Failure::from(describe(&e)))?;
    for build in &report.deleted {
        let source = build.source.as_ref().map_or_else(
            || "an unknown soulbox.toml".to_string(),
            |s| s.display().to_string(),
        );
        println!(
            "deleted build {} of {source} ({})",
            short_key(&build.key),
            size(build.bytes)
        );
    }
    if !report.in_use.is_empty() {
        println!(
            "kept {} unnamed build(s) that a sandbox still uses",
            report.in_use.len()
        );
    }
    println!("freed {}", size(report.freed_bytes));
    Ok(0)
}

/// Returns the first 12 characters of a build key, as `list` shows it.
fn short_key(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

/// Formats a byte count in KiB under a MiB, else in MiB, with one decimal.
fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        return format!("{:.1} KiB", bytes as f64 / 1024.0);
    }
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
