//! Sandboxes: `soulbox_sandbox` and its lifecycle calls.

use std::ffi::CString;
use std::time::Duration;

use soulbox_core::{ListQuery, Sandbox as CoreSandbox, SandboxOptions};

use crate::error::Result;
use crate::info::{InfoBlock, ListBlock, Metrics};
use crate::options::Options;
use crate::output::BytesBlock;
use crate::runtime;

/// A handle on a running sandbox. Created by `soulbox_sandbox_create` or
/// `soulbox_sandbox_connect` and freed with `soulbox_sandbox_free`.
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
        // Generated ids are letters, digits and '-', and soulbox_sandbox_connect
        // takes its id from a C string, so no id contains a NUL byte.
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

    pub fn connect(id: &str) -> Result<Box<Self>> {
        let inner = runtime::block_on(CoreSandbox::connect(id))??;
        Ok(Box::new(Self::wrap(inner)))
    }

    pub fn kill_id(id: &str) -> Result<bool> {
        Ok(runtime::block_on(CoreSandbox::kill_id(id))??)
    }

    pub fn list(query: &ListQuery) -> Result<Box<ListBlock>> {
        let infos = runtime::block_on(CoreSandbox::list(query))??;
        Ok(ListBlock::new(&infos))
    }

    pub fn pause(&self) -> Result<bool> {
        Ok(runtime::block_on(self.inner.pause())??)
    }

    pub fn resume(&self) -> Result<bool> {
        Ok(runtime::block_on(self.inner.resume())??)
    }

    pub fn info(&self) -> Result<Box<InfoBlock>> {
        let info = runtime::block_on(self.inner.get_info())??;
        Ok(InfoBlock::new(&info))
    }

    pub fn metrics(&self) -> Result<Box<Metrics>> {
        let metrics = runtime::block_on(self.inner.metrics())??;
        Ok(Metrics::new(&metrics))
    }

    /// Forwards `port` on the sandbox's loopback to an address on the
    /// host's loopback and returns that address, `127.0.0.1:PORT`.
    ///
    /// The core call spawns the accept loop on the runtime it is called
    /// in. Entering the shared multi-threaded runtime puts the loop on its
    /// worker threads, which keep it running between C calls, until the
    /// sandbox ends or this handle is dropped.
    pub fn get_host(&self, port: u16) -> Result<Box<BytesBlock>> {
        let _context = runtime::get()?.enter();
        let address = self.inner.get_host(port)?;
        Ok(BytesBlock::new(address.into_bytes()))
    }
}
