//! soulbox-cli/build-static.sh and install.sh, run as a user runs them:
//! from another directory, with the target directory given in the ways
//! cargo accepts, and with a prefix and DESTDIR that contain spaces.
//!
//! Each build reuses the test build's target directory, so after the first
//! static build only `soulbox` itself is linked again.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use soulbox_tests::unique_name;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Returns the target directory of this test build, three levels above
/// the test executable (TARGET/PROFILE/deps/NAME).
fn target_dir() -> PathBuf {
    let executable = std::env::current_exe().expect("test executable path");
    executable
        .ancestors()
        .nth(3)
        .expect("test executable in TARGET/PROFILE/deps")
        .to_path_buf()
}

fn host_triple() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV prints the host triple")
}

/// A new directory under the system's temporary directory, removed when the
/// guard drops, with a symbolic link `target` in it to [`target_dir`].
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir(&path).expect("create work directory");
        symlink(target_dir(), path.join("target")).expect("link the target directory");
        Self { path }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("remove {}: {e}", self.path.display());
        }
    }
}

fn script(name: &str) -> PathBuf {
    repository().join("soulbox-cli").join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn assert_static(binary: &Path) {
    let headers = Command::new("readelf")
        .arg("-l")
        .arg(binary)
        .output()
        .expect("run readelf");
    assert!(
        headers.status.success(),
        "readelf -l {}: {headers:?}",
        binary.display()
    );
    assert!(
        !text(&headers.stdout).contains("INTERP"),
        "{} has a program interpreter",
        binary.display()
    );
}

fn run_script(command: &mut Command) -> Output {
    let output = command.output().expect("run the script");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        text(&output.stderr)
    );
    output
}

#[test]
fn build_static_reports_cargo_target_dir() {
    let work = WorkDir::new("build-static");
    let expected = work
        .path
        .join("target")
        .join(host_triple())
        .join("release")
        .join("soulbox");

    // A --target-dir argument, which the script passes on to cargo.
    let output = run_script(
        Command::new("bash")
            .arg(script("build-static.sh"))
            .arg("--target-dir")
            .arg(work.path.join("target"))
            .env_remove("CARGO_TARGET_DIR"),
    );
    assert_eq!(
        PathBuf::from(text(&output.stdout)),
        expected,
        "path printed for --target-dir"
    );

    // A relative CARGO_TARGET_DIR, taken from the caller's directory.
    let output = run_script(
        Command::new("bash")
            .arg(script("build-static.sh"))
            .current_dir(&work.path)
            .env("CARGO_TARGET_DIR", "target"),
    );
    assert_eq!(
        PathBuf::from(text(&output.stdout)),
        expected,
        "path printed for a relative CARGO_TARGET_DIR"
    );
    assert_static(&expected);
}

#[test]
fn build_static_without_cargo() {
    let output = Command::new("/bin/bash")
        .arg(script("build-static.sh"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run build-static.sh");
    assert!(
        !output.status.success(),
        "build-static.sh succeeded without cargo"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cargo not found on PATH"),
        "stderr without cargo: {stderr}"
    );
}

#[test]
fn install_into_destdir_with_spaces() {
    let work = WorkDir::new("install");
    let stage = work.path.join("stage dir");
    let output = run_script(
        Command::new("bash")
            .arg(script("install.sh"))
            .args(["--prefix", "/opt/soul box"])
            .current_dir(&work.path)
            .env("CARGO_TARGET_DIR", "target")
            .env("DESTDIR", &stage),
    );
    let installed = stage.join("opt/soul box/bin/soulbox");
    assert!(
        text(&output.stdout).ends_with(&format!("as {}", installed.display())),
        "install.sh output: {}",
        text(&output.stdout)
    );
    assert_static(&installed);
    let version = Command::new(&installed)
        .arg("--version")
        .output()
        .expect("run soulbox");
    assert!(version.status.success(), "soulbox --version: {version:?}");
    assert!(text(&version.stdout).starts_with("soulbox "), "{version:?}");
}

/// A relative prefix is rejected in both forms the script takes.
#[test]
fn install_rejects_relative_prefix() {
    for args in [
        &["--prefix", "relative/dir"][..],
        &["--prefix=relative/dir"],
    ] {
        let output = Command::new("bash")
            .arg(script("install.sh"))
            .args(args)
            .output()
            .expect("run install.sh");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("--prefix must be an absolute path, got relative/dir"),
            "{args:?}: stderr: {stderr}"
        );
    }
}

#[test]
fn install_help_prints_usage() {
    let output = Command::new("bash")
        .arg(script("install.sh"))
        .arg("--help")
        .output()
        .expect("run install.sh");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let usage = text(&output.stdout);
    assert!(
        usage.contains("Usage: soulbox-cli/install.sh [--prefix DIR]"),
        "stdout: {usage}"
    );
    assert!(usage.contains("DESTDIR"), "stdout: {usage}");
}
