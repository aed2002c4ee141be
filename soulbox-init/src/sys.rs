//! Thin safe wrappers over the system calls PID 1 makes. Every `unsafe`
//! block of this crate lives here.
//!
//! PID 1 is single-threaded, so the calls here may run in forked children
//! without the restrictions that apply after fork in a threaded process.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Converts a -1 return into the thread's OS error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a -1 return of a `long`-returning call into the OS error.
fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the prctl options used by this crate take integer arguments
    // only; unused trailing arguments are passed as zero, as prctl(2) requires.
    check(unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) })?;
    Ok(())
}

/// Overwrites this process's argument and environment strings, which the
/// kernel placed on the initial stack at exec and shows in /proc/PID/cmdline
/// and /proc/PID/environ: the arguments with `name` (cut to fit) followed by
/// zeros, the environment with zeros. Any process may read
/// /proc/PID/cmdline, so a process that goes on without an exec hides its
/// creator's arguments this way; their length still shows. The addresses
/// come from /proc/self/stat.
pub fn overwrite_arguments_and_environment(name: &CStr) -> io::Result<()> {
    let [arg_start, arg_end, env_start, env_end] = argument_and_environment_ranges()?;
    let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
    let arg_len = arg_end.checked_sub(arg_start).ok_or_else(invalid)?;
    let env_len = env_end.checked_sub(env_start).ok_or_else(invalid)?;
    let name = name.to_bytes();
    // One byte stays for the terminating NUL.
    let name_len = name.len().min(arg_len.saturating_sub(1));
    // SAFETY: the kernel reports these ranges of the initial stack, which
    // it mapped writable at exec. They contain only the strings that argv
    // and environ point at, and no Rust reference borrows them while this
    // writes. Each length is its own range's, and `name_len` fits.
    unsafe {
        let args = arg_start as *mut u8;
        std::ptr::write_bytes(args, 0, arg_len);
        std::ptr::copy_nonoverlapping(name.as_ptr(), args, name_len);
        std::ptr::write_bytes(env_start as *mut u8, 0, env_len);
    }
    Ok(())
}

/// `struct prctl_mm_map` from <linux/prctl.h>: the memory layout that
/// PR_SET_MM_MAP sets, including the range /proc/PID/cmdline shows.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MemoryMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// Returns this process's memory layout with its arguments cut after the
/// NUL that ends the first one, for [`set_memory_map`]. The fields come
/// from /proc/self/stat (proc(5)). The program break is left for
/// [`set_memory_map`] to read, because it moves as the heap grows.
pub fn memory_map_with_first_argument() -> io::Result<MemoryMap> {
    let fields = stat_fields()?;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat");
    let field = |number: usize| -> io::Result<u64> {
        fields
            .get(number - 3)
            .and_then(|field| field.parse().ok())
            .ok_or_else(invalid)
    };
    let [arg_start, arg_end] = [field(48)?, field(49)?];
    let arg_len = arg_end.checked_sub(arg_start).ok_or_else(invalid)? as usize;
    // SAFETY: the kernel reports this range of the initial stack, which it
    // mapped at exec and which stays mapped. It contains only the argument
    // strings, and nothing writes them while this reads.
    let args = unsafe { std::slice::from_raw_parts(arg_start as *const u8, arg_len) };
    let first_len = args.iter().position(|&b| b == 0).ok_or_else(invalid)? + 1;
    Ok(MemoryMap {
        start_code: field(26)?,
        end_code: field(27)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        brk: 0,
        start_stack: field(28)?,
        arg_start,
        arg_end: arg_start + first_len as u64,
        env_start: field(50)?,
        env_end: field(51)?,
        // No auxiliary vector and exe_fd -1 leave both unchanged.
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    })
}

/// Sets this process's memory layout to `map` with the current program
/// break. PR_SET_MM_MAP needs Linux 3.18 or later built with
/// CONFIG_CHECKPOINT_RESTORE. On Linux 6.18 it worked for a root process
/// without CAP_SYS_RESOURCE, which the single-field PR_SET_MM options
/// need. With a map from [`memory_map_with_first_argument`], only
/// /proc/PID/cmdline changes.
pub fn set_memory_map(map: &MemoryMap) -> io::Result<()> {
    let mut map = *map;
    // SAFETY: brk with 0 changes nothing and returns the current break.
    map.brk = unsafe { libc::syscall(libc::SYS_brk, 0 as libc::c_ulong) } as u64;
    // SAFETY: PR_SET_MM_MAP reads one prctl_mm_map of the size given from
    // the address given, and `map` is one that outlives the call.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as libc::c_ulong,
            &map as *const MemoryMap as libc::c_ulong,
            std::mem::size_of::<MemoryMap>() as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// Returns the fields of /proc/self/stat after the command name, from
/// field 3 on.
fn stat_fields() -> io::Result<Vec<String>> {
    // One read into a buffer larger than the line: std::fs::read would make
    // several, each a system call.
    let mut buf = [0u8; 4096];
    let len = std::io::Read::read(&mut std::fs::File::open("/proc/self/stat")?, &mut buf)?;
    let stat = &buf[..len];
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat");
    // The name in brackets may contain spaces and brackets.
    let name_end = stat.iter().rposition(|&b| b == b')').ok_or_else(invalid)?;
    let fields = std::str::from_utf8(&stat[name_end + 1..]).map_err(|_| invalid())?;
    Ok(fields
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect())
}

/// Returns the start and end addresses of this process's arguments and of
/// its environment: fields 48 to 51 of /proc/self/stat (Linux 3.5).
fn argument_and_environment_ranges() -> io::Result<[usize; 4]> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat");
    let fields = stat_fields()?;
    let mut fields = fields.iter().skip(48 - 3);
    let mut ranges = [0usize; 4];
    for value in &mut ranges {
        *value = fields
            .next()
            .and_then(|field| field.parse().ok())
            .ok_or_else(invalid)?;
    }
    Ok(ranges)
}

