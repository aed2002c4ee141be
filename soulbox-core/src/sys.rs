//! Safe wrappers over the system calls the host side makes that neither
//! `nix` nor `std` covers. Every `unsafe` block of soulbox-core lives here.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a descriptor number that a successful system call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass only descriptors that a system call has just
    // created for this process and that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Returns the number of bytes waiting to be read on a pipe or terminal.
pub fn bytes_readable(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer given.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut count) })?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Opens a new pseudo-terminal pair from the devpts instance whose `ptmx`
/// is `ptmx`, sized `rows` x `cols`. Returns (controller, subsidiary).
///
/// The subsidiary end is opened with TIOCGPTPEER from the controller, not
/// by path, so no path lookup inside the sandbox is involved.
pub fn open_pty_pair(ptmx: OwnedFd, rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer given.
    check(unsafe { libc::ioctl(ptmx.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    set_window_size(ptmx.as_fd(), rows, cols)?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new
    // descriptor for the subsidiary end.
    let peer = check(unsafe { libc::ioctl(ptmx.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    Ok((ptmx, owned(peer)))
}

/// Sets a terminal's window size; the kernel sends SIGWINCH to its
/// foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer given.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
    Ok(())
}

/// Reads into `buf` without blocking; `WouldBlock` when nothing is waiting.
pub fn read_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Writes from `buf` without blocking; `WouldBlock` when the peer is full.
pub fn write_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sets O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL and F_SETFL take and return integer flags.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Fills `buf` from the kernel's random number generator with getrandom,
/// which needs no descriptor, where opening /dev/urandom needs three
/// system calls.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is writable for its whole length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match n {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 => return Err(io::Error::last_os_error()),
            n => filled += n as usize,
        }
    }
    Ok(())
}

/// Sets O_NONBLOCK on one end of a pipe that `pipe2` just made, in one
/// system call rather than [`set_nonblocking`]'s two: such an end has no
/// status flag set, and F_SETFL keeps its access mode.
pub fn make_new_pipe_end_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFL takes integer flags and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
    Ok(())
}

/// Creates a sealed, close-on-exec memfd holding `contents`. The seals forbid
/// any later write, shrink or grow, so nothing can change the executable
/// through /proc/PID/exe or a leaked descriptor.
pub fn sealed_memfd(name: &CStr, contents: &[u8]) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is a valid C string.
    let fd = owned(check(unsafe { libc::memfd_create(name.as_ptr(), flags) })?);
    let mut rest = contents;
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        rest = &rest[n as usize..];
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an integer seal set on a memfd we own.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// Everything the child of [`clone_exec`] needs, prepared before the clone so
/// that the child only makes async-signal-safe system calls.
struct ExecArgs {
    program: RawFd,
    control: RawFd,
    argv: [*const libc::c_char; 3],
    envp: [*const libc::c_char; 1],
}

/// The child side of [`clone_exec`]. It runs on its own stack while sharing
/// the parent's memory (CLONE_VM), so it must not allocate, lock or touch
/// anything another thread may hold: it only calls dup2, fcntl, execveat
/// and _exit.
extern "C" fn exec_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the ExecArgs that `clone_exec` keeps alive
    // until the child has exec'd or exited (CLONE_VFORK).
    let args = unsafe { &*(arg as *const ExecArgs) };
    // SAFETY: dup2 and fcntl are async-signal-safe and take integers.
    let moved = unsafe {
        if args.control == CONTROL_FD {
            libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
        } else {
            libc::dup2(args.control, CONTROL_FD)
        }
    };
    if moved == -1 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(126) };
    }
    // SAFETY: execveat is async-signal-safe; argv and envp are
    // NULL-terminated arrays of C strings that outlive the call, and ""
    // with AT_EMPTY_PATH executes the memfd itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            args.program,
            c"".as_ptr(),
            args.argv.as_ptr(),
            args.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(127) }
}

