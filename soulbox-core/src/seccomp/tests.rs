//! Unit tests of policy building and compilation. The compiled programs run
//! in [`run`], a small interpreter of the classic BPF instructions that
//! `compile.rs` emits, fed `struct seccomp_data` as the kernel builds it,
//! and are checked against [`expected_action`], a model of the policy's
//! semantics. End-to-end tests with real sandboxes are in
//! `tests/security.rs` and `tests/seccomp.rs`.

use super::*;

const ALLOW: u32 = 0x7fff_0000;
const KILL_PROCESS: u32 = 0x8000_0000;

fn errno(code: i32) -> u32 {
    0x0005_0000 | code as u32
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
/// AUDIT_ARCH_I386, the architecture of x86-64's 32-bit entry point.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

fn nr(name: &str) -> u32 {
    let (_, number) = syscalls::lookup(name).unwrap_or_else(|| panic!("unknown {name}"));
    number as u32
}

/// Runs a wire-format program on one system call and returns its action.
fn run(program: &[u8], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    run_counted(program, arch, nr, args).0
}

/// Runs a wire-format program on one system call and returns its action
/// and the number of instructions it executed.
fn run_counted(program: &[u8], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, arg) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
    }
    let mut acc = 0u32;
    let mut pc = 0usize;
    let mut executed = 0;
    loop {
        // Decoded as it runs, because the model tests run large programs
        // hundreds of thousands of times.
        let raw = program
            .get(8 * pc..8 * pc + 8)
            .unwrap_or_else(|| panic!("ran off the program at {pc}"));
        let code = u16::from_le_bytes([raw[0], raw[1]]);
        let (jt, jf) = (raw[2], raw[3]);
        let k = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        pc += 1;
        executed += 1;
        let jump = |taken: bool| usize::from(if taken { jt } else { jf });
        match code {
            0x20 => {
                let at = k as usize;
                acc = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            }
            0x54 => acc &= k,
            0x05 => pc += k as usize,
            0x15 => pc += jump(acc == k),
            0x25 => pc += jump(acc > k),
            0x35 => pc += jump(acc >= k),
            0x45 => pc += jump(acc & k != 0),
            0x06 => return (k, executed),
            other => panic!("unexpected opcode {other:#x} at {}", pc - 1),
        }
    }
}

fn program(policy: &SeccompPolicy) -> Arc<[u8]> {
    policy
        .program()
        .unwrap_or_else(|e| panic!("policy did not compile: {e}"))
}

fn call(program: &[u8], name: &str, args: [u64; 6]) -> u32 {
    run(program, AUDIT_ARCH, nr(name), args)
}

fn args0(first: u64) -> [u64; 6] {
    [first, 0, 0, 0, 0, 0]
}

fn args1(second: u64) -> [u64; 6] {
    [0, second, 0, 0, 0, 0]
}

#[test]
fn default_policy_builds() {
    let policy = SeccompPolicy::default();
    let rules = policy.rules().expect("the default policy has rules");
    assert!(rules.errors.is_empty(), "errors: {:?}", rules.errors);
    let program = program(&policy);
    let instructions = program.len() / soulbox_proto::SOCK_FILTER_LEN;
    assert!(
        instructions <= compile::MAX_INSTRUCTIONS,
        "{instructions} instructions"
    );
}

#[test]
fn precompiled_default_matches_compile() {
    let cell = default_policy::precompiled();
    let precompiled = cell
        .get()
        .expect("the build script compiled the default policy")
        .clone()
        .expect("the precompiled default program is a program");
    assert!(program(&SeccompPolicy::default()) == precompiled);
    // A policy built from the table, compiled here.
    let compiled = program(&default_policy::build());
    assert!(!compiled.is_empty());
    assert!(
        precompiled == compiled,
        "the precompiled default program ({} bytes) differs from the one compiled at run time \
         ({} bytes)",
        precompiled.len(),
        compiled.len()
    );
}

#[test]
fn default_policy_equals_its_table() {
    let table = default_policy::build();
    assert!(SeccompPolicy::default() == table);
    assert!(table == SeccompPolicy::default());
    assert_eq!(
        format!("{:?}", SeccompPolicy::default()),
        format!("{table:?}")
    );
    let changed = SeccompPolicy::default().deny("mkdir", libc::EACCES);
    assert!(changed != SeccompPolicy::default());
    assert_eq!(
        changed.action_of("mkdir"),
        Some(SeccompAction::Errno(libc::EACCES))
    );
    assert_eq!(changed.action_of("read"), Some(SeccompAction::Allow));
}

