//! File calls: `soulbox_files_*`, each acting as one sandbox user.

use soulbox_core::Files;

use crate::error::Result;
use crate::output::BytesBlock;
use crate::runtime;
use crate::sandbox::Sandbox;

/// File access as `user`, or as the sandbox's default user for `None`.
fn files(sandbox: &Sandbox, user: Option<&str>) -> Files {
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