/// Starts `program` (an executable memfd) as the first process of the new
/// namespaces in `namespaces`, with `control` as its fd 3 and `arg`, when
/// given, as its one argument. Returns the child's pid, a pidfd for it, and
/// whether it started in `cgroup`.
///
/// The clone uses CLONE_VM | CLONE_VFORK, as posix_spawn does: the caller's
/// thread pauses until the child has exec'd, no page tables are copied, and
/// the child runs only async-signal-safe code, so this is safe to call from
/// a multi-threaded process.
///
/// With `cgroup`, a cgroup v2 directory, the child starts in it through
/// clone3's CLONE_INTO_CGROUP (Linux 5.7). That saves the `cgroup.procs`
/// write which moves a running process, and its wait for an RCU grace
/// period: from 60 µs up to several milliseconds on a busy host. Where
/// clone3 fails (an older kernel, a seccomp filter that rejects it, or an
/// architecture other than x86-64), the plain clone runs instead and the
/// caller moves the child.
pub fn clone_exec(
    program: BorrowedFd<'_>,
    arg: Option<&CStr>,
    control: BorrowedFd<'_>,
    namespaces: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<(libc::pid_t, OwnedFd, bool)> {
    const STACK_SIZE: usize = 64 * 1024;
    let name = c"soulbox-init";
    let args = ExecArgs {
        program: program.as_raw_fd(),
        control: control.as_raw_fd(),
        argv: [
            name.as_ptr(),
            arg.map_or(std::ptr::null(), CStr::as_ptr),
            std::ptr::null(),
        ],
        envp: [std::ptr::null()],
    };
    // u128 elements keep both ends of the stack 16-byte aligned, as the
    // x86-64 and aarch64 ABIs require; it grows down from the end.
    let mut stack = vec![0u128; STACK_SIZE / 16];
    let base = stack.as_mut_ptr() as usize;
    let mut pidfd: libc::c_int = -1;
    let flags = namespaces | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD;
    if let Some(cgroup) = cgroup {
        if let Some(pid) = clone3_into_cgroup(&args, base, STACK_SIZE, flags, cgroup, &mut pidfd) {
            drop(stack);
            return Ok((pid, owned(pidfd), true));
        }
    }
    // SAFETY: `exec_child` only reads `args`, which lives until clone
    // returns; with CLONE_VFORK clone returns only after the child has
    // exec'd or exited, so neither `args` nor `stack` is freed while the
    // child uses them. CLONE_PIDFD stores the pidfd in `pidfd`.
    let pid = unsafe {
        libc::clone(
            exec_child,
            (base + STACK_SIZE) as *mut libc::c_void,
            flags | libc::SIGCHLD,
            &args as *const ExecArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let pid = check(pid)?;
    drop(stack);
    Ok((pid, owned(pidfd), false))
}

/// Clones this process the way fork does, as the first process of the new
/// namespaces in `namespaces`, and runs `entry` in the child with `control`
/// moved to fd 3. The child runs on a copy of this process's memory and
/// never returns from here. Returns the child's pid, a pidfd for it, and
/// whether it started in `cgroup` (CLONE_INTO_CGROUP, as in
/// [`clone_exec`]).
///
/// Returns `None` without a clone when this process has more than one
/// thread, because in the child the allocator's and other locks may be
/// held by threads that do not exist there.
pub fn clone_into(
    namespaces: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    control: BorrowedFd<'_>,
    entry: fn() -> !,
) -> io::Result<Option<(libc::pid_t, OwnedFd, bool)>> {
    if thread_count()? != 1 {
        return Ok(None);
    }
    // Where the kernel reports glibc's thread id address, the child's
    // thread id is written there, as glibc's fork does, so that the C
    // library's record stays true in the child.
    let tid_address = tid_address().ok();
    let flags = u64::from(namespaces as u32);
    let mut forked = clone3_fork(flags, cgroup, tid_address);
    let mut in_cgroup = cgroup.is_some();
    if forked.is_err() && in_cgroup {
        // The caller moves the child into its cgroup afterwards.
        in_cgroup = false;
        forked = clone3_fork(flags, None, tid_address);
    }
    match forked? {
        Forked::Child => {
            // SAFETY: dup2 and fcntl take integers; fd 3 is replaced on
            // purpose in the child, which never returns into code that
            // owns it.
            let moved = unsafe {
                if control.as_raw_fd() == CONTROL_FD {
                    libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(control.as_raw_fd(), CONTROL_FD)
                }
            };
            if moved == -1 {
                // SAFETY: _exit ends the child without running this
                // process's destructors or atexit hooks.
                unsafe { libc::_exit(126) };
            }
            entry()
        }
        Forked::Parent { pid, pidfd } => Ok(Some((pid, pidfd, in_cgroup))),
    }
}

/// PID 1's control socket, as soulbox-init expects it.
const CONTROL_FD: RawFd = 3;

/// Returns the number of threads of this process, from /proc/self/stat.
fn thread_count() -> io::Result<u64> {
    // One read into a buffer larger than the line: std::fs::read would make
    // several, each a system call on the create path.
    let mut buf = [0u8; 4096];
    let len = std::io::Read::read(&mut std::fs::File::open("/proc/self/stat")?, &mut buf)?;
    let stat = &buf[..len];
    // The name in brackets may contain spaces and brackets. The fields
    // after its last ')' start with field 3, the state, and the thread
    // count is field 20.
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat");
    let name_end = stat.iter().rposition(|&b| b == b')').ok_or_else(invalid)?;
    let fields = std::str::from_utf8(&stat[name_end + 1..]).map_err(|_| invalid())?;
    fields
        .split_ascii_whitespace()
        .nth(20 - 3)
        .and_then(|count| count.parse().ok())
        .ok_or_else(invalid)
}

/// Returns the address at which the kernel clears this thread's id when it
/// exits (PR_GET_TID_ADDRESS, which needs CONFIG_CHECKPOINT_RESTORE): where
/// glibc keeps the thread id.
fn tid_address() -> io::Result<u64> {
    let mut address: *mut libc::c_int = std::ptr::null_mut();
    // SAFETY: PR_GET_TID_ADDRESS stores one pointer at the address passed,
    // which points at `address`.
    check(unsafe {
        libc::prctl(
            libc::PR_GET_TID_ADDRESS,
            &mut address as *mut *mut libc::c_int as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(address as u64)
}

/// The two returns of [`clone3_fork`].
enum Forked {
    Child,
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// Forks with clone3: `flags` plus CLONE_PIDFD, SIGCHLD at exit, in
/// `cgroup` when given (CLONE_INTO_CGROUP), and with `tid_address` the
/// child's thread id written there in the child (CLONE_CHILD_SETTID).
/// soulbox-init has its own copy for the zygote, because this library does
/// not link PID 1's code.
fn clone3_fork(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
    tid_address: Option<u64>,
) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut flags = flags | libc::CLONE_PIDFD as u64;
    if tid_address.is_some() {
        flags |= (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
    }
    if cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }

    let args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        child_tid: tid_address.unwrap_or(0),
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
    };

    // SAFETY: without CLONE_VM the child runs on a copy of this address
    // space and returns from the call as fork's child does. The caller
    // checked that this process has one thread, so no lock can be held by
    // a thread that does not exist in the child. `args` is a valid
    // clone_args of the size passed, and CLONE_PIDFD stores the pidfd in
    // `pidfd`.
    let ret = check_long(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;

    if ret == 0 {
        return Ok(Forked::Child);
    }
    Ok(Forked::Parent {
        pid: ret as libc::pid_t,
        pidfd: owned(pidfd),
    })
}

/// `struct clone_args` from <linux/sched.h>, up to the `cgroup` field
/// (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// CLONE_INTO_CGROUP from <linux/sched.h>; it only fits clone3's 64-bit flags.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Runs [`exec_child`] through clone3 with CLONE_INTO_CGROUP on the given
/// stack. Returns the child's pid, or `None` when clone3 failed and the
/// caller should fall back to clone.
#[cfg(target_arch = "x86_64")]
fn clone3_into_cgroup(
    args: &ExecArgs,
    stack: usize,
    stack_size: usize,
    flags: libc::c_int,
    cgroup: BorrowedFd<'_>,
    pidfd: &mut libc::c_int,
) -> Option<libc::pid_t> {
    let clone_args = CloneArgs {
        // The namespace and CLONE_* bits all fit in the low 32 bits.
        flags: u64::from(flags as u32) | CLONE_INTO_CGROUP,
        pidfd: pidfd as *mut libc::c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: stack_size as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    let ret: libc::c_long;
    // SAFETY: clone3 returns twice. The parent gets the child's pid (or
    // -errno) in rax and continues below with every other register intact
    // except rcx and r11, which the syscall instruction clobbers. The child
    // gets 0 and the stack pointer at the 16-byte aligned end of `stack`;
    // it calls exec_child(args), which only makes async-signal-safe calls
    // and execs or exits, and exits itself should exec_child return. It
    // never returns into Rust code, so the registers and stack this
    // function's caller relies on are untouched. With CLONE_VFORK the
    // parent resumes only after the child has exec'd or exited, so `args`
    // and the stack outlive the child's use of them.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &clone_args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") exec_child as extern "C" fn(*mut libc::c_void) -> libc::c_int,
            in("r13") args as *const ExecArgs,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    libc::pid_t::try_from(ret).ok().filter(|&pid| pid > 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn clone3_into_cgroup(
    _args: &ExecArgs,
    _stack: usize,
    _stack_size: usize,
    _flags: libc::c_int,
    _cgroup: BorrowedFd<'_>,
    _pidfd: &mut libc::c_int,
) -> Option<libc::pid_t> {
    // NOTE: the clone3 trampoline exists for x86-64 only; elsewhere PID 1
    // is moved into its cgroup with a cgroup.procs write.
    None
}

/// Sends `signal` to the process behind `pidfd`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: with a null siginfo the kernel fills it as kill(2) would.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Exit status of a reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// It called exit with this code.
    Exited(i32),
    /// This signal killed it.
    Signaled(i32),
    /// It was already reaped elsewhere (for example SIGCHLD is ignored).
    Gone,
}

/// Reaps the child behind `pidfd`; with `block` false, returns `Ok(None)`
/// if it is still running.
pub fn pidfd_wait(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<Reaped>> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `info` is writable and zeroed, so si_pid reads 0 when
        // WNOHANG finds nothing.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                info.as_mut_ptr(),
                flags,
            )
        };
        if ret == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(Some(Reaped::Gone)),
            _ => return Err(err),
        }
    }
    // SAFETY: waitid succeeded, so `info` is initialised.
    let info = unsafe { info.assume_init() };
    // SAFETY: for waitid results the kernel fills the SIGCHLD fields read here.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(if info.si_code == libc::CLD_EXITED {
        Reaped::Exited(status)
    } else {
        Reaped::Signaled(status)
    }))
}

/// Sends one datagram with `fds` attached (SCM_RIGHTS). Does not block:
/// returns `WouldBlock` when the socket buffer is full.
pub fn send_with_fds(sock: BorrowedFd<'_>, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let payload_len = std::mem::size_of_val(raw.as_slice()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is a constant computation.
    let space = unsafe { libc::CMSG_SPACE(payload_len) } as usize;
    let mut cmsg_buf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer is CMSG_SPACE(payload) bytes, so the
        // first header and its payload fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len) as usize;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                raw.len(),
            );
        }
    }
    loop {
        // SAFETY: `msg` points at `iov`, `buf` and `cmsg_buf`, all live.
        let n = unsafe {
            libc::sendmsg(
                sock.as_raw_fd(),
                &msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Opens `path` below `root` with openat2 and RESOLVE_IN_ROOT, so that
/// absolute symlinks and `..` resolve against `root` and never leave it,
/// and with RESOLVE_NO_MAGICLINKS so /proc links cannot jump out either.
pub fn openat2_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    openat2(
        root,
        path,
        flags,
        mode,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens the relative `path` below `dir` with openat2, rejecting `..` that
/// leaves `dir`, absolute paths and every symlink on the way
/// (RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS).
pub fn openat2_beneath(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    openat2(
        dir,
        path,
        flags,
        0,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )
}

/// Runs openat2 with the `resolve` flags, retrying where openat2(2) asks
/// for a retry.
fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // struct open_how from <linux/openat2.h>: flags, mode, resolve (all u64).
    let how: [u64; 3] = [(flags | libc::O_CLOEXEC) as u64, u64::from(mode), resolve];
    loop {
        // SAFETY: `path` is a valid C string and `how` a 24-byte open_how
        // whose size is passed alongside it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                how.as_ptr(),
                std::mem::size_of_val(&how),
            )
        };
        match check_long(ret) {
            Ok(fd) => return Ok(owned(fd as libc::c_int)),
            // openat2 returns EAGAIN when a concurrent rename could have
            // made the lookup unsafe; the man page tells callers to retry.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates directory `name` inside the directory `dir`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

/// Renames `from` to `to`, failing with EEXIST instead of replacing `to`.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid C strings; renameat2 (Linux 3.15, glibc
    // 2.28) takes descriptors, paths and integer flags.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })?;
    Ok(())
}

/// Returns this process's RLIMIT_NOFILE as (soft, hard).
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut limit = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit writes one rlimit to the pointer given.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, limit.as_mut_ptr()) })?;
    // SAFETY: getrlimit succeeded, so `limit` is initialised.
    let limit = unsafe { limit.assume_init() };
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets this process's soft RLIMIT_NOFILE, keeping the hard limit.
pub fn set_nofile_soft_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the rlimit given.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    Ok(())
}