/// Sets the calling thread's scheduling policy (`SCHED_IDLE`,
/// `SCHED_OTHER`, ...) with priority 0, which the non-real-time policies
/// require.
pub fn set_scheduler(policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0
    // is the calling thread.
    check(unsafe { libc::sched_setscheduler(0, policy, &param) })?;
    Ok(())
}

/// Returns whether the calling thread runs under `SCHED_IDLE`.
pub fn is_idle_priority() -> bool {
    // SAFETY: sched_getscheduler takes a plain pid; 0 is the caller.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy >= 0 && policy & !libc::SCHED_RESET_ON_FORK == libc::SCHED_IDLE
}

/// Sets the process name shown in /proc/PID/comm (at most 15 bytes).
pub fn set_name(name: &CStr) -> io::Result<()> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes,
    // and `name` is a valid C string that outlives the call.
    check(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) })?;
    Ok(())
}

/// Closes, or marks close-on-exec, every descriptor from `first` upwards.
pub fn close_range_from(first: u32, cloexec: bool) -> io::Result<()> {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range takes plain integers; closing descriptors that no
    // Rust object owns is what the caller asks for, and callers own no
    // OwnedFd in that range.
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) })?;
    Ok(())
}

/// Blocks `signals` for the calling thread.
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is an initialised sigset_t and the old mask is not read.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    Ok(())
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: sigemptyset above initialised the set.
    let mut set = unsafe { set.assume_init() };
    for &signal in signals {
        // SAFETY: `set` is initialised; an invalid signal number only fails.
        unsafe { libc::sigaddset(&mut set, signal) };
    }
    set
}

/// Restores every signal to its default action and unblocks all of them, as
/// a freshly started program expects.
pub fn reset_signals() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is a valid disposition for every catchable signal;
        // the numbers glibc reserves for itself only fail with EINVAL.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    unblock_all_signals();
}

/// Unblocks every signal.
pub fn unblock_all_signals() {
    let empty = sigset(&[]);
    // SAFETY: `empty` is an initialised sigset_t.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
}

/// Restores the default action of `signal`.
pub fn default_signal(signal: libc::c_int) {
    // SAFETY: SIG_DFL is a valid disposition for every catchable signal.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Ignores `signal`.
pub fn ignore_signal(signal: libc::c_int) {
    // SAFETY: SIG_IGN is a valid disposition for every catchable signal.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
}

/// Opens a signalfd that reports `signals`, which must already be blocked.
pub fn signalfd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: -1 requests a new descriptor, and `set` is initialised.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Drains pending signal records from a non-blocking signalfd.
pub fn drain_signalfd(fd: BorrowedFd<'_>) {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    loop {
        // SAFETY: the buffer is exactly one signalfd_siginfo long.
        let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
        if n != size as isize {
            return;
        }
    }
}

/// Receives one datagram and up to `max_fds` descriptors passed with it.
/// Returns `Ok(None)` when the peer closed the socket.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for max_fds descriptors, aligned as cmsghdr requires.
    let mut cmsg_buf = vec![0u64; 8 + max_fds];
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_buf.len() * 8;
    let n = loop {
        // SAFETY: `msg` points at `iov` and `cmsg_buf`, both live and sized as
        // recorded in `msg`; MSG_CMSG_CLOEXEC marks received fds close-on-exec.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR walk only the
    // control bytes the kernel reported in msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and inside the control buffer.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let data_len = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            let count = data_len / std::mem::size_of::<RawFd>();
            // SAFETY: the kernel wrote `count` descriptors after the header.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: i < count, so the read stays inside the data; each
                // received descriptor is new and owned by this process.
                let fd = unsafe { data.add(i).read_unaligned() };
                // SAFETY: as above, the descriptor is new and unowned.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: `msg` and `cmsg` are valid as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((n, fds)))
}

