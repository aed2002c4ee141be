//! Seccomp policies: which system calls sandboxed code may make.
//!
//! A [`SeccompPolicy`] is an allow-list. Each listed system call has an
//! action ([`SeccompAction`]), optionally refined by argument rules, and
//! every call not listed gets the policy's default action. The host
//! compiles a policy to a classic BPF program once (see `compile.rs`).
//! The sandbox's PID 1 receives the program in its configuration and
//! installs it as its last setup step, so PID 1, every supervisor and
//! every command run under it.
//!
//! The default policy is the table in `default_policy.rs`.

mod compile;
mod default_policy;
mod syscalls;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// Action the filter takes on a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeccompAction {
    /// The call runs.
    Allow,
    /// The call fails with this errno (1 to 4095) without running.
    Errno(i32),
    /// The kernel kills the calling process with SIGSYS.
    KillProcess,
}

/// A test on one argument of a system call.
///
/// Every test reads only the argument's low 32 bits. The kernel reads
/// `int` arguments such as ioctl requests and clone flags from those bits
/// and ignores the rest, so garbage in the upper half cannot slip past a
/// rule. For the same reason a condition cannot test a pointer or a
/// 64-bit size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgCondition {
    /// Index of the argument, 0 to 5.
    arg: u8,
    test: ArgTest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArgTest {
    Equals(u32),
    AnyBit(u32),
    MaskedEquals { mask: u32, value: u32 },
}

impl ArgCondition {
    /// Matches when argument `arg` (0 to 5) equals `value`.
    pub const fn equals(arg: u8, value: u32) -> Self {
        Self {
            arg,
            test: ArgTest::Equals(value),
        }
    }

    /// Matches when argument `arg` has any bit of `mask` set.
    pub const fn any_bit(arg: u8, mask: u32) -> Self {
        Self {
            arg,
            test: ArgTest::AnyBit(mask),
        }
    }

    /// Matches when the bits of argument `arg` selected by `mask` equal
    /// those of `value`.
    pub const fn masked_equals(arg: u8, mask: u32, value: u32) -> Self {
        Self {
            arg,
            test: ArgTest::MaskedEquals { mask, value },
        }
    }

    fn check(&self, syscall: &str) -> std::result::Result<(), String> {
        if self.arg > 5 {
            return Err(format!(
                "argument index {} in a seccomp rule for {syscall} is above 5; system calls \
                 have at most six arguments, numbered from 0",
                self.arg
            ));
        }
        if self.test == ArgTest::AnyBit(0) {
            return Err(format!(
                "the seccomp rule for {syscall} tests argument {} against mask 0, which never \
                 matches; give the flag bits to test",
                self.arg
            ));
        }
        Ok(())
    }
}

