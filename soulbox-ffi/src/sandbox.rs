//! Sandboxes: `soulbox_sandbox` and its lifecycle calls.

use std::ffi::CString;
use std::time::Duration;

use soulbox_core::{Sandbox as CoreSandbox, SandboxOptions};

use crate::error::Result;
use crate::options::Options;
use crate::runtime;

/// A handle on a running sandbox. Created by `soulbox_sandbox_create` and
/// freed with `soulbox_sandbox_free`.
#[derive(Debug)]
pub struct Sandbox {
    pub(crate) inner: CoreSandbox,
    id: CString,
}

impl Sandbox {
    pub fn create(options: Option<&Options>) -> Result<Box<Self>> {
        let options = options.map_or_else(SandboxOptions::default, |o| o.inner.clone());
        let inner = runtime::block_on(CoreSandbox::create(options))??;
        Ok(Box::new(Self::wrap(inner)))
    }

    fn wrap(inner: CoreSandbox) -> Self {
        // Sandbox ids are generated hex strings, never with a NUL byte.
        let id = CString::new(inner.id()).expect("sandbox ids contain no NUL byte");
        Self { inner, id }
    }

    pub fn id(&self) -> &CString {
        &self.id
    }

    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    pub fn set_timeout_ms(&self, ms: u64) -> Result<()> {
        runtime::block_on(self.inner.set_timeout(Duration::from_millis(ms)))??;
        Ok(())
    }

    pub fn kill(&self) -> Result<()> {
        runtime::block_on(self.inner.kill())??;
        Ok(())
    }
}

/// `soulbox_sandbox_connect`: reaching a sandbox by id needs soulbox-core's
/// lifecycle API, which this version of the core lacks.
pub fn connect(_id: &str) -> Result<Box<Sandbox>> {
    Err(crate::error::Error::unsupported(
        "soulbox_sandbox_connect: soulbox-core cannot reach a sandbox by id yet",
    ))
}

/// `soulbox_sandbox_kill_id`, which needs the same lifecycle API.
pub fn kill_id(_id: &str) -> Result<bool> {
    Err(crate::error::Error::unsupported(
        "soulbox_sandbox_kill_id: soulbox-core cannot reach a sandbox by id yet",
    ))
}
