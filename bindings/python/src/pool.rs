//! `NativePool`: soulbox-core's warm pool, for `SandboxPool` and
//! `AsyncSandboxPool`.
//!
//! The pool lives in a slot that `close` empties. A create holds the
//! slot's read lock while it waits, so `close` waits for the creates in
//! progress, and a create that comes after `close` finds the slot empty.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use pyo3::prelude::*;
use soulbox_core::SandboxPool;
use tokio::sync::RwLock;

use crate::bridge::{block, spawn, List, ToPython};
use crate::sandbox::{CreateOptions, NativeSandbox};

/// The pool until `close` takes it out.
type PoolSlot = RwLock<Option<SandboxPool>>;

/// Every pool that Python has not garbage-collected yet, so that
/// [`close_open_pools`] can close those still open at the interpreter's
/// exit, when Python may never collect them.
static OPEN_POOLS: Mutex<Vec<Weak<PoolSlot>>> = Mutex::new(Vec::new());

/// A pool of sandboxes built ahead. Garbage collection of the last
/// reference kills the waiting sandboxes, as `close` does, but without
/// waiting for a build in progress to end.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativePool {
    slot: Arc<PoolSlot>,
    size: usize,
}

/// The id and PID 1's host pid of a waiting sandbox.
struct WaitingSandbox((String, i32));

impl ToPython for WaitingSandbox {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.0.into_pyobject(py)?.into_any().unbind())
    }
}

impl NativePool {
    /// Hands over a sandbox, or returns `None` once the pool is closed.
    fn create_future(
        &self,
    ) -> impl Future<Output = soulbox_core::Result<Option<NativeSandbox>>> + Send + 'static {
        let slot = Arc::clone(&self.slot);
        async move {
            let guard = slot.read().await;
            let Some(pool) = guard.as_ref() else {
                return Ok(None);
            };
            let sandbox = pool.create().await?;
            Ok(Some(NativeSandbox::new(sandbox)))
        }
    }

    fn close_future(&self) -> impl Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let slot = Arc::clone(&self.slot);
        async move {
            let pool = slot.write().await.take();
            if let Some(pool) = pool {
                pool.close().await;
            }
            Ok(())
        }
    }
}

#[pymethods]
impl NativePool {
    /// Starts a pool that keeps `size` sandboxes built with `options`
    /// waiting, and fills it in the background.
    #[new]
    fn new(py: Python<'_>, options: CreateOptions, size: usize) -> PyResult<Self> {
        let options = options.into_options(py)?;
        let pool = SandboxPool::new(options, size).map_err(|e| crate::bridge::core_error(py, e))?;
        let slot = Arc::new(RwLock::new(Some(pool)));
        let mut open = OPEN_POOLS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|pool| pool.strong_count() > 0);
        open.push(Arc::downgrade(&slot));
        Ok(Self { slot, size })
    }

    /// The number of sandboxes the pool keeps waiting.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// The number of sandboxes waiting now, which is 0 once the pool is
    /// closed or while it closes.
    #[getter]
    fn waiting(&self) -> usize {
        match self.slot.try_read() {
            Ok(guard) => guard.as_ref().map_or(0, SandboxPool::waiting),
            Err(_closing) => 0,
        }
    }

    /// Returns whether `close` has taken the pool.
    fn is_closed(&self) -> bool {
        match self.slot.try_read() {
            Ok(guard) => guard.is_none(),
            Err(_closing) => true,
        }
    }

    /// Returns the id and PID 1's host pid of each waiting sandbox, for
    /// leak checks.
    fn waiting_sandboxes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let waiting = match self.slot.try_read() {
            Ok(guard) => guard
                .as_ref()
                .map(soulbox_core::diagnostics::pool_waiting)
                .unwrap_or_default(),
            Err(_closing) => Vec::new(),
        };
        List(waiting.into_iter().map(WaitingSandbox).collect()).to_python(py)
    }

    /// Hands over a waiting sandbox, or creates one when none is waiting.
    /// Returns None once the pool is closed.
    fn create(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.create_future())
    }

    /// Awaitable flavour of `create`.
    fn create_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.create_future())
    }

    /// Waits for the creates in progress, stops the refill and kills every
    /// waiting sandbox. Does nothing on a closed pool.
    fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.close_future())
    }

    /// Awaitable flavour of `close`.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.close_future())
    }
}

/// Closes every pool still open, at the interpreter's exit.
///
/// NOTE: a pool that a create still uses at the exit is left open, so that
/// the exit does not wait for that create. Its waiting sandboxes end when
/// this process does, because each PID 1 ends when its creating connection
/// closes, but their cgroup directories and state entries stay until a
/// later SoulBox process sweeps them.
pub(crate) fn close_open_pools() {
    let open: Vec<Arc<PoolSlot>> = OPEN_POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .drain(..)
        .filter_map(|pool| pool.upgrade())
        .collect();
    if open.is_empty() {
        return;
    }
    let Ok(runtime) = crate::bridge::runtime() else {
        return;
    };
    for slot in open {
        let Ok(mut guard) = slot.try_write() else {
            continue;
        };
        if let Some(pool) = guard.take() {
            drop(guard);
            runtime.block_on(pool.close());
        }
    }
}
