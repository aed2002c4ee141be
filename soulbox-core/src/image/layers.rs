//! The content-addressed layer cache: each layer unpacked once, into a
//! directory named after its diff_id, and shared by every image and
//! sandbox that uses it.
//!
//! Layout of the cache directory:
//! - `sha256/<hex>`: an unpacked layer, complete and verified. A directory
//!   appears here only by a rename, so a reader never sees a half layer.
//! - `staging/<hex>`: a layer being unpacked.
//! - `locks/<hex>`: the file whose `flock` the unpacking process holds.
//!   A second process that needs the layer waits for it and then finds the
//!   layer in place. A staging directory whose lock can be taken belongs to
//!   a process that died, and is removed.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::debug;

use super::extract::{self, Limits, UnpackMode};
use super::select::{Compression, LayerBlob};
use super::source::{self, HashingReader, ImageError, ImageResult, Source};
use crate::sys;

/// Environment variable that sets the layer cache's directory.
pub const LAYER_CACHE_VAR: &str = "SOULBOX_LAYER_CACHE";

/// Maximum size of one layer's uncompressed tar stream: 32 GiB. A larger
/// layer, or a decompression bomb, fails the create with a message that
/// names this limit.
pub(crate) const MAX_LAYER_BYTES: u64 = 32 << 30;

/// Maximum number of entries of one layer.
pub(crate) const MAX_LAYER_ENTRIES: u64 = 4 << 20;

/// Maximum number of bytes of tar headers, GNU long name and long link
/// records and PAX records before one entry's data: 1 MiB. A path is at
/// most 4096 bytes on Linux and an extended attribute value 64 KiB, so a
/// real entry needs far less. The bound keeps one record, which is read
/// whole into memory, from filling it.
pub(crate) const MAX_ENTRY_HEADER_BYTES: u64 = 1 << 20;

/// The cache directory, opened and checked.
#[derive(Debug)]
pub(crate) struct LayerCache {
    dir: PathBuf,
    rootless: bool,
}

/// Returns the cache directory: `$SOULBOX_LAYER_CACHE` when set to an
/// absolute path, else `/var/lib/soulbox/layers` for root, else
/// `$XDG_CACHE_HOME/soulbox/layers` or `~/.cache/soulbox/layers`. It is
/// on disk rather than under /run, which is a tmpfs on most hosts.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(LAYER_CACHE_VAR) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return Some(dir);
        }
    }
    if sys::geteuid() == 0 {
        return Some(PathBuf::from("/var/lib/soulbox/layers"));
    }
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
    };
    if let Some(cache) = absolute("XDG_CACHE_HOME") {
        return Some(cache.join("soulbox/layers"));
    }
    absolute("HOME").map(|home| home.join(".cache/soulbox/layers"))
}

