//! The one tokio runtime that every C call blocks on.
//!
//! It is a multi-threaded runtime with two worker threads, created by the
//! first call that needs it and kept until the process exits. The workers
//! run each command's output pump and timeout while no C call is in
//! progress, so a background command keeps running, and a timeout fires,
//! even while the C program is busy elsewhere. Two workers are enough
//! because they only move bytes between pipes and channels; the file calls
//! run on tokio's separate blocking pool.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, ErrorKind, Result};

const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Returns the shared runtime, creating it on first use.
pub fn get() -> Result<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("soulbox-runtime")
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Os,
                e.raw_os_error().unwrap_or(0),
                &format!("failed to start SoulBox's async runtime: {e}"),
            )
        })?;
    // Two threads may race to create it; the loser's runtime is dropped
    // here, outside any async context, which is allowed.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` to completion on the calling thread. Callbacks into C run
/// outside this call, so a callback may call SoulBox again.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::invalid(
            "a SoulBox C function was called from a thread that runs a tokio runtime, where \
             it cannot block; call it from another thread, or use soulbox-core directly",
        ));
    }
    Ok(get()?.block_on(future))
}
