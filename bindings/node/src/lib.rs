//! The native half of SoulBox's Node.js package.
//!
//! This addon is a thin layer over `soulbox-core`: every method either
//! reads a field or starts one async core call on napi-rs's tokio runtime
//! and returns a Promise, so no call blocks the JavaScript event loop. The
//! package's hand-written JavaScript (`index.js`) gives it E2B's names, its
//! error classes and its callbacks; nothing here is meant to be called
//! directly by users.
//!
//! Errors cross the boundary as JavaScript `Error`s whose message starts
//! with a bracketed code, such as `[FILE_NOT_FOUND 2] ...`; see
//! [`error::to_napi`]. The JavaScript layer turns the code into the
//! matching error class.

#![deny(unsafe_code)]

mod build;
mod code;
mod command;
mod convert;
mod detach;
mod error;
mod files;
mod pool;
mod sandbox;

pub use code::NativeCodeRun;
pub use command::NativeCommand;
pub use files::{NativeFileReader, NativeWatcher};
pub use pool::NativeSandboxPool;
pub use sandbox::NativeSandbox;
