//! Where SoulBox keeps its per-host files.

use std::path::PathBuf;

use crate::sys;

/// The per-user state directory: `/run/soulbox` for root, otherwise
/// `$XDG_RUNTIME_DIR/soulbox`, or `/tmp/soulbox-UID` without one.
pub fn state_dir() -> PathBuf {
    let uid = sys::geteuid();
    if uid == 0 {
        return PathBuf::from("/run/soulbox");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("soulbox"),
        _ => PathBuf::from(format!("/tmp/soulbox-{uid}")),
    }
}
