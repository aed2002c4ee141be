//! Unpacks one layer's tar stream into an empty directory, treating the
//! stream as untrusted.
//!
//! Nothing is written outside the directory: entry and hard-link names that
//! are absolute or contain `..` are rejected, and every directory on the way
//! to an entry is opened one component at a time with openat2 and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`. A symbolic link that an earlier
//! entry made is stored but never followed, so an entry that goes through
//! one fails instead of landing where the link points. Hard links must name
//! an earlier entry of the same layer. Device nodes are skipped, because
//! the sandbox's root is mounted `nodev` and they could not be opened
//! there anyway.
//!
//! OCI whiteouts become what overlayfs reads in a lower layer: `.wh.NAME`
//! becomes a character device 0/0 named NAME, and `.wh..wh..opq` sets the
//! `overlay.opaque` extended attribute on its directory (`trusted.` as
//! root, `user.` for a rootless overlay mounted with `userxattr`).

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::sys;

/// Prefix of an OCI whiteout entry's name.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the entry that makes its directory opaque.
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

/// Bounds on what one layer may unpack to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Maximum size of the uncompressed tar stream, in bytes.
    pub(crate) max_bytes: u64,
    /// Maximum number of entries.
    pub(crate) max_entries: u64,
    /// Maximum number of bytes read to reach one entry's data: its header,
    /// GNU long name and long link records and PAX extended headers. The
    /// tar crate reads each of these records whole into memory.
    pub(crate) max_header_bytes: u64,
}

/// Ownership and opaque-directory marking of the unpacked files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnpackMode {
    /// Whether the files keep the owners the archive gives them. Only root
    /// may do that; a rootless cache's files all belong to the caller,
    /// which is root inside a rootless sandbox.
    pub(crate) keep_owners: bool,
    /// Name of the extended attribute that marks an opaque directory.
    pub(crate) opaque_xattr: &'static str,
}

/// Counts of what an unpacked layer contained, for logs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) entries: u64,
    pub(crate) skipped_devices: u64,
}

/// Unpacks the tar stream `input` into the empty directory `root`.
/// Directory modes and times are applied last, so a directory whose mode
/// takes away write permission still receives its entries. The error
/// message names the entry and what is wrong with it.
pub(crate) fn unpack(
    input: impl Read,
    root: BorrowedFd<'_>,
    limits: Limits,
    mode: UnpackMode,
) -> Result<Summary, String> {
    let mut unpacker = Unpacker {
        root,
        mode,
        parent: None,
        directories: Vec::new(),
        root_metadata: None,
        summary: Summary::default(),
    };
    let meter = Rc::new(HeaderMeter {
        limit: limits.max_header_bytes,
        left: Cell::new(Some(limits.max_header_bytes)),
    });
    let metered = MeteredReader {
        inner: input,
        meter: Rc::clone(&meter),
    };
    let mut archive = tar::Archive::new(metered);
    let entries = archive
        .entries()
        .map_err(|e| format!("the layer is not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("invalid tar entry: {e}"))?;
        // The entry's data is read unmetered, up to its end, so that the
        // next entry's headers start a new count.
        meter.left.set(None);
        unpacker.summary.entries += 1;
        if unpacker.summary.entries > limits.max_entries {
            return Err(format!(
                "the layer has more than {} entries, the limit of one layer",
                limits.max_entries
            ));
        }
        let position = entry.raw_file_position();
        if position.saturating_add(entry.size()) > limits.max_bytes {
            return Err(format!(
                "the layer unpacks to more than {} bytes, the limit of one layer",
                limits.max_bytes
            ));
        }
        unpacker.add(&mut entry)?;
        io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("read failed: {e}"))?;
        meter.left.set(Some(limits.max_header_bytes));
    }
    unpacker.finish()?;
    Ok(unpacker.summary)
}

/// The byte count that [`MeteredReader`] allows before the next entry.
struct HeaderMeter {
    limit: u64,
    /// Bytes that may still be read, or `None` while an entry's data is
    /// read.
    left: Cell<Option<u64>>,
}

