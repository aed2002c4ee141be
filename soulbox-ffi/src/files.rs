//! File calls: `soulbox_files_*`, each acting as one sandbox user.

use std::path::Path;

use soulbox_core::Files;

use crate::entry::{CopySummaryBlock, EntryBlock, EntryListBlock};
use crate::error::Result;
use crate::output::BytesBlock;
use crate::runtime;
use crate::sandbox::Sandbox;

/// File access as `user`, or as the sandbox's default user for `None`.
pub(crate) fn files(sandbox: &Sandbox, user: Option<&str>) -> Files {
    match user {
        Some(name) => sandbox.inner.files().user(name),
        None => sandbox.inner.files(),
    }
}

pub fn read(sandbox: &Sandbox, path: &str, user: Option<&str>) -> Result<Box<BytesBlock>> {
    let data = runtime::block_on(files(sandbox, user).read(path))??;
    Ok(BytesBlock::new(data))
}

pub fn write(sandbox: &Sandbox, path: &str, data: &[u8], user: Option<&str>) -> Result<()> {
    runtime::block_on(files(sandbox, user).write(path, data.to_vec()))??;
    Ok(())
}

pub fn remove(sandbox: &Sandbox, path: &str, user: Option<&str>) -> Result<()> {
    runtime::block_on(files(sandbox, user).remove(path))??;
    Ok(())
}

pub fn make_dir(sandbox: &Sandbox, path: &str, user: Option<&str>) -> Result<bool> {
    Ok(runtime::block_on(files(sandbox, user).make_dir(path))??)
}

pub fn exists(sandbox: &Sandbox, path: &str, user: Option<&str>) -> Result<bool> {
    Ok(runtime::block_on(files(sandbox, user).exists(path))??)
}

pub fn list(
    sandbox: &Sandbox,
    path: &str,
    depth: usize,
    user: Option<&str>,
) -> Result<Box<EntryListBlock>> {
    let entries = runtime::block_on(files(sandbox, user).list(path, depth))??;
    Ok(EntryListBlock::new(&entries))
}

pub fn stat(sandbox: &Sandbox, path: &str, user: Option<&str>) -> Result<Box<EntryBlock>> {
    let entry = runtime::block_on(files(sandbox, user).stat(path))??;
    Ok(EntryBlock::new(&entry))
}

pub fn rename(
    sandbox: &Sandbox,
    from: &str,
    to: &str,
    user: Option<&str>,
) -> Result<Box<EntryBlock>> {
    let entry = runtime::block_on(files(sandbox, user).rename(from, to))??;
    Ok(EntryBlock::new(&entry))
}

pub fn copy_in(
    sandbox: &Sandbox,
    host_path: &Path,
    sandbox_path: &str,
    user: Option<&str>,
) -> Result<Box<CopySummaryBlock>> {
    let summary = runtime::block_on(files(sandbox, user).copy_in(host_path, sandbox_path))??;
    Ok(CopySummaryBlock::new(&summary))
}

pub fn copy_out(
    sandbox: &Sandbox,
    sandbox_path: &str,
    host_path: &Path,
    user: Option<&str>,
) -> Result<Box<CopySummaryBlock>> {
    let summary = runtime::block_on(files(sandbox, user).copy_out(sandbox_path, host_path))??;
    Ok(CopySummaryBlock::new(&summary))
}
