//! The C ABI of SoulBox: `libsoulbox.so`, `libsoulbox.a` and
//! `include/soulbox.h`.
//!
//! This crate only translates. Each exported function checks its pointer
//! and string arguments, blocks on one shared tokio runtime for the
//! soulbox-core call it wraps, and turns the result into an out-parameter
//! and a returned error object (NULL on success). Every exported body runs
//! under `catch_unwind`, so a panic comes back as a
//! `SOULBOX_ERROR_KIND_INTERNAL` error instead of unwinding into C.
//!
//! The code is split in two:
//! - the safe modules (`sandbox`, `command`, `code`, `files`, `watch`,
//!   `options`, `output`, `info`, `entry`, `processes`, `block`, `error`,
//!   `runtime`, `template`)
//!   work on Rust types only;
//! - `abi` contains every `extern "C"` function and nearly all of the
//!   crate's `unsafe`: turning C pointers into references and back into
//!   boxes. The rest is in `signals`, which blocks SIGPIPE with libc's
//!   signal-mask calls.
//!
//! `include/soulbox.h` is generated from `abi` and the types it exports
//! with cbindgen (`soulbox-ffi/cbindgen.toml`); the documentation comments
//! here become the header's.

#![deny(unsafe_code)]

#[expect(
    unsafe_code,
    reason = "the C boundary: raw pointers from C become references here"
)]
mod abi;
mod block;
mod code;
mod command;
mod entry;
mod error;
mod files;
mod info;
mod options;
mod output;
mod processes;
mod runtime;
mod sandbox;
#[expect(
    unsafe_code,
    reason = "libc's signal-mask calls, which have no safe wrapper in std"
)]
mod signals;
mod template;
mod watch;