/// A reader that fails once the tar crate reads more than
/// [`Limits::max_header_bytes`] to reach one entry. Without it a GNU long
/// name record of many GiB, which a small gzip or zstd layer can expand
/// to, would be read whole into memory.
struct MeteredReader<R> {
    inner: R,
    meter: Rc<HeaderMeter>,
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.meter.left.get() else {
            return self.inner.read(buf);
        };
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the headers, long name records and PAX records of one entry exceed {} \
                     bytes, the limit of one entry",
                    self.meter.limit
                ),
            ));
        }
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..len])?;
        self.meter.left.set(Some(left - read as u64));
        Ok(read)
    }
}

/// Owner, mode and modification time of an entry, from its tar header.
#[derive(Debug, Clone, Copy)]
struct Metadata {
    uid: u32,
    gid: u32,
    mode: u32,
    /// Seconds since the epoch; `None` leaves the time of the unpack, for
    /// a directory that the archive does not list itself.
    mtime: Option<i64>,
}

impl Metadata {
    /// The metadata of a directory that the archive does not list itself,
    /// as tar gives it.
    const IMPLICIT_DIRECTORY: Self = Self {
        uid: 0,
        gid: 0,
        mode: 0o755,
        mtime: None,
    };
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    mode: UnpackMode,
    /// The last parent directory opened, by path, since entries of one
    /// directory usually follow each other.
    parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    /// Directories to give their mode and time at the end, in the order
    /// they appeared.
    directories: Vec<(Vec<Vec<u8>>, Metadata)>,
    root_metadata: Option<Metadata>,
    summary: Summary,
}

