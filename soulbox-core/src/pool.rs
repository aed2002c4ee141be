//! A warm pool of sandboxes built ahead of time, so that creating one is a
//! hand-over.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::sandbox::{Prepared, Sandbox, SandboxOptions};
use crate::sys;

/// Largest pool size [`SandboxPool::new`] accepts.
pub const MAX_POOL_SIZE: usize = 1024;

/// How long the refill waits after a hand-over before it builds the
/// replacement, while at least half the pool is still waiting. A caller
/// usually runs a command right after a hand-over, and a build started at
/// once takes CPU time from that command. On a 2-core VM a pooled create +
/// `/bin/true` + kill took 1.76 to 2.01 ms with an immediate refill, 1.24
/// to 1.45 ms with the refill 3 ms later, and 1.31 ms with this 5 ms wait
/// (`soulbox-bench-api --task true --pool 2 --template ROOTFS`). Below half
/// the pool refills at once, so that a burst of hand-overs does not empty
/// it.
const REFILL_DELAY: Duration = Duration::from_millis(5);

/// Longest pause of the background refill after a failed create; the pause
/// starts at 100 ms and doubles with each failure in a row.
const MAX_REFILL_BACKOFF: Duration = Duration::from_secs(10);

/// Sandboxes of one configuration, built in advance.
///
/// [`SandboxPool::create`] hands over a waiting sandbox, so a create costs a
/// few system calls instead of building a sandbox. A background thread
/// builds the replacement 5 ms later, or at once when fewer than half the
/// sandboxes are waiting, so that it does not slow the first command run in
/// the sandbox just handed over. A handed-over sandbox is indistinguishable
/// from a fresh one: nothing has run in it, its timeout counts from the
/// hand-over, its start time is the hand-over time, and it gets the
/// options' metadata and envs then.
///
/// ```no_run
/// # async fn demo() -> soulbox_core::Result<()> {
/// use soulbox_core::{SandboxOptions, SandboxPool};
///
/// let pool = SandboxPool::new(SandboxOptions::default(), 4)?;
/// let sandbox = pool.create().await?; // a hand-over once the pool has filled
/// let output = sandbox.run("echo hi").await?;
/// sandbox.kill().await?;
/// pool.close().await;
/// # Ok(())
/// # }
/// ```
///
/// # Caveats
///
/// - Waiting sandboxes are not listed: [`Sandbox::list`] and
///   [`Sandbox::connect`] see a sandbox only after its hand-over.
/// - A waiting sandbox ends with the pool: dropping or closing the pool
///   kills it, and so does the end of this process, because until the
///   hand-over it lives like a [`SandboxOptions::kill_on_drop`] sandbox.
/// - Each waiting sandbox holds its memory, processes and cgroups like an
///   idle sandbox, and the refill takes CPU time while the caller works.
pub struct SandboxPool {
    shared: Arc<Shared>,
    refill: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    /// The options that [`SandboxPool::create`] hands sandboxes over with.
    options: SandboxOptions,
    size: usize,
    waiting: Mutex<VecDeque<Prepared>>,
    /// When the last hand-over took a sandbox, for [`REFILL_DELAY`].
    last_hand_over: Mutex<Option<Instant>>,
    /// Wakes the refill thread after a hand-over.
    wake: Notify,
    /// Interrupts the refill thread, even in the middle of a build.
    close: Notify,
    closed: AtomicBool,
}