/// Returns the effective user id.
/// Moves the calling thread to the scheduler's idle policy, with
/// `SCHED_RESET_ON_FORK`, so that processes it starts get the normal one.
pub fn set_thread_idle_priority() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0
    // is the calling thread.
    check(unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE | libc::SCHED_RESET_ON_FORK, &param)
    })?;
    Ok(())
}

/// Returns the longest argument or environment string, in bytes without
/// its terminating NUL, that exec accepts: Linux's MAX_ARG_STRLEN, 32
/// pages.
pub fn exec_string_limit() -> usize {
    // SAFETY: sysconf takes a plain constant and returns -1 or the value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096) * 32 - 1
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments and always succeeds (getuid(2)).
    unsafe { libc::geteuid() }
}

/// Returns the effective group id.
pub fn getegid() -> u32 {
    // SAFETY: getegid takes no arguments and always succeeds (getgid(2)).
    unsafe { libc::getegid() }
}

/// Converts bytes to a C string, or EINVAL if they contain a NUL.
pub fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Returns whether the process behind `pidfd` has exited, without reaping it.
pub fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid array of one pollfd; a zero timeout only polls.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    ready > 0 && fds[0].revents & libc::POLLIN != 0
}

/// Writes the uid and gid maps of a child in a new user namespace: sandbox
/// root is the caller, and setgroups is denied as unprivileged maps require.
pub fn write_id_maps(pid: libc::pid_t, uid: u32, gid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1"))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1"))?;
    Ok(())
}

