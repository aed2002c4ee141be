//! SoulBox's default seccomp policy, as one table.
//!
//! It is an allow-list close to Docker's default profile (moby/profiles,
//! `seccomp/default.json`), minus what sandbox root has no capability for
//! anyway, and with these differences:
//! - System calls that reach kernel surface a sandbox has no use for fail
//!   with EPERM, where Docker allows some of them under a capability. They
//!   are namespaces, mounts, keyrings, tracing other processes, io_uring,
//!   userfaultfd, BPF, perf, module loading, kexec, reboot, swap, clock
//!   setting, accounting, quotas, the kernel log and file handles. They
//!   fail with an errno and never kill, because programs probe for some of
//!   them (Node and libuv try io_uring at start) and must fall back.
//! - Calls the table does not name fail with ENOSYS, not EPERM, so that
//!   libc and runtimes treat them as missing from the kernel and fall back.
//! - `socket` is limited to the address families programs need here. The
//!   others, such as AF_VSOCK (which network namespaces do not isolate)
//!   and AF_ALG, fail with EAFNOSUPPORT, as if the kernel lacked them.

use libc::{EAFNOSUPPORT, ENOSYS, EPERM};

use std::sync::{Arc, OnceLock};

use super::{ArgCondition, SeccompAction, SeccompPolicy};

/// One row of the table.
enum Entry {
    /// Calls allowed whatever their arguments.
    Allow(&'static [&'static str]),
    /// Calls that fail with the errno.
    Deny(i32, &'static [&'static str]),
    /// A call allowed when argument `arg` equals one of the values.
    AllowValues(&'static str, u8, &'static [u32]),
    /// A call that fails with the errno when argument `arg` equals one of
    /// the values.
    DenyValues(&'static str, u8, &'static [u32], i32),
    /// A call that fails with the errno when argument `arg` has any bit of
    /// the mask set.
    DenyFlags(&'static str, u8, u32, i32),
}

use Entry::{Allow, AllowValues, Deny, DenyFlags, DenyValues};

/// Every CLONE_NEW* flag, from <linux/sched.h>: NEWTIME, NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID and NEWNET. In `clone`'s first argument
/// 0x80 is part of the exit signal (at most 64, so 0x80 is invalid there
/// anyway), and in `unshare`'s it is CLONE_NEWTIME.
const CLONE_NEW_FLAGS: u32 = 0x0000_0080
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

/// Address families `socket` accepts: local sockets, IPv4, IPv6, netlink
/// (glibc's getaddrinfo and `ip` use it) and packet sockets (which need
/// CAP_NET_RAW and see only the sandbox's own network namespace).
const SOCKET_FAMILIES: &[u32] = &[
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
    libc::AF_PACKET as u32,
];