#[test]
fn default_policy_decisions() {
    let program = program(&SeccompPolicy::default());
    let cases: &[(&str, &str, [u64; 6], u32)] = &[
        ("read", "read", [0; 6], ALLOW),
        ("TIOCSTI", "ioctl", args1(0x5412), errno(libc::EPERM)),
        (
            "TIOCSTI high bits",
            "ioctl",
            args1(0x1_0000_5412),
            errno(libc::EPERM),
        ),
        (
            "TIOCSTI garbage high bits",
            "ioctl",
            args1(0xdead_beef_0000_5412),
            errno(libc::EPERM),
        ),
        ("TIOCLINUX", "ioctl", args1(0x541c), errno(libc::EPERM)),
        ("TCGETS", "ioctl", args1(0x5401), ALLOW),
        ("fork-like clone", "clone", args0(0x0120_0011), ALLOW),
        ("thread clone", "clone", args0(0x003d_0f00), ALLOW),
        (
            "clone NEWUSER",
            "clone",
            args0(0x1000_0000),
            errno(libc::EPERM),
        ),
        (
            "clone NEWNET high bits",
            "clone",
            args0(0xffff_0000_4000_0011),
            errno(libc::EPERM),
        ),
        ("unshare CLONE_FS", "unshare", args0(0x200), ALLOW),
        (
            "unshare NEWNS",
            "unshare",
            args0(0x0002_0000),
            errno(libc::EPERM),
        ),
        (
            "unshare NEWTIME",
            "unshare",
            args0(0x80),
            errno(libc::EPERM),
        ),
        ("clone3", "clone3", [0; 6], errno(libc::ENOSYS)),
        ("setns", "setns", [0; 6], errno(libc::EPERM)),
        ("keyctl", "keyctl", [0; 6], errno(libc::EPERM)),
        (
            "io_uring_setup",
            "io_uring_setup",
            [0; 6],
            errno(libc::EPERM),
        ),
        ("socket AF_INET", "socket", args0(2), ALLOW),
        ("socket AF_UNIX", "socket", args0(1), ALLOW),
        ("socket AF_NETLINK", "socket", args0(16), ALLOW),
        (
            "socket AF_ALG",
            "socket",
            args0(38),
            errno(libc::EAFNOSUPPORT),
        ),
        (
            "socket AF_VSOCK",
            "socket",
            args0(40),
            errno(libc::EAFNOSUPPORT),
        ),
        (
            "socket AF_VSOCK high bits",
            "socket",
            args0(0x1_0000_0028),
            errno(libc::EAFNOSUPPORT),
        ),
        (
            "personality query",
            "personality",
            args0(0xffff_ffff),
            ALLOW,
        ),
        (
            "personality ADDR_NO_RANDOMIZE",
            "personality",
            args0(0x0004_0000),
            errno(libc::EPERM),
        ),
        (
            "lookup_dcookie",
            "lookup_dcookie",
            [0; 6],
            errno(libc::ENOSYS),
        ),
        ("sethostname", "sethostname", [0; 6], errno(libc::ENOSYS)),
    ];
    for (label, name, args, expected) in cases {
        assert_eq!(
            call(&program, name, *args),
            *expected,
            "{label}: action {:#x}",
            call(&program, name, *args)
        );
    }
}

#[test]
fn default_policy_closes_other_entry_points() {
    let program = program(&SeccompPolicy::default());
    // x32 system calls carry x86-64's audit arch and a number with bit 30
    // set, which no rule names.
    let x32_read = 0x4000_0000;
    assert_eq!(
        run(&program, AUDIT_ARCH, x32_read, [0; 6]),
        errno(libc::ENOSYS)
    );
    assert_eq!(
        run(&program, AUDIT_ARCH_I386, nr("read"), [0; 6]),
        KILL_PROCESS
    );
    assert_eq!(run(&program, AUDIT_ARCH, 9999, [0; 6]), errno(libc::ENOSYS));
}

/// Every system call that the default policy denies because attacks on
/// sandboxes have used it, with the errno the policy returns.
const ATTACK_SURFACE: &[(&str, i32)] = &[
    ("unshare", libc::EPERM),
    ("setns", libc::EPERM),
    ("clone3", libc::ENOSYS),
    ("mount", libc::EPERM),
    ("umount2", libc::EPERM),
    ("pivot_root", libc::EPERM),
    ("open_tree", libc::EPERM),
    ("move_mount", libc::EPERM),
    ("fsopen", libc::EPERM),
    ("fsconfig", libc::EPERM),
    ("fsmount", libc::EPERM),
    ("fspick", libc::EPERM),
    ("mount_setattr", libc::EPERM),
    ("add_key", libc::EPERM),
    ("request_key", libc::EPERM),
    ("keyctl", libc::EPERM),
    ("ptrace", libc::EPERM),
    ("process_vm_readv", libc::EPERM),
    ("process_vm_writev", libc::EPERM),
    ("kcmp", libc::EPERM),
    ("userfaultfd", libc::EPERM),
    ("io_uring_setup", libc::EPERM),
    ("io_uring_enter", libc::EPERM),
    ("io_uring_register", libc::EPERM),
    ("bpf", libc::EPERM),
    ("perf_event_open", libc::EPERM),
    ("kexec_load", libc::EPERM),
    ("kexec_file_load", libc::EPERM),
    ("init_module", libc::EPERM),
    ("finit_module", libc::EPERM),
    ("delete_module", libc::EPERM),
    ("reboot", libc::EPERM),
    ("swapon", libc::EPERM),
    ("swapoff", libc::EPERM),
    ("settimeofday", libc::EPERM),
    ("clock_settime", libc::EPERM),
    ("clock_adjtime", libc::EPERM),
    ("adjtimex", libc::EPERM),
    ("acct", libc::EPERM),
    ("quotactl", libc::EPERM),
    ("quotactl_fd", libc::EPERM),
    ("syslog", libc::EPERM),
    ("open_by_handle_at", libc::EPERM),
    ("name_to_handle_at", libc::EPERM),
];

