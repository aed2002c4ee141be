//! The file methods of `NativeSandbox`, `NativeFileReader` and
//! `NativeWatcher`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use pyo3::prelude::*;
use soulbox_core::{
    CopySummary, EntryInfo, FileReader, FileType, Files, FilesystemEvent, FilesystemEventKind,
    Watcher,
};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::bridge::{self, block, spawn, List, ToPython};
use crate::sandbox::NativeSandbox;

/// Bytes that one `read_chunk` call returns at most.
const READ_CHUNK: usize = 1 << 20;

/// An entry as (name, type, path, size, mode, permissions, owner, group,
/// modified, symlink target). The type is "file", "dir", "symlink" or
/// `None` for anything else, and modified is in seconds since the epoch.
struct Entry(EntryInfo);

impl ToPython for Entry {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let info = self.0;
        let kind = match info.kind {
            FileType::File => Some("file"),
            FileType::Dir => Some("dir"),
            FileType::Symlink => Some("symlink"),
            _ => None,
        };
        let modified = match info.modified.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        let tuple = (
            info.name,
            kind,
            info.path,
            info.size,
            info.mode,
            info.permissions,
            info.owner,
            info.group,
            modified,
            info.symlink_target,
        );
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

/// A copy's totals as (files, directories, bytes, skipped paths).
struct Copied(CopySummary);

impl ToPython for Copied {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let summary = self.0;
        let skipped: Vec<String> = summary
            .skipped
            .iter()
            .map(|path| path.to_string_lossy().into_owned())
            .collect();
        let tuple = (summary.files, summary.directories, summary.bytes, skipped);
        Ok(tuple.into_pyobject(py)?.into_any().unbind())
    }
}

impl NativeSandbox {
    pub(crate) fn files_as(&self, user: Option<String>) -> Files {
        match user {
            Some(user) => self.sandbox.files().user(user),
            None => self.sandbox.files(),
        }
    }
}

/// Declares a file method in both flavours: `$name` blocks and
/// `$name_async` returns an awaitable. `$body` builds the future from
/// `files` (a `Files` acting as `user`) and the arguments.
macro_rules! file_method {
    ($(#[doc = $doc:literal])* $name:ident, $name_async:ident,
     ($($arg:ident: $ty:ty),*), |$files:ident| $body:expr) => {
        #[pymethods]
        impl NativeSandbox {
            $(#[doc = $doc])*
            #[pyo3(signature = ($($arg,)* user=None))]
            fn $name(&self, py: Python<'_>, $($arg: $ty,)* user: Option<String>)
                -> PyResult<Py<PyAny>> {
                let $files = self.files_as(user);
                block(py, $body)
            }

            /// Awaitable flavour of the method without `_async`.
            #[pyo3(signature = ($($arg,)* user=None))]
            fn $name_async<'py>(&self, py: Python<'py>, $($arg: $ty,)* user: Option<String>)
                -> PyResult<Bound<'py, PyAny>> {
                let $files = self.files_as(user);
                spawn(py, $body)
            }
        }
    };
}

file_method!(
    /// Reads a whole file.
    read_file, read_file_async, (path: String),
    |files| async move { files.read(&path).await }
);
file_method!(
    /// Opens a file for reading in chunks.
    open_file, open_file_async, (path: String),
    |files| async move { files.read_stream(&path).await.map(NativeFileReader::new) }
);
file_method!(
    /// Writes a whole file, creating missing parents.
    write_file, write_file_async, (path: String, data: Vec<u8>),
    |files| async move { files.write(&path, data).await }
);
file_method!(
    /// Writes several files in order.
    write_files, write_files_async, (entries: Vec<(String, Vec<u8>)>),
    |files| async move { files.write_many(entries).await }
);
file_method!(
    /// Lists a directory `depth` levels deep.
    list_dir, list_dir_async, (path: String, depth: usize),
    |files| async move {
        let entries = files.list(&path, depth).await?;
        Ok(List(entries.into_iter().map(Entry).collect()))
    }
);
file_method!(
    /// Returns whether a path exists.
    exists, exists_async, (path: String),
    |files| async move { files.exists(&path).await }
);
file_method!(
    /// Describes a path without following a final symlink.
    stat, stat_async, (path: String),
    |files| async move { files.stat(&path).await.map(Entry) }
);
file_method!(
    /// Removes a path recursively; a missing path is not an error.
    remove, remove_async, (path: String),
    |files| async move { files.remove(&path).await }
);
file_method!(
    /// Renames a path and describes the result.
    rename, rename_async, (old_path: String, new_path: String),
    |files| async move { files.rename(&old_path, &new_path).await.map(Entry) }
);
file_method!(
    /// Creates a directory and its parents; returns false if it existed.
    make_dir, make_dir_async, (path: String),
    |files| async move { files.make_dir(&path).await }
);
file_method!(
    /// Copies a host file or tree into the sandbox.
    copy_in, copy_in_async, (host_path: String, sandbox_path: String),
    |files| async move { files.copy_in(&host_path, &sandbox_path).await.map(Copied) }
);
file_method!(
    /// Copies a sandbox file or tree to the host.
    copy_out, copy_out_async, (sandbox_path: String, host_path: String),
    |files| async move { files.copy_out(&sandbox_path, &host_path).await.map(Copied) }
);
file_method!(
    /// Watches a directory for changes.
    watch_dir, watch_dir_async, (path: String, recursive: bool),
    |files| async move { files.watch_dir(&path, recursive).await.map(NativeWatcher::new) }
);

/// A sandbox file being read in chunks of up to 1 MiB.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativeFileReader {
    /// `None` once closed.
    reader: Arc<Mutex<Option<FileReader>>>,
    size: u64,
}

