//! The `[[files]]` of a build: opened inside the build folder without
//! following a symbolic link, hashed into the build's key, and copied into
//! the build sandbox.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::digest::Output;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::spec::{self, Spec};
use super::BuildEvent;
use crate::error::{Error, Result};
use crate::sandbox::Sandbox;

/// Maximum number of files and directories that `[[files]]` copies in
/// all, directories' contents included.
const MAX_COPIED_ENTRIES: usize = 10_000;

/// Number of paths that one `chmod` command in the sandbox takes.
const CHMOD_BATCH: usize = 256;

/// A file or directory to copy in, opened.
pub(crate) struct CopyItem {
    /// Relative to the build folder, for messages.
    from: PathBuf,
    /// Absolute path in the template.
    to: String,
    /// The open file and what was read of it; `None` for a directory.
    file: Option<OpenFile>,
}

struct OpenFile {
    file: File,
    size: u64,
    executable: bool,
    /// SHA-256 of the contents as `hash_into` read them, which the copy
    /// must match. `None` until `hash_into` ran.
    digest: Option<Output<Sha256>>,
}

/// Opens every `[[files]]` source, and what a directory contains, below
/// the folder without following a symlink, so that none leads out of it.
/// Checks the bounds on entries and bytes.
pub(crate) fn open(spec: &Spec) -> Result<Vec<CopyItem>> {
    let folder = File::open(&spec.folder).map_err(|e| {
        Error::InvalidArgument(format!("cannot open {}: {e}", spec.folder.display()))
    })?;
    let mut walk = Walk {
        spec,
        folder: folder.as_fd(),
        items: Vec::new(),
        bytes: 0,
    };
    for (index, entry) in spec.files.iter().enumerate() {
        walk.add(index, &entry.from, entry.to.clone())?;
    }
    Ok(walk.items)
}

struct Walk<'a> {
    spec: &'a Spec,
    folder: BorrowedFd<'a>,
    items: Vec<CopyItem>,
    bytes: u64,
}

impl Walk<'_> {
    /// Adds `from` (relative to the folder) and, for a directory, what it
    /// contains, in name order with each directory before its contents.
    /// `index` is the `[[files]]` entry's. The entries still to add are on
    /// a stack in memory rather than in recursion, because a folder may
    /// nest directories thousands deep and overflow the thread's stack.
    fn add(&mut self, index: usize, from: &Path, to: String) -> Result<()> {
        let mut pending = vec![(from.to_path_buf(), to)];
        while let Some((from, to)) = pending.pop() {
            let children = self.add_one(index, &from, to)?;
            pending.extend(children.into_iter().rev());
        }
        Ok(())
    }

    /// Adds `from` and returns, for a directory, its entries in name order
    /// as (`from`, `to`) pairs still to add.
    fn add_one(&mut self, index: usize, from: &Path, to: String) -> Result<Vec<(PathBuf, String)>> {
        let invalid = |problem: String| {
            Error::InvalidArgument(format!(
                "{}: files[{index}].from {:?} {problem}",
                self.spec.path.display(),
                self.spec.files[index].from,
            ))
        };
        let name = crate::sys::c_string(from.as_os_str().as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        // O_PATH opens nothing behind the name: opening a FIFO to read
        // blocks until a writer comes, and opening a device node runs its
        // driver, which for some devices (a watchdog, a tape drive) acts
        // on the hardware. Only a regular file is then opened for reading,
        // through this descriptor, so it is the same file.
        let fd = crate::sys::openat2_beneath(self.folder, &name, libc::O_PATH).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV)) {
                invalid(format!(
                    "goes through a symbolic link at {from:?}; files must be regular files and \
                     directories inside the soulbox.toml's folder, without links on the way"
                ))
            } else {
                invalid(format!("cannot be opened at {from:?} ({e})"))
            }
        })?;
        let file = File::from(fd);
        let metadata = file.metadata().map_err(|e| invalid(e.to_string()))?;
        if self.items.len() >= MAX_COPIED_ENTRIES {
            return Err(invalid(format!(
                "brings the files to more than {MAX_COPIED_ENTRIES} entries; copy an archive \
                 and unpack it in a run step"
            )));
        }
        if metadata.is_dir() {
            let listing = format!("/proc/self/fd/{}", file.as_raw_fd());
            let mut names = Vec::new();
            for child in std::fs::read_dir(&listing).map_err(|e| invalid(e.to_string()))? {
                names.push(child.map_err(|e| invalid(e.to_string()))?.file_name());
            }
            names.sort();
            let mut children = Vec::with_capacity(names.len());
            for child in names {
                let Some(text) = child.to_str() else {
                    return Err(invalid(format!(
                        "contains {:?}, whose name is not valid UTF-8; rename it",
                        from.join(&child)
                    )));
                };
                children.push((from.join(&child), format!("{to}/{text}")));
            }
            self.items.push(CopyItem {
                from: from.to_path_buf(),
                to,
                file: None,
            });
            return Ok(children);
        }
        if !metadata.is_file() {
            return Err(invalid(format!(
                "has {from:?}, which is not a regular file or a directory; leave it out"
            )));
        }
        let file = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| invalid(format!("cannot be opened at {from:?} ({e})")))?;
        self.bytes += metadata.len();
        if self.bytes > spec::MAX_FILES_BYTES {
            return Err(invalid(format!(
                "brings the files to more than {} bytes in all; copy less, or fetch large data \
                 in a run step",
                spec::MAX_FILES_BYTES
            )));
        }
        self.items.push(CopyItem {
            from: from.to_path_buf(),
            to,
            file: Some(OpenFile {
                size: metadata.len(),
                executable: metadata.permissions().mode() & 0o111 != 0,
                file,
                digest: None,
            }),
        });
        Ok(Vec::new())
    }
}

