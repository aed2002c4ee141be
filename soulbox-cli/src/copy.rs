//! `--copy HOST_PATH:SANDBOX_PATH`: copies files and directory trees into a
//! sandbox with [`soulbox_core::Files::copy_in`], the path `soulbox cp`
//! shares.

use std::path::PathBuf;

use soulbox_core::Sandbox;

/// One `--copy` argument.
#[derive(Debug, Clone)]
pub struct CopySpec {
    host: PathBuf,
    sandbox: String,
}

impl CopySpec {
    /// Parses HOST_PATH:SANDBOX_PATH, splitting at the last ':'.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.rsplit_once(':') {
            Some((host, sandbox)) if !host.is_empty() && !sandbox.is_empty() => Ok(Self {
                host: PathBuf::from(host),
                sandbox: sandbox.to_string(),
            }),
            _ => Err(format!("{text:?} is not HOST_PATH:SANDBOX_PATH")),
        }
    }

    /// Checks that the host source exists before any sandbox is created.
    pub fn check_source(&self) -> Result<(), String> {
        std::fs::symlink_metadata(&self.host)
            .map(drop)
            .map_err(|e| format!("--copy source {} cannot be read: {e}", self.host.display()))
    }
}

/// Copies one file or directory tree as the sandbox user `user` (the
/// default user when `None`), so the files belong to whoever runs the
/// command. Files keep their permission bits; symlinks and special files
/// below a copied directory are skipped with a warning on stderr.
pub async fn copy_in(sandbox: &Sandbox, spec: &CopySpec, user: Option<&str>) -> Result<(), String> {
    let files = match user {
        Some(name) => sandbox.files().user(name),
        None => sandbox.files(),
    };
    let summary = files
        .copy_in(&spec.host, &spec.sandbox)
        .await
        .map_err(|e| crate::describe(&e))?;
    for skipped in &summary.skipped {
        eprintln!(
            "soulbox: --copy skipped {}: only regular files and directories are copied",
            skipped.display()
        );
    }
    Ok(())
}