/// Registers `fd` with the tokio reactor of the current runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes the OwnedFd by value, so the descriptor is
    // open, cannot be closed by anyone else while registered, and
    // OwnedFd::as_raw_fd always returns the same number.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into())
}

/// Clears O_NONBLOCK on `fd`.
pub fn clear_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL and F_SETFL take and return integer flags.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    Ok(())
}

// The file API's system calls: lookups below a directory that follow no
// symlink, *at calls on single names, per-thread file system credentials
// and inotify.

/// RESOLVE_* flags of openat2, from <linux/openat2.h>.
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Rejects what is not a single path component: an empty name, `.`, `..`
/// or a name that contains '/'. The *at wrappers below take only such
/// names, so a lookup never climbs out of the directory it starts in.
fn check_name(name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

/// Opens `name`, a single path component, in the directory `dir`.
/// RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS make the kernel reject a
/// symlink (ELOOP), and so a name that sandboxed code swapped for a symlink
/// is never followed; with O_PATH | O_NOFOLLOW a symlink opens as itself.
pub fn openat2_name(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    check_name(name)?;
    openat2(
        dir,
        name,
        flags,
        mode,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )
}

/// Returns the status of `name` in `dir` without following a symlink.
pub fn fstatat_name(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    check_name(name)?;
    fstatat_flags(dir, name, libc::AT_SYMLINK_NOFOLLOW)
}

/// Returns the status of the file behind `fd`, which may be an O_PATH
/// descriptor of a symlink (then the symlink's own status).
pub fn fstat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    fstatat_flags(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

fn fstatat_flags(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a valid C string and `stat` is writable memory of
    // the size fstatat fills.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), stat.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so it filled `stat`.
    Ok(unsafe { stat.assume_init() })
}

/// Returns the target of the symlink `name` in `dir`.
pub fn readlinkat_name(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    check_name(name)?;
    readlinkat_raw(dir, name)
}

/// Returns the target of the symlink behind `fd`, an O_PATH | O_NOFOLLOW
/// descriptor.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    readlinkat_raw(fd, c"")
}

fn readlinkat_raw(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    // A symlink's target is at most PATH_MAX - 1 bytes long.
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `name` is a valid C string and `buf` is writable for its
    // length.
    let len = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = check_long(len as libc::c_long)? as usize;
    buf.truncate(len);
    Ok(buf)
}

/// Removes `name` from `dir`: a directory with `remove_dir`, otherwise
/// anything but a directory (a symlink itself, never its target).
pub fn unlinkat_name(dir: BorrowedFd<'_>, name: &CStr, remove_dir: bool) -> io::Result<()> {
    check_name(name)?;
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

/// Renames `old_name` in `old_dir` to `new_name` in `new_dir`, replacing
/// what `new_name` names as rename(2) does. Neither name is followed if
/// it is a symlink.
pub fn renameat_names(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    check_name(old_name)?;
    check_name(new_name)?;
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::renameat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
        )
    })?;
    Ok(())
}

