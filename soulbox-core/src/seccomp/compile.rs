//! Compiles a policy to one classic BPF program with seccompiler.
//!
//! A seccompiler filter has one action for calls that match its rules and
//! one for the rest, but a policy has several (allow, each errno, kill). So
//! the policy is split into sections, one per action, each compiled by
//! seccompiler, and the sections are chained: a section's "no match"
//! return becomes a jump to the next section, and after the last one the
//! program returns the policy's default action.
//!
//! Sections with argument rules come first, so that they take precedence
//! over plain actions: kill, then each errno from the lowest, then allow.
//! Plain sections follow; each system call has one plain action, so their
//! order does not change the result. The allow section comes first among
//! them, because the kernel runs the program only for calls whose result
//! depends on arguments (it caches the rest per system call number since
//! Linux 5.11), and those are mostly allowed.

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

// Opcodes from <linux/filter.h>: BPF_RET | BPF_K and BPF_JMP | BPF_JA.
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;

type Section = BTreeMap<i64, Vec<SeccompRule>>;

/// Compiles `rules` to a program in the wire format of
/// `soulbox_proto::Config::seccomp_filter`.
pub(super) fn compile(rules: &Rules) -> Result<Vec<u8>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp filters are not supported on this architecture: {e}"))?;
    let mut program = arch_check(arch)?;
    for (action, section) in sections(rules)? {
        append_section(&mut program, arch, action, section)?;
    }
    program.push(ret(rules.default_action));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(format!(
            "the seccomp policy compiles to {} BPF instructions, more than the kernel's limit \
             of {MAX_INSTRUCTIONS}; name fewer system calls or argument rules",
            program.len()
        ));
    }
    Ok(encode(&program))
}

/// Splits the policy into sections in evaluation order.
fn sections(rules: &Rules) -> Result<Vec<(SeccompAction, Section)>, String> {
    let mut conditional: BTreeMap<(u8, i32), (SeccompAction, Section)> = BTreeMap::new();
    let mut plain: BTreeMap<(u8, i32), (SeccompAction, Section)> = BTreeMap::new();
    for (&number, syscall) in &rules.syscalls {
        for (condition, action) in &syscall.conditional {
            let (_, section) = conditional
                .entry(conditional_order(action))
                .or_insert_with(|| (*action, Section::new()));
            section
                .entry(number)
                .or_default()
                .extend(seccomp_rules(condition)?);
        }
        match syscall.action {
            // A call with the default action needs no rule of its own.
            Some(action) if action != rules.default_action => {
                plain
                    .entry(plain_order(&action))
                    .or_insert_with(|| (action, Section::new()))
                    .1
                    .insert(number, Vec::new());
            }
            _ => {}
        }
    }
    Ok(conditional
        .into_values()
        .chain(plain.into_values())
        .collect())
}

/// Sort key of argument-rule sections: kill, errnos from the lowest, allow.
fn conditional_order(action: &SeccompAction) -> (u8, i32) {
    match *action {
        SeccompAction::KillProcess => (0, 0),
        SeccompAction::Errno(errno) => (1, errno),
        SeccompAction::Allow => (2, 0),
    }
}

/// Sort key of plain sections: allow first, as the module comment says.
fn plain_order(action: &SeccompAction) -> (u8, i32) {
    match *action {
        SeccompAction::Allow => (0, 0),
        SeccompAction::Errno(errno) => (1, errno),
        SeccompAction::KillProcess => (2, 0),
    }
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
        // seccompiler has no "any bit set" test, so each bit is a rule of
        // its own: the bit masked out equals the bit.
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
    let no_match = ret_raw(u32::from(NO_MATCH));
    for (index, instruction) in body.iter().enumerate() {
        if *instruction == no_match {
            // A jump of k skips k instructions: to the one after the body.
            let skip = u32::try_from(body.len() - 1 - index).unwrap_or(u32::MAX);
            program.push(sock_filter {
                code: JA,
                jt: 0,
                jf: 0,
                k: skip,
            });
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
    ret_raw(u32::from(to_seccompiler(action)))
}

fn ret_raw(k: u32) -> sock_filter {
    sock_filter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    }
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
