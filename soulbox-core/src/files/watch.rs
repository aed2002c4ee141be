//! Watching a directory of a sandbox for changes with inotify.
//!
//! Watches are added through descriptors. Each directory is opened the way
//! every other file call opens paths, and the watch goes on the inode behind
//! that descriptor (see [`sys::inotify_add_watch_fd`]). A symlink that
//! sandboxed code planted therefore cannot direct a watch at a host
//! directory.
//!
//! A background task reads the inotify descriptor as soon as it is readable
//! and queues events for the [`Watcher`]. It adds the watches of new
//! subdirectories in recursive mode without waiting for the caller to read
//! events, because entries made in a new directory before its watch exists
//! produce no event.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use nix::sys::statfs::{self, FsType};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::entry::{open_dir_for_reading, read_names};
use super::path::{self, Name, SandboxPath, DIR_READ};
use super::{act_as, FileUser, Files};
use crate::error::{Error, Result};
use crate::sandbox::Inner;
use crate::sys;

/// The kind of change to an entry of a watched directory, as E2B's
/// `FilesystemEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FilesystemEventKind {
    /// It was created, or moved in under this name.
    Create,
    /// Its contents were written.
    Write,
    /// It was removed.
    Remove,
    /// It was moved away from this name; a `Create` for the new name
    /// follows when the new name is inside the watch.
    Rename,
    /// Its metadata changed: mode, owner, timestamps or link count.
    Chmod,
}

/// One change in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FilesystemEvent {
    /// The entry's path relative to the watched directory, such as `a/b/f`.
    /// Bytes that are not UTF-8 become U+FFFD.
    pub name: String,
    /// The kind of change.
    pub kind: FilesystemEventKind,
}

/// How many events and errors wait for [`Watcher::next`] before further
/// ones are counted as lost. Sandboxed code can make events in a tight
/// loop, so the queue has a bound.
const QUEUE_CAPACITY: usize = 4096;

/// The events each watch reports. IN_EXCL_UNLINK leaves out events of
/// files that were already removed but are still open.
const WATCH_MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// How often the watch checks whether its directory was removed.
const REMOVAL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// The files holding the host's inotify limits.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";
const MAX_USER_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

impl Files {
    /// Watches the directory `path` for changes: only its own entries, or
    /// with `recursive` also those of every subdirectory, present or made
    /// later. Events arrive through [`Watcher::next`] until the watcher is
    /// stopped or dropped, the directory is removed, or the sandbox ends.
    ///
    /// Must be called within a tokio runtime, which runs the watch's
    /// background task.
    ///
    /// # Errors
    ///
    /// [`Error::FileNotFound`] if `path` does not exist;
    /// [`Error::InvalidArgument`] if it is not a directory, or is on procfs
    /// or sysfs (such as /proc), where inotify reports no changes that the
    /// kernel makes;
    /// [`Error::PermissionDenied`] if the user may not read it;
    /// [`Error::WatchLimit`] if the host's inotify limits allow no more
    /// watches or instances.
    ///
    /// # Caveats
    ///
    /// In recursive mode, a new subdirectory is watched shortly after it
    /// appears. Entries already in it by then are reported as `Create`
    /// events (and `Write` for non-empty files) once it is watched, so an
    /// entry can be reported twice. Subdirectories the user may not read
    /// are not watched, and symlinks to directories are not followed.
    /// Mount points of procfs, sysfs, cgroup, cgroup2, debugfs, tracefs,
    /// securityfs and bpf file systems are not entered either, so a
    /// recursive watch of `/` leaves out /proc and everything below it.
    pub async fn watch_dir(&self, path: &str, recursive: bool) -> Result<Watcher> {
        let path = self.sandbox_path(path)?;
        let user = self.resolve_user()?;
        self.sandbox.resume_if_auto().await?;
        // The watch ends when PID 1 exits. It keeps a duplicate of the
        // pidfd, not the sandbox, so a running watch does not keep the
        // sandbox alive.
        let exited = self
            .sandbox
            .pidfd()
            .try_clone_to_owned()
            .map_err(Error::os("duplicate the sandbox's pidfd"))?;
        let exited = sys::async_fd(exited).map_err(Error::os("register the sandbox's pidfd"))?;
        let sandbox_id = self.sandbox.id.clone();
        let (events, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let mut sink = EventSink {
            events,
            lost: 0,
            path: path.caller().to_string(),
        };

        let (tree, inotify) = self
            .run_as_user(move |sandbox| WatchTree::start(sandbox, &path, recursive, user))
            .await?;
        let inotify =
            sys::async_fd(inotify).map_err(Error::os("register an inotify descriptor"))?;
        let task = tokio::spawn(async move {
            let end = tree.run(&inotify, &exited, &mut sink, sandbox_id).await;
            // The end is sent before the inotify descriptor is closed, which
            // is slow because the kernel frees its watches first. Without
            // that, about half the polls right after a kill missed the end.
            // `run` consumed the tree, whose directory descriptor, like the
            // inotify one, keeps the sandbox's files in memory, so both are
            // closed before any wait for a caller who is slow to read.
            let end = sink.try_send_end(end);
            drop(inotify);
            drop(exited);
            sink.finish(end).await;
        });
        Ok(Watcher {
            events: receiver,
            task: task.abort_handle(),
        })
    }
}

/// A running watch of a sandbox directory, from [`Files::watch_dir`].
/// Dropping it stops the watch.
#[derive(Debug)]
pub struct Watcher {
    events: mpsc::Receiver<Result<FilesystemEvent>>,
    task: tokio::task::AbortHandle,
}

impl Watcher {
    /// Waits for the next event. Returns `None` once the watch has ended:
    /// after [`Watcher::stop`], within half a second of the watched
    /// directory's removal, or after the error that reports the sandbox's
    /// end.
    ///
    /// # Errors
    ///
    /// An item is an error, and the watch goes on, when events were lost
    /// ([`Error::WatchEventsLost`]) or a new subdirectory could not be
    /// watched ([`Error::WatchLimit`]). [`Error::SandboxNotRunning`] is the
    /// last item when the sandbox ends.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: an event is removed from the queue only when it is
    /// returned.
    pub async fn next(&mut self) -> Option<Result<FilesystemEvent>> {
        self.events.recv().await
    }