impl Unpacker<'_> {
    fn add<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let fail = |problem: String| format!("entry {shown:?}: {problem}");
        let mut components = split_path(&raw_path).map_err(&fail)?;
        let header = entry.header();
        let kind = header.entry_type();
        let metadata = Metadata {
            uid: header
                .uid()
                .map_err(|e| fail(format!("invalid uid: {e}")))? as u32,
            gid: header
                .gid()
                .map_err(|e| fail(format!("invalid gid: {e}")))? as u32,
            // Setuid and setgid bits are dropped. The sandbox's root is nosuid,
            // so they do nothing there, but in the cache on the host they
            // would make the image's programs privileged for any user who
            // can reach the cache.
            mode: header
                .mode()
                .map_err(|e| fail(format!("invalid mode: {e}")))?
                & 0o1777,
            mtime: Some(
                header
                    .mtime()
                    .map_err(|e| fail(format!("invalid mtime: {e}")))? as i64,
            ),
        };
        let Some(name) = components.pop() else {
            // The layer's own root, written as "./".
            if kind.is_dir() {
                self.root_metadata = Some(metadata);
                return Ok(());
            }
            return Err(fail("only a directory may name the layer's root".into()));
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.add_whiteout(&components, &name).map_err(fail);
        }
        let parent = self.open_parent(&components).map_err(&fail)?;
        let name_c = c_name(&name).map_err(&fail)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = create_file(parent.as_fd(), &name_c).map_err(&fail)?;
                let mut file = File::from(file);
                io::copy(entry, &mut file)
                    .map_err(|e| fail(format!("failed to write its data: {e}")))?;
                self.apply_metadata_fd(file.as_fd(), metadata)
                    .map_err(&fail)?;
            }
            tar::EntryType::Directory => {
                make_directory(parent.as_fd(), &name_c, self.mode.opaque_xattr).map_err(&fail)?;
                self.chown_name(parent.as_fd(), &name_c, metadata)
                    .map_err(&fail)?;
                components.push(name);
                self.directories.push((components, metadata));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("a symbolic link without a target".into()))?;
                remove_non_directory(parent.as_fd(), &name_c).map_err(&fail)?;
                nix::unistd::symlinkat(&*target, Some(parent.as_raw_fd()), name_c.as_c_str())
                    .map_err(|e| fail(format!("failed to create the symbolic link: {e}")))?;
                self.chown_name(parent.as_fd(), &name_c, metadata)
                    .map_err(&fail)?;
                set_times_name(parent.as_fd(), &name_c, metadata.mtime).map_err(&fail)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("a hard link without a target".into()))?
                    .into_owned();
                self.add_hard_link(parent.as_fd(), &name_c, &target)
                    .map_err(&fail)?;
            }
            tar::EntryType::Fifo => {
                remove_non_directory(parent.as_fd(), &name_c).map_err(&fail)?;
                nix::sys::stat::mknodat(
                    Some(parent.as_raw_fd()),
                    name_c.as_c_str(),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(0o600),
                    0,
                )
                .map_err(|e| fail(format!("failed to create the FIFO: {e}")))?;
                self.chown_name(parent.as_fd(), &name_c, metadata)
                    .map_err(&fail)?;
                nix::sys::stat::fchmodat(
                    Some(parent.as_raw_fd()),
                    name_c.as_c_str(),
                    Mode::from_bits_truncate(metadata.mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| fail(format!("failed to set its mode {:o}: {e}", metadata.mode)))?;
                set_times_name(parent.as_fd(), &name_c, metadata.mtime).map_err(&fail)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                self.summary.skipped_devices += 1;
            }
            // Extended headers and long names are read by the tar crate,
            // which never returns them as entries of their own.
            other => return Err(fail(format!("unsupported tar entry type {other:?}"))),
        }
        Ok(())
    }

    /// Applies `.wh.NAME` or `.wh..wh..opq` in the directory `components`.
    fn add_whiteout(&mut self, components: &[Vec<u8>], name: &[u8]) -> Result<(), String> {
        let parent = self.open_parent(components)?;
        if name == OPAQUE_WHITEOUT {
            return set_opaque(parent.as_fd(), self.mode.opaque_xattr);
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target.starts_with(WHITEOUT_PREFIX) {
            // `.wh..wh.` names other than the opaque marker are reserved
            // (AUFS wrote hard-link directories under them) and hide
            // nothing.
            return Ok(());
        }
        let target_c = c_name(target)?;
        match sys::fstatat_name(parent.as_fd(), &target_c) {
            // The layer also has an entry of that name, which hides the
            // lower layers' by itself. A directory hides their contents
            // only when opaque.
            Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                let directory = open_directory(parent.as_fd(), &target_c)?;
                set_opaque(directory.as_fd(), self.mode.opaque_xattr)
            }
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                make_whiteout(parent.as_fd(), &target_c)
            }
            Err(e) => Err(format!("failed to inspect the path it deletes: {e}")),
        }
    }

    /// Links `name` in `parent` to `target`, an earlier entry of this layer.
    fn add_hard_link(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        target: &[u8],
    ) -> Result<(), String> {
        let shown = String::from_utf8_lossy(target);
        let mut components =
            split_path(target).map_err(|problem| format!("hard link to {shown:?}: {problem}"))?;
        let target_name = components
            .pop()
            .ok_or_else(|| "a hard link to the layer's root".to_string())?;
        let target_parent = self
            .walk(&components, false)
            .map_err(|problem| format!("hard link to {shown:?}: {problem}"))?;
        let target_c = c_name(&target_name)?;
        remove_non_directory(parent, name)?;
        nix::unistd::linkat(
            Some(target_parent.as_raw_fd()),
            target_c.as_c_str(),
            Some(parent.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ENOENT => {
                format!("hard link to {shown:?}, which is not an earlier entry of this layer")
            }
            other => format!("failed to create the hard link to {shown:?}: {other}"),
        })
    }

    /// Returns the directory `components` below the root, creating missing
    /// directories. The last one opened is kept for the next entry.
    fn open_parent(&mut self, components: &[Vec<u8>]) -> Result<OwnedFd, String> {
        if let Some((path, fd)) = &self.parent {
            if path.as_slice() == components {
                return fd
                    .try_clone()
                    .map_err(|e| format!("failed to duplicate a directory descriptor: {e}"));
            }
        }
        let fd = self.walk(components, true)?;
        let copy = fd
            .try_clone()
            .map_err(|e| format!("failed to duplicate a directory descriptor: {e}"))?;
        self.parent = Some((components.to_vec(), copy));
        Ok(fd)
    }

    /// Opens the directory `components` one component at a time, never
    /// following a symbolic link. With `create`, a missing directory is
    /// made with mode 0755 and root as its owner, as tar does.
    fn walk(&mut self, components: &[Vec<u8>], create: bool) -> Result<OwnedFd, String> {
        let mut current = self
            .root
            .try_clone_to_owned()
            .map_err(|e| format!("failed to duplicate a directory descriptor: {e}"))?;
        for (depth, component) in components.iter().enumerate() {
            let name = c_name(component)?;
            let through =
                || String::from_utf8_lossy(&components[..=depth].join(&b'/')).into_owned();
            let opened = match open_directory(current.as_fd(), &name) {
                Ok(opened) => opened,
                Err(_) if !exists(current.as_fd(), &name) => {
                    if !create {
                        return Err(format!(
                            "{:?} is not an earlier entry of this layer",
                            through()
                        ));
                    }
                    sys::mkdirat(current.as_fd(), &name, 0o700)
                        .map_err(|e| format!("failed to create a directory: {e}"))?;
                    self.directories
                        .push((components[..=depth].to_vec(), Metadata::IMPLICIT_DIRECTORY));
                    open_directory(current.as_fd(), &name)?
                }
                Err(problem) => {
                    return Err(format!("its path goes through {:?}: {problem}", through()))
                }
            };
            current = opened;
        }
        Ok(current)
    }

    fn chown_name(
        &self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        metadata: Metadata,
    ) -> Result<(), String> {
        if !self.mode.keep_owners {
            return Ok(());
        }
        nix::unistd::fchownat(
            Some(parent.as_raw_fd()),
            name,
            Some(Uid::from_raw(metadata.uid)),
            Some(Gid::from_raw(metadata.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            format!(
                "failed to set its owner {}:{}: {e}",
                metadata.uid, metadata.gid
            )
        })
    }

    /// Sets the owner, then the mode (a change of owner clears set-user-ID
    /// bits), then the modification time of an open file or directory.
    fn apply_metadata_fd(&self, fd: BorrowedFd<'_>, metadata: Metadata) -> Result<(), String> {
        if self.mode.keep_owners {
            nix::unistd::fchown(
                fd.as_raw_fd(),
                Some(Uid::from_raw(metadata.uid)),
                Some(Gid::from_raw(metadata.gid)),
            )
            .map_err(|e| {
                format!(
                    "failed to set its owner {}:{}: {e}",
                    metadata.uid, metadata.gid
                )
            })?;
        }
        nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(metadata.mode))
            .map_err(|e| format!("failed to set its mode {:o}: {e}", metadata.mode))?;
        let Some(mtime) = metadata.mtime else {
            return Ok(());
        };
        let time = TimeSpec::new(mtime, 0);
        nix::sys::stat::futimens(fd.as_raw_fd(), &time, &time)
            .map_err(|e| format!("failed to set its modification time: {e}"))
    }

    /// Gives every directory its mode and time once all entries are in
    /// place, later directories first, so a child is done before its parent.
    fn finish(&mut self) -> Result<(), String> {
        self.parent = None;
        let directories = std::mem::take(&mut self.directories);
        for (components, metadata) in directories.iter().rev() {
            let shown = String::from_utf8_lossy(&components.join(&b'/')).into_owned();
            let (name, parents) = components.split_last().expect("a directory has a name");
            let parent = self.walk(parents, false)?;
            let directory = open_directory(parent.as_fd(), &c_name(name)?)
                .map_err(|problem| format!("directory {shown:?}: {problem}"))?;
            self.apply_metadata_fd(directory.as_fd(), *metadata)
                .map_err(|problem| format!("directory {shown:?}: {problem}"))?;
        }
        let root = self.root_metadata.unwrap_or(Metadata::IMPLICIT_DIRECTORY);
        self.apply_metadata_fd(self.root, root)
            .map_err(|problem| format!("the layer's root: {problem}"))
    }
}

