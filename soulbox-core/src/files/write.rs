//! Writing files and making directories.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::path::{self, Name, SandboxPath, DIR_PATH};
use super::read::CHUNK_SIZE;
use super::{act_as, ensure_running, file_error, FileUser, Files};
use crate::error::{Error, Result};
use crate::sandbox::Inner;
use crate::sys;

/// Permission bits of files that [`Files::write`] creates.
const FILE_MODE: u32 = 0o644;

impl Files {
    /// Writes a whole file, creating missing parent directories and
    /// replacing any previous contents. A new file gets mode 0644; an
    /// existing file keeps its mode and owner. A symlink at `path` is
    /// followed, inside the sandbox, and its missing target is created as
    /// a shell's `>` would create it.
    ///
    /// If the write fails, a file this call created is removed and an
    /// existing file is left empty, so no partial data stays behind and a
    /// full disk is not left full.
    ///
    /// # Errors
    ///
    /// [`Error::NotEnoughSpace`] when the writable layer is full;
    /// [`Error::PermissionDenied`] if the user may not write there;
    /// [`Error::InvalidArgument`] if a parent is not a directory or `path`
    /// names a directory, FIFO or device.
    pub async fn write(&self, path: &str, data: impl Into<Vec<u8>>) -> Result<()> {
        self.write_with_mode(path, data, FILE_MODE).await
    }

    /// Writes a whole file as [`Files::write`] does, giving a newly created
    /// file the permission bits `mode` (for example 0o755 for a script).
    /// An existing file keeps its mode.
    ///
    /// # Errors
    ///
    /// As [`Files::write`]; [`Error::InvalidArgument`] for a mode above
    /// 0o777.
    pub async fn write_with_mode(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<()> {
        check_mode(mode)?;
        let path = self.sandbox_path(path)?;
        let data = data.into();
        self.run_as_user(move |sandbox| write_whole(sandbox, &path, &data, mode))
            .await
    }

    /// Writes several files in one call, each as [`Files::write`] does, in
    /// order. Every path is checked before the first write.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: &soulbox_core::Sandbox) -> soulbox_core::Result<()> {
    /// let files = [("a.txt", &b"alpha"[..]), ("dir/b.txt", &b"beta"[..])];
    /// sandbox.files().write_many(files).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Files::write`], for the first file that fails; the files
    /// before it stay written.
    pub async fn write_many<I, P, D>(&self, files: I) -> Result<()>
    where
        I: IntoIterator<Item = (P, D)>,
        P: AsRef<str>,
        D: Into<Vec<u8>>,
    {
        let files = files
            .into_iter()
            .map(|(path, data)| Ok((self.sandbox_path(path.as_ref())?, data.into())))
            .collect::<Result<Vec<(SandboxPath, Vec<u8>)>>>()?;
        self.run_as_user(move |sandbox| {
            for (path, data) in &files {
                write_whole(sandbox, path, data, FILE_MODE)?;
            }
            Ok(())
        })
        .await
    }

    /// Writes a file from `reader` in chunks of 1 MiB, as [`Files::write`]
    /// does with a whole buffer, and returns the number of bytes written.
    /// The host keeps at most two chunks in memory at a time.
    ///
    /// # Errors
    ///
    /// As [`Files::write`], plus [`Error::Os`] if `reader` fails and
    /// [`Error::SandboxNotRunning`] if the sandbox ended before the last
    /// chunk was written. On an error, and also when the returned future is
    /// dropped before it completes, the file is removed or emptied as
    /// [`Files::write`] describes.
    pub async fn write_from<R: AsyncRead>(&self, path: &str, reader: R) -> Result<u64> {
        let path = self.sandbox_path(path)?;
        let user = self.resolve_user()?;
        // The open runs on a blocking thread that finishes even when this
        // future is dropped meanwhile. It hands the file over through a
        // channel, and a file nobody receives is undone there, with the
        // user's credentials, so a cancelled call leaves no file behind.
        let (handover, received) = tokio::sync::oneshot::channel();
        let mut received = UnclaimedUndone(Some(received));
        {
            let path = path.clone();
            self.run_as_user(move |sandbox| {
                let target = WriteTarget::open(sandbox, &path, FILE_MODE)?;
                if let Err(unclaimed) = handover.send(target) {
                    unclaimed.undo.run();
                }
                Ok(())
            })
            .await?;
        }
        let target = received.take().await.map_err(|_| {
            Error::os("receive the opened file")(std::io::ErrorKind::BrokenPipe.into())
        })?;
        let mut write = ChunkedWrite {
            file: Some(target.file),
            in_flight: None,
            undo: Some(target.undo),
            user,
        };
        // The open file takes writes even once the sandbox has ended, into
        // a layer nothing can reach, so the end is checked afterwards.
        let result = write
            .copy_from(reader, path.caller())
            .await
            .and_then(|written| ensure_running(&self.sandbox).map(|()| written));
        match result {
            Ok(written) => {
                write.undo = None;
                Ok(written)
            }
            Err(e) => {
                // The space is free again before the caller sees the error.
                write.discard().await;
                Err(ensure_running(&self.sandbox).err().unwrap_or(e))
            }
        }
    }

    /// Creates a directory and any missing parents, owned by the user, with
    /// mode 0755. Returns false if it already existed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if a file is in the way;
    /// [`Error::PermissionDenied`] if the user may not create it.
    pub async fn make_dir(&self, path: &str) -> Result<bool> {
        let path = self.sandbox_path(path)?;
        self.run_as_user(move |sandbox| {
            let caller = path.caller();
            match path::open_in_root(sandbox, &path.c_full(), DIR_PATH) {
                Ok(_) => return Ok(false),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(Error::InvalidArgument(format!(
                        "{caller:?} exists and is not a directory"
                    )))
                }
                Err(e) => return Err(file_error(caller, "open a directory in the sandbox")(e)),
            }
            let (_, created) = path::make_dirs(sandbox, path.full(), caller)?;
            Ok(created)
        })
        .await
    }
}

