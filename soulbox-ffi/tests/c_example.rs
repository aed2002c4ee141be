//! Installs this build of libsoulbox under a temporary prefix with
//! `install.sh`, builds `examples/c` with its Makefile through pkg-config,
//! and runs both the dynamically and the statically linked program. Checks
//! the installed shared library's SONAME and links too.

use std::path::{Path, PathBuf};
use std::process::Command;

use soulbox_tests::{require_root, unique_name};

mod support;
use support::{crate_dir, library_dir, soname, tool_available};

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

/// Installs this build's libraries, header and soulbox.pc under `prefix`.
fn install(prefix: &Path) {
    run(Command::new("bash")
        .arg(crate_dir().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--build-dir")
        .arg(library_dir())
        .arg("--no-build"));
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

    install(&prefix);

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

#[test]
fn installed_library_has_soname() {
    let test = "installed_library_has_soname";
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !tool_available(test, "readelf", "apt-get install binutils")
        || !tool_available(test, &compiler, "apt-get install gcc")
    {
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(unique_name("soname")));
    let prefix = dir.0.join("prefix");
    install(&prefix);

    let libdir = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let real_name = format!("libsoulbox.so.{version}");
    let real_file = libdir.join(&real_name);
    let metadata = std::fs::symlink_metadata(&real_file)
        .unwrap_or_else(|e| panic!("{} was not installed: {e}", real_file.display()));
    assert!(
        metadata.file_type().is_file(),
        "{} is not a regular file",
        real_file.display()
    );
    for link_name in [soname(), "libsoulbox.so".to_string()] {
        let link = libdir.join(&link_name);
        let target = std::fs::read_link(&link)
            .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", link.display()));
        assert_eq!(
            target,
            PathBuf::from(&real_name),
            "the target of {link_name}"
        );
    }
    let dynamic = run(Command::new("readelf").arg("-d").arg(&real_file));
    assert!(
        dynamic.contains(&format!("Library soname: [{}]", soname())),
        "readelf -d {} shows no SONAME {}:\n{dynamic}",
        real_file.display(),
        soname()
    );

    // Linked without a runpath, so only LD_LIBRARY_PATH finds the library.
    let source = dir.0.join("print_version.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <soulbox.h>\n\
         int main(void) { puts(soulbox_version()); return 0; }\n",
    )
    .expect("write the C program");
    let program = dir.0.join("print_version");
    run(Command::new(&compiler)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(prefix.join("include"))
        .arg(&source)
        .arg("-L")
        .arg(&libdir)
        .args(["-lsoulbox", "-o"])
        .arg(&program));
    let needed = run(Command::new("readelf").arg("-d").arg(&program));
    assert!(
        needed.contains(&format!("Shared library: [{}]", soname())),
        "the program does not name {} as needed:\n{needed}",
        soname()
    );
    let printed = run(Command::new(&program).env("LD_LIBRARY_PATH", &libdir));
    assert_eq!(printed, format!("{version}\n"), "soulbox_version()");
}