impl LayerCache {
    /// Opens the cache directory, creating it with mode 0700. Rejects one
    /// that another user owns or may write to, because a user who can
    /// change a cached layer changes every sandbox built on it.
    pub(crate) fn open() -> ImageResult<Self> {
        let dir = cache_dir().ok_or_else(|| {
            ImageError::new(
                "~/.cache",
                format!(
                    "no directory for the layer cache: set {LAYER_CACHE_VAR}, XDG_CACHE_HOME or \
                     HOME to an absolute path"
                ),
            )
        })?;
        let text = dir.to_string_lossy();
        if text.contains([',', ':', '\\']) {
            return Err(ImageError::new(
                &dir,
                format!(
                    "the layer cache's path contains ',', ':' or '\\', which overlayfs cannot \
                     take; set {LAYER_CACHE_VAR} to a plain directory"
                ),
            ));
        }
        let make = |path: &Path, recursive: bool| {
            fs::DirBuilder::new()
                .recursive(recursive)
                .mode(0o700)
                .create(path)
                .or_else(|e| if path.is_dir() { Ok(()) } else { Err(e) })
                .map_err(|e| ImageError::new(path, format!("cannot create the layer cache: {e}")))
        };
        make(&dir, true)?;
        check_private(&dir)?;
        for sub in ["sha256", "staging", "locks"] {
            make(&dir.join(sub), false)?;
        }
        Ok(Self {
            dir,
            rootless: sys::geteuid() != 0,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the name of the extended attribute that marks an opaque
    /// directory in this cache's layers.
    pub(crate) fn opaque_xattr(&self) -> &'static str {
        if self.rootless {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        }
    }

    /// Returns the directory of the layer whose diff_id is `diff_id`.
    pub(crate) fn layer_dir(&self, diff_id: &str) -> ImageResult<PathBuf> {
        let hex = source::sha256_hex(diff_id).ok_or_else(|| {
            ImageError::new(
                &self.dir,
                format!("diff_id {diff_id:?} is not a sha256 digest"),
            )
        })?;
        Ok(self.dir.join("sha256").join(hex))
    }

    /// Returns the layer's directory, unpacking the layer first unless the
    /// cache has it.
    pub(crate) fn ensure(&self, image: &Source, layer: &LayerBlob) -> ImageResult<PathBuf> {
        let target = self.layer_dir(&layer.diff_id)?;
        if target.is_dir() {
            return Ok(target);
        }
        let hex = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock = self.lock(&hex, true)?;
        // Another process may have finished it while this one waited.
        if target.is_dir() {
            return Ok(target);
        }
        self.remove_abandoned_staging();
        let staging = self.dir.join("staging").join(&hex);
        remove_tree(&staging).map_err(|e| {
            ImageError::new(
                &staging,
                format!("cannot remove an old staging directory: {e}"),
            )
        })?;
        let result = self.unpack_into(image, layer, &staging).and_then(|()| {
            fs::rename(&staging, &target).map_err(|e| {
                ImageError::new(
                    &target,
                    format!("cannot move the unpacked layer into place: {e}"),
                )
            })
        });
        if result.is_err() {
            let _ = remove_tree(&staging);
        }
        drop(lock);
        result.map(|()| target)
    }

    /// Takes the lock of layer `hex`, waiting for it with `block`. Returns
    /// `None` without `block` when another process has it.
    fn lock(&self, hex: &str, block: bool) -> ImageResult<Option<OwnedFd>> {
        let path = self.dir.join("locks").join(hex);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| ImageError::new(&path, format!("cannot open the layer's lock: {e}")))?;
        let fd = OwnedFd::from(file);
        let taken = sys::flock_exclusive(fd.as_fd(), block)
            .map_err(|e| ImageError::new(&path, format!("cannot lock the layer: {e}")))?;
        Ok(taken.then_some(fd))
    }

    /// Removes staging directories that processes which died while
    /// unpacking left behind: those whose lock is free.
    fn remove_abandoned_staging(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("staging")) else {
            return;
        };
        for entry in entries.flatten() {
            let hex = entry.file_name().to_string_lossy().into_owned();
            if let Ok(Some(_lock)) = self.lock(&hex, false) {
                debug!(layer = %hex, "removing a staging directory that a dead process left");
                let _ = remove_tree(&entry.path());
            }
        }
    }