impl fmt::Debug for SandboxPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxPool")
            .field("size", &self.shared.size)
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl SandboxPool {
    /// Starts a pool that keeps `size` sandboxes built with `options`
    /// waiting. A thread of its own fills it in the background, and
    /// [`SandboxPool::create`] works at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for invalid options or a size of 0 or
    /// above [`MAX_POOL_SIZE`]; [`Error::Os`] if the refill thread cannot
    /// start.
    pub fn new(options: SandboxOptions, size: usize) -> Result<Self> {
        options.validate()?;
        if !(1..=MAX_POOL_SIZE).contains(&size) {
            return Err(Error::InvalidArgument(format!(
                "pool size {size} is outside 1 to {MAX_POOL_SIZE}"
            )));
        }
        let shared = Arc::new(Shared {
            options,
            size,
            waiting: Mutex::new(VecDeque::with_capacity(size)),
            last_hand_over: Mutex::new(None),
            wake: Notify::new(),
            close: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let refill = std::thread::Builder::new()
            .name("soulbox-pool".into())
            .spawn(move || refill_thread(&thread_shared))
            .map_err(Error::os("start the sandbox pool's refill thread"))?;
        Ok(Self {
            shared,
            refill: Some(refill),
        })
    }

    /// Hands over a waiting sandbox, or creates one as
    /// [`Sandbox::create`] does when none is waiting.
    ///
    /// # Errors
    ///
    /// As [`Sandbox::create`].
    pub async fn create(&self) -> Result<Sandbox> {
        while let Some(prepared) = self.shared.take() {
            self.shared.wake.notify_one();
            // A waiting sandbox whose PID 1 died (killed from outside) is
            // dropped, which removes what it left.
            if prepared.is_running() {
                let startup = prepared.startup.clone();
                let sandbox = prepared.hand_over(&self.shared.options, true).await?;
                // A built template's service starts at the hand-over, so
                // the caller waits for its ready command as a create does.
                if let Some(startup) = startup {
                    sandbox.start_template_service(&startup).await?;
                }
                return Ok(sandbox);
            }
        }
        self.shared.wake.notify_one();
        Sandbox::create(self.shared.options.clone()).await
    }

    /// Returns how many sandboxes wait for a hand-over now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().len()
    }

    /// Returns the id and PID 1's host pid of every waiting sandbox.
    pub(crate) fn waiting_sandboxes(&self) -> Vec<(String, i32)> {
        self.shared
            .lock()
            .iter()
            .map(|prepared| (prepared.id().to_string(), prepared.pid()))
            .collect()
    }

    /// Returns the number of sandboxes the pool keeps waiting.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// Stops the refill, waits for the refill thread to end, and kills
    /// every waiting sandbox. Sandboxes already handed over are not
    /// affected.
    pub async fn close(mut self) {
        self.shared.stop();
        if let Some(refill) = self.refill.take() {
            // Joining blocks for as long as the thread needs to drop a build
            // in progress, which kills that sandbox.
            let _ = tokio::task::spawn_blocking(move || refill.join()).await;
        }
        self.shared.drain();
    }
}

impl Drop for SandboxPool {
    /// Stops the refill and kills every waiting sandbox. A build in
    /// progress ends on the refill thread shortly after, without a join.
    fn drop(&mut self) {
        self.shared.stop();
        self.shared.drain();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Prepared>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self) -> Option<Prepared> {
        let prepared = self.lock().pop_front();
        if prepared.is_some() {
            *self
                .last_hand_over
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        }
        prepared
    }

    /// Returns how long the refill should still wait before its next build:
    /// the rest of [`REFILL_DELAY`] after the last hand-over, while at least
    /// half the pool is waiting.
    fn refill_wait(&self) -> Option<Duration> {
        if self.lock().len() * 2 < self.size {
            return None;
        }
        let last = *self
            .last_hand_over
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = last? + REFILL_DELAY;
        due.checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    fn stop(&self) {
        self.closed.store(true, Ordering::Release);
        self.close.notify_one();
        self.wake.notify_one();
    }

    /// Kills the waiting sandboxes, outside the lock.
    fn drain(&self) {
        let waiting = std::mem::take(&mut *self.lock());
        drop(waiting);
    }
}

/// Runs the refill on a runtime of its own, so that its builds never hold
/// up the caller's runtime. A hand-over moves the sandbox's control socket
/// to the caller's runtime.
fn refill_thread(shared: &Shared) {
    // As root, builds run at idle priority, PID 1's set-up included (see
    // `Sandbox::prepare`), so that on a busy or small host they take only
    // CPU time that the sandboxes in use leave free. PID 1 inherits the
    // idle policy and sets the normal one again before any command. A
    // rootless PID 1 has no CAP_SYS_NICE on the host. Under the usual
    // RLIMIT_NICE of 0 it may not leave the idle policy (sched(7)) and its
    // setup would fail, so a rootless refill keeps the normal priority.
    if sys::geteuid() == 0 {
        if let Err(e) = sys::set_thread_idle_priority() {
            tracing::debug!(error = %e, "sandbox pool refill keeps the normal priority");
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!(error = %e, "sandbox pool refill cannot start its runtime");
            return;
        }
    };
    runtime.block_on(refill(shared));
}

/// Builds sandboxes until the pool is full, then sleeps until a hand-over
/// or close wakes it.
async fn refill(shared: &Shared) {
    let mut backoff = Duration::from_millis(100);
    while !shared.closed.load(Ordering::Acquire) {
        if shared.lock().len() >= shared.size {
            shared.wake.notified().await;
            continue;
        }
        if let Some(wait) = shared.refill_wait() {
            // A hand-over that leaves less than half the pool ends the wait.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shared.wake.notified() => {}
                () = shared.close.notified() => break,
            }
            continue;
        }
        // No deadline while waiting: the hand-over sets the caller's.
        let built = tokio::select! {
            built = Sandbox::prepare(&shared.options, Duration::ZERO, true, None) => built,
            () = shared.close.notified() => break,
        };
        match built {
            Ok(prepared) => {
                backoff = Duration::from_millis(100);
                // Checked under the lock that the owner's drain takes, so
                // that a sandbox either waits for that drain, which kills it
                // before the drop or close returns, or is killed here.
                let mut waiting = shared.lock();
                if shared.closed.load(Ordering::Acquire) {
                    drop(waiting);
                    drop(prepared);
                    break;
                }
                waiting.push_back(prepared);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "sandbox pool refill failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shared.close.notified() => break,
                }
                backoff = (backoff * 2).min(MAX_REFILL_BACKOFF);
            }
        }
    }
}