/// Reads the next directory entries of `dir` into `buf` as
/// `struct linux_dirent64` records; returns the number of bytes filled,
/// 0 at the end of the directory.
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is writable for its length, which is passed along.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        match check_long(ret) {
            Ok(len) => return Ok(len as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The calling thread's file system credentials from before
/// [`switch_fs_credentials`]; dropping the guard restores them on the same
/// thread. It is neither `Send` nor `Sync`, so it cannot be dropped on
/// another thread.
#[derive(Debug)]
pub struct FsCredentialsGuard {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<libc::gid_t>,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

/// Makes the calling thread, and only it, access files as `uid`:`gid`
/// with no supplementary groups, until the returned guard is dropped.
///
/// It uses the raw setfsuid, setfsgid and setgroups system calls, which
/// change one thread's credentials. glibc's setgroups wrapper would apply
/// the change to every thread of the process. Switching the fsuid from 0
/// to another id also clears the file capabilities (CAP_DAC_OVERRIDE,
/// CAP_FOWNER and the others that setfsuid(2) lists) from the thread's
/// effective set, so the kernel checks permissions as for that user.
/// Switching it back to 0 restores them.
///
/// # Errors
///
/// The OS error, EPERM included, when the caller lacks CAP_SETUID or
/// CAP_SETGID. The thread's credentials are then restored before this
/// returns.
pub fn switch_fs_credentials(uid: u32, gid: u32) -> io::Result<FsCredentialsGuard> {
    // The guard exists before anything changes, so an error below restores
    // whatever part of the switch already happened.
    let guard = FsCredentialsGuard {
        fsuid: thread_fsuid(),
        fsgid: thread_fsgid(),
        groups: thread_groups()?,
        _thread_bound: std::marker::PhantomData,
    };
    set_thread_groups(&[])?;
    set_thread_fsgid(gid)?;
    set_thread_fsuid(uid)?;
    Ok(guard)
}

impl Drop for FsCredentialsGuard {
    fn drop(&mut self) {
        // The fsuid goes first: returning to 0 gives back the file
        // capabilities before the other steps.
        let restored = set_thread_fsuid(self.fsuid)
            .and_then(|()| set_thread_fsgid(self.fsgid))
            .and_then(|()| set_thread_groups(&self.groups));
        if let Err(e) = restored {
            // A thread left with a sandbox user's credentials would run
            // whatever the runtime schedules on it next, other sandboxes'
            // file calls included, with the wrong access rights. No caller
            // can recover from that, so the process stops here.
            eprintln!("soulbox: failed to restore a thread's file system credentials: {e}");
            std::process::abort();
        }
    }
}

/// Returns the calling thread's fsuid.
fn thread_fsuid() -> u32 {
    // SAFETY: setfsuid with an invalid id (-1) changes nothing and returns
    // the current fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
}

/// Returns the calling thread's fsgid.
fn thread_fsgid() -> u32 {
    // SAFETY: setfsgid with an invalid id (-1) changes nothing and returns
    // the current fsgid.
    unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 }
}

/// Sets the calling thread's fsuid. setfsuid(2) reports no error, so the
/// result is read back.
fn set_thread_fsuid(uid: u32) -> io::Result<()> {
    // SAFETY: setfsuid takes an integer and touches no memory.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    if thread_fsuid() == uid {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// Sets the calling thread's fsgid, checked as in [`set_thread_fsuid`].
fn set_thread_fsgid(gid: u32) -> io::Result<()> {
    // SAFETY: setfsgid takes an integer and touches no memory.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    if thread_fsgid() == gid {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// Returns the calling thread's supplementary groups.
fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    loop {
        // SAFETY: a size of 0 only returns the number of groups.
        let count = check_long(unsafe {
            libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>())
        })?;
        let mut groups = vec![0 as libc::gid_t; count as usize];
        // SAFETY: `groups` is writable for `count` entries.
        let filled = unsafe { libc::syscall(libc::SYS_getgroups, count, groups.as_mut_ptr()) };
        match check_long(filled) {
            Ok(filled) => {
                groups.truncate(filled as usize);
                return Ok(groups);
            }
            // The list grew between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sets the calling thread's supplementary groups with the raw system
/// call, which unlike glibc's wrapper leaves the other threads alone.
fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: `groups` is readable for its length, which is passed along.
    check_long(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    Ok(())
}

/// Creates a non-blocking, close-on-exec inotify instance.
pub fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes integer flags.
    let fd = check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    Ok(owned(fd))
}

/// Adds a watch for the directory behind `dir` to `inotify` and returns
/// its watch descriptor. The path handed to the kernel is this process's
/// /proc/self/fd/N link to `dir`, so the watch lands on exactly the inode
/// that `dir` was opened on, however `dir` was found.
pub fn inotify_add_watch_fd(
    inotify: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    mask: u32,
) -> io::Result<i32> {
    let path = c_string(format!("/proc/self/fd/{}", dir.as_raw_fd()).as_bytes())?;
    // SAFETY: `path` is a valid C string.
    check(unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) })
}

/// Removes the watch `wd` from `inotify`.
pub fn inotify_rm_watch(inotify: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes integers.
    check(unsafe { libc::inotify_rm_watch(inotify.as_raw_fd(), wd) })?;
    Ok(())
}

/// Reads from `fd` into `buf`; returns `WouldBlock` when a non-blocking
/// descriptor has nothing to read.
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_long(n as libc::c_long) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

// State entries and connections between host processes: the lock that
// separates a live sandbox from a dead one, the listening socket that PID 1
// serves, and the pidfd of a PID 1 that is not this process's child.

/// Takes an exclusive `flock` on `fd`. Without `block`, returns `Ok(false)`
/// when another open file description holds it.
pub fn flock_exclusive(fd: BorrowedFd<'_>, block: bool) -> io::Result<bool> {
    let operation = libc::LOCK_EX | if block { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: flock takes a descriptor and an integer.
        match check(unsafe { libc::flock(fd.as_raw_fd(), operation) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// SO_PEERPIDFD from <asm-generic/socket.h> (Linux 6.5 and later).
const SO_PEERPIDFD: libc::c_int = 77;

/// Returns a pidfd for the process that called `listen` on the socket that
/// `sock` is connected to. Falls back to SO_PEERCRED and pidfd_open before
/// Linux 6.5; the caller then confirms the process is still the peer.
pub fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of their sizes.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if ret == 0 && fd >= 0 {
        return Ok(owned(fd));
    }
    let err = io::Error::last_os_error();
    if ret == 0 || err.raw_os_error() != Some(libc::ENOPROTOOPT) {
        return Err(if ret == 0 {
            io::Error::from_raw_os_error(libc::ESRCH)
        } else {
            err
        });
    }
    pidfd_open(peer_pid(sock)?)
}

/// Returns the pid of the process that called `listen` on the socket that
/// `sock` is connected to, in this process's PID namespace.
pub fn peer_pid(sock: BorrowedFd<'_>) -> io::Result<libc::pid_t> {
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of their sizes.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            cred.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    // SAFETY: getsockopt succeeded and filled the ucred.
    Ok(unsafe { cred.assume_init() }.pid)
}

/// Returns the pids of this process's children: every process whose
/// parent, in /proc/PID/stat, is this process. It reads the stat file of
/// every process, so it suits rare paths only. Each thread's
/// /proc/self/task/TID/children list would be cheaper, but a child moves
/// to another thread's list when its parent thread exits, and a scan of
/// the lists during that move can miss it.
pub fn child_pids() -> Vec<libc::pid_t> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The fields after the command name, which may contain spaces
            // and parentheses, are the state and then the parent's pid.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .is_some_and(|parent| parent == me)
        })
        .collect()
}

/// Opens a pidfd for `pid`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    Ok(owned(fd as libc::c_int))
}

/// Returns the pid behind `pidfd`, read from /proc/self/fdinfo.
pub fn pidfd_pid(pidfd: BorrowedFd<'_>) -> io::Result<libc::pid_t> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    info.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .filter(|pid: &libc::pid_t| *pid > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

/// Waits until the process behind `pidfd` has exited, for at most
/// `timeout_ms` (negative: no limit). Returns whether it has. Works for
/// processes that are not this process's children, which waitid cannot wait
/// for.
pub fn pidfd_wait_exit(pidfd: BorrowedFd<'_>, timeout_ms: libc::c_int) -> bool {
    poll_readable(pidfd, timeout_ms).unwrap_or(false)
}

/// Returns the file system statistics of the file system holding `fd`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut stats = MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `stats` is valid for writes of one statvfs.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), stats.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded and filled it.
    Ok(unsafe { stats.assume_init() })
}

/// Waits up to `timeout_ms` (negative: no limit) for `fd` to turn
/// readable, or to report end of file or an error. Returns whether it did.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    loop {
        // SAFETY: `fds` is a valid array of one pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
        match ready {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            0 => return Ok(false),
            _ => return Ok(true),
        }
    }
}

