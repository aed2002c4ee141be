//! The sandbox's PID 1, embedded at build time (see build.rs) and loaded
//! once per host process into a sealed memfd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::sys;

static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/soulbox-init"));

/// Returns the memfd holding PID 1's executable, creating it on first use.
pub fn memfd() -> Result<BorrowedFd<'static>> {
    static MEMFD: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = MEMFD.get() {
        return Ok(fd.as_fd());
    }
    let fd = sys::sealed_memfd(c"soulbox-init", INIT_BINARY).map_err(Error::os(
        "load the sandbox init program into a sealed memfd",
    ))?;
    // A racing thread may have stored its own memfd first; that one wins and
    // this one is closed.
    Ok(MEMFD.get_or_init(|| fd).as_fd())
}
