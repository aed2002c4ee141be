//! Runs the Node test suite (`test/*.test.mjs`) against the addon that this
//! `cargo test` built, so that `cargo test --workspace` also tests the Node
//! API.
//!
//! The suite's TAP output goes straight to this process's stdout, so its
//! closing `# pass N`, `# fail N` and `# skipped N` lines appear in the
//! cargo test log, where `.ci/run` adds them to its total.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns the addon that cargo built for this test, in the directory of
/// the test binary (`target/<profile>/deps/`).
fn addon_path() -> PathBuf {
    let test_binary = std::env::current_exe().expect("locate the test binary");
    let deps_dir = test_binary
        .parent()
        .expect("the test binary is in a directory");
    deps_dir.join("libsoulbox_node.so")
}

#[test]
fn node_suite_passes() {
    let package_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let addon = addon_path();
    assert!(
        addon.exists(),
        "the addon {} is missing, although cargo builds it before this test",
        addon.display()
    );
    let run = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=tap"])
        .arg("test/")
        .current_dir(package_dir)
        .env("SOULBOX_NODE_ADDON", &addon)
        .status();
    let status = match run {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let reason = "node_suite_passes: skipped, `node` (Node.js 20 or later) is not on PATH";
            assert!(
                std::env::var_os("CI").is_none(),
                "{reason}; CI must run the Node suite"
            );
            eprintln!("{reason}");
            return;
        }
        Err(e) => panic!("cannot run node: {e}"),
    };
    assert!(
        status.success(),
        "the Node suite failed ({status}); see its TAP output above"
    );
}
