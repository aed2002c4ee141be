//! Directory watches: `soulbox_watcher` and the events it returns.

use std::ffi::c_char;
use std::time::Duration;

use soulbox_core::{FilesystemEvent, FilesystemEventKind, Watcher as CoreWatcher};
use tokio::sync::{watch, Mutex};

use crate::block::Strings;
use crate::error::Result;
use crate::runtime::{self, Polled};
use crate::sandbox::Sandbox;

/// Kind of change that a `soulbox_filesystem_event` reports, as E2B's
/// `FilesystemEventType`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    /// The entry was created, or moved in under this name.
    Create = 1,
    /// Its contents were written.
    Write = 2,
    /// It was removed.
    Remove = 3,
    /// It was moved away from this name; a CREATE event for the new name
    /// follows when the new name is inside the watch.
    Rename = 4,
    /// Its metadata changed: mode, owner, timestamps or link count.
    Chmod = 5,
    /// A kind that soulbox-core added after this version of the C
    /// interface.
    Other = 6,
}

impl WatchEventKind {
    fn of(kind: FilesystemEventKind) -> Self {
        match kind {
            FilesystemEventKind::Create => Self::Create,
            FilesystemEventKind::Write => Self::Write,
            FilesystemEventKind::Remove => Self::Remove,
            FilesystemEventKind::Rename => Self::Rename,
            FilesystemEventKind::Chmod => Self::Chmod,
            _ => Self::Other,
        }
    }
}

/// One change in a watched directory. Owned by the caller and freed with
/// `soulbox_filesystem_event_free`.
#[repr(C)]
#[derive(Debug)]
pub struct WatchEvent {
    /// The entry's path relative to the watched directory, such as
    /// "a/b/f". Bytes that are not UTF-8 become U+FFFD. It belongs to the
    /// event.
    pub name: *const c_char,
    /// The kind of change.
    pub kind: WatchEventKind,
}

/// A [`WatchEvent`] with its name; `public` is at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct WatchEventBlock {
    public: WatchEvent,
    strings: Strings,
}

impl WatchEventBlock {
    fn new(event: &FilesystemEvent) -> Box<Self> {
        let mut strings = Strings::default();
        let public = WatchEvent {
            name: strings.keep(&event.name),
            kind: WatchEventKind::of(event.kind),
        };
        Box::new(Self { public, strings })
    }
}

/// A running watch of a sandbox directory. Created by
/// `soulbox_files_watch_dir` and freed with `soulbox_watcher_free`.
#[derive(Debug)]
pub struct Watcher {
    /// Locked by the thread in `next`, for as long as it waits.
    inner: Mutex<CoreWatcher>,
    /// Turns true at `stop`, which wakes a `next` in progress so that it
    /// stops the watch itself.
    stopped: watch::Sender<bool>,
}

impl Watcher {
    pub fn start(
        sandbox: &Sandbox,
        path: &str,
        recursive: bool,
        user: Option<&str>,
    ) -> Result<Box<Self>> {
        let files = crate::files::files(sandbox, user);
        // watch_dir spawns the watch's task on the runtime it runs in,
        // which is the shared one.
        let inner = runtime::block_on(files.watch_dir(path, recursive))??;
        Ok(Box::new(Self {
            inner: Mutex::new(inner),
            stopped: watch::Sender::new(false),
        }))
    }

    /// Waits up to `limit` (`None`: without limit) for the next event. A
    /// second thread's call waits, within its own limit, until the first
    /// one returns.
    pub fn next(&self, limit: Option<Duration>) -> Result<Polled<Box<WatchEventBlock>>> {
        let item = match runtime::block_on_for(limit, self.next_item())? {
            Some(item) => item,
            None => return Ok(Polled::TimedOut),
        };
        match item {
            Some(Ok(event)) => Ok(Polled::Item(WatchEventBlock::new(&event))),
            Some(Err(error)) => Err(error.into()),
            None => Ok(Polled::Ended),
        }
    }

    /// Returns the next item of the core watcher, ending the watch first
    /// once `stop` was called. Cancel-safe, because the core watcher's
    /// `next` is.
    async fn next_item(&self) -> Option<soulbox_core::Result<FilesystemEvent>> {
        let mut stopped = self.stopped.subscribe();
        let mut watcher = self.inner.lock().await;
        if !*stopped.borrow_and_update() {
            tokio::select! {
                item = watcher.next() => return item,
                // The sender lives as long as `self`, so this only
                // completes at `stop`.
                _ = stopped.changed() => {}
            }
        }
        // The core watcher's stop ends its task, which drops the sending
        // side of the queue, so the events queued before are returned and
        // then the end.
        watcher.stop();
        watcher.next().await
    }

    /// Stops the watch, waking a `next` in progress in another thread.
    /// Events already queued can still be read.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
        if let Ok(mut watcher) = self.inner.try_lock() {
            watcher.stop();
        }
    }
}
