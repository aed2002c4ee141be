//! Reads the files of an image: an OCI image layout directory, or a tar
//! archive that contains `docker save` output or an OCI image layout.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::sys;

/// Largest JSON file of an image (index, manifest, configuration) that is
/// read. Real ones are a few KiB; the bound keeps a malformed image from
/// filling memory.
pub(crate) const MAX_JSON_SIZE: u64 = 16 << 20;

/// Maximum number of members of an image archive, so that indexing a
/// malformed archive ends.
const MAX_ARCHIVE_MEMBERS: usize = 1 << 20;

/// Maximum number of symbolic links followed to reach one member of an
/// archive (old `docker save` output links duplicate layers).
const MAX_MEMBER_LINKS: usize = 8;

/// The origin of an image's files: a layout directory or an indexed
/// archive.
pub(crate) enum Source {
    /// An OCI image layout directory.
    Layout { dir: PathBuf, fd: OwnedFd },
    /// A tar archive, indexed by member name.
    Archive {
        path: PathBuf,
        file: File,
        members: HashMap<String, Member>,
    },
}

/// A member of an archive: a regular file's data, or a link to another
/// member.
#[derive(Debug, Clone)]
pub(crate) enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path())
            .finish()
    }
}

/// An error while reading an image, with the file it concerns.
#[derive(Debug)]
pub(crate) struct ImageError {
    /// The archive, or the file inside a layout directory.
    pub(crate) path: PathBuf,
    pub(crate) message: String,
}

impl ImageError {
    pub(crate) fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub(crate) type ImageResult<T> = std::result::Result<T, ImageError>;

impl Source {
    /// Opens the OCI image layout directory `dir`.
    pub(crate) fn open_layout(dir: &Path) -> ImageResult<Self> {
        let fd = File::open(dir)
            .map_err(|e| ImageError::new(dir, format!("cannot open the image layout: {e}")))?;
        Ok(Self::Layout {
            dir: dir.to_path_buf(),
            fd: OwnedFd::from(fd),
        })
    }

    /// Opens the tar archive `path` and indexes its members.
    pub(crate) fn open_archive(path: &Path) -> ImageResult<Self> {
        let file = File::open(path)
            .map_err(|e| ImageError::new(path, format!("cannot open the archive: {e}")))?;
        let members = index_archive(&file).map_err(|message| {
            ImageError::new(path, format!("invalid image archive: {message}"))
        })?;
        Ok(Self::Archive {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    /// Returns the layout directory or the archive.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Layout { dir, .. } => dir,
            Self::Archive { path, .. } => path,
        }
    }

    /// Returns the path of `name` for messages: the file in a layout
    /// directory, or the archive.
    pub(crate) fn error_path(&self, name: &str) -> PathBuf {
        match self {
            Self::Layout { dir, .. } => dir.join(name),
            Self::Archive { path, .. } => path.clone(),
        }
    }

    /// Returns a description of `name` for messages: its path in a layout
    /// directory, or "member NAME" of an archive.
    pub(crate) fn describe(&self, name: &str) -> String {
        match self {
            Self::Layout { dir, .. } => dir.join(name).display().to_string(),
            Self::Archive { .. } => format!("archive member {name}"),
        }
    }

    /// Returns whether the image has the file `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        match self {
            Self::Layout { fd, .. } => open_beneath(fd, name).is_ok(),
            Self::Archive { members, .. } => members.contains_key(name),
        }
    }

    /// Opens the file `name` (a path relative to the layout or the
    /// archive's root) and returns a reader and its size.
    pub(crate) fn open(&self, name: &str) -> ImageResult<(Box<dyn Read + '_>, u64)> {
        match self {
            Self::Layout { fd, .. } => {
                let file = File::from(open_beneath(fd, name).map_err(|e| {
                    ImageError::new(self.error_path(name), format!("cannot open it: {e}"))
                })?);
                let size = file
                    .metadata()
                    .map_err(|e| ImageError::new(self.error_path(name), e.to_string()))?
                    .len();
                Ok((Box::new(file), size))
            }
            Self::Archive {
                path,
                file,
                members,
            } => {
                let (offset, size) = resolve_member(members, name).ok_or_else(|| {
                    ImageError::new(path, format!("the archive has no member {name}"))
                })?;
                Ok((
                    Box::new(MemberReader {
                        file,
                        position: offset,
                        end: offset + size,
                    }),
                    size,
                ))
            }
        }
    }

