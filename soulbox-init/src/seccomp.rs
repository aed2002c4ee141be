//! The seccomp filter PID 1 installs before it serves commands; every
//! supervisor and command inherits it.
//!
//! NOTE: this is a minimal deny-list that closes terminal injection and
//! the 32-bit and x32 entry points that would bypass it; the full
//! allow-list policy is not built yet.

use crate::sys::{self, SockFilter};

/// `struct seccomp_data` offsets, from <linux/seccomp.h>.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Low 32 bits of args[1] on a little-endian machine. ioctl request numbers
/// are compared on these alone, because the kernel's tty layer truncates
/// the request to 32 bits: garbage in the upper half must not bypass the
/// rule.
const DATA_ARG1_LOW: u32 = 24;

#[cfg(target_arch = "x86_64")]
mod arch {
    /// AUDIT_ARCH_X86_64 from <linux/audit.h>.
    pub const AUDIT_ARCH: u32 = 0xc000_003e;
    pub const NR_IOCTL: u32 = 16;
    /// Syscall numbers at or above this bit are the x32 ABI.
    pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
}

#[cfg(target_arch = "aarch64")]
mod arch {
    /// AUDIT_ARCH_AARCH64 from <linux/audit.h>.
    pub const AUDIT_ARCH: u32 = 0xc000_00b7;
    pub const NR_IOCTL: u32 = 29;
    /// aarch64 has no second ABI in the same architecture; no syscall
    /// number reaches this.
    pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
}

/// ioctl requests that push bytes into a terminal's input queue (TIOCSTI)
/// or reach the console driver (TIOCLINUX), from <asm-generic/ioctls.h>.
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// Classic BPF opcodes from <linux/filter.h>: class | size | mode, or
// class | op | source. BPF_LD and BPF_W are 0, BPF_ABS is 0x20, BPF_JMP is
// 0x05, BPF_JEQ 0x10, BPF_JGE 0x30, BPF_K 0, BPF_RET 0x06.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The program. Jump offsets count instructions to skip after the jump.
const PROGRAM: [SockFilter; 11] = [
    // 0: syscalls of another architecture (32-bit int 0x80) fail.
    stmt(BPF_LD_W_ABS, DATA_ARCH),
    jump(BPF_JEQ_K, arch::AUDIT_ARCH, 1, 0),
    stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
    // 3: x32 syscalls fail; everything but ioctl is allowed.
    stmt(BPF_LD_W_ABS, DATA_NR),
    jump(BPF_JGE_K, arch::X32_SYSCALL_BIT, 5, 0),
    jump(BPF_JEQ_K, arch::NR_IOCTL, 0, 3),
    // 6: ioctl requests that inject terminal input fail with EPERM.
    stmt(BPF_LD_W_ABS, DATA_ARG1_LOW),
    jump(BPF_JEQ_K, TIOCSTI, 2, 0),
    jump(BPF_JEQ_K, TIOCLINUX, 1, 0),
    stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
];

/// Installs the filter on PID 1.
pub fn install() -> std::io::Result<()> {
    sys::install_seccomp_filter(&PROGRAM)
}
