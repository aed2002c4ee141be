//! File calls of `NativeSandbox`, the chunked reader behind
//! `files.read(path, { format: 'stream' })` and the directory watcher.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use soulbox_core::{FileReader, Files, FilesystemEventKind, Watcher};
use tokio::io::AsyncReadExt;

use crate::convert::{EntryInfoObject, WriteEntryObject};
use crate::detach::Detachable;
use crate::error::{invalid_argument, to_napi, IntoNapi, Result};
use crate::sandbox::NativeSandbox;

/// Size of the chunks that a stream read hands to JavaScript, in bytes.
const STREAM_CHUNK_SIZE: usize = 1 << 20;

impl NativeSandbox {
    /// File access as `user`, or as the sandbox's default user.
    fn files_as(&self, user: Option<String>) -> Files {
        match user {
            Some(user) => self.sandbox.files().user(user),
            None => self.sandbox.files(),
        }
    }
}

#[napi]
impl NativeSandbox {
    /// Reads a whole file.
    #[napi]
    pub async fn read_file(&self, path: String, user: Option<String>) -> Result<Buffer> {
        let data = self.files_as(user).read(&path).await.into_napi()?;
        Ok(data.into())
    }

    /// Opens a file for reading in chunks.
    #[napi]
    pub async fn open_file(&self, path: String, user: Option<String>) -> Result<NativeFileReader> {
        let reader = self.files_as(user).read_stream(&path).await.into_napi()?;
        Ok(NativeFileReader {
            reader: Detachable::new(reader),
        })
    }

    /// Writes a whole file and returns its description.
    #[napi]
    pub async fn write_file(
        &self,
        path: String,
        data: Buffer,
        user: Option<String>,
    ) -> Result<EntryInfoObject> {
        let files = self.files_as(user);
        files.write(&path, data.to_vec()).await.into_napi()?;
        let entry = files.stat(&path).await.into_napi()?;
        Ok(entry.into())
    }

    /// Writes several files in order and returns their descriptions.
    #[napi]
    pub async fn write_files(
        &self,
        entries: Vec<WriteEntryObject>,
        user: Option<String>,
    ) -> Result<Vec<EntryInfoObject>> {
        let files = self.files_as(user);
        let paths: Vec<String> = entries.iter().map(|entry| entry.path.clone()).collect();
        let contents = entries
            .into_iter()
            .map(|entry| (entry.path, entry.data.to_vec()));
        files.write_many(contents).await.into_napi()?;
        let mut written = Vec::with_capacity(paths.len());
        for path in &paths {
            written.push(files.stat(path).await.into_napi()?.into());
        }
        Ok(written)
    }

    /// Lists a directory down to `depth` levels.
    #[napi]
    pub async fn list_dir(
        &self,
        path: String,
        depth: u32,
        user: Option<String>,
    ) -> Result<Vec<EntryInfoObject>> {
        let entries = self
            .files_as(user)
            .list(&path, depth as usize)
            .await
            .into_napi()?;
        Ok(entries.into_iter().map(EntryInfoObject::from).collect())
    }

    /// Returns whether a path exists.
    #[napi]
    pub async fn exists(&self, path: String, user: Option<String>) -> Result<bool> {
        self.files_as(user).exists(&path).await.into_napi()
    }

    /// Describes a file or directory without following a final symlink.
    #[napi]
    pub async fn stat(&self, path: String, user: Option<String>) -> Result<EntryInfoObject> {
        let entry = self.files_as(user).stat(&path).await.into_napi()?;
        Ok(entry.into())
    }

    /// Removes a file or a whole directory tree; a missing path is not an
    /// error.
    #[napi]
    pub async fn remove(&self, path: String, user: Option<String>) -> Result<()> {
        self.files_as(user).remove(&path).await.into_napi()
    }

