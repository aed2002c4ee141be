//! Links the `soulbox` binary with libgcc's static unwinder, libgcc_eh.a,
//! in place of libgcc_s.so.1, which Rust's standard library otherwise
//! loads for unwinding on GNU targets. The constructor of libgcc_s reads
//! the CPU's features with CPUID instructions, and on a VM each of those
//! traps to the hypervisor (7.5 µs each on the benchmark host). Without
//! libgcc_s, `soulbox --version` took 0.89 ms there instead of 1.03 ms.
//! The whole archive is linked, so that the unwinder's symbols are defined
//! before the standard library requests libgcc_s, which `--as-needed` then
//! leaves out.

use std::env;

fn main() {
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // A static build already links libgcc_eh.a.
    let crt_static = features.split(',').any(|feature| feature == "crt-static");
    if target_os == "linux" && target_env == "gnu" && !crt_static {
        println!("cargo:rustc-link-lib=static:+whole-archive=gcc_eh");
    }
}