    /// Reads the whole file `name`, which must be at most [`MAX_JSON_SIZE`]
    /// bytes.
    pub(crate) fn read_small(&self, name: &str) -> ImageResult<Vec<u8>> {
        let (reader, size) = self.open(name)?;
        if size > MAX_JSON_SIZE {
            return Err(ImageError::new(
                self.error_path(name),
                format!(
                    "{} is {size} bytes, more than the {MAX_JSON_SIZE} bytes an image's JSON \
                     file may have",
                    self.describe(name)
                ),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        reader
            .take(MAX_JSON_SIZE)
            .read_to_end(&mut data)
            .map_err(|e| ImageError::new(self.error_path(name), format!("read failed: {e}")))?;
        Ok(data)
    }
}

/// Opens the regular file `name`, a relative path, below the layout
/// directory `dir` without following a symbolic link on the way.
///
/// The file is opened with `O_NONBLOCK`, so that opening a FIFO in the
/// layout returns at once instead of blocking the create until a writer
/// opens it. Anything but a regular file is then rejected: a FIFO or a
/// device node could be read without end.
fn open_beneath(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let mut current: Option<OwnedFd> = None;
    let components: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();
    for (index, component) in components.iter().enumerate() {
        let last = index + 1 == components.len();
        let flags = if last {
            libc::O_RDONLY | libc::O_NONBLOCK
        } else {
            libc::O_RDONLY | libc::O_DIRECTORY
        };
        let parent = current.as_ref().unwrap_or(dir);
        let name = sys::c_string(component.as_bytes())?;
        current = Some(sys::openat2_name(parent.as_fd(), &name, flags, 0)?);
    }
    let file = current.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    if sys::fstat_fd(file.as_fd())?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    sys::clear_nonblocking(file.as_fd())?;
    Ok(file)
}

/// Reads a region of the archive with positioned reads, so members can be
/// read one after another from one descriptor.
struct MemberReader<'a> {
    file: &'a File,
    position: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.position;
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if len == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..len], self.position)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.position += read as u64;
        Ok(read)
    }
}

/// Normalizes a member name: no leading `./` or `/`, no `.` components.
/// Returns `None` for a name that climbs out with `..`.
pub(crate) fn normalize_member(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Lists the members of the tar archive `file`, reading only headers.
fn index_archive(file: &File) -> Result<HashMap<String, Member>, String> {
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries_with_seek().map_err(|e| e.to_string())?;
    let mut members = HashMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        if members.len() >= MAX_ARCHIVE_MEMBERS {
            return Err(format!(
                "it has more than {MAX_ARCHIVE_MEMBERS} members, more than an image has"
            ));
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = normalize_member(&name) else {
            return Err(format!("member {name:?} leaves the archive with \"..\""));
        };
        let member = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Member::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            },
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                // A symbolic link is relative to its directory, a hard
                // link to the archive's root.
                let base = if kind == tar::EntryType::Symlink {
                    name.rsplit_once('/').map_or("", |(dir, _)| dir)
                } else {
                    ""
                };
                match normalize_member(&format!("{base}/{target}")) {
                    Some(target) if !target.starts_with('/') => Member::Link(target),
                    _ => continue,
                }
            }
            _ => continue,
        };
        members.insert(name, member);
    }
    Ok(members)
}

/// Returns the offset and size of member `name`, following links.
fn resolve_member(members: &HashMap<String, Member>, name: &str) -> Option<(u64, u64)> {
    let mut name = normalize_member(name)?;
    for _ in 0..=MAX_MEMBER_LINKS {
        match members.get(&name)? {
            Member::File { offset, size } => return Some((*offset, *size)),
            Member::Link(target) => name = target.clone(),
        }
    }
    None
}

/// Returns the SHA-256 digest of `data` in its `sha256:<hex>` form.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, b| {
            let _ = write!(text, "{b:02x}");
            text
        })
}

/// Returns the hex part of `digest` if it is a well-formed SHA-256 digest
/// (`sha256:` and 64 lowercase hex digits), the only algorithm read.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then_some(hex)
}

/// A reader that computes the SHA-256 digest and counts the bytes of what
/// passes through it, and fails once more than `limit` bytes have.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Reads what is left, so that the digest covers the whole stream.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }

    /// Returns the digest in `sha256:<hex>` form and the byte count.
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex(&self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count += read as u64;
        if self.count > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the stream is longer than the limit of {} bytes",
                    self.limit
                ),
            ));
        }
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}
