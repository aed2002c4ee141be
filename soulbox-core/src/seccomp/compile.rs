//! Compiles a policy to one classic BPF program.
//!
//! The program has three parts:
//! 1. seccompiler's architecture check, which kills a process that enters
//!    through another architecture's system call table (x86's 32-bit
//!    `int 0x80`).
//! 2. The argument rules, compiled by seccompiler. A seccompiler filter has
//!    one action for calls that match its rules and one for the rest, but
//!    a policy has several (kill, each errno, allow). So each action gets a
//!    section of its own, in that order of precedence. The sections are
//!    chained: a section's "no match" return becomes a jump to the next.
//! 3. The plain action of every system call number, as a binary search
//!    over ranges of numbers that share an action, with unlisted numbers
//!    (and x32's, which have bit 30 set) getting the default action.
//!
//! Part 3 is not seccompiler's linear chain of one comparison per system
//! call, on purpose. When a filter is installed, the kernel runs it once
//! for every system call number to find the calls it may skip the filter
//! for (`seccomp_cache_prepare`, since Linux 5.11), which costs the chain's
//! length times the number of calls. With the default policy as one
//! seccompiler chain (1875 instructions), installing the filter took
//! 0.78 ms, a sixth of creating a sandbox; with the search (329
//! instructions) it takes 0.11 ms. Both are medians of 300 installs in
//! forked processes on a 2-core x86-64 VM with Linux 6.18.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction as Action, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::{ArgCondition, ArgTest, Rules, SeccompAction};

/// The kernel's limit on instructions in one program (BPF_MAXINSNS in
/// <linux/bpf_common.h>).
pub(crate) const MAX_INSTRUCTIONS: usize = soulbox_proto::MAX_SECCOMP_INSTRUCTIONS;

/// Length of the architecture check seccompiler puts at the start of every
/// program: load the architecture, compare, kill on mismatch.
const ARCH_CHECK_LEN: usize = 3;

/// The "no match" action of every section. It only marks the returns that
/// become jumps, so it must differ from every action a policy can hold:
/// SoulBox never returns SECCOMP_RET_TRACE.
const NO_MATCH: Action = Action::Trace(0xffff);

// Opcodes from <linux/filter.h>: BPF_RET | BPF_K, BPF_JMP | BPF_JA,
// BPF_JMP | BPF_JGE | BPF_K and BPF_LD | BPF_W | BPF_ABS.
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;
const JGE_K: u16 = 0x35;
const LD_ABS: u16 = 0x20;
/// Offset of the system call number in `struct seccomp_data`.
const DATA_NR: u32 = 0;

type Section = BTreeMap<i64, Vec<SeccompRule>>;

/// Compiles `rules` to a program in the wire format of
/// `soulbox_proto::Config::seccomp_filter`.
pub(super) fn compile(rules: &Rules) -> Result<Vec<u8>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp filters are not supported on this architecture: {e}"))?;
    let mut program = arch_check(arch)?;
    for (action, section) in argument_sections(rules)? {
        append_section(&mut program, arch, action, section)?;
    }
    program.push(stmt(LD_ABS, DATA_NR));
    append_search(&mut program, &plain_ranges(rules));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(format!(
            "the seccomp policy compiles to {} BPF instructions, more than the kernel's limit \
             of {MAX_INSTRUCTIONS}; name fewer system calls or argument rules",
            program.len()
        ));
    }
    Ok(encode(&program))
}

/// Groups the argument rules into one section per action, in order of
/// precedence: kill, then each errno from the lowest, then allow.
fn argument_sections(rules: &Rules) -> Result<Vec<(SeccompAction, Section)>, String> {
    let mut sections: BTreeMap<(u8, i32), (SeccompAction, Section)> = BTreeMap::new();
    for (&number, syscall) in &rules.syscalls {
        for (condition, action) in &syscall.conditional {
            let precedence = match *action {
                SeccompAction::KillProcess => (0, 0),
                SeccompAction::Errno(errno) => (1, errno),
                SeccompAction::Allow => (2, 0),
            };
            let (_, section) = sections
                .entry(precedence)
                .or_insert_with(|| (*action, Section::new()));
            section
                .entry(number)
                .or_default()
                .extend(seccomp_rules(condition)?);
        }
    }
    Ok(sections.into_values().collect())
}