/// The system calls sandboxed code may make, and what happens to the rest.
///
/// [`SeccompPolicy::default`] is SoulBox's allow-list of what glibc,
/// shells, coreutils, Python, Node and compilers need. It leaves out the
/// calls that reach kernel surface a sandbox has no use for: new
/// namespaces, mounts, keyrings, tracing other processes, io_uring, BPF,
/// module loading and other whole-machine operations. Those fail with
/// EPERM, `clone3` fails with ENOSYS so that libc falls back to `clone`,
/// and every call the list does not name fails with ENOSYS.
///
/// Callers can add to a policy, override single calls, or start from
/// [`SeccompPolicy::minimal`] and list everything their commands need:
///
/// ```
/// use soulbox_core::{ArgCondition, SandboxOptions, SeccompAction, SeccompPolicy};
///
/// // The default, with mkdir failing as if permission were missing and
/// // no packet sockets.
/// let policy = SeccompPolicy::default()
///     .deny("mkdir", libc::EACCES)
///     .deny("mkdirat", libc::EACCES)
///     .deny_if("socket", ArgCondition::equals(0, libc::AF_PACKET as u32), libc::EPERM);
/// // Kill any process that makes a call the allow-list does not name.
/// let _strict = SeccompPolicy::default().default_action(SeccompAction::KillProcess);
/// let options = SandboxOptions::default().seccomp(policy);
/// ```
///
/// Each call to [`rule`](Self::rule) or its shortcuts sets the plain action
/// of one system call, replacing the one it had. Argument rules
/// ([`rule_if`](Self::rule_if)) are checked before the plain action: a call
/// that matches one gets that rule's action. When several match, killing
/// wins over an errno (the lowest errno first), and an errno wins over
/// allowing.
///
/// The host compiles a policy to BPF once and caches the program in the
/// policy, so clones of one policy (and every [`SeccompPolicy::default`])
/// share one program.
///
/// # Errors
///
/// Builder methods never fail. Invalid input (an unknown system call, an
/// errno outside 1 to 4095, an argument index above 5) is kept and
/// reported by [`crate::Sandbox::create`] as [`Error::InvalidArgument`],
/// before anything is created. So is a policy whose program exceeds the
/// kernel's 4096 instructions, and one that does not allow every call in
/// [`SeccompPolicy::minimal`], which SoulBox's own processes make under
/// the filter.
///
/// # Caveats
///
/// Argument rules on the calls of [`SeccompPolicy::minimal`] can still
/// stop SoulBox's own processes, for example a rule that denies `clone`
/// with SIGCHLD, or with `CLONE_VM | CLONE_VFORK`, in its flags (each
/// command's supervisor starts the command with the latter): commands then
/// fail to start.
///
/// The names are those of the build's architecture (x86-64 or aarch64), as
/// in the kernel's syscall tables. On x86-64, 32-bit programs (the `int
/// 0x80` entry point) are killed by the architecture check that precedes
/// every rule, and x32 system calls get the default action.
#[derive(Clone)]
pub struct SeccompPolicy {
    rules: Source,
    /// The compiled program, shared by clones until one of them changes.
    program: Arc<OnceLock<std::result::Result<Arc<[u8]>, String>>>,
    /// The compiled program with [`HOST_WRITE_GUARDS`] on top, for
    /// sandboxes with a writable host mount; shared the same way.
    guarded_program: Arc<OnceLock<std::result::Result<Arc<[u8]>, String>>>,
}

/// Calls that would set a setuid or setgid bit, with the index of their
/// mode argument. In a sandbox with a writable host mount they fail with
/// EPERM: such a file there would be a privileged program for other host
/// users, and inside the sandbox, where every mount is nosuid, the bits do
/// nothing anyway. `openat2`, whose mode the filter cannot read, fails
/// with ENOSYS, so that libc falls back to `openat`.
const HOST_WRITE_GUARDS: [(&str, u8); 9] = [
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("open", 2),
    ("openat", 3),
    ("creat", 1),
    ("mknod", 1),
    ("mknodat", 2),
];

/// The origin of a policy's rules.
#[derive(Clone)]
enum Source {
    /// No filter is installed at all.
    Unconfined,
    /// The default policy. Its program is compiled when SoulBox is built,
    /// so its rules are built from the table only when a caller reads or
    /// changes them. A `soulbox run` process never does.
    Default,
    Rules(Arc<Rules>),
}

#[derive(Clone, PartialEq, Eq)]
struct Rules {
    default_action: SeccompAction,
    /// By system call number.
    syscalls: BTreeMap<i64, SyscallRules>,
    /// Invalid builder input, reported when the policy is used.
    errors: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
struct SyscallRules {
    name: &'static str,
    /// The plain action; `None` leaves the call to the default action.
    action: Option<SeccompAction>,
    /// Argument rules in the order they were added.
    conditional: Vec<(ArgCondition, SeccompAction)>,
}

impl Default for SeccompPolicy {
    /// Returns SoulBox's default allow-list (see the type's documentation).
    fn default() -> Self {
        static DEFAULT: OnceLock<SeccompPolicy> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Self {
                rules: Source::Default,
                program: Arc::new(default_policy::precompiled()),
                guarded_program: Arc::default(),
            })
            .clone()
    }
}

impl PartialEq for SeccompPolicy {
    fn eq(&self, other: &Self) -> bool {
        match (&self.rules, &other.rules) {
            (Source::Default, Source::Default) => true,
            _ => self.rules() == other.rules(),
        }
    }
}

impl Eq for SeccompPolicy {}

impl SeccompPolicy {
    /// Returns a policy that allows only what SoulBox's own processes call
    /// once the filter is installed ([`SOULBOX_SYSCALLS`]). Every other
    /// call gets the default action, ENOSYS. Add what the commands need
    /// with [`allow`](Self::allow), because even `/bin/true` needs the
    /// dynamic loader's calls (`mmap`, `mprotect`, `pread64`, `arch_prctl`
    /// and others).
    pub fn minimal() -> Self {
        Self::from_rules(Some(Rules {
            default_action: SeccompAction::Errno(libc::ENOSYS),
            syscalls: BTreeMap::new(),
            errors: Vec::new(),
        }))
        .allow_all(SOULBOX_SYSCALLS.iter().copied())
    }