impl NativeFileReader {
    fn new(reader: FileReader) -> Self {
        Self {
            size: reader.size(),
            reader: Arc::new(Mutex::new(Some(reader))),
        }
    }

    fn read_future(&self) -> impl Future<Output = soulbox_core::Result<Vec<u8>>> + Send + 'static {
        let reader = Arc::clone(&self.reader);
        async move {
            let mut reader = reader.lock_owned().await;
            let Some(reader) = reader.as_mut() else {
                return Ok(Vec::new());
            };
            let mut chunk = vec![0; READ_CHUNK];
            let read = reader
                .read(&mut chunk)
                .await
                .map_err(|source| soulbox_core::Error::Os {
                    step: "read a file in the sandbox",
                    source,
                })?;
            chunk.truncate(read);
            Ok(chunk)
        }
    }
}

impl ToPython for NativeFileReader {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

#[pymethods]
impl NativeFileReader {
    /// The file's size in bytes when it was opened.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// Reads the next chunk; empty at the end of the file or once closed.
    fn read_chunk(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.read_future())
    }

    /// Awaitable flavour of `read_chunk`.
    fn read_chunk_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.read_future())
    }

    /// Closes the file.
    fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let reader = Arc::clone(&self.reader);
        block(py, async move {
            reader.lock().await.take();
            Ok(())
        })
    }
}

/// A running watch of a sandbox directory.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativeWatcher {
    watcher: Arc<Mutex<Watcher>>,
}

/// What `NativeWatcher.next_event` returns: ("event", name, type) with type
/// "create", "write", "remove", "rename" or "chmod"; ("timeout",) when no
/// event came in time; `None` once the watch has ended.
enum WatchItem {
    Event(FilesystemEvent),
    Timeout,
    Ended,
}

impl ToPython for WatchItem {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let event = match self {
            WatchItem::Event(event) => event,
            WatchItem::Timeout => return Ok(("timeout",).into_pyobject(py)?.into_any().unbind()),
            WatchItem::Ended => return Ok(py.None()),
        };
        let kind = match event.kind {
            FilesystemEventKind::Create => "create",
            FilesystemEventKind::Write => "write",
            FilesystemEventKind::Remove => "remove",
            FilesystemEventKind::Rename => "rename",
            _ => "chmod",
        };
        Ok(("event", event.name, kind)
            .into_pyobject(py)?
            .into_any()
            .unbind())
    }
}

impl NativeWatcher {
    fn new(watcher: Watcher) -> Self {
        Self {
            watcher: Arc::new(Mutex::new(watcher)),
        }
    }

    fn next_future(
        &self,
        wait: Option<Duration>,
    ) -> impl Future<Output = soulbox_core::Result<WatchItem>> + Send + 'static {
        let watcher = Arc::clone(&self.watcher);
        async move {
            let mut watcher = watcher.lock_owned().await;
            let next = match wait {
                Some(wait) => match tokio::time::timeout(wait, watcher.next()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(WatchItem::Timeout),
                },
                None => watcher.next().await,
            };
            match next {
                Some(Ok(event)) => Ok(WatchItem::Event(event)),
                Some(Err(error)) => Err(error),
                None => Ok(WatchItem::Ended),
            }
        }
    }
}

impl ToPython for NativeWatcher {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

#[pymethods]
impl NativeWatcher {
    /// Waits up to `timeout` seconds (`None`: without limit) for the next
    /// event.
    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let wait = bridge::seconds(py, "timeout", timeout)?;
        block(py, self.next_future(wait))
    }

    /// Awaitable flavour of `next_event`.
    #[pyo3(signature = (timeout=None))]
    fn next_event_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let wait = bridge::seconds(py, "timeout", timeout)?;
        spawn(py, self.next_future(wait))
    }

    /// Stops the watch; events already queued can still be read.
    fn stop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let watcher = Arc::clone(&self.watcher);
        block(py, async move {
            watcher.lock().await.stop();
            Ok(())
        })
    }
}