/// The receiving end of [`Files::write_from`]'s hand-over. Dropped with the
/// call, it closes the channel and undoes a file that was sent before, so
/// the file is undone here or, when sent after the close, on its blocking
/// thread, whichever way the open and the drop interleave.
struct UnclaimedUndone(Option<tokio::sync::oneshot::Receiver<WriteTarget>>);

impl UnclaimedUndone {
    /// Returns the receiver, after which a drop undoes nothing.
    fn take(&mut self) -> tokio::sync::oneshot::Receiver<WriteTarget> {
        self.0.take().expect("taken once")
    }
}

impl Drop for UnclaimedUndone {
    fn drop(&mut self) {
        if let Some(mut received) = self.0.take() {
            received.close();
            // The undo checks by descriptor and inode, so the host's
            // credentials remove nothing but the file this call created.
            if let Ok(target) = received.try_recv() {
                target.undo.run();
            }
        }
    }
}

fn check_mode(mode: u32) -> Result<()> {
    if mode > 0o777 {
        return Err(Error::InvalidArgument(format!(
            "file mode {mode:#o} has bits above 0o777; setuid, setgid and sticky bits \
             cannot be set"
        )));
    }
    Ok(())
}

/// Writes `data` to `path` on the calling thread, which already has the
/// user's credentials.
fn write_whole(sandbox: &Inner, path: &SandboxPath, data: &[u8], mode: u32) -> Result<()> {
    let mut target = WriteTarget::open(sandbox, path, mode)?;
    if let Err(e) = target.file.write_all(data) {
        target.undo.run();
        return Err(file_error(path.caller(), "write a file in the sandbox")(e));
    }
    Ok(())
}

/// A sandbox file opened for writing, created or truncated, with the step
/// that undoes the write if it fails.
#[derive(Debug)]
pub(super) struct WriteTarget {
    pub(super) file: File,
    pub(super) undo: Undo,
}

