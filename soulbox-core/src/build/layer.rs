//! Copies a build sandbox's writable layer (the overlay's upper directory)
//! into the cache, where it becomes a lower layer of later sandboxes.
//!
//! An upper directory is already in the form that overlayfs reads in a
//! lower layer: a deleted file is a whiteout (a character device 0/0) and
//! a directory that replaced one below carries the opaque extended
//! attribute. The copy keeps both, and the owners, modes, times, symlinks
//! and hard links of the rest. It drops setuid and setgid bits, as the
//! image unpacker does, and other overlay attributes (`origin`, `impure`),
//! which describe the build's own mount.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Files that PID 1 writes into every sandbox's root when it starts, so a
/// build's copies of them would only be overwritten.
const WRITTEN_BY_PID1: [&str; 2] = ["etc/hostname", "etc/hosts"];

/// What [`copy_upper`] copies and how.
pub(crate) struct CopyPlan<'a> {
    /// `trusted.overlay.opaque` as root, `user.overlay.opaque` rootless.
    pub(crate) opaque_xattr: &'a str,
    /// Whether to set owners (root only; rootless every file is the
    /// caller's already).
    pub(crate) chown: bool,
    /// Paths below the root to leave out besides [`WRITTEN_BY_PID1`],
    /// such as `etc/resolv.conf` where PID 1 wrote one for the network.
    pub(crate) skip: &'a [&'a str],
}

/// Copies the tree at `source` (the upper directory) into the new
/// directory `dest`, and returns the number of entries copied.
pub(crate) fn copy_upper(source: &Path, dest: &Path, plan: &CopyPlan<'_>) -> io::Result<u64> {
    let mut copier = Copier {
        plan,
        links: HashMap::new(),
        count: 0,
    };
    fs::create_dir(dest)?;
    copier.copy_tree(source, dest)?;
    Ok(copier.count)
}

struct Copier<'a> {
    plan: &'a CopyPlan<'a>,
    /// Files with more than one link, by (device, inode), and their first
    /// copy, so that the others become hard links to it.
    links: HashMap<(u64, u64), PathBuf>,
    count: u64,
}

/// A step of the walk over the upper directory. The walk keeps its steps
/// on a stack in memory, not in recursion, because a run step may nest
/// directories thousands deep and overflow the thread's stack.
enum Visit {
    /// Copy what the directory `source` contains into `dest`, which
    /// exists. `relative` is the directory's path below the root.
    Contents {
        source: PathBuf,
        dest: PathBuf,
        relative: PathBuf,
    },
    /// Give `dest` the attributes of `source`, once its contents are
    /// copied, so that adding them changes no time.
    Attributes { source: PathBuf, dest: PathBuf },
}

impl Copier<'_> {
    /// Copies what the directory `source` contains into `dest`, which
    /// exists, then gives `dest` the attributes of `source`.
    fn copy_tree(&mut self, source: &Path, dest: &Path) -> io::Result<()> {
        let mut stack = vec![Visit::Contents {
            source: source.to_path_buf(),
            dest: dest.to_path_buf(),
            relative: PathBuf::new(),
        }];
        while let Some(visit) = stack.pop() {
            match visit {
                Visit::Contents {
                    source,
                    dest,
                    relative,
                } => {
                    stack.push(Visit::Attributes {
                        source: source.clone(),
                        dest: dest.clone(),
                    });
                    self.copy_contents(&source, &dest, &relative, &mut stack)?;
                }
                Visit::Attributes { source, dest } => {
                    let metadata = fs::symlink_metadata(&source)?;
                    if let Ok(Some(value)) = xattr::get(&source, self.plan.opaque_xattr) {
                        xattr::set(&dest, self.plan.opaque_xattr, &value)?;
                    }
                    self.set_attributes(&dest, &metadata)?;
                }
            }
        }
        Ok(())
    }

    /// Copies the entries of the directory `source` into `dest` in name
    /// order, and makes each subdirectory, pushing its contents onto
    /// `stack`.
    fn copy_contents(
        &mut self,
        source: &Path,
        dest: &Path,
        relative: &Path,
        stack: &mut Vec<Visit>,
    ) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(source)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        let mut directories = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            let inner = relative.join(&name);
            let skipped = WRITTEN_BY_PID1
                .iter()
                .chain(self.plan.skip)
                .any(|skip| inner == Path::new(skip));
            if skipped {
                continue;
            }
            let (source, dest) = (source.join(&name), dest.join(&name));
            if entry.file_type()?.is_dir() {
                self.count += 1;
                fs::create_dir(&dest)?;
                directories.push(Visit::Contents {
                    source,
                    dest,
                    relative: inner,
                });
            } else {
                self.copy_entry(&source, &dest)?;
            }
        }
        // Reversed, so that the stack visits them in name order.
        stack.extend(directories.into_iter().rev());
        Ok(())
    }

    /// Copies one entry other than a directory.
    fn copy_entry(&mut self, source: &Path, dest: &Path) -> io::Result<()> {
        let metadata = fs::symlink_metadata(source)?;
        let kind = metadata.file_type();
        self.count += 1;
        if kind.is_symlink() {
            symlink(fs::read_link(source)?, dest)?;
            if self.plan.chown {
                lchown(dest, Some(metadata.uid()), Some(metadata.gid()))?;
            }
            return set_times(dest, &metadata);
        }
        if kind.is_char_device() && metadata.rdev() == 0 {
            // A whiteout: the file was deleted from the layers below.
            mknod(dest, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)?;
            return self.set_attributes(dest, &metadata);
        }
        if kind.is_fifo() {
            nix::unistd::mkfifo(dest, Mode::from_bits_truncate(0o600)).map_err(io::Error::from)?;
            return self.set_attributes(dest, &metadata);
        }
        if !kind.is_file() {
            // Sockets, and device nodes, which no sandbox can make.
            self.count -= 1;
            return Ok(());
        }
        if metadata.nlink() > 1 {
            let key = (metadata.dev(), metadata.ino());
            if let Some(first) = self.links.get(&key) {
                return fs::hard_link(first, dest);
            }
            self.links.insert(key, dest.to_path_buf());
        }
        fs::copy(source, dest)?;
        self.set_attributes(dest, &metadata)
    }

    /// Sets owner, mode (without setuid and setgid) and times.
    fn set_attributes(&self, dest: &Path, metadata: &fs::Metadata) -> io::Result<()> {
        if self.plan.chown {
            lchown(dest, Some(metadata.uid()), Some(metadata.gid()))?;
        }
        let mode = metadata.mode() & 0o1777;
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
        set_times(dest, metadata)
    }
}

fn set_times(dest: &Path, metadata: &fs::Metadata) -> io::Result<()> {
    let atime = TimeSpec::new(metadata.atime(), metadata.atime_nsec());
    let mtime = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
    utimensat(None, dest, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}
