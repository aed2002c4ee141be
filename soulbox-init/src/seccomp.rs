//! The seccomp filter PID 1 installs before it serves commands; every
//! supervisor and command inherits it.
//!
//! The policy is the table [`RULES`]: system calls that reach kernel
//! surface a sandbox has no use for (keyrings, namespaces, mounts, module
//! loading, tracing other processes, io_uring and the like) fail with an
//! errno, never a kill, so programs that probe for them fall back cleanly.
//! Everything else is allowed.
//!
//! NOTE: this is a deny-list. An allow-list policy, closer to Docker's
//! default profile, is not built yet.

use crate::sys::{self, SockFilter};

/// `struct seccomp_data` offsets, from <linux/seccomp.h>. Arguments are
/// compared on their low 32 bits (little-endian), because the kernel
/// truncates ioctl requests and clone flags to 32 bits: garbage in the
/// upper half must not bypass a rule.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const fn data_arg_low(index: u32) -> u32 {
    16 + 8 * index
}

#[cfg(target_arch = "x86_64")]
/// AUDIT_ARCH_X86_64 from <linux/audit.h>.
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
/// AUDIT_ARCH_AARCH64 from <linux/audit.h>.
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Syscall numbers at or above this bit are x86-64's x32 ABI, a second
/// entry to the same kernel with its own numbers; no aarch64 syscall
/// reaches it.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every CLONE_NEW* flag, from <linux/sched.h>: NEWTIME, NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID and NEWNET.
const CLONE_NEW_MASK: u32 = 0x0000_0080
    | 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000;

/// ioctl requests that push bytes into a terminal's input queue (TIOCSTI)
/// or reach the console driver (TIOCLINUX), from <asm-generic/ioctls.h>.
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;

