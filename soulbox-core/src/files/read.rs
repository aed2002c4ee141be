//! Reading files: whole with [`Files::read`], or in chunks with
//! [`Files::read_stream`].

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

use super::path;
use super::{file_error, Files};
use crate::error::Result;

/// Largest file [`Files::read`] returns whole, in bytes (1 GiB).
pub const MAX_READ_SIZE: u64 = 1 << 30;

/// Size of the chunks that [`FileReader`] and [`Files::write_from`] move
/// between the sandbox's file and the caller.
pub(super) const CHUNK_SIZE: usize = 1 << 20;

impl Files {
    /// Reads a whole file into memory. Use [`Files::read_stream`] for
    /// files too large for that.
    ///
    /// # Errors
    ///
    /// [`Error::FileNotFound`](crate::Error::FileNotFound) if it does not
    /// exist; [`Error::InvalidArgument`](crate::Error::InvalidArgument) if it
    /// is a directory, FIFO or device;
    /// [`Error::PermissionDenied`](crate::Error::PermissionDenied) if the user
    /// may not read it.
    ///
    /// A file larger than [`MAX_READ_SIZE`] is rejected with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) before any
    /// of it is read: sandboxed code can make a sparse file of any size
    /// that takes no space, and reading it whole would exhaust the host's
    /// memory.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        let path = self.sandbox_path(path)?;
        self.run_as_user(move |sandbox| {
            let file = path::open_regular(sandbox, &path, libc::O_RDONLY)?;
            let size = file
                .metadata()
                .map_err(file_error(path.caller(), "stat a file in the sandbox"))?
                .len();
            let too_large = || {
                crate::Error::InvalidArgument(format!(
                    "{:?} is {size} bytes, more than the {MAX_READ_SIZE} bytes read() returns \
                     at once; read it as a stream instead (Rust: read_stream(path); Python: \
                     read(path, format=\"stream\"); Node: read(path, {{ format: 'stream' }}))",
                    path.caller()
                ))
            };
            if size > MAX_READ_SIZE {
                return Err(too_large());
            }
            // The file may grow while it is read; take() keeps the cap.
            let mut data = Vec::with_capacity(size as usize);
            file.take(MAX_READ_SIZE + 1)
                .read_to_end(&mut data)
                .map_err(file_error(path.caller(), "read a file in the sandbox"))?;
            if data.len() as u64 > MAX_READ_SIZE {
                return Err(too_large());
            }
            Ok(data)
        })
        .await
    }

    /// Opens a file for reading in chunks of 1 MiB. The host keeps at most
    /// three chunks of it in memory at a time, whatever the file's size.
    ///
    /// # Errors
    ///
    /// As [`Files::read`]; the user's permission is checked once, here.
    pub async fn read_stream(&self, path: &str) -> Result<FileReader> {
        let path = self.sandbox_path(path)?;
        let file = self
            .run_as_user(move |sandbox| path::open_regular(sandbox, &path, libc::O_RDONLY))
            .await?;
        let size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        Ok(FileReader {
            file: Some(file),
            pending: None,
            current: Vec::new(),
            position: 0,
            spare: None,
            at_end: false,
            size,
        })
    }
}

/// The result of a chunk read on a blocking thread: the file back, the
/// buffer, and how many bytes it filled.
type ChunkRead = (File, Vec<u8>, io::Result<usize>);

/// A sandbox file being read in chunks, from [`Files::read_stream`].
///
/// It reads 1 MiB at a time on tokio's blocking threads, and starts the
/// read of the next chunk while the caller consumes the current one.
///
/// # Caveats
///
/// The file was opened when the reader was made, so it keeps reading that
/// file even if sandboxed code renames or removes it, or the sandbox ends.
#[derive(Debug)]
pub struct FileReader {
    /// The file, while no chunk read is in flight.
    file: Option<File>,
    /// The chunk read in flight, if any.
    pending: Option<JoinHandle<ChunkRead>>,
    /// The chunk being handed to the caller, and the offset of its first
    /// byte not handed over yet.
    current: Vec<u8>,
    position: usize,
    /// A spent chunk buffer, reused for the next read.
    spare: Option<Vec<u8>>,
    /// Whether a read came back short, which means the end of the file.
    at_end: bool,
    size: u64,
}

impl FileReader {
    /// Returns the file's size in bytes when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts reading the next chunk on a blocking thread, unless a read is
    /// in flight or the end was reached.
    fn start_read(&mut self) {
        if self.at_end || self.pending.is_some() {
            return;
        }
        let Some(mut file) = self.file.take() else {
            return;
        };
        let mut buf = self.spare.take().unwrap_or_default();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            buf.resize(CHUNK_SIZE, 0);
            let filled = fill(&mut file, &mut buf);
            (file, buf, filled)
        }));
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl AsyncRead for FileReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.position < this.current.len() {
                let available = &this.current[this.position..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.position += n;
                if this.position == this.current.len() {
                    this.spare = Some(std::mem::take(&mut this.current));
                    this.position = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            this.start_read();
            let Some(pending) = this.pending.as_mut() else {
                // Nothing in flight and nothing left: the end of the file.
                return Poll::Ready(Ok(()));
            };
            let joined = ready!(Pin::new(pending).poll(cx));
            this.pending = None;
            let (file, mut chunk, filled) = joined.map_err(io::Error::other)?;
            this.file = Some(file);
            let filled = match filled {
                Ok(filled) => filled,
                Err(e) => {
                    this.at_end = true;
                    return Poll::Ready(Err(e));
                }
            };
            chunk.truncate(filled);
            this.at_end = filled < CHUNK_SIZE;
            this.current = chunk;
            this.position = 0;
            // Read ahead while the caller consumes this chunk.
            this.start_read();
        }
    }
}
