//! `NativeSandboxPool`: soulbox-core's warm pool, for `SandboxPool`.
//!
//! The pool lives in a slot that `close` empties. A create holds the
//! slot's read lock while it waits, so `close` waits for the creates in
//! progress, and a create that comes after `close` finds the slot empty.

use std::sync::Arc;

use napi_derive::napi;
use soulbox_core::SandboxPool;
use tokio::sync::RwLock;

use crate::error::{IntoNapi, Result};
use crate::sandbox::{sandbox_options, CreateOptions, NativeSandbox};

/// Largest `size` that `NativeSandboxPool.open` accepts. napi-rs exports
/// only a literal, so the build checks it against the core's value.
#[napi]
pub const MAX_POOL_SIZE: u32 = 1024;

const _: () = assert!(MAX_POOL_SIZE as usize == soulbox_core::MAX_POOL_SIZE);

/// A pool of sandboxes built ahead. Garbage collection kills the waiting
/// sandboxes, as `close` does, but without waiting for a build in
/// progress to end.
#[napi]
#[derive(Debug)]
pub struct NativeSandboxPool {
    slot: Arc<RwLock<Option<SandboxPool>>>,
    size: u32,
}

/// The id and PID 1's host pid of a waiting sandbox.
#[napi(object)]
#[derive(Debug)]
pub struct WaitingSandboxObject {
    pub sandbox_id: String,
    pub pid: i32,
}

#[napi]
impl NativeSandboxPool {
    /// Starts a pool that keeps `size` sandboxes built with `options`
    /// waiting, and fills it in the background.
    #[napi]
    pub fn open(options: CreateOptions, size: u32) -> Result<NativeSandboxPool> {
        let pool = SandboxPool::new(sandbox_options(options)?, size as usize).into_napi()?;
        Ok(Self {
            slot: Arc::new(RwLock::new(Some(pool))),
            size,
        })
    }

    /// The number of sandboxes the pool keeps waiting.
    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The number of sandboxes waiting now, which is 0 once the pool is
    /// closed or while it closes.
    #[napi(getter)]
    pub fn waiting(&self) -> u32 {
        match self.slot.try_read() {
            Ok(guard) => guard.as_ref().map_or(0, |pool| pool.waiting() as u32),
            Err(_closing) => 0,
        }
    }

    /// Returns each waiting sandbox, for leak checks.
    #[napi]
    pub fn waiting_sandboxes(&self) -> Vec<WaitingSandboxObject> {
        let waiting = match self.slot.try_read() {
            Ok(guard) => guard
                .as_ref()
                .map(soulbox_core::diagnostics::pool_waiting)
                .unwrap_or_default(),
            Err(_closing) => Vec::new(),
        };
        waiting
            .into_iter()
            .map(|(sandbox_id, pid)| WaitingSandboxObject { sandbox_id, pid })
            .collect()
    }

    /// Hands over a waiting sandbox, or creates one when none is waiting.
    /// Resolves to null once the pool is closed.
    #[napi]
    pub async fn hand_over(&self) -> Result<Option<NativeSandbox>> {
        let slot = Arc::clone(&self.slot);
        let guard = slot.read().await;
        let Some(pool) = guard.as_ref() else {
            return Ok(None);
        };
        let sandbox = pool.create().await.into_napi()?;
        Ok(Some(NativeSandbox { sandbox }))
    }

    /// Closes the pool as `close` does, blocking the JavaScript thread, for
    /// the process's `exit` event, after which no Promise settles.
    ///
    /// NOTE: a pool that a create still uses is left open, so that the exit
    /// does not wait for that create. Its waiting sandboxes end with this
    /// process, but a build in progress leaves its cgroup directories and
    /// state entry until a later SoulBox process sweeps them.
    #[napi]
    pub fn close_at_exit(&self) {
        let Ok(mut guard) = self.slot.try_write() else {
            return;
        };
        if let Some(pool) = guard.take() {
            drop(guard);
            napi::bindgen_prelude::block_on(pool.close());
        }
    }

    /// Waits for the creates in progress, stops the refill and kills every
    /// waiting sandbox. Does nothing on a closed pool.
    #[napi]
    pub async fn close(&self) -> Result<()> {
        let pool = self.slot.write().await.take();
        if let Some(pool) = pool {
            pool.close().await;
        }
        Ok(())
    }
}
