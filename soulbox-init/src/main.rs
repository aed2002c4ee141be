//! The `soulbox-init` program: PID 1 of a sandbox, or with `--zygote` the
//! host's zygote. The code is in the library, which one-shot hosts also
//! link (see `soulbox_init::run_cloned`).

#![deny(unsafe_code)]
// The unit tests keep the test harness's own entry point.
#![cfg_attr(not(test), no_main)]

/// The C entry point, which glibc calls without Rust's runtime start-up.
/// That start-up costs PID 1 a dozen system calls on every sandbox create,
/// among them a read of /proc/self/maps to place a stack guard, and
/// nothing here needs it: panics abort, SIGPIPE is set in
/// `soulbox_init::run_executed`, and stdio is replaced with /dev/null. With
/// `--zygote` as its first argument the program serves as the host's
/// zygote (see `soulbox_init::zygote`) instead.
#[cfg(not(test))]
#[expect(unsafe_code, reason = "the C entry point needs an unmangled name")]
#[no_mangle]
extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: the C runtime passes `argc` valid, NUL-terminated strings in
    // `argv`, and index 1 is read only when `argc` counts it.
    let first = (argc > 1).then(|| unsafe { std::ffi::CStr::from_ptr(*argv.add(1)) });
    if first == Some(soulbox_init::zygote::ZYGOTE_ARG) {
        soulbox_init::zygote::serve()
    }
    soulbox_init::run_executed()
}
