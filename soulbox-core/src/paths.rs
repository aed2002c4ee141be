//! Where SoulBox keeps its per-host files.

use std::path::PathBuf;

use crate::sys;

/// Environment variable that overrides the state directory, for running
/// several independent sets of sandboxes on one host (tests do).
pub const STATE_DIR_VAR: &str = "SOULBOX_STATE_DIR";

/// The per-user state directory: `$SOULBOX_STATE_DIR` when set to an
/// absolute path, else `/run/soulbox` for root, otherwise
/// `$XDG_RUNTIME_DIR/soulbox`, or `/tmp/soulbox-UID` without one.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(STATE_DIR_VAR) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
    }
    let uid = sys::geteuid();
    if uid == 0 {
        return PathBuf::from("/run/soulbox");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("soulbox"),
        _ => PathBuf::from(format!("/tmp/soulbox-{uid}")),
    }
}