/// Returns the plain action of every number from 0 to `u32::MAX`, as the
/// sorted starts of ranges whose numbers share an action.
fn plain_ranges(rules: &Rules) -> Vec<(u32, SeccompAction)> {
    let mut ranges = vec![(0, rules.default_action)];
    let mut push = |start: u32, action: SeccompAction| match ranges.last_mut() {
        Some(last) if last.0 == start => last.1 = action,
        Some(last) if last.1 == action => {}
        _ => ranges.push((start, action)),
    };
    for (&number, syscall) in &rules.syscalls {
        let number = u32::try_from(number).unwrap_or(u32::MAX);
        push(number, syscall.action.unwrap_or(rules.default_action));
        push(number.saturating_add(1), rules.default_action);
    }
    // An action equal to the one before it can remain where a number
    // replaced a range start; merge those.
    ranges.dedup_by(|later, earlier| later.1 == earlier.1);
    ranges
}

/// Appends a binary search that returns the action of the range that
/// contains the number in the accumulator. `ranges` starts at 0 and is sorted.
fn append_search(program: &mut Vec<sock_filter>, ranges: &[(u32, SeccompAction)]) {
    if let [(_, action)] = ranges {
        program.push(ret(*action));
        return;
    }
    let (below, above) = ranges.split_at(ranges.len() / 2);
    let mut lower = Vec::new();
    append_search(&mut lower, below);
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
    append_search(program, above);
}

/// Translates one argument condition into seccompiler rules, any of which
/// matches. Every comparison reads the low 32 bits (`Dword`).
fn seccomp_rules(condition: &ArgCondition) -> Result<Vec<SeccompRule>, String> {
    let compare = |op: SeccompCmpOp, value: u32| {
        SeccompCondition::new(condition.arg, SeccompCmpArgLen::Dword, op, u64::from(value))
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| format!("invalid seccomp argument rule {condition:?}: {e}"))
    };
    match condition.test {
        ArgTest::Equals(value) => Ok(vec![compare(SeccompCmpOp::Eq, value)?]),
        ArgTest::MaskedEquals { mask, value } => Ok(vec![compare(
            SeccompCmpOp::MaskedEq(u64::from(mask)),
            value,
        )?]),
        // seccompiler has no "any bit set" test, so each bit becomes a rule
        // of its own, which matches when that bit is set.
        ArgTest::AnyBit(mask) => (0..32)
            .map(|bit| 1u32 << bit)
            .filter(|bit| mask & bit != 0)
            .map(|bit| compare(SeccompCmpOp::MaskedEq(u64::from(bit)), bit))
            .collect(),
    }
}

/// Returns seccompiler's architecture check for `arch`.
fn arch_check(arch: TargetArch) -> Result<Vec<sock_filter>, String> {
    let empty = SeccompFilter::new(Section::new(), Action::Allow, NO_MATCH, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("seccompiler failed on an empty filter: {e}"))?;
    Ok(empty[..ARCH_CHECK_LEN].to_vec())
}

/// Compiles one section and appends it to `program`, without its
/// architecture check and with every "no match" return turned into a jump
/// past the section's end.
fn append_section(
    program: &mut Vec<sock_filter>,
    arch: TargetArch,
    action: SeccompAction,
    section: Section,
) -> Result<(), String> {
    let compiled = SeccompFilter::new(section, NO_MATCH, to_seccompiler(action), arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("seccompiler failed on the {action:?} rules: {e}"))?;
    if compiled.get(..ARCH_CHECK_LEN) != Some(&program[..ARCH_CHECK_LEN]) {
        return Err(
            "seccompiler's program does not start with the expected architecture check; \
                    this seccompiler version is not supported"
                .to_string(),
        );
    }
    let body = &compiled[ARCH_CHECK_LEN..];
    let no_match = stmt(RET_K, u32::from(NO_MATCH));
    for (index, instruction) in body.iter().enumerate() {
        if *instruction == no_match {
            // A jump of k skips k instructions, so this lands on the first
            // instruction after the body.
            let skip = u32::try_from(body.len() - 1 - index).unwrap_or(u32::MAX);
            program.push(stmt(JA, skip));
        } else {
            program.push(instruction.clone());
        }
    }
    Ok(())
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