    /// Renames `from` to `to` and returns the description of `to`.
    #[napi]
    pub async fn rename(
        &self,
        from: String,
        to: String,
        user: Option<String>,
    ) -> Result<EntryInfoObject> {
        let entry = self.files_as(user).rename(&from, &to).await.into_napi()?;
        Ok(entry.into())
    }

    /// Creates a directory and its parents; false if it existed.
    #[napi]
    pub async fn make_dir(&self, path: String, user: Option<String>) -> Result<bool> {
        self.files_as(user).make_dir(&path).await.into_napi()
    }

    /// Starts watching a directory.
    #[napi]
    pub async fn watch_dir(
        &self,
        path: String,
        recursive: bool,
        user: Option<String>,
    ) -> Result<NativeWatcher> {
        let watcher = self
            .files_as(user)
            .watch_dir(&path, recursive)
            .await
            .into_napi()?;
        Ok(NativeWatcher {
            watcher: Detachable::new(watcher),
        })
    }
}

/// A sandbox file read in chunks; see `NativeSandbox.openFile`.
#[napi]
#[derive(Debug)]
pub struct NativeFileReader {
    reader: Detachable<FileReader>,
}

#[napi]
impl NativeFileReader {
    /// Returns the next chunk of at most 1 MiB, or `null` at the end and
    /// after `close`.
    #[napi]
    pub async fn read(&self) -> Result<Option<Buffer>> {
        let read = self.reader.run(async |reader| read_chunk(reader).await);
        let Some(chunk) = read.await else {
            return Ok(None);
        };
        let chunk = chunk.map_err(|source| {
            to_napi(soulbox_core::Error::Os {
                step: "read a file in the sandbox",
                source,
            })
        })?;
        Ok((!chunk.is_empty()).then(|| chunk.into()))
    }

    /// Closes the file; a pending `read()` returns `null`.
    #[napi]
    pub fn close(&self) {
        self.reader.detach();
    }
}

/// Reads the next chunk of at most [`STREAM_CHUNK_SIZE`] bytes; empty at
/// the end of the file.
async fn read_chunk(reader: &mut FileReader) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(STREAM_CHUNK_SIZE);
    // `take` bounds the read without zero-filling a buffer first.
    reader
        .take(STREAM_CHUNK_SIZE as u64)
        .read_to_end(&mut chunk)
        .await?;
    Ok(chunk)
}

/// One change in a watched directory.
#[napi(object)]
#[derive(Debug)]
pub struct FilesystemEventObject {
    /// The path relative to the watched directory.
    pub name: String,
    /// `create`, `write`, `remove`, `rename` or `chmod`.
    #[napi(js_name = "type")]
    pub kind: String,
}

/// A running directory watch; see `NativeSandbox.watchDir`.
#[napi]
#[derive(Debug)]
pub struct NativeWatcher {
    watcher: Detachable<Watcher>,
}

#[napi]
impl NativeWatcher {
    /// Waits for the next event; `null` once the watch has ended or was
    /// stopped. Rejects for lost events or a subdirectory that could not
    /// be watched, after which the watch goes on, and for the sandbox's
    /// end, after which it returns `null`.
    #[napi]
    pub async fn next(&self) -> Result<Option<FilesystemEventObject>> {
        let next = self.watcher.run(async |watcher| watcher.next().await);
        let Some(event) = next.await.flatten() else {
            return Ok(None);
        };
        let event = event.into_napi()?;
        let kind = match event.kind {
            FilesystemEventKind::Create => "create",
            FilesystemEventKind::Write => "write",
            FilesystemEventKind::Remove => "remove",
            FilesystemEventKind::Rename => "rename",
            FilesystemEventKind::Chmod => "chmod",
            other => {
                return Err(invalid_argument(format!(
                    "filesystem event kind {other:?} has no JavaScript name"
                )))
            }
        };
        Ok(Some(FilesystemEventObject {
            name: event.name,
            kind: kind.into(),
        }))
    }

    /// Stops the watch; a pending `next()` returns `null`.
    #[napi]
    pub fn stop(&self) {
        self.watcher.detach();
    }
}