    /// Polls for the next event, for implementing `Stream`; see
    /// [`Watcher::next`].
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<FilesystemEvent>>> {
        self.events.poll_recv(cx)
    }

    /// Stops the watch. Events already queued can still be read.
    pub fn stop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Queues events for the [`Watcher`] without ever waiting for room, so
/// that a caller who reads slowly cannot hold up the watches of new
/// directories. What does not fit is counted and reported, as soon as the
/// caller has read enough to make room for the report.
struct EventSink {
    events: mpsc::Sender<Result<FilesystemEvent>>,
    /// Items dropped since the last report of lost events.
    lost: u64,
    path: String,
}

impl EventSink {
    fn push(&mut self, item: Result<FilesystemEvent>) {
        if self.lost > 0 {
            if self.events.try_send(Err(self.lost_report())).is_err() {
                self.lost += 1;
                return;
            }
            self.lost = 0;
        }
        if self.events.try_send(item).is_err() {
            self.lost += 1;
        }
    }

    /// Builds the report of the items dropped since the last report.
    fn lost_report(&self) -> Error {
        Error::WatchEventsLost {
            path: self.path.clone(),
            reason: format!(
                "{} events were dropped because {QUEUE_CAPACITY} unread events were \
                 queued; read events faster",
                self.lost
            ),
        }
    }

    /// Waits for room in the queue and sends the report of lost events
    /// there. Returns false when the [`Watcher`] is gone.
    async fn report_lost(&mut self) -> bool {
        let Ok(permit) = self.events.reserve().await else {
            return false;
        };
        permit.send(Err(self.lost_report()));
        self.lost = 0;
        true
    }

    /// Queues the error that ended the watch if nothing was lost and it
    /// fits, and returns it otherwise.
    fn try_send_end(&mut self, end: Option<Error>) -> Option<Error> {
        let error = end?;
        if self.lost > 0 {
            return Some(error);
        }
        match self.events.try_send(Err(error)) {
            Ok(()) => None,
            Err(unsent) => unsent.into_inner().err(),
        }
    }

