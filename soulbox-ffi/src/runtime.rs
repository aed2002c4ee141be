//! The one tokio runtime that every C call blocks on.
//!
//! It is a multi-threaded runtime with two worker threads, created by the
//! first call that needs it and kept until the process exits. The workers
//! run each command's output pump and timeout, each directory watch's
//! task and each forwarded port's connections, while no C call is in
//! progress. So a background command keeps running, a timeout fires,
//! directory events are queued and forwarded connections are served even
//! while the C program is busy elsewhere. Two workers are enough because
//! those tasks only move bytes between descriptors and channels and add
//! inotify watches. The file calls run on tokio's separate blocking pool.
//!
//! SIGPIPE is blocked in every thread of the runtime, and in the caller's
//! thread while a call blocks on it (see [`crate::signals`]).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, ErrorKind, Result};
use crate::signals;

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
        .on_thread_start(signals::block_sigpipe)
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

/// Runs `future` to completion on the calling thread, with SIGPIPE blocked
/// there, so that a write to a closed pipe fails with EPIPE instead of
/// ending the C program. Callbacks into C run outside this call, so a
/// callback may call SoulBox again.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::invalid(
            "a SoulBox C function was called from a thread that runs a tokio runtime, where \
             it cannot block; call it from another thread, or use soulbox-core directly",
        ));
    }
    let runtime = get()?;
    Ok(signals::without_sigpipe(|| runtime.block_on(future)))
}

/// Runs `future` on the calling thread for at most `limit` (`None`: without
/// limit) and returns `None` if the limit passed first. The future is then
/// dropped, so it must be cancel-safe. A zero limit still polls it once.
pub fn block_on_for<F: Future>(limit: Option<Duration>, future: F) -> Result<Option<F::Output>> {
    block_on(async move {
        match limit {
            Some(limit) => tokio::time::timeout(limit, future).await.ok(),
            None => Some(future.await),
        }
    })
}

/// The result of a wait with a time limit for the next item of a stream,
/// such as a command's output or a watch's events.
#[derive(Debug)]
pub enum Polled<T> {
    Item(T),
    /// Nothing came within the time limit.
    TimedOut,
    /// The stream has ended and every item was returned.
    Ended,
}

/// Turns a C wait limit in milliseconds into a `Duration`: negative waits
/// without limit, as poll(2) does, and 0 does not wait.
pub fn wait_limit(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_wait_limit_is_none() {
        assert_eq!(wait_limit(-1), None);
        assert_eq!(wait_limit(0), Some(Duration::ZERO));
        assert_eq!(wait_limit(1500), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn zero_limit_polls_once() {
        let ready = block_on_for(Some(Duration::ZERO), async { 7 }).expect("runtime");
        assert_eq!(ready, Some(7));
        let pending = block_on_for(Some(Duration::ZERO), std::future::pending::<()>());
        assert_eq!(pending.expect("runtime"), None);
    }
}