/// `personality` values Docker's profile allows: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26 | PER_LINUX32, and 0xffffffff, which only queries.
const PERSONALITIES: &[u32] = &[0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// The default policy. Rows apply in order; a later row for the same call
/// replaces an earlier plain action.
#[rustfmt::skip]
const TABLE: &[Entry] = &[
    // Files and directories.
    Allow(&[
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "preadv2",
        "pwritev", "pwritev2", "lseek", "openat", "openat2", "close", "close_range", "dup",
        "dup3", "fcntl", "flock", "fsync", "fdatasync", "syncfs", "sync", "sync_file_range",
        "truncate", "ftruncate", "fallocate", "fadvise64", "readahead", "sendfile",
        "copy_file_range", "splice", "tee", "vmsplice", "cachestat", "getdents64", "getcwd",
        "chdir", "fchdir", "chroot", "mkdirat", "mknodat", "linkat", "symlinkat", "unlinkat",
        "renameat2", "readlinkat", "faccessat", "faccessat2", "fchmod", "fchmodat",
        "fchmodat2", "fchown", "fchownat", "utimensat", "umask", "newfstatat", "fstat",
        "statx", "statfs", "fstatfs", "memfd_create", "inotify_init1", "inotify_add_watch",
        "inotify_rm_watch",
    ]),
    // Extended attributes.
    Allow(&[
        "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr",
        "fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat",
        "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
    ]),
    // Memory.
    Allow(&[
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock",
        "mlock2", "munlock", "mlockall", "munlockall", "membarrier", "pkey_alloc", "pkey_free",
        "pkey_mprotect", "mseal", "map_shadow_stack", "remap_file_pages", "memfd_secret",
    ]),
    // Processes and threads. `clone` and `unshare` are allowed without
    // namespace flags (below); threads and fork use `clone`.
    Allow(&[
        "clone", "unshare", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
        "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex",
        "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "restart_syscall",
        "prctl", "capget", "capset", "getpid", "getppid", "gettid", "getpgid", "setpgid",
        "getsid", "setsid", "getpriority", "setpriority", "getrusage", "prlimit64", "times",
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_setparam", "sched_getscheduler", "sched_setscheduler",
        "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
        "sched_getattr", "sched_setattr", "ioprio_get", "ioprio_set", "getcpu", "pidfd_open",
        "pidfd_send_signal",
    ]),
    // User and group ids. Sandbox root can switch ids only within the
    // sandbox's users; `user` has no capability to switch at all.
    Allow(&[
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
        "setfsuid", "setfsgid",
    ]),
    // Signals.
    Allow(&[
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
        "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "kill",
        "tkill", "tgkill", "signalfd4",
    ]),
    // Clocks and timers (reading only; setting the clock is denied below).
    Allow(&[
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
        "getitimer", "setitimer", "timer_create", "timer_delete", "timer_gettime",
        "timer_settime", "timer_getoverrun", "timerfd_create", "timerfd_gettime",
        "timerfd_settime",
    ]),
    // Waiting for events.
    Allow(&[
        "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "ppoll", "pselect6",
        "eventfd2", "pipe2",
    ]),
    // System V and POSIX IPC, which the sandbox's IPC namespace isolates,
    // and the legacy asynchronous I/O calls (not io_uring).
    Allow(&[
        "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
        "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedreceive", "mq_notify", "mq_getsetattr", "io_setup", "io_destroy",
        "io_submit", "io_cancel", "io_getevents",
    ]),
    // Sockets; `socket` itself is limited to SOCKET_FAMILIES below.
    Allow(&[
        "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname",
        "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg",
        "sendmmsg", "recvmmsg", "shutdown",
    ]),
    // Terminals and devices; TIOCSTI and TIOCLINUX are denied below.
    Allow(&["ioctl"]),
    // System information, randomness, and sandboxing of one's own.
    Allow(&[
        "uname", "sysinfo", "getrandom", "seccomp", "landlock_create_ruleset",
        "landlock_add_rule", "landlock_restrict_self",
    ]),
    // x86-64's older forms of the calls above, which aarch64 lacks, and
    // its thread-pointer call.
    #[cfg(target_arch = "x86_64")]
    Allow(&[
        "open", "creat", "stat", "lstat", "access", "mkdir", "rmdir", "mknod", "link",
        "symlink", "unlink", "rename", "renameat", "readlink", "chmod", "chown", "lchown",
        "utime", "utimes", "futimesat", "getdents", "dup2", "pipe", "poll", "select",
        "epoll_create", "epoll_wait", "eventfd", "signalfd", "inotify_init", "fork", "vfork",
        "pause", "alarm", "time", "getpgrp", "getrlimit", "setrlimit", "arch_prctl",
        "io_pgetevents",
    ]),

    // Terminal input injection, on any terminal the sandbox can open. The
    // request is compared on its low 32 bits, which is all the kernel reads.
    DenyValues("ioctl", 1, &[TIOCSTI, TIOCLINUX], EPERM),
    // New namespaces: a nested user namespace would give sandbox code mount
    // and network privileges over a large kernel surface.
    DenyFlags("clone", 0, CLONE_NEW_FLAGS, EPERM),
    DenyFlags("unshare", 0, CLONE_NEW_FLAGS, EPERM),
    Deny(EPERM, &["setns"]),
    // clone3 passes its flags in memory that seccomp cannot read. ENOSYS
    // makes libc fall back to clone, whose flags are checked above.
    Deny(ENOSYS, &["clone3"]),
    // Mounts of any kind.
    Deny(EPERM, &[
        "mount", "umount2", "pivot_root", "open_tree", "open_tree_attr", "move_mount",
        "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    ]),
    // Kernel keyrings are not namespaced: they would reach the host's.
    Deny(EPERM, &["add_key", "request_key", "keyctl"]),
    // Other processes' memory, descriptors and kernel objects.
    Deny(EPERM, &[
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        "process_madvise",
    ]),
    // Large kernel surfaces with a history of exploits.
    Deny(EPERM, &[
        "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf",
        "perf_event_open",
    ]),
    // Whole-machine operations.
    Deny(EPERM, &[
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "reboot", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime",
        "adjtimex", "acct", "quotactl", "quotactl_fd", "syslog",
    ]),
    // File handles bypass path-based confinement.
    Deny(EPERM, &["open_by_handle_at", "name_to_handle_at"]),
    // Only the address families in SOCKET_FAMILIES.
    AllowValues("socket", 0, SOCKET_FAMILIES),
    Deny(EAFNOSUPPORT, &["socket"]),
    // Execution domains other than Linux's are poorly tested kernel code.
    AllowValues("personality", 0, PERSONALITIES),
    Deny(EPERM, &["personality"]),
];

/// Returns the default policy's program as the build script compiled it
/// from [`TABLE`], or an empty cell, which the first use fills, where the
/// build compiled for another architecture than its own.
pub(super) fn precompiled() -> OnceLock<Result<Arc<[u8]>, String>> {
    #[cfg(soulbox_precompiled_seccomp)]
    {
        const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_seccomp.bpf"));
        OnceLock::from(Ok(Arc::from(PROGRAM)))
    }
    #[cfg(not(soulbox_precompiled_seccomp))]
    OnceLock::new()
}

/// Builds the default policy from [`TABLE`].
pub(super) fn build() -> SeccompPolicy {
    TABLE.iter().fold(SeccompPolicy::minimal(), add_entry)
}

fn add_entry(policy: SeccompPolicy, entry: &Entry) -> SeccompPolicy {
    match *entry {
        Allow(names) => policy.allow_all(names.iter().copied()),
        Deny(errno, names) => names.iter().fold(policy, |p, name| p.deny(name, errno)),
        AllowValues(name, arg, values) => values.iter().fold(policy, |p, &value| {
            p.allow_if(name, ArgCondition::equals(arg, value))
        }),
        DenyValues(name, arg, values, errno) => values.iter().fold(policy, |p, &value| {
            p.deny_if(name, ArgCondition::equals(arg, value), errno)
        }),
        DenyFlags(name, arg, mask, errno) => policy.rule_if(
            name,
            ArgCondition::any_bit(arg, mask),
            SeccompAction::Errno(errno),
        ),
    }
}