    /// Sends the report of any lost events and then the error that ended
    /// the watch, if any, waiting for room. The wait lasts at most as long
    /// as the [`Watcher`], whose drop or `stop` aborts this task.
    async fn finish(&mut self, end: Option<Error>) {
        if self.lost > 0 && !self.report_lost().await {
            return;
        }
        if let Some(error) = end {
            // A send error means that the Watcher was dropped, so no one
            // would read the item.
            let _ = self.events.send(Err(error)).await;
        }
    }

    fn event(&mut self, name: String, kind: FilesystemEventKind) {
        self.push(Ok(FilesystemEvent { name, kind }));
    }
}

/// The watched directory and the watches below it.
struct WatchTree {
    /// The watched directory, from which subdirectories are reached.
    top: OwnedFd,
    recursive: bool,
    user: FileUser,
    /// The directory of each watch descriptor, as names below `top`.
    dirs: HashMap<i32, Vec<Name>>,
    top_watch: i32,
    /// Directories moved away from these names, by rename cookie, whose
    /// IN_MOVED_TO has not been read yet.
    moves: HashMap<u32, Vec<Name>>,
    /// The watched path as the caller gave it, for errors.
    caller: String,
}

impl WatchTree {
    /// Opens the directory at `path`, creates the inotify instance and adds
    /// the first watches. Runs with the user's credentials.
    fn start(
        sandbox: &Inner,
        path: &SandboxPath,
        recursive: bool,
        user: FileUser,
    ) -> Result<(Self, OwnedFd)> {
        let caller = path.caller().to_string();
        let top = open_dir_for_reading(sandbox, path)?;
        reject_kernel_file_system(top.as_fd(), &caller)?;
        let inotify = sys::inotify_init().map_err(|e| {
            // EMFILE also means that this process has no descriptor left,
            // which no inotify setting changes.
            let process_limit = e.raw_os_error() == Some(libc::EMFILE)
                && sandbox.with_root(|root| root.try_clone_to_owned()).is_err();
            if process_limit {
                Error::os("create an inotify instance")(e)
            } else {
                watch_error(&caller, e)
            }
        })?;
        let mut tree = Self {
            top,
            recursive,
            user,
            dirs: HashMap::new(),
            top_watch: -1,
            moves: HashMap::new(),
            caller,
        };
        tree.top_watch = tree.add_watch(inotify.as_fd(), &[], false)?;
        if recursive {
            tree.watch_subtree(inotify.as_fd(), &[], None)?;
        }
        Ok((tree, inotify))
    }

    /// Reads and handles events until the watch ends, and returns the error
    /// that ended it, if one did.
    async fn run(
        mut self,
        inotify: &AsyncFd<OwnedFd>,
        exited: &AsyncFd<OwnedFd>,
        sink: &mut EventSink,
        sandbox_id: String,
    ) -> Option<Error> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut removal_check = tokio::time::interval(REMOVAL_CHECK_INTERVAL);
        loop {
            tokio::select! {
                ready = inotify.readable() => {
                    let Ok(mut guard) = ready else {
                        return None;
                    };
                    let read = guard.try_io(|fd| sys::read_fd(fd.get_ref().as_fd(), &mut buf));
                    let inotify = inotify.get_ref().as_fd();
                    match read {
                        Ok(Ok(filled)) => {
                            if !self.handle_events(inotify, &buf[..filled], sink) {
                                return None;
                            }
                        }
                        Ok(Err(e)) => return Some(Error::os("read inotify events")(e)),
                        // The queue is empty, so a directory moved away
                        // with no IN_MOVED_TO left the tree.
                        Err(_would_block) => self.finish_moves(inotify),
                    }
                }
                _ = exited.readable() => {
                    return Some(Error::SandboxNotRunning { id: sandbox_id });
                }
                // Without this, a loss followed by no further event would
                // never be reported.
                open = sink.report_lost(), if sink.lost > 0 => {
                    if !open {
                        return None;
                    }
                }
                _ = removal_check.tick() => {
                    if self.top_removed() {
                        return None;
                    }
                }
            }
        }
    }

    /// Returns whether the watched directory was removed. The watch keeps a
    /// descriptor of it open, so the kernel keeps the directory's inode and
    /// sends no IN_DELETE_SELF. A removed directory has no links left.
    fn top_removed(&self) -> bool {
        sys::fstat_fd(self.top.as_fd()).is_ok_and(|stat| stat.st_nlink == 0)
    }

