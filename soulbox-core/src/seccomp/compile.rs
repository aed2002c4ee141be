//! Compiles a policy to one classic BPF program.
//!
//! The program has two parts:
//! 1. seccompiler's architecture check, which kills a process that enters
//!    through another architecture's system call table (x86's 32-bit
//!    `int 0x80`).
//! 2. A binary search over ranges of system call numbers. Adjacent numbers
//!    that share a plain action share a range, whose leaf returns that
//!    action, and unlisted numbers (and x32's, which have bit 30 set) get
//!    the default action. Each call with argument rules is a range of its
//!    own, whose leaf checks that call's rules and then returns its plain
//!    action (see [`append_argument_checks`]).
//!
//! So a call without argument rules executes the architecture check, one
//! load, one comparison per level of the search and a return, and a call
//! with rules executes only its own rules after the search. For the
//! default policy (204 instructions, 84 ranges) that is at most 11
//! instructions per number up to a return or an argument's load.
//!
//! The path length matters when the filter is installed, once per sandbox
//! in its PID 1. The kernel then emulates the program for every system
//! call number of each architecture, under the process's signal lock, to
//! find the calls it may allow without running the filter
//! (`seccomp_cache_prepare`, since Linux 5.11). The emulation ends at a
//! return or at the first load of an argument. Install times of the
//! default policy, medians of 300 installs in forked processes on a
//! shared 2-core x86-64 VM with Linux 6.18:
//! - one seccompiler chain (1875 instructions): 0.78 ms;
//! - seccompiler's argument rules, one section per action, chained before
//!   the search (329 instructions, 47 executed per number): 0.087 to
//!   0.090 ms;
//! - this layout: 0.039 to 0.043 ms, where a 4-instruction program takes
//!   0.012 to 0.015 ms.

use std::collections::BTreeMap;

use seccompiler::{sock_filter, BpfProgram, SeccompAction as Action, SeccompFilter, TargetArch};

use super::{ArgCondition, ArgTest, Rules, SeccompAction, SyscallRules};

/// The kernel's limit on instructions in one program (BPF_MAXINSNS in
/// <linux/bpf_common.h>).
pub(crate) const MAX_INSTRUCTIONS: usize = soulbox_proto::MAX_SECCOMP_INSTRUCTIONS;

/// Length of the architecture check seccompiler puts at the start of every
/// program: load the architecture, compare, kill on mismatch.
const ARCH_CHECK_LEN: usize = 3;

/// The action of the empty filter that [`arch_check`] takes its check
/// from. The check does not use it.
const NO_MATCH: Action = Action::Trace(0xffff);

// Opcodes from <linux/filter.h>: BPF_RET | BPF_K, BPF_JMP | BPF_JA,
// BPF_JMP | BPF_JGE | BPF_K, BPF_JMP | BPF_JEQ | BPF_K,
// BPF_JMP | BPF_JSET | BPF_K, BPF_LD | BPF_W | BPF_ABS and
// BPF_ALU | BPF_AND | BPF_K.
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;
const JGE_K: u16 = 0x35;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const LD_ABS: u16 = 0x20;
const AND_K: u16 = 0x54;
/// Offset of the system call number in `struct seccomp_data`.
const DATA_NR: u32 = 0;
/// Offset of the first argument in `struct seccomp_data`. Each argument is
/// a u64 in the CPU's byte order, so on the little-endian architectures
/// SoulBox builds for (x86-64, aarch64) its low 32 bits come first.
const DATA_ARGS: u32 = 16;

/// Leaf of the search: the code that one range of system call numbers runs.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    /// Returns the action: every number of the range gets it.
    Return(SeccompAction),
    /// Checks the argument rules of the one system call in the range, then
    /// returns its plain action (or the default one) if none matched.
    Arguments(&'a SyscallRules),
}

impl Leaf<'_> {
    /// Returns whether two adjacent ranges can share one leaf: only ranges
    /// that return the same action can, never one with argument rules.
    fn merges_with(&self, other: &Self) -> bool {
        matches!((self, other), (Leaf::Return(a), Leaf::Return(b)) if a == b)
    }
}

/// Compiles `rules` to a program in the wire format of
/// `soulbox_proto::Config::seccomp_filter`.
pub(super) fn compile(rules: &Rules) -> Result<Vec<u8>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp filters are not supported on this architecture: {e}"))?;
    let mut program = arch_check(arch)?;
    program.push(stmt(LD_ABS, DATA_NR));
    append_search(&mut program, &search_ranges(rules), rules.default_action);
    if program.len() > MAX_INSTRUCTIONS {
        return Err(format!(
            "the seccomp policy compiles to {} BPF instructions, more than the kernel's limit \
             of {MAX_INSTRUCTIONS}; name fewer system calls or argument rules",
            program.len()
        ));
    }
    Ok(encode(&program))
}