/// Raises the send buffer of the `SOCK_SEQPACKET` socket `sock` to fit a
/// message of the protocol's largest size. Such a socket rejects a message
/// larger than its send buffer with EMSGSIZE, and the default buffer
/// (net.core.wmem_default, 212,992 bytes on most hosts) is smaller. The
/// kernel caps the requested value at net.core.wmem_max, then doubles it.
pub fn fit_largest_message(sock: BorrowedFd<'_>) -> io::Result<()> {
    let size = libc::c_int::try_from(soulbox_proto::MAX_MESSAGE_LEN).unwrap_or(libc::c_int::MAX);
    // SAFETY: SO_SNDBUF reads one int, passed by pointer with its size.
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Creates a close-on-exec `SOCK_SEQPACKET` socket pair.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let pair = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok(pair)
}

/// Receives one datagram into `buf` without blocking, with the descriptors
/// passed along with it (SCM_RIGHTS, marked close-on-exec). Returns
/// `(0, [])` at end of file.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
    let msg = loop {
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Err(nix::errno::Errno::EINTR) => continue,
            result => break result?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received.into_iter().map(owned));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((msg.bytes, fds))
}

/// A namespace of a process that [`pidfd_namespace`] opens.
#[derive(Debug, Clone, Copy)]
pub enum Namespace {
    Mount,
    Network,
    User,
}