    /// Returns a policy that installs no filter at all.
    ///
    /// # Caveats
    ///
    /// This removes a layer of the sandbox: sandboxed code can then create
    /// user namespaces, use io_uring and BPF, read kernel keyrings, and
    /// reach every other kernel interface its capabilities allow. It exists
    /// to measure what the filter costs and for code that is trusted; do
    /// not use it for untrusted code.
    pub fn unconfined() -> Self {
        Self::from_rules(None)
    }

    /// Returns whether this policy installs no filter.
    pub fn is_unconfined(&self) -> bool {
        matches!(self.rules, Source::Unconfined)
    }

    /// Sets the plain action of `syscall`, replacing the one it had. Its
    /// argument rules stay.
    pub fn rule(self, syscall: &str, action: SeccompAction) -> Self {
        self.edit(syscall, &action, |rules| rules.action = Some(action))
    }

    /// Adds an argument rule: a call to `syscall` that matches `condition`
    /// gets `action`, whatever the plain action of `syscall`.
    pub fn rule_if(self, syscall: &str, condition: ArgCondition, action: SeccompAction) -> Self {
        if let Err(message) = condition.check(syscall) {
            return self.with_error(message);
        }
        self.edit(syscall, &action, |rules| {
            rules.conditional.push((condition, action));
        })
    }

    /// Allows `syscall`, whatever its arguments (its argument rules stay).
    pub fn allow(self, syscall: &str) -> Self {
        self.rule(syscall, SeccompAction::Allow)
    }

