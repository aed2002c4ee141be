//! `NativeFileWriter`: a sandbox file written from Python in chunks,
//! through `Files::write_from`, so a large file object is never held in
//! memory whole.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pyo3::prelude::*;
use soulbox_core::Files;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bridge::{self, block, spawn, ToPython};
use crate::sandbox::NativeSandbox;

/// Chunks queued between Python and the write before `write` waits.
const QUEUE_CHUNKS: usize = 2;

type Chunk = io::Result<Vec<u8>>;

/// Reads the chunks that Python sends, for `Files::write_from`. An error
/// item fails the write, which then removes or empties the file.
struct ChunkReader {
    chunks: mpsc::Receiver<Chunk>,
    current: Vec<u8>,
    position: usize,
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.position == self.current.len() {
            match self.chunks.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                // The sender is gone: the end of the file.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let available = &self.current[self.position..];
        let count = available.len().min(buf.remaining());
        buf.put_slice(&available[..count]);
        self.position += count;
        Poll::Ready(Ok(()))
    }
}

/// A sandbox file being written in chunks. Dropping it before `finish`
/// cancels the write, which removes a new file or empties an existing one.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativeFileWriter {
    /// `None` once finished or aborted.
    chunks: Mutex<Option<mpsc::Sender<Chunk>>>,
    task: WriteTask,
}

impl NativeFileWriter {
    fn open(files: Files, path: String) -> PyResult<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE_CHUNKS);
        let reader = ChunkReader {
            chunks: receiver,
            current: Vec::new(),
            position: 0,
        };
        let task = bridge::runtime()?.spawn(async move { files.write_from(&path, reader).await });
        Ok(Self {
            chunks: Mutex::new(Some(sender)),
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Chunk>> {
        self.chunks.lock().ok().and_then(|chunks| chunks.clone())
    }

    /// Ends the chunks and waits for the write's result.
    fn finish_future(
        &self,
    ) -> impl std::future::Future<Output = soulbox_core::Result<u64>> + Send + 'static {
        if let Ok(mut chunks) = self.chunks.lock() {
            chunks.take();
        }
        join_write(Arc::clone(&self.task))
    }

    fn write_future(
        &self,
        data: &[u8],
    ) -> impl std::future::Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let sender = self.sender();
        let data = data.to_vec();
        let task = Arc::clone(&self.task);
        async move {
            let Some(sender) = sender else {
                return Err(finished());
            };
            if sender.send(Ok(data)).await.is_ok() {
                return Ok(());
            }
            // The write stopped reading because it failed, with the cause.
            join_write(task).await?;
            Err(soulbox_core::Error::InvalidArgument(
                "the write ended before all data was sent".into(),
            ))
        }
    }
}

impl NativeFileWriter {
    /// Sends an error in place of the next chunk, so the write fails
    /// through its own error path, which removes or empties the file
    /// before the task ends. Cancelling the task instead could leave a
    /// file that it had just created.
    fn abort_future(
        &self,
    ) -> impl std::future::Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let sender = self.chunks.lock().ok().and_then(|mut chunks| chunks.take());
        let task = Arc::clone(&self.task);
        async move {
            if let Some(sender) = sender {
                let _ = sender.send(Err(aborted())).await;
            }
            let _ = join_write(task).await;
            Ok(())
        }
    }
}

fn aborted() -> io::Error {
    io::Error::other("the caller aborted the write")
}

type WriteTask = Arc<Mutex<Option<JoinHandle<soulbox_core::Result<u64>>>>>;

fn take_task(task: &WriteTask) -> Option<JoinHandle<soulbox_core::Result<u64>>> {
    task.lock().ok().and_then(|mut task| task.take())
}

fn finished() -> soulbox_core::Error {
    soulbox_core::Error::InvalidArgument("the file writer was already finished or aborted".into())
}

/// Waits for the write task and returns the bytes it wrote or its error.
async fn join_write(task: WriteTask) -> soulbox_core::Result<u64> {
    let Some(task) = take_task(&task) else {
        return Err(finished());
    };
    match task.await {
        Ok(result) => result,
        Err(join_error) => Err(soulbox_core::Error::InvalidArgument(format!(
            "the write was cancelled: {join_error}"
        ))),
    }
}

impl ToPython for NativeFileWriter {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

impl Drop for NativeFileWriter {
    fn drop(&mut self) {
        // Unfinished: fail the write through its own error path, which
        // undoes it. With the queue full, cancel the task instead.
        let sender = self.chunks.lock().ok().and_then(|mut chunks| chunks.take());
        let failed = sender.is_some_and(|sender| sender.try_send(Err(aborted())).is_ok());
        if let (false, Some(task)) = (failed, take_task(&self.task)) {
            task.abort();
        }
    }
}

#[pymethods]
impl NativeSandbox {
    /// Opens `path` for writing in chunks, creating missing parents.
    #[pyo3(signature = (path, user=None))]
    fn open_writer(&self, path: String, user: Option<String>) -> PyResult<NativeFileWriter> {
        NativeFileWriter::open(self.files_as(user), path)
    }
}

#[pymethods]
impl NativeFileWriter {
    /// Appends `data` to the file, waiting while two chunks are queued.
    fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
        block(py, self.write_future(data))
    }

    /// Awaitable flavour of `write`.
    fn write_async<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.write_future(data))
    }

    /// Ends the file and returns the number of bytes written.
    fn finish(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.finish_future())
    }

    /// Awaitable flavour of `finish`.
    fn finish_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.finish_future())
    }

    /// Cancels the write and waits until a new file is removed or an
    /// existing one emptied.
    fn abort(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.abort_future())
    }

    /// Awaitable flavour of `abort`.
    fn abort_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.abort_future())
    }
}

impl ToPython for u64 {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.into_pyobject(py)?.into_any().unbind())
    }
}
