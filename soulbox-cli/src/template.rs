//! `soulbox template build` and `soulbox template list`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use soulbox_core::build::{BuildEvent, BuildOptions};

use crate::{describe, Failure};

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
struct ListArgs {
    /// Print JSON, one object per template, instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TemplateArgs) -> Result<u8, Failure> {
    match args.command {
        TemplateCommand::Build(args) => build(args).await,
        TemplateCommand::List(args) => list(&args),
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