    /// Unpacks `layer` into the new directory `staging` and checks its
    /// digests. Everything is written and synced before the caller renames
    /// the directory into place.
    fn unpack_into(&self, image: &Source, layer: &LayerBlob, staging: &Path) -> ImageResult<()> {
        let fail = |message: String| ImageError::new(image.error_path(&layer.name), message);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(staging)
            .map_err(|e| {
                ImageError::new(staging, format!("cannot create the staging directory: {e}"))
            })?;
        let root = File::open(staging).map_err(|e| {
            ImageError::new(staging, format!("cannot open the staging directory: {e}"))
        })?;

        let (blob, size) = image.open(&layer.name)?;
        let described = image.describe(&layer.name);
        let mut compressed = HashingReader::new(blob, u64::MAX);
        let unpacked = self.unpack_stream(&mut compressed, layer.compression, root.as_fd());
        // The blob's digest is checked first, also when the unpack failed:
        // a damaged blob usually fails to decompress, and the mismatch
        // explains that failure.
        let drained = compressed.drain();
        let (digest, read) = compressed.finish();
        if let Some((expected, expected_size)) = &layer.digest {
            if digest != *expected || read != *expected_size || size != *expected_size {
                return Err(fail(format!(
                    "{described} has digest {digest} and {read} bytes, but its descriptor gives \
                     {expected} and {expected_size} bytes"
                )));
            }
        }
        let (diff_id, summary) =
            unpacked.map_err(|message| fail(format!("layer {described}: {message}")))?;
        drained.map_err(|e| fail(format!("layer {described}: read failed: {e}")))?;
        if diff_id != layer.diff_id {
            return Err(fail(format!(
                "{described} unpacks to a tar stream with digest {diff_id}, but the image's \
                 configuration gives diff_id {}",
                layer.diff_id
            )));
        }
        // A crash after the rename must not leave a layer whose files never
        // reached the disk.
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)).map_err(|e| {
            ImageError::new(staging, format!("cannot sync the unpacked layer: {e}"))
        })?;
        debug!(
            layer = %layer.diff_id,
            entries = summary.entries,
            skipped_devices = summary.skipped_devices,
            "unpacked an image layer"
        );
        Ok(())
    }

    /// Decompresses and unpacks the layer blob that `compressed` reads into
    /// the directory `root`. Returns the digest of the uncompressed tar
    /// stream and what the unpack found.
    fn unpack_stream(
        &self,
        compressed: &mut HashingReader<Box<dyn Read + '_>>,
        compression: Compression,
        root: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(String, extract::Summary), String> {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(compressed),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(compressed)
                    .map_err(|e| format!("not valid zstd: {e}"))?,
            ),
        };
        let mut tar_stream = HashingReader::new(decoder, MAX_LAYER_BYTES);
        let limits = Limits {
            max_bytes: MAX_LAYER_BYTES,
            max_entries: MAX_LAYER_ENTRIES,
            max_header_bytes: MAX_ENTRY_HEADER_BYTES,
        };
        let mode = UnpackMode {
            keep_owners: !self.rootless,
            opaque_xattr: self.opaque_xattr(),
        };
        let summary = extract::unpack(&mut tar_stream, root, limits, mode)?;
        // What follows the tar's end is part of the diff_id too.
        tar_stream
            .drain()
            .map_err(|e| format!("read failed: {e}"))?;
        Ok((tar_stream.finish().0, summary))
    }
}

/// Checks that `dir` belongs to this process's user, who alone may write
/// to it.
fn check_private(dir: &Path) -> ImageResult<()> {
    let metadata = fs::symlink_metadata(dir)
        .map_err(|e| ImageError::new(dir, format!("cannot inspect the layer cache: {e}")))?;
    let problem = if !metadata.is_dir() {
        Some("is not a directory")
    } else if metadata.uid() != sys::geteuid() {
        Some("belongs to another user")
    } else if metadata.mode() & 0o022 != 0 {
        Some("is writable by other users")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ImageError::new(
            dir,
            format!(
                "the layer cache {problem}, who could change the files of every sandbox built \
                 from it; set {LAYER_CACHE_VAR} to a directory of your own"
            ),
        )),
        None => Ok(()),
    }
}

/// Removes the tree at `path`, if any. Directories are made writable
/// first, because a rootless unpack may have given one a mode without
/// write permission that even its owner must then lift.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !metadata.is_dir() {
        return fs::remove_file(path);
    }
    // Directories still to remove, each with whether it has been emptied.
    // A stack in memory rather than recursion, because a build's step may
    // nest directories thousands deep and overflow the thread's stack.
    let mut pending = vec![(path.to_path_buf(), false)];
    while let Some((dir, emptied)) = pending.pop() {
        if emptied {
            fs::remove_dir(&dir)?;
            continue;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        pending.push((dir.clone(), true));
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push((entry.path(), false));
            } else {
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}