#[test]
fn attack_surface_denied() {
    let program = program(&SeccompPolicy::default());
    for &(name, code) in ATTACK_SURFACE {
        // unshare is allowed without namespace flags, so test it with one.
        let args = if name == "unshare" {
            args0(0x1000_0000)
        } else {
            [0; 6]
        };
        assert_eq!(call(&program, name, args), errno(code), "{name}");
    }
}

/// Returns the action `policy` gives a call without argument rules.
fn expected_plain(policy: &SeccompPolicy, number: u32) -> u32 {
    let rules = policy.rules().expect("rules");
    let action = rules
        .syscalls
        .get(&i64::from(number))
        .and_then(|s| s.action)
        .unwrap_or(rules.default_action);
    match action {
        SeccompAction::Allow => ALLOW,
        SeccompAction::Errno(code) => errno(code),
        SeccompAction::KillProcess => KILL_PROCESS,
    }
}

/// Numbers of every call in the table, the gaps between them, x32's and
/// the extremes.
fn numbers_to_check() -> impl Iterator<Item = u32> {
    (0..1100).chain([0x4000_0000, 0x4000_0001, 0x7fff_ffff, 0xffff_fffe, u32::MAX])
}

#[test]
fn program_matches_plain_actions() {
    let policy = SeccompPolicy::default();
    let program = program(&policy);
    for number in numbers_to_check() {
        // Zero arguments match no argument rule of the default policy
        // except personality's PER_LINUX, which is allowed.
        let expected = if number == nr("personality") {
            ALLOW
        } else {
            expected_plain(&policy, number)
        };
        let actual = run(&program, AUDIT_ARCH, number, [0; 6]);
        assert_eq!(actual, expected, "number {number}: {actual:#x}");
    }
}

#[test]
fn search_spans_long_jumps() {
    // Alternating actions make one range per call, so the search's lower
    // halves exceed the 255 instructions a conditional jump can skip.
    let mut known: Vec<(&str, i64)> = syscalls::all().collect();
    known.sort_by_key(|&(_, number)| number);
    let policy =
        known
            .iter()
            .enumerate()
            .fold(SeccompPolicy::minimal(), |policy, (i, &(name, _))| {
                if SOULBOX_SYSCALLS.contains(&name) {
                    policy
                } else if i % 2 == 0 {
                    policy.deny(name, libc::EPERM)
                } else {
                    policy.rule(name, SeccompAction::KillProcess)
                }
            });
    let program = program(&policy);
    let long_jumps = program.chunks_exact(8).filter(|raw| raw[0] == 0x05).count();
    assert!(
        long_jumps > 0,
        "no JA in {} instructions",
        program.len() / 8
    );
    for number in numbers_to_check() {
        let actual = run(&program, AUDIT_ARCH, number, [0; 6]);
        assert_eq!(actual, expected_plain(&policy, number), "number {number}");
    }
}

#[test]
fn caller_adds_deny_rule() {
    let default = SeccompPolicy::default();
    let policy = default.clone().deny("mkdir", libc::EACCES);
    assert_eq!(
        policy.action_of("mkdir"),
        Some(SeccompAction::Errno(libc::EACCES))
    );
    assert_eq!(default.action_of("mkdir"), Some(SeccompAction::Allow));
    let program = program(&policy);
    assert_eq!(call(&program, "mkdir", [0; 6]), errno(libc::EACCES));
    assert_eq!(call(&program, "mkdirat", [0; 6]), ALLOW);
    assert_eq!(call(&program, "keyctl", [0; 6]), errno(libc::EPERM));
}