/// Splits an entry's path into its components, dropping `.` and empty
/// ones. Rejects absolute paths and `..`, which could leave the layer.
fn split_path(path: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if path.starts_with(b"/") {
        return Err("an absolute path; layer entries must be relative".into());
    }
    let mut components = Vec::new();
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("a path with \"..\", which could leave the layer".into()),
            other => components.push(other.to_vec()),
        }
    }
    Ok(components)
}

fn c_name(name: &[u8]) -> Result<CString, String> {
    sys::c_string(name).map_err(|_| "a name with a NUL byte".to_string())
}

/// Opens the directory `name` in `parent` for reading, failing on a
/// symbolic link (ELOOP) or anything else that is not a directory.
fn open_directory(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, String> {
    sys::openat2_name(parent, name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP) => "a symbolic link, which is never followed while unpacking".into(),
            Some(libc::ENOTDIR) => "not a directory".into(),
            _ => format!("failed to open it: {e}"),
        }
    })
}

fn exists(parent: BorrowedFd<'_>, name: &CStr) -> bool {
    sys::fstatat_name(parent, name).is_ok()
}

/// Creates the regular file `name` for writing, replacing anything but a
/// directory that an earlier entry left there.
fn create_file(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, String> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    match sys::openat2_name(parent, name, flags, 0o600) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            remove_non_directory(parent, name)?;
            sys::openat2_name(parent, name, flags, 0o600)
        }
        other => other,
    }
    .map_err(|e| format!("failed to create the file: {e}"))
}