/// Returns the leaf of every number from 0 to `u32::MAX`, as the sorted
/// starts of ranges. Each system call with argument rules is a range of
/// its own, and adjacent numbers that return the same action share one.
fn search_ranges(rules: &Rules) -> Vec<(u32, Leaf<'_>)> {
    let default = Leaf::Return(rules.default_action);
    let mut ranges: Vec<(u32, Leaf<'_>)> = vec![(0, default)];
    let mut push = |start: u32, leaf| match ranges.last_mut() {
        Some(last) if last.0 == start => last.1 = leaf,
        Some(last) if last.1.merges_with(&leaf) => {}
        _ => ranges.push((start, leaf)),
    };
    for (&number, syscall) in &rules.syscalls {
        let number = u32::try_from(number).unwrap_or(u32::MAX);
        let leaf = if syscall.conditional.is_empty() {
            Leaf::Return(syscall.action.unwrap_or(rules.default_action))
        } else {
            Leaf::Arguments(syscall)
        };
        push(number, leaf);
        push(number.saturating_add(1), default);
    }
    // A leaf that merges with the one before it can remain where a number
    // replaced a range start; merge those.
    ranges.dedup_by(|later, earlier| later.1.merges_with(&earlier.1));
    ranges
}

/// Appends a binary search that runs the leaf of the range that contains
/// the number in the accumulator. `ranges` starts at 0 and is sorted.
fn append_search(
    program: &mut Vec<sock_filter>,
    ranges: &[(u32, Leaf<'_>)],
    default_action: SeccompAction,
) {
    if let [(_, leaf)] = ranges {
        match leaf {
            Leaf::Return(action) => program.push(ret(*action)),
            Leaf::Arguments(syscall) => append_argument_checks(program, syscall, default_action),
        }
        return;
    }
    let (below, above) = ranges.split_at(ranges.len() / 2);
    let mut lower = Vec::new();
    append_search(&mut lower, below, default_action);
    // Numbers at or above the split go to `above`, past `lower`. A
    // conditional jump skips at most 255 instructions, and a JA any number.
    match u8::try_from(lower.len()) {
        Ok(skip) => program.push(jump(JGE_K, above[0].0, skip, 0)),
        Err(_) => {
            program.push(jump(JGE_K, above[0].0, 0, 1));
            program.push(stmt(JA, u32::try_from(lower.len()).unwrap_or(u32::MAX)));
        }
    }
    program.extend(lower);
    append_search(program, above, default_action);
}

/// Appends the argument rules of one system call, each a test followed by
/// a return of its action, then a return of the plain action. The rules
/// run in order of precedence (kill, then each errno from the lowest, then
/// allow), so the first that matches is the one whose action wins.
///
/// Every jump skips at most one instruction, so a system call's checks
/// can be of any length. The checks overwrite the system call number in
/// the accumulator, which nothing after them reads.
fn append_argument_checks(
    program: &mut Vec<sock_filter>,
    syscall: &SyscallRules,
    default_action: SeccompAction,
) {
    let mut ordered: Vec<&(ArgCondition, SeccompAction)> = syscall.conditional.iter().collect();
    ordered.sort_by_key(|(_, action)| precedence(*action));
    // Index of the argument whose low 32 bits are in the accumulator,
    // unmasked. Tests leave the accumulator as is, so consecutive rules on
    // one argument load it once.
    let mut loaded: Option<u8> = None;
    for (condition, action) in ordered {
        if loaded != Some(condition.arg) {
            program.push(stmt(LD_ABS, DATA_ARGS + 8 * u32::from(condition.arg)));
            loaded = Some(condition.arg);
        }
        // Each test jumps over the return when the rule does not match.
        match condition.test {
            ArgTest::Equals(value) => program.push(jump(JEQ_K, value, 0, 1)),
            // Only the bits of `value` inside `mask` count, as
            // `ArgCondition::masked_equals` documents.
            ArgTest::MaskedEquals { mask, value } => {
                program.push(stmt(AND_K, mask));
                program.push(jump(JEQ_K, value & mask, 0, 1));
                loaded = None;
            }
            ArgTest::AnyBit(mask) => program.push(jump(JSET_K, mask, 0, 1)),
        }
        program.push(ret(*action));
    }
    program.push(ret(syscall.action.unwrap_or(default_action)));
}

/// Returns the sort key of an action among matching argument rules: kill
/// first, then each errno from the lowest, then allow.
fn precedence(action: SeccompAction) -> (u8, i32) {
    match action {
        SeccompAction::KillProcess => (0, 0),
        SeccompAction::Errno(errno) => (1, errno),
        SeccompAction::Allow => (2, 0),
    }
}

/// Returns seccompiler's architecture check for `arch`.
fn arch_check(arch: TargetArch) -> Result<Vec<sock_filter>, String> {
    let empty = SeccompFilter::new(BTreeMap::new(), Action::Allow, NO_MATCH, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("seccompiler failed on an empty filter: {e}"))?;
    Ok(empty[..ARCH_CHECK_LEN].to_vec())
}

fn to_seccompiler(action: SeccompAction) -> Action {
    match action {
        SeccompAction::Allow => Action::Allow,
        // The policy checked that the errno is between 1 and 4095.
        SeccompAction::Errno(errno) => Action::Errno(errno.unsigned_abs()),
        SeccompAction::KillProcess => Action::KillProcess,
    }
}

fn ret(action: SeccompAction) -> sock_filter {
    stmt(RET_K, u32::from(to_seccompiler(action)))
}

fn stmt(code: u16, k: u32) -> sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Encodes instructions as `soulbox_proto` carries them: per instruction,
/// `code` (u16), `jt`, `jf` (u8 each) and `k` (u32), little-endian.
fn encode(program: &[sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * soulbox_proto::SOCK_FILTER_LEN);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_le_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_le_bytes());
    }
    bytes
}
