//! [`Detachable`]: a core object that one async call at a time uses, and
//! that JavaScript can let go of at any moment, even while a call waits on
//! it.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, Notify};

/// Holds `T` until [`Detachable::detach`]. A pending [`Detachable::run`]
/// then ends at once with `None` and `T` is dropped, which is how a
/// `disconnect()` or `stop()` from JavaScript ends a `next()` that waits
/// for output or events that may never come.
#[derive(Debug)]
pub(crate) struct Detachable<T> {
    inner: Mutex<Option<T>>,
    detached: AtomicBool,
    detach_requested: Notify,
}

impl<T> Detachable<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            inner: Mutex::new(Some(value)),
            detached: AtomicBool::new(false),
            detach_requested: Notify::new(),
        }
    }

    /// Runs `work` on the value once no other call uses it. Returns `None`
    /// without running it after a detach, and `None` when a detach comes
    /// while it runs, in which case `work` is dropped where it waits.
    pub(crate) async fn run<R>(&self, work: impl AsyncFnOnce(&mut T) -> R) -> Option<R> {
        let requested = self.detach_requested.notified();
        tokio::pin!(requested);
        // Registered before the flag is read, so that a detach in between
        // still wakes this call.
        requested.as_mut().enable();
        let mut guard = self.inner.lock().await;
        if self.detached.load(Ordering::Acquire) {
            *guard = None;
        }
        let value = guard.as_mut()?;
        tokio::select! {
            result = work(value) => Some(result),
            () = &mut requested => {
                *guard = None;
                None
            }
        }
    }

    /// Drops the value: now if no call uses it, else when that call wakes.
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::Release);
        self.detach_requested.notify_waiters();
        if let Ok(mut guard) = self.inner.try_lock() {
            *guard = None;
        }
    }
}