/// Makes the directory `name`, keeping an existing one. A whiteout that
/// this layer made there becomes an opaque directory, because the whiteout
/// deleted what the lower layers have at that path.
fn make_directory(parent: BorrowedFd<'_>, name: &CStr, opaque_xattr: &str) -> Result<(), String> {
    let existing = match sys::fstatat_name(parent, name) {
        Ok(stat) => Some(stat),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(format!("failed to inspect it: {e}")),
    };
    let replaces_whiteout = match existing {
        Some(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => return Ok(()),
        Some(stat) => {
            sys::unlinkat_name(parent, name, false)
                .map_err(|e| format!("failed to replace the earlier entry: {e}"))?;
            is_whiteout(&stat)
        }
        None => false,
    };
    sys::mkdirat(parent, name, 0o700).map_err(|e| format!("failed to create it: {e}"))?;
    if replaces_whiteout {
        let directory = open_directory(parent, name)?;
        set_opaque(directory.as_fd(), opaque_xattr)?;
    }
    Ok(())
}

/// Removes `name` unless it is missing. An earlier directory there fails
/// the unpack, because a layer that turns one of its own directories into
/// a file is malformed.
fn remove_non_directory(parent: BorrowedFd<'_>, name: &CStr) -> Result<(), String> {
    match sys::unlinkat_name(parent, name, false) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            Err("it replaces a directory of the same layer".into())
        }
        Err(e) => Err(format!("failed to replace the earlier entry: {e}")),
    }
}

fn is_whiteout(stat: &libc::stat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFCHR && stat.st_rdev == 0
}

/// Creates the overlayfs whiteout for `name`: a character device 0/0.
/// Linux 5.8 and later let unprivileged users make this one device.
fn make_whiteout(parent: BorrowedFd<'_>, name: &CStr) -> Result<(), String> {
    nix::sys::stat::mknodat(
        Some(parent.as_raw_fd()),
        name,
        SFlag::S_IFCHR,
        Mode::empty(),
        0,
    )
    .map_err(|e| format!("failed to create the whiteout device: {e}"))
}

fn set_opaque(directory: BorrowedFd<'_>, xattr_name: &str) -> Result<(), String> {
    use xattr::FileExt;
    let file = File::from(
        directory
            .try_clone_to_owned()
            .map_err(|e| format!("failed to duplicate a directory descriptor: {e}"))?,
    );
    file.set_xattr(xattr_name, b"y").map_err(|e| {
        format!("failed to mark the directory opaque with the {xattr_name} attribute: {e}")
    })
}

