//! `NativeCommand`: the handle of a running command or PTY.

use std::future::Future;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use soulbox_core::{CommandController, CommandEvent, CommandHandle, ProcessInfo};
use tokio::sync::Mutex;

use crate::bridge::{self, block, spawn, ToPython};
use crate::sandbox::Process;

/// A running command: its events come from `next_event`, and its control
/// (kill, stdin, PTY size) works from any thread while another waits for
/// events.
#[pyclass(module = "soulbox._native", frozen)]
pub struct NativeCommand {
    controller: CommandController,
    /// `None` after `disconnect`.
    events: Arc<Mutex<Option<CommandHandle>>>,
    info: ProcessInfo,
}

impl NativeCommand {
    pub(crate) fn new(handle: CommandHandle) -> Self {
        Self {
            controller: handle.controller(),
            info: handle.info().clone(),
            events: Arc::new(Mutex::new(Some(handle))),
        }
    }

    fn next_event_future(
        &self,
    ) -> impl Future<Output = soulbox_core::Result<Option<Event>>> + Send + 'static {
        let events = Arc::clone(&self.events);
        async move {
            let mut events = events.lock_owned().await;
            match events.as_mut() {
                Some(handle) => Ok(handle.next_event().await?.map(Event)),
                None => Ok(None),
            }
        }
    }

    fn kill_future(&self) -> impl Future<Output = soulbox_core::Result<bool>> + Send + 'static {
        let controller = self.controller.clone();
        async move {
            let was_running = !controller.has_exited();
            controller.kill().await?;
            Ok(was_running)
        }
    }

    fn send_stdin_future(
        &self,
        data: &[u8],
    ) -> impl Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let controller = self.controller.clone();
        let data = data.to_vec();
        async move { controller.send_stdin(&data).await }
    }

    fn close_stdin_future(
        &self,
    ) -> impl Future<Output = soulbox_core::Result<()>> + Send + 'static {
        let controller = self.controller.clone();
        async move { controller.close_stdin().await }
    }
}

impl ToPython for NativeCommand {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, self)?.into_any())
    }
}

/// One event of a command, as ("stdout", bytes), ("stderr", bytes) or
/// ("exit", (exit code, signal, timed out, out of memory)).
struct Event(CommandEvent);

impl ToPython for Event {
    fn to_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let event = match self.0 {
            CommandEvent::Stdout(bytes) => ("stdout", PyBytes::new(py, &bytes).into_any()),
            CommandEvent::Stderr(bytes) => ("stderr", PyBytes::new(py, &bytes).into_any()),
            CommandEvent::Exit(exit) => {
                let status = (
                    exit.status.code(),
                    exit.status.signal(),
                    exit.timed_out,
                    exit.oom_killed,
                );
                ("exit", status.into_pyobject(py)?.into_any())
            }
        };
        Ok(event.into_pyobject(py)?.into_any().unbind())
    }
}

#[pymethods]
impl NativeCommand {
    /// The pid of the command's first process inside the sandbox.
    #[getter]
    fn pid(&self) -> u32 {
        self.controller.pid()
    }

    /// The command as (pid, tag, cmd, args, envs, cwd).
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Process(self.info.clone()).to_python(py)
    }

    /// Waits for the next event; `None` after the exit was returned or the
    /// handle was disconnected.
    fn next_event(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.next_event_future())
    }

    /// Awaitable flavour of `next_event`.
    fn next_event_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.next_event_future())
    }

    /// Kills the command's whole process tree; returns whether its first
    /// process was still running.
    fn kill(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.kill_future())
    }

    /// Awaitable flavour of `kill`.
    fn kill_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.kill_future())
    }

    /// Sends `signal` to the command's first process.
    fn signal(&self, py: Python<'_>, signal: i32) -> PyResult<Py<PyAny>> {
        let controller = self.controller.clone();
        block(py, async move { controller.signal(signal).await })
    }

    /// Writes to the command's stdin.
    fn send_stdin(&self, py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
        block(py, self.send_stdin_future(data))
    }

    /// Awaitable flavour of `send_stdin`.
    fn send_stdin_async<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.send_stdin_future(data))
    }

    /// Closes the command's stdin.
    fn close_stdin(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, self.close_stdin_future())
    }

    /// Awaitable flavour of `close_stdin`.
    fn close_stdin_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.close_stdin_future())
    }

    /// Resizes the command's PTY.
    fn resize(&self, py: Python<'_>, rows: u16, cols: u16) -> PyResult<()> {
        self.controller
            .resize(rows, cols)
            .map_err(|e| bridge::core_error(py, e))
    }

    /// Stops receiving events; the command keeps running.
    fn disconnect(&self) -> PyResult<()> {
        if let Ok(mut events) = self.events.try_lock() {
            *events = None;
            return Ok(());
        }
        // Another thread waits for an event; drop the handle once it has
        // one.
        let events = Arc::clone(&self.events);
        bridge::runtime()?.spawn(async move {
            *events.lock().await = None;
        });
        Ok(())
    }
}

/// Kills a command's process tree when dropped, unless defused: a wait
/// that is cancelled must not leave the command running.
pub struct KillOnDrop(Option<CommandController>);

impl KillOnDrop {
    pub fn new(controller: CommandController) -> Self {
        Self(Some(controller))
    }

    /// Leaves the command alone from now on.
    pub fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(controller) = self.0.take() else {
            return;
        };
        // Both bridges run futures as tasks of the runtime, so they are
        // dropped inside it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = controller.kill().await;
            });
        }
    }
}