/// Action of the filter for one system call.
enum Rule {
    /// Fail every call with the errno.
    Deny(libc::c_long, i32),
    /// Fail the call when argument `arg` has any bit of `mask` set.
    DenyFlags(libc::c_long, u32, u32, i32),
    /// Fail the call when argument `arg` equals one of the values.
    DenyValues(libc::c_long, u32, &'static [u32], i32),
}

use libc::{ENOSYS, EPERM};
use Rule::{Deny, DenyFlags, DenyValues};

/// The policy, one row per system call.
#[rustfmt::skip]
const RULES: &[Rule] = &[
    // Terminal input injection, on any terminal the sandbox can open.
    DenyValues(libc::SYS_ioctl, 1, &[TIOCSTI, TIOCLINUX], EPERM),
    // New namespaces: nested user namespaces would hand sandbox code mount
    // and network privileges over a large kernel surface. clone3 passes its
    // flags in memory seccomp cannot read, so it reports ENOSYS and libc
    // falls back to clone, whose flags are checked here.
    DenyFlags(libc::SYS_clone, 0, CLONE_NEW_MASK, EPERM),
    DenyFlags(libc::SYS_unshare, 0, CLONE_NEW_MASK, EPERM),
    Deny(libc::SYS_clone3, ENOSYS),
    Deny(libc::SYS_setns, EPERM),
    // Mounts of any kind.
    Deny(libc::SYS_mount, EPERM),
    Deny(libc::SYS_umount2, EPERM),
    Deny(libc::SYS_pivot_root, EPERM),
    Deny(libc::SYS_open_tree, EPERM),
    Deny(libc::SYS_move_mount, EPERM),
    Deny(libc::SYS_fsopen, EPERM),
    Deny(libc::SYS_fsconfig, EPERM),
    Deny(libc::SYS_fsmount, EPERM),
    Deny(libc::SYS_fspick, EPERM),
    Deny(libc::SYS_mount_setattr, EPERM),
    // Kernel keyrings are not namespaced: they would reach the host's.
    Deny(libc::SYS_add_key, EPERM),
    Deny(libc::SYS_request_key, EPERM),
    Deny(libc::SYS_keyctl, EPERM),
    // Other processes' memory and kernel object comparison.
    Deny(libc::SYS_ptrace, EPERM),
    Deny(libc::SYS_process_vm_readv, EPERM),
    Deny(libc::SYS_process_vm_writev, EPERM),
    Deny(libc::SYS_kcmp, EPERM),
    // Large kernel surfaces with a history of exploits. Node and libuv
    // probe io_uring at start and fall back on an errno.
    Deny(libc::SYS_userfaultfd, EPERM),
    Deny(libc::SYS_io_uring_setup, EPERM),
    Deny(libc::SYS_io_uring_enter, EPERM),
    Deny(libc::SYS_io_uring_register, EPERM),
    Deny(libc::SYS_bpf, EPERM),
    Deny(libc::SYS_perf_event_open, EPERM),
    // Whole-machine operations.
    Deny(libc::SYS_kexec_load, EPERM),
    Deny(libc::SYS_kexec_file_load, EPERM),
    Deny(libc::SYS_init_module, EPERM),
    Deny(libc::SYS_finit_module, EPERM),
    Deny(libc::SYS_delete_module, EPERM),
    Deny(libc::SYS_reboot, EPERM),
    Deny(libc::SYS_swapon, EPERM),
    Deny(libc::SYS_swapoff, EPERM),
    Deny(libc::SYS_settimeofday, EPERM),
    Deny(libc::SYS_clock_settime, EPERM),
    Deny(libc::SYS_clock_adjtime, EPERM),
    Deny(libc::SYS_adjtimex, EPERM),
    Deny(libc::SYS_acct, EPERM),
    Deny(libc::SYS_quotactl, EPERM),
    Deny(libc::SYS_quotactl_fd, EPERM),
    Deny(libc::SYS_syslog, EPERM),
    // File handles bypass path-based confinement.
    Deny(libc::SYS_open_by_handle_at, EPERM),
    Deny(libc::SYS_name_to_handle_at, EPERM),
];

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// Classic BPF opcodes from <linux/filter.h>: BPF_LD|BPF_W|BPF_ABS,
// BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K, BPF_JMP|BPF_JSET|BPF_K and
// BPF_RET|BPF_K.
const LD_ABS: u16 = 0x20;
const JEQ: u16 = 0x15;
const JGE: u16 = 0x35;
const JSET: u16 = 0x45;
const RET: u16 = 0x06;

fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

fn errno(code: i32) -> u32 {
    SECCOMP_RET_ERRNO | code as u32
}

/// Compiles [`RULES`] into a BPF program. Each rule is a block that starts
/// with the syscall number in the accumulator and either returns or falls
/// through to the next block; a rule that inspects an argument reloads the
/// number before falling through.
fn compile() -> Vec<SockFilter> {
    let mut program = vec![
        // Syscalls of another architecture (32-bit int 0x80) and x32 fail.
        stmt(LD_ABS, DATA_ARCH),
        jump(JEQ, AUDIT_ARCH, 1, 0),
        stmt(RET, errno(EPERM)),
        stmt(LD_ABS, DATA_NR),
        jump(JGE, X32_SYSCALL_BIT, 0, 1),
        stmt(RET, errno(EPERM)),
    ];
    for rule in RULES {
        match *rule {
            Deny(nr, code) => {
                program.push(jump(JEQ, nr as u32, 0, 1));
                program.push(stmt(RET, errno(code)));
            }
            DenyFlags(nr, arg, mask, code) => {
                program.push(jump(JEQ, nr as u32, 0, 4));
                program.push(stmt(LD_ABS, data_arg_low(arg)));
                program.push(jump(JSET, mask, 0, 1));
                program.push(stmt(RET, errno(code)));
                program.push(stmt(RET, SECCOMP_RET_ALLOW));
            }
            DenyValues(nr, arg, values, code) => {
                // nr check, load, one JEQ per value, allow, deny.
                let skip = u8::try_from(values.len() + 3).expect("few values per rule");
                program.push(jump(JEQ, nr as u32, 0, skip));
                program.push(stmt(LD_ABS, data_arg_low(arg)));
                for (i, &value) in values.iter().enumerate() {
                    let to_deny = u8::try_from(values.len() - i).expect("few values per rule");
                    program.push(jump(JEQ, value, to_deny, 0));
                }
                program.push(stmt(RET, SECCOMP_RET_ALLOW));
                program.push(stmt(RET, errno(code)));
            }
        }
    }
    program.push(stmt(RET, SECCOMP_RET_ALLOW));
    program
}

/// Installs the filter on PID 1.
pub fn install() -> std::io::Result<()> {
    sys::install_seccomp_filter(&compile())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the BPF program on one syscall, as the kernel would.
    fn run(program: &[SockFilter], nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            pc += 1;
            match insn.code {
                LD_ABS => {
                    let k = insn.k as usize;
                    acc = u32::from_le_bytes([data[k], data[k + 1], data[k + 2], data[k + 3]]);
                }
                RET => return insn.k,
                code => {
                    let taken = match code {
                        JEQ => acc == insn.k,
                        JGE => acc >= insn.k,
                        JSET => acc & insn.k != 0,
                        other => panic!("unexpected opcode {other:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
            }
        }
    }

    #[test]
    fn policy_decisions() {
        let program = compile();
        let nr = |n: libc::c_long| n as u32;
        let cases: [(&str, u32, [u64; 6], u32); 10] = [
            ("read", nr(libc::SYS_read), [0; 6], SECCOMP_RET_ALLOW),
            (
                "TIOCSTI",
                nr(libc::SYS_ioctl),
                [0, 0x5412, 0, 0, 0, 0],
                errno(EPERM),
            ),
            (
                "TIOCSTI high bits",
                nr(libc::SYS_ioctl),
                [0, 0x1_0000_5412, 0, 0, 0, 0],
                errno(EPERM),
            ),
            (
                "TIOCLINUX",
                nr(libc::SYS_ioctl),
                [0, 0x541c, 0, 0, 0, 0],
                errno(EPERM),
            ),
            (
                "TCGETS",
                nr(libc::SYS_ioctl),
                [0, 0x5401, 0, 0, 0, 0],
                SECCOMP_RET_ALLOW,
            ),
            (
                "fork-like clone",
                nr(libc::SYS_clone),
                [0x01200011, 0, 0, 0, 0, 0],
                SECCOMP_RET_ALLOW,
            ),
            (
                "clone NEWUSER",
                nr(libc::SYS_clone),
                [0x1000_0000, 0, 0, 0, 0, 0],
                errno(EPERM),
            ),
            ("clone3", nr(libc::SYS_clone3), [0; 6], errno(ENOSYS)),
            ("keyctl", nr(libc::SYS_keyctl), [0; 6], errno(EPERM)),
            ("x32 read", X32_SYSCALL_BIT, [0; 6], errno(EPERM)),
        ];
        for (name, syscall, args, expected) in cases {
            assert_eq!(run(&program, syscall, args), expected, "{name}");
        }
    }

    #[test]
    fn every_rule_denies_its_syscall() {
        let program = compile();
        for rule in RULES {
            let (nr, args) = match *rule {
                Deny(nr, _) => (nr, [0u64; 6]),
                DenyFlags(nr, arg, mask, _) => {
                    let mut args = [0u64; 6];
                    args[arg as usize] = u64::from(mask);
                    (nr, args)
                }
                DenyValues(nr, arg, values, _) => {
                    let mut args = [0u64; 6];
                    args[arg as usize] = u64::from(values[0]);
                    (nr, args)
                }
            };
            let action = run(&program, nr as u32, args);
            assert_eq!(
                action & 0xffff_0000,
                SECCOMP_RET_ERRNO,
                "syscall {nr} is not denied"
            );
        }
    }
}