impl WriteTarget {
    /// Creates `path` with `mode`, or truncates it if it exists, creating
    /// missing parent directories. Runs with the user's credentials, so a
    /// new file belongs to the user.
    pub(super) fn open(sandbox: &Inner, path: &SandboxPath, mode: u32) -> Result<Self> {
        let caller = path.caller();
        let Some((parent_path, name)) = path.split() else {
            return Err(Error::InvalidArgument(format!(
                "{caller:?} does not name a file"
            )));
        };
        let (parent, _) = path::make_dirs(sandbox, &parent_path, caller)?;
        let create = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        // O_EXCL never follows a symlink, so a symlink at `name` reports
        // EEXIST and is then opened, and followed inside the root, below.
        match sys::openat2_name(parent.as_fd(), name.as_c_str(), create, mode) {
            Ok(fd) => {
                let file = File::from(fd);
                // The kernel applied the host process's umask to `mode`.
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(file_error(caller, "set the mode of a new file"))?;
                let undo = Undo::new(&file, Some((parent, name)), caller)?;
                Ok(Self { file, undo })
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Truncate only once the file is known to be a regular file.
                let file = match path::open_regular(sandbox, path, libc::O_WRONLY) {
                    // A symlink to a missing file: its target is created, as
                    // a shell's `>` creates it.
                    Err(Error::FileNotFound { .. }) => {
                        return Self::create_link_target(sandbox, path, mode)
                    }
                    other => other?,
                };
                file.set_len(0)
                    .map_err(file_error(caller, "truncate a file in the sandbox"))?;
                let undo = Undo::new(&file, None, caller)?;
                Ok(Self { file, undo })
            }
            Err(e) => Err(file_error(caller, "create a file in the sandbox")(e)),
        }
    }

    /// Creates the missing target of the symlink at `path` with `mode`,
    /// following the link inside the root. Sandboxed code may put a file
    /// there meanwhile, so a failed write empties the target but never
    /// removes it.
    fn create_link_target(sandbox: &Inner, path: &SandboxPath, mode: u32) -> Result<Self> {
        let caller = path.caller();
        // open_regular passes no mode, so a file this call creates has
        // mode 0 until the change below.
        let file = path::open_regular(sandbox, path, libc::O_WRONLY | libc::O_CREAT)?;
        let meta = file
            .metadata()
            .map_err(file_error(caller, "stat a file in the sandbox"))?;
        file.set_len(0)
            .map_err(file_error(caller, "truncate a file in the sandbox"))?;
        if meta.mode() & 0o7777 == 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(file_error(caller, "set the mode of a new file"))?;
        }
        let undo = Undo::new(&file, None, caller)?;
        Ok(Self { file, undo })
    }
}

/// Undoes a failed write: empties the file, and removes it if the write
/// created it and its name still leads to it. It has its own descriptor
/// of the file, so it works while another thread still writes to it.
#[derive(Debug)]
pub(super) struct Undo {
    file: File,
    created: Option<(OwnedFd, Name)>,
}

impl Undo {
    fn new(file: &File, created: Option<(OwnedFd, Name)>, caller: &str) -> Result<Self> {
        let file = file
            .try_clone()
            .map_err(file_error(caller, "duplicate a file descriptor"))?;
        Ok(Self { file, created })
    }

    /// Runs with the user's credentials. Failures are ignored: this runs
    /// after an error that the caller gets instead.
    pub(super) fn run(&self) {
        let _ = self.file.set_len(0);
        let Some((parent, name)) = &self.created else {
            return;
        };
        let (Ok(ours), Ok(named)) = (
            self.file.metadata(),
            sys::fstatat_name(parent.as_fd(), name.as_c_str()),
        ) else {
            return;
        };
        // Sandboxed code may have put another file under the name since.
        if ours.dev() == named.st_dev && ours.ino() == named.st_ino {
            let _ = sys::unlinkat_name(parent.as_fd(), name.as_c_str(), false);
        }
    }
}