fn set_times_name(parent: BorrowedFd<'_>, name: &CStr, mtime: Option<i64>) -> Result<(), String> {
    let Some(mtime) = mtime else {
        return Ok(());
    };
    let time = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(
        Some(parent.as_raw_fd()),
        name,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| format!("failed to set its modification time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the GNU header of a regular file of `size` bytes that root
    /// owns.
    fn file_header(size: usize) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(size as u64);
        header
    }

    /// Returns a tar stream of `count` regular files of `size` bytes.
    fn files_tar(count: usize, size: usize) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for index in 0..count {
            let mut header = file_header(size);
            builder
                .append_data(&mut header, format!("file-{index}"), &vec![b'x'; size][..])
                .expect("append a file");
        }
        builder.into_inner().expect("finish the tar stream")
    }

    /// Unpacks `tar` into a new temporary directory with `limits`, as a
    /// rootless cache does, and removes the directory.
    fn unpack_with(tar: &[u8], limits: Limits) -> Result<Summary, String> {
        let dir = std::env::temp_dir().join(format!(
            "soulbox-unpack-test-{}-{}",
            std::process::id(),
            crate::id::random_u32().unwrap_or(0)
        ));
        std::fs::create_dir(&dir).expect("create the directory");
        let root = File::open(&dir).expect("open the directory");
        let mode = UnpackMode {
            keep_owners: false,
            opaque_xattr: "user.overlay.opaque",
        };
        let result = unpack(tar, root.as_fd(), limits, mode);
        std::fs::remove_dir_all(&dir).expect("remove the directory");
        result
    }

    #[test]
    fn size_limit_names_limit() {
        let limits = Limits {
            max_bytes: 64 * 1024,
            max_entries: 100,
            max_header_bytes: 1 << 20,
        };
        assert!(unpack_with(&files_tar(2, 1024), limits).is_ok());
        let error = unpack_with(&files_tar(4, 32 * 1024), limits).expect_err("too large");
        assert!(error.contains("65536 bytes"), "{error}");
    }

    #[test]
    fn entry_limit_names_limit() {
        let limits = Limits {
            max_bytes: 1 << 30,
            max_entries: 3,
            max_header_bytes: 1 << 20,
        };
        assert_eq!(
            unpack_with(&files_tar(3, 1), limits).map(|s| s.entries),
            Ok(3)
        );
        let error = unpack_with(&files_tar(4, 1), limits).expect_err("too many entries");
        assert!(error.contains("more than 3 entries"), "{error}");
    }

    /// Returns a tar stream of one file whose name is `name_len` bytes, so
    /// long that the tar crate writes a GNU long name record before it.
    fn long_name_tar(name_len: usize) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = file_header(1);
        let name = "n".repeat(name_len);
        builder
            .append_data(&mut header, &name, &b"x"[..])
            .expect("append a file");
        builder.into_inner().expect("finish the tar stream")
    }

    #[test]
    fn header_limit_bounds_long_names() {
        let limits = Limits {
            max_bytes: 1 << 30,
            max_entries: 100,
            max_header_bytes: 8192,
        };
        // A name longer than the file system allows is within the header
        // limit, so it fails only when the file is created.
        let error = unpack_with(&long_name_tar(4096), limits).expect_err("name too long");
        assert!(error.contains("File name too long"), "{error}");
        let error = unpack_with(&long_name_tar(64 * 1024), limits).expect_err("record too large");
        assert!(error.contains("exceed 8192 bytes"), "{error}");
        // The meter starts again at each entry, after the data of the one
        // before, however large that is.
        assert_eq!(
            unpack_with(&files_tar(3, 64 * 1024), limits).map(|s| s.entries),
            Ok(3)
        );
    }

    #[test]
    fn paths_split_safely() {
        assert_eq!(
            split_path(b"./usr//bin/./sh"),
            Ok(vec![b"usr".to_vec(), b"bin".to_vec(), b"sh".to_vec()])
        );
        assert_eq!(split_path(b"./"), Ok(Vec::new()));
        assert!(split_path(b"/etc/passwd").is_err());
        assert!(split_path(b"usr/../../etc").is_err());
        assert!(split_path(b"..").is_err());
    }
}
