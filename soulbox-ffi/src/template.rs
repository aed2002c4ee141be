//! Templates built from a `soulbox.toml`: `soulbox_built_template`.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::Poll;

use soulbox_core::build::{self, BuildEvent, BuildOptions};

use crate::error::{Error, ErrorKind, Result};
use crate::runtime;

/// Kind of a build event passed to `soulbox_build_event_callback`. Each
/// variant's documentation names the bytes that come with it.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildEventKind {
    /// An earlier build with the same inputs is reused and nothing runs.
    /// The bytes are the build's key, 64 hex digits.
    Cached = 1,
    /// A `[[files]]` entry, or a file or directory inside one, is about to
    /// be copied in. The bytes are its absolute path in the template.
    File = 2,
    /// A `run` step starts. The bytes are its command line.
    Step = 3,
    /// Bytes that the running step wrote to stdout.
    Stdout = 4,
    /// Bytes that the running step wrote to stderr.
    Stderr = 5,
    /// Every step succeeded and the layer is being saved. No bytes.
    Saving = 6,
}

/// Receives each event of a build, with its bytes, or `None` for no
/// callback.
pub type OnBuildEvent<'a> = Option<&'a mut dyn FnMut(BuildEventKind, &[u8])>;

/// A built template, from `soulbox_template_build`, freed with
/// `soulbox_built_template_free`. Its strings are kept as C strings so
/// that the accessors can lend them out.
#[derive(Debug)]
pub struct BuiltTemplate {
    key: CString,
    name: Option<CString>,
    source: CString,
    layer: CString,
    cached: bool,
}

impl BuiltTemplate {
    /// Builds the template at `path` (a `soulbox.toml` or its folder) and
    /// registers it under `name` if given. Passes each event to `on_event`,
    /// or discards it when there is no callback.
    pub fn build(
        path: &OsStr,
        name: Option<&str>,
        on_event: OnBuildEvent<'_>,
    ) -> Result<Box<Self>> {
        let mut options = BuildOptions::default();
        if let Some(name) = name {
            options = options.name(name);
        }
        let path = Path::new(path);
        let built = match on_event {
            Some(callback) => build_with_events(path, &options, callback)??,
            None => {
                let mut ignore_events = |_: BuildEvent<'_>| {};
                runtime::block_on(build::build(path, &options, &mut ignore_events))??
            }
        };
        Ok(Box::new(Self {
            key: c_string(built.key.as_bytes(), "key")?,
            name: built
                .name
                .map(|name| c_string(name.as_bytes(), "name"))
                .transpose()?,
            source: c_string(built.source.as_os_str().as_bytes(), "source")?,
            layer: c_string(built.layer.as_os_str().as_bytes(), "layer")?,
            cached: built.cached,
        }))
    }

    pub fn key(&self) -> &CString {
        &self.key
    }

    pub fn name(&self) -> Option<&CString> {
        self.name.as_ref()
    }

    pub fn source(&self) -> &CString {
        &self.source
    }

    pub fn layer(&self) -> &CString {
        &self.layer
    }

    pub fn cached(&self) -> bool {
        self.cached
    }
}

/// Runs the build on the calling thread and passes each event to
/// `callback` between two polls of the build, never inside one. The
/// callback thus runs outside the runtime and may call SoulBox again, and
/// the build waits while it runs.
fn build_with_events(
    path: &Path,
    options: &BuildOptions,
    callback: &mut dyn FnMut(BuildEventKind, &[u8]),
) -> Result<soulbox_core::Result<build::BuiltTemplate>> {
    // A Mutex rather than a RefCell because the build's callback must be
    // Send. Only this thread locks it.
    let queue = Mutex::new(VecDeque::new());
    let mut record = |event: BuildEvent<'_>| {
        if let Some(owned) = own_event(event) {
            queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(owned);
        }
    };
    let mut building = pin!(build::build(path, options, &mut record));
    loop {
        let finished = runtime::block_on(std::future::poll_fn(|context| {
            match building.as_mut().poll(context) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending if queued(&queue) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        }))?;
        let events = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
        for (kind, bytes) in &events {
            // The NUL that `own_event` appended is not passed as data.
            callback(*kind, &bytes[..bytes.len() - 1]);
        }
        if let Some(result) = finished {
            return Ok(result);
        }
    }
}

fn queued(queue: &Mutex<VecDeque<(BuildEventKind, Vec<u8>)>>) -> bool {
    !queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
}

/// Copies an event's bytes, followed by a NUL byte so that C may read
/// text as a C string. Returns `None` for an event kind that the C API
/// does not have.
fn own_event(event: BuildEvent<'_>) -> Option<(BuildEventKind, Vec<u8>)> {
    let (kind, bytes) = match event {
        BuildEvent::Cached { key } => (BuildEventKind::Cached, key.as_bytes()),
        BuildEvent::File { to, .. } => (BuildEventKind::File, to.as_bytes()),
        BuildEvent::Step { command, .. } => (BuildEventKind::Step, command.as_bytes()),
        BuildEvent::Stdout(data) => (BuildEventKind::Stdout, data),
        BuildEvent::Stderr(data) => (BuildEventKind::Stderr, data),
        BuildEvent::Saving => (BuildEventKind::Saving, &[][..]),
        _ => return None,
    };
    let mut owned = Vec::with_capacity(bytes.len() + 1);
    owned.extend_from_slice(bytes);
    owned.push(0);
    Some((kind, owned))
}

/// Copies a field of the build's result into a C string. No field can
/// contain a NUL byte, because the paths come from a C string and from the
/// environment and the core checks the key and name, so an error here is
/// a bug and has the internal kind.
fn c_string(bytes: &[u8], field: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| {
        let message = format!(
            "the built template's {field} {:?} contains a NUL byte",
            String::from_utf8_lossy(bytes)
        );
        Error::new(ErrorKind::Internal, 0, &message)
    })
}