/// The result of a chunk write on a blocking thread: the file back, the
/// buffer, and the outcome.
type ChunkWrite = (File, Vec<u8>, io::Result<()>);

/// A [`Files::write_from`] in progress. Dropping it before the write
/// completed (the caller dropped the future) undoes the write in the
/// background, after the chunk write in flight has ended.
struct ChunkedWrite {
    /// The file, while no chunk write is in flight.
    file: Option<File>,
    in_flight: Option<tokio::task::JoinHandle<ChunkWrite>>,
    /// `None` once the write completed.
    undo: Option<Undo>,
    user: FileUser,
}

impl ChunkedWrite {
    /// Copies `reader` into the file in chunks: while one chunk is written
    /// on a blocking thread, the next is read from `reader`.
    async fn copy_from<R: AsyncRead>(&mut self, reader: R, caller: &str) -> Result<u64> {
        let mut reader = std::pin::pin!(reader);
        let mut spare: Option<Vec<u8>> = None;
        let mut written = 0u64;
        loop {
            let mut chunk = spare.take().unwrap_or_default();
            let read = fill_chunk(&mut reader, &mut chunk).await;
            if let Some(buffer) = self.wait_in_flight(caller).await? {
                spare = Some(buffer);
            }
            read.map_err(Error::os("read the data to write into the sandbox"))?;
            if chunk.is_empty() {
                return Ok(written);
            }
            written += chunk.len() as u64;
            let mut file = self
                .file
                .take()
                .expect("the file is back once no write is in flight");
            self.in_flight = Some(tokio::task::spawn_blocking(move || {
                let result = file.write_all(&chunk);
                (file, chunk, result)
            }));
        }
    }

    /// Waits for the chunk write in flight, if any, and returns its buffer.
    async fn wait_in_flight(&mut self, caller: &str) -> Result<Option<Vec<u8>>> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(None);
        };
        let (file, buffer, result) = in_flight
            .await
            .map_err(|e| Error::os("write a file in the sandbox")(io::Error::other(e)))?;
        self.file = Some(file);
        result.map_err(file_error(caller, "write a file in the sandbox"))?;
        Ok(Some(buffer))
    }

    /// Undoes the write and waits until that is done. The undo's own
    /// failure is ignored: the write's error is what the caller needs.
    async fn discard(mut self) {
        let Some(work) = self.undo_work() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(work).await;
    }

    /// Takes the undo step, as a closure for a blocking thread that first
    /// waits for the chunk write in flight.
    fn undo_work(&mut self) -> Option<impl FnOnce() + Send + 'static> {
        let undo = self.undo.take()?;
        let in_flight = self.in_flight.take();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let user = self.user;
        Some(move || {
            if let (Some(in_flight), Some(runtime)) = (in_flight, runtime) {
                let _ = runtime.block_on(in_flight);
            }
            if let Ok(_credentials) = act_as(user) {
                undo.run();
            }
        })
    }
}

impl Drop for ChunkedWrite {
    fn drop(&mut self) {
        let Some(work) = self.undo_work() else {
            return;
        };
        // Outside a runtime (it is shutting down) the undo runs here and
        // blocks the dropping thread briefly.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(work)),
            Err(_) => work(),
        }
    }
}

/// Reads from `reader` until `chunk` contains [`CHUNK_SIZE`] bytes or the
/// reader ends.
async fn fill_chunk<R: AsyncRead>(
    reader: &mut std::pin::Pin<&mut R>,
    chunk: &mut Vec<u8>,
) -> io::Result<()> {
    chunk.clear();
    chunk.reserve_exact(CHUNK_SIZE);
    while chunk.len() < CHUNK_SIZE {
        let mut limited = reader.as_mut().take((CHUNK_SIZE - chunk.len()) as u64);
        if limited.read_buf(chunk).await? == 0 {
            break;
        }
    }
    Ok(())
}
