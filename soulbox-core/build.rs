//! Builds the sandbox's PID 1 (`soulbox-init`) as a static executable and
//! places it in OUT_DIR, where `src/init_binary.rs` embeds it with
//! `include_bytes!`. The library then needs no file installed beside it.
//!
//! Cargo cannot yet depend on another package's binary (artifact
//! dependencies are unstable), so this script runs a nested `cargo build` of
//! the `soulbox-init` package with its own target directory, which keeps it
//! clear of the outer build's lock.
//!
//! It also compiles the default seccomp policy, with the library's own
//! seccomp modules, to OUT_DIR/default_seccomp.bpf, so that a process does
//! not build and compile it before its first create (0.14 ms on the
//! benchmark host).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The library's seccomp modules, compiled into this script as well.
#[path = "src"]
#[expect(dead_code, reason = "the script uses only the default policy")]
#[expect(
    unexpected_cfgs,
    reason = "this script sets soulbox_precompiled_seccomp for the library only"
)]
mod library {
    pub mod seccomp;
}

/// The part of the library's error type that the seccomp modules use.
mod error {
    #[derive(Debug)]
    pub enum Error {
        InvalidArgument(String),
    }

    pub type Result<T> = std::result::Result<T, Error>;
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    precompile_seccomp(&manifest_dir, &out_dir);

    let init_dir = manifest_dir.join("../soulbox-init");
    let proto_dir = manifest_dir.join("../soulbox-proto");
    for dir in [&init_dir, &proto_dir] {
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }
    println!("cargo:rerun-if-env-changed=SOULBOX_INIT_PATH");

    let dest = out_dir.join("soulbox-init");
    // A prebuilt helper may be supplied, for example by a packager.
    if let Some(prebuilt) = env::var_os("SOULBOX_INIT_PATH") {
        std::fs::copy(&prebuilt, &dest).expect("copy SOULBOX_INIT_PATH into OUT_DIR");
        emit_hash(&dest);
        return;
    }

    let target = env::var("TARGET").expect("set by cargo");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("init-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&init_dir)
        .args([
            "build",
            "--locked",
            "--offline",
            "--profile",
            "init",
            "-p",
            "soulbox-init",
        ])
        .arg("--manifest-path")
        .arg(init_dir.join("Cargo.toml"))
        .arg("--target")
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir)
        // A static executable runs the same whatever libc the sandbox's
        // template carries, or none.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let status = cmd.status().expect("run cargo to build soulbox-init");
    assert!(status.success(), "building soulbox-init failed: {status}");

    let built = target_dir.join(&target).join("init").join("soulbox-init");
    std::fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("copy {} to OUT_DIR: {e}", built.display()));
    emit_hash(&dest);
}

/// Passes a hash of the helper's bytes to the crate as SOULBOX_INIT_HASH.
/// It names the helper's copy in the state directory, so that builds with
/// different helpers never share one.
fn emit_hash(binary: &std::path::Path) {
    let bytes = std::fs::read(binary)
        .unwrap_or_else(|e| panic!("read {} to hash it: {e}", binary.display()));
    // 64-bit FNV-1a: a name for one build's bytes, not a security check.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!("cargo:rustc-env=SOULBOX_INIT_HASH={hash:016x}");
}

/// Compiles the default seccomp policy to OUT_DIR/default_seccomp.bpf and
/// sets `soulbox_precompiled_seccomp` for the library. System call numbers
/// come from this script's own architecture, so a cross build leaves the
/// policy to be compiled at run time.
fn precompile_seccomp(manifest_dir: &Path, out_dir: &Path) {
    println!("cargo:rustc-check-cfg=cfg(soulbox_precompiled_seccomp)");
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("src/seccomp.rs").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("src/seccomp").display()
    );
    if env::var("TARGET").ok() != env::var("HOST").ok() {
        return;
    }
    let program = match library::seccomp::SeccompPolicy::default().bpf_program() {
        Ok(program) => program,
        // Every create reports the error as well.
        Err(error::Error::InvalidArgument(message)) => {
            println!("cargo:warning=the default seccomp policy does not compile: {message}");
            return;
        }
    };
    let dest = out_dir.join("default_seccomp.bpf");
    std::fs::write(&dest, &program[..]).unwrap_or_else(|e| panic!("write {}: {e}", dest.display()));
    println!("cargo:rustc-cfg=soulbox_precompiled_seccomp");
}