/// Sends one datagram.
pub fn send(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one datagram without blocking; a peer that does not read its
/// replies gets `WouldBlock` instead of stalling PID 1.
pub fn send_nonblocking(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes a descriptor number that this process owns without an `OwnedFd`.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller owns `fd` and never uses the number again.
    check(unsafe { libc::close(fd) })?;
    Ok(())
}

/// Marks a socket the host bound as accepting connections. The kernel
/// records the caller as the peer that connecting processes see through
/// SO_PEERCRED and SO_PEERPIDFD, so they learn PID 1's host pid.
pub fn listen(sock: BorrowedFd<'_>, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen takes a descriptor and an integer.
    check(unsafe { libc::listen(sock.as_raw_fd(), backlog) })?;
    Ok(())
}

/// Accepts one connection, close-on-exec and non-blocking.
pub fn accept(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers ask for no peer address.
    let fd = check(unsafe {
        libc::accept4(
            sock.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes all of `buf`, retrying on EINTR.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads into `buf` from `offset`, retrying on EINTR. Returns 0 at end of
/// file.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reads into `buf`, retrying on EINTR; returns 0 at end of file.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes an integer flag set.
    check(unsafe { libc::unshare(flags) })?;
    Ok(())
}

pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is either null or a valid C string that outlives
    // the call; mount copies what it needs.
    check(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    })?;
    Ok(())
}

/// Sets `attr_set` on the mount at `path` and every mount below it.
pub fn mount_setattr_recursive(path: &CStr, attr_set: u64) -> io::Result<()> {
    // struct mount_attr from <linux/mount.h>: attr_set, attr_clr, propagation,
    // userns_fd, all u64.
    let attr: [u64; 4] = [attr_set, 0, 0, 0];
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    // SAFETY: `path` is a valid C string and `attr` a 32-byte mount_attr whose
    // size is passed alongside it.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    })?;
    Ok(())
}

/// `openat2` flag: fail with `ELOOP` at any symbolic link.
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// `openat2` flag: fail with `ELOOP` at a /proc magic link such as
/// /proc/self/fd/N, but follow other symbolic links.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// Clones the mount tree at `path`, with every mount below it, as a
/// detached mount that this process owns (`open_tree` with
/// `OPEN_TREE_CLONE`). A symbolic link in `path` fails with `ELOOP`,
/// because the host checked the path with its links resolved. A link that
/// appeared since, such as one that another sandbox swapped in through a
/// writable mount, could lead anywhere on the host.
pub fn open_tree_clone(path: &CStr) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let source = open_path(None, path, RESOLVE_NO_SYMLINKS)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | AT_RECURSIVE
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: the path is an empty C string and `source` an open descriptor.
    let fd = check_long(unsafe {
        libc::syscall(libc::SYS_open_tree, source.as_raw_fd(), c"".as_ptr(), flags)
    })?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Returns whether the root of the detached mount `tree` is a directory.
pub fn tree_is_dir(tree: BorrowedFd<'_>) -> bool {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `tree` is an open descriptor and `st` is writable.
    let ret = unsafe { libc::fstat(tree.as_raw_fd(), st.as_mut_ptr()) };
    // SAFETY: fstat succeeded, so it initialised `st`.
    ret == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

/// Sets `attr_set` on the detached mount `tree` and every mount below it.
pub fn mount_setattr_tree(tree: BorrowedFd<'_>, attr_set: u64) -> io::Result<()> {
    let attr: [u64; 4] = [attr_set, 0, 0, 0];
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let flags = AT_RECURSIVE | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: the path is an empty C string, `attr` a 32-byte mount_attr
    // whose size is passed alongside it.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    })?;
    Ok(())
}

/// Attaches the detached mount `tree` at the mount point that `target`, a
/// descriptor from [`open_path`], names.
pub fn move_mount_to(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both paths are empty C strings and both descriptors are open.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Opens `path`, relative to `dir` or else to the working directory, as an
/// `O_PATH` descriptor (`openat2`), with the `RESOLVE_*` flags `resolve`.
pub fn open_path(dir: Option<BorrowedFd<'_>>, path: &CStr, resolve: u64) -> io::Result<OwnedFd> {
    // struct open_how from <linux/openat2.h>: flags, mode, resolve, all u64.
    let how: [u64; 3] = [(libc::O_PATH | libc::O_CLOEXEC) as u64, 0, resolve];
    let dir = dir.map_or(libc::AT_FDCWD, |dir| dir.as_raw_fd());
    // SAFETY: `path` is a valid C string and `how` a 24-byte open_how whose
    // size is passed alongside it.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        )
    })?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Creates the directory `name` in `dir`. An existing entry of that name,
/// a symbolic link included, is left as it is.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is a valid C string and `dir` an open descriptor.
    match check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

/// Creates the empty file `name` in `dir`. An existing entry of that name,
/// a symbolic link included, is left as it is.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    let flags = libc::O_WRONLY
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | libc::O_NONBLOCK;
    // SAFETY: `name` is a valid C string and `dir` an open descriptor; the
    // mode argument is read because O_CREAT is set.
    match check(unsafe {
        libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint)
    }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        // SAFETY: openat returned a new descriptor that nothing else owns.
        other => other.map(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) })),
    }
}

pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: `target` is a valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are valid C strings.
    check_long(unsafe {
        libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr())
    })?;
    Ok(())
}

pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid C string.
    check(unsafe { libc::chdir(path.as_ptr()) })?;
    Ok(())
}

/// Makes the directory `dir`, which may be an O_PATH descriptor, the
/// working directory.
pub fn fchdir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fchdir takes a plain descriptor number.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) })?;
    Ok(())
}

/// Makes `path` the root directory.
pub fn chroot(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid C string.
    check(unsafe { libc::chroot(path.as_ptr()) })?;
    Ok(())
}

