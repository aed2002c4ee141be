//! `--copy HOST_PATH:SANDBOX_PATH`: copies files and directory trees into a
//! sandbox through the file API.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// Copies one file or directory tree; symlinks are skipped, files keep their
/// executable bits.
pub async fn copy_in(sandbox: &Sandbox, spec: &CopySpec) -> Result<(), String> {
    let mut pending = vec![(
        spec.host.clone(),
        spec.sandbox.trim_end_matches('/').to_string(),
    )];
    while let Some((host, dest)) = pending.pop() {
        let meta = std::fs::symlink_metadata(&host)
            .map_err(|e| format!("cannot read {}: {e}", host.display()))?;
        if meta.is_dir() {
            sandbox
                .files()
                .make_dir(&dest)
                .await
                .map_err(|e| crate::describe(&e))?;
            let entries = std::fs::read_dir(&host)
                .map_err(|e| format!("cannot list {}: {e}", host.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("cannot list {}: {e}", host.display()))?;
                let name = entry.file_name();
                let name = name.to_str().ok_or_else(|| {
                    format!("{} has a name that is not UTF-8", entry.path().display())
                })?;
                pending.push((entry.path(), format!("{dest}/{name}")));
            }
        } else if meta.is_file() {
            copy_file(sandbox, &host, &dest, meta.permissions().mode()).await?;
        }
    }
    Ok(())
}

async fn copy_file(sandbox: &Sandbox, host: &Path, dest: &str, mode: u32) -> Result<(), String> {
    let data = std::fs::read(host).map_err(|e| format!("cannot read {}: {e}", host.display()))?;
    sandbox
        .files()
        .write_with_mode(dest, data, mode & 0o777)
        .await
        .map_err(|e| crate::describe(&e))
}