    /// Removes the watches of directories that moved out of the tree.
    fn finish_moves(&mut self, inotify: BorrowedFd<'_>) {
        let moved: Vec<Vec<Name>> = self.moves.drain().map(|(_, names)| names).collect();
        for names in moved {
            self.unwatch_subtree(inotify, &names);
        }
    }

    /// Handles a buffer of inotify events; returns false once the watched
    /// directory itself is gone.
    fn handle_events(&mut self, inotify: BorrowedFd<'_>, buf: &[u8], sink: &mut EventSink) -> bool {
        for event in parse_events(buf) {
            if event.mask & libc::IN_Q_OVERFLOW != 0 {
                sink.push(Err(Error::WatchEventsLost {
                    path: self.caller.clone(),
                    reason: "the kernel's inotify queue overflowed; read events faster, or \
                             as root write a larger number to \
                             /proc/sys/fs/inotify/max_queued_events"
                        .into(),
                }));
                continue;
            }
            if event.mask & libc::IN_IGNORED != 0 {
                self.dirs.remove(&event.wd);
                if event.wd == self.top_watch {
                    return false;
                }
                continue;
            }
            // Events about a watched directory itself carry no name; its
            // parent's watch reports them with one.
            let (Some(dir), Some(name)) = (self.dirs.get(&event.wd), event.name) else {
                continue;
            };
            let Some(name) = Name::new(name) else {
                continue;
            };
            let mut names = dir.clone();
            names.push(name);
            let Some(kind) = event_kind(event.mask) else {
                continue;
            };
            sink.event(relative_name(&names), kind);
            if self.recursive && event.mask & libc::IN_ISDIR != 0 {
                self.follow_directory(inotify, &names, event.mask, event.cookie, sink);
            }
        }
        true
    }

    /// Keeps the watches in step with a directory that appeared in or left
    /// the tree.
    fn follow_directory(
        &mut self,
        inotify: BorrowedFd<'_>,
        names: &[Name],
        mask: u32,
        cookie: u32,
        sink: &mut EventSink,
    ) {
        if mask & libc::IN_MOVED_FROM != 0 {
            // Kept watched until its IN_MOVED_TO shows where it went.
            self.moves.insert(cookie, names.to_vec());
            return;
        }
        if mask & libc::IN_MOVED_TO != 0 {
            if let Some(old) = self.moves.remove(&cookie) {
                // Moved within the tree: its watches stay, under new names.
                self.rename_subtree(&old, names);
                return;
            }
        }
        // Only the entries found in a new directory are reported. A
        // directory moved in brought its entries along, which its own
        // event already reports.
        let report_entries = mask & libc::IN_CREATE != 0;
        if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) == 0 {
            return;
        }
        // A directory that appears later needs no file system check,
        // because mkdir and rename make it on its parent's file system.
        let added = act_as(self.user).and_then(|_credentials| {
            let watch = self.add_watch(inotify, names, false)?;
            if watch < 0 {
                return Ok(());
            }
            let sink = if report_entries {
                Some(&mut *sink)
            } else {
                None
            };
            self.watch_subtree(inotify, names, sink)
        });
        if let Err(e) = added {
            sink.push(Err(e));
        }
    }