/// Writes the current directory, as the kernel reports it, into `buf` and
/// returns the written part. Makes no allocation, so a vfork child may call it.
pub fn getcwd(buf: &mut [u8]) -> io::Result<&[u8]> {
    // SAFETY: `buf` is writable for its length.
    let ret = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
    if ret.is_null() {
        return Err(io::Error::last_os_error());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(&buf[..len])
}

/// Creates a directory; an existing one is not an error.
pub fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is a valid C string.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

/// Creates a directory and returns whether it did: `false` if `path`
/// already existed.
pub fn make_dir(path: &CStr, mode: libc::mode_t) -> io::Result<bool> {
    // SAFETY: `path` is a valid C string.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a file or symbolic link (not what it points to).
pub fn unlink(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid C string.
    check(unsafe { libc::unlink(path.as_ptr()) }).map(drop)
}

/// Sets the owner of `path`, following a symbolic link.
pub fn chown(path: &CStr, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: `path` is a valid C string.
    check(unsafe { libc::chown(path.as_ptr(), uid, gid) }).map(drop)
}

/// Creates (or truncates) a regular file with `contents`. A symbolic link
/// at `path` fails with ELOOP, and a FIFO or socket with ENXIO instead of
/// blocking until a reader opens it.
pub fn write_file(path: &CStr, contents: &[u8], mode: libc::mode_t) -> io::Result<()> {
    let flags = libc::O_WRONLY
        | libc::O_CREAT
        | libc::O_TRUNC
        | libc::O_CLOEXEC
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK;
    // SAFETY: `path` is a valid C string; the mode argument is read because
    // O_CREAT is set.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all(fd_ref(&fd), contents)
}

/// Writes `contents` to the existing file `path`, such as a /proc file,
/// in one write.
pub fn write_existing(path: &CStr, contents: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is a valid C string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all(fd_ref(&fd), contents)
}

/// Returns whether `path` names a directory (following symlinks).
pub fn is_dir(path: &CStr) -> bool {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is a valid C string and `st` is writable.
    let ret = unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: stat succeeded, so it initialised `st`.
    ret == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

/// Returns the file type bits (`S_IFMT`) of `path` itself, not following a
/// symbolic link, or `None` if it cannot be read, such as when it is missing.
pub fn file_type(path: &CStr) -> Option<libc::mode_t> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is a valid C string and `st` is writable.
    let ret = unsafe { libc::lstat(path.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: lstat succeeded, so it initialised `st`.
    (ret == 0).then(|| unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

pub fn symlink(target: &CStr, path: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are valid C strings.
    match check(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is valid for reads of its length.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

/// Sets IFF_UP on the loopback interface of the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a plain C struct for which all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of `req`.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        // Up already: the zygote prepared this namespace.
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads ifr_name and ifr_flags of `req`.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// A route netlink socket of this network namespace, for the few requests
/// PID 1 sends during setup. The kernel acknowledges each request.
pub struct Rtnetlink(OwnedFd);

/// The action of a policy routing rule on a destination it matches.
#[derive(Clone, Copy)]
pub enum RuleAction {
    /// Look the destination up in the main routing table, skipping the
    /// later rules.
    LookupMain,
    /// Fail the route lookup with EACCES, as a `prohibit` route does.
    Prohibit,
}

// From <linux/fib_rules.h>, which the libc crate does not cover.
const FRA_DST: u16 = 1;
const FRA_PRIORITY: u16 = 6;
const FR_ACT_TO_TBL: u8 = 1;
const FR_ACT_PROHIBIT: u8 = 8;

/// Size of struct nlmsghdr.
const NLMSG_HEADER_LEN: usize = 16;

impl Rtnetlink {
    pub fn open() -> io::Result<Self> {
        open_netlink(libc::NETLINK_ROUTE).map(Self)
    }

    /// Adds a `prohibit` route for `prefix`/`len` (IPv4) to the main
    /// routing table: a connection to an address in it fails at once with
    /// EACCES, and no packet leaves.
    pub fn add_prohibit_route(&self, prefix: [u8; 4], len: u8) -> io::Result<()> {
        // struct rtmsg (12 bytes), then one RTA_DST attribute: struct
        // rtattr (4 bytes) and the address.
        let mut body = [0u8; 12 + 8];
        // rtm_family, rtm_dst_len, rtm_src_len, rtm_tos, rtm_table,
        // rtm_protocol, rtm_scope, rtm_type, then rtm_flags (u32).
        body[0] = libc::AF_INET as u8;
        body[1] = len;
        body[4] = libc::RT_TABLE_MAIN;
        body[5] = libc::RTPROT_STATIC;
        body[6] = libc::RT_SCOPE_UNIVERSE;
        body[7] = libc::RTN_PROHIBIT;
        put_attribute(&mut body[12..], libc::RTA_DST, &prefix);
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        self.request(libc::RTM_NEWROUTE, flags, &body)
    }

    /// Adds an IPv4 policy routing rule at `priority` that applies `action`
    /// to destinations in `prefix`/`len`, as `ip rule add to PREFIX/LEN`
    /// does. A rule equal to an existing one is added again, not rejected.
    pub fn add_rule(
        &self,
        priority: u32,
        prefix: [u8; 4],
        len: u8,
        action: RuleAction,
    ) -> io::Result<()> {
        // struct fib_rule_hdr (12 bytes), then FRA_PRIORITY and FRA_DST,
        // 8 bytes each.
        let mut body = [0u8; 12 + 8 + 8];
        // family, dst_len, src_len, tos, table, res1, res2, action, then
        // flags (u32).
        body[0] = libc::AF_INET as u8;
        body[1] = len;
        match action {
            RuleAction::LookupMain => {
                body[4] = libc::RT_TABLE_MAIN;
                body[7] = FR_ACT_TO_TBL;
            }
            RuleAction::Prohibit => body[7] = FR_ACT_PROHIBIT,
        }
        put_attribute(&mut body[12..20], FRA_PRIORITY, &priority.to_ne_bytes());
        // A rule for 0.0.0.0/0 matches every destination and carries no
        // address, as `ip rule add to 0.0.0.0/0` sends it.
        let used = if len == 0 {
            20
        } else {
            put_attribute(&mut body[20..], FRA_DST, &prefix);
            28
        };
        self.request(libc::RTM_NEWRULE, libc::NLM_F_CREATE, &body[..used])
    }

    /// Sends one request of `kind` with `body` after its header and
    /// returns the error of the kernel's acknowledgement.
    fn request(&self, kind: u16, flags: libc::c_int, body: &[u8]) -> io::Result<()> {
        let len = NLMSG_HEADER_LEN + body.len();
        let mut msg = [0u8; 64];
        let msg = &mut msg[..len];
        msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags;
        msg[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        msg[NLMSG_HEADER_LEN..].copy_from_slice(body);
        send_to_kernel(self.0.as_fd(), msg)?;

        // The acknowledgement: a struct nlmsghdr of type NLMSG_ERROR, then
        // the error number (0 for success) as an i32.
        let mut reply = [0u8; 512];
        let received = receive(self.0.as_fd(), &mut reply)?;
        let kind = u16::from_ne_bytes([reply[4], reply[5]]);
        if received < 20 || kind != libc::NLMSG_ERROR as u16 {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if error < 0 {
            return Err(io::Error::from_raw_os_error(-error));
        }
        Ok(())
    }
}

/// Opens a netlink socket of `protocol` in this network namespace.
fn open_netlink(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: socket returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `msg`, one or more netlink messages, to the kernel through
/// `socket` in one datagram.
fn send_to_kernel(socket: BorrowedFd<'_>, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_nl is a plain C struct for which all-zero (the
    // kernel as the peer) is valid.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `kernel` are valid for the lengths passed.
    check_long(unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            std::ptr::addr_of!(kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        ) as libc::c_long
    })?;
    Ok(())
}

/// Receives one datagram from `socket` into `buf` and returns its length.
fn receive(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let received = check_long(unsafe {
        libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) as libc::c_long
    })?;
    Ok(received as usize)
}

/// A netfilter netlink socket (NETLINK_NETFILTER) of this network
/// namespace, for the nf_tables batch of the egress filter.
pub struct Nfnetlink(OwnedFd);

/// NETLINK_CAP_ACK from <linux/netlink.h>, which the libc crate defines
/// for Android only.
const NETLINK_CAP_ACK: libc::c_int = 10;

impl Nfnetlink {
    /// Opens the socket. Fails with EPROTONOSUPPORT on a kernel without
    /// nfnetlink.
    ///
    /// It sets NETLINK_CAP_ACK, so that an error acknowledgement quotes
    /// only the header of the failed message. The message with a set's
    /// elements can be 20 KB, and a reply that quoted it whole would not
    /// fit the reply buffer of [`Nfnetlink::send_batch`]. Linux 4.3 and
    /// later have the option, and on an older kernel the failure to set it
    /// is ignored.
    pub fn open() -> io::Result<Self> {
        let socket = open_netlink(libc::NETLINK_NETFILTER)?;
        let enable: libc::c_int = 1;
        // SAFETY: setsockopt reads `enable` for the length passed.
        let _ = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_CAP_ACK,
                std::ptr::addr_of!(enable).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(Self(socket))
    }

    /// Sends `batch` in one datagram and waits for the acknowledgement of
    /// its message with sequence number `acknowledged`. Returns the first
    /// error the kernel reports for the batch: for any of its messages, or
    /// for the commit, which the kernel reports before any success.
    pub fn send_batch(&self, batch: &[u8], acknowledged: u32) -> io::Result<()> {
        raise_send_buffer(self.0.as_fd(), batch.len());
        send_to_kernel(self.0.as_fd(), batch)?;

        // With NETLINK_CAP_ACK an acknowledgement is 36 bytes. Without it,
        // an error quotes the failed message, which for a rule is a few
        // hundred bytes.
        let mut reply = [0u8; 8192];
        loop {
            let received = receive(self.0.as_fd(), &mut reply)?;
            let mut offset = 0;
            while offset + NLMSG_HEADER_LEN <= received {
                let header = &reply[offset..received];
                let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let kind = u16::from_ne_bytes([header[4], header[5]]);
                if len < NLMSG_HEADER_LEN || len > header.len() {
                    return Err(io::Error::from_raw_os_error(libc::EPROTO));
                }

                if kind == libc::NLMSG_ERROR as u16 {
                    // struct nlmsgerr: the error number (0 for success),
                    // then the header of the message it acknowledges.
                    if len < NLMSG_HEADER_LEN + 4 + NLMSG_HEADER_LEN {
                        return Err(io::Error::from_raw_os_error(libc::EPROTO));
                    }
                    let error =
                        i32::from_ne_bytes([header[16], header[17], header[18], header[19]]);
                    if error < 0 {
                        return Err(io::Error::from_raw_os_error(-error));
                    }
                    let sequence =
                        u32::from_ne_bytes([header[28], header[29], header[30], header[31]]);
                    if sequence == acknowledged {
                        return Ok(());
                    }
                }
                offset += len.next_multiple_of(4);
            }
        }
    }
}

/// Raises the send buffer of `socket` to fit a datagram of `len` bytes.
/// The egress filter's batch is up to 22 KB, and the kernel rejects a
/// datagram larger than the buffer with EMSGSIZE. The buffer starts at
/// net.core.wmem_default, which a host may set lower, and SO_SNDBUFFORCE
/// (PID 1 still has CAP_NET_ADMIN here) also goes past wmem_max. A
/// failure leaves the buffer as it was, and the send then reports
/// EMSGSIZE if the datagram does not fit.
fn raise_send_buffer(socket: BorrowedFd<'_>, len: usize) {
    let size = libc::c_int::try_from(len + 4096).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size` for the length passed.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Writes a netlink attribute of `kind` with a 4-byte `value` (struct
/// rtattr, then the value) to the start of `buf`.
fn put_attribute(buf: &mut [u8], kind: u16, value: &[u8; 4]) {
    buf[0..2].copy_from_slice(&8u16.to_ne_bytes());
    buf[2..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..8].copy_from_slice(value);
}

/// Opens a non-blocking TCP socket and starts its connect to `port` on the
/// loopback address, ::1 with `ipv6` and 127.0.0.1 without. Returns the
/// socket once the connect has succeeded or is in progress.
pub fn tcp_connect_loopback(port: u16, ipv6: bool) -> io::Result<OwnedFd> {
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd = check(unsafe { libc::socket(family, flags, 0) })?;
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let connected = if ipv6 {
        // SAFETY: sockaddr_in6 is a plain C struct for which all-zero is valid.
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_port = port.to_be();
        addr.sin6_addr.s6_addr[15] = 1;
        // SAFETY: `addr` is a valid sockaddr_in6 of the length given.
        unsafe {
            libc::connect(
                sock.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    } else {
        // SAFETY: sockaddr_in is a plain C struct for which all-zero is valid.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        // SAFETY: `addr` is a valid sockaddr_in of the length given.
        unsafe {
            libc::connect(
                sock.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    };
    match check(connected) {
        Ok(_) => Ok(sock),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(sock),
        Err(e) => Err(e),
    }
}

/// Drops `cap` from the capability bounding set.
pub fn drop_bounding_cap(cap: u32) -> io::Result<()> {
    prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))
}

/// Returns the highest capability number the running kernel supports.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub enum Fork {
    Child,
    Parent(libc::pid_t),
}

pub fn fork() -> io::Result<Fork> {
    // SAFETY: this process is single-threaded, so the child may run any code
    // after fork, not only async-signal-safe functions.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// Starts a child that runs `child` on `stack` in the caller's memory,
/// with clone(CLONE_VM | CLONE_VFORK) as posix_spawn does. The caller is
/// suspended until the child calls execve successfully or exits, which
/// saves copying the page tables and the copy-on-write faults of a fork
/// whose child only sets itself up and execs. Returns the child's pid.
///
/// The child shares the heap, the thread-local storage (errno included)
/// and glibc's cached thread id with the caller, but has its own
/// descriptor table, signal dispositions, working directory and
/// credentials. So `child` may change those and write to memory it borrows
/// from the caller, but must not panic (abort would signal the caller's
/// cached thread id) and should not allocate, since what it allocates is
/// never freed once it execs. When `child` returns, the child exits with
/// the returned code. The caller must have no signal handlers installed,
/// because a handler would run in the child on the shared memory.
/// A private anonymous mapping, unmapped on drop. Its pages are allocated
/// when first touched.
pub struct AnonymousMap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl AnonymousMap {
    pub fn new(len: usize) -> io::Result<Self> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
        // SAFETY: a new anonymous mapping aliases no existing memory.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr, len })
    }

    pub fn as_uninit_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the mapping is `len` bytes, readable and writable, owned by
        // `self` and borrowed mutably for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast(), self.len) }
    }
}

impl Drop for AnonymousMap {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` describe the mapping made in `new`, which
        // no borrow outlives.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

pub fn clone_vfork(
    stack: &mut [MaybeUninit<u8>],
    child: &mut dyn FnMut() -> i32,
) -> io::Result<libc::pid_t> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed to clone below.
        // The caller's frame that contains it stays live and suspended
        // until this child execs or exits.
        let child = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> i32>() };
        let code = child();
        exit(code)
    }
    let mut child = child;
    // The stack grows down from its highest address, which the x86-64 and
    // aarch64 ABIs require to be 16-byte aligned.
    let range = stack.as_mut_ptr_range();
    let top = (range.end as usize) & !15;
    if top <= range.start as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: `top` lies inside `stack`, which outlives the child's use of
    // it because the caller stays suspended until the child execs or exits.
    // `trampoline` receives a pointer to `child`, which lives just as long.
    let pid = unsafe {
        libc::clone(
            trampoline,
            top as *mut libc::c_void,
            flags,
            (&mut child as *mut &mut dyn FnMut() -> i32).cast(),
        )
    };
    check(pid)
}

/// Reaps one child. Returns `Ok(None)` when WNOHANG finds none ready.
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<(libc::pid_t, i32)>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is writable.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        match ret {
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            0 => return Ok(None),
            reaped => return Ok(Some((reaped, status))),
        }
    }
}

pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers.
    check(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// Waits for events on `fds`; a negative timeout waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of its length.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Duplicates `fd` onto `target`, close-on-exec; `target` must be another
/// number that no `OwnedFd` owns. Two calls rather than dup3, which the
/// seccomp policies leave out on x86-64 (see `SOULBOX_SYSCALLS`).
pub fn dup_cloexec(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes integers; the caller replaces `target` on purpose.
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    set_cloexec(borrow_raw(target))
}

/// Marks `fd` close-on-exec.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the flags of a valid descriptor.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(())
}

/// Receives one datagram into `buf` without blocking, discarding any
/// descriptors sent with it. Returns its length, 0 when the peer closed
/// the socket. Through recvmsg, which the seccomp policies allow, where
/// recv would be recvfrom.
pub fn recv_nonblocking(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` points at `iov`, which describes `buf`; with no control
    // buffer the kernel closes any descriptors that came with the datagram.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Duplicates `fd` onto `target`; the copy is not close-on-exec.
pub fn dup2(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        // dup2 onto itself would keep close-on-exec; clear it instead.
        // SAFETY: F_SETFD with 0 only clears FD_CLOEXEC on a valid fd.
        check(unsafe { libc::fcntl(target, libc::F_SETFD, 0) })?;
        return Ok(());
    }
    // SAFETY: dup2 takes integers; `target` is one of 0..=2, or fd 3 in a
    // child of the zygote, which the caller replaces on purpose and no
    // OwnedFd owns.
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    Ok(())
}

/// Makes the terminal open on `fd` the caller's controlling terminal.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) })?;
    Ok(())
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() })?;
    Ok(())
}

/// Switches to `uid` and `gid` with `gid` as the only supplementary group.
pub fn switch_user(uid: u32, gid: u32) -> io::Result<()> {
    let groups = [gid];
    // SAFETY: `groups` is a valid array of one gid.
    if let Err(e) = check(unsafe { libc::setgroups(1, groups.as_ptr()) }) {
        // A rootless sandbox's user namespace denies setgroups; its only
        // group is the one mapped gid, so there is nothing to drop.
        if e.raw_os_error() != Some(libc::EPERM) || !in_user_namespace() {
            return Err(e);
        }
    }
    // SAFETY: setresgid takes integers.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: setresuid takes integers.
    check(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

/// Sets the file mode creation mask and returns the previous one.
pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask takes an integer and always succeeds (umask(2)).
    unsafe { libc::umask(mask) }
}

/// Creates the character device node `path` with `mode` (less the umask).
pub fn mknod_char(path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let device = libc::makedev(major, minor);
    // SAFETY: `path` is a valid C string; mknod takes integers otherwise.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, device) }).map(drop)
}

/// Replaces the process image; returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: both arrays are NULL-terminated and point at C strings that
    // live until execve returns or replaces the process.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// NUL-terminated strings with the NULL-terminated pointer array that
/// execve takes, built ahead so that a vfork child can exec without
/// allocating.
pub struct CStringArray {
    /// Owns what `pointers` points at; never changed after `new`.
    _strings: Vec<CString>,
    pointers: Vec<*const libc::c_char>,
}

impl CStringArray {
    pub fn new(strings: Vec<CString>) -> Self {
        // Moving a CString moves only its pointer, so these stay valid while
        // `_strings` is unchanged, which it is until the array is dropped.
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        Self {
            _strings: strings,
            pointers,
        }
    }
}

/// Replaces the process image with arrays built ahead; returns only on
/// failure. Makes no allocation, so a vfork child may call it.
pub fn execve_prepared(path: &CStr, argv: &CStringArray, envp: &CStringArray) -> io::Error {
    // SAFETY: both pointer arrays are NULL-terminated and point at the
    // C strings their CStringArray owns, which outlive the call.
    unsafe {
        libc::execve(
            path.as_ptr(),
            argv.pointers.as_ptr(),
            envp.pointers.as_ptr(),
        )
    };
    io::Error::last_os_error()
}

/// Makes malloc serve every block of `bytes` or more from a mapping of its
/// own, at a fixed threshold. By default glibc raises the threshold once
/// such a block is freed and then serves the next from the heap, where
/// calloc clears it: PID 1's 256 KiB message buffers would stay resident
/// for the sandbox's whole life instead of only the pages a message uses.
pub fn set_mmap_threshold(bytes: libc::c_int) {
    // SAFETY: mallopt only changes malloc's tuning; M_MMAP_THRESHOLD takes
    // a byte count.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
}

/// Ends the process at once, without running destructors or atexit hooks.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and is safe in any process state.
    unsafe { libc::_exit(code) }
}

/// Milliseconds on the monotonic clock.
pub fn monotonic_ms() -> u64 {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is writable; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    // SAFETY: clock_gettime initialised `ts`.
    let ts = unsafe { ts.assume_init() };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Borrows a descriptor this process owns for the length of `fd`'s borrow.
pub fn fd_ref(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// Borrows a descriptor number that stays open for the process's whole
/// life, such as the control socket at fd 3.
pub fn borrow_raw(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers pass only descriptors that stay open until exit.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Returns whether the process has any effective capability.
pub fn has_effective_caps() -> bool {
    // struct __user_cap_header_struct and two __user_cap_data_struct from
    // <linux/capability.h>, version 3 (64-bit capability sets).
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header: [u32; 2] = [LINUX_CAPABILITY_VERSION_3, 0];
    let mut data = [[0u32; 3]; 2];
    // SAFETY: capget writes two data structs of three u32 each (effective,
    // permitted, inheritable) for version 3, and reads the header.
    let ret = unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) };
    ret == 0 && (data[0][0] != 0 || data[1][0] != 0)
}

/// Blocks until a message is waiting on `sock`, without consuming it.
pub fn peek(sock: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: `byte` is valid for writes of one byte.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK,
            )
        };
        match n {
            0 => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
            n if n > 0 => return Ok(()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// Returns whether this process runs in a user namespace other than the
/// initial one, judged by its uid map. Reads into a stack buffer without
/// allocating, so a vfork child may call it.
pub fn in_user_namespace() -> bool {
    // SAFETY: the path is a valid C string; open returns a new descriptor.
    let fd = unsafe {
        libc::open(
            c"/proc/self/uid_map".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The initial namespace's map is one line of about 35 bytes; a longer
    // map is never the initial one.
    let mut buf = [0u8; 128];
    let Ok(len) = read(fd_ref(&fd), &mut buf) else {
        return false;
    };
    let mut fields = buf[..len]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let initial = fields.next() == Some(b"0")
        && fields.next() == Some(b"0")
        && fields.next() == Some(b"4294967295")
        && fields.next().is_none();
    !initial
}

/// One classic BPF instruction, `struct sock_filter` of <linux/filter.h>.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Installs a seccomp filter on the calling thread (PID 1 has no other)
/// with seccomp(SECCOMP_SET_MODE_FILTER). PID 1 is root in its namespaces,
/// so it needs no no_new_privs for that; commands set it themselves.
pub fn install_seccomp_filter(program: &[SockFilter]) -> io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const SockFilter,
    }
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the filter before returning. No flags are passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const SockFprog,
        )
    })?;
    Ok(())
}

/// Points fds 0, 1 and 2 at /dev/null.
pub fn redirect_stdio_to_null() -> io::Result<()> {
    let flags = libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: the path is a valid C string; open returns a new descriptor.
    let fd = check(unsafe { libc::open(c"/dev/null".as_ptr(), flags) })?;
    for target in 0..=2 {
        if fd != target {
            // SAFETY: dup2 takes integers; fds 0 to 2 are replaced on
            // purpose and no OwnedFd of this process owns them.
            check(unsafe { libc::dup2(fd, target) })?;
        }
    }
    if fd > 2 {
        // SAFETY: `fd` came from open above and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(())
}

/// Sets both the soft and the hard limit of `resource`; u64::MAX means
/// unlimited.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let value = if value == u64::MAX {
        libc::RLIM_INFINITY
    } else {
        value
    };
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit that setrlimit only reads.
    check(unsafe { libc::setrlimit(resource, &limit) })?;
    Ok(())
}

/// Lowers both values of `resource` to `cap` where the hard limit is
/// higher, and leaves a lower one as it is.
pub fn cap_rlimit(resource: libc::__rlimit_resource_t, cap: u64) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`.
    check(unsafe { libc::getrlimit(resource, &mut limit) })?;
    let value = limit.rlim_max.min(cap);
    limit = libc::rlimit {
        rlim_cur: limit.rlim_cur.min(value),
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit that setrlimit only reads.
    check(unsafe { libc::setrlimit(resource, &limit) })?;
    Ok(())
}

/// Returns the address the kernel clears when this thread exits, which
/// glibc sets at start-up to the `tid` field of the thread's descriptor.
/// Fails on kernels built without CONFIG_CHECKPOINT_RESTORE.
pub fn tid_address() -> io::Result<u64> {
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

/// Opens `path` read-only, for a namespace file such as /proc/self/ns/net.
pub fn open_read_only(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; open returns a new descriptor or -1.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling process into the namespace `fd` refers to; `kind` is
/// its CLONE_NEW* flag.
pub fn setns(fd: BorrowedFd<'_>, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and an integer flag.
    check(unsafe { libc::setns(fd.as_raw_fd(), kind) })?;
    Ok(())
}

/// The two returns of [`clone3_fork`].
#[derive(Debug)]
pub enum Forked {
    /// In the new process.
    Child,
    /// In the calling process, with the child's pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// Forks with clone3: `flags` (CLONE_PIDFD is added), no exit signal, in
/// `cgroup` when given (CLONE_INTO_CGROUP). With `tid_address` from
/// [`tid_address`], the kernel writes the child's thread id there in the
/// child, as glibc's fork does, so glibc's record of the thread id stays
/// true in the child.
pub fn clone3_fork(
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
        exit_signal: 0,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
    };

    // SAFETY: without CLONE_VM the child runs on a copy of this address
    // space and returns from the call as fork's child does. This process
    // is single-threaded, so no lock can be held by a thread that does not
    // exist in the child. `args` is a valid clone_args of the size passed,
    // and CLONE_PIDFD stores the pidfd in `pidfd`.
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
        // SAFETY: clone3 succeeded, so it stored a new pidfd that nothing
        // else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}

/// Sends one datagram with one descriptor attached (SCM_RIGHTS).
pub fn send_with_fd(sock: BorrowedFd<'_>, buf: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    send_with_fds_flags(sock, buf, &[fd], libc::MSG_NOSIGNAL)
}

/// Sends one datagram with `fds` attached (SCM_RIGHTS).
pub fn send_with_fds(sock: BorrowedFd<'_>, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_with_fds_flags(sock, buf, fds, libc::MSG_NOSIGNAL)
}

/// Sends one datagram with `fds` attached (SCM_RIGHTS). Fails with EAGAIN
/// instead of blocking when the peer's queue is full.
pub fn send_with_fds_nonblocking(
    sock: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    send_with_fds_flags(sock, buf, fds, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
}

fn send_with_fds_flags(
    sock: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<()> {
    const MAX_FDS: usize = 8;
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let payload_len = (fds.len() * std::mem::size_of::<RawFd>()) as libc::c_uint;
    // Large enough and aligned for one cmsghdr and MAX_FDS descriptors.
    let mut cmsg_buf = [0u64; 2 + MAX_FDS / 2 + 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };

    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a constant computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload_len) } as usize;
    // SAFETY: CMSG_SPACE for MAX_FDS descriptors (32 bytes) is 48 bytes on
    // 64-bit Linux, so the header and its payload fit in the 56-byte buffer.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len) as usize;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(fd.as_raw_fd());
        }
    }

    loop {
        // SAFETY: `msg` points at `iov`, `buf` and `cmsg_buf`, all live.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Creates a connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair stores.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both are new descriptors that nothing
    // else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