#[test]
fn kill_as_default_action() {
    let policy = SeccompPolicy::default().default_action(SeccompAction::KillProcess);
    let program = program(&policy);
    assert_eq!(call(&program, "lookup_dcookie", [0; 6]), KILL_PROCESS);
    assert_eq!(run(&program, AUDIT_ARCH, 0x4000_0000, [0; 6]), KILL_PROCESS);
    // Explicit denials keep their errno, so runtimes that probe still run.
    assert_eq!(call(&program, "io_uring_setup", [0; 6]), errno(libc::EPERM));
    assert_eq!(call(&program, "clone3", [0; 6]), errno(libc::ENOSYS));
    assert_eq!(call(&program, "read", [0; 6]), ALLOW);
}

#[test]
fn kill_rule_for_one_call() {
    let policy = SeccompPolicy::default().rule("ptrace", SeccompAction::KillProcess);
    let program = program(&policy);
    assert_eq!(call(&program, "ptrace", [0; 6]), KILL_PROCESS);
    assert_eq!(call(&program, "kcmp", [0; 6]), errno(libc::EPERM));
}

#[test]
fn minimal_policy_allows_only_listed() {
    let policy = SeccompPolicy::minimal().allow("mkdir");
    let program = program(&policy);
    assert_eq!(call(&program, "mkdir", [0; 6]), ALLOW);
    assert_eq!(call(&program, "mkdirat", [0; 6]), errno(libc::ENOSYS));
    assert_eq!(call(&program, "socket", args0(2)), errno(libc::ENOSYS));
    assert_eq!(call(&program, "clone3", [0; 6]), errno(libc::ENOSYS));
    for name in SOULBOX_SYSCALLS {
        assert_eq!(call(&program, name, [0; 6]), ALLOW, "{name}");
    }

    let minimal = program_of(SeccompPolicy::minimal());
    assert_eq!(call(&minimal, "mkdir", [0; 6]), errno(libc::ENOSYS));
}

