//! Runs the C tests in `tests/c/test_soulbox.c` against `include/soulbox.h`
//! and the `libsoulbox.so` that cargo built for this test run.
//!
//! The C file is compiled once with the system C compiler (`$CC`, or `cc`)
//! with AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer.
//! Each case then runs in its own process, so a leak, an invalid access or
//! undefined behaviour fails the case it happened in. Valgrind is not used:
//! valgrind 3.19 (Debian 12) does not know pidfd_send_signal and runs the
//! clone(CLONE_VM | CLONE_VFORK) that starts a sandbox's PID 1 as a fork
//! inside valgrind, so no sandbox can start under it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use soulbox_tests::require_root;

mod support;
use support::{crate_dir, library_dir, soname, tool_available};

/// Maximum time a single C case may run before it counts as hung.
const CASE_LIMIT: Duration = Duration::from_secs(180);

/// Compiles the C tests once per test run and returns the executable.
fn test_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| {
        let lib_dir = library_dir();
        let library = lib_dir.join("libsoulbox.so");
        if !library.exists() {
            return Err(format!("{} was not built", library.display()));
        }
        let runtime_dir = soname_dir(&library)?;
        let binary = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test_soulbox");
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let output = Command::new(&compiler)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
            .args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
            .arg("-fno-omit-frame-pointer")
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(crate_dir().join("tests/c/test_soulbox.c"))
            .arg("-L")
            .arg(&lib_dir)
            .arg(format!("-Wl,-rpath,{}", runtime_dir.display()))
            .args(["-lsoulbox", "-lpthread", "-o"])
            .arg(&binary)
            .output()
            .map_err(|e| format!("cannot run the C compiler {compiler:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{compiler} failed to compile tests/c/test_soulbox.c ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(binary)
    });
    match built {
        Ok(binary) => binary,
        Err(message) => panic!("{message}"),
    }
}

/// Makes a directory with one symlink, named after the SONAME, to
/// `library`, and returns the directory. The C tests use it as their
/// runpath, because the program looks for a file of that name, and cargo
/// makes none.
fn soname_dir(library: &Path) -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libsoulbox-soname");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let link = dir.join(soname());
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove the old {}: {e}", link.display())),
    }
    std::os::unix::fs::symlink(library, &link)
        .map_err(|e| format!("link {} to {}: {e}", link.display(), library.display()))?;
    Ok(dir)
}

/// Runs `binary` with `args` under the sanitizers' settings, killing it
/// after [`CASE_LIMIT`].
fn run_sanitized(binary: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(binary)
        .args(args)
        // Cargo's LD_LIBRARY_PATH names target/<profile>, whose copy of
        // libsoulbox.so may be stale, and it would win over the runpath.
        .env_remove("LD_LIBRARY_PATH")
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1",
        )
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let start = Instant::now();
    while child.try_wait().expect("poll the C test").is_none() {
        if start.elapsed() > CASE_LIMIT {
            let _ = child.kill();
            let output = child
                .wait_with_output()
                .expect("collect the C test's output");
            panic!(
                "{args:?} did not finish within {CASE_LIMIT:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect the C test's output")
}

fn run_case(name: &str) {
    if !require_root(name) {
        return;
    }
    let output = run_sanitized(test_binary(), &[name]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "C case {name} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert_eq!(
        stdout.trim_end(),
        format!("ok {name}"),
        "C case {name} printed an unexpected result; stderr:\n{stderr}"
    );
}

macro_rules! c_cases {
    ($($name:ident),* $(,)?) => {
        /// The C cases that must pass, in the order of `test_soulbox --list`.
        const CASES: &[&str] = &[$(stringify!($name)),*];
        mod c {
            $(
                #[test]
                fn $name() {
                    super::run_case(stringify!($name));
                }
            )*
        }
    };
}

c_cases!(
    run_output,
    nonzero_exit,
    timeout,
    streaming_callback,
    stdin,
    callback_reentry,
    background_kill,
    signal,
    env_and_user,
    files_round_trip,
    missing_file,
    spawn_errors,
    invalid_options,
    null_arguments,
    kill_then_use,
    kill_on_drop,
    free_keeps_running,
    pause_resume,
    info_and_list,
    metrics,
    sandbox_timeout,
    pause_on_timeout,
    lifecycle_by_id,
    command_read,
    stdin_closed_pipe,
    pty_session,
    commands_list_connect,
    commands_connect_other_handle,
    files_list_and_stat,
    files_rename,
    files_watch,
    files_watch_limit,
    pty_input_after_end,
    free_during_waits,
    files_copy_tree,
    run_code,
    run_code_language,
    internet_access,
    egress_rules,
    get_host,
    mounts,
    template_build,
    template_build_output,
    version,
);

/// The deliberate leak case of test_soulbox.c.
const LEAK_CASE: &str = "sanitizer_catches_leak";

#[test]
fn every_c_case_runs() {
    if !require_root("every_c_case_runs") {
        return;
    }
    let output = run_sanitized(test_binary(), &["--list"]);
    assert!(output.status.success(), "--list failed: {output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    let listed: Vec<&str> = listed.lines().filter(|name| *name != LEAK_CASE).collect();
    assert_eq!(
        listed, CASES,
        "test_soulbox.c's cases and the c_cases! list in c_api.rs differ"
    );
}

#[test]
fn sanitizer_reports_leak() {
    if !require_root("sanitizer_reports_leak") {
        return;
    }
    let output = run_sanitized(test_binary(), &[LEAK_CASE]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a case that leaks passed, so leaks go unnoticed; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("LeakSanitizer: detected memory leaks"),
        "no LeakSanitizer report for the leaking case; stderr:\n{stderr}"
    );
}

#[test]
fn header_compiles_as_cxx() {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let output = Command::new(&compiler)
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-x",
            "c++",
        ])
        .arg(crate_dir().join("include/soulbox.h"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {compiler:?}: {e}"));
    assert!(
        output.status.success(),
        "soulbox.h does not compile as C++:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The cbindgen version whose output is committed; `.ci/run` installs it.
const CBINDGEN_VERSION: &str = "0.29.4";

#[test]
fn header_matches_rust_source() {
    let hint = format!("cargo install cbindgen --locked --version {CBINDGEN_VERSION}");
    if !tool_available("header_matches_rust_source", "cbindgen", &hint) {
        return;
    }
    let version = Command::new("cbindgen")
        .arg("--version")
        .output()
        .expect("run cbindgen --version");
    let installed = String::from_utf8_lossy(&version.stdout);
    assert!(
        installed.trim().ends_with(CBINDGEN_VERSION),
        "cbindgen {} is installed, but the header is generated with {CBINDGEN_VERSION}",
        installed.trim()
    );
    let output = Command::new("cbindgen")
        .arg("--config")
        .arg(crate_dir().join("cbindgen.toml"))
        .arg("--crate")
        .arg("soulbox-ffi")
        .current_dir(crate_dir())
        .output()
        .expect("run cbindgen");
    assert!(
        output.status.success(),
        "cbindgen failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = std::fs::read(crate_dir().join("include/soulbox.h")).expect("read soulbox.h");
    assert!(
        output.stdout == committed,
        "include/soulbox.h differs from what cbindgen generates from src/; regenerate it:\n  \
         cbindgen --config soulbox-ffi/cbindgen.toml --crate soulbox-ffi \
         --output soulbox-ffi/include/soulbox.h"
    );
}