    /// Allows every system call in `syscalls`.
    pub fn allow_all<'a>(self, syscalls: impl IntoIterator<Item = &'a str>) -> Self {
        syscalls.into_iter().fold(self, Self::allow)
    }

    /// Makes `syscall` fail with `errno` (1 to 4095), such as
    /// `libc::EPERM`, without running.
    pub fn deny(self, syscall: &str, errno: i32) -> Self {
        self.rule(syscall, SeccompAction::Errno(errno))
    }

    /// Allows a call to `syscall` that matches `condition`; other calls to
    /// it keep its plain action, or the default one.
    pub fn allow_if(self, syscall: &str, condition: ArgCondition) -> Self {
        self.rule_if(syscall, condition, SeccompAction::Allow)
    }

    /// Makes a call to `syscall` that matches `condition` fail with `errno`.
    pub fn deny_if(self, syscall: &str, condition: ArgCondition, errno: i32) -> Self {
        self.rule_if(syscall, condition, SeccompAction::Errno(errno))
    }

    /// Removes the plain action and every argument rule of `syscall`, which
    /// then gets the default action.
    pub fn remove(mut self, syscall: &str) -> Self {
        let Some((_, number)) = syscalls::lookup(syscall) else {
            return self.with_error(unknown_syscall(syscall));
        };
        self.change(|rules| {
            rules.syscalls.remove(&number);
        });
        self
    }

    /// Sets the action for every system call the policy does not name:
    /// an errno (ENOSYS unless set, so that programs treat the call as
    /// missing from the kernel and fall back) or
    /// [`SeccompAction::KillProcess`]. [`SeccompAction::Allow`] is rejected,
    /// because it would turn the allow-list into a deny-list.
    pub fn default_action(mut self, action: SeccompAction) -> Self {
        if let Err(message) = check_action(&action, "the default action") {
            return self.with_error(message);
        }
        if action == SeccompAction::Allow {
            return self.with_error(
                "the seccomp default action may not be Allow, because every system call the \
                 policy does not name would run; list the calls to deny with deny() instead"
                    .to_string(),
            );
        }
        self.change(|rules| rules.default_action = action);
        self
    }

    /// Returns the plain action of `syscall`, or `None` when the policy does
    /// not name it (it then gets the default action) or the name is
    /// unknown. Argument rules are not considered.
    pub fn action_of(&self, syscall: &str) -> Option<SeccompAction> {
        let (_, number) = syscalls::lookup(syscall)?;
        self.rules()?.syscalls.get(&number)?.action
    }

    /// Checks the policy and compiles it, once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for invalid builder input, a policy that
    /// stops SoulBox's own processes, or a program above the kernel's size
    /// limit.
    pub(crate) fn validate(&self) -> Result<()> {
        self.program().map(drop)
    }

    /// Returns the compiled classic BPF program that the sandbox's PID 1
    /// installs: 8 bytes per `struct sock_filter` instruction, `code`
    /// (u16), `jt`, `jf` (u8 each) and `k` (u32), little-endian. It is
    /// empty for an unconfined policy. The first call compiles the policy;
    /// later calls, on this policy or its clones, return the same program.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] as for [`crate::Sandbox::create`].
    pub fn bpf_program(&self) -> Result<Arc<[u8]>> {
        self.program()
    }

    /// Returns the program in the wire format of
    /// `soulbox_proto::Config::seccomp_filter`, compiling it on first use.
    /// Returns the program for a sandbox with a writable host mount: this
    /// policy with [`HOST_WRITE_GUARDS`] on top. An unconfined policy has
    /// no filter to add them to, so it fails.
    pub(crate) fn program_guarding_host_writes(&self) -> Result<Arc<[u8]>> {
        let compiled = self.guarded_program.get_or_init(|| {
            if matches!(self.rules, Source::Unconfined) {
                return Err("a writable host mount needs a seccomp filter, which keeps                             setuid and setgid bits off the host; use                             SeccompPolicy::default() or SeccompPolicy::minimal(), or make                             the mount read-only"
                    .to_string());
            }
            let mut guarded = self.clone();
            for (syscall, mode) in HOST_WRITE_GUARDS {
                let setid = ArgCondition::any_bit(mode, libc::S_ISUID | libc::S_ISGID);
                guarded = guarded.deny_if(syscall, setid, libc::EPERM);
            }
            guarded = guarded.deny("openat2", libc::ENOSYS);
            guarded.compile_rules()
        });
        compiled.clone().map_err(Error::InvalidArgument)
    }

    pub(crate) fn program(&self) -> Result<Arc<[u8]>> {
        let compiled = self.program.get_or_init(|| self.compile_rules());
        compiled.clone().map_err(Error::InvalidArgument)
    }

    fn compile_rules(&self) -> std::result::Result<Arc<[u8]>, String> {
        match self.rules() {
            None => Ok(Arc::from(Vec::new())),
            Some(rules) if !rules.errors.is_empty() => Err(rules.errors.join("; ")),
            Some(rules) => {
                check_soulbox_syscalls(rules)?;
                compile::compile(rules).map(Arc::from)
            }
        }
    }

    fn from_rules(rules: Option<Rules>) -> Self {
        Self {
            rules: rules.map_or(Source::Unconfined, |rules| Source::Rules(Arc::new(rules))),
            program: Arc::default(),
            guarded_program: Arc::default(),
        }
    }

    /// Returns the rules, building the default policy's on first use;
    /// `None` for an unconfined policy.
    fn rules(&self) -> Option<&Rules> {
        match &self.rules {
            Source::Unconfined => None,
            Source::Default => Some(default_rules()),
            Source::Rules(rules) => Some(rules),
        }
    }

    /// Checks `action`, then applies `change` to the rules of `syscall`,
    /// creating them if needed.
    fn edit(
        mut self,
        syscall: &str,
        action: &SeccompAction,
        change: impl FnOnce(&mut SyscallRules),
    ) -> Self {
        let Some((name, number)) = syscalls::lookup(syscall) else {
            return self.with_error(unknown_syscall(syscall));
        };
        if let Err(message) = check_action(action, name) {
            return self.with_error(message);
        }
        self.change(|rules| {
            let entry = rules.syscalls.entry(number).or_insert(SyscallRules {
                name,
                action: None,
                conditional: Vec::new(),
            });
            change(entry);
        });
        self
    }

    fn with_error(mut self, message: String) -> Self {
        self.change(|rules| rules.errors.push(message));
        self
    }

    /// Changes the rules and drops the compiled program. An unconfined
    /// policy has no rules to change, so the change becomes an error.
    fn change(&mut self, change: impl FnOnce(&mut Rules)) {
        self.program = Arc::default();
        self.guarded_program = Arc::default();
        let mut rules = match std::mem::replace(&mut self.rules, Source::Unconfined) {
            Source::Rules(rules) => rules,
            Source::Default => Arc::new(default_rules().clone()),
            Source::Unconfined => Arc::new(Rules {
                default_action: SeccompAction::Errno(libc::ENOSYS),
                syscalls: BTreeMap::new(),
                errors: vec![
                    "an unconfined seccomp policy has no rules to change; start from \
                     SeccompPolicy::default() or SeccompPolicy::minimal()"
                        .to_string(),
                ],
            }),
        };
        change(Arc::make_mut(&mut rules));
        self.rules = Source::Rules(rules);
    }
}

