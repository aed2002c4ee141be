//! `NativeSandbox.buildTemplate`: template builds from a `soulbox.toml`.
//!
//! The core calls its event callback on a tokio thread, so each chunk of a
//! step's output goes to JavaScript through a thread-safe function, which
//! queues the call for the JavaScript thread. After the build, one `end`
//! call goes through the same queue, and the Promise settles only once it
//! has run. So every chunk reaches the callback before the Promise settles.

use napi::bindgen_prelude::{Buffer, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use soulbox_core::build::{self, BuildEvent, BuildOptions, BuiltTemplate};

use crate::error::{IntoNapi, Result};
use crate::sandbox::NativeSandbox;

/// One call of the output callback of `buildTemplate`.
#[napi(object)]
#[expect(
    missing_debug_implementations,
    reason = "napi-rs's Buffer has no Debug"
)]
pub struct BuildOutputObject {
    /// `stdout` or `stderr` for a chunk of a step's output, or `end` once,
    /// after the last chunk.
    pub kind: String,
    /// The chunk's bytes; absent for `end`.
    pub data: Option<Buffer>,
}

/// A built template, as `Sandbox.buildTemplate` returns it.
#[napi(object)]
#[derive(Debug)]
pub struct BuiltTemplateObject {
    /// The build's key (hex SHA-256).
    pub key: String,
    /// The name it is registered under, if any.
    pub name: Option<String>,
    /// The path of the `soulbox.toml` it was built from.
    pub source: String,
    /// The path of the kept layer.
    pub layer: String,
    /// Whether an earlier build with the same inputs was reused and no
    /// step ran.
    pub cached: bool,
}

impl From<BuiltTemplate> for BuiltTemplateObject {
    fn from(built: BuiltTemplate) -> Self {
        Self {
            key: built.key,
            name: built.name,
            source: built.source.to_string_lossy().into_owned(),
            layer: built.layer.to_string_lossy().into_owned(),
            cached: built.cached,
        }
    }
}

/// Chunks of output that may wait for the JavaScript thread before the
/// build waits too, so a slow callback slows the build down instead of
/// filling memory.
const OUTPUT_QUEUE_CHUNKS: usize = 16;

/// The JavaScript function that receives a build's output.
type OutputCallback = ThreadsafeFunction<
    BuildOutputObject,
    Unknown<'static>,
    BuildOutputObject,
    Status,
    false,
    false,
    OUTPUT_QUEUE_CHUNKS,
>;

/// Queues the `end` call after every chunk and waits until it has run.
async fn flush(callback: &OutputCallback) {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let end = BuildOutputObject {
        kind: "end".into(),
        data: None,
    };
    let status =
        callback.call_with_return_value(end, ThreadsafeFunctionCallMode::Blocking, move |_, _| {
            // The receiver is gone only if the build's future was dropped.
            let _ = sender.send(());
            Ok(())
        });
    if status == Status::Ok {
        // An error means the call was dropped unrun (the environment is
        // shutting down), and then there is nothing to wait for.
        let _ = receiver.await;
    }
}

#[napi]
impl NativeSandbox {
    /// Builds the template that the `soulbox.toml` at `path` (or in the
    /// directory `path`) describes, registers it under `name` if given,
    /// and passes each chunk of a step's output to `on_output`. `path`
    /// must be absolute or relative to this process's working directory;
    /// `lib/sandbox.js` makes it absolute.
    #[napi]
    pub async fn build_template(
        path: String,
        name: Option<String>,
        on_output: Option<OutputCallback>,
    ) -> Result<BuiltTemplateObject> {
        let mut options = BuildOptions::default();
        if let Some(name) = name {
            options = options.name(name);
        }
        let mut on_event = |event: BuildEvent<'_>| {
            let Some(callback) = &on_output else {
                return;
            };
            let (kind, data) = match event {
                BuildEvent::Stdout(data) => ("stdout", data),
                BuildEvent::Stderr(data) => ("stderr", data),
                _ => return,
            };
            let chunk = BuildOutputObject {
                kind: kind.into(),
                data: Some(data.to_vec().into()),
            };
            // Blocks the build's tokio thread while OUTPUT_QUEUE_CHUNKS
            // chunks wait. The call fails only while the function closes
            // with the environment, when nothing is left to receive them.
            let _ = callback.call(chunk, ThreadsafeFunctionCallMode::Blocking);
        };
        let built = build::build(path.as_ref(), &options, &mut on_event).await;
        if let Some(callback) = &on_output {
            flush(callback).await;
        }
        Ok(built.into_napi()?.into())
    }
}
