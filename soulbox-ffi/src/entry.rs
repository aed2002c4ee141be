//! The results of the file calls that describe files: `soulbox_entry_info`
//! from `soulbox_files_stat` and `soulbox_files_rename`, the list from
//! `soulbox_files_list`, and the summary of a tree copy. Each is one owned
//! block, as in [`crate::info`].

use std::ffi::c_char;
use std::os::unix::ffi::OsStrExt;

use soulbox_core::{CopySummary as CoreSummary, EntryInfo as CoreEntry, FileType as CoreFileType};

use crate::block::{array_ptr, millis, Strings};

/// Kind of a file. Symlinks are reported as symlinks, never as what they
/// point to.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link.
    Symlink = 3,
    /// A FIFO, socket or device, or a kind that soulbox-core added after
    /// this version of the C interface.
    Other = 4,
}

impl FileType {
    fn of(kind: CoreFileType) -> Self {
        match kind {
            CoreFileType::File => Self::File,
            CoreFileType::Dir => Self::Dir,
            CoreFileType::Symlink => Self::Symlink,
            _ => Self::Other,
        }
    }
}

/// A file or directory of a sandbox, as E2B's `EntryInfo`. One from
/// `soulbox_files_stat` or `soulbox_files_rename` is owned by the caller
/// and freed with `soulbox_entry_info_free`; one in a
/// `soulbox_entry_info_list` belongs to the list. The strings it points to
/// belong to it. Bytes of a name that are not UTF-8 become U+FFFD.
#[repr(C)]
#[derive(Debug)]
pub struct EntryInfo {
    /// The last component of `path`; "/" for the root.
    pub name: *const c_char,
    /// The absolute path inside the sandbox.
    pub path: *const c_char,
    /// The kind of file.
    pub kind: FileType,
    /// Size in bytes; for a symlink, the length of its target.
    pub size: u64,
    /// Permission bits with the setuid, setgid and sticky bits
    /// (`st_mode & 07777`).
    pub mode: u32,
    /// `mode` as `ls -l` shows it, such as "rwxr-xr-x".
    pub permissions: *const c_char,
    /// The owner's name in the sandbox's /etc/passwd, or the uid as text.
    pub owner: *const c_char,
    /// The group's name in the sandbox's /etc/group, or the gid as text.
    pub group: *const c_char,
    /// Last modification time in milliseconds since the Unix epoch; 0 for
    /// a time before the epoch.
    pub modified_ms: i64,
    /// The target of a symlink as stored in it; NULL for other kinds.
    pub symlink_target: *const c_char,
}

/// The entries `soulbox_files_list` found, sorted by path. Owned by the
/// caller and freed with `soulbox_entry_info_list_free`.
#[repr(C)]
#[derive(Debug)]
pub struct EntryList {
    /// The entries; NULL when there are none.
    pub items: *const EntryInfo,
    /// Number of entries in `items`.
    pub len: usize,
}

/// The totals of `soulbox_files_copy_in` or `soulbox_files_copy_out`.
/// Owned by the caller and freed with `soulbox_copy_summary_free`.
#[repr(C)]
#[derive(Debug)]
pub struct CopySummary {
    /// Regular files copied.
    pub files: u64,
    /// Directories copied, the top one included.
    pub directories: u64,
    /// Bytes of file contents copied. Holes in sparse files stay holes and
    /// are not counted.
    pub bytes: u64,
    /// Source paths below the top that were not copied because they are
    /// neither regular files nor directories: symlinks, FIFOs, sockets and
    /// devices. Host paths for a copy in, sandbox paths for a copy out, as
    /// bytes that need not be UTF-8. NULL when there are none.
    pub skipped: *const *const c_char,
    /// Number of entries in `skipped`.
    pub skipped_len: usize,
}

/// An [`EntryInfo`] with its strings; `public` is at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct EntryBlock {
    public: EntryInfo,
    strings: Strings,
}

/// An [`EntryList`] with its entries and their strings; `public` is at
/// offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct EntryListBlock {
    public: EntryList,
    items: Vec<EntryInfo>,
    strings: Strings,
}

/// A [`CopySummary`] with its paths; `public` is at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct CopySummaryBlock {
    public: CopySummary,
    skipped: Vec<*const c_char>,
    strings: Strings,
}

fn c_entry(entry: &CoreEntry, strings: &mut Strings) -> EntryInfo {
    EntryInfo {
        name: strings.keep(&entry.name),
        path: strings.keep(&entry.path),
        kind: FileType::of(entry.kind),
        size: entry.size,
        mode: entry.mode,
        permissions: strings.keep(&entry.permissions),
        owner: strings.keep(&entry.owner),
        group: strings.keep(&entry.group),
        modified_ms: millis(entry.modified),
        symlink_target: entry
            .symlink_target
            .as_deref()
            .map_or(std::ptr::null(), |target| strings.keep(target)),
    }
}

impl EntryBlock {
    pub fn new(entry: &CoreEntry) -> Box<Self> {
        let mut strings = Strings::default();
        let public = c_entry(entry, &mut strings);
        Box::new(Self { public, strings })
    }
}

impl EntryListBlock {
    pub fn new(entries: &[CoreEntry]) -> Box<Self> {
        let mut strings = Strings::default();
        let items: Vec<EntryInfo> = entries
            .iter()
            .map(|entry| c_entry(entry, &mut strings))
            .collect();
        Box::new(Self {
            public: EntryList {
                items: array_ptr(&items),
                len: items.len(),
            },
            items,
            strings,
        })
    }
}

impl CopySummaryBlock {
    pub fn new(summary: &CoreSummary) -> Box<Self> {
        let mut strings = Strings::default();
        let skipped: Vec<*const c_char> = summary
            .skipped
            .iter()
            .map(|path| strings.keep_bytes(path.as_os_str().as_bytes()))
            .collect();
        Box::new(Self {
            public: CopySummary {
                files: summary.files,
                directories: summary.directories,
                bytes: summary.bytes,
                skipped: array_ptr(&skipped),
                skipped_len: skipped.len(),
            },
            skipped,
            strings,
        })
    }
}
