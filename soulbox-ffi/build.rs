//! Gives libsoulbox.so the SONAME `libsoulbox.so.MAJOR`. A program linked
//! against it records that name in place of the library's path, so a newer
//! build installed under that name (see install.sh) takes its place
//! without relinking.
//!
//! NOTE: while the version is 0.x, the SONAME is `libsoulbox.so.0`
//! although a new minor version may change the C ABI.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // -soname is an option of the ELF linkers used on Linux, so other
    // targets get no SONAME.
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR")
        .expect("cargo sets CARGO_PKG_VERSION_MAJOR for build scripts");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsoulbox.so.{major}");
}