/// Adds every item's path, kind and mode, and each file's size and
/// SHA-256, to `hash`. Keeps each file's SHA-256 for `copy_in`.
pub(crate) fn hash_into(hash: &mut Sha256, spec: &Spec, items: &mut [CopyItem]) -> Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    for item in items {
        hash.update(item.from.as_os_str().as_bytes());
        hash.update([0]);
        hash.update(item.to.as_bytes());
        hash.update([0]);
        let Some(open) = &mut item.file else {
            hash.update(b"d");
            continue;
        };
        hash.update([b'f', u8::from(open.executable)]);
        hash.update(open.size.to_le_bytes());
        let mut contents = Sha256::new();
        let mut reader = (&open.file).take(open.size);
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{}: cannot read {:?}: {e}",
                    spec.path.display(),
                    item.from
                ))
            })?;
            if n == 0 {
                break;
            }
            contents.update(&buf[..n]);
        }
        let digest = contents.finalize();
        hash.update(digest);
        open.digest = Some(digest);
    }
    Ok(())
}

/// Copies the items into the sandbox as the steps' user, making
/// directories first and executable files mode 0755.
pub(crate) async fn copy_in(
    sandbox: &Sandbox,
    spec: &Spec,
    items: &[CopyItem],
    on_event: &mut (dyn FnMut(BuildEvent<'_>) + Send),
) -> Result<()> {
    let fail = |message: String| Error::Build {
        path: spec.path.clone(),
        message,
    };
    let files_api = match &spec.user {
        Some(user) => sandbox.files().user(user.clone()),
        None => sandbox.files(),
    };
    let mut executables = Vec::new();
    for item in items {
        on_event(BuildEvent::File {
            from: &item.from,
            to: &item.to,
        });
        let cannot_copy = |e: Error| {
            fail(format!(
                "cannot copy {:?} to {}: {e}; the steps' user writes the files, so pick a \
                 directory it may write to, such as its home or workdir",
                item.from, item.to
            ))
        };
        let Some(open) = &item.file else {
            files_api.make_dir(&item.to).await.map_err(cannot_copy)?;
            continue;
        };
        let mut copy = open.file.try_clone().map_err(|e| fail(e.to_string()))?;
        std::io::Seek::seek(&mut copy, std::io::SeekFrom::Start(0))
            .map_err(|e| fail(e.to_string()))?;
        let mut reader = HashingReader {
            inner: tokio::fs::File::from_std(copy),
            hash: Sha256::new(),
        };
        let written = files_api
            .write_from(&item.to, &mut reader)
            .await
            .map_err(cannot_copy)?;
        if written != open.size {
            return Err(fail(format!(
                "{:?} changed while it was copied ({written} bytes, expected {}); build again",
                item.from, open.size
            )));
        }
        // A rewrite in place that keeps the size passes the size check, so
        // the copied bytes are compared with those hash_into put in the key.
        if Some(reader.hash.finalize()) != open.digest {
            return Err(fail(format!(
                "{:?} changed while it was copied (its contents differ from those hashed into \
                 the build's key); build again",
                item.from
            )));
        }
        if open.executable {
            executables.push(item.to.as_str());
        }
    }
    for batch in executables.chunks(CHMOD_BATCH) {
        let mut chmod = sandbox.command("chmod");
        chmod.arg("0755").arg("--").args(batch);
        if let Some(user) = &spec.user {
            chmod.user(user.clone());
        }
        let output = chmod.output().await?;
        if !output.status.success() {
            return Err(fail(format!(
                "cannot make the executable files executable: {}; the base needs chmod",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// A reader that adds every byte it reads to a SHA-256.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let start = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.hash.update(&buf.filled()[start..]);
        }
        polled
    }
}