    /// Adds a watch for the directory that `names` lead to from `top`, and
    /// returns its watch descriptor. Returns -1 if the directory vanished,
    /// is not a directory any more, or may not be read, and, with
    /// `check_file_system`, if it is on a file system in
    /// [`SKIPPED_FILE_SYSTEMS`].
    fn add_watch(
        &mut self,
        inotify: BorrowedFd<'_>,
        names: &[Name],
        check_file_system: bool,
    ) -> Result<i32> {
        // inotify watches count against a host-wide, per-user limit that
        // every process of the host's root shares, and sandboxed code can
        // make directories cheaply: one watcher may not take them all.
        if self.dirs.len() >= MAX_WATCHED_DIRS {
            return Err(Error::InvalidArgument(format!(
                "watching {} would need more than {MAX_WATCHED_DIRS} directory watches; \
                 watch a smaller subtree or without recursion",
                self.caller
            )));
        }
        let opened;
        let dir = if names.is_empty() {
            self.top.as_fd()
        } else {
            match path::open_descendant(self.top.as_fd(), names, DIR_READ) {
                Ok(fd) => {
                    opened = fd;
                    opened.as_fd()
                }
                Err(_) => return Ok(-1),
            }
        };
        if check_file_system && is_skipped_file_system(dir) {
            return Ok(-1);
        }
        match sys::inotify_add_watch_fd(inotify, dir, WATCH_MASK) {
            Ok(watch) => {
                self.dirs.insert(watch, names.to_vec());
                Ok(watch)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(watch_error(&self.caller, e)),
            Err(e) if names.is_empty() => Err(super::file_error(
                &self.caller,
                "watch a directory in the sandbox",
            )(e)),
            Err(_) => Ok(-1),
        }
    }

    /// Watches every directory below the one that `names` lead to, which
    /// is watched already, except those on [`SKIPPED_FILE_SYSTEMS`]. With a
    /// `sink`, reports each entry found as created, and as written if it is
    /// a non-empty file.
    fn watch_subtree(
        &mut self,
        inotify: BorrowedFd<'_>,
        names: &[Name],
        mut sink: Option<&mut EventSink>,
    ) -> Result<()> {
        // Each directory's device comes from the stat that its parent's
        // scan made, so only the first directory needs a stat of its own.
        let mut pending = vec![(names.to_vec(), None)];
        while let Some((dir_names, device)) = pending.pop() {
            let Some(scan) = self.scan_directory(&dir_names, device, sink.as_deref_mut()) else {
                continue;
            };
            for child in scan.subdirectories {
                // Only a mount point can be on another file system than its
                // parent, so the common walk never reads a file system type.
                let check_file_system = child.device != scan.device;
                if self.add_watch(inotify, &child.names, check_file_system)? >= 0 {
                    pending.push((child.names, Some(child.device)));
                }
            }
        }
        Ok(())
    }

    /// Lists the subdirectories of the directory that `names` lead to,
    /// reporting each entry to `sink` as [`WatchTree::watch_subtree`]
    /// describes. `device` is the directory's `st_dev` if the caller knows
    /// it. Returns `None` if the directory cannot be opened or read.
    fn scan_directory(
        &self,
        names: &[Name],
        device: Option<libc::dev_t>,
        mut sink: Option<&mut EventSink>,
    ) -> Option<Scan> {
        let opened;
        let dir = if names.is_empty() {
            self.top.as_fd()
        } else {
            match path::open_descendant(self.top.as_fd(), names, DIR_READ) {
                Ok(fd) => {
                    opened = fd;
                    opened.as_fd()
                }
                Err(_) => return None,
            }
        };
        let device = match device {
            Some(device) => device,
            None => sys::fstat_fd(dir).ok()?.st_dev,
        };
        let children = read_names(dir).ok()?;
        let mut subdirectories = Vec::new();
        for child in children {
            let Ok(stat) = sys::fstatat_name(dir, child.as_c_str()) else {
                continue;
            };
            let mut child_names = names.to_vec();
            child_names.push(child);
            let kind = stat.st_mode & libc::S_IFMT;
            if let Some(sink) = sink.as_deref_mut() {
                let name = relative_name(&child_names);
                sink.event(name.clone(), FilesystemEventKind::Create);
                if kind == libc::S_IFREG && stat.st_size > 0 {
                    sink.event(name, FilesystemEventKind::Write);
                }
            }
            if kind == libc::S_IFDIR {
                subdirectories.push(Subdirectory {
                    names: child_names,
                    device: stat.st_dev,
                });
            }
        }
        Some(Scan {
            device,
            subdirectories,
        })
    }

    /// Renames the watched directories at and below `old` to `new`.
    fn rename_subtree(&mut self, old: &[Name], new: &[Name]) {
        for dir in self.dirs.values_mut() {
            if dir.starts_with(old) {
                let mut renamed = new.to_vec();
                renamed.extend_from_slice(&dir[old.len()..]);
                *dir = renamed;
            }
        }
    }

    /// Removes the watches of a directory that moved away and of every
    /// directory below it.
    fn unwatch_subtree(&mut self, inotify: BorrowedFd<'_>, names: &[Name]) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, dir)| dir.starts_with(names))
            .map(|(&watch, _)| watch)
            .collect();
        for watch in gone {
            self.dirs.remove(&watch);
            // The kernel may have dropped the watch already.
            let _ = sys::inotify_rm_watch(inotify, watch);
        }
    }
}

/// The subdirectories found in one directory.
struct Scan {
    /// The scanned directory's `st_dev`.
    device: libc::dev_t,
    subdirectories: Vec<Subdirectory>,
}

struct Subdirectory {
    names: Vec<Name>,
    /// Its `st_dev`, which differs from its parent's at a mount point.
    device: libc::dev_t,
}

/// Most directories one recursive watch follows. Each costs one of the
/// host user's inotify watches (fs.inotify.max_user_watches, often 8192 to
/// a few hundred thousand, shared by every process of that user).
pub const MAX_WATCHED_DIRS: usize = 4096;

/// The file systems that a recursive watch does not enter: pseudo file
/// systems whose entries the kernel makes and changes mostly without
/// inotify events, and which can be large (/proc has dozens of directories
/// per process).
const SKIPPED_FILE_SYSTEMS: [FsType; 8] = [
    statfs::PROC_SUPER_MAGIC,
    statfs::SYSFS_MAGIC,
    statfs::CGROUP_SUPER_MAGIC,
    statfs::CGROUP2_SUPER_MAGIC,
    statfs::DEBUGFS_MAGIC,
    statfs::TRACEFS_MAGIC,
    statfs::SECURITYFS_MAGIC,
    statfs::BPF_FS_MAGIC,
];

/// Returns whether the directory `dir` is on a file system in
/// [`SKIPPED_FILE_SYSTEMS`]. A directory whose type cannot be read counts
/// as skipped, as one that cannot be opened is.
fn is_skipped_file_system(dir: BorrowedFd<'_>) -> bool {
    statfs::fstatfs(dir).map_or(true, |info| {
        SKIPPED_FILE_SYSTEMS.contains(&info.filesystem_type())
    })
}

/// Rejects a directory on procfs or sysfs, because the kernel changes
/// their entries without making inotify events. Checking the opened
/// directory also catches a symlink to /proc.
fn reject_kernel_file_system(dir: BorrowedFd<'_>, caller: &str) -> Result<()> {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    let file_system = fstatfs(dir)
        .map_err(|errno| {
            Error::os("read the file system type of a watched directory")(errno.into())
        })?
        .filesystem_type();
    let name = if file_system == PROC_SUPER_MAGIC {
        "procfs"
    } else if file_system == SYSFS_MAGIC {
        "sysfs"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(format!(
        "cannot watch {caller:?}: it is on {name}, and inotify reports no changes \
         that the kernel makes in /proc and /sys; poll the files instead"
    )))
}

/// Maps an inotify_add_watch or inotify_init1 failure, naming the host
/// limit when one was reached.
fn watch_error(caller: &str, e: io::Error) -> Error {
    let limit_file = match e.raw_os_error() {
        Some(libc::ENOSPC) => MAX_USER_WATCHES,
        Some(libc::EMFILE) => MAX_USER_INSTANCES,
        _ => return Error::os("create an inotify instance")(e),
    };
    Error::WatchLimit {
        path: caller.to_string(),
        limit_file,
        source: e,
    }
}

fn event_kind(mask: u32) -> Option<FilesystemEventKind> {
    if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
        Some(FilesystemEventKind::Create)
    } else if mask & libc::IN_MODIFY != 0 {
        Some(FilesystemEventKind::Write)
    } else if mask & libc::IN_DELETE != 0 {
        Some(FilesystemEventKind::Remove)
    } else if mask & libc::IN_MOVED_FROM != 0 {
        Some(FilesystemEventKind::Rename)
    } else if mask & libc::IN_ATTRIB != 0 {
        Some(FilesystemEventKind::Chmod)
    } else {
        None
    }
}