/// Returns the default policy's rules, built from its table on first use.
fn default_rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let policy = default_policy::build();
        match policy.rules() {
            Some(rules) => rules.clone(),
            None => unreachable!("the default policy's table starts from a confined policy"),
        }
    })
}

/// System calls that SoulBox's own processes make once the filter is
/// installed: PID 1 serving the host and the processes that connect to the
/// sandbox (accept, poll, receive and reply, fork a supervisor, reap,
/// signal, and read /proc to find a command's processes), each command's
/// supervisor, and the command's first process until its exec. PID 1
/// passes a start request and its descriptors to a spare supervisor,
/// forked ahead of the command, with `sendmsg` over a `socketpair`.
/// Memory allocation and Rust's standard library add `brk`, `mmap`,
/// `munmap`, `mremap`, `getrandom` and `statx`. `restart_syscall` resumes
/// a wait that a pause of the sandbox interrupted.
pub const SOULBOX_SYSCALLS: &[&str] = &[
    #[cfg(target_arch = "x86_64")]
    "poll",
    #[cfg(not(target_arch = "x86_64"))]
    "ppoll",
    "accept4",
    "recvmsg",
    "sendto",
    "sendmsg",
    "socketpair",
    "read",
    "write",
    "close",
    "openat",
    "getdents64",
    "statx",
    "fcntl",
    "ioctl",
    "pipe2",
    "close_range",
    #[cfg(target_arch = "x86_64")]
    "dup2",
    #[cfg(not(target_arch = "x86_64"))]
    "dup3",
    "clone",
    "execve",
    "wait4",
    "kill",
    "exit_group",
    "set_robust_list",
    "rt_sigaction",
    "rt_sigprocmask",
    "prctl",
    "setsid",
    "chdir",
    "getcwd",
    "umask",
    "setgroups",
    "setresgid",
    "setresuid",
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "getrandom",
    "clock_gettime",
    "restart_syscall",
];

/// Rejects a policy that does not allow every call of [`SOULBOX_SYSCALLS`].
fn check_soulbox_syscalls(rules: &Rules) -> std::result::Result<(), String> {
    let missing: Vec<&str> = SOULBOX_SYSCALLS
        .iter()
        .copied()
        .filter(|name| {
            let allowed = syscalls::lookup(name)
                .and_then(|(_, number)| rules.syscalls.get(&number))
                .is_some_and(|s| s.action == Some(SeccompAction::Allow));
            !allowed
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the seccomp policy must allow {}, which the sandbox's PID 1 and command supervisors \
         make; start from SeccompPolicy::minimal() or SeccompPolicy::default()",
        missing.join(", ")
    ))
}

fn unknown_syscall(name: &str) -> String {
    format!(
        "{name:?} is not a system call of this architecture ({}); use the kernel's name, such \
         as \"mkdirat\"",
        std::env::consts::ARCH
    )
}

fn check_action(action: &SeccompAction, subject: &str) -> std::result::Result<(), String> {
    match action {
        SeccompAction::Errno(errno) if !(1..=4095).contains(errno) => Err(format!(
            "seccomp errno {errno} for {subject} is outside 1 to 4095; use a value such as \
             libc::EPERM"
        )),
        _ => Ok(()),
    }
}

impl fmt::Debug for SeccompPolicy {
    /// Lists the default action, the number of allowed calls and every
    /// other rule, rather than hundreds of allowed names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(rules) = self.rules() else {
            return f.write_str("SeccompPolicy::unconfined()");
        };
        let allowed = rules
            .syscalls
            .values()
            .filter(|s| s.action == Some(SeccompAction::Allow))
            .count();
        let others: BTreeMap<&str, (Option<SeccompAction>, usize)> = rules
            .syscalls
            .values()
            .filter(|s| s.action != Some(SeccompAction::Allow) || !s.conditional.is_empty())
            .map(|s| (s.name, (s.action, s.conditional.len())))
            .collect();
        f.debug_struct("SeccompPolicy")
            .field("default_action", &rules.default_action)
            .field("allowed", &allowed)
            .field("other_rules", &others)
            .field("errors", &rules.errors)
            .finish()
    }
}

#[cfg(test)]
mod tests;
