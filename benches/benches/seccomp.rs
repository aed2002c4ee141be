//! Criterion benches of the seccomp filter's fixed costs: compiling a
//! policy on the host (once per policy) and installing the program in a
//! process (once per sandbox, in its PID 1). The kernel runs a new filter
//! once per system call number while installing it, so the install cost
//! grows with the program's length times its path length.
//!
//! Installing needs no root: each forked child sets no_new_privs first and
//! times only its seccomp call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use soulbox_core::SeccompPolicy;

/// Forks a child that installs `program` and reports how long the
/// seccomp call took, and waits for it.
fn timed_install(program: &[u8]) -> Duration {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const u8,
    }
    let prog = SockFprog {
        len: libc::c_ushort::try_from(program.len() / 8).expect("at most 4096 instructions"),
        filter: program.as_ptr(),
    };

    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the child only reads the clock (vDSO) and makes raw system
    // calls (prctl, seccomp, write, _exit), which are async-signal-safe, so
    // forking from criterion's threads is sound. `prog` points at
    // `program`, which both processes keep alive.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let start = Instant::now();
        // SAFETY: see above; the kernel copies the filter before returning.
        let ret = unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const SockFprog,
            )
        };
        let nanos = if ret == 0 {
            start.elapsed().as_nanos() as u64
        } else {
            u64::MAX
        };
        // SAFETY: `nanos` is 8 readable bytes; _exit ends the child without
        // running the parent's destructors or atexit handlers.
        unsafe {
            libc::write(fds[1], (&nanos as *const u64).cast(), 8);
            libc::_exit(0);
        }
    }

    let mut nanos = 0u64;
    let mut status = 0;
    // SAFETY: `nanos` is 8 writable bytes, both descriptors came from pipe
    // above, and `pid` is this process's child.
    unsafe {
        libc::read(fds[0], (&mut nanos as *mut u64).cast(), 8);
        libc::close(fds[0]);
        libc::close(fds[1]);
        libc::waitpid(pid, &mut status, 0);
    }
    assert_ne!(nanos, u64::MAX, "the kernel rejected the filter");
    Duration::from_nanos(nanos)
}

fn seccomp(c: &mut Criterion) {
    let mut group = c.benchmark_group("seccomp");
    group.bench_function("compile_default_policy", |b| {
        // A change makes a policy with no compiled program yet.
        b.iter(|| {
            let policy = SeccompPolicy::default().allow(black_box("read"));
            policy.bpf_program().unwrap()
        })
    });
    let program = SeccompPolicy::default().bpf_program().unwrap();
    eprintln!("default program: {} instructions", program.len() / 8);
    group.bench_function("install_default_policy", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| timed_install(&program)).sum())
    });
    group.finish();
}

criterion_group!(benches, seccomp);
criterion_main!(benches);