#[test]
fn soulbox_syscalls_required() {
    for policy in [
        SeccompPolicy::default().deny("wait4", libc::EPERM),
        SeccompPolicy::default().remove("wait4"),
        SeccompPolicy::default().rule("wait4", SeccompAction::KillProcess),
    ] {
        match policy.validate() {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("must allow wait4,"), "{message}");
                assert!(message.contains("minimal()"), "{message}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    let default = SeccompPolicy::default();
    for name in SOULBOX_SYSCALLS {
        assert_eq!(
            default.action_of(name),
            Some(SeccompAction::Allow),
            "{name}"
        );
    }
}

fn program_of(policy: SeccompPolicy) -> Arc<[u8]> {
    program(&policy)
}

#[test]
fn argument_rules_take_precedence() {
    let policy = SeccompPolicy::minimal()
        .allow("fcntl")
        .deny_if("fcntl", ArgCondition::equals(1, 1030), libc::EACCES)
        .allow_if("fcntl", ArgCondition::equals(1, 1030))
        .rule_if(
            "fcntl",
            ArgCondition::masked_equals(1, 0xff00, 0x0400),
            SeccompAction::Errno(libc::EBUSY),
        )
        .deny("flock", libc::EPERM)
        .allow_if("flock", ArgCondition::any_bit(1, 0b0110))
        .rule_if(
            "flock",
            ArgCondition::equals(1, 8),
            SeccompAction::KillProcess,
        )
        .deny_if("flock", ArgCondition::equals(1, 8), libc::EBADF);
    let program = program(&policy);
    // 1030 matches all three fcntl rules: the lowest errno wins over the
    // other errno and over allowing.
    assert_eq!(call(&program, "fcntl", args1(1030)), errno(libc::EACCES));
    assert_eq!(call(&program, "fcntl", args1(0x0401)), errno(libc::EBUSY));
    assert_eq!(call(&program, "fcntl", args1(1)), ALLOW);
    assert_eq!(call(&program, "flock", args1(2)), ALLOW);
    assert_eq!(call(&program, "flock", args1(4)), ALLOW);
    assert_eq!(call(&program, "flock", args1(1)), errno(libc::EPERM));
    assert_eq!(call(&program, "flock", args1(8)), KILL_PROCESS);
}

/// Returns the action the policy's semantics give a call: the matching
/// argument rule of highest precedence (kill, then the lowest errno, then
/// allow), else the call's plain action, else the default action. This is
/// a model written apart from the compiler, to check its programs against.
fn expected_action(policy: &SeccompPolicy, number: u32, args: [u64; 6]) -> u32 {
    let rules = policy.rules().expect("rules");
    let Some(syscall) = rules.syscalls.get(&i64::from(number)) else {
        return action_code(rules.default_action);
    };
    let matching: Vec<SeccompAction> = syscall
        .conditional
        .iter()
        .filter(|(condition, _)| condition_matches(condition, args))
        .map(|(_, action)| *action)
        .collect();
    let lowest_errno = matching
        .iter()
        .filter_map(|action| match action {
            SeccompAction::Errno(code) => Some(*code),
            _ => None,
        })
        .min();
    if matching.contains(&SeccompAction::KillProcess) {
        KILL_PROCESS
    } else if let Some(code) = lowest_errno {
        errno(code)
    } else if matching.contains(&SeccompAction::Allow) {
        ALLOW
    } else {
        action_code(syscall.action.unwrap_or(rules.default_action))
    }
}

fn condition_matches(condition: &ArgCondition, args: [u64; 6]) -> bool {
    // The kernel's int arguments are the low 32 bits.
    let low = args[usize::from(condition.arg)] as u32;
    match condition.test {
        ArgTest::Equals(value) => low == value,
        ArgTest::AnyBit(mask) => low & mask != 0,
        ArgTest::MaskedEquals { mask, value } => low & mask == value & mask,
    }
}

fn action_code(action: SeccompAction) -> u32 {
    match action {
        SeccompAction::Allow => ALLOW,
        SeccompAction::Errno(code) => errno(code),
        SeccompAction::KillProcess => KILL_PROCESS,
    }
}

/// Returns argument lists that match, or nearly match, each argument rule
/// of the policy (at most `per_call` rules of each system call), plus all
/// zeros and all ones, with and without bits above the low 32.
fn argument_probes(policy: &SeccompPolicy, per_call: usize) -> Vec<[u64; 6]> {
    let rules = policy.rules().expect("rules");
    let mut values = std::collections::BTreeSet::new();
    for syscall in rules.syscalls.values() {
        for (condition, _) in syscall.conditional.iter().take(per_call) {
            let arg = usize::from(condition.arg);
            let candidates = match condition.test {
                ArgTest::Equals(value) => vec![value, value ^ 1],
                ArgTest::AnyBit(mask) => vec![mask, mask & mask.wrapping_neg(), !mask],
                ArgTest::MaskedEquals { mask, value } => {
                    vec![value & mask, (value & mask) | !mask, value ^ mask]
                }
            };
            for value in candidates {
                values.insert((arg, u64::from(value)));
                values.insert((arg, u64::from(value) | 0xdead_beef_0000_0000));
            }
        }
    }
    let mut probes = vec![[0; 6], [u64::MAX; 6], [0xffff_ffff; 6]];
    for (arg, value) in values {
        let mut args = [0; 6];
        args[arg] = value;
        probes.push(args);
    }
    probes
}

/// Checks the program of `policy` against [`expected_action`] for every
/// number of [`numbers_to_check`] and every probe of [`argument_probes`].
fn assert_matches_model(policy: &SeccompPolicy, per_call: usize) {
    let program = program(policy);
    let probes = argument_probes(policy, per_call);
    for number in numbers_to_check() {
        for args in &probes {
            let actual = run(&program, AUDIT_ARCH, number, *args);
            let expected = expected_action(policy, number, *args);
            assert_eq!(
                actual, expected,
                "number {number}, arguments {args:x?}: {actual:#x}, expected {expected:#x}"
            );
        }
    }
}

/// Returns the maximum number of instructions the search may execute
/// before a leaf. The architecture check and the load of the number take
/// 4. Each level of the search takes a comparison, plus a JA where it
/// skips a long lower half, and there are at most 2n + 1 ranges for the
/// n calls that the policy names.
fn search_bound(policy: &SeccompPolicy) -> usize {
    let named = policy.rules().expect("rules").syscalls.len();
    let ranges = 2 * named + 1;
    4 + 2 * ranges.next_power_of_two().trailing_zeros() as usize
}

/// Checks that every call without argument rules executes the search and
/// one return. A call with argument rules may execute its own checks
/// after the search as well: at most three instructions per rule (load,
/// test, return) and its plain return.
fn assert_short_paths(policy: &SeccompPolicy) {
    let program = program(policy);
    let rules = policy.rules().expect("rules");
    let bound = search_bound(policy);
    for number in numbers_to_check() {
        let own_rules = rules
            .syscalls
            .get(&i64::from(number))
            .map_or(0, |syscall| syscall.conditional.len());
        let (_, executed) = run_counted(&program, AUDIT_ARCH, number, [0; 6]);
        assert!(
            executed <= bound + 3 * own_rules + 1,
            "number {number} with {own_rules} argument rules executed {executed} instructions, \
             the search takes at most {bound}"
        );
    }
}

#[test]
fn default_policy_matches_model() {
    let policy = SeccompPolicy::default();
    assert_matches_model(&policy, usize::MAX);
    assert_short_paths(&policy);
}

#[test]
fn argument_rules_stay_with_their_call() {
    // Neighbouring numbers with rules on the same argument values: a call
    // that reached another call's checks, or skipped its own, would get
    // another call's action.
    let policy = SeccompPolicy::minimal()
        .allow("getpgid")
        .deny_if("getpgid", ArgCondition::equals(0, 7777), libc::EBUSY)
        .deny_if("getpgid", ArgCondition::equals(0, 7777), libc::EACCES)
        .rule_if(
            "getpgid",
            ArgCondition::equals(0, 9999),
            SeccompAction::KillProcess,
        )
        .deny_if("getpgid", ArgCondition::equals(0, 9999), libc::EPERM)
        .allow("setfsuid")
        .deny("setfsgid", libc::EPERM)
        .allow_if("setfsgid", ArgCondition::masked_equals(0, 0xffff_0000, 0))
        .deny_if("setfsgid", ArgCondition::equals(0, 5555), libc::ENOTTY)
        .allow_if("getsid", ArgCondition::any_bit(1, 0x30))
        .rule_if(
            "getsid",
            ArgCondition::equals(0, 7777),
            SeccompAction::KillProcess,
        )
        .allow("getresgid");
    let program = program(&policy);
    let cases: &[(&str, [u64; 6], u32)] = &[
        ("getpgid", args0(7777), errno(libc::EACCES)),
        ("getpgid", args0(0x1_0000_1e61), errno(libc::EACCES)),
        ("getpgid", args0(9999), KILL_PROCESS),
        ("getpgid", args0(5555), ALLOW),
        ("getpgid", args0(0), ALLOW),
        ("setfsuid", args0(7777), ALLOW),
        ("setfsuid", args0(9999), ALLOW),
        ("setfsgid", args0(5555), errno(libc::ENOTTY)),
        ("setfsgid", args0(7777), ALLOW),
        ("setfsgid", args0(0x1_0000), errno(libc::EPERM)),
        ("getsid", args0(7777), KILL_PROCESS),
        ("getsid", args0(9999), errno(libc::ENOSYS)),
        ("getsid", args1(0x10), ALLOW),
        ("getsid", args1(0x40), errno(libc::ENOSYS)),
        ("getresgid", args0(7777), ALLOW),
        ("getresgid", args0(9999), ALLOW),
    ];
    for (name, args, expected) in cases {
        let actual = call(&program, name, *args);
        assert_eq!(actual, *expected, "{name} {args:x?}: {actual:#x}");
    }
    assert_matches_model(&policy, usize::MAX);
    assert_short_paths(&policy);
}

#[test]
fn large_argument_sections_compile() {
    // Rules on calls spread over the table, two of them with hundreds of
    // rules, so the search jumps over long leaves with JA.
    let policy = (0..600u32).fold(SeccompPolicy::default(), |policy, value| {
        policy
            .deny_if(
                "ioctl",
                ArgCondition::equals(1, 0x9000 + value),
                libc::EPERM,
            )
            .allow_if("fchmod", ArgCondition::equals(1, value))
            .deny_if(
                "read",
                ArgCondition::equals(2, 0x10_0000 + value),
                libc::EIO,
            )
    });
    let policy = policy
        .rule_if(
            "fchmod",
            ArgCondition::masked_equals(1, 0o7000, 0o4000),
            SeccompAction::KillProcess,
        )
        .deny_if("fchmod", ArgCondition::any_bit(1, 0o2000), libc::EPERM);
    let program = program(&policy);
    let instructions = program.len() / soulbox_proto::SOCK_FILTER_LEN;
    assert!(instructions > 3000, "{instructions} instructions");
    let long_jumps = program.chunks_exact(8).filter(|raw| raw[0] == 0x05).count();
    assert!(long_jumps > 0, "no JA in {instructions} instructions");

    let cases: &[(&str, [u64; 6], u32)] = &[
        ("ioctl", args1(0x9000), errno(libc::EPERM)),
        ("ioctl", args1(0x9000 + 599), errno(libc::EPERM)),
        ("ioctl", args1(0x9000 + 600), ALLOW),
        ("ioctl", args1(0x5412), errno(libc::EPERM)),
        ("read", [0, 0, 0x10_0000 + 300, 0, 0, 0], errno(libc::EIO)),
        ("read", [0, 0, 0x10_0000 + 600, 0, 0, 0], ALLOW),
        ("read", args1(0x9000), ALLOW),
        ("fchmod", args1(0o4755), KILL_PROCESS),
        ("fchmod", args1(0o2000), errno(libc::EPERM)),
        ("fchmod", args1(0o600), ALLOW),
        ("fchmod", args1(0x9000), ALLOW),
        ("write", args1(0o4755), ALLOW),
        ("mkdir", [0x9000, 0x9000, 0x10_0000, 0, 0, 0], ALLOW),
        ("keyctl", args1(0x9000), errno(libc::EPERM)),
    ];
    for (name, args, expected) in cases {
        let actual = call(&program, name, *args);
        assert_eq!(actual, *expected, "{name} {args:x?}: {actual:#x}");
    }
    assert_matches_model(&policy, 64);
    assert_short_paths(&policy);
}

#[test]
fn remove_returns_call_to_default() {
    let policy = SeccompPolicy::default().remove("clone").allow("clone");
    let program = program(&policy);
    assert_eq!(call(&program, "clone", args0(0x1000_0011)), ALLOW);
    let without_flock = program_of(SeccompPolicy::default().remove("flock"));
    assert_eq!(call(&without_flock, "flock", [0; 6]), errno(libc::ENOSYS));
}

#[test]
fn invalid_input_reported() {
    let cases = [
        (SeccompPolicy::default().allow("mkdirr"), "\"mkdirr\""),
        (SeccompPolicy::default().deny("mkdir", 0), "errno 0"),
        (SeccompPolicy::default().deny("mkdir", 5000), "errno 5000"),
        (
            SeccompPolicy::default().deny_if("ioctl", ArgCondition::equals(6, 1), libc::EPERM),
            "argument index 6",
        ),
        (
            SeccompPolicy::default().deny_if("ioctl", ArgCondition::any_bit(1, 0), libc::EPERM),
            "mask 0",
        ),
        (
            SeccompPolicy::default().default_action(SeccompAction::Allow),
            "may not be Allow",
        ),
        (
            SeccompPolicy::default().default_action(SeccompAction::Errno(-1)),
            "errno -1",
        ),
        (SeccompPolicy::default().remove("nope"), "\"nope\""),
        (
            SeccompPolicy::unconfined().deny("mkdir", libc::EPERM),
            "unconfined",
        ),
    ];
    for (policy, expected) in cases {
        match policy.validate() {
            Err(Error::InvalidArgument(message)) => assert!(
                message.contains(expected),
                "{expected:?} not in {message:?}"
            ),
            other => panic!("{expected:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn oversized_policy_rejected() {
    // Rules on one argument take two instructions each, so 2100 of them
    // are over the limit whatever the rest of the program.
    let policy = (0..2100).fold(SeccompPolicy::default(), |policy, value| {
        policy.deny_if(
            "ioctl",
            ArgCondition::equals(1, 0x9000 + value),
            libc::EPERM,
        )
    });
    match policy.validate() {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("4096"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn program_compiled_once_per_policy() {
    let first = program(&SeccompPolicy::default());
    let second = program(&SeccompPolicy::default());
    assert!(
        Arc::ptr_eq(&first, &second),
        "the default was compiled twice"
    );
    let custom = SeccompPolicy::default().deny("mkdir", libc::EACCES);
    let clone = custom.clone();
    assert!(Arc::ptr_eq(&program(&custom), &program(&clone)));
    assert!(!Arc::ptr_eq(&program(&custom), &first));
    assert_ne!(custom, SeccompPolicy::default());
    assert_eq!(
        SeccompPolicy::default().deny("mkdir", libc::EACCES),
        custom,
        "equal policies compare equal"
    );
}

#[test]
fn unconfined_policy_has_no_program() {
    let policy = SeccompPolicy::unconfined();
    assert!(policy.is_unconfined());
    assert!(program(&policy).is_empty());
    assert_eq!(format!("{policy:?}"), "SeccompPolicy::unconfined()");
}

#[test]
fn debug_output_is_short() {
    let text = format!("{:?}", SeccompPolicy::default());
    assert!(text.contains("default_action: Errno(38)"), "{text}");
    assert!(text.contains("\"keyctl\""), "{text}");
    assert!(!text.contains("\"read\""), "{text}");
    assert!(text.len() < 4000, "{} bytes", text.len());
}

/// A xorshift64 generator with a fixed seed, so that the random policies
/// below are the same on every run and a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn action(&mut self) -> SeccompAction {
        match self.below(4) {
            0 => SeccompAction::Allow,
            1 => SeccompAction::KillProcess,
            // Few distinct errnos, so that rules of one call often tie.
            _ => SeccompAction::Errno(1 + self.below(4) as i32),
        }
    }

    /// Returns a condition on a small set of values and bits, so that
    /// the rules of one call often match the same arguments.
    fn condition(&mut self) -> ArgCondition {
        let arg = self.below(3) as u8;
        let value = self.below(8) as u32;
        match self.below(3) {
            0 => ArgCondition::equals(arg, value),
            1 => ArgCondition::any_bit(arg, 1 << self.below(4)),
            _ => ArgCondition::masked_equals(arg, 0b110, value),
        }
    }
}

/// Builds a random policy on `known` (every call, sorted by number): runs
/// of neighbouring calls with random plain actions and argument rules,
/// always including the first and the last call of the table.
fn random_policy(random: &mut Random, known: &[(&'static str, i64)]) -> SeccompPolicy {
    let default = if random.below(4) == 0 {
        SeccompAction::KillProcess
    } else {
        SeccompAction::Errno(1 + random.below(4) as i32)
    };
    let mut policy = SeccompPolicy::minimal().default_action(default);
    let mut starts = vec![0, known.len() - 1];
    starts.extend((0..6).map(|_| random.below(known.len())));
    for start in starts {
        let run = 1 + random.below(5);
        for &(name, _) in known.iter().skip(start).take(run) {
            if !SOULBOX_SYSCALLS.contains(&name) && random.below(3) != 0 {
                policy = policy.rule(name, random.action());
            }
            for _ in 0..random.below(5) {
                policy = policy.rule_if(name, random.condition(), random.action());
            }
        }
    }
    policy
}

/// Returns every argument list that the conditions of [`Random::condition`]
/// can tell apart on arguments 0 to 2, with and without bits above the low
/// 32, plus one that sets every bit.
fn small_argument_probes() -> Vec<[u64; 6]> {
    let mut probes = vec![[u64::MAX; 6]];
    for arg in 0..3 {
        for value in 0..16u64 {
            for high in [0, 0xdead_beef_0000_0000] {
                let mut args = [0; 6];
                args[arg] = value | high;
                probes.push(args);
            }
        }
    }
    probes
}

#[test]
fn random_policies_match_model() {
    let mut known: Vec<(&'static str, i64)> = syscalls::all().collect();
    known.sort_by_key(|&(_, number)| number);
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let probes = small_argument_probes();
    for round in 0..60 {
        let policy = random_policy(&mut random, &known);
        if let Err(error) = policy.validate() {
            panic!("round {round}: the random policy is invalid: {error}");
        }
        let program = program(&policy);
        let rules = policy.rules().expect("rules");
        // The named calls and their neighbours get every probe; the other
        // numbers of the table, x32's and the extremes get zeros.
        let mut named: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
        for &number in rules.syscalls.keys() {
            let number = number as u32;
            named.extend([number.saturating_sub(1), number, number.saturating_add(1)]);
        }
        for number in numbers_to_check() {
            let all_probes = named.contains(&number);
            let checked = if all_probes {
                &probes[..]
            } else {
                &probes[..1]
            };
            for args in checked.iter().chain([&[0; 6]]) {
                let actual = run(&program, AUDIT_ARCH, number, *args);
                let expected = expected_action(&policy, number, *args);
                assert_eq!(
                    actual, expected,
                    "round {round}, number {number}, arguments {args:x?}: {actual:#x}, \
                     expected {expected:#x}"
                );
            }
        }
        assert_short_paths(&policy);
    }
}

/// Returns the instruction count that a rejected policy's message states.
fn rejected_length(policy: &SeccompPolicy) -> Option<usize> {
    match policy.validate() {
        Ok(()) => None,
        Err(Error::InvalidArgument(message)) => {
            let count = message
                .split_once("compiles to ")
                .and_then(|(_, rest)| rest.split_once(' '))
                .and_then(|(count, _)| count.parse().ok());
            Some(count.unwrap_or_else(|| panic!("no instruction count in {message:?}")))
        }
        Err(other) => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn instruction_limit_is_exact() {
    // Rules on one argument of one call add two instructions each, and a
    // rule on another argument three; together they reach every length.
    let with_rules = |equals: u32, other_arg: bool| {
        let policy = (0..equals).fold(SeccompPolicy::default(), |policy, value| {
            policy.deny_if("ioctl", ArgCondition::equals(1, 0x9000 + value), 5)
        });
        if other_arg {
            policy.deny_if("ioctl", ArgCondition::equals(2, 7), 6)
        } else {
            policy
        }
    };
    let mut lengths = Vec::new();
    for equals in 1900..2100 {
        for other_arg in [false, true] {
            let policy = with_rules(equals, other_arg);
            match rejected_length(&policy) {
                Some(length) => {
                    assert!(
                        length > compile::MAX_INSTRUCTIONS,
                        "{length} instructions rejected"
                    );
                    lengths.push((length, false));
                }
                None => {
                    let length = program(&policy).len() / soulbox_proto::SOCK_FILTER_LEN;
                    assert!(
                        length <= compile::MAX_INSTRUCTIONS,
                        "{length} instructions accepted"
                    );
                    lengths.push((length, true));
                }
            }
        }
    }
    assert!(
        lengths.contains(&(compile::MAX_INSTRUCTIONS, true)),
        "no policy compiled to exactly {} instructions: {lengths:?}",
        compile::MAX_INSTRUCTIONS
    );
    assert!(
        lengths.contains(&(compile::MAX_INSTRUCTIONS + 1, false)),
        "no policy compiled to {} instructions",
        compile::MAX_INSTRUCTIONS + 1
    );
    let policy = with_rules(1990, true);
    if rejected_length(&policy).is_none() {
        assert_matches_model(&policy, 4);
    }
}
