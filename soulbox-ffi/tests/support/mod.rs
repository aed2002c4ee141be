//! Helpers shared by soulbox-ffi's integration tests.

use std::path::PathBuf;
use std::process::Command;

/// Returns the soulbox-ffi crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Returns the directory with this build's `libsoulbox.so` and
/// `libsoulbox.a`: `target/<profile>/deps`, where the test executable runs
/// from too. Cargo copies the libraries one level up only when they are
/// built for their own sake, so the copies there may be stale.
pub fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    exe.parent()
        .expect("the test executable's directory")
        .to_path_buf()
}

/// Returns the SONAME that build.rs gives libsoulbox.so, which a program
/// linked against the library looks for at run time.
pub fn soname() -> String {
    format!("libsoulbox.so.{}", env!("CARGO_PKG_VERSION_MAJOR"))
}

/// Returns whether `tool --version` runs. Without the tool, `test` prints
/// why it is skipped, or fails under CI, which installs every tool.
pub fn tool_available(test: &str, tool: &str, install_hint: &str) -> bool {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if runs {
        return true;
    }
    let reason = format!("{test}: skipped, {tool} is not installed; {install_hint}");
    assert!(std::env::var_os("CI").is_none(), "{reason}");
    eprintln!("{reason}");
    false
}