fn relative_name(names: &[Name]) -> String {
    names
        .iter()
        .map(Name::to_lossy)
        .collect::<Vec<_>>()
        .join("/")
}

/// One record of an inotify read.
#[derive(Debug, PartialEq, Eq)]
struct RawEvent<'a> {
    wd: i32,
    mask: u32,
    cookie: u32,
    name: Option<&'a [u8]>,
}

/// Yields the records in a buffer of `struct inotify_event`: i32 wd, u32
/// mask, u32 cookie, u32 len, then `len` bytes of NUL-padded name
/// (inotify(7)).
fn parse_events(buf: &[u8]) -> impl Iterator<Item = RawEvent<'_>> {
    const HEADER: usize = 16;
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < HEADER {
            return None;
        }
        let field = |at: usize| [rest[at], rest[at + 1], rest[at + 2], rest[at + 3]];
        let wd = i32::from_ne_bytes(field(0));
        let mask = u32::from_ne_bytes(field(4));
        let cookie = u32::from_ne_bytes(field(8));
        let len = u32::from_ne_bytes(field(12)) as usize;
        let padded = rest.get(HEADER..HEADER + len)?;
        let name_len = padded.iter().position(|&b| b == 0).unwrap_or(padded.len());
        let name = (name_len > 0).then(|| &padded[..name_len]);
        rest = &rest[HEADER + len..];
        Some(RawEvent {
            wd,
            mask,
            cookie,
            name,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wd: i32, mask: u32, name: &[u8]) -> Vec<u8> {
        let len = if name.is_empty() {
            0
        } else {
            (name.len() + 1).next_multiple_of(16)
        };
        let mut out = Vec::new();
        out.extend(wd.to_ne_bytes());
        out.extend(mask.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out.extend((len as u32).to_ne_bytes());
        let mut padded = name.to_vec();
        padded.resize(len, 0);
        out.extend(padded);
        out
    }

    #[test]
    fn inotify_records_parsed() {
        let mut buf = record(1, libc::IN_CREATE, b"file");
        buf.extend(record(2, libc::IN_IGNORED, b""));
        let events: Vec<RawEvent<'_>> = parse_events(&buf).collect();
        assert_eq!(
            events,
            vec![
                RawEvent {
                    wd: 1,
                    mask: libc::IN_CREATE,
                    cookie: 0,
                    name: Some(b"file"),
                },
                RawEvent {
                    wd: 2,
                    mask: libc::IN_IGNORED,
                    cookie: 0,
                    name: None,
                },
            ]
        );
    }

    #[test]
    fn truncated_inotify_record_ends() {
        let buf = record(1, libc::IN_CREATE, b"file");
        assert_eq!(parse_events(&buf[..buf.len() - 1]).count(), 0);
    }

    #[test]
    fn watch_limits_named_in_errors() {
        let watches = watch_error("w", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(
            matches!(
                watches,
                Error::WatchLimit {
                    limit_file: MAX_USER_WATCHES,
                    ..
                }
            ),
            "ENOSPC should name max_user_watches: {watches:?}"
        );
        let message = watches.to_string();
        assert!(
            message.contains("/proc/sys/fs/inotify/max_user_watches"),
            "{message}"
        );
        assert!(
            message.contains("larger number"),
            "the message says how to fix it: {message}"
        );
        assert_eq!(watches.errno(), Some(libc::ENOSPC), "errno");
        let instances = watch_error("w", io::Error::from_raw_os_error(libc::EMFILE));
        assert!(
            matches!(
                instances,
                Error::WatchLimit {
                    limit_file: MAX_USER_INSTANCES,
                    ..
                }
            ),
            "EMFILE should name max_user_instances: {instances:?}"
        );
        let other = watch_error("w", io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(other, Error::Os { .. }), "EINVAL: {other:?}");
    }

    #[test]
    fn masks_map_to_kinds() {
        let dir = libc::IN_ISDIR;
        assert_eq!(
            event_kind(libc::IN_CREATE | dir),
            Some(FilesystemEventKind::Create)
        );
        assert_eq!(
            event_kind(libc::IN_MOVED_TO),
            Some(FilesystemEventKind::Create)
        );
        assert_eq!(
            event_kind(libc::IN_MODIFY),
            Some(FilesystemEventKind::Write)
        );
        assert_eq!(
            event_kind(libc::IN_DELETE),
            Some(FilesystemEventKind::Remove)
        );
        assert_eq!(
            event_kind(libc::IN_MOVED_FROM),
            Some(FilesystemEventKind::Rename)
        );
        assert_eq!(
            event_kind(libc::IN_ATTRIB),
            Some(FilesystemEventKind::Chmod)
        );
        assert_eq!(event_kind(libc::IN_DELETE_SELF), None);
    }
}
