//! Installs this build of libsoulbox under a temporary prefix with
//! `install.sh`, builds `examples/c` with its Makefile through pkg-config,
//! and runs both the dynamically and the statically linked program.

use std::path::{Path, PathBuf};
use std::process::Command;

use soulbox_tests::{require_root, unique_name};

mod support;
use support::{crate_dir, library_dir, tool_available};

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A directory that exists for one test and is removed when the guard
/// drops.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("remove {}: {e}", self.0.display());
        }
    }
}

fn check_example_output(program: &Path) {
    // Cargo's LD_LIBRARY_PATH would win over the program's runpath, which
    // names the installed library.
    let stdout = run(Command::new(program).env_remove("LD_LIBRARY_PATH"));
    assert!(
        stdout.starts_with("sandbox sb-"),
        "{} printed no sandbox id: {stdout}",
        program.display()
    );
    assert!(
        stdout.contains("job: wrote sum.txt as user\n"),
        "the job's streamed output is missing: {stdout}"
    );
    assert!(
        stdout.ends_with("sum.txt: 108\n"),
        "the sum read back is missing: {stdout}"
    );
}

#[test]
fn c_example_builds_with_pkg_config_and_runs() {
    let test = "c_example_builds_with_pkg_config_and_runs";
    let apt = "apt-get install pkg-config make";
    if !require_root(test)
        || !tool_available(test, "pkg-config", apt)
        || !tool_available(test, "make", apt)
    {
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(unique_name("c-example")));
    let prefix = dir.0.join("prefix");
    let build = dir.0.join("build");
    std::fs::create_dir_all(&build).expect("create the build directory");

    run(Command::new("bash")
        .arg(crate_dir().join("install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--build-dir")
        .arg(library_dir())
        .arg("--no-build"));

    let pkg_config_path = prefix.join("lib/pkgconfig");
    let flags = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "soulbox"])
        .env("PKG_CONFIG_PATH", &pkg_config_path));
    assert!(
        flags.contains("-lsoulbox") && flags.contains(&format!("-I{}", prefix.display())),
        "pkg-config flags: {flags}"
    );

    let makefile = crate_dir().join("../examples/c/Makefile");
    run(Command::new("make")
        .arg("-f")
        .arg(&makefile)
        .current_dir(&build)
        .env("PKG_CONFIG_PATH", &pkg_config_path)
        .env("CFLAGS", "-O2 -Wall -Wextra -Werror"));
    check_example_output(&build.join("run_and_read"));
    check_example_output(&build.join("run_and_read_static"));
}