impl Namespace {
    /// Returns the `PIDFD_GET_*_NAMESPACE` request from <linux/pidfd.h>,
    /// `_IO(0xFF, N)`, since Linux 6.11.
    fn pidfd_request(self) -> libc::c_ulong {
        match self {
            Self::Mount => 0xFF03,
            Self::Network => 0xFF04,
            Self::User => 0xFF09,
        }
    }

    /// Returns the namespace's file name under /proc/PID/ns.
    fn proc_name(self) -> &'static str {
        match self {
            Self::Mount => "mnt",
            Self::Network => "net",
            Self::User => "user",
        }
    }
}

/// Opens the `namespace` of the live process behind `pidfd`. The
/// descriptor holds a reference to the namespace, which then outlives the
/// process's exit until the descriptor is closed. Kernels older than 6.11
/// lack the pidfd ioctl, so there the namespace is opened through
/// /proc/`pid`/ns/NAME. `pidfd` then confirms that `pid` was still the same
/// process at that moment.
pub fn pidfd_namespace(
    pidfd: BorrowedFd<'_>,
    pid: libc::pid_t,
    namespace: Namespace,
) -> io::Result<OwnedFd> {
    let request = namespace.pidfd_request();
    // SAFETY: the ioctl takes no argument and returns a new descriptor or -1.
    match check(unsafe { libc::ioctl(pidfd.as_raw_fd(), request, 0) }) {
        Ok(fd) => return Ok(owned(fd)),
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
            return Err(e);
        }
        Err(_) => {}
    }
    let path = CString::new(format!("/proc/{pid}/ns/{}", namespace.proc_name()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is a valid C string; open returns a new descriptor or -1.
    let fd = owned(check(unsafe {
        libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
    })?);
    if pidfd_exited(pidfd) {
        // The pid may have been reused by another process before the open.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(fd)
}

/// Creates an empty, close-on-exec memfd named `name`.
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    Ok(owned(fd))
}

/// Starts `command` as an orphan and returns once its program runs. The
/// child that [`std::process::Command::spawn`] makes forks once more and
/// exits at once, so the program runs in a grandchild that the kernel gives
/// to the nearest child subreaper, normally the host's init, which reaps it
/// whenever it exits. This process never has it as a child, so it can
/// neither leave it a zombie nor have to outlive it. `inherit` are
/// descriptors that the program gets under the same numbers: their
/// close-on-exec flag is cleared in the child only.
///
/// # Errors
///
/// The error of the fork or the exec, such as ENOENT for a missing program.
pub fn spawn_orphan(command: &mut std::process::Command, inherit: &[RawFd]) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let inherit = inherit.to_vec();
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe calls (fcntl, signal, fork, _exit), and it allocates
    // nothing: `inherit` was built before the fork.
    unsafe {
        command.pre_exec(move || {
            for &fd in &inherit {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
            // An ignored SIGCHLD survives exec, and the program could then
            // not wait for its own children.
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    // The spawn returns once the grandchild has exec'd, or with the error
    // that its exec reported, because the grandchild inherits the write
    // end of std's close-on-exec error pipe, which its exec closes.
    let mut intermediate = command.spawn()?;
    match intermediate.wait() {
        // A process that ignores SIGCHLD has its children reaped by the
        // kernel, so there is nothing left to wait for.
        Err(error) if error.raw_os_error() == Some(libc::ECHILD) => Ok(()),
        Err(error) => Err(error),
        Ok(_) => Ok(()),
    }
}
