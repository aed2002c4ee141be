//! Keeps SIGPIPE from ending the C program.
//!
//! A write to a pipe that no process reads any more, such as
//! `soulbox_command_send_stdin` to a command that closed its stdin or whose
//! sandbox was killed, fails with EPIPE and also raises SIGPIPE in the
//! writing thread. Rust programs ignore SIGPIPE, but in a C program its
//! default action ends the whole process. The disposition is process-wide
//! and belongs to the program, so the library leaves it alone. It blocks
//! SIGPIPE in its own threads for their whole life instead. In the caller's
//! thread it blocks SIGPIPE for the duration of each call and discards a
//! SIGPIPE that the call raised there.

use std::mem::MaybeUninit;
use std::ptr;

/// Blocks SIGPIPE in the calling thread for good: the `on_thread_start`
/// hook of the library's runtime threads. Threads they start inherit the
/// mask.
pub fn block_sigpipe() {
    // SAFETY: the set is initialized, and a NULL old mask is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigpipe_set(), ptr::null_mut()) };
}

/// Runs `body` with SIGPIPE blocked in the calling thread, then discards a
/// SIGPIPE that became pending meanwhile and restores the thread's mask.
/// A SIGPIPE that was already pending before the call is left pending.
pub fn without_sigpipe<R>(body: impl FnOnce() -> R) -> R {
    let _blocked = Blocked::new();
    body()
}

/// SIGPIPE blocked in the current thread until the drop.
struct Blocked {
    old_mask: libc::sigset_t,
    was_pending: bool,
}

impl Blocked {
    fn new() -> Self {
        let mut old_mask = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: both pointers are valid. pthread_sigmask fills `old_mask`
        // unless `how` is invalid, and SIG_BLOCK is valid.
        let old_mask = unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &sigpipe_set(), old_mask.as_mut_ptr());
            old_mask.assume_init()
        };
        Self {
            old_mask,
            was_pending: sigpipe_pending(),
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        if !self.was_pending && sigpipe_pending() {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: the set and the timeout are initialized, and the
            // signal information is not wanted. SIGPIPE is blocked, so
            // this takes the pending one without waiting.
            unsafe { libc::sigtimedwait(&sigpipe_set(), ptr::null_mut(), &zero) };
        }
        // SAFETY: `old_mask` came from pthread_sigmask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, ptr::null_mut()) };
    }
}

/// Returns the signal set that contains only SIGPIPE.
fn sigpipe_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set, and SIGPIPE is a valid
    // signal number for sigaddset.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Returns whether SIGPIPE is pending for the calling thread or the
/// process.
fn sigpipe_pending() -> bool {
    let mut pending = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending initializes the set it is given, and sigismember
    // reads an initialized set.
    unsafe {
        libc::sigpending(pending.as_mut_ptr());
        libc::sigismember(pending.as_ptr(), libc::SIGPIPE) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns whether SIGPIPE is blocked in the calling thread.
    fn sigpipe_blocked() -> bool {
        let mut mask = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: a NULL new set only reads the mask into `mask`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, ptr::null(), mask.as_mut_ptr());
            libc::sigismember(mask.as_ptr(), libc::SIGPIPE) == 1
        }
    }

    #[test]
    fn raised_sigpipe_is_discarded() {
        // Each test runs in a thread of its own, whose mask this changes.
        std::thread::spawn(|| {
            let (blocked_inside, pending_inside) = without_sigpipe(|| {
                // SAFETY: raise only sends a signal to this thread.
                unsafe { libc::raise(libc::SIGPIPE) };
                (sigpipe_blocked(), sigpipe_pending())
            });
            assert!(blocked_inside, "SIGPIPE was not blocked during the call");
            assert!(pending_inside, "the raised SIGPIPE was not pending");
            assert!(!sigpipe_blocked(), "the thread's mask was not restored");
            assert!(!sigpipe_pending(), "the raised SIGPIPE is still pending");
        })
        .join()
        .expect("the test thread panicked");
    }
}
