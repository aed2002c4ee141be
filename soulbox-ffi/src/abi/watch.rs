//! `soulbox_files_watch_dir`, `soulbox_watcher_*` and
//! `soulbox_filesystem_event_free`.

use std::ffi::c_char;

use super::sandbox::with_sandbox_out;
use super::{c_str, free_box, guard, guard_value, handle, optional_c_str, with_next_item};
use crate::error::Error;
use crate::sandbox::Sandbox;
use crate::watch::{WatchEvent, WatchEventBlock, Watcher};

/// Watches the directory `path` for changes: only its own entries, or
/// with `recursive` also those of every subdirectory, present or made
/// later. Events queue until `soulbox_watcher_next` reads them, until the
/// watch is stopped, the directory is removed or the sandbox ends. `path`
/// and `user` are as for `soulbox_files_read`. On success stores a new
/// watcher in `*out`, which the caller frees with `soulbox_watcher_free`;
/// on failure stores NULL.
///
/// In recursive mode a new subdirectory is watched shortly after it
/// appears. Entries already in it by then are reported as CREATE events
/// (and WRITE for non-empty files) once it is watched, so an entry can be
/// reported twice. Subdirectories the user may not read are not watched,
/// and symlinks to directories are not followed. Each watcher uses one of
/// the host's inotify instances (fs.inotify.max_user_instances).
///
/// A recursive watch covers at most 4096 directories, because inotify
/// watches count against a limit that all of the host user's processes
/// share.
///
/// Errors: FILE_NOT_FOUND if `path` does not exist; INVALID_ARGUMENT if
/// it is not a directory, or if `recursive` is true and the tree has more
/// than 4096 directories, `path` included; PERMISSION_DENIED if the user may not read it;
/// WATCH_LIMIT if the host's inotify limits allow no more watches or
/// instances.
#[no_mangle]
pub extern "C" fn soulbox_files_watch_dir(
    sandbox: *mut Sandbox,
    path: *const c_char,
    recursive: bool,
    user: *const c_char,
    out: *mut *mut Watcher,
) -> *mut Error {
    with_sandbox_out("soulbox_files_watch_dir", sandbox, out, |sandbox| {
        // SAFETY: the header requires `path` to be a NUL-terminated string
        // and `user` NULL or one.
        let (path, user) = unsafe { (c_str(path, "path")?, optional_c_str(user, "user")?) };
        Watcher::start(sandbox, path, recursive, user).map(Box::into_raw)
    })
}

/// Waits up to `timeout_ms` milliseconds for the next event of the watch:
/// a negative value waits without limit and 0 only takes an event that is
/// already queued. Stores the event in `*out`, which the caller frees with
/// `soulbox_filesystem_event_free`, and false in `*ended`. When no event
/// came in time, stores NULL and false. Once the watch has ended and
/// every queued event was returned, stores NULL and true at once: after
/// `soulbox_watcher_stop`, within half a second of the watched directory's
/// removal, or after the error that reports the sandbox's end.
///
/// Another thread may call `soulbox_watcher_stop` meanwhile, which ends
/// the wait. A second thread's `soulbox_watcher_next` waits, within its
/// own limit, until the first one returns.
///
/// Errors, after which the watch goes on: WATCH_EVENTS_LOST when events
/// were dropped because 4096 unread ones were queued; WATCH_LIMIT when a
/// new subdirectory could not be watched because of the host's inotify
/// limits; INVALID_ARGUMENT when it was not watched because a recursive
/// watch already covers 4096 directories. Changes below that subdirectory
/// are then not reported. SANDBOX_NOT_RUNNING is the last error, when the
/// sandbox has ended.
///
/// NOTE: soulbox-core queues the WATCH_EVENTS_LOST report only with the
/// first change after the queue has room again. A caller that read every
/// queued event learns of the loss only when the directory changes again.
#[no_mangle]
pub extern "C" fn soulbox_watcher_next(
    watcher: *mut Watcher,
    timeout_ms: i64,
    ended: *mut bool,
    out: *mut *mut WatchEvent,
) -> *mut Error {
    let handle = (watcher.cast_const(), "watcher");
    with_next_item(
        "soulbox_watcher_next",
        handle,
        timeout_ms,
        ended,
        out,
        Watcher::next,
    )
}

/// Stops the watch and ends a `soulbox_watcher_next` in progress. Events
/// already queued can still be read; then `soulbox_watcher_next` reports
/// the end. Stopping a stopped watch does nothing.
#[no_mangle]
pub extern "C" fn soulbox_watcher_stop(watcher: *mut Watcher) -> *mut Error {
    guard("soulbox_watcher_stop", || {
        // SAFETY: as in soulbox_watcher_next.
        let watcher = unsafe { handle(watcher, "watcher") }?;
        watcher.stop();
        Ok(())
    })
}

/// Stops the watch and frees the watcher with the events it still queued.
/// NULL is ignored.
///
/// No other thread may be in a call on the watcher: a
/// `soulbox_watcher_next` in progress would use freed memory. Call
/// `soulbox_watcher_stop`, which ends it, and free the watcher after that
/// call returned.
#[no_mangle]
pub extern "C" fn soulbox_watcher_free(watcher: *mut Watcher) {
    guard_value((), || {
        // SAFETY: the header requires NULL or a watcher from
        // soulbox_files_watch_dir that was not freed yet.
        unsafe { free_box(watcher) }
    });
}

/// Frees an event from `soulbox_watcher_next` with its name. NULL is
/// ignored.
#[no_mangle]
pub extern "C" fn soulbox_filesystem_event_free(event: *mut WatchEvent) {
    guard_value((), || {
        // SAFETY: the header requires NULL or an event of this library that
        // was not freed yet. Each one is the first field of a boxed
        // WatchEventBlock, at offset 0 because WatchEventBlock is repr(C).
        unsafe { free_box(event.cast::<WatchEventBlock>()) }
    });
}
